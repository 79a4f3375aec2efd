//! Types shared by netpath's eBPF programs and its user space.
//!
//! Every map key and value is defined here once, `#[repr(C)]`, so the kernel side and
//! user space can never disagree on a layout. Under the `user` feature the types gain
//! `aya::Pod` (to cross the map syscalls) and `bytemuck` (for byte views in tests).
#![no_std]

pub mod conntrack;
pub mod endpoint;
pub mod maps;
pub mod reason;
pub mod sock;
pub mod trace;

pub use conntrack::{ClosedFlow, CtEntry, CtKey, NodeConfig, PortKey, PortTarget};
pub use endpoint::{EndpointInfo, EndpointKey, TrafficCounters, ENDPOINT_F_BRIDGED, ENDPOINT_F_PUBLISHED};
pub use reason::Reason;
pub use sock::{SockOrigin, SockRevKey};
pub use trace::{TraceEvent, TraceFilter};
