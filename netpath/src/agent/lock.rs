//! One agent per node: exclusive locks taken before the agent touches anything.
//!
//! - Its run and state directories: an flock'd `agent.lock` in each (holding the PID),
//!   so a second agent with the same `--run-dir` cannot remove the first one's socket and
//!   one with the same `--state-dir` cannot write the same records.
//! - Its pin directory: an flock on the directory itself (bpffs holds no plain files).
//! - Its network namespace: an abstract Unix socket, which exists once per namespace and
//!   vanishes with the process that bound it, however it ends. Two agents in one node
//!   would both claim the uplink, the gateway address and the pod CIDR's routes.
//!
//! The kernel drops every lock when the process ends, even by SIGKILL; a lock file left
//! by a killed agent is simply taken over.
use std::{
    fs::File,
    io::Write as _,
    os::{
        fd::AsRawFd as _,
        unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
};

use super::AgentError;

/// Name of the abstract socket that marks a network namespace as having an agent.
const NETNS_MARK: &str = "netpath-agent";

/// What another agent holds, for the refusal message.
#[derive(Debug)]
pub enum Held {
    /// A directory (`--run-dir`, `--state-dir`, `--bpffs-dir`).
    Dir { flag: &'static str, dir: PathBuf },
    /// The network namespace.
    Netns,
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Held::Dir { flag, dir } => write!(
                f,
                "already uses {flag} {}; stop it first, or give this agent a {flag} of its own",
                dir.display()
            ),
            Held::Netns => f.write_str(
                "already runs in this network namespace; one agent per node: stop it first, or start this one in another namespace",
            ),
        }
    }
}

/// The locks of a running agent; released (and the lock files removed) on drop.
pub struct InstanceLock {
    files: Vec<(PathBuf, File)>,
    _dirs: Vec<File>,
    _netns: Option<std::os::unix::net::UnixListener>,
    /// Directories this start created, removed again by [`InstanceLock::abandon`].
    created: Vec<PathBuf>,
}

impl InstanceLock {
    /// Takes every lock or none: the run and state directories, the node's network
    /// namespace, then the pin directory (`bpffs_dir`, already located on a bpffs).
    /// `Err` names the other agent's PID and what it holds; nothing is left behind.
    pub fn acquire(run_dir: &Path, state_dir: &Path, bpffs_dir: &Path) -> Result<Self, AgentError> {
        let mut lock =
            InstanceLock { files: Vec::new(), _dirs: Vec::new(), _netns: None, created: Vec::new() };
        match lock.take(run_dir, state_dir, bpffs_dir) {
            Ok(()) => Ok(lock),
            Err(e) => {
                lock.abandon();
                Err(e)
            }
        }
    }

    fn take(&mut self, run_dir: &Path, state_dir: &Path, bpffs_dir: &Path) -> Result<(), AgentError> {
        for (flag, dir) in [("--run-dir", run_dir), ("--state-dir", state_dir)] {
            self.create_dir(dir)?;
            let path = dir.join("agent.lock");
            let file = lock_file(&path).map_err(|e| match e {
                LockError::Held(pid) => {
                    AgentError::AnotherAgent { pid, held: Held::Dir { flag, dir: dir.into() } }
                }
                LockError::Io(source) => {
                    AgentError::Io { what: format!("cannot lock {}", path.display()), source }
                }
            })?;
            self.files.push((path, file));
        }
        self._netns = Some(mark_netns()?);
        let existed = bpffs_dir.exists();
        let located = crate::plumbing::bpffs::ensure(bpffs_dir)?;
        if !existed {
            self.created.push(located.clone());
        }
        let dir = File::open(&located).map_err(|source| AgentError::Io {
            what: format!("cannot open {}", located.display()),
            source,
        })?;
        let free = try_flock(&dir).map_err(|source| AgentError::Io {
            what: format!("cannot lock {}", located.display()),
            source,
        })?;
        if !free {
            let pid = flock_holder(&dir).unwrap_or(0);
            return Err(AgentError::AnotherAgent {
                pid,
                held: Held::Dir { flag: "--bpffs-dir", dir: bpffs_dir.into() },
            });
        }
        self._dirs.push(dir);
        Ok(())
    }

    fn create_dir(&mut self, dir: &Path) -> Result<(), AgentError> {
        // The outermost missing ancestor is what this start creates.
        let first_missing = dir.ancestors().take_while(|p| !p.exists()).last().map(Path::to_path_buf);
        crate::paths::create_private_dir(dir)
            .map_err(|source| AgentError::Io { what: format!("cannot create {}", dir.display()), source })?;
        self.created.extend(first_missing);
        Ok(())
    }

    /// Releases the locks after a failed start and removes the directories it created
    /// (those still empty but for the lock files; a pin directory with what this start
    /// pinned).
    pub fn abandon(mut self) {
        for (path, _) in self.files.drain(..) {
            let _ = std::fs::remove_file(path);
        }
        for dir in std::mem::take(&mut self.created).into_iter().rev() {
            if crate::plumbing::bpffs::is_bpffs(&dir) {
                let _ = std::fs::remove_dir_all(&dir);
            } else {
                remove_empty_tree(&dir);
            }
        }
    }
}

/// Removes `dir` and its empty subdirectories; anything else in it stays.
fn remove_empty_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        // Removed while still held: an agent waiting on the old inode re-checks the path
        // after taking its lock (see lock_file) and starts over on the new file.
        for (path, _) in &self.files {
            let _ = std::fs::remove_file(path);
        }
    }
}

enum LockError {
    Held(u32),
    Io(std::io::Error),
}

impl From<std::io::Error> for LockError {
    fn from(e: std::io::Error) -> Self {
        LockError::Io(e)
    }
}

/// flock(LOCK_EX | LOCK_NB): false when another process holds it.
fn try_flock(file: &File) -> std::io::Result<bool> {
    // SAFETY: flock on a valid fd has no memory effects.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(false);
    }
    Err(e)
}

/// Opens and locks `path`, writing this process's PID into it. A lock file removed by
/// its previous holder between our open and our lock is not the lock any more: retry
/// on the one now at the path.
fn lock_file(path: &Path) -> Result<File, LockError> {
    loop {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .truncate(false)
            .open(path)?;
        if !try_flock(&file)? {
            let pid = flock_holder(&file)
                .or_else(|| std::fs::read_to_string(path).ok()?.trim().parse().ok())
                .unwrap_or(0);
            return Err(LockError::Held(pid));
        }
        let same = std::fs::metadata(path)
            .ok()
            .zip(file.metadata().ok())
            .is_some_and(|(a, b)| a.dev() == b.dev() && a.ino() == b.ino());
        if !same {
            continue;
        }
        file.set_len(0)?;
        writeln!(file, "{}", std::process::id())?;
        return Ok(file);
    }
}

/// The PID holding an flock on `file`, from /proc/locks (`1: FLOCK ADVISORY WRITE <pid>
/// <maj>:<min>:<inode> 0 EOF`).
fn flock_holder(file: &File) -> Option<u32> {
    let meta = file.metadata().ok()?;
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let want = |id: &str| {
        let mut it = id.split(':');
        let (ma, mi, ino) = (it.next()?, it.next()?, it.next()?);
        let ok = u32::from_str_radix(ma, 16).ok()? == major
            && u32::from_str_radix(mi, 16).ok()? == minor
            && ino.parse::<u64>().ok()? == meta.ino();
        Some(ok)
    };
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // "1:" "FLOCK" "ADVISORY" "WRITE" pid id ...; blocked waiters carry "->" first.
        let f: Vec<&str> = f.into_iter().filter(|w| *w != "->").collect();
        if f.len() < 6 || f[1] != "FLOCK" || want(f[5]) != Some(true) {
            return None;
        }
        f[4].parse().ok().filter(|pid: &u32| *pid != std::process::id())
    })
}

/// Binds the namespace's abstract marker socket; when another agent has it, connects
/// to it to learn that agent's PID (the kernel records the listener's credentials).
fn mark_netns() -> Result<std::os::unix::net::UnixListener, AgentError> {
    use std::os::linux::net::SocketAddrExt as _;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(NETNS_MARK)
        .map_err(|source| AgentError::Io { what: "abstract socket name".into(), source })?;
    match std::os::unix::net::UnixListener::bind_addr(&addr) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let pid = std::os::unix::net::UnixStream::connect_addr(&addr)
                .ok()
                .and_then(|s| peer_pid(&s))
                .unwrap_or(0);
            Err(AgentError::AnotherAgent { pid, held: Held::Netns })
        }
        Err(source) => Err(AgentError::Io { what: format!("cannot bind @{NETNS_MARK}"), source }),
    }
}

/// SO_PEERCRED's PID of a connected Unix socket.
pub fn peer_pid(stream: &std::os::unix::net::UnixStream) -> Option<u32> {
    let cred = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials).ok()?;
    u32::try_from(cred.pid()).ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_file_names_its_holder_and_a_released_one_is_taken_over() {
        let dir = std::env::temp_dir().join(format!("netpath-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.lock");
        let first = lock_file(&path).ok().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), std::process::id().to_string());
        // flock is per open file description: a second open in this process conflicts
        // like another process would. /proc/locks names this process, which the holder
        // lookup skips; the PID written in the file is the fallback.
        match lock_file(&path) {
            Err(LockError::Held(pid)) => assert_eq!(pid, std::process::id()),
            _ => panic!("a held lock was taken twice"),
        }
        drop(first);
        assert!(lock_file(&path).is_ok(), "a released lock was not taken over");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
