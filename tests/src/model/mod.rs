//! A reference model of netpath's datapath in plain Rust: what each program should do
//! with a packet, given the maps the agent writes (endpoints, published ports, node
//! settings), the node's routes, and the conntrack the model keeps itself. It is written
//! from the datapath's stated behaviour (README, the programs' contracts, the packet
//! tests), on byte slices, without any of the eBPF code: the packet tests and the fuzzer
//! compare the real programs, run with BPF_PROG_TEST_RUN, against it.
//!
//! IPv6 likewise: neighbour discovery for the gateway, delivery between containers,
//! NAT66 masquerade to the node's IPv6 address with IPv4's conntrack (its own tables)
//! or, on a node with a routed prefix, forwarding with the containers' own addresses,
//! both ways, ports published on the node's IPv6 address (in either setting, and
//! hairpinned: reached by containers through that address), with ICMPv6 errors about
//! NAT66 flows translated as IPv4's ICMP errors are; the IPv6 settings, published ports
//! and routes are [`World6`]'s. A model of IPv6 translation assumes the datapath's IPv6
//! programs are loaded (`Datapath::load_ipv6_programs`).
//!
//! Macvlan/ipvlan endpoints (`ENDPOINT_F_SUBIF`) likewise: from_container's checks at
//! their sub-interface's egress (their own packets and ARP pass, counted, to the
//! driver; ARP claiming their address from anywhere else is dropped) and to_subif's
//! counting of what arrives for them.
//!
//! What it predicts: the verdict (to the stack, dropped, redirected into a container or
//! out of a device), the packet's bytes afterwards (MACs, addresses, ports, TTL or hop
//! limit, every checksum as the kernel's helpers update it, so a bad checksum stays
//! exactly as bad), the reason counted, the conntrack entries and closed-flow records
//! left behind (each family's), and the per-endpoint counters, which of the two
//! conntrack tables holds each entry, and what a packet does with half a pair (after an
//! eviction the caller applies with [`Model::forget_entry`]). What it does not: which
//! port masquerade picks from a range of more than one (the datapath starts at a random
//! one), conntrack eviction (LRU, the fuzzer stays below capacity) and so
//! `drop-ct-full`, idle timeouts (the agent's collector), the trace events, and the
//! cgroup socket hooks.
mod csum;
mod ct;
pub mod family;
pub mod flow;
mod nat;
mod tc;
mod tc6;
mod xdp;

use std::{
    collections::{HashMap, HashSet},
    net::{Ipv4Addr, Ipv6Addr},
};

use netpath_common::{
    conntrack::{PortKeyOf, Tuple},
    CtEntry, CtEntry6, CtKey, CtKey6, EndpointInfo, NodeConfig, NodeConfig6, PortKey, PortKey6, PortTarget,
    PortTarget6, Reason, TrafficCounters,
};

pub use family::{Addr, Conntrack, ConntrackMut};

pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;
pub const XDP_PASS: u32 = 2;
/// "npxd": the metadata uplink_xdp leaves in front of a packet it translated.
pub const XDP_MARK: [u8; 4] = 0x6e70_7864u32.to_ne_bytes();

/// What happens to a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// To the node's stack (TC_ACT_OK).
    Pass,
    /// Dropped (TC_ACT_SHOT).
    Drop,
    /// Into the namespace behind this host veth (bpf_redirect_peer).
    Peer(u32),
    /// Out of this device: an ARP reply back into the veth it came from, or a routed
    /// packet to the FIB's device, whose neighbour the kernel resolves.
    Out(u32),
    /// BPF_PROG_TEST_RUN refuses the input before any program sees it.
    Refused,
}

impl Verdict {
    /// The tc action code; None when no program runs.
    pub fn action(self) -> Option<u32> {
        match self {
            Verdict::Pass => Some(TC_ACT_OK),
            Verdict::Drop => Some(TC_ACT_SHOT),
            Verdict::Peer(_) | Verdict::Out(_) => Some(TC_ACT_REDIRECT),
            Verdict::Refused => None,
        }
    }
}

/// A tc program's predicted outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub verdict: Verdict,
    /// The reason counted (None when refused).
    pub reason: Option<Reason>,
    /// The packet as the program leaves it (meaningful unless dropped or refused).
    pub packet: Vec<u8>,
}

impl Expected {
    /// Panics unless a program's `action` and output `packet` are what the model says
    /// (the bytes of a dropped packet go nowhere and are not compared).
    pub fn assert_matches(&self, action: u32, packet: &[u8]) {
        assert_eq!(Some(action), self.verdict.action(), "action differs from the model's {self:?}");
        if self.verdict != Verdict::Drop {
            assert_eq!(packet, &self.packet[..], "bytes differ from the model's ({:?})", self.reason);
        }
    }
}

/// The XDP program's predicted outcome: it always passes; when it translated, the packet
/// is rewritten and carries [`XDP_MARK`] in its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpExpected {
    pub translated: bool,
    pub packet: Vec<u8>,
}

/// The node's routes as bpf_fib_lookup sees them: connected subnets (no neighbour
/// resolved yet, so the kernel resolves it: bpf_redirect_neigh), and the addresses of the
/// local table (the node's own, broadcasts), which are not forwarded.
#[derive(Clone, Debug, Default)]
pub struct Fib {
    /// (network, prefix length, device ifindex).
    pub subnets: Vec<(Ipv4Addr, u8, u32)>,
    pub not_forwarded: Vec<Ipv4Addr>,
}

impl Fib {
    /// The device a packet to `dst` leaves by; None when it is not forwarded.
    pub fn route(&self, dst: [u8; 4]) -> Option<u32> {
        let d = u32::from_be_bytes(dst);
        if self.not_forwarded.contains(&Ipv4Addr::from(dst)) || d >> 24 == 127 || d == 0 {
            return None;
        }
        self.subnets.iter().find_map(|(net, prefix, dev)| {
            let mask = u32::MAX.checked_shl(32 - *prefix as u32).unwrap_or(0);
            (d & mask == u32::from(*net) & mask).then_some(*dev)
        })
    }
}

/// The node's IPv6 routes as bpf_fib_lookup sees them (see [`Fib`]), for a packet from
/// a container's host veth (where forwarding is on).
#[derive(Clone, Debug, Default)]
pub struct Fib6 {
    /// (network, prefix length, device ifindex); the longest prefix wins.
    pub subnets: Vec<(Ipv6Addr, u8, u32)>,
    /// The local table's addresses: the node's own, the subnet-router anycast ones.
    pub not_forwarded: Vec<Ipv6Addr>,
}

impl Fib6 {
    /// The device a packet from `src` to `dst` leaves by; None when it is not forwarded:
    /// link-local, multicast and loopback addresses on either end never are.
    pub fn route(&self, src: [u8; 16], dst: [u8; 16]) -> Option<u32> {
        let strict = |a: [u8; 16]| {
            let ip = Ipv6Addr::from(a);
            ip.is_multicast() || ip.is_loopback() || (a[0] == 0xfe && a[1] & 0xc0 == 0x80)
        };
        if strict(src) || strict(dst) || self.not_forwarded.contains(&Ipv6Addr::from(dst)) {
            return None;
        }
        self.subnets
            .iter()
            .filter(|(net, prefix, _)| netpath_common::conntrack::in_prefix(&dst, &net.octets(), *prefix))
            .max_by_key(|(_, prefix, _)| *prefix)
            .map(|(_, _, dev)| *dev)
    }
}

/// The IPv6 half of what the agent configures (NODE_CONFIG6, PORT_MAPS6), and the IPv6
/// routes. Apart from [`World`] so that its users need not name them.
#[derive(Clone, Debug, Default)]
pub struct World6 {
    pub config: NodeConfig6,
    /// Ports published on IPv6 (PORT_MAPS6): an all-zero `host_ip` is every node
    /// address of the family.
    pub ports: Vec<(PortKey6, PortTarget6)>,
    pub fib: Fib6,
}

/// Everything the agent configures, and the routes.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub endpoints: Vec<(Ipv4Addr, EndpointInfo)>,
    /// IPv6 addresses (an endpoint's own, its link-local one) and the IPv4 address of
    /// the endpoint they lead to: the same entry, counting in the same counters.
    pub endpoints6: Vec<(Ipv6Addr, Ipv4Addr)>,
    pub ports: Vec<(PortKey, PortTarget)>,
    pub config: NodeConfig,
    pub fib: Fib,
}

/// A closed masqueraded TCP flow as the server last saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed {
    pub end_seq: u32,
    pub ts_val: Option<u32>,
}

pub struct Model {
    world: World,
    world6: World6,
    endpoints: HashMap<[u8; 4], EndpointInfo>,
    endpoints6: HashMap<[u8; 16], [u8; 4]>,
    ports: HashMap<PortKey, PortTarget>,
    ports6: HashMap<PortKey6, PortTarget6>,
    /// Conntrack as the datapath should have it (timestamps left at 0), both tables.
    pub ct: HashMap<CtKey, CtEntry>,
    /// The keys of `ct` in CONNTRACK (assured flows); the others are in CONNTRACK_NEW.
    pub assured: HashSet<CtKey>,
    pub closed: HashMap<CtKey, Closed>,
    /// IPv6's: CONNTRACK6 and CONNTRACK6_NEW, which of them in CONNTRACK6, SNAT_CLOSED6.
    pub ct6: HashMap<CtKey6, CtEntry6>,
    pub assured6: HashSet<CtKey6>,
    pub closed6: HashMap<CtKey6, Closed>,
    /// Per reason: packets, bytes.
    pub reasons: Vec<(u64, u64)>,
    pub endpoint_stats: HashMap<[u8; 4], TrafficCounters>,
    /// What this kernel's test runs refuse (see [`HeaderChecks`]).
    pub header_checks: HeaderChecks,
}

impl Model {
    pub fn new(world: World) -> Self {
        Self {
            endpoints: world.endpoints.iter().map(|(ip, e)| (ip.octets(), *e)).collect(),
            endpoints6: world.endpoints6.iter().map(|(ip6, ip)| (ip6.octets(), ip.octets())).collect(),
            ports: world.ports.iter().copied().collect(),
            ports6: HashMap::new(),
            endpoint_stats: world.endpoints.iter().map(|(ip, _)| (ip.octets(), Default::default())).collect(),
            world,
            world6: World6::default(),
            ct: HashMap::new(),
            assured: HashSet::new(),
            closed: HashMap::new(),
            ct6: HashMap::new(),
            assured6: HashSet::new(),
            closed6: HashMap::new(),
            reasons: vec![(0, 0); Reason::COUNT as usize],
            header_checks: HeaderChecks::default(),
        }
    }

    /// The model of a node with IPv6 settings, published ports and routes (`world6`:
    /// NODE_CONFIG6, PORT_MAPS6).
    pub fn with_ipv6(mut self, world6: World6) -> Self {
        self.ports6 = world6.ports.iter().copied().collect();
        self.world6 = world6;
        self
    }

    pub fn world(&self) -> &World {
        &self.world
    }

    pub fn world6(&self) -> &World6 {
        &self.world6
    }

    /// NODE_CONFIG rewritten by the agent (tracked flows stay).
    pub fn set_config(&mut self, config: NodeConfig) {
        self.world.config = config;
    }

    /// NODE_CONFIG6 rewritten by the agent (tracked flows stay).
    pub fn set_config6(&mut self, config: NodeConfig6) {
        self.world6.config = config;
    }

    /// Forgets every tracked flow of both families, as removing every entry of
    /// CONNTRACK and CONNTRACK6 does (the closed-flow records stay, as SNAT_CLOSED and
    /// SNAT_CLOSED6 do).
    pub fn forget_conntrack(&mut self) {
        self.ct.clear();
        self.assured.clear();
        self.ct6.clear();
        self.assured6.clear();
    }

    /// Forgets one conntrack entry (of either family), as the LRU evicting it (or the
    /// agent removing it) does.
    pub fn forget_entry<A: Addr>(&mut self, key: &Tuple<A>) {
        A::ct_mut(self).forget(key);
    }

    fn count(&mut self, reason: Reason, bytes: u32) {
        let slot = &mut self.reasons[reason as usize];
        slot.0 += 1;
        slot.1 += bytes as u64;
    }

    fn endpoint(&self, ip: [u8; 4]) -> Option<EndpointInfo> {
        self.endpoints.get(&ip).copied()
    }

    /// The endpoint owning `ip`, if it lives behind `ifindex`: only it may send from there.
    fn sender(&self, ip: [u8; 4], ifindex: u32) -> Option<EndpointInfo> {
        self.endpoint(ip).filter(|e| e.host_ifindex == ifindex)
    }

    /// The container behind a published port, of either family (PORT_MAPS,
    /// PORT_MAPS6): the mapping for this node address first, then the one for every
    /// address (all-zero). Whether that container still exists is the caller's to ask.
    fn published<A: Addr>(&self, key: &Tuple<A>) -> Option<(A, [u8; 2])> {
        let ports = A::ports(self);
        let mut pk = PortKeyOf { host_ip: key.dst, port: key.dport, proto: key.proto, _pad: 0 };
        let t = ports.get(&pk).or_else(|| {
            pk.host_ip = A::default();
            ports.get(&pk)
        })?;
        Some((t.ip, t.port))
    }

    fn endpoint_tx(&mut self, ip: [u8; 4], bytes: u32) {
        if let Some(c) = self.endpoint_stats.get_mut(&ip) {
            c.tx_packets += 1;
            c.tx_bytes += bytes as u64;
        }
    }

    fn endpoint_rx(&mut self, ip: [u8; 4], bytes: u32) {
        if let Some(c) = self.endpoint_stats.get_mut(&ip) {
            c.rx_packets += 1;
            c.rx_bytes += bytes as u64;
        }
    }
}

/// Which inputs BPF_PROG_TEST_RUN refuses (EINVAL) before a program runs, on this
/// kernel: recent ones refuse frames shorter than an Ethernet header, and for tc IPv4
/// or IPv6 frames shorter than their network header; older ones (5.10) run the program
/// on some of them. Probed by the caller; all refused by default.
#[derive(Clone, Copy, Debug)]
pub struct HeaderChecks {
    pub tc_eth: bool,
    pub ipv4: bool,
    pub ipv6: bool,
    pub xdp_eth: bool,
}

impl Default for HeaderChecks {
    fn default() -> Self {
        Self { tc_eth: true, ipv4: true, ipv6: true, xdp_eth: true }
    }
}

/// Too long for a page with its head- and tailroom, on every kernel.
fn too_long(packet: &[u8]) -> bool {
    packet.len() > 3500
}

pub fn refused_by_tc_test_run(packet: &[u8], checks: HeaderChecks) -> bool {
    let network_header = match packet.get(12..14) {
        Some([0x08, 0x00]) if checks.ipv4 => 20,
        Some([0x86, 0xdd]) if checks.ipv6 => 40,
        _ => 0,
    };
    too_long(packet) || (checks.tc_eth && packet.len() < 14) || packet.len() < 14 + network_header
}

pub fn refused_by_xdp_test_run(packet: &[u8], checks: HeaderChecks) -> bool {
    too_long(packet) || (checks.xdp_eth && packet.len() < 14)
}
