//! The datapath's maps. Types come from netpath-common and sizes from its contract table
//! (`netpath_common::contract`), which a test holds this object against; every map but
//! the scratch space is pinned by name so a restarted agent adopts it.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use netpath_common::{
    contract::{object_capacity as capacity, object_flags as flags},
    maps as name, ClosedFlow, CtEntry, CtEntry6, CtKey, CtKey6, Endpoint6Key, EndpointInfo, EndpointKey,
    LogLimit, NodeConfig, NodeConfig6, NodeRoute, PortKey, PortKey6, PortTarget, PortTarget6, SenderEntry,
    SockOrigin, SockOrigin6, SockRevKey, SockRevKey6, TraceEvent, TraceFilter, TrafficCounters,
};

#[map]
pub static ENDPOINTS: HashMap<EndpointKey, EndpointInfo> =
    HashMap::pinned(capacity(name::ENDPOINTS), flags(name::ENDPOINTS));

#[map]
pub static ENDPOINTS6: HashMap<Endpoint6Key, EndpointInfo> =
    HashMap::pinned(capacity(name::ENDPOINTS6), flags(name::ENDPOINTS6));

#[map]
pub static ENDPOINT_STATS: PerCpuArray<TrafficCounters> =
    PerCpuArray::pinned(capacity(name::ENDPOINT_STATS), flags(name::ENDPOINT_STATS));

#[map]
pub static REASON_STATS: PerCpuArray<TrafficCounters> =
    PerCpuArray::pinned(capacity(name::REASON_STATS), flags(name::REASON_STATS));

#[map]
pub static CONNTRACK: LruHashMap<CtKey, CtEntry> =
    LruHashMap::pinned(capacity(name::CONNTRACK), flags(name::CONNTRACK));

#[map]
pub static CONNTRACK_NEW: LruHashMap<CtKey, CtEntry> =
    // Sized again at load for the machine's CPUs; a share of the LRU per CPU.
    LruHashMap::pinned(capacity(name::CONNTRACK_NEW), flags(name::CONNTRACK_NEW));

#[map]
pub static SNAT_CLOSED: LruHashMap<CtKey, ClosedFlow> =
    LruHashMap::pinned(capacity(name::SNAT_CLOSED), flags(name::SNAT_CLOSED));

#[map]
pub static CONNTRACK6: LruHashMap<CtKey6, CtEntry6> =
    LruHashMap::pinned(capacity(name::CONNTRACK6), flags(name::CONNTRACK6));

#[map]
pub static CONNTRACK6_NEW: LruHashMap<CtKey6, CtEntry6> =
    LruHashMap::pinned(capacity(name::CONNTRACK6_NEW), flags(name::CONNTRACK6_NEW));

#[map]
pub static SNAT_CLOSED6: LruHashMap<CtKey6, ClosedFlow> =
    LruHashMap::pinned(capacity(name::SNAT_CLOSED6), flags(name::SNAT_CLOSED6));

#[map]
pub static PORT_MAPS: HashMap<PortKey, PortTarget> =
    HashMap::pinned(capacity(name::PORT_MAPS), flags(name::PORT_MAPS));

#[map]
pub static PORT_MAPS6: HashMap<PortKey6, PortTarget6> =
    HashMap::pinned(capacity(name::PORT_MAPS6), flags(name::PORT_MAPS6));

#[map]
pub static NODE_CONFIG: Array<NodeConfig> =
    Array::pinned(capacity(name::NODE_CONFIG), flags(name::NODE_CONFIG));

#[map]
pub static NODE_CONFIG6: Array<NodeConfig6> =
    Array::pinned(capacity(name::NODE_CONFIG6), flags(name::NODE_CONFIG6));

#[map]
pub static NODE_ROUTES: HashMap<EndpointKey, NodeRoute> =
    HashMap::pinned(capacity(name::NODE_ROUTES), flags(name::NODE_ROUTES));

#[map]
pub static NODE_ROUTES6: HashMap<Endpoint6Key, NodeRoute> =
    HashMap::pinned(capacity(name::NODE_ROUTES6), flags(name::NODE_ROUTES6));

/// The container path's slot, tail-called by from_container (see netpath_common::maps).
#[map]
pub static ENDPOINT_PROGS: ProgramArray =
    ProgramArray::pinned(capacity(name::ENDPOINT_PROGS), flags(name::ENDPOINT_PROGS));

/// The IPv6 container path's slot, tail-called by container_path (see netpath_common::maps).
#[map]
pub static ENDPOINT_PROGS6: ProgramArray =
    ProgramArray::pinned(capacity(name::ENDPOINT_PROGS6), flags(name::ENDPOINT_PROGS6));

/// Cluster mode's programs, tail-called by from_container (see netpath_common::maps).
#[map]
pub static CLUSTER_PROGS: ProgramArray =
    ProgramArray::pinned(capacity(name::CLUSTER_PROGS), flags(name::CLUSTER_PROGS));

/// Cluster mode's IPv6 programs (see netpath_common::maps::CLUSTER_PROGS6).
#[map]
pub static CLUSTER_PROGS6: ProgramArray =
    ProgramArray::pinned(capacity(name::CLUSTER_PROGS6), flags(name::CLUSTER_PROGS6));

#[map]
pub static NODE_LOCAL_REV: LruHashMap<SockRevKey, SockOrigin> =
    LruHashMap::pinned(capacity(name::NODE_LOCAL_REV), flags(name::NODE_LOCAL_REV));

#[map]
pub static NODE_LOCAL_REV6: LruHashMap<SockRevKey6, SockOrigin6> =
    LruHashMap::pinned(capacity(name::NODE_LOCAL_REV6), flags(name::NODE_LOCAL_REV6));

#[map]
pub static EVENTS: RingBuf = RingBuf::pinned(capacity(name::EVENTS), flags(name::EVENTS));

#[map]
pub static TRACE_FILTER: Array<TraceFilter> =
    Array::pinned(capacity(name::TRACE_FILTER), flags(name::TRACE_FILTER));

/// Per-CPU scratch for the packet snapshots of a running trace: slot 0 as the packet
/// arrived, slot 1 as it left (see events::begin and events::egress).
#[map]
pub static TRACE_SCRATCH: PerCpuArray<TraceEvent> =
    PerCpuArray::with_max_entries(capacity(name::TRACE_SCRATCH), flags(name::TRACE_SCRATCH));

/// Per-CPU scratch for bpf_fib_lookup's 64-byte request: on the stack it would push the
/// program past the 512 bytes older kernels allow for a whole call chain.
#[map]
pub static FIB_SCRATCH: PerCpuArray<aya_ebpf::bindings::bpf_fib_lookup> =
    PerCpuArray::with_max_entries(capacity(name::FIB_SCRATCH), flags(name::FIB_SCRATCH));

/// Per-CPU scratch for the IPv6 masquerade port search (see family::SCRATCH_FLOW):
/// BPF functions verified on their own take scalars only on older kernels.
#[map]
pub static CT6_SCRATCH: PerCpuArray<CtKey6> =
    PerCpuArray::with_max_entries(capacity(name::CT6_SCRATCH), flags(name::CT6_SCRATCH));

/// uplink_in6 and the NAT66 stages (see netpath_common::maps::PROGS6).
#[map]
pub static PROGS6: ProgramArray = ProgramArray::pinned(capacity(name::PROGS6), flags(name::PROGS6));

/// The source check's shortcut (see netpath_common::maps::SENDERS): this agent's own.
#[map]
pub static SENDERS: Array<SenderEntry> =
    Array::with_max_entries(capacity(name::SENDERS), flags(name::SENDERS));

/// Whether a hairpin may live (see netpath_common::maps::HAIRPIN).
#[map]
pub static HAIRPIN: Array<u64> = Array::pinned(capacity(name::HAIRPIN), flags(name::HAIRPIN));

/// The rare-event logger's slot (see netpath_common::maps::RARE_PROGS).
#[map]
pub static RARE_PROGS: ProgramArray =
    ProgramArray::with_max_entries(capacity(name::RARE_PROGS), flags(name::RARE_PROGS));

/// Per CPU and reason, when a rare event was last logged (see `rare`).
#[map]
pub static LOG_LIMIT: PerCpuArray<LogLimit> =
    PerCpuArray::with_max_entries(capacity(name::LOG_LIMIT), flags(name::LOG_LIMIT));
