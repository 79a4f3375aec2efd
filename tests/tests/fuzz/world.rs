//! The fuzzed node: containers of every kind (a macvlan/ipvlan one among them, whose
//! sub-interface also gets to_subif's packets), published ports (IPv4 and IPv6), a node
//! address with a connected subnet (IPv4 and IPv6), IPv6 routes beyond it, and one valid
//! packet for every path the datapath has. Its IPv6 goes through phases ([`Mode6`]): masqueraded
//! (NAT66), routed with the containers' own addresses, and without a node address; its
//! IPv4 through phases of its own ([`Mode4`]): masqueraded, and routed.
use std::net::{Ipv4Addr, Ipv6Addr};

use netpath_common::{
    conntrack::{PortKeyOf, PortTargetOf, NODE6_F_MASQUERADE, NODE_F_IPV6, NODE_F_ROUTED},
    subif_ifindex, EndpointInfo, Ip6, NodeConfig, NodeConfig6, ENDPOINT_F_BRIDGED, ENDPOINT_F_PUBLISHED,
    ENDPOINT_F_SUBIF, SUBIF_IFINDEX_BASE,
};
use netpath_tests::{
    model::{Fib, Fib6, World, World6},
    pkt::{self, ACK, FIN, ICMP, ICMPV6, RST, SYN, TCP, UDP},
};

/// The containers' gateway over IPv6, and an address outside the node (through a
/// router on the uplink's subnet).
pub const GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
pub const OUTSIDE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xcc);
/// The node's IPv6 address on the uplink (NAT66's source), a host on its subnet, the
/// subnet's router anycast address (the node's own once it forwards), an address
/// routed out of the other device, one with no route, and a pod address no container
/// has.
pub const NODE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 1);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 2);
pub const ANYCAST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 0);
pub const FAR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x99, 0, 0, 0, 0, 5);
pub const UNROUTED6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb9, 0, 0, 0, 0, 0, 1);
pub const GONE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0x99);
pub const POD_NET6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0);
/// The router on the uplink's subnet the IPv6 routes go through: where ICMPv6 errors
/// about the node's packets come from.
pub const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 0xfe);
/// An address on the uplink's subnet that is not the node's: a port published on it
/// exactly is no port of the node's address.
pub const OTHER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 5);

pub const LO: u32 = 1;
pub const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const UPLINK_MAC: [u8; 6] = [0x0e, 0, 0, 0, 0, 0xfe];
pub const CLIENT_MAC: [u8; 6] = [0x0e, 0, 0, 0, 0, 0xcc];
pub const GONE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 99);
pub const NAT_PORT: u16 = 61000;
/// Published ports, beyond IPv4's (8080 TCP and 5353 UDP on every address, 9090 on the
/// node's, 7070 to a container that is gone, published on IPv6 too): 9191 on every
/// IPv6 address and, to another container, on the node's exactly (which wins); 9292 on
/// another IPv6 address only; 6464 on IPv4 only.
pub const PORT_BOTH: u16 = 9191;
pub const PORT_OTHER6: u16 = 9292;
pub const PORT_V4_ONLY: u16 = 6464;
/// Published to br1, the bridged container: a hairpin into bridge mode.
pub const BRIDGED_PORT: u16 = 6060;

/// A published port: `proto` to `host:port`, to `to:to_port`, of either family.
fn port<A>(proto: u8, host: A, port: u16, to: A, to_port: u16) -> (PortKeyOf<A>, PortTargetOf<A>) {
    (
        PortKeyOf { host_ip: host, port: port.to_be_bytes(), proto, _pad: 0 },
        PortTargetOf { ip: to, port: to_port.to_be_bytes(), _pad: [0; 2] },
    )
}

/// The namespace's devices: an uplink veth holding the node addresses, and host veths
/// for the containers that send (a test run needs a real device for its ingress
/// ifindex); IPv6 routes to the outside through a router on the uplink's subnet, and
/// out of the uplink's peer.
pub const PREPARE: &[&[&str]] = &[
    &["link", "add", "up0", "type", "veth", "peer", "name", "up1"],
    &["addr", "add", "192.168.77.1/24", "dev", "up0"],
    &["link", "add", "hb", "type", "veth", "peer", "name", "cb"],
    &["link", "add", "hc", "type", "veth", "peer", "name", "cc"],
    &["link", "add", "hr", "type", "veth", "peer", "name", "cr"],
    // Stands in for the macvlan/ipvlan container's own interface (only its index counts),
    // with the index the agent gives m's (SUBIF_IFINDEX_BASE | 10.77.0.8's low 24 bits,
    // checked by Node::new): from_container knows a sub-interface by it.
    &["link", "add", "hm", "index", "1078788104", "type", "veth", "peer", "name", "cm"],
    &["link", "set", "up0", "up"],
    &["link", "set", "up1", "up"],
    &["link", "set", "lo", "up"],
    &["-6", "addr", "add", "2001:db8:77::1/64", "dev", "up0", "nodad"],
    &["-6", "route", "add", "2001:db8::/48", "via", "2001:db8:77::fe", "dev", "up0"],
    &["-6", "route", "add", "2001:db8:99::/64", "dev", "up1"],
];

/// bpf_fib_lookup routes IPv6 only from a device that forwards it (the agent turns it on
/// with --pod-cidr6): on in the test namespace, for every device.
pub fn forward_ipv6() {
    std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1")
        .expect("IPv6 forwarding in the test namespace");
}

/// The node's IPv6 in a phase of the campaign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode6 {
    /// NAT66 to [`NODE6`].
    Masquerade,
    /// A routed prefix: containers' own addresses, forwarded both ways.
    Routed,
    /// No IPv6 address on the uplink: what leaves the node is the stack's.
    NoAddress,
}

/// The phases' order, round and round.
pub const MODES6: [Mode6; 4] = [Mode6::Masquerade, Mode6::Routed, Mode6::Masquerade, Mode6::NoAddress];

/// The node's IPv4 in a phase of the campaign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode4 {
    /// SNAT to [`NODE`].
    Masquerade,
    /// A routed prefix (`--masquerade false`): containers' own addresses, forwarded both
    /// ways; published ports and their replies still translated.
    Routed,
}

/// IPv4's phases, moving on with IPv6's: three against four, so that over twelve
/// phases every IPv4 setting meets every IPv6 one.
pub const MODES4: [Mode4; 3] = [Mode4::Masquerade, Mode4::Masquerade, Mode4::Routed];

pub fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: a valid C string; the call only reads it.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no device {name} in the test namespace");
    i
}

/// The local routing table's addresses (the node's own, the subnet's broadcasts), as
/// this kernel sets them up: whether the network address counts as a broadcast differs
/// between kernel versions.
fn local_table() -> Vec<Ipv4Addr> {
    let table = netpath_tests::sh(&["ip", "-4", "route", "show", "table", "local"]);
    table.lines().filter_map(|l| l.split_whitespace().nth(1)?.parse().ok()).collect()
}

/// IPv6's local table: the node's addresses and, once it forwards, its subnets' router
/// anycast addresses (prefixes, the multicast one, are left out: the model knows them).
fn local_table6() -> Vec<Ipv6Addr> {
    let table = netpath_tests::sh(&["ip", "-6", "route", "show", "table", "local"]);
    table.lines().filter_map(|l| l.split_whitespace().nth(1)?.parse().ok()).collect()
}

/// A container: its addresses, MACs, host veth.
#[derive(Clone, Copy)]
pub struct Ep {
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    pub host_mac: [u8; 6],
    pub ifindex: u32,
    pub flags: u16,
}

impl Ep {
    fn new(last: u8, ifindex: u32, flags: u16) -> Self {
        Self {
            ip: Ipv4Addr::new(10, 77, 0, last),
            mac: [0x0a, 0x58, 10, 77, 0, last],
            host_mac: [0x0e, 0, 0, 0, 0, last],
            ifindex,
            flags,
        }
    }

    /// Its IPv6 address (every container here is dual-stack).
    pub fn ip6(&self) -> Ipv6Addr {
        let o = self.ip.octets();
        Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, o[3] as u16)
    }

    /// Its link-local address (EUI-64 of its MAC).
    pub fn ll(&self) -> Ipv6Addr {
        netpath::state::link_local(&self.mac)
    }

    pub fn info(&self) -> EndpointInfo {
        EndpointInfo {
            host_ifindex: self.ifindex,
            mac: self.mac,
            host_mac: self.host_mac,
            flags: self.flags,
            counter_slot: 0,
        }
    }
}

/// web (published, behind lo), b (published on the node address only), c (plain), d
/// (plain, never sends), two bridged containers (br1 published), and m, a macvlan/ipvlan container (its
/// sub-interface's index as its interface; IPv4 only, as those modes are).
pub struct Node {
    pub web: Ep,
    pub b: Ep,
    pub c: Ep,
    pub d: Ep,
    pub br1: Ep,
    pub br2: Ep,
    pub m: Ep,
    pub uplink: u32,
}

impl Node {
    pub fn new() -> Self {
        let node = Self {
            web: Ep::new(2, LO, ENDPOINT_F_PUBLISHED),
            b: Ep::new(3, ifindex("hb"), ENDPOINT_F_PUBLISHED),
            c: Ep::new(4, ifindex("hc"), 0),
            d: Ep::new(5, 4242, 0),
            br1: Ep::new(6, ifindex("hr"), ENDPOINT_F_BRIDGED | ENDPOINT_F_PUBLISHED),
            br2: Ep::new(7, 4243, ENDPOINT_F_BRIDGED),
            m: Ep::new(8, ifindex("hm"), ENDPOINT_F_SUBIF),
            uplink: ifindex("up0"),
        };
        // from_container takes m's interface for a sub-interface by its index, the one
        // the agent would give it; the others' are the namespace's own count, far below.
        assert_eq!(node.m.ifindex, subif_ifindex(node.m.ip.octets()), "PREPARE's index for hm");
        for ep in node.endpoints().iter().filter(|e| e.flags & ENDPOINT_F_SUBIF == 0) {
            assert_eq!(ep.ifindex & SUBIF_IFINDEX_BASE, 0, "{} is behind a veth", ep.ip);
        }
        node
    }

    pub fn endpoints(&self) -> [Ep; 7] {
        [self.web, self.b, self.c, self.d, self.br1, self.br2, self.m]
    }

    /// The containers that send: their veths (or sub-interface) are real devices.
    pub fn senders(&self) -> [Ep; 5] {
        [self.web, self.b, self.c, self.br1, self.m]
    }

    pub fn world(&self) -> World {
        let port = |proto, host: Ipv4Addr, p: u16, to: Ipv4Addr, to_port: u16| {
            port(proto, host.octets(), p, to.octets(), to_port)
        };
        let any = Ipv4Addr::UNSPECIFIED;
        World {
            endpoints: self.endpoints().iter().map(|e| (e.ip, e.info())).collect(),
            endpoints6: self
                .endpoints()
                .iter()
                .filter(|e| e.flags & ENDPOINT_F_SUBIF == 0)
                .flat_map(|e| [(e.ip6(), e.ip), (e.ll(), e.ip)])
                .collect(),
            ports: vec![
                port(TCP, any, 8080, self.web.ip, 80),
                port(UDP, any, 5353, self.web.ip, 53),
                port(TCP, NODE, 9090, self.b.ip, 22),
                port(TCP, any, BRIDGED_PORT, self.br1.ip, 80),
                // A mapping whose container is gone.
                port(TCP, any, 7070, GONE, 80),
                // Published on IPv4 only: no port of the node's IPv6 address.
                port(TCP, any, PORT_V4_ONLY, self.web.ip, 80),
            ],
            config: self.config(MODES4[0]),
            fib: Fib {
                subnets: vec![(Ipv4Addr::new(192, 168, 77, 0), 24, self.uplink)],
                not_forwarded: local_table(),
            },
        }
    }

    /// The IPv6 half: NODE_CONFIG6 in `mode`, the ports published on IPv6 (PORT_MAPS6,
    /// the same in every phase), and the IPv6 routes (read from the namespace: call
    /// after [`forward_ipv6`]).
    pub fn world6(&self, mode: Mode6) -> World6 {
        World6 {
            config: self.config6(mode),
            ports: self.ports6(),
            fib: Fib6 {
                subnets: vec![
                    (Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 0), 64, self.uplink),
                    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 48, self.uplink),
                    (Ipv6Addr::new(0x2001, 0xdb8, 0x99, 0, 0, 0, 0, 0), 64, ifindex("up1")),
                ],
                not_forwarded: local_table6(),
            },
        }
    }

    /// PORT_MAPS6: for every node address (all-zero), on the node's address exactly, on
    /// another address, to a container that is gone; an exact mapping and one for every
    /// address on the same port (the exact one wins).
    pub fn ports6(&self) -> Vec<(netpath_common::PortKey6, netpath_common::PortTarget6)> {
        let port = |proto, host: Ipv6Addr, p: u16, to: Ipv6Addr, to_port: u16| {
            port(proto, Ip6(host.octets()), p, Ip6(to.octets()), to_port)
        };
        let any = Ipv6Addr::UNSPECIFIED;
        let (web, b) = (self.web.ip6(), self.b.ip6());
        vec![
            port(TCP, any, 8080, web, 80),
            port(UDP, any, 5353, web, 53),
            port(TCP, NODE6, 9090, b, 22),
            port(TCP, any, 7070, GONE6, 80),
            port(TCP, any, PORT_BOTH, web, 81),
            port(TCP, NODE6, PORT_BOTH, b, 23),
            port(UDP, OTHER6, PORT_OTHER6, b, 53),
        ]
    }

    /// NODE_CONFIG in `mode`.
    pub fn config(&self, mode: Mode4) -> NodeConfig {
        NodeConfig {
            node_ip: NODE.octets(),
            pod_net: [10, 77, 0, 0],
            pod_mask: [255, 255, 255, 0],
            uplink_ifindex: self.uplink,
            nat_port_min: NAT_PORT,
            nat_port_max: NAT_PORT,
            flags: NODE_F_IPV6 | if mode == Mode4::Routed { NODE_F_ROUTED } else { 0 },
            netns_cookie: 0,
            ..NodeConfig::default()
        }
    }

    pub fn config6(&self, mode: Mode6) -> NodeConfig6 {
        NodeConfig6 {
            node_ip: if mode == Mode6::NoAddress { [0; 16] } else { NODE6.octets() },
            pod_net: POD_NET6.octets(),
            pod_prefix: 64,
            flags: if mode == Mode6::Routed { 0 } else { NODE6_F_MASQUERADE },
            ..Default::default()
        }
    }

    /// Every address worth aiming a mutated field at.
    pub fn addresses(&self) -> Vec<Ipv4Addr> {
        let mut a: Vec<Ipv4Addr> = self.endpoints().iter().map(|e| e.ip).collect();
        a.extend([
            NODE,
            CLIENT,
            GATEWAY,
            GONE,
            Ipv4Addr::new(192, 168, 77, 255),
            Ipv4Addr::new(192, 168, 78, 1),
            Ipv4Addr::new(8, 8, 8, 8),
            Ipv4Addr::new(127, 0, 0, 1),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
        ]);
        a
    }

    /// Every IPv6 address worth aiming a mutated field at.
    pub fn addresses6(&self) -> Vec<Ipv6Addr> {
        let mut a: Vec<Ipv6Addr> = self.endpoints().iter().flat_map(|e| [e.ip6(), e.ll()]).collect();
        a.extend([
            GATEWAY6,
            OUTSIDE6,
            NODE6,
            NODE6,
            CLIENT6,
            ANYCAST6,
            FAR6,
            UNROUTED6,
            POD_NET6,
            ROUTER6,
            OTHER6,
            Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0xc0a8, 0x4d02),
            GONE6,
            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2),
            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 1),
            Ipv6Addr::LOCALHOST,
            Ipv6Addr::UNSPECIFIED,
        ]);
        a
    }

    pub fn macs(&self) -> Vec<[u8; 6]> {
        let mut m: Vec<[u8; 6]> = self.endpoints().iter().flat_map(|e| [e.mac, e.host_mac]).collect();
        m.extend([UPLINK_MAC, CLIENT_MAC, [0xff; 6], [0; 6]]);
        m
    }
}

/// Which program a seed is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// from_container, on this host veth (or sub-interface).
    FromContainer(u32),
    /// uplink_in and uplink_xdp.
    Uplink,
    /// to_subif, on this sub-interface.
    ToSubif(u32),
}

pub struct Seed {
    pub name: &'static str,
    pub hook: Hook,
    pub packet: Vec<u8>,
}

fn from(ep: &Ep, dst_mac: [u8; 6], dst: Ipv4Addr, proto: u8, ttl: u8, opts: &[u8], l4: &[u8]) -> Vec<u8> {
    pkt::eth(dst_mac, ep.mac, pkt::ETH_IPV4, &pkt::ipv4(ep.ip, dst, proto, ttl, opts, l4))
}

fn from6(
    ep: &Ep,
    dst_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next: u8,
    hop: u8,
    payload: &[u8],
) -> Vec<u8> {
    pkt::eth(dst_mac, ep.mac, pkt::ETH_IPV6, &pkt::ipv6(src, dst, next, hop, payload))
}

/// A neighbour solicitation from `src` for `target`, with a source link-layer address
/// option naming `slla` if given.
fn solicitation(ep: &Ep, src: Ipv6Addr, target: Ipv6Addr, slla: Option<[u8; 6]>) -> Vec<u8> {
    let mut msg = vec![135, 0, 0, 0, 0, 0, 0, 0];
    msg.extend_from_slice(&target.octets());
    if let Some(mac) = slla {
        msg.extend_from_slice(&[1, 1]);
        msg.extend_from_slice(&mac);
    }
    let group = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 1);
    let msg = pkt::icmp6(src, group, &msg);
    pkt::eth([0x33, 0x33, 0xff, 0, 0, 1], ep.mac, pkt::ETH_IPV6, &pkt::ipv6(src, group, ICMPV6, 255, &msg))
}

/// What `ep` sends to its gateway: IPv6 `src` -> `dst`, the L4 checksum computed.
fn sent6(ep: &Ep, src: Ipv6Addr, dst: Ipv6Addr, proto: u8, hop: u8, l4: &[u8]) -> Vec<u8> {
    pkt::eth(ep.host_mac, ep.mac, pkt::ETH_IPV6, &pkt::ipv6_l4(src, dst, proto, hop, l4))
}

/// What arrives on the uplink over IPv6.
fn outside6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, hop: u8, l4: &[u8]) -> Vec<u8> {
    pkt::eth(UPLINK_MAC, CLIENT_MAC, pkt::ETH_IPV6, &pkt::ipv6_l4(src, dst, proto, hop, l4))
}

/// An ICMPv6 echo request (`request`) or reply with identifier `id` (checksum left to
/// [`pkt::ipv6_l4`]).
fn echo6(request: bool, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![if request { 128 } else { 129 }, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    m.extend_from_slice(payload);
    m
}

/// An ICMPv6 error (`ty`, `code`, `rest`: the MTU, pointer or unused word) quoting
/// `quoted` (an IPv6 packet), whole as the small packets here fit (checksum left to
/// [`pkt::ipv6_l4`]).
fn icmp6_error(ty: u8, code: u8, rest: u32, quoted: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(&rest.to_be_bytes());
    m.extend_from_slice(quoted);
    m
}

fn outside(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, opts: &[u8], l4: &[u8]) -> Vec<u8> {
    pkt::eth(UPLINK_MAC, CLIENT_MAC, pkt::ETH_IPV4, &pkt::ipv4(src, dst, proto, 64, opts, l4))
}

/// What `ep` sends to the LAN in VLAN 7, tagged by itself.
fn tagged(ep: &Ep) -> Vec<u8> {
    let mut p = pkt::eth(UPLINK_MAC, ep.mac, pkt::ETH_VLAN, &[0, 7, 0x08, 0]);
    p.extend_from_slice(&pkt::ipv4(ep.ip, CLIENT, UDP, 64, &[], &pkt::udp(1, 53, b"vlan")));
    p
}

fn arp(oper: u16, sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0, 6, 4];
    a.extend_from_slice(&oper.to_be_bytes());
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&tpa.octets());
    pkt::eth([0xff; 6], sha, pkt::ETH_ARP, &a)
}

impl Node {
    /// Valid packets of every path. Replies and errors quote the tuples of the flows the
    /// other seeds open, so they find state whenever those ran first.
    pub fn seeds(&self) -> Vec<Seed> {
        let (web, b, c, d, br1, br2, m) = (self.web, self.b, self.c, self.d, self.br1, self.br2, self.m);
        let fc = |ep: &Ep| Hook::FromContainer(ep.ifindex);
        let ts_syn = pkt::tcp_ts(1111, 80, SYN, 100, Some(5000));
        let ts_fin = pkt::tcp_ts(1111, 80, FIN | ACK, 101, Some(6000));
        // What the client sent and what the node sent, as quoted by ICMP errors.
        let client_query = pkt::ipv4(CLIENT, NODE, UDP, 64, &[], &pkt::udp(40000, 5353, b"q"));
        let web_received = pkt::ipv4(CLIENT, web.ip, UDP, 63, &[], &pkt::udp(40000, 53, b"q"));
        let node_sent = pkt::ipv4(NODE, CLIENT, UDP, 63, &[], &pkt::udp(NAT_PORT, 53, b"x"));
        let node_ping = pkt::ipv4(NODE, CLIENT, ICMP, 63, &[], &pkt::icmp_echo(true, NAT_PORT, b"ping"));
        // IPv4 on a routed prefix: what c received on no flow (its error about it leaves
        // as it is), what c sent with its own address (an error about it comes back to
        // that address).
        let c_stranger = pkt::ipv4(CLIENT, c.ip, UDP, 63, &[], &pkt::udp(53, 5001, b"?"));
        let c_sent = pkt::ipv4(c.ip, CLIENT, UDP, 63, &[], &pkt::udp(1111, 53, b"x"));
        let to_pod = |dst: Ipv4Addr, proto, ttl, l4: &[u8]| {
            pkt::eth(UPLINK_MAC, CLIENT_MAC, pkt::ETH_IPV4, &pkt::ipv4(CLIENT, dst, proto, ttl, &[], l4))
        };
        let mut fragment_in = to_pod(c.ip, UDP, 64, &pkt::udp(53, 3333, b"frag"));
        fragment_in[14 + 6] |= 0x20;
        let mut udp_nocsum = from(&c, c.host_mac, CLIENT, UDP, 64, &[], &pkt::udp(2222, 53, b"zero"));
        udp_nocsum[14 + 20 + 6..14 + 20 + 8].fill(0);
        let mut fragment = from(&c, c.host_mac, CLIENT, UDP, 64, &[], &pkt::udp(3333, 53, b"frag"));
        fragment[14 + 6] |= 0x20;
        let mut vlan = pkt::eth(UPLINK_MAC, CLIENT_MAC, pkt::ETH_VLAN, &[0, 7, 0x08, 0]);
        vlan.extend_from_slice(&pkt::ipv4(CLIENT, NODE, TCP, 64, &[], &pkt::tcp(40000, 8080, SYN, b"")));
        let mut ipv6 = pkt::eth(c.host_mac, c.mac, 0x86dd, &[0x60, 0, 0, 0, 0, 8, 17, 64]);
        ipv6.extend_from_slice(&[0xfd; 32]);
        ipv6.extend_from_slice(&pkt::udp(1, 2, b""));
        // Hop-by-hop (PadN), routing (type 0, no addresses left), fragment, destination
        // options: each in front of UDP.
        let ext = |kind: u8| -> Vec<u8> {
            let mut h = match kind {
                0 | 60 => vec![UDP, 0, 1, 4, 0, 0, 0, 0],
                43 => vec![UDP, 0, 0, 0, 0, 0, 0, 0],
                _ => vec![UDP, 0, 0, 1, 0, 0, 0x12, 0x34],
            };
            h.extend_from_slice(&pkt::udp(4000, 53, b"ext"));
            h
        };
        let mut seeds6 = Vec::new();
        for kind in [0u8, 43, 44, 60] {
            seeds6.push(from6(&c, c.host_mac, c.ip6(), d.ip6(), kind, 64, &ext(kind)));
        }
        let mut seeds = self.seeds6();
        seeds.extend([
            Seed {
                name: "container to container (icmp echo)",
                hook: fc(&c),
                packet: from(&c, c.host_mac, d.ip, ICMP, 64, &[], &pkt::icmp_echo(true, 7, b"hi")),
            },
            Seed {
                name: "container to container, expiring",
                hook: fc(&c),
                packet: from(&c, c.host_mac, d.ip, TCP, 1, &[], &pkt::tcp(5, 6, SYN, b"")),
            },
            Seed {
                name: "published container to container",
                hook: fc(&web),
                packet: from(&web, web.host_mac, c.ip, TCP, 64, &[], &pkt::tcp(80, 4444, SYN | ACK, b"")),
            },
            Seed {
                name: "container to no endpoint",
                hook: fc(&c),
                packet: from(&c, c.host_mac, GONE, UDP, 64, &[], &pkt::udp(1, 2, b"")),
            },
            Seed {
                name: "container to gateway",
                hook: fc(&c),
                packet: from(&c, c.host_mac, GATEWAY, UDP, 64, &[], &pkt::udp(1, 53, b"")),
            },
            Seed {
                name: "masquerade udp",
                hook: fc(&c),
                packet: from(&c, c.host_mac, CLIENT, UDP, 64, &[], &pkt::udp(1111, 53, b"x")),
            },
            Seed { name: "masquerade udp without checksum", hook: fc(&c), packet: udp_nocsum },
            Seed {
                name: "masquerade tcp syn with timestamp",
                hook: fc(&c),
                packet: from(&c, c.host_mac, CLIENT, TCP, 64, &[], &ts_syn),
            },
            Seed {
                name: "masquerade tcp fin",
                hook: fc(&c),
                packet: from(&c, c.host_mac, CLIENT, TCP, 64, &[], &ts_fin),
            },
            Seed {
                name: "masquerade tcp rst",
                hook: fc(&c),
                packet: from(&c, c.host_mac, CLIENT, TCP, 64, &[], &pkt::tcp(1111, 80, RST | ACK, b"")),
            },
            Seed {
                name: "masquerade icmp echo",
                hook: fc(&c),
                packet: from(&c, c.host_mac, CLIENT, ICMP, 64, &[], &pkt::icmp_echo(true, 77, b"ping")),
            },
            Seed {
                name: "masquerade to an unrouted address",
                hook: fc(&b),
                packet: from(&b, b.host_mac, Ipv4Addr::new(8, 8, 8, 8), UDP, 64, &[], &pkt::udp(1, 53, b"")),
            },
            Seed { name: "masquerade fragment", hook: fc(&c), packet: fragment },
            Seed {
                name: "masquerade unsupported protocol",
                hook: fc(&c),
                packet: from(&c, c.host_mac, CLIENT, 47, 64, &[], &[0; 8]),
            },
            Seed {
                name: "container to node service",
                hook: fc(&c),
                packet: from(&c, c.host_mac, NODE, TCP, 64, &[], &pkt::tcp(5555, 22, ACK, b"")),
            },
            Seed {
                name: "hairpin syn",
                hook: fc(&c),
                packet: from(&c, c.host_mac, NODE, TCP, 64, &[], &pkt::tcp(6666, 8080, SYN, b"")),
            },
            Seed {
                name: "hairpin to a gone container",
                hook: fc(&c),
                packet: from(&c, c.host_mac, NODE, TCP, 64, &[], &pkt::tcp(6667, 7070, SYN, b"")),
            },
            Seed {
                name: "hairpin reply",
                hook: fc(&web),
                packet: from(&web, web.host_mac, c.ip, TCP, 64, &[], &pkt::tcp(80, 6666, SYN | ACK, b"")),
            },
            Seed {
                name: "published reply to outside",
                hook: fc(&web),
                packet: from(&web, web.host_mac, CLIENT, TCP, 64, &[], &pkt::tcp(80, 40000, SYN | ACK, b"")),
            },
            Seed {
                name: "container's port unreachable about a published flow",
                hook: fc(&web),
                packet: from(
                    &web,
                    web.host_mac,
                    CLIENT,
                    ICMP,
                    64,
                    &[],
                    &pkt::icmp_error(3, 3, &web_received),
                ),
            },
            Seed { name: "arp for the gateway", hook: fc(&c), packet: arp(1, c.mac, c.ip, GATEWAY) },
            Seed { name: "arp probe", hook: fc(&c), packet: arp(1, c.mac, Ipv4Addr::UNSPECIFIED, c.ip) },
            Seed { name: "arp in bridge mode", hook: fc(&br1), packet: arp(1, br1.mac, br1.ip, GATEWAY) },
            Seed {
                name: "bridged frame to a peer's mac",
                hook: fc(&br1),
                packet: from(&br1, br2.mac, br2.ip, UDP, 64, &[], &pkt::udp(9, 9, b"l2")),
            },
            Seed {
                name: "hairpin to a bridged container",
                hook: fc(&c),
                packet: from(&c, c.host_mac, NODE, TCP, 64, &[], &pkt::tcp(1234, BRIDGED_PORT, SYN, b"")),
            },
            Seed {
                name: "bridged container answering its hairpinned neighbour, to its mac",
                hook: fc(&br1),
                packet: from(&br1, c.mac, c.ip, TCP, 64, &[], &pkt::tcp(80, 1234, SYN | ACK, b"")),
            },
            Seed {
                name: "bridged frame to the gateway mac",
                hook: fc(&br1),
                packet: from(&br1, br1.host_mac, br2.ip, UDP, 64, &[], &pkt::udp(9, 9, b"l2")),
            },
            Seed { name: "ipv6 from a container", hook: fc(&c), packet: ipv6 },
            Seed {
                name: "ipv6 container to container",
                hook: fc(&c),
                packet: from6(&c, c.host_mac, c.ip6(), d.ip6(), UDP, 64, &pkt::udp(1, 2, b"six")),
            },
            Seed {
                name: "ipv6 published container to container",
                hook: fc(&web),
                packet: from6(
                    &web,
                    web.host_mac,
                    web.ip6(),
                    c.ip6(),
                    TCP,
                    64,
                    &pkt::tcp(80, 4444, SYN | ACK, b""),
                ),
            },
            Seed {
                name: "ipv6 container to container, expiring",
                hook: fc(&c),
                packet: from6(&c, c.host_mac, c.ip6(), d.ip6(), UDP, 1, &pkt::udp(1, 2, b"")),
            },
            Seed {
                name: "ipv6 to the outside",
                hook: fc(&c),
                packet: from6(&c, c.host_mac, c.ip6(), OUTSIDE6, UDP, 64, &pkt::udp(1, 53, b"")),
            },
            Seed {
                name: "ipv6 link-local to a peer's link-local",
                hook: fc(&c),
                packet: from6(&c, c.host_mac, c.ll(), d.ll(), UDP, 64, &pkt::udp(1, 2, b"")),
            },
            Seed {
                name: "ipv6 bridged to a peer",
                hook: fc(&br1),
                packet: from6(&br1, br2.mac, br1.ip6(), br2.ip6(), UDP, 64, &pkt::udp(9, 9, b"l2")),
            },
            Seed {
                name: "ipv6 bridged to the bridge's mac",
                hook: fc(&br1),
                packet: from6(&br1, br1.host_mac, br1.ip6(), br2.ip6(), UDP, 64, &pkt::udp(9, 9, b"l3")),
            },
            Seed {
                name: "ipv6 bridged to the outside",
                hook: fc(&br1),
                packet: from6(&br1, br1.host_mac, br1.ip6(), OUTSIDE6, UDP, 64, &pkt::udp(9, 53, b"")),
            },
            Seed {
                name: "ipv6 bridged neighbour solicitation for a peer",
                hook: fc(&br1),
                packet: solicitation(&br1, br1.ip6(), br2.ip6(), Some(br1.mac)),
            },
            Seed { name: "ipv6 with a hop-by-hop header", hook: fc(&c), packet: seeds6[0].clone() },
            Seed { name: "ipv6 with a routing header", hook: fc(&c), packet: seeds6[1].clone() },
            Seed { name: "ipv6 fragment", hook: fc(&c), packet: seeds6[2].clone() },
            Seed { name: "ipv6 with destination options", hook: fc(&c), packet: seeds6[3].clone() },
            Seed {
                name: "neighbour solicitation for the gateway",
                hook: fc(&c),
                packet: solicitation(&c, c.ll(), GATEWAY6, Some(c.mac)),
            },
            Seed {
                name: "neighbour solicitation without an option",
                hook: fc(&c),
                packet: solicitation(&c, c.ip6(), GATEWAY6, None),
            },
            Seed {
                name: "duplicate address detection",
                hook: fc(&c),
                packet: solicitation(&c, Ipv6Addr::UNSPECIFIED, c.ll(), None),
            },
            Seed {
                name: "neighbour solicitation in bridge mode",
                hook: fc(&br1),
                packet: solicitation(&br1, br1.ll(), GATEWAY6, Some(br1.mac)),
            },
            Seed {
                name: "router solicitation",
                hook: fc(&c),
                packet: from6(
                    &c,
                    [0x33, 0x33, 0, 0, 0, 2],
                    c.ll(),
                    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2),
                    ICMPV6,
                    255,
                    &pkt::icmp6(
                        c.ll(),
                        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2),
                        &[133, 0, 0, 0, 0, 0, 0, 0],
                    ),
                ),
            },
            Seed {
                name: "published tcp syn",
                hook: Hook::Uplink,
                packet: outside(CLIENT, NODE, TCP, &[], &pkt::tcp(40000, 8080, SYN, b"")),
            },
            Seed {
                name: "published tcp ack",
                hook: Hook::Uplink,
                packet: outside(CLIENT, NODE, TCP, &[], &pkt::tcp(40000, 8080, ACK, b"data")),
            },
            Seed {
                name: "published tcp with ip options",
                hook: Hook::Uplink,
                packet: outside(CLIENT, NODE, TCP, &[1, 1, 1, 0], &pkt::tcp(40001, 8080, SYN, b"")),
            },
            Seed {
                name: "published udp",
                hook: Hook::Uplink,
                packet: outside(CLIENT, NODE, UDP, &[], &pkt::udp(40000, 5353, b"q")),
            },
            Seed {
                name: "port published on the node address",
                hook: Hook::Uplink,
                packet: outside(CLIENT, NODE, TCP, &[], &pkt::tcp(40002, 9090, SYN, b"")),
            },
            Seed {
                name: "port of a gone container",
                hook: Hook::Uplink,
                packet: outside(CLIENT, NODE, TCP, &[], &pkt::tcp(40003, 7070, SYN, b"")),
            },
            Seed {
                name: "masquerade udp reply",
                hook: Hook::Uplink,
                packet: outside(CLIENT, NODE, UDP, &[], &pkt::udp(53, NAT_PORT, b"y")),
            },
            Seed {
                name: "masquerade tcp reply",
                hook: Hook::Uplink,
                packet: outside(CLIENT, NODE, TCP, &[], &pkt::tcp(80, NAT_PORT, SYN | ACK, b"")),
            },
            Seed {
                name: "masquerade echo reply",
                hook: Hook::Uplink,
                packet: outside(CLIENT, NODE, ICMP, &[], &pkt::icmp_echo(false, NAT_PORT, b"ping")),
            },
            Seed {
                name: "port unreachable about a masqueraded flow",
                hook: Hook::Uplink,
                packet: outside(CLIENT, NODE, ICMP, &[], &pkt::icmp_error(3, 3, &node_sent)),
            },
            Seed {
                name: "time exceeded about a masqueraded ping",
                hook: Hook::Uplink,
                packet: outside(CLIENT, NODE, ICMP, &[], &pkt::icmp_error(11, 0, &node_ping)),
            },
            Seed {
                name: "port unreachable about the node's own flow",
                hook: Hook::Uplink,
                packet: outside(CLIENT, NODE, ICMP, &[], &pkt::icmp_error(3, 3, &client_query)),
            },
            Seed {
                name: "other destination",
                hook: Hook::Uplink,
                packet: outside(
                    CLIENT,
                    Ipv4Addr::new(192, 168, 77, 9),
                    TCP,
                    &[],
                    &pkt::tcp(1, 8080, SYN, b""),
                ),
            },
            Seed {
                name: "routed icmp error from a container about no flow",
                hook: fc(&c),
                packet: from(&c, c.host_mac, CLIENT, ICMP, 64, &[], &pkt::icmp_error(3, 3, &c_stranger)),
            },
            Seed {
                name: "routed tcp syn from a published container",
                hook: fc(&web),
                packet: from(&web, web.host_mac, CLIENT, TCP, 64, &[], &pkt::tcp(2345, 443, SYN, b"")),
            },
            Seed {
                name: "routed to the outside, expiring",
                hook: fc(&c),
                packet: from(&c, c.host_mac, CLIENT, UDP, 1, &[], &pkt::udp(1, 53, b"")),
            },
            Seed {
                name: "routed udp to a container",
                hook: Hook::Uplink,
                packet: to_pod(c.ip, UDP, 64, &pkt::udp(53, 1111, b"y")),
            },
            Seed {
                name: "routed tcp syn to a published container",
                hook: Hook::Uplink,
                packet: to_pod(web.ip, TCP, 64, &pkt::tcp(40010, 80, SYN, b"")),
            },
            Seed {
                name: "routed to a container, expiring",
                hook: Hook::Uplink,
                packet: to_pod(c.ip, UDP, 1, &pkt::udp(53, 1111, b"y")),
            },
            Seed {
                name: "routed to a pod address no container has",
                hook: Hook::Uplink,
                packet: to_pod(GONE, TCP, 64, &pkt::tcp(40011, 80, SYN, b"")),
            },
            Seed {
                name: "routed port unreachable to a container",
                hook: Hook::Uplink,
                packet: to_pod(c.ip, ICMP, 64, &pkt::icmp_error(3, 3, &c_sent)),
            },
            Seed { name: "routed fragment to a container", hook: Hook::Uplink, packet: fragment_in },
            Seed { name: "vlan-tagged", hook: Hook::Uplink, packet: vlan },
            Seed { name: "arp on the uplink", hook: Hook::Uplink, packet: arp(1, CLIENT_MAC, CLIENT, NODE) },
            Seed {
                name: "sub-interface to the LAN",
                hook: fc(&m),
                packet: from(&m, UPLINK_MAC, CLIENT, UDP, 64, &[], &pkt::udp(1, 53, b"lan")),
            },
            Seed {
                name: "sub-interface to a container's address",
                hook: fc(&m),
                packet: from(&m, c.mac, c.ip, TCP, 64, &[], &pkt::tcp(7, 8, SYN, b"")),
            },
            Seed { name: "sub-interface arp request", hook: fc(&m), packet: arp(1, m.mac, m.ip, GATEWAY) },
            Seed { name: "sub-interface arp reply", hook: fc(&m), packet: arp(2, m.mac, m.ip, CLIENT) },
            Seed { name: "sub-interface arp announcement", hook: fc(&m), packet: arp(1, m.mac, m.ip, m.ip) },
            Seed {
                name: "arp reply in a sub-interface endpoint's name",
                hook: fc(&c),
                packet: arp(2, c.mac, m.ip, CLIENT),
            },
            // What a sub-interface may not send onto the LAN: ARP in any other name (a
            // host's address, the router's announced, a veth endpoint's), and tagged
            // frames (other VLANs of the parent's switch). From a veth the same is the
            // stack's.
            Seed {
                name: "sub-interface arp reply for a lan host",
                hook: fc(&m),
                packet: arp(2, m.mac, CLIENT, GATEWAY),
            },
            Seed {
                name: "sub-interface gratuitous arp for the router",
                hook: fc(&m),
                packet: arp(1, m.mac, GATEWAY, GATEWAY),
            },
            Seed {
                name: "sub-interface arp reply in a veth endpoint's name",
                hook: fc(&m),
                packet: arp(2, m.mac, c.ip, GATEWAY),
            },
            Seed { name: "sub-interface vlan-tagged", hook: fc(&m), packet: tagged(&m) },
            Seed {
                name: "container arp reply for a lan host",
                hook: fc(&c),
                packet: arp(2, c.mac, CLIENT, c.ip),
            },
            Seed { name: "container vlan-tagged", hook: fc(&c), packet: tagged(&c) },
            Seed {
                name: "to a sub-interface endpoint",
                hook: Hook::ToSubif(m.ifindex),
                packet: pkt::eth(
                    m.mac,
                    CLIENT_MAC,
                    pkt::ETH_IPV4,
                    &pkt::ipv4(CLIENT, m.ip, UDP, 64, &[], &pkt::udp(53, 1, b"in")),
                ),
            },
            Seed {
                name: "arp to a sub-interface",
                hook: Hook::ToSubif(m.ifindex),
                packet: arp(2, CLIENT_MAC, CLIENT, m.ip),
            },
        ]);
        seeds
    }

    /// IPv6 to and from the outside: NAT66 (or, in the routed phases, forwarding) of
    /// what containers send, and the replies and routed packets on the uplink. The
    /// replies answer the flows the container seeds open.
    fn seeds6(&self) -> Vec<Seed> {
        let (web, b, c, br1) = (self.web, self.b, self.c, self.br1);
        let fc = |ep: &Ep| Hook::FromContainer(ep.ifindex);
        let seed = |name, ep: &Ep, dst, proto, hop, l4: &[u8]| Seed {
            name,
            hook: fc(ep),
            packet: sent6(ep, ep.ip6(), dst, proto, hop, l4),
        };
        let up = |name, src, dst, proto, hop, l4: &[u8]| Seed {
            name,
            hook: Hook::Uplink,
            packet: outside6(src, dst, proto, hop, l4),
        };
        let mut udp_nocsum = sent6(&c, c.ip6(), OUTSIDE6, UDP, 64, &pkt::udp(2222, 53, b"zero"));
        udp_nocsum[14 + 40 + 6..14 + 40 + 8].fill(0);
        // Extension headers in front of UDP: hop-by-hop (PadN), routing (type 0, no
        // addresses left), fragment, destination options.
        let ext = |kind: u8| -> Vec<u8> {
            let mut h = match kind {
                0 | 60 => vec![UDP, 0, 1, 4, 0, 0, 0, 0],
                43 => vec![UDP, 0, 0, 0, 0, 0, 0, 0],
                _ => vec![UDP, 0, 0, 1, 0, 0, 0x12, 0x34],
            };
            h.extend_from_slice(&pkt::udp(4000, 53, b"ext"));
            h
        };
        let mut ext_seeds: Vec<Seed> = [
            (0u8, "nat66 with a hop-by-hop header"),
            (43, "nat66 with a routing header"),
            (44, "nat66 fragment"),
            (60, "nat66 with destination options"),
        ]
        .into_iter()
        .map(|(kind, name)| Seed {
            name,
            hook: fc(&c),
            packet: from6(&c, c.host_mac, c.ip6(), OUTSIDE6, kind, 64, &ext(kind)),
        })
        .collect();
        ext_seeds.push(Seed {
            name: "nat66 reply with a fragment header",
            hook: Hook::Uplink,
            packet: pkt::eth(
                UPLINK_MAC,
                CLIENT_MAC,
                pkt::ETH_IPV6,
                &pkt::ipv6(OUTSIDE6, NODE6, 44, 64, &ext(44)),
            ),
        });
        let ts_syn = pkt::tcp_ts(1111, 80, SYN, 100, Some(5000));
        let ts_ack = pkt::tcp_ts(1111, 80, ACK, 101, Some(5500));
        let ts_fin = pkt::tcp_ts(1111, 80, FIN | ACK, 101, Some(6000));
        // ICMPv6 errors about the flows the seeds below open, as the quoted packets
        // were: what the node sent for c (going in), what c received (going out).
        let node_sent = |dst, proto, l4: &[u8]| pkt::ipv6_l4(NODE6, dst, proto, 63, l4);
        let node_udp = node_sent(OUTSIDE6, UDP, &pkt::udp(NAT_PORT, 53, b"x"));
        let node_tcp = node_sent(OUTSIDE6, TCP, &pkt::tcp_ts(NAT_PORT, 80, SYN, 100, Some(5000)));
        let node_ping = node_sent(OUTSIDE6, ICMPV6, &echo6(true, NAT_PORT, b"ping"));
        let node_near = node_sent(CLIENT6, UDP, &pkt::udp(NAT_PORT, 53, b"near"));
        let node_own = node_sent(OUTSIDE6, UDP, &pkt::udp(40000, 53, b"own"));
        let received = |src, ep: &Ep, proto, l4: &[u8]| pkt::ipv6_l4(src, ep.ip6(), proto, 63, l4);
        let c_udp = received(OUTSIDE6, &c, UDP, &pkt::udp(53, 1111, b"y"));
        let c_tcp = received(OUTSIDE6, &c, TCP, &pkt::tcp(80, 1111, SYN | ACK, b"big"));
        let c_near = received(CLIENT6, &c, UDP, &pkt::udp(53, 1112, b"n"));
        let c_stranger = received(OUTSIDE6, &c, UDP, &pkt::udp(53, 5001, b"?"));
        let c_pong = received(OUTSIDE6, &c, ICMPV6, &echo6(false, 77, b"pong"));
        let b_unrouted = received(UNROUTED6, &b, UDP, &pkt::udp(53, 1, b""));
        // Published ports: what the node sent for web (its reply, translated), what web
        // received (the client's query, translated), what b received on no flow.
        let node_published = node_sent(OUTSIDE6, TCP, &pkt::tcp(8080, 40000, SYN | ACK, b""));
        let web_received = received(OUTSIDE6, &web, UDP, &pkt::udp(40000, 53, b"q"));
        let b_stranger = received(OUTSIDE6, &b, UDP, &pkt::udp(53, 5002, b"?"));
        let b_fragment = from6(&b, b.host_mac, b.ip6(), OUTSIDE6, 44, 64, &ext(44));
        let mtu = 1280;
        let mut seeds = vec![
            up(
                "nat66 packet too big about udp",
                ROUTER6,
                NODE6,
                ICMPV6,
                64,
                &icmp6_error(2, 0, mtu, &node_udp),
            ),
            up(
                "nat66 port unreachable about tcp",
                OUTSIDE6,
                NODE6,
                ICMPV6,
                64,
                &icmp6_error(1, 4, 0, &node_tcp),
            ),
            up(
                "nat66 time exceeded about a ping",
                ROUTER6,
                NODE6,
                ICMPV6,
                64,
                &icmp6_error(3, 0, 0, &node_ping),
            ),
            up(
                "nat66 parameter problem about udp to the uplink's subnet",
                CLIENT6,
                NODE6,
                ICMPV6,
                64,
                &icmp6_error(4, 0, 40, &node_near),
            ),
            up(
                "nat66 packet too big, expiring",
                ROUTER6,
                NODE6,
                ICMPV6,
                1,
                &icmp6_error(2, 0, mtu, &node_udp),
            ),
            up(
                "ipv6 packet too big about the node's own flow",
                ROUTER6,
                NODE6,
                ICMPV6,
                64,
                &icmp6_error(2, 0, mtu, &node_own),
            ),
            seed(
                "nat66 port unreachable from a container",
                &c,
                OUTSIDE6,
                ICMPV6,
                64,
                &icmp6_error(1, 4, 0, &c_udp),
            ),
            seed(
                "nat66 packet too big from a container",
                &c,
                OUTSIDE6,
                ICMPV6,
                64,
                &icmp6_error(2, 0, mtu, &c_tcp),
            ),
            seed(
                "nat66 time exceeded from a container",
                &c,
                CLIENT6,
                ICMPV6,
                64,
                &icmp6_error(3, 1, 0, &c_near),
            ),
            seed(
                "nat66 error from a container about no flow",
                &c,
                OUTSIDE6,
                ICMPV6,
                64,
                &icmp6_error(1, 4, 0, &c_stranger),
            ),
            seed(
                "nat66 error from a container about an echo reply",
                &c,
                OUTSIDE6,
                ICMPV6,
                64,
                &icmp6_error(3, 0, 0, &c_pong),
            ),
            seed(
                "nat66 error from a container about an unrouted flow",
                &b,
                UNROUTED6,
                ICMPV6,
                64,
                &icmp6_error(1, 4, 0, &b_unrouted),
            ),
            seed("nat66 tcp syn with timestamp", &c, OUTSIDE6, TCP, 64, &ts_syn),
            seed("nat66 tcp ack", &c, OUTSIDE6, TCP, 64, &ts_ack),
            seed("nat66 tcp fin", &c, OUTSIDE6, TCP, 64, &ts_fin),
            seed("nat66 tcp rst", &c, OUTSIDE6, TCP, 64, &pkt::tcp(1111, 80, RST | ACK, b"")),
            seed("nat66 udp", &c, OUTSIDE6, UDP, 64, &pkt::udp(1111, 53, b"x")),
            Seed { name: "nat66 udp without checksum", hook: fc(&c), packet: udp_nocsum },
            seed("nat66 icmpv6 echo", &c, OUTSIDE6, ICMPV6, 64, &echo6(true, 77, b"ping")),
            seed("nat66 icmpv6 echo reply", &c, OUTSIDE6, ICMPV6, 64, &echo6(false, 78, b"pong")),
            seed("nat66 icmpv6 error", &c, OUTSIDE6, ICMPV6, 64, &[1, 4, 0, 0, 0, 0, 0, 0]),
            seed("nat66 unsupported protocol", &c, OUTSIDE6, 47, 64, &[0; 8]),
            seed("nat66 to the uplink's subnet", &c, CLIENT6, UDP, 64, &pkt::udp(1112, 53, b"near")),
            seed("nat66 out of another device", &c, FAR6, TCP, 64, &pkt::tcp(1113, 443, SYN, b"")),
            seed("nat66 to an unrouted address", &b, UNROUTED6, UDP, 64, &pkt::udp(1, 53, b"")),
            seed(
                "nat66 from another container, same tuple",
                &b,
                OUTSIDE6,
                UDP,
                64,
                &pkt::udp(1111, 53, b"b"),
            ),
            seed("nat66 from lo's container", &web, OUTSIDE6, TCP, 64, &pkt::tcp(80, 40000, SYN | ACK, b"")),
            seed("ipv6 to the outside, expiring", &c, OUTSIDE6, UDP, 1, &pkt::udp(1, 53, b"")),
            seed("ipv6 to the outside, last hop", &c, OUTSIDE6, UDP, 2, &pkt::udp(1, 53, b"")),
            seed("ipv6 to the node's address", &c, NODE6, TCP, 64, &pkt::tcp(5555, 22, SYN, b"")),
            seed("ipv6 to a pod address no container has", &c, GONE6, UDP, 64, &pkt::udp(1, 2, b"")),
            up("nat66 udp reply", OUTSIDE6, NODE6, UDP, 64, &pkt::udp(53, NAT_PORT, b"y")),
            up(
                "nat66 tcp reply",
                OUTSIDE6,
                NODE6,
                TCP,
                64,
                &pkt::tcp_ts(80, NAT_PORT, SYN | ACK, 9000, Some(1)),
            ),
            up("nat66 echo reply", OUTSIDE6, NODE6, ICMPV6, 64, &echo6(false, NAT_PORT, b"ping")),
            up(
                "nat66 reply from the uplink's subnet",
                CLIENT6,
                NODE6,
                UDP,
                64,
                &pkt::udp(53, NAT_PORT, b"n"),
            ),
            up("nat66 reply, expiring", OUTSIDE6, NODE6, UDP, 1, &pkt::udp(53, NAT_PORT, b"y")),
            up("ipv6 to the node, no flow", OUTSIDE6, NODE6, TCP, 64, &pkt::tcp(40000, 22, SYN, b"")),
            // Ports published on IPv6 (PORT_MAPS6), in every phase: new connections to the
            // node's address, their packets, the containers' replies (translated back to
            // the node's address, masqueraded or routed), and what has no mapping.
            up("ipv6 published tcp syn", OUTSIDE6, NODE6, TCP, 64, &pkt::tcp(40000, 8080, SYN, b"")),
            up("ipv6 published tcp ack", OUTSIDE6, NODE6, TCP, 64, &pkt::tcp(40000, 8080, ACK, b"data")),
            up("ipv6 published tcp fin", OUTSIDE6, NODE6, TCP, 64, &pkt::tcp(40000, 8080, FIN | ACK, b"")),
            up("ipv6 published udp", OUTSIDE6, NODE6, UDP, 64, &pkt::udp(40000, 5353, b"q")),
            up(
                "ipv6 published syn from the uplink's subnet",
                CLIENT6,
                NODE6,
                TCP,
                64,
                &pkt::tcp(40001, 8080, SYN, b""),
            ),
            up("ipv6 published syn, expiring", OUTSIDE6, NODE6, TCP, 1, &pkt::tcp(40004, 8080, SYN, b"")),
            up(
                "ipv6 port published on the node's address",
                OUTSIDE6,
                NODE6,
                TCP,
                64,
                &pkt::tcp(40002, 9090, SYN, b""),
            ),
            up(
                "ipv6 port published on the node's address and on every one",
                OUTSIDE6,
                NODE6,
                TCP,
                64,
                &pkt::tcp(40005, PORT_BOTH, SYN, b""),
            ),
            up(
                "ipv6 port published on another address",
                OUTSIDE6,
                NODE6,
                UDP,
                64,
                &pkt::udp(40006, PORT_OTHER6, b"o"),
            ),
            up(
                "ipv6 port published on another address, to it",
                OUTSIDE6,
                OTHER6,
                UDP,
                64,
                &pkt::udp(40006, PORT_OTHER6, b"o"),
            ),
            up("ipv6 port of a gone container", OUTSIDE6, NODE6, TCP, 64, &pkt::tcp(40003, 7070, SYN, b"")),
            up(
                "ipv6 port published for ipv4 only",
                OUTSIDE6,
                NODE6,
                TCP,
                64,
                &pkt::tcp(40007, PORT_V4_ONLY, SYN, b""),
            ),
            up("ipv6 unmapped port", OUTSIDE6, NODE6, UDP, 64, &pkt::udp(40008, 4444, b"u")),
            up(
                "ipv6 packet too big about a published flow",
                ROUTER6,
                NODE6,
                ICMPV6,
                64,
                &icmp6_error(2, 0, mtu, &node_published),
            ),
            seed("ipv6 published tcp reply", &web, OUTSIDE6, TCP, 64, &pkt::tcp(80, 40000, SYN | ACK, b"")),
            seed(
                "ipv6 published tcp reply fin",
                &web,
                OUTSIDE6,
                TCP,
                64,
                &pkt::tcp(80, 40000, FIN | ACK, b""),
            ),
            seed("ipv6 published udp reply", &web, OUTSIDE6, UDP, 64, &pkt::udp(53, 40000, b"a")),
            seed(
                "ipv6 published reply to the uplink's subnet",
                &web,
                CLIENT6,
                TCP,
                64,
                &pkt::tcp(80, 40001, SYN | ACK, b""),
            ),
            seed(
                "ipv6 published reply, port on the node's address",
                &b,
                OUTSIDE6,
                TCP,
                64,
                &pkt::tcp(22, 40002, SYN | ACK, b""),
            ),
            seed(
                "ipv6 published reply, exact mapping",
                &b,
                OUTSIDE6,
                TCP,
                64,
                &pkt::tcp(23, 40005, SYN | ACK, b""),
            ),
            seed("ipv6 published container, new flow", &b, OUTSIDE6, TCP, 64, &pkt::tcp(5000, 443, SYN, b"")),
            seed(
                "ipv6 published container, new flow out of another device",
                &b,
                FAR6,
                UDP,
                64,
                &pkt::udp(5001, 53, b"f"),
            ),
            seed("ipv6 published container, echo", &b, OUTSIDE6, ICMPV6, 64, &echo6(true, 79, b"ping")),
            seed(
                "ipv6 published container's port unreachable about a published flow",
                &web,
                OUTSIDE6,
                ICMPV6,
                64,
                &icmp6_error(1, 4, 0, &web_received),
            ),
            seed(
                "ipv6 published container's error about no flow",
                &b,
                OUTSIDE6,
                ICMPV6,
                64,
                &icmp6_error(1, 4, 0, &b_stranger),
            ),
            seed(
                "ipv6 published container's icmpv6 error, no quote",
                &b,
                OUTSIDE6,
                ICMPV6,
                64,
                &[1, 4, 0, 0, 0, 0, 0, 0],
            ),
            seed("ipv6 published container, unsupported protocol", &b, OUTSIDE6, 47, 64, &[0; 8]),
            Seed { name: "ipv6 published container, fragment", hook: fc(&b), packet: b_fragment },
            up("routed in", OUTSIDE6, c.ip6(), TCP, 64, &pkt::tcp(80, 1111, SYN | ACK, b"")),
            up("routed in to a bridged container", OUTSIDE6, br1.ip6(), UDP, 64, &pkt::udp(53, 9, b"r")),
            up("routed in to no container", OUTSIDE6, GONE6, UDP, 64, &pkt::udp(53, 9, b"r")),
            up("routed in, expiring", OUTSIDE6, c.ip6(), UDP, 1, &pkt::udp(53, 9, b"r")),
            up("ipv6 to another address", OUTSIDE6, CLIENT6, UDP, 64, &pkt::udp(53, 9, b"r")),
        ];
        seeds.extend(ext_seeds);
        seeds.extend(self.hairpin_seeds6());
        seeds
    }

    /// IPv6's hairpin and what a container with published ports sends to a local peer,
    /// in every phase: c (no published port) connecting to ports published on the
    /// node's address (SYN, ACK, FIN, UDP; on every address, on the node's exactly, both
    /// on one port), the ports' containers answering it, a published container
    /// hairpinning to another and to itself; what to the node's address is no
    /// connection's first packet or has no port (the stack's); a published container's
    /// packets to peers that answer no hairpinned connection (delivered as they are),
    /// of every kind.
    fn hairpin_seeds6(&self) -> Vec<Seed> {
        let (web, b, c, d, br1) = (self.web, self.b, self.c, self.d, self.br1);
        let seed = |name, ep: &Ep, dst, proto, hop, l4: &[u8]| Seed {
            name,
            hook: Hook::FromContainer(ep.ifindex),
            packet: sent6(ep, ep.ip6(), dst, proto, hop, l4),
        };
        let raw = |name, ep: &Ep, dst: Ipv6Addr, next: u8, payload: &[u8]| Seed {
            name,
            hook: Hook::FromContainer(ep.ifindex),
            packet: from6(ep, ep.host_mac, ep.ip6(), dst, next, 64, payload),
        };
        // What web received through the hairpin (c's query), as web's error quotes it.
        let web_received = pkt::ipv6_l4(c.ip6(), web.ip6(), UDP, 63, &pkt::udp(6667, 53, b"q"));
        // What c received from the node's address (web's answer), as c's error quotes it.
        let c_received = pkt::ipv6_l4(NODE6, c.ip6(), UDP, 63, &pkt::udp(5353, 6667, b"a"));
        let b_stranger = pkt::ipv6_l4(c.ip6(), b.ip6(), UDP, 63, &pkt::udp(7000, 7001, b"?"));
        let mut fragment = vec![UDP, 0, 0, 1, 0, 0, 0x12, 0x34];
        fragment.extend_from_slice(&pkt::udp(5104, 53, b"frag"));
        let mut hop_by_hop = vec![UDP, 0, 1, 4, 0, 0, 0, 0];
        hop_by_hop.extend_from_slice(&pkt::udp(5105, 53, b"hbh"));
        vec![
            seed("ipv6 hairpin tcp syn", &c, NODE6, TCP, 64, &pkt::tcp(6666, 8080, SYN, b"")),
            seed("ipv6 hairpin tcp ack", &c, NODE6, TCP, 64, &pkt::tcp(6666, 8080, ACK, b"data")),
            seed("ipv6 hairpin tcp fin", &c, NODE6, TCP, 64, &pkt::tcp(6666, 8080, FIN | ACK, b"")),
            seed("ipv6 hairpin udp", &c, NODE6, UDP, 64, &pkt::udp(6667, 5353, b"q")),
            seed(
                "ipv6 hairpin to a port on the node's address",
                &c,
                NODE6,
                TCP,
                64,
                &pkt::tcp(6668, 9090, SYN, b""),
            ),
            seed(
                "ipv6 hairpin to a port on the node's address and on every one",
                &c,
                NODE6,
                TCP,
                64,
                &pkt::tcp(6669, PORT_BOTH, SYN, b""),
            ),
            seed(
                "ipv6 hairpin from a published container",
                &b,
                NODE6,
                TCP,
                64,
                &pkt::tcp(6671, 8080, SYN, b""),
            ),
            seed("ipv6 hairpin to itself", &b, NODE6, TCP, 64, &pkt::tcp(6672, 9090, SYN, b"")),
            seed("ipv6 hairpin, last hop", &c, NODE6, UDP, 2, &pkt::udp(6673, 5353, b"l")),
            seed("ipv6 hairpin to a gone container", &c, NODE6, TCP, 64, &pkt::tcp(6674, 7070, SYN, b"")),
            seed(
                "ipv6 hairpin to a port published on another address",
                &c,
                NODE6,
                UDP,
                64,
                &pkt::udp(6675, PORT_OTHER6, b"o"),
            ),
            seed(
                "ipv6 hairpin to a port published for ipv4 only",
                &c,
                NODE6,
                TCP,
                64,
                &pkt::tcp(6676, PORT_V4_ONLY, SYN, b""),
            ),
            seed(
                "ipv6 to a published port, no connection's first",
                &c,
                NODE6,
                TCP,
                64,
                &pkt::tcp(6677, 8080, ACK, b"late"),
            ),
            seed(
                "ipv6 to a published port, syn-ack",
                &c,
                NODE6,
                TCP,
                64,
                &pkt::tcp(6678, 8080, SYN | ACK, b""),
            ),
            seed("ipv6 to the node's address, unmapped udp", &c, NODE6, UDP, 64, &pkt::udp(6679, 4444, b"u")),
            seed("ipv6 echo to the node's address", &c, NODE6, ICMPV6, 64, &echo6(true, 80, b"ping")),
            raw("ipv6 fragment to the node's address", &c, NODE6, 44, &fragment),
            seed(
                "ipv6 error to the node's address about a hairpinned reply",
                &c,
                NODE6,
                ICMPV6,
                64,
                &icmp6_error(1, 4, 0, &c_received),
            ),
            seed("ipv6 hairpin reply", &web, c.ip6(), TCP, 64, &pkt::tcp(80, 6666, SYN | ACK, b"")),
            seed("ipv6 hairpin reply data", &web, c.ip6(), TCP, 64, &pkt::tcp(80, 6666, ACK, b"resp")),
            seed("ipv6 hairpin reply fin", &web, c.ip6(), TCP, 64, &pkt::tcp(80, 6666, FIN | ACK, b"")),
            seed("ipv6 hairpin udp reply", &web, c.ip6(), UDP, 64, &pkt::udp(53, 6667, b"a")),
            seed(
                "ipv6 hairpin reply, port on the node's address",
                &b,
                c.ip6(),
                TCP,
                64,
                &pkt::tcp(22, 6668, SYN | ACK, b""),
            ),
            seed(
                "ipv6 hairpin reply, exact mapping",
                &b,
                c.ip6(),
                TCP,
                64,
                &pkt::tcp(23, 6669, SYN | ACK, b""),
            ),
            seed(
                "ipv6 hairpin reply to a published container",
                &web,
                b.ip6(),
                TCP,
                64,
                &pkt::tcp(80, 6671, SYN | ACK, b""),
            ),
            seed("ipv6 hairpin reply to itself", &b, b.ip6(), TCP, 64, &pkt::tcp(22, 6672, SYN | ACK, b"")),
            seed(
                "ipv6 hairpin target's port unreachable to the client",
                &web,
                c.ip6(),
                ICMPV6,
                64,
                &icmp6_error(1, 4, 0, &web_received),
            ),
            seed(
                "ipv6 published container to a peer, syn",
                &b,
                c.ip6(),
                TCP,
                64,
                &pkt::tcp(5100, 80, SYN, b""),
            ),
            seed("ipv6 published container to a peer, udp", &b, d.ip6(), UDP, 64, &pkt::udp(5101, 53, b"p")),
            seed(
                "ipv6 published container to a peer, echo",
                &b,
                c.ip6(),
                ICMPV6,
                64,
                &echo6(true, 81, b"ping"),
            ),
            seed(
                "ipv6 published container to a peer, echo reply",
                &web,
                c.ip6(),
                ICMPV6,
                64,
                &echo6(false, 82, b"pong"),
            ),
            seed(
                "ipv6 published container's error to a peer about no flow",
                &b,
                c.ip6(),
                ICMPV6,
                64,
                &icmp6_error(1, 4, 0, &b_stranger),
            ),
            seed(
                "ipv6 published container's icmpv6 to a peer, no quote",
                &b,
                c.ip6(),
                ICMPV6,
                64,
                &[1, 4, 0, 0, 0, 0, 0, 0],
            ),
            raw("ipv6 published container to a peer, hop-by-hop header", &b, c.ip6(), 0, &hop_by_hop),
            raw("ipv6 published container to a peer, fragment", &web, d.ip6(), 44, &fragment),
            raw("ipv6 published container to a peer, unknown protocol", &b, c.ip6(), 47, &[0; 8]),
            seed(
                "ipv6 published container to a bridged one",
                &b,
                br1.ip6(),
                UDP,
                64,
                &pkt::udp(5102, 53, b"br"),
            ),
            seed(
                "ipv6 published container to a peer, last hop",
                &b,
                c.ip6(),
                UDP,
                2,
                &pkt::udp(5103, 53, b""),
            ),
        ]
    }
}
