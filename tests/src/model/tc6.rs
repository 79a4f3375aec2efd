//! IPv6 through the tc programs. From a container (container_path6, and
//! container_nat6 with its port search and pair stages): the gateway's neighbour
//! discovery, source validation, delivery to local containers, and what leaves the
//! node: NAT66 to the node's IPv6 address, or, on a node with a routed prefix,
//! forwarded with the container's own address; a container with published ports goes
//! through conntrack there too (its replies leave with the node's address, the rest
//! untranslated), and for a local peer as well (its replies to a hairpinned connection
//! get the node's address back, the rest is delivered as it is). A container's new
//! connection to a port published on the node's address is hairpinned into the port's
//! container, the client's address kept; the rest of what it sends to that address is
//! the stack's. On the uplink (uplink_in6): the routed prefix's packets, then, at the
//! node's address in either setting, the replies to tracked flows and new connections
//! to ports published on IPv6 (PORT_MAPS6), into their container. ICMPv6 errors about
//! tracked flows are translated both ways (icmp6_to_container, icmp6_from_container), as
//! IPv4's ICMP errors are (the same model, `icmp_error`); a container's other ICMPv6
//! that reaches icmp6_from_container goes on as it is to a local peer or on a routed
//! prefix. Everything else is the stack's.
use netpath_common::{
    conntrack::{CT_F_DNAT, CT_F_REPLY, CT_F_SNAT, NODE6_F_MASQUERADE, NODE_F_IPV6},
    EndpointInfo, Ip6, Reason, ENDPOINT_F_BRIDGED, ENDPOINT_F_PUBLISHED, GATEWAY6,
};

use super::{
    family::Addr,
    flow::{be16, parse6, tcp_stamp, TCP},
    nat::{self, Direction},
    tc::{opens_connection, Step, PASS},
    Model, Verdict,
};

const IP6: usize = 14;
const L4: usize = IP6 + 40;
const SRC: usize = IP6 + 8;
const DST: usize = IP6 + 24;
const HOP_LIMIT: usize = IP6 + 7;
const ICMPV6: u8 = 58;

fn addr(p: &[u8], at: usize) -> [u8; 16] {
    p[at..at + 16].try_into().expect("16 bytes")
}

fn link_local(a: &[u8; 16]) -> bool {
    a[0] == 0xfe && a[1] & 0xc0 == 0x80
}

/// The ICMPv6 checksum of the `len` bytes at L4, with its pseudo-header.
fn icmp6_checksum(p: &[u8], len: usize) -> [u8; 2] {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for c in bytes.chunks(2) {
            sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
        }
    };
    add(&p[SRC..SRC + 32]);
    add(&(len as u32).to_be_bytes());
    add(&[0, 0, 0, ICMPV6]);
    let mut msg = p[L4..L4 + len].to_vec();
    msg[2..4].copy_from_slice(&[0, 0]);
    add(&msg);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    (!(sum as u16)).to_be_bytes()
}

impl Model {
    fn endpoint6(&self, ip: [u8; 16]) -> Option<([u8; 4], EndpointInfo)> {
        let owner = *self.endpoints6.get(&ip)?;
        Some((owner, self.endpoint(owner)?))
    }

    /// The endpoint owning IPv6 address `ip`, if it lives behind `ifindex`.
    fn sender6(&self, ip: [u8; 16], ifindex: u32) -> Option<([u8; 4], EndpointInfo)> {
        self.endpoint6(ip).filter(|(_, e)| e.host_ifindex == ifindex)
    }

    pub(super) fn container6_step(&mut self, p: &mut [u8], ifindex: u32) -> Step {
        // A node without an IPv6 pod CIDR leaves its containers' IPv6 to the stack.
        if self.world.config.flags & NODE_F_IPV6 == 0 {
            return Ok(PASS);
        }
        let len = p.len() as u32;
        if p.len() < L4 || p[IP6] >> 4 != 6 {
            return Err(Reason::DropMalformed);
        }
        let (src, dst) = (addr(p, SRC), addr(p, DST));
        if p[IP6 + 6] == ICMPV6 {
            if let Some(done) = self.neighbour_solicitation(p, ifindex)? {
                return Ok(done);
            }
        }
        // Address configuration (DAD, MLD) speaks from ::; nothing else may.
        if src == [0; 16] {
            return if p[IP6 + 6] == ICMPV6 { Ok(PASS) } else { Err(Reason::DropSpoofedSource) };
        }
        let (owner, sender) = self.sender6(src, ifindex).ok_or(Reason::DropSpoofedSource)?;
        if p[6..12] != sender.mac {
            return Err(Reason::DropSpoofedSource);
        }
        self.endpoint_tx(owner, len);
        // Multicast and link-local traffic is the link's, never routed.
        if sender.flags & ENDPOINT_F_BRIDGED != 0 {
            return self.bridged6_step(p, ifindex, &sender, src, dst);
        }
        if dst[0] == 0xff || link_local(&src) || link_local(&dst) {
            return Ok(PASS);
        }
        // As the container's router: a packet that would expire is the stack's, which
        // sends the time-exceeded (before any translation).
        if p[HOP_LIMIT] <= 1 {
            return Ok(PASS);
        }
        let published = sender.flags & ENDPOINT_F_PUBLISHED != 0;
        let Some((peer_owner, peer)) = self.endpoint6(dst) else {
            return self.outside6_step(p, src, dst, published);
        };
        // A container with published ports may be answering a hairpinned connection
        // (container_nat6 delivers what is no such reply as below).
        if published {
            return self.nat6_step(p);
        }
        p[HOP_LIMIT] -= 1;
        Ok(self.deliver_to_peer(p, peer_owner, &peer, true))
    }

    /// A bridged sender's packet: the bridge is its gateway. A neighbour solicitation
    /// for another local container goes to that container alone, unchanged; unicast
    /// addressed to a local container's own MAC skips the bridge (through conntrack
    /// when the sender publishes ports, but for ICMPv6 and link-local traffic); what is
    /// the pod prefix's, the cluster's, link-local, multicast or expiring is the
    /// bridge's; the rest leaves as a routed container's does.
    fn bridged6_step(
        &mut self,
        p: &mut [u8],
        ifindex: u32,
        sender: &EndpointInfo,
        src: [u8; 16],
        dst: [u8; 16],
    ) -> Step {
        let next_hdr = p[IP6 + 6];
        if next_hdr == ICMPV6 && p.len() >= L4 + 24 && p[L4] == 135 && p[L4 + 1] == 0 {
            if let Some((owner, peer)) = self.endpoint6(addr(p, L4 + 8)) {
                if peer.host_ifindex != ifindex {
                    return Ok(self.deliver_to_peer(p, owner, &peer, false));
                }
            }
        }
        if dst[0] == 0xff {
            return Ok(PASS);
        }
        let hops = p[HOP_LIMIT];
        let published = sender.flags & ENDPOINT_F_PUBLISHED != 0;
        if let Some((owner, peer)) = self.endpoint6(dst) {
            if p[0..6] != peer.mac {
                return Ok(PASS);
            }
            let l2_only = next_hdr == ICMPV6 || link_local(&src) || link_local(&dst);
            if published && hops > 1 && !l2_only {
                return self.nat6_step(p);
            }
            return Ok(self.deliver_to_peer(p, owner, &peer, false));
        }
        let cfg6 = self.world6.config;
        if link_local(&src) || link_local(&dst) {
            return Ok(PASS);
        }
        if (cfg6.pod_prefix != 0 && cfg6.in_pod_cidr(&dst)) || cfg6.in_cluster_cidr(&dst) || hops <= 1 {
            return Ok(PASS);
        }
        self.outside6_step(p, src, dst, published)
    }

    /// A container's packet for an address that is no local container (hop limit > 1);
    /// `published`: its sender has published ports.
    fn outside6_step(&mut self, p: &mut [u8], src: [u8; 16], dst: [u8; 16], published: bool) -> Step {
        let cfg6 = self.world6.config;
        // The pod prefix is all on this node: an address of it that is no endpoint
        // reaches no one.
        if cfg6.pod_prefix != 0 && cfg6.in_pod_cidr(&dst) {
            return Err(Reason::DropNoEndpoint);
        }
        if cfg6.node_ip == [0; 16] {
            return Ok(PASS);
        }
        // The node's address, from any container: container_nat6 hairpins a new
        // connection to a published port, the rest is the stack's.
        if dst == cfg6.node_ip {
            return self.nat6_step(p);
        }
        // A routed prefix: out with the container's own address; but a container with
        // published ports goes through conntrack (its replies to connections made to
        // the node's address leave with that address).
        if cfg6.flags & NODE6_F_MASQUERADE == 0 && !published {
            p[HOP_LIMIT] -= 1;
            return self.fib6(src, dst, Reason::Routed);
        }
        self.nat6_step(p)
    }

    /// container_nat6 (with container_snat6 and container_pair6), for what a container
    /// sends to the node's address, what one with published ports sends to a local
    /// peer, and what leaves masqueraded (or, from one with published ports, on a routed
    /// prefix). The flow's entry, then the rewrite: into the local container the new
    /// destination is (a hairpinned flow, the reply to one), else out through the FIB
    /// from the translated source. A first packet's entry (counted by this lookup: the
    /// pair was made with none) is the new flow's. Without an entry: to the node's
    /// address, a connection's first packet to a published port whose container exists
    /// is hairpinned (a DNAT pair with no packet counted, then the lookup), the rest is
    /// the stack's; to a local container, delivered as it is; on a routed prefix, out
    /// as it is; else a new masquerade pair (no packet counted either).
    fn nat6_step(&mut self, p: &mut [u8]) -> Step {
        let cfg6 = self.world6.config;
        let flow = match parse6(p) {
            Ok(flow) => flow,
            Err(reason) => return self.untranslatable6(p, reason),
        };
        let len = p.len() as u32;
        let entry = match self.ct_lookup(&flow, len) {
            Some(e) => e,
            None if flow.key.dst.0 == cfg6.node_ip => match self.published(&flow.key) {
                Some((ip, port)) if opens_connection(&flow) && Ip6::is_endpoint(self, ip) => {
                    self.create_dnat(&flow, ip, port, len, false)?;
                    self.ct_lookup(&flow, len).expect("the pair just created")
                }
                _ => return Ok(PASS),
            },
            None => {
                if let Some(done) = self.deliver_local6(p, flow.key.dst.0) {
                    return done;
                }
                if cfg6.flags & NODE6_F_MASQUERADE == 0 {
                    p[HOP_LIMIT] -= 1;
                    return self.fib6(flow.key.src.0, flow.key.dst.0, Reason::Routed);
                }
                let syn = (flow.key.proto == TCP).then(|| tcp_stamp(p, &flow));
                self.create_snat(&flow, Ip6(cfg6.node_ip), len, syn, false)?;
                self.ct_lookup(&flow, len).expect("the pair just created")
            }
        };
        let reason = match entry.packets == 1 && entry.flags & CT_F_REPLY == 0 {
            true if entry.flags & CT_F_DNAT != 0 => Reason::DnatNewFlow,
            true => Reason::SnatNewFlow,
            false => Reason::NatTranslated,
        };
        self.note_closing(p, &flow, &entry);
        let new_dst = nat::apply(p, &flow, &entry);
        if let Some(done) = self.deliver_local6(p, new_dst.0) {
            return done.map(|(verdict, _)| (verdict, reason));
        }
        p[HOP_LIMIT] -= 1;
        let new_src = if entry.flags & CT_F_SNAT != 0 { entry.nat_src } else { flow.key.src };
        self.fib6(new_src.0, new_dst.0, reason)
    }

    /// What container_nat6 cannot parse as a flow (a fragment, an extension header, a
    /// protocol other than TCP, UDP and ICMPv6, ICMPv6 but for an echo, a truncated
    /// header): to the node's address, the stack's; ICMPv6 (whole enough to be an
    /// error) is icmp6_from_container's; the rest goes on as it is where that is
    /// allowed ([`Model::untranslated6`]), else is dropped for its reason.
    fn untranslatable6(&mut self, p: &mut [u8], reason: Reason) -> Step {
        let (src, dst) = (addr(p, SRC), addr(p, DST));
        if dst == self.world6.config.node_ip {
            return Ok(PASS);
        }
        if reason == Reason::DropUnsupportedProtocol && p[IP6 + 6] == ICMPV6 {
            return self.outgoing_icmp6_error(p);
        }
        self.untranslated6(p, src, dst).unwrap_or(Err(reason))
    }

    /// A packet that is no tracked flow's, where it may go as it is: into a local
    /// container (a published container's packet to a peer), or out on a routed
    /// prefix. None: it may not.
    fn untranslated6(&mut self, p: &mut [u8], src: [u8; 16], dst: [u8; 16]) -> Option<Step> {
        if let Some(done) = self.deliver_local6(p, dst) {
            return Some(done);
        }
        (self.world6.config.flags & NODE6_F_MASQUERADE == 0).then(|| {
            p[HOP_LIMIT] -= 1;
            self.fib6(src, dst, Reason::Routed)
        })
    }

    /// Into the local container `dst`, if it is one, as its router (container_path6
    /// checked the hop limit): forwarded-to-peer. None: no local container.
    fn deliver_local6(&mut self, p: &mut [u8], dst: [u8; 16]) -> Option<Step> {
        let (owner, peer) = self.endpoint6(dst)?;
        p[HOP_LIMIT] -= 1;
        Some(Ok(self.deliver_to_peer(p, owner, &peer, true)))
    }

    /// An ICMPv6 error a container sends about a packet it received through a tracked
    /// flow (NAT66, a published port), translated to speak of the node's address and
    /// port, out through the FIB from there (even to a local container: a hairpinned
    /// flow's client). Any other ICMPv6 goes on as it is where that is allowed (a local
    /// peer, a routed prefix); masqueraded, it would leave with a pod address: dropped.
    fn outgoing_icmp6_error(&mut self, p: &mut [u8]) -> Step {
        if let Some((src, dst)) = self.icmp_error::<Ip6>(p, Direction::FromContainer)? {
            // About a hairpinned flow: into the local client.
            if let Some(done) = self.deliver_local6(p, dst.0) {
                return done.map(|(verdict, _)| (verdict, Reason::NatTranslated));
            }
            p[HOP_LIMIT] -= 1;
            return self.fib6(src.0, dst.0, Reason::NatTranslated);
        }
        let (src, dst) = (addr(p, SRC), addr(p, DST));
        self.untranslated6(p, src, dst).unwrap_or(Err(Reason::DropUnsupportedProtocol))
    }

    /// Out through the node's IPv6 routes; the kernel resolves the neighbour, MACs
    /// untouched.
    fn fib6(&self, src: [u8; 16], dst: [u8; 16], reason: Reason) -> Step {
        match self.world6.fib.route(src, dst) {
            Some(dev) => Ok((Verdict::Out(dev), reason)),
            None => Err(Reason::DropFibFailed),
        }
    }

    /// uplink_in6: IPv6 arriving at the node from outside.
    pub(super) fn uplink6_step(&mut self, p: &mut [u8]) -> Step {
        if self.world.config.flags & NODE_F_IPV6 == 0 || p.len() < L4 || p[IP6] >> 4 != 6 {
            return Ok(PASS);
        }
        let cfg6 = self.world6.config;
        let dst = addr(p, DST);
        // A routed prefix: the outside reaches containers by their own addresses.
        if cfg6.flags & NODE6_F_MASQUERADE == 0 && cfg6.pod_prefix != 0 && cfg6.in_pod_cidr(&dst) {
            return self.deliver6(p, dst, Reason::Routed);
        }
        // The node's address, in either setting: replies to tracked flows, connections
        // to published ports.
        if cfg6.node_ip == [0; 16] || dst != cfg6.node_ip {
            return Ok(PASS);
        }
        // What netpath cannot or need not translate is the node's own traffic, but for an
        // ICMPv6 error about a tracked flow (icmp6_to_container: into the container, as
        // the flow's packets are).
        let Ok(flow) = parse6(p) else {
            if p[IP6 + 6] == ICMPV6 {
                if let Some((_, dst)) = self.icmp_error::<Ip6>(p, Direction::ToContainer)? {
                    return self.deliver6(p, dst.0, Reason::NatTranslated);
                }
            }
            return Ok(PASS);
        };
        let len = p.len() as u32;
        let (entry, reason) = match self.ct_lookup(&flow, len) {
            Some(e) => (e, Reason::NatTranslated),
            // A published port (PORT_MAPS6) whose container exists: the flow's pair of
            // entries. Anything else (no mapping, a port published for IPv4 only, a
            // container that is gone) is the node's and creates no state.
            None => match self.published(&flow.key) {
                Some((ip, port)) if Ip6::is_endpoint(self, ip) => {
                    (self.create_dnat(&flow, ip, port, len, true)?, Reason::DnatNewFlow)
                }
                _ => return Ok(PASS),
            },
        };
        let new_dst = nat::apply(p, &flow, &entry);
        self.deliver6(p, new_dst.0, reason)
    }

    /// Into the container that owns `dst`, as its gateway. A routed packet for an
    /// address no container has is the stack's; a translated one is dropped.
    fn deliver6(&mut self, p: &mut [u8], dst: [u8; 16], reason: Reason) -> Step {
        let Some((owner, peer)) = self.endpoint6(dst) else {
            return if reason == Reason::Routed { Ok(PASS) } else { Err(Reason::DropRedirectFailed) };
        };
        if p[HOP_LIMIT] <= 1 {
            return Ok(PASS);
        }
        p[HOP_LIMIT] -= 1;
        let (verdict, _) = self.deliver_to_peer(p, owner, &peer, true);
        Ok((verdict, reason))
    }

    /// A solicitation for the gateway answered with an advertisement of the host veth's
    /// MAC; None when the packet is not one (an ordinary packet then).
    fn neighbour_solicitation(
        &mut self,
        p: &mut [u8],
        ifindex: u32,
    ) -> Result<Option<(Verdict, Reason)>, Reason> {
        if p.len() < L4 + 24 || p[L4] != 135 || p[L4 + 1] != 0 || addr(p, L4 + 8) != GATEWAY6 {
            return Ok(None);
        }
        let src = addr(p, SRC);
        // Duplicate address detection must see silence.
        if src == [0; 16] {
            return Ok(Some(PASS));
        }
        if p[HOP_LIMIT] != 255 {
            return Err(Reason::DropMalformed);
        }
        let (_, sender) = self.sender6(src, ifindex).ok_or(Reason::DropSpoofedSource)?;
        if p[6..12] != sender.mac {
            return Err(Reason::DropSpoofedSource);
        }
        if sender.flags & ENDPOINT_F_BRIDGED != 0 {
            return Ok(Some(PASS));
        }
        let msg_len = match be16(p, IP6 + 4) {
            // A multicast solicitation without the option is not answered (RFC 4861
            // 4.3: it must carry one; 7.2.4: the answer must carry the target's).
            [0, 24] if p[DST] == 0xff => return Ok(Some(PASS)),
            [0, 24] => 24,
            [0, 32] => 32,
            _ => return Ok(Some(PASS)),
        };
        if msg_len == 32 {
            let opt = L4 + 24;
            if p.len() < opt + 8 {
                return Err(Reason::DropMalformed);
            }
            if p[opt] != 1 || p[opt + 1] != 1 {
                return Ok(Some(PASS));
            }
            if p[opt + 2..opt + 8] != sender.mac {
                return Err(Reason::DropSpoofedSource);
            }
            p[opt] = 2;
            p[opt + 2..opt + 8].copy_from_slice(&sender.host_mac);
        }
        p[0..6].copy_from_slice(&sender.mac);
        p[6..12].copy_from_slice(&sender.host_mac);
        p[DST..DST + 16].copy_from_slice(&src);
        p[SRC..SRC + 16].copy_from_slice(&GATEWAY6);
        p[L4] = 136;
        p[L4 + 4..L4 + 8].copy_from_slice(&[0xe0, 0, 0, 0]);
        let check = icmp6_checksum(p, msg_len);
        p[L4 + 2..L4 + 4].copy_from_slice(&check);
        Ok(Some((Verdict::Out(ifindex), Reason::NdAnswered)))
    }
}
