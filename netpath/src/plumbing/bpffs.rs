//! The BPF filesystem netpath pins into.
use std::path::Path;

use nix::mount::{mount, MsFlags};

use super::PlumbingError;

/// Makes sure `dir` lives on a bpffs, mounting one at /sys/fs/bpf when none is there
/// (a fresh mount namespace, a minimal VM), then creates `dir`.
pub fn ensure(dir: &Path) -> Result<(), PlumbingError> {
    let root = Path::new("/sys/fs/bpf");
    if dir.starts_with(root) && !is_bpffs(root) {
        mount(Some("bpffs"), root, Some("bpf"), MsFlags::empty(), None::<&str>)
            .map_err(|source| PlumbingError::Mount { path: root.into(), source })?;
    }
    crate::paths::create_private_dir(dir)?;
    Ok(())
}

pub fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}
