//! The datapath's maps. Types come from netpath-common and sizes from its contract table
//! (`netpath_common::contract`), which a test holds this object against; every map but
//! the scratch space is pinned by name so a restarted agent adopts it.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use netpath_common::{
    contract::object_capacity as capacity, maps as name, ClosedFlow, CtEntry, CtKey, EndpointInfo,
    EndpointKey, NodeConfig, PortKey, PortTarget, SockOrigin, SockRevKey, TraceEvent, TraceFilter,
    TrafficCounters,
};

#[map]
pub static ENDPOINTS: HashMap<EndpointKey, EndpointInfo> = HashMap::pinned(capacity(name::ENDPOINTS), 0);

#[map]
pub static ENDPOINT_STATS: PerCpuHashMap<EndpointKey, TrafficCounters> =
    PerCpuHashMap::pinned(capacity(name::ENDPOINT_STATS), 0);

#[map]
pub static REASON_STATS: PerCpuArray<TrafficCounters> = PerCpuArray::pinned(capacity(name::REASON_STATS), 0);

#[map]
pub static CONNTRACK: LruHashMap<CtKey, CtEntry> = LruHashMap::pinned(capacity(name::CONNTRACK), 0);

#[map]
pub static CONNTRACK_NEW: LruHashMap<CtKey, CtEntry> =
    // Sized again at load for the machine's CPUs.
    LruHashMap::pinned(capacity(name::CONNTRACK_NEW), 0);

#[map]
pub static SNAT_CLOSED: LruHashMap<CtKey, ClosedFlow> = LruHashMap::pinned(capacity(name::SNAT_CLOSED), 0);

#[map]
pub static PORT_MAPS: HashMap<PortKey, PortTarget> = HashMap::pinned(capacity(name::PORT_MAPS), 0);

#[map]
pub static NODE_CONFIG: Array<NodeConfig> = Array::pinned(capacity(name::NODE_CONFIG), 0);

#[map]
pub static NODE_LOCAL_REV: LruHashMap<SockRevKey, SockOrigin> =
    LruHashMap::pinned(capacity(name::NODE_LOCAL_REV), 0);

#[map]
pub static EVENTS: RingBuf = RingBuf::pinned(capacity(name::EVENTS), 0);

#[map]
pub static TRACE_FILTER: Array<TraceFilter> = Array::pinned(capacity(name::TRACE_FILTER), 0);

/// Per-CPU scratch for the packet snapshots of a running trace: slot 0 as the packet
/// arrived, slot 1 as it left (see events::begin and events::egress).
#[map]
pub static TRACE_SCRATCH: PerCpuArray<TraceEvent> =
    PerCpuArray::with_max_entries(capacity(name::TRACE_SCRATCH), 0);

/// Per-CPU scratch for bpf_fib_lookup's 64-byte request: on the stack it would push the
/// program past the 512 bytes older kernels allow for a whole call chain.
#[map]
pub static FIB_SCRATCH: PerCpuArray<aya_ebpf::bindings::bpf_fib_lookup> =
    PerCpuArray::with_max_entries(capacity(name::FIB_SCRATCH), 0);
