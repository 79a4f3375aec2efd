//! Entering a container's network namespace. A netlink socket belongs to the namespace
//! it was created in, so work inside a container runs on a short-lived thread that has
//! switched namespace (setns affects only the calling thread) with its own runtime.
use std::{fs::File, future::Future, os::fd::AsRawFd, path::Path};

use nix::sched::{setns, CloneFlags};
use rtnetlink::Handle;

use super::PlumbingError;

/// Opens `path` and checks it really is a network namespace, so a typo fails with a
/// clear message before anything is created.
pub fn open(path: &Path) -> Result<File, PlumbingError> {
    let file = File::open(path).map_err(|source| PlumbingError::NetnsOpen { path: path.into(), source })?;
    let fs = nix::sys::statfs::fstatfs(&file)
        .map_err(|e| PlumbingError::NetnsOpen { path: path.into(), source: e.into() })?;
    if fs.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
        return Err(PlumbingError::NotNetns { path: path.into() });
    }
    // SAFETY: ioctl NS_GET_NSTYPE takes no argument and only reads the fd.
    let ty = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
    if ty != libc::CLONE_NEWNET {
        return Err(PlumbingError::NotNetns { path: path.into() });
    }
    Ok(file)
}

/// Is `ns` the namespace this process runs in, or the host's initial one (PID 1's)?
/// Returns which, for the refusal.
pub fn node_namespace(ns: &File) -> Option<&'static str> {
    use std::os::unix::fs::MetadataExt as _;
    let id = |m: std::fs::Metadata| (m.dev(), m.ino());
    let target = id(ns.metadata().ok()?);
    if std::fs::metadata("/proc/thread-self/ns/net").ok().map(id) == Some(target) {
        return Some("the agent's own network namespace (the node's)");
    }
    if std::fs::metadata("/proc/1/ns/net").ok().map(id) == Some(target) {
        return Some("the host's initial network namespace (PID 1's)");
    }
    None
}

/// _IO(0xb7, 0x3) from include/uapi/linux/nsfs.h.
const NS_GET_NSTYPE: libc::Ioctl = 0xb703 as libc::Ioctl;

/// Runs `work` with an rtnetlink handle inside the namespace `ns`.
pub async fn run_in<F, Fut, T>(ns: &File, path: &Path, work: F) -> Result<T, PlumbingError>
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, PlumbingError>>,
    T: Send + 'static,
{
    let worker = |what: String| PlumbingError::NetnsWorker { path: path.into(), what };
    let ns = ns.try_clone().map_err(|e| worker(format!("cannot duplicate its descriptor: {e}")))?;
    let path = path.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = (|| {
            setns(&ns, CloneFlags::CLONE_NEWNET)
                .map_err(|source| PlumbingError::NetnsEnter { path: path.clone(), source })?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
                PlumbingError::NetnsWorker {
                    path: path.clone(),
                    what: format!("cannot start a runtime: {e}"),
                }
            })?;
            rt.block_on(async move {
                let (conn, handle, _) = rtnetlink::new_connection().map_err(PlumbingError::Socket)?;
                let conn = tokio::spawn(conn);
                let out = work(handle).await;
                conn.abort();
                out
            })
        })();
        let _ = tx.send(result);
    });
    rx.await.map_err(|_| worker("its worker thread died".into()))?
}

/// SO_NETNS_COOKIE from include/uapi/asm-generic/socket.h (kernel 5.14+).
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The cookie of the network namespace this thread is in, as bpf_get_netns_cookie
/// reports it; `None` on kernels without SO_NETNS_COOKIE.
pub fn current_cookie() -> Option<u64> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: valid socket fd, output buffer of the stated length.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cookie)
}
