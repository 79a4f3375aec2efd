//! The datapath's maps. Types and sizes come from netpath-common; every map is pinned by
//! name so a restarted agent adopts it instead of emptying it.
use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
};
use netpath_common::{maps::MAX_ENDPOINTS, EndpointInfo, EndpointKey, Reason, TrafficCounters};

#[map]
pub static ENDPOINTS: HashMap<EndpointKey, EndpointInfo> = HashMap::pinned(MAX_ENDPOINTS, 0);

#[map]
pub static ENDPOINT_STATS: PerCpuHashMap<EndpointKey, TrafficCounters> =
    PerCpuHashMap::pinned(MAX_ENDPOINTS, 0);

#[map]
pub static REASON_STATS: PerCpuArray<TrafficCounters> = PerCpuArray::pinned(Reason::COUNT, 0);
