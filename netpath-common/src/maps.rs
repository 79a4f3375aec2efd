//! Names and sizes of netpath's maps, the contract between the eBPF object and user
//! space (and what `bpftool map list` shows).

/// container IPv4 -> [`crate::EndpointInfo`]; written by the agent, read per packet.
pub const ENDPOINTS: &str = "ENDPOINTS";
/// container IPv4 -> per-CPU [`crate::TrafficCounters`].
pub const ENDPOINT_STATS: &str = "ENDPOINT_STATS";
/// [`crate::Reason`] as index -> per-CPU [`crate::TrafficCounters`] (tx fields used).
pub const REASON_STATS: &str = "REASON_STATS";

/// Upper bound on endpoints per node; sizes both endpoint maps.
pub const MAX_ENDPOINTS: u32 = 16_384;

/// Every map netpath pins, in the order `netpath map list` shows them.
pub const ALL: [&str; 3] = [ENDPOINTS, ENDPOINT_STATS, REASON_STATS];
