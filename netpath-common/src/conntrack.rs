//! Connection tracking and NAT state shared by the datapath and the agent.
//!
//! A flow has two entries, one per direction, each keyed by the tuple exactly as its
//! packets arrive at a netpath hook and each saying how to rewrite them. The reverse of
//! an entry's rewritten tuple is the key of its partner; the agent's garbage collector
//! uses that to expire both at once.

/// A packet's 5-tuple as seen on the wire (addresses and ports in network byte order),
/// for either family: `A` is the address, `[u8; 4]` ([`CtKey`]) or `[u8; 16]`
/// ([`CtKey6`]). For ICMP echo (and ICMPv6 echo) the identifier is the source "port" of
/// requests and the destination "port" of replies, so a request's reversed tuple is its
/// reply's key.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Tuple<A> {
    pub src: A,
    pub dst: A,
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// An IPv4 flow's key (16 bytes).
pub type CtKey = Tuple<[u8; 4]>;
/// An IPv6 flow's key (40 bytes).
pub type CtKey6 = Tuple<Ip6>;

/// An IPv6 address in a flow's key or entry (network byte order), aligned to 4 bytes:
/// the datapath copies keys and entries as words rather than byte by byte, which on
/// eBPF spills a register per byte into the 512-byte stack.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Ip6(pub [u8; 16]);

impl<A: Copy> Tuple<A> {
    /// The tuple a packet has after `entry`'s rewrite, reversed: its partner's key.
    pub fn partner(&self, entry: &NatEntry<A>) -> Tuple<A> {
        let (src, sport) = if entry.flags & CT_F_SNAT != 0 {
            (entry.nat_src, entry.nat_sport)
        } else {
            (self.src, self.sport)
        };
        let (dst, dport) = if entry.flags & CT_F_DNAT != 0 {
            (entry.nat_dst, entry.nat_dport)
        } else {
            (self.dst, self.dport)
        };
        Tuple { src: dst, dst: src, sport: dport, dport: sport, proto: self.proto, _pad: [0; 3] }
    }
}

impl CtKey {
    /// The key as two words (its 16 bytes in memory order), for BPF functions that the
    /// kernel verifies on their own: they take scalars only.
    pub fn to_words(&self) -> [u64; 2] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.src);
        b[4..8].copy_from_slice(&self.dst);
        b[8..10].copy_from_slice(&self.sport);
        b[10..12].copy_from_slice(&self.dport);
        b[12] = self.proto;
        [
            u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            u64::from_ne_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
        ]
    }

    /// The inverse of [`CtKey::to_words`] (padding zeroed).
    pub fn from_words(w: [u64; 2]) -> CtKey {
        let (a, b) = (w[0].to_ne_bytes(), w[1].to_ne_bytes());
        CtKey {
            src: [a[0], a[1], a[2], a[3]],
            dst: [a[4], a[5], a[6], a[7]],
            sport: [b[0], b[1]],
            dport: [b[2], b[3]],
            proto: b[4],
            _pad: [0; 3],
        }
    }

    /// [`CtKey::partner`] of a masquerade (an entry with `CT_F_SNAT` alone, rewriting the
    /// source to `nat_src:nat_sport`), on keys as words: the reply tuple
    /// `dst:dport -> nat_src:nat_sport`.
    pub fn snat_partner_words(key: [u64; 2], nat_src: [u8; 4], nat_sport: [u8; 2]) -> [u64; 2] {
        let k = CtKey::from_words(key);
        let entry = CtEntry { flags: CT_F_SNAT, nat_src, nat_sport, ..Default::default() };
        k.partner(&entry).to_words()
    }
}

/// Rewrite the source to `nat_src:nat_sport`.
pub const CT_F_SNAT: u8 = 1;
/// Rewrite the destination to `nat_dst:nat_dport`.
pub const CT_F_DNAT: u8 = 2;
/// This entry is the reply direction of its flow (created together with the original).
pub const CT_F_REPLY: u8 = 4;

/// TCP state as far as timeouts need it.
pub const TCP_SYN: u8 = 1;
pub const TCP_ESTABLISHED: u8 = 2;
/// FIN or RST seen.
pub const TCP_CLOSING: u8 = 3;

/// How to rewrite one direction of a flow, and what conntrack knows of it; `A` as in
/// [`Tuple`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NatEntry<A> {
    pub nat_src: A,
    pub nat_dst: A,
    pub nat_sport: [u8; 2],
    pub nat_dport: [u8; 2],
    /// `CT_F_*` bits.
    pub flags: u8,
    /// `TCP_*` for TCP, 0 otherwise.
    pub tcp_state: u8,
    pub _pad: [u8; 2],
    /// CLOCK_MONOTONIC nanoseconds of creation and of the last packet.
    pub created_ns: u64,
    pub last_seen_ns: u64,
    pub packets: u64,
    pub bytes: u64,
}

/// An IPv4 flow's entry (48 bytes).
pub type CtEntry = NatEntry<[u8; 4]>;
/// An IPv6 flow's entry (72 bytes).
pub type CtEntry6 = NatEntry<Ip6>;

/// The end of a masqueraded TCP flow as the server saw it, kept per translated tuple
/// (the server's side: `dst:dport -> node:nat_port`) after the container closed it.
/// The server may hold that tuple in TIME_WAIT for minutes, and accepts a new SYN on it
/// only if the SYN's timestamp (or, without timestamps, its sequence number) is newer
/// than the old flow's last; otherwise it answers with an ACK and the client loses a
/// retransmission timeout. Port allocation prefers ports whose new SYN passes that test.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ClosedFlow {
    /// Sequence number after the client's last segment (the server's rcv_nxt).
    pub end_seq: u32,
    /// The client's last TCP timestamp value (if `has_ts`).
    pub ts_val: u32,
    pub has_ts: u8,
    pub _pad: [u8; 7],
    /// CLOCK_MONOTONIC nanoseconds of the client's last closing segment.
    pub closed_ns: u64,
}

/// How long a server may keep a closed flow's tuple in TIME_WAIT (2 MSL; Linux uses
/// 60 s, some systems 240 s): older [`ClosedFlow`] records no longer constrain reuse.
pub const TIME_WAIT_NS: u64 = 240 * 1_000_000_000;

/// Key of a port-mapping table: what arrives at the node, for either family (`A` as in
/// [`Tuple`]). An all-zero `host_ip` means every node address of the family.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PortKeyOf<A> {
    pub host_ip: A,
    pub port: [u8; 2],
    pub proto: u8,
    pub _pad: u8,
}

/// An IPv4 published port (`PORT_MAPS`, 8 bytes).
pub type PortKey = PortKeyOf<[u8; 4]>;
/// An IPv6 published port (`PORT_MAPS6`, 20 bytes).
pub type PortKey6 = PortKeyOf<Ip6>;

/// Where a mapped port goes: the container's address of the same family and its port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PortTargetOf<A> {
    pub ip: A,
    pub port: [u8; 2],
    pub _pad: [u8; 2],
}

pub type PortTarget = PortTargetOf<[u8; 4]>;
pub type PortTarget6 = PortTargetOf<Ip6>;

/// The agent attached its tc programs through netlink (clsact) rather than TCX links.
pub const NODE_F_CLSACT: u32 = 1;
/// Some port is published on an address of the uplink other than the node address
/// (`--host-ip`): the programs look such addresses up; without it, they need not.
pub const NODE_F_ADDRESS_PORTS: u32 = 2;
/// The node has an IPv6 pod CIDR (`--pod-cidr6`): container_path6 handles containers'
/// IPv6. Without it their IPv6 is the node stack's, as before IPv6 support (a bridge
/// mode node's containers may speak IPv6 among themselves over the bridge).
pub const NODE_F_IPV6: u32 = 4;
/// Cluster mode with an IPv6 cluster CIDR (`--cluster-cidr6`), natively routed (`--tunnel
/// none`): uplink_in hands IPv6 to `from_other_node6` (CLUSTER_PROGS6) first, for pods'
/// IPv6 from other nodes. Without it (no IPv6 cluster, or VXLAN, whose arrivals come in
/// through from_tunnel), uplink_in pays nothing for cluster IPv6.
pub const NODE_F_NATIVE6: u32 = 8;
/// `--masquerade false`: the node's IPv4 pod CIDR is a routed prefix. What containers send
/// to the outside that is no tracked flow's leaves untranslated, and the outside reaches
/// them by their own addresses. A bit for "off" so that a config written without it (an
/// older agent's pins) keeps masquerading.
pub const NODE_F_ROUTED: u32 = 16;

/// Node-wide settings the agent gives the datapath (single-entry array).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NodeConfig {
    /// The node's address on the uplink: SNAT source, DNAT destination. 0 disables NAT.
    pub node_ip: [u8; 4],
    pub pod_net: [u8; 4],
    pub pod_mask: [u8; 4],
    pub uplink_ifindex: u32,
    /// Source ports SNAT allocates from, inclusive, host byte order.
    pub nat_port_min: u16,
    pub nat_port_max: u16,
    /// `NODE_F_*` bits.
    pub flags: u32,
    /// The node namespace's cookie: the socket hooks act only on sockets of this
    /// namespace, though their cgroup may hold processes of others.
    pub netns_cookie: u64,
    /// Cluster mode: the pod network of the whole cluster (never masqueraded), and the
    /// mask of one node's subnet (the key of `NODE_ROUTES`). Zero masks: one node.
    pub cluster_net: [u8; 4],
    pub cluster_mask: [u8; 4],
    pub node_mask: [u8; 4],
    /// The collect-metadata VXLAN device packets to other nodes leave by; 0: none.
    pub tunnel_ifindex: u32,
    /// The VXLAN network identifier of the cluster's overlay.
    pub vni: u32,
    /// The largest IP packet that reaches another node unfragmented: the uplink's MTU,
    /// less the encapsulation in VXLAN mode. 0: no check.
    pub path_mtu: u16,
    pub _pad: [u8; 2],
}

impl NodeConfig {
    pub fn in_pod_cidr(&self, addr: [u8; 4]) -> bool {
        in_net(addr, self.pod_net, self.pod_mask)
    }

    /// Is `addr` a pod address of the cluster (cluster mode only)?
    pub fn in_cluster_cidr(&self, addr: [u8; 4]) -> bool {
        self.cluster_mask != [0; 4] && in_net(addr, self.cluster_net, self.cluster_mask)
    }

    /// The subnet of the node `addr` belongs to: `NODE_ROUTES`'s key.
    pub fn node_subnet(&self, addr: [u8; 4]) -> [u8; 4] {
        (u32::from_be_bytes(addr) & u32::from_be_bytes(self.node_mask)).to_be_bytes()
    }
}

fn in_net(addr: [u8; 4], net: [u8; 4], mask: [u8; 4]) -> bool {
    let m = u32::from_be_bytes(mask);
    u32::from_be_bytes(addr) & m == u32::from_be_bytes(net) & m
}

/// IPv6 masquerade (NAT66) to the node's address: the IPv4 SNAT's rules for IPv6 ([`NodeConfig6::flags`]).
/// Off: the node has a routed prefix; containers' IPv6 leaves and arrives with their own
/// addresses, forwarded by the datapath both ways.
pub const NODE6_F_MASQUERADE: u32 = 1;

/// The IPv6 half of the node's settings (single-entry array `NODE_CONFIG6`; the port
/// range and the rest are [`NodeConfig`]'s). Only read when `NODE_F_IPV6` is set.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NodeConfig6 {
    /// The node's global IPv6 address on the uplink: the masquerade source. All zero:
    /// the uplink has none, and containers' IPv6 to the outside is the stack's.
    pub node_ip: [u8; 16],
    /// The node's IPv6 pod CIDR and its prefix length.
    pub pod_net: [u8; 16],
    pub pod_prefix: u8,
    pub _pad: [u8; 3],
    /// `NODE6_F_*` bits.
    pub flags: u32,
    /// Cluster mode: the IPv6 pod network of the whole cluster (`--cluster-cidr6`,
    /// never masqueraded) and its prefix length; the prefix length of one node's
    /// subnet (the key of `NODE_ROUTES6` is an address masked with it). A zero
    /// `cluster_prefix`: no IPv6 cluster (a /0 cluster CIDR is refused by the agent).
    pub cluster_net: [u8; 16],
    pub cluster_prefix: u8,
    pub node_prefix: u8,
    pub _pad2: [u8; 2],
}

impl NodeConfig6 {
    pub fn in_pod_cidr(&self, addr: &[u8; 16]) -> bool {
        in_prefix(addr, &self.pod_net, self.pod_prefix)
    }

    /// Is `addr` a pod address of the cluster (cluster mode with `--cluster-cidr6`)?
    pub fn in_cluster_cidr(&self, addr: &[u8; 16]) -> bool {
        self.cluster_prefix != 0 && in_prefix(addr, &self.cluster_net, self.cluster_prefix)
    }

    /// The subnet of the node `addr` belongs to: `NODE_ROUTES6`'s key.
    pub fn node_subnet(&self, addr: &[u8; 16]) -> [u8; 16] {
        mask_prefix(addr, self.node_prefix)
    }
}

/// `a` with every bit after the first `len` cleared.
pub fn mask_prefix(a: &[u8; 16], len: u8) -> [u8; 16] {
    let (hi, lo) = halves(a);
    let len = len.min(128) as u32;
    let mask = |bits: u32| if bits == 0 { 0 } else { u64::MAX << (64 - bits.min(64)) };
    let (hi, lo) = (hi & mask(len), lo & mask(len.saturating_sub(64)));
    // SAFETY: same size, every bit pattern valid (see halves).
    unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>([hi.to_be(), lo.to_be()]) }
}

/// Do the first `len` bits of `a` and `net` agree?
pub fn in_prefix(a: &[u8; 16], net: &[u8; 16], len: u8) -> bool {
    let (hi_a, lo_a) = halves(a);
    let (hi_n, lo_n) = halves(net);
    let len = len.min(128) as u32;
    let mask = |bits: u32| if bits == 0 { 0 } else { u64::MAX << (64 - bits.min(64)) };
    let (mh, ml) = (mask(len), mask(len.saturating_sub(64)));
    hi_a & mh == hi_n & mh && lo_a & ml == lo_n & ml
}

fn halves(a: &[u8; 16]) -> (u64, u64) {
    // SAFETY: same size, every bit pattern valid (by value: no alignment needed). Byte
    // by byte, the eBPF assembly spills a register per byte.
    let w = unsafe { core::mem::transmute::<[u8; 16], [u64; 2]>(*a) };
    (u64::from_be(w[0]), u64::from_be(w[1]))
}

/// Another node of the cluster: where its pods' packets go.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NodeRoute {
    /// The node's underlay address: the outer destination in VXLAN mode, the next hop
    /// in native routing.
    pub underlay: [u8; 4],
    /// `ROUTE_F_*` bits.
    pub flags: u32,
}

/// Native routing: forward with the FIB (the agent installs the route), no tunnel.
pub const ROUTE_F_NATIVE: u32 = 1;

#[cfg(feature = "user")]
pod!(
    CtKey,
    CtKey6,
    CtEntry,
    CtEntry6,
    ClosedFlow,
    PortKey,
    PortKey6,
    PortTarget,
    PortTarget6,
    NodeConfig,
    NodeConfig6,
    NodeRoute
);

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn keys_as_words_are_their_bytes_in_memory_order_and_come_back() {
        let k = CtKey {
            src: [10, 77, 0, 2],
            dst: [1, 2, 3, 4],
            sport: [0x30, 0x39],
            dport: [0, 80],
            proto: 17,
            _pad: [0; 3],
        };
        let w = k.to_words();
        // SAFETY: CtKey is 16 bytes of plain data.
        let raw: [u64; 2] = unsafe { core::mem::transmute(k) };
        assert_eq!(w, raw);
        assert_eq!(CtKey::from_words(w), k);
        for (src, sport) in [([192, 168, 77, 1], [0xee, 0x48]), ([0, 0, 0, 0], [0, 0]), ([255; 4], [255; 2])]
        {
            let e = CtEntry { nat_src: src, nat_sport: sport, flags: CT_F_SNAT, ..Default::default() };
            assert_eq!(CtKey::from_words(CtKey::snat_partner_words(w, src, sport)), k.partner(&e));
        }
    }

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!((size_of::<CtKey>(), align_of::<CtKey>()), (16, 1));
        assert_eq!((size_of::<CtEntry>(), align_of::<CtEntry>()), (48, 8));
        assert_eq!((size_of::<ClosedFlow>(), align_of::<ClosedFlow>()), (24, 8));
        assert_eq!((size_of::<PortKey>(), align_of::<PortKey>()), (8, 1));
        assert_eq!((size_of::<PortTarget>(), align_of::<PortTarget>()), (8, 1));
        assert_eq!((size_of::<NodeConfig>(), align_of::<NodeConfig>()), (56, 8));
        assert_eq!((size_of::<CtKey6>(), align_of::<CtKey6>()), (40, 4));
        assert_eq!((size_of::<CtEntry6>(), align_of::<CtEntry6>()), (72, 8));
        assert_eq!((size_of::<NodeConfig6>(), align_of::<NodeConfig6>()), (60, 4));
        assert_eq!((size_of::<PortKey6>(), align_of::<PortKey6>()), (20, 4));
        assert_eq!((size_of::<PortTarget6>(), align_of::<PortTarget6>()), (20, 4));
    }

    #[test]
    fn partner_of_an_snat_entry_is_the_reply_tuple() {
        let orig = CtKey {
            src: [10, 77, 0, 2],
            dst: [1, 1, 1, 1],
            sport: [0x30, 0x39],
            dport: [0, 80],
            proto: 6,
            _pad: [0; 3],
        };
        let e = CtEntry {
            nat_src: [192, 168, 77, 1],
            nat_sport: [0xee, 0x48],
            flags: CT_F_SNAT,
            ..Default::default()
        };
        let reply = orig.partner(&e);
        assert_eq!(
            reply,
            CtKey {
                src: [1, 1, 1, 1],
                dst: [192, 168, 77, 1],
                sport: [0, 80],
                dport: [0xee, 0x48],
                proto: 6,
                _pad: [0; 3]
            }
        );
        let r = CtEntry {
            nat_dst: orig.src,
            nat_dport: orig.sport,
            flags: CT_F_DNAT | CT_F_REPLY,
            ..Default::default()
        };
        assert_eq!(reply.partner(&r), orig);
    }

    #[test]
    fn ipv6_prefix_membership() {
        let net = [0xfd, 0, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut a = net;
        a[15] = 9;
        let c = NodeConfig6 { pod_net: net, pod_prefix: 64, ..Default::default() };
        assert!(c.in_pod_cidr(&a));
        a[7] = 1;
        assert!(!c.in_pod_cidr(&a));
        assert!(in_prefix(&a, &net, 56));
        assert!(!in_prefix(&a, &net, 64));
        assert!(in_prefix(&a, &[0; 16], 0));
        let mut b = a;
        b[15] = 8;
        assert!(in_prefix(&a, &b, 127));
        assert!(!in_prefix(&a, &b, 128));
        assert!(in_prefix(&a, &a, 128));
    }

    #[test]
    fn ipv6_cluster_membership_and_node_subnets() {
        let cluster = [0xfd, 0, 0x02, 0x44, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let c =
            NodeConfig6 { cluster_net: cluster, cluster_prefix: 48, node_prefix: 64, ..Default::default() };
        let mut a = cluster;
        a[7] = 3;
        a[15] = 9;
        assert!(c.in_cluster_cidr(&a));
        let mut subnet = cluster;
        subnet[7] = 3;
        assert_eq!(c.node_subnet(&a), subnet);
        assert_eq!(mask_prefix(&a, 0), [0; 16]);
        assert_eq!(mask_prefix(&a, 128), a);
        assert_eq!(mask_prefix(&a, 60)[7], 0);
        a[5] = 1;
        assert!(!c.in_cluster_cidr(&a));
        // No IPv6 cluster: nothing is in it.
        assert!(!NodeConfig6::default().in_cluster_cidr(&[0; 16]));
    }

    #[test]
    fn pod_cidr_membership() {
        let c = NodeConfig { pod_net: [10, 77, 0, 0], pod_mask: [255, 255, 255, 0], ..Default::default() };
        assert!(c.in_pod_cidr([10, 77, 0, 9]));
        assert!(!c.in_pod_cidr([10, 78, 0, 9]));
    }
}
