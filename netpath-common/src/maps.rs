//! Names and sizes of netpath's maps (what `bpftool map list` shows); the table that
//! puts them together with their kinds and layouts is [`crate::contract`].

/// container IPv4 -> [`crate::EndpointInfo`]; written by the agent, read per packet.
pub const ENDPOINTS: &str = "ENDPOINTS";
/// An endpoint's counter slot ([`crate::EndpointInfo::counter_slot`]) -> per-CPU
/// [`crate::TrafficCounters`]. Slot 0 belongs to no endpoint.
pub const ENDPOINT_STATS: &str = "ENDPOINT_STATS";
/// A host device's ifindex, masked ([`crate::SenderEntry::slot`]) -> [`crate::SenderEntry`]:
/// the source check's shortcut, a cache of ENDPOINTS that each agent builds afresh from
/// it at start and keeps in step with it (every slot it fills names an entry ENDPOINTS
/// has; a packet whose ifindex is not in its slot is checked through ENDPOINTS). Not
/// pinned: what an earlier agent (or an earlier build, which did not know it) left
/// could name a removed endpoint, and a fresh one per agent never does.
pub const SENDERS: &str = "SENDERS";
/// SENDERS' slots, a power of two.
pub const SENDER_SLOTS: u32 = 16_384;
const _: () = assert!(SENDER_SLOTS.is_power_of_two());
/// Whether a container may be answering a hairpinned connection (another container's
/// connection to a published port of the node, translated to it), two u64s: at
/// [`HAIRPIN_OPENED`] the hairpins the datapath has opened, at [`HAIRPIN_CLEARED`] one
/// more than that count as the agent read it before a conntrack pass that found no
/// hairpin flow. While CLEARED == OPENED + 1 none lives, and a container with published
/// ports sends to another without the conntrack lookup its replies to a hairpin need.
/// Two writers, each of its own element. Pinned, so that every generation of programs
/// counts into the one the running gate reads (an agent's restart swaps the NAT66
/// stages and the container paths at different moments); a fresh one (zeros) means
/// "look up" until the agent's first pass.
pub const HAIRPIN: &str = "HAIRPIN";
pub const HAIRPIN_OPENED: u32 = 0;
pub const HAIRPIN_CLEARED: u32 = 1;
/// HAIRPIN's verdict: no hairpin lives while the agent's mark is one past the count of
/// those opened. The datapath's gate and the operator's `map dump` read it alike.
#[inline(always)]
pub const fn no_hairpin_lives(opened: u64, cleared: u64) -> bool {
    cleared == opened.wrapping_add(1)
}
/// [`crate::Reason`] as index -> per-CPU [`crate::TrafficCounters`] (tx fields used).
pub const REASON_STATS: &str = "REASON_STATS";

/// [`crate::CtKey`] -> [`crate::CtEntry`] of assured flows (TCP handshake complete, or
/// traffic both ways and then more); LRU, so a full table evicts the coldest flows.
pub const CONNTRACK: &str = "CONNTRACK";
/// The same for flows not yet assured. New flows start here and move to CONNTRACK once
/// assured, so a flood of new flows (SYNs from spoofed sources) evicts only other new
/// flows, never an established one: netfilter's early_drop of unassured entries. A
/// per-CPU LRU ([`CONNTRACK_NEW_FLAGS`]): each CPU has a share of its own.
pub const CONNTRACK_NEW: &str = "CONNTRACK_NEW";

/// BPF_F_NO_COMMON_LRU: CONNTRACK_NEW's entries live in the share of the CPU that
/// created them, and a share evicts only when it is full, 4 entries at a time, least
/// recently used first. The common LRU parks up to 128 free entries per CPU and, short
/// of them, evicts in batches of up to 128 wherever they are, the entries just created
/// included, well before the table is full.
pub const CONNTRACK_NEW_FLAGS: u32 = 2;

/// BPF_F_NO_PREALLOC: for the tables only the agent writes (endpoints, their counters,
/// published ports, node routes). Entries are allocated as the agent adds them rather
/// than all at load: 131,072 published ports and 16,384 endpoints' per-CPU counters are
/// megabytes a node would otherwise hold from the start (and, per CPU, grow with the
/// machine), and creating them dominated an agent start under emulation. The programs
/// only look entries up, which costs the same either way.
pub const NO_PREALLOC: u32 = 1;

/// Entries each CPU needs in a conntrack table (see [`ct_min_entries`]).
pub const CT_ENTRIES_PER_CPU: u32 = 256;

/// The smallest CONNTRACK for a machine with `cpus` possible CPUs. The kernel's common
/// LRU moves free entries to each CPU and evicts in batches of up to 128: measured on
/// 6.1 and 6.18, a smaller table evicts a freshly assured flow's entries before its
/// next packet (a third of them at 32 entries on 2 CPUs), and none at this size.
pub const fn ct_min_entries(cpus: u32) -> u32 {
    cpus.saturating_mul(CT_ENTRIES_PER_CPU)
}

/// Size of CONNTRACK_NEW for a CONNTRACK of `ct_entries` on a machine with `cpus`
/// possible CPUs: a quarter, but no less than 256 per CPU, rounded up to a multiple of
/// `cpus` (the kernel splits a per-CPU LRU evenly and reports the rounded size).
pub const fn new_flow_entries(ct_entries: u32, cpus: u32) -> u32 {
    let cpus = if cpus == 0 { 1 } else { cpus };
    let quarter = ct_entries / 4;
    let floor = ct_min_entries(cpus);
    let n = if quarter < floor { floor } else { quarter };
    n.div_ceil(cpus).saturating_mul(cpus)
}
/// Server-side tuple of a closed masqueraded TCP flow -> [`crate::ClosedFlow`]; LRU.
pub const SNAT_CLOSED: &str = "SNAT_CLOSED";
/// [`CONNTRACK`] for IPv6: [`crate::CtKey6`] -> [`crate::CtEntry6`] (NAT66).
pub const CONNTRACK6: &str = "CONNTRACK6";
/// [`CONNTRACK_NEW`] for IPv6 (same flags).
pub const CONNTRACK6_NEW: &str = "CONNTRACK6_NEW";
/// [`SNAT_CLOSED`] for IPv6: [`crate::CtKey6`] -> [`crate::ClosedFlow`].
pub const SNAT_CLOSED6: &str = "SNAT_CLOSED6";
/// The IPv6 half of the node's settings ([`crate::NodeConfig6`], one entry).
pub const NODE_CONFIG6: &str = "NODE_CONFIG6";
/// Per-CPU scratch of the IPv6 masquerade (four [`crate::CtKey6`], see the eBPF crate's
/// family module).
pub const CT6_SCRATCH: &str = "CT6_SCRATCH";
/// IPv6's programs that IPv4's entry points and container_path6 tail-call: uplink_in6
/// (from uplink_in, for every IPv6 packet), container_nat6 (from container_path6, for
/// what it masquerades), container_snat6 and container_pair6 (a new flow's port search and
/// pair of entries). Filled by the agent at load, before anything is attached; pinned,
/// as the kernel empties a program array no user space holds, and the programs that
/// tail-call it run on while no agent does.
pub const PROGS6: &str = "PROGS6";
pub const TAIL_UPLINK_IN6: u32 = 0;
pub const TAIL_CONTAINER_NAT6: u32 = 1;
pub const TAIL_CONTAINER_SNAT6: u32 = 2;
pub const TAIL_CONTAINER_PAIR6: u32 = 3;
/// ICMPv6 errors about NAT66 flows: from the outside (by uplink_in6), from a container
/// (by container_nat6).
pub const TAIL_ICMP6_TO_CONTAINER: u32 = 4;
pub const TAIL_ICMP6_FROM_CONTAINER: u32 = 5;
/// Closed flows remembered for port reuse.
pub const SNAT_CLOSED_ENTRIES: u32 = 65_536;
/// [`crate::PortKey`] -> [`crate::PortTarget`]: published container ports.
pub const PORT_MAPS: &str = "PORT_MAPS";
/// [`crate::PortKey6`] -> [`crate::PortTarget6`]: container ports published on the
/// node's IPv6 address.
pub const PORT_MAPS6: &str = "PORT_MAPS6";
/// Single entry: [`crate::NodeConfig`].
pub const NODE_CONFIG: &str = "NODE_CONFIG";
/// Cluster mode: another node's pod subnet (network address, the destination masked
/// with the node prefix) -> [`crate::NodeRoute`]. Written from the cluster store.
pub const NODE_ROUTES: &str = "NODE_ROUTES";
/// What every endpoint's host device runs: `from_container`, attached there, only
/// tail-calls the container path through this slot ([`TAIL_CONTAINER_PATH`]). Pinned,
/// so the slot outlives the agent; a restarted or upgraded agent puts its own program in
/// it and every endpoint runs that at once, whatever attached it. An endpoint costs an
/// attachment once, when it is made, and never again.
pub const ENDPOINT_PROGS: &str = "ENDPOINT_PROGS";
/// ENDPOINT_PROGS' slot of `container_path`.
pub const TAIL_CONTAINER_PATH: u32 = 0;
/// The IPv6 container path's slot: from_container tail-calls `container_path6` through
/// it first thing for an IPv6 packet (by the skb's protocol), so the IPv4 work (its
/// verifier budget, its stack) never sees IPv6; container_path does the same for the
/// from_container of builds before 1f186d9, still attached to endpoints they made. A
/// map of its own, not a second slot of ENDPOINT_PROGS: that map, which every
/// endpoint's attached program holds, stays as earlier builds made it, and an upgrade
/// keeps every endpoint forwarding (hitless) instead of attaching them all again.
pub const ENDPOINT_PROGS6: &str = "ENDPOINT_PROGS6";
/// ENDPOINT_PROGS6's slot of `container_path6`.
pub const TAIL_CONTAINER_PATH6: u32 = 0;
/// [`crate::Endpoint6Key`] -> [`crate::EndpointInfo`]: the IPv6 addresses of local
/// containers (their own and their link-local one), with the same value, counter slot
/// included, as the endpoint's IPv4 entry.
pub const ENDPOINTS6: &str = "ENDPOINTS6";
/// Two entries per endpoint: its address and its link-local address.
pub const MAX_ENDPOINTS6: u32 = 2 * MAX_ENDPOINTS;

/// Nodes a cluster may have.
pub const MAX_NODES: u32 = 16_384;
/// Cluster mode: the programs from_container tail-calls, by [`TAIL_TO_OTHER_NODE`] and
/// the like. A program of their own so that a single node never verifies them (tens of
/// thousands of instructions: minutes under emulation), and pinned so the slot outlives
/// the agent: the kernel empties a program array when its last user reference goes.
pub const CLUSTER_PROGS: &str = "CLUSTER_PROGS";
/// CLUSTER_PROGS' slot of `to_other_node`.
pub const TAIL_TO_OTHER_NODE: u32 = 0;
/// Cluster mode's IPv6 programs (`--cluster-cidr6`): `to_other_node6`, tail-called by
/// container_path6 for a pod of another node, and `from_other_node6`, tail-called by
/// uplink_in for IPv6 on a node with `NODE_F_CLUSTER6` (native routing's arrivals; it
/// hands the rest to uplink_in6). An array of its own, not more slots of CLUSTER_PROGS:
/// a bigger CLUSTER_PROGS would be a new map at the upgrade, and the old one, which the
/// running container_path holds, is emptied by the kernel when its last user reference
/// goes, cutting IPv4 cross-node traffic until the new container_path takes over; this
/// one is new, and the old programs never see it.
pub const CLUSTER_PROGS6: &str = "CLUSTER_PROGS6";
pub const TAIL_TO_OTHER_NODE6: u32 = 0;
pub const TAIL_FROM_OTHER_NODE6: u32 = 1;
/// Cluster mode: another node's IPv6 pod subnet (the destination masked with the node
/// prefix, [`crate::Endpoint6Key`]) -> [`crate::NodeRoute`], as NODE_ROUTES for IPv4.
pub const NODE_ROUTES6: &str = "NODE_ROUTES6";

/// [`crate::SockRevKey`] -> [`crate::SockOrigin`]: what a node-local socket asked for;
/// LRU, so sockets that are gone age out.
pub const NODE_LOCAL_REV: &str = "NODE_LOCAL_REV";
/// [`NODE_LOCAL_REV`] for IPv6: [`crate::SockRevKey6`] -> [`crate::SockOrigin6`].
pub const NODE_LOCAL_REV6: &str = "NODE_LOCAL_REV6";

/// Ring buffer of [`crate::TraceEvent`]s for `netpath trace`.
pub const EVENTS: &str = "EVENTS";
/// Single entry: [`crate::TraceFilter`].
pub const TRACE_FILTER: &str = "TRACE_FILTER";
/// Bytes of the trace ring buffer.
pub const EVENTS_BYTES: u32 = 1 << 20;

/// Upper bound on endpoints per node; sizes both endpoint maps.
pub const MAX_ENDPOINTS: u32 = 16_384;
/// ENDPOINT_STATS' slots: one per endpoint, and slot 0 for none. A per-CPU array is
/// allocated whole: 32 B per slot and possible CPU, 512 KiB per CPU (Cilium's metrics
/// map, a preallocated per-CPU hash, is 1 MiB per CPU).
pub const ENDPOINT_STATS_SLOTS: u32 = MAX_ENDPOINTS + 1;
// Slots are `u16` in the endpoint entry.
const _: () = assert!(ENDPOINT_STATS_SLOTS <= u16::MAX as u32 + 1);
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
/// Per CPU and reason, when a rare event was last logged (not pinned).
pub const LOG_LIMIT: &str = "LOG_LIMIT";
/// The rare-event logger (`log_rare`), tail-called by every tc program. A program of its
/// own, not a function call: old kernels verify a called function again on every path
/// that reaches it, which cost every agent start seconds under emulation. Not pinned: the
/// kernel empties it when the agent that filled it exits, and the programs then drop the
/// packet as they would have, unlogged, since no one reads the log.
pub const RARE_PROGS: &str = "RARE_PROGS";
/// RARE_PROGS' slot of `log_rare`.
pub const TAIL_LOG_RARE: u32 = 0;
/// aya-log's ring buffer, named and sized by aya-log-ebpf (not pinned: the agent that
/// loaded the programs reads it).
pub const AYA_LOGS: &str = "AYA_LOGS";
pub const AYA_LOGS_BYTES: u32 = 1 << 17;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_sizes_follow_the_cpus() {
        assert_eq!(ct_min_entries(2), 512);
        assert_eq!(ct_min_entries(64), 16_384);
        // A quarter of CONNTRACK, at least 256 per CPU, a multiple of the CPUs.
        assert_eq!(new_flow_entries(CONNTRACK_ENTRIES, 2), 65_536);
        assert_eq!(new_flow_entries(512, 2), 512);
        assert_eq!(new_flow_entries(300_000, 7), 75_005);
        assert_eq!(new_flow_entries(300_000, 7) % 7, 0);
        assert_eq!(new_flow_entries(1024, 0), 256);
        // The default table fits the floor up to 1024 possible CPUs.
        assert!(ct_min_entries(1024) <= CONNTRACK_ENTRIES);
    }

    #[test]
    fn the_table_of_new_flows_is_a_per_cpu_lru() {
        // BPF_F_NO_COMMON_LRU (include/uapi/linux/bpf.h).
        assert_eq!(CONNTRACK_NEW_FLAGS, 1 << 1);
    }
}
