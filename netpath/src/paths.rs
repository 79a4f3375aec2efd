//! Where netpath keeps things. Every location is configurable so tests and the demo can
//! run isolated instances side by side without touching the defaults.
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct Paths {
    /// Directory in bpffs where netpath pins its maps.
    pub bpffs_dir: PathBuf,
    /// Directory for the agent's Unix socket.
    pub run_dir: PathBuf,
    /// Directory for desired state (endpoints, address allocations, the agent's id).
    pub state_dir: PathBuf,
}

impl Paths {
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("agent.sock")
    }

    /// The endpoints and published ports (see `state::Db`).
    pub fn state_db(&self) -> PathBuf {
        self.state_dir.join("state.db")
    }

    /// Where agents before the database kept their endpoints (migrated, then renamed).
    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("endpoints.json")
    }

    /// Where agents before the database kept their published ports.
    pub fn ports_file(&self) -> PathBuf {
        self.state_dir.join("ports.json")
    }
}

/// Creates `dir` (and missing parents) readable by root only: the socket, the state and
/// the pins in it are the node's networking. An existing directory keeps its mode; what
/// netpath puts into it is root-only by itself (files 0600, socket 0600).
pub fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}
