//! Names and sizes of netpath's maps (what `bpftool map list` shows); the table that
//! puts them together with their kinds and layouts is [`crate::contract`].

/// container IPv4 -> [`crate::EndpointInfo`]; written by the agent, read per packet.
pub const ENDPOINTS: &str = "ENDPOINTS";
/// container IPv4 -> per-CPU [`crate::TrafficCounters`].
pub const ENDPOINT_STATS: &str = "ENDPOINT_STATS";
/// [`crate::Reason`] as index -> per-CPU [`crate::TrafficCounters`] (tx fields used).
pub const REASON_STATS: &str = "REASON_STATS";

/// [`crate::CtKey`] -> [`crate::CtEntry`] of assured flows (TCP handshake complete, or
/// traffic both ways and then more); LRU, so a full table evicts the coldest flows.
pub const CONNTRACK: &str = "CONNTRACK";
/// The same for flows not yet assured. New flows start here and move to CONNTRACK once
/// assured, so a flood of new flows (SYNs from spoofed sources) evicts only other new
/// flows, never an established one: netfilter's early_drop of unassured entries.
pub const CONNTRACK_NEW: &str = "CONNTRACK_NEW";

/// Size of CONNTRACK_NEW for a CONNTRACK of `ct_entries` on a machine with `cpus`
/// possible CPUs: a quarter, but no less than 256 per CPU. The kernel's LRU hands each
/// CPU free entries 128 at a time and, when another CPU holds the rest, evicts live
/// entries to make some: a table of a few hundred entries on a few CPUs loses a flow's
/// entries while it is being set up.
pub const fn new_flow_entries(ct_entries: u32, cpus: u32) -> u32 {
    let quarter = ct_entries / 4;
    let floor = cpus.saturating_mul(256);
    if quarter < floor {
        floor
    } else {
        quarter
    }
}
/// Server-side tuple of a closed masqueraded TCP flow -> [`crate::ClosedFlow`]; LRU.
pub const SNAT_CLOSED: &str = "SNAT_CLOSED";
/// Closed flows remembered for port reuse.
pub const SNAT_CLOSED_ENTRIES: u32 = 65_536;
/// [`crate::PortKey`] -> [`crate::PortTarget`]: published container ports.
pub const PORT_MAPS: &str = "PORT_MAPS";
/// Single entry: [`crate::NodeConfig`].
pub const NODE_CONFIG: &str = "NODE_CONFIG";

/// [`crate::SockRevKey`] -> [`crate::SockOrigin`]: what a node-local socket asked for;
/// LRU, so sockets that are gone age out.
pub const NODE_LOCAL_REV: &str = "NODE_LOCAL_REV";

/// Ring buffer of [`crate::TraceEvent`]s for `netpath trace`.
pub const EVENTS: &str = "EVENTS";
/// Single entry: [`crate::TraceFilter`].
pub const TRACE_FILTER: &str = "TRACE_FILTER";
/// Bytes of the trace ring buffer.
pub const EVENTS_BYTES: u32 = 1 << 20;

/// Upper bound on endpoints per node; sizes both endpoint maps.
pub const MAX_ENDPOINTS: u32 = 16_384;
/// Conntrack entries (two per flow).
pub const CONNTRACK_ENTRIES: u32 = 262_144;
/// Published ports per node.
pub const MAX_PORT_MAPS: u32 = 131_072;

/// Node-local socket redirections remembered at once.
pub const NODE_LOCAL_REV_ENTRIES: u32 = 65_536;

/// Per-CPU scratch for a running trace's packet snapshots (not pinned).
pub const TRACE_SCRATCH: &str = "TRACE_SCRATCH";
/// Per-CPU scratch for bpf_fib_lookup's request (not pinned).
pub const FIB_SCRATCH: &str = "FIB_SCRATCH";
