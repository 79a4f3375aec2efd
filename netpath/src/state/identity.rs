//! The agent's identity: 16 hex digits made at its first start and kept in the state
//! directory. Every host veth the agent creates carries it (in its alias, and in the
//! temporary name it has until it is marked), so reconciliation removes only what its
//! own agent made, never the links of another agent that ran in the same namespace.
use std::path::{Path, PathBuf};

use super::StateError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentId(String);

const FILE: &str = "agent-id";

impl AgentId {
    /// A new random identity (not yet saved).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 8];
        // SAFETY: getrandom fills at most bytes.len() bytes of the buffer.
        let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        if n != bytes.len() as isize {
            // Only before the kernel's pool is initialised; time and PID keep agents
            // on one node apart all the same.
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            bytes = (t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 40)).to_be_bytes();
        }
        AgentId(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(FILE)
    }

    /// The saved identity, if this state directory has one.
    pub fn load(state_dir: &Path) -> Result<Option<Self>, StateError> {
        let path = Self::path(state_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let id = text.trim();
                if id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Ok(Some(AgentId(id.to_ascii_lowercase())))
                } else {
                    Err(StateError::BadIdentity { path, found: id.chars().take(40).collect() })
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Read { path, source }),
        }
    }

    /// Writes the identity crash-safely (see `store::write_atomically`).
    pub fn save(&self, state_dir: &Path) -> Result<(), StateError> {
        super::store::write_atomically(&Self::path(state_dir), format!("{}\n", self.0).as_bytes())
    }

    /// Removes a saved identity (a start that made it failed before using it).
    pub fn forget(state_dir: &Path) {
        let _ = std::fs::remove_file(Self::path(state_dir));
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name a host veth has between its creation and its marking:
    /// `np-<first 8 digits of the id>-<3 hex digits>` (15 characters, IFNAMSIZ - 1).
    pub fn temporary_ifname(&self, seq: u16) -> String {
        format!("np-{}-{:03x}", &self.0[..8], seq & 0xfff)
    }

    /// Was `ifname` a temporary name of this agent's?
    pub fn made_temporary(&self, ifname: &str) -> bool {
        ifname.len() == 15 && ifname.starts_with(&format!("np-{}-", &self.0[..8]))
    }
}

impl std::fmt::Display for AgentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_differ_survive_a_save_and_name_their_temporary_links() {
        let (a, b) = (AgentId::generate(), AgentId::generate());
        assert_ne!(a, b);
        let dir = std::env::temp_dir().join(format!("netpath-id-{}", std::process::id()));
        assert_eq!(AgentId::load(&dir).unwrap(), None);
        a.save(&dir).unwrap();
        assert_eq!(AgentId::load(&dir).unwrap(), Some(a.clone()));
        let tmp = a.temporary_ifname(0x1abc);
        assert_eq!(tmp.len(), 15, "{tmp}");
        assert!(a.made_temporary(&tmp) && !b.made_temporary(&tmp));
        std::fs::write(dir.join(FILE), "not-an-id\n").unwrap();
        assert!(AgentId::load(&dir).unwrap_err().to_string().contains("not-an-id"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
