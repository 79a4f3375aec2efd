//! Types shared by netpath's eBPF programs and its user space.
//!
//! Every map key and value is defined here once, `#[repr(C)]`, so the kernel side and
//! user space can never disagree on a layout. Under the `user` feature the types gain
//! `aya::Pod` (to cross the map syscalls) and `bytemuck` (for byte views in tests).
#![no_std]

/// Marks map keys and values as plain old data for user space: `aya::Pod` to cross the
/// map syscalls, `bytemuck` for byte views in tests. Only for `#[repr(C)]` types of
/// integers and byte arrays with explicit `_pad` fields, whose sizes the modules' layout
/// tests assert, so that every bit pattern is a valid value.
#[cfg(feature = "user")]
macro_rules! pod {
    ($($t:ty),*) => {$(
        // SAFETY: see the macro's contract above; each module's layout test checks it.
        unsafe impl aya::Pod for $t {}
        unsafe impl bytemuck::Zeroable for $t {}
        unsafe impl bytemuck::Pod for $t {}
    )*};
}

pub mod conntrack;
pub mod contract;
pub mod endpoint;
pub mod maps;
pub mod reason;
pub mod sock;
pub mod trace;

pub use conntrack::{
    ClosedFlow, CtEntry, CtEntry6, CtKey, CtKey6, Ip6, NodeConfig, NodeConfig6, NodeRoute, PortKey, PortKey6,
    PortKeyOf, PortTarget, PortTarget6, PortTargetOf,
};
pub use endpoint::{
    subif_ifindex, Endpoint6Key, EndpointInfo, EndpointKey, LogLimit, SenderEntry, TrafficCounters,
    ENDPOINT_F_BRIDGED, ENDPOINT_F_NETKIT, ENDPOINT_F_PUBLISHED, ENDPOINT_F_SUBIF, GATEWAY6,
    SUBIF_IFINDEX_BASE,
};
pub use reason::Reason;
pub use sock::{SockOrigin, SockOrigin6, SockRevKey, SockRevKey6};
pub use trace::{TraceEvent, TraceFilter};
