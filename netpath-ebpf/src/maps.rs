//! The datapath's maps. Types and sizes come from netpath-common; every map is pinned by
//! name so a restarted agent adopts it instead of emptying it.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use netpath_common::{
    maps::{
        new_flow_entries, CONNTRACK_ENTRIES, EVENTS_BYTES, MAX_ENDPOINTS, MAX_PORT_MAPS,
        NODE_LOCAL_REV_ENTRIES, SNAT_CLOSED_ENTRIES,
    },
    ClosedFlow, CtEntry, CtKey, EndpointInfo, EndpointKey, NodeConfig, PortKey, PortTarget, Reason,
    SockOrigin, SockRevKey, TraceEvent, TraceFilter, TrafficCounters,
};

#[map]
pub static ENDPOINTS: HashMap<EndpointKey, EndpointInfo> = HashMap::pinned(MAX_ENDPOINTS, 0);

#[map]
pub static ENDPOINT_STATS: PerCpuHashMap<EndpointKey, TrafficCounters> =
    PerCpuHashMap::pinned(MAX_ENDPOINTS, 0);

#[map]
pub static REASON_STATS: PerCpuArray<TrafficCounters> = PerCpuArray::pinned(Reason::COUNT, 0);

#[map]
pub static CONNTRACK: LruHashMap<CtKey, CtEntry> = LruHashMap::pinned(CONNTRACK_ENTRIES, 0);

#[map]
pub static CONNTRACK_NEW: LruHashMap<CtKey, CtEntry> =
    // Sized again at load for the machine's CPUs.
    LruHashMap::pinned(new_flow_entries(CONNTRACK_ENTRIES, 1), 0);

#[map]
pub static SNAT_CLOSED: LruHashMap<CtKey, ClosedFlow> = LruHashMap::pinned(SNAT_CLOSED_ENTRIES, 0);

#[map]
pub static PORT_MAPS: HashMap<PortKey, PortTarget> = HashMap::pinned(MAX_PORT_MAPS, 0);

#[map]
pub static NODE_CONFIG: Array<NodeConfig> = Array::pinned(1, 0);

#[map]
pub static NODE_LOCAL_REV: LruHashMap<SockRevKey, SockOrigin> = LruHashMap::pinned(NODE_LOCAL_REV_ENTRIES, 0);

#[map]
pub static EVENTS: RingBuf = RingBuf::pinned(EVENTS_BYTES, 0);

#[map]
pub static TRACE_FILTER: Array<TraceFilter> = Array::pinned(1, 0);

/// Per-CPU scratch for the packet snapshots of a running trace: slot 0 as the packet
/// arrived, slot 1 as it left (see events::begin and events::egress).
#[map]
pub static TRACE_SCRATCH: PerCpuArray<TraceEvent> = PerCpuArray::with_max_entries(2, 0);

/// Per-CPU scratch for bpf_fib_lookup's 64-byte request: on the stack it would push the
/// program past the 512 bytes older kernels allow for a whole call chain.
#[map]
pub static FIB_SCRATCH: PerCpuArray<aya_ebpf::bindings::bpf_fib_lookup> = PerCpuArray::with_max_entries(1, 0);
