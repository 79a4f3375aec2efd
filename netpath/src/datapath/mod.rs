//! The eBPF side as user space sees it: loading the embedded object, pinning its maps,
//! attaching programs, and typed access to the maps.
mod batch;
mod contract;
pub mod entries;
pub mod family;
mod inspect;
pub mod layout;
mod links;
mod logs;
mod netkit;
mod programs;
mod senders;
mod slots;
mod subif;
mod sys;
mod tables;

use std::path::PathBuf;

pub use inspect::{CtRow, CtSummary, EndpointCounters, Inspector, MapSummary, ReasonCounter};
pub use links::{endpoint_programs, release_link, tc_programs};
pub use programs::{program, AttachMode, Datapath, EndpointAttach, PacketRun};
pub use subif::subif_filters;

/// CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns (conntrack's timestamps).
pub fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("failed to load the eBPF object (pins in {pin_dir}): {source}")]
    Load { pin_dir: PathBuf, source: Box<aya::EbpfError> },
    #[error("the eBPF object has no program {0}; the binary was built wrongly")]
    MissingProgram(&'static str),
    #[error("the eBPF object has no map {0}; the binary was built wrongly")]
    MissingMap(&'static str),
    #[error("cannot watch the datapath's log ring buffer: {source}")]
    Logs { source: std::io::Error },
    #[error("failed to load program {prog} into the kernel: {source}")]
    Verify { prog: &'static str, source: Box<aya::programs::ProgramError> },
    #[error("failed to attach {prog} to {iface}: {source}")]
    Attach { prog: &'static str, iface: String, source: Box<aya::programs::ProgramError> },
    #[error("failed to attach {prog} to netkit device {iface} (BPF_NETKIT_PEER link): {source}")]
    NetkitAttach { prog: &'static str, iface: String, source: std::io::Error },
    #[error("failed to add the clsact qdisc to {iface}: {source}")]
    Clsact { iface: String, source: std::io::Error },
    #[error("map {map}: {source}")]
    Map { map: &'static str, source: Box<aya::maps::MapError> },
    #[error("cannot open pinned map {path}: {source}; is the agent running with --bpffs-dir {dir}?")]
    Pinned { path: PathBuf, dir: PathBuf, source: Box<aya::maps::MapError> },
    #[error("cannot open cgroup {path}: {source}; pass an existing cgroup v2 directory with --cgroup")]
    Cgroup { path: PathBuf, source: std::io::Error },
    #[error("cannot create {path}: {source}")]
    PinDir { path: PathBuf, source: std::io::Error },
    #[error(
        "pinned map {map} ({pin}) has a layout this build cannot adopt: {found}, expected {expected}; \
         live flows depend on it, so the agent will not replace it: drain the node, remove the pin, then start again"
    )]
    Layout { map: &'static str, pin: PathBuf, found: String, expected: String },
    #[error("{map} is full: this node has {max} {what} already; remove some before adding more")]
    Full { map: &'static str, what: &'static str, max: u32 },
    #[error("IPv6 address {ip6} names {owner} as its endpoint, which is not registered; register its IPv4 address first")]
    NoOwner { ip6: std::net::Ipv6Addr, owner: std::net::Ipv4Addr },
    #[error("cannot count CPUs ({what}): {source}")]
    Cpus { what: &'static str, source: std::io::Error },
    #[error("per-CPU values for {map} do not match the CPU count: {source}")]
    PerCpu { map: &'static str, source: std::io::Error },
    #[error("the pinned link {pin} of {prog} on {iface} is not a link this build can take over ({found})")]
    LinkKind { prog: &'static str, iface: String, pin: PathBuf, found: String },
    #[error("cannot pin the link of {prog} on {iface} at {pin}: {source}")]
    LinkPin { prog: &'static str, iface: String, pin: PathBuf, source: Box<aya::pin::PinError> },
    #[error("cannot enter network namespace {ns} to reach {iface}: {source}")]
    Netns { ns: String, iface: String, source: std::io::Error },
    #[error("in network namespace {ns}: {source}")]
    InNetns { ns: String, source: Box<DatapathError> },
    #[error("cannot list the tc filters of {iface}: {source}")]
    Filters { iface: String, source: std::io::Error },
}

impl DatapathError {
    /// A bpf(2) command that failed on `map`, which aya does not wrap for us (batch
    /// operations, program-array reads).
    pub(crate) fn syscall(map: &'static str, call: &'static str, io_error: std::io::Error) -> Self {
        let source = aya::maps::MapError::SyscallError(aya::sys::SyscallError { call, io_error });
        DatapathError::Map { map, source: Box::new(source) }
    }
}
