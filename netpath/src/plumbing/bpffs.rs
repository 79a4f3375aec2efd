//! The BPF filesystem netpath pins into, and the host's view of it from a shell with a
//! mount namespace of its own.
//!
//! `ip netns exec` runs its command in a private mount namespace with a fresh /sys, where
//! /sys/fs/bpf is no bpffs at all. An agent that mounted one there would pin into a
//! filesystem that nobody else sees and that vanishes with the agent: other shells could
//! not inspect the maps, and a restarted agent would start with empty conntrack. So from
//! such a shell netpath pins into the bpffs of the host's mount namespace, through
//! /proc/PID/root of a process there, and the CLI finds the pins the same way.
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

use super::PlumbingError;

const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// Makes sure the pins of `dir` land on a bpffs that outlives this process, mounting one
/// at /sys/fs/bpf when none is there (a minimal VM), and creates the directory. Returns
/// where the pins really go (see [`locate`]).
pub fn ensure(dir: &Path) -> Result<PathBuf, PlumbingError> {
    let located = locate(dir);
    if !is_bpffs(&located) {
        let root = Path::new(BPFFS_ROOT);
        if !dir.starts_with(root) {
            return Err(PlumbingError::NotBpffs { path: dir.into() });
        }
        if private_mount_namespace() {
            return Err(PlumbingError::PrivateMountNs { path: dir.into() });
        }
        mount(Some("bpffs"), root, Some("bpf"), MsFlags::empty(), None::<&str>)
            .map_err(|source| PlumbingError::Mount { path: root.into(), source })?;
    }
    crate::paths::create_private_dir(&located)
        .map_err(|source| PlumbingError::Dir { path: located.clone(), source })?;
    Ok(located)
}

/// Where `dir` is on a BPF filesystem: `dir` itself when it is (or would be, once
/// created) on one in this mount namespace; else, from a private mount namespace, the
/// same path in the host's (see [`host_pid`]) when that is on a bpffs; else `dir`.
pub fn locate(dir: &Path) -> PathBuf {
    if is_bpffs(dir) {
        return dir.into();
    }
    match host_view(dir) {
        Some(host) if is_bpffs(&host) => host,
        _ => dir.into(),
    }
}

/// `path` as the host's mount namespace sees it, when this process has a private one.
pub fn host_view(path: &Path) -> Option<PathBuf> {
    let pid = host_pid()?;
    Some(Path::new(&format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap_or(path)))
}

/// Does this process have a mount namespace other than the host's (`ip netns exec`,
/// `unshare -m`)?
pub fn private_mount_namespace() -> bool {
    host_pid().is_some()
}

/// A process in the host's mount namespace, when this process is not in it: PID 1 where
/// this process may look at it; otherwise (a sandbox that hides PID 1) the nearest
/// ancestor in another mount namespace, which is what ran `ip netns exec`. None when
/// this process is in the host's mount namespace, as far as it can tell.
pub fn host_pid() -> Option<u32> {
    let ns = |pid: &str| {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(format!("/proc/{pid}/ns/mnt")).ok().map(|m| (m.dev(), m.ino()))
    };
    let mine = ns("self")?;
    // Only a root directory this process can enter is of use.
    let usable = |pid: u32| std::fs::read_dir(format!("/proc/{pid}/root")).is_ok();
    if let Some(init) = ns("1") {
        return (init != mine && usable(1)).then_some(1);
    }
    let mut pid = std::os::unix::process::parent_id();
    while pid > 1 {
        match ns(&pid.to_string()) {
            Some(theirs) if theirs != mine => return usable(pid).then_some(pid),
            Some(_) => pid = parent_of(pid)?,
            None => return None,
        }
    }
    None
}

/// The parent of process `pid` (from /proc/PID/stat).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// Is `path`, or the nearest of its ancestors that exists, on a bpffs?
pub fn is_bpffs(path: &Path) -> bool {
    path.ancestors().find(|p| p.exists()).is_some_and(|p| {
        nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
    })
}
