//! Everything netpath changes in the kernel's networking configuration that is not a BPF
//! object: namespaces, veth pairs, addresses, routes, sysctls, the bpffs mount.
//! All of it through rtnetlink and procfs, never by running `ip`.
pub mod bpffs;
pub mod cgroup;
pub mod link;
pub mod netns;
pub mod sockets;
pub mod sysctl;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PlumbingError {
    #[error("cannot open network namespace {path}: {source}; check the path or PID")]
    NetnsOpen { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a network namespace; pass a bind-mounted netns file or /proc/PID/ns/net")]
    NotNetns { path: PathBuf },
    #[error("cannot enter network namespace {path}: {source}")]
    NetnsEnter { path: PathBuf, source: nix::Error },
    #[error("interface {name} already exists {place}; delete it or choose another name")]
    LinkExists { name: String, place: String },
    #[error("{what}: {source}")]
    Netlink { what: String, source: rtnetlink::Error },
    #[error("cannot open a netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("interface {0} not found")]
    LinkNotFound(String),
    #[error("cannot set sysctl {key}: {source}")]
    Sysctl { key: String, source: std::io::Error },
    #[error("the container's namespace has no IPv6 on {ifname} (IPv6 disabled in its kernel or namespace); start the agent without --pod-cidr6, or give the container IPv6")]
    NoIpv6 { ifname: String },
    #[error("cannot mount bpffs at {path}: {source}")]
    Mount { path: PathBuf, source: nix::Error },
    #[error("{path} is not on a BPF filesystem; give a --bpffs-dir under a bpffs mount such as /sys/fs/bpf")]
    NotBpffs { path: PathBuf },
    #[error(
        "no BPF filesystem for {path}: this process has a mount namespace of its own (ip netns exec?), where \
         pins would vanish with it, and the host has no bpffs at /sys/fs/bpf; mount one on the host \
         (mount -t bpf bpf /sys/fs/bpf) or start the agent with nsenter --net=..."
    )]
    PrivateMountNs { path: PathBuf },
    #[error("cannot create {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error(
        "--device netkit: kernel {kernel} has no netkit devices (netkit needs Linux 6.7+ built with \
         CONFIG_NETKIT); use --device veth"
    )]
    NoNetkit { kernel: String },
    #[error("cannot work inside network namespace {path}: {what}")]
    NetnsWorker { path: PathBuf, what: String },
}

impl PlumbingError {
    pub(crate) fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Self {
        let what = what.into();
        move |source| PlumbingError::Netlink { what, source }
    }
}

/// errno carried by a netlink error, if any.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}
