//! The contract between the eBPF object and user space, stated once: every map with its
//! kind, key and value, capacity rule and what an upgrade may do with it; every program
//! with where it attaches. The eBPF crate sizes its maps from this table, user space
//! derives its layout checks, listings and program names from it, and a rootless test
//! (netpath's `datapath::contract` tests) parses the embedded object and holds it
//! against the table, so no side can drift alone.
use core::mem::size_of;

use crate::{
    maps::*, ClosedFlow, CtEntry, CtEntry6, CtKey, CtKey6, Endpoint6Key, EndpointInfo, EndpointKey, LogLimit,
    NodeConfig, NodeConfig6, NodeRoute, PortKey, PortKey6, PortTarget, PortTarget6, Reason, SenderEntry,
    SockOrigin, SockOrigin6, SockRevKey, SockRevKey6, TraceEvent, TraceFilter, TrafficCounters,
};

/// A map's kind, as the kernel numbers it (enum bpf_map_type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MapKind {
    Hash = 1,
    Array = 2,
    ProgArray = 3,
    PerCpuHash = 5,
    PerCpuArray = 6,
    LruHash = 9,
    RingBuf = 27,
}

/// How many entries a map holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capacity {
    /// A fixed number (bytes, for a ring buffer).
    Fixed(u32),
    /// `--ct-max-entries` (the object's default: [`CONNTRACK_ENTRIES`]).
    Conntrack,
    /// [`new_flow_entries`] of `--ct-max-entries` and the possible CPUs.
    NewFlows,
    /// The IPv6 tables: as [`Capacity::Conntrack`], [`Capacity::NewFlows`] and
    /// [`Capacity::Fixed`] on a node with IPv6 (`--pod-cidr6`); otherwise the smallest an
    /// LRU table takes on the machine ([`ct_min_entries`]), so that a node without
    /// IPv6 does not preallocate tens of megabytes it never uses (LRU tables cannot be
    /// allocated lazily). Turning IPv6 on later migrates them at the next start.
    Conntrack6,
    NewFlows6,
    Fixed6(u32),
}

/// One map of the object.
#[derive(Clone, Copy, Debug)]
pub struct MapSpec {
    pub name: &'static str,
    pub kind: MapKind,
    pub key_size: u32,
    pub value_size: u32,
    pub capacity: Capacity,
    /// The map flags the object declares (BPF_F_NO_COMMON_LRU for CONNTRACK_NEW,
    /// BPF_F_NO_PREALLOC for the tables only the agent writes); the layout check
    /// compares the ones that change how the map behaves (the kind of LRU).
    pub flags: u32,
    /// Pinned by name under the agent's pin directory (and so adopted on restart).
    pub pinned: bool,
    /// Its contents may be lost on an upgrade without breaking a connection (counters,
    /// trace plumbing, settings the agent writes again at start).
    pub disposable: bool,
}

const fn map(
    name: &'static str,
    kind: MapKind,
    key_size: usize,
    value_size: usize,
    capacity: Capacity,
    disposable: bool,
) -> MapSpec {
    MapSpec {
        name,
        kind,
        key_size: key_size as u32,
        value_size: value_size as u32,
        capacity,
        flags: 0,
        pinned: true,
        disposable,
    }
}

impl MapSpec {
    /// The same map with the object declaring `flags`.
    const fn with_flags(self, flags: u32) -> Self {
        MapSpec { flags, ..self }
    }
}

/// struct bpf_fib_lookup's size (include/uapi/linux/bpf.h): FIB_SCRATCH's value.
const FIB_LOOKUP_SIZE: usize = 64;

/// Every map of the object: the pinned ones in the order `netpath map list` shows them,
/// then the per-CPU scratch space the programs use inside one run.
pub const MAPS: [MapSpec; 33] = [
    map(
        ENDPOINTS,
        MapKind::Hash,
        size_of::<EndpointKey>(),
        size_of::<EndpointInfo>(),
        Capacity::Fixed(MAX_ENDPOINTS),
        false,
    )
    .with_flags(NO_PREALLOC),
    map(
        ENDPOINTS6,
        MapKind::Hash,
        size_of::<Endpoint6Key>(),
        size_of::<EndpointInfo>(),
        Capacity::Fixed(MAX_ENDPOINTS6),
        false,
    )
    .with_flags(NO_PREALLOC),
    map(
        ENDPOINT_STATS,
        MapKind::PerCpuArray,
        4,
        size_of::<TrafficCounters>(),
        Capacity::Fixed(ENDPOINT_STATS_SLOTS),
        true,
    ),
    map(
        REASON_STATS,
        MapKind::PerCpuArray,
        4,
        size_of::<TrafficCounters>(),
        Capacity::Fixed(Reason::COUNT),
        true,
    ),
    map(CONNTRACK, MapKind::LruHash, size_of::<CtKey>(), size_of::<CtEntry>(), Capacity::Conntrack, false),
    map(CONNTRACK_NEW, MapKind::LruHash, size_of::<CtKey>(), size_of::<CtEntry>(), Capacity::NewFlows, false)
        .with_flags(CONNTRACK_NEW_FLAGS),
    map(
        SNAT_CLOSED,
        MapKind::LruHash,
        size_of::<CtKey>(),
        size_of::<ClosedFlow>(),
        Capacity::Fixed(SNAT_CLOSED_ENTRIES),
        true,
    ),
    map(
        CONNTRACK6,
        MapKind::LruHash,
        size_of::<CtKey6>(),
        size_of::<CtEntry6>(),
        Capacity::Conntrack6,
        false,
    ),
    map(
        CONNTRACK6_NEW,
        MapKind::LruHash,
        size_of::<CtKey6>(),
        size_of::<CtEntry6>(),
        Capacity::NewFlows6,
        false,
    )
    .with_flags(CONNTRACK_NEW_FLAGS),
    map(
        SNAT_CLOSED6,
        MapKind::LruHash,
        size_of::<CtKey6>(),
        size_of::<ClosedFlow>(),
        Capacity::Fixed6(SNAT_CLOSED_ENTRIES),
        true,
    ),
    map(
        PORT_MAPS,
        MapKind::Hash,
        size_of::<PortKey>(),
        size_of::<PortTarget>(),
        Capacity::Fixed(MAX_PORT_MAPS),
        false,
    )
    .with_flags(NO_PREALLOC),
    map(
        PORT_MAPS6,
        MapKind::Hash,
        size_of::<PortKey6>(),
        size_of::<PortTarget6>(),
        Capacity::Fixed(MAX_PORT_MAPS),
        false,
    )
    .with_flags(NO_PREALLOC),
    map(NODE_CONFIG, MapKind::Array, 4, size_of::<NodeConfig>(), Capacity::Fixed(1), true),
    map(NODE_CONFIG6, MapKind::Array, 4, size_of::<NodeConfig6>(), Capacity::Fixed(1), true),
    // Not disposable: cross-node connections ride on it while an agent restarts.
    map(
        NODE_ROUTES,
        MapKind::Hash,
        size_of::<EndpointKey>(),
        size_of::<NodeRoute>(),
        Capacity::Fixed(MAX_NODES),
        false,
    )
    .with_flags(NO_PREALLOC),
    // As NODE_ROUTES, for the other nodes' IPv6 subnets.
    map(
        NODE_ROUTES6,
        MapKind::Hash,
        size_of::<Endpoint6Key>(),
        size_of::<NodeRoute>(),
        Capacity::Fixed(MAX_NODES),
        false,
    )
    .with_flags(NO_PREALLOC),
    // Written again at every start, before any endpoint is attached.
    map(CLUSTER_PROGS, MapKind::ProgArray, 4, 4, Capacity::Fixed(1), true),
    // The same, for IPv6 (see maps::CLUSTER_PROGS6).
    map(CLUSTER_PROGS6, MapKind::ProgArray, 4, 4, Capacity::Fixed(2), true),
    // Written again at every load; a new one has every endpoint attached again.
    map(ENDPOINT_PROGS, MapKind::ProgArray, 4, 4, Capacity::Fixed(1), true),
    // Written again at every load, before ENDPOINT_PROGS.
    map(ENDPOINT_PROGS6, MapKind::ProgArray, 4, 4, Capacity::Fixed(1), true),
    // Written again at every load with --pod-cidr6, before anything is attached. Pinned
    // like the others: the kernel empties a program array when no user space holds it,
    // and the programs tail-calling it must go on while no agent runs.
    map(PROGS6, MapKind::ProgArray, 4, 4, Capacity::Fixed(6), true),
    map(
        NODE_LOCAL_REV,
        MapKind::LruHash,
        size_of::<SockRevKey>(),
        size_of::<SockOrigin>(),
        Capacity::Fixed(NODE_LOCAL_REV_ENTRIES),
        false,
    ),
    // Sized as IPv6's other tables: an LRU table is allocated whole, and only a node with
    // IPv6 (`--pod-cidr6`) redirects IPv6 sockets.
    map(
        NODE_LOCAL_REV6,
        MapKind::LruHash,
        size_of::<SockRevKey6>(),
        size_of::<SockOrigin6>(),
        Capacity::Fixed6(NODE_LOCAL_REV_ENTRIES),
        false,
    ),
    map(EVENTS, MapKind::RingBuf, 0, 0, Capacity::Fixed(EVENTS_BYTES), true),
    map(TRACE_FILTER, MapKind::Array, 4, size_of::<TraceFilter>(), Capacity::Fixed(1), true),
    MapSpec {
        pinned: false,
        ..map(TRACE_SCRATCH, MapKind::PerCpuArray, 4, size_of::<TraceEvent>(), Capacity::Fixed(2), true)
    },
    MapSpec {
        pinned: false,
        ..map(FIB_SCRATCH, MapKind::PerCpuArray, 4, FIB_LOOKUP_SIZE, Capacity::Fixed(1), true)
    },
    MapSpec {
        pinned: false,
        ..map(LOG_LIMIT, MapKind::PerCpuArray, 4, size_of::<LogLimit>(), Capacity::Fixed(Reason::COUNT), true)
    },
    MapSpec {
        pinned: false,
        ..map(CT6_SCRATCH, MapKind::PerCpuArray, 4, size_of::<CtKey6>(), Capacity::Fixed(4), true)
    },
    MapSpec {
        pinned: false,
        ..map(SENDERS, MapKind::Array, 4, size_of::<SenderEntry>(), Capacity::Fixed(SENDER_SLOTS), true)
    },
    map(HAIRPIN, MapKind::Array, 4, 8, Capacity::Fixed(2), true),
    MapSpec { pinned: false, ..map(RARE_PROGS, MapKind::ProgArray, 4, 4, Capacity::Fixed(1), true) },
    MapSpec { pinned: false, ..map(AYA_LOGS, MapKind::RingBuf, 0, 0, Capacity::Fixed(AYA_LOGS_BYTES), true) },
];

/// The map called `name`. Panics (at compile time, in a const) when there is none.
pub const fn spec(name: &str) -> &'static MapSpec {
    let mut i = 0;
    while i < MAPS.len() {
        if str_eq(MAPS[i].name, name) {
            return &MAPS[i];
        }
        i += 1;
    }
    panic!("no such map in the contract")
}

/// A map's flags as the object declares them.
pub const fn object_flags(name: &str) -> u32 {
    spec(name).flags
}

/// A map's capacity as the object declares it (the agent resizes conntrack at load).
pub const fn object_capacity(name: &str) -> u32 {
    match spec(name).capacity {
        Capacity::Fixed(n) | Capacity::Fixed6(n) => n,
        Capacity::Conntrack | Capacity::Conntrack6 => CONNTRACK_ENTRIES,
        Capacity::NewFlows | Capacity::NewFlows6 => new_flow_entries(CONNTRACK_ENTRIES, 1),
    }
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Where a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// tc ingress (TCX from 6.6, clsact before) of the devices named.
    TcIngress(&'static str),
    /// XDP on the uplink.
    Xdp,
    /// Attached nowhere: tail-called by the programs named.
    TailCall(&'static str),
    /// A cgroup socket-address hook (connect4, sendmsg4, recvmsg4, getpeername4 and their
    /// IPv6 counterparts).
    CgroupSockAddr(&'static str),
    /// Never attached by the agent: a reference program `cargo xtask bench` attaches in
    /// a world of its own (tc ingress), to measure against.
    Benchmark(&'static str),
}

/// One program of the object.
#[derive(Clone, Copy, Debug)]
pub struct ProgramSpec {
    pub name: &'static str,
    pub attach: Attach,
}

/// Program names, as the object, the kernel's listings and the trace know them.
pub mod program {
    pub const FROM_CONTAINER: &str = "from_container";
    pub const CONTAINER_PATH: &str = "container_path";
    pub const CONTAINER_PATH6: &str = "container_path6";
    pub const UPLINK_IN: &str = "uplink_in";
    pub const UPLINK_IN6: &str = "uplink_in6";
    pub const CONTAINER_NAT6: &str = "container_nat6";
    pub const CONTAINER_SNAT6: &str = "container_snat6";
    pub const CONTAINER_PAIR6: &str = "container_pair6";
    pub const ICMP6_TO_CONTAINER: &str = "icmp6_to_container";
    pub const ICMP6_FROM_CONTAINER: &str = "icmp6_from_container";
    pub const UPLINK_XDP: &str = "uplink_xdp";
    pub const FROM_TUNNEL: &str = "from_tunnel";
    pub const TO_OTHER_NODE: &str = "to_other_node";
    pub const TO_OTHER_NODE6: &str = "to_other_node6";
    pub const FROM_OTHER_NODE6: &str = "from_other_node6";
    pub const LOG_RARE: &str = "log_rare";
    pub const NODE_CONNECT4: &str = "node_connect4";
    pub const NODE_SENDMSG4: &str = "node_sendmsg4";
    pub const NODE_RECVMSG4: &str = "node_recvmsg4";
    pub const NODE_GETPEERNAME4: &str = "node_getpeername4";
    pub const NODE_CONNECT6: &str = "node_connect6";
    pub const NODE_SENDMSG6: &str = "node_sendmsg6";
    pub const NODE_RECVMSG6: &str = "node_recvmsg6";
    pub const NODE_GETPEERNAME6: &str = "node_getpeername6";
    pub const LAYOUT_FLOOR: &str = "layout_floor";
    pub const TO_SUBIF: &str = "to_subif";
}

pub const PROGRAMS: [ProgramSpec; 26] = [
    ProgramSpec {
        name: program::FROM_CONTAINER,
        attach: Attach::TcIngress(
            "each container's host veth (and the egress of a macvlan/ipvlan endpoint's interface, in its namespace)",
        ),
    },
    ProgramSpec {
        name: program::TO_SUBIF,
        attach: Attach::TcIngress("a macvlan/ipvlan endpoint's interface, in its namespace"),
    },
    ProgramSpec {
        name: program::CONTAINER_PATH,
        attach: Attach::TailCall("from_container, on every packet"),
    },
    ProgramSpec {
        name: program::CONTAINER_PATH6,
        attach: Attach::TailCall("container_path, on every IPv6 packet"),
    },
    ProgramSpec { name: program::UPLINK_IN, attach: Attach::TcIngress("the uplink") },
    ProgramSpec {
        name: program::CONTAINER_NAT6,
        attach: Attach::TailCall("container_path6, for what it masquerades (NAT66)"),
    },
    ProgramSpec {
        name: program::CONTAINER_SNAT6,
        attach: Attach::TailCall("container_nat6, for a new flow's port"),
    },
    ProgramSpec {
        name: program::ICMP6_TO_CONTAINER,
        attach: Attach::TailCall("uplink_in6, for an ICMPv6 error to the node's address"),
    },
    ProgramSpec {
        name: program::ICMP6_FROM_CONTAINER,
        attach: Attach::TailCall("container_nat6, for an ICMPv6 error a container sends out"),
    },
    ProgramSpec {
        name: program::CONTAINER_PAIR6,
        attach: Attach::TailCall("container_snat6, for a new flow's entries"),
    },
    ProgramSpec { name: program::UPLINK_IN6, attach: Attach::TailCall("uplink_in, on every IPv6 packet") },
    ProgramSpec { name: program::UPLINK_XDP, attach: Attach::Xdp },
    ProgramSpec { name: program::FROM_TUNNEL, attach: Attach::TcIngress("the VXLAN device (cluster mode)") },
    ProgramSpec { name: program::TO_OTHER_NODE, attach: Attach::TailCall("from_container, in cluster mode") },
    ProgramSpec {
        name: program::TO_OTHER_NODE6,
        attach: Attach::TailCall("container_path6, in cluster mode with --cluster-cidr6"),
    },
    ProgramSpec {
        name: program::FROM_OTHER_NODE6,
        attach: Attach::TailCall("uplink_in, on IPv6 in cluster mode with --cluster-cidr6"),
    },
    ProgramSpec { name: program::LOG_RARE, attach: Attach::TailCall("every tc program, on a rare drop") },
    ProgramSpec { name: program::NODE_CONNECT4, attach: Attach::CgroupSockAddr("connect4") },
    ProgramSpec { name: program::NODE_SENDMSG4, attach: Attach::CgroupSockAddr("sendmsg4") },
    ProgramSpec { name: program::NODE_RECVMSG4, attach: Attach::CgroupSockAddr("recvmsg4") },
    ProgramSpec { name: program::NODE_GETPEERNAME4, attach: Attach::CgroupSockAddr("getpeername4") },
    ProgramSpec { name: program::NODE_CONNECT6, attach: Attach::CgroupSockAddr("connect6") },
    ProgramSpec { name: program::NODE_SENDMSG6, attach: Attach::CgroupSockAddr("sendmsg6") },
    ProgramSpec { name: program::NODE_RECVMSG6, attach: Attach::CgroupSockAddr("recvmsg6") },
    ProgramSpec { name: program::NODE_GETPEERNAME6, attach: Attach::CgroupSockAddr("getpeername6") },
    ProgramSpec {
        name: program::LAYOUT_FLOOR,
        attach: Attach::Benchmark("the container-to-container layout's floor (cargo xtask bench)"),
    },
];

/// The node-local socket hooks of both families, attached together to one cgroup.
pub const NODE_SOCKET_HOOKS: [&str; 8] = [
    program::NODE_CONNECT4,
    program::NODE_SENDMSG4,
    program::NODE_RECVMSG4,
    program::NODE_GETPEERNAME4,
    program::NODE_CONNECT6,
    program::NODE_SENDMSG6,
    program::NODE_RECVMSG6,
    program::NODE_GETPEERNAME6,
];

/// The pinned maps, in the order `netpath map list` shows them.
pub fn pinned() -> impl Iterator<Item = &'static MapSpec> {
    MAPS.iter().filter(|m| m.pinned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_lookups_find_them() {
        for (i, m) in MAPS.iter().enumerate() {
            assert!(MAPS[i + 1..].iter().all(|o| o.name != m.name), "{} twice", m.name);
            assert_eq!(spec(m.name).name, m.name);
        }
        for (i, p) in PROGRAMS.iter().enumerate() {
            assert!(PROGRAMS[i + 1..].iter().all(|o| o.name != p.name), "{} twice", p.name);
        }
        assert_eq!(object_capacity(ENDPOINTS), MAX_ENDPOINTS);
        assert_eq!(object_capacity(CONNTRACK), CONNTRACK_ENTRIES);
    }
}
