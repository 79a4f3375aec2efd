//! Where cgroup v2 is mounted, for the socket hooks.
use std::path::PathBuf;

/// The first cgroup2 mount (the unified hierarchy: /sys/fs/cgroup on pure v2 systems,
/// /sys/fs/cgroup/unified on hybrid ones).
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir))
    })
}
