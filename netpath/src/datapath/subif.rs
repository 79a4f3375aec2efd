//! The programs of a macvlan/ipvlan endpoint (`--mode macvlan|ipvlan`), whose interface
//! lives in the container's network namespace only, with no host device: from_container
//! at its egress (what the container sends), to_subif at its ingress (what it receives).
//! Both are cls_bpf filters under clsact, placed with the no-gap two-priority scheme of a
//! host veth's filter, on TCX kernels too (see `Datapath::attach_endpoint` for why
//! endpoints get filters rather than links); they go with the device, so deleting the
//! interface or its namespace needs no detach.
//!
//! aya resolves interface names and opens its netlink sockets in the calling thread's
//! network namespace: the work runs on a thread of its own that has entered the
//! container's, so that no thread of the agent ever changes namespace.
use std::{fs::File, os::fd::AsFd as _};

use aya::programs::{tc::TcHandle, TcAttachType};
use nix::sched::CloneFlags;

use crate::plumbing::link;

use super::{
    links::{add_clsact, ENDPOINT_PRIORITIES},
    programs::{FROM_CONTAINER, TO_SUBIF},
    Datapath, DatapathError,
};

/// The sub-interface's programs, each with where it attaches.
const PROGRAMS: [(&str, TcAttachType); 2] =
    [(FROM_CONTAINER, TcAttachType::Egress), (TO_SUBIF, TcAttachType::Ingress)];

impl Datapath {
    /// Attaches from_container at the egress and to_subif at the ingress of `ifname`, a
    /// macvlan/ipvlan sub-interface inside the network namespace `ns`, adding its clsact
    /// qdisc. A second call replaces both filters without a moment with neither.
    pub fn attach_subif(&mut self, ns: &File, ifname: &str) -> Result<(), DatapathError> {
        in_netns(ns, ifname, || {
            add_clsact(ifname)?;
            for (prog, at) in PROGRAMS {
                self.attach_clsact(prog, ifname, at, ENDPOINT_PRIORITIES, &[])?;
            }
            Ok(())
        })
    }

    /// Removes both filters from `ifname` in `ns` (to attach them afresh; a device that
    /// is going takes them along by itself). Filters already gone are fine.
    pub fn detach_subif(&mut self, ns: &File, ifname: &str) -> Result<(), DatapathError> {
        in_netns(ns, ifname, || {
            let handle = TcHandle::new(0, 1);
            for (_, at) in PROGRAMS {
                for priority in ENDPOINT_PRIORITIES {
                    Self::detach_filter(ifname, at, priority, handle);
                }
            }
            Ok(())
        })
    }
}

/// Whether from_container is attached at the egress of `ifname` in `ns`, and whether
/// to_subif is at its ingress (for drift checks: reconcile, doctor).
pub fn subif_filters(ns: &File, ifname: &str) -> Result<(bool, bool), DatapathError> {
    in_netns(ns, ifname, || {
        let index = nix::net::if_::if_nametoindex(ifname).map_err(|e| filters_err(ifname, e.into()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| filters_err(ifname, e))?;
        runtime.block_on(async {
            // Opened here, on the thread inside `ns`: the socket is that namespace's.
            let (conn, nl, _) = rtnetlink::new_connection().map_err(|e| filters_err(ifname, e))?;
            let conn = tokio::spawn(conn);
            let egress = link::bpf_filters(&nl, index, true).await.map_err(std::io::Error::other);
            let ingress = link::bpf_filters(&nl, index, false).await.map_err(std::io::Error::other);
            conn.abort();
            let (egress, ingress) =
                (egress.map_err(|e| filters_err(ifname, e))?, ingress.map_err(|e| filters_err(ifname, e))?);
            Ok((egress.iter().any(|p| p == FROM_CONTAINER), ingress.iter().any(|p| p == TO_SUBIF)))
        })
    })
}

fn filters_err(iface: &str, source: std::io::Error) -> DatapathError {
    DatapathError::Filters { iface: iface.into(), source }
}

/// Runs `work` on a thread that has entered the network namespace `ns`; its errors say
/// which namespace. The calling thread stays where it is.
fn in_netns<T: Send>(
    ns: &File,
    iface: &str,
    work: impl FnOnce() -> Result<T, DatapathError> + Send,
) -> Result<T, DatapathError> {
    let name = netns_name(ns);
    std::thread::scope(|s| {
        let thread =
            s.spawn(|| {
                nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
                    DatapathError::Netns { ns: name.clone(), iface: iface.into(), source: e.into() }
                })?;
                work().map_err(|source| DatapathError::InNetns { ns: name.clone(), source: Box::new(source) })
            });
        // A panic in `work` is the caller's, as if it had run on the caller's thread.
        thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The namespace as its file reads: the path of a named one (`/run/netns/NAME`, a bind
/// mount), else the kernel's name (`net:[4026532301]`, what `lsns` lists), else its
/// descriptor.
fn netns_name(ns: &File) -> String {
    use std::os::fd::AsRawFd as _;
    let fd = ns.as_raw_fd();
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map_or_else(|_| format!("fd {fd}"), |p| p.display().to_string())
}
