//! Where cgroup v2 is mounted, for the socket hooks; from a shell with a private mount
//! namespace (`ip netns exec` remounts /sys without it), the host's cgroup2 mount
//! through /proc/PID/root (see `bpffs::host_pid`).
use std::path::{Path, PathBuf};

use super::bpffs::{host_pid, host_view};

/// The first cgroup2 mount (the unified hierarchy: /sys/fs/cgroup on pure v2 systems,
/// /sys/fs/cgroup/unified on hybrid ones), as this process can reach it.
pub fn cgroup2_root() -> Option<PathBuf> {
    let first = |mounts: &str| {
        mounts.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(dir))
        })
    };
    if let Some(dir) = std::fs::read_to_string("/proc/self/mounts").ok().as_deref().and_then(first) {
        return Some(dir);
    }
    let pid = host_pid()?;
    let dir = std::fs::read_to_string(format!("/proc/{pid}/mounts")).ok().as_deref().and_then(first)?;
    host_view(&dir)
}

/// `path` (a cgroup directory the operator named) as this process can reach it: itself
/// when it is a cgroup2 directory here, else the host's when this process has a private
/// mount namespace and the host has it.
pub fn locate(path: &Path) -> PathBuf {
    if is_cgroup2(path) {
        return path.into();
    }
    match host_view(path) {
        Some(host) if is_cgroup2(&host) => host,
        _ => path.into(),
    }
}

fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}
