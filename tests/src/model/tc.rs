//! The tc programs: from_container (everything a container sends, at its host veth or,
//! for a macvlan/ipvlan endpoint, at its sub-interface's egress), uplink_in (everything
//! arriving at the node from outside) and to_subif (what arrives at a macvlan/ipvlan
//! endpoint's sub-interface).
use netpath_common::{
    conntrack::NODE_F_ROUTED, EndpointInfo, Reason, ENDPOINT_F_BRIDGED, ENDPOINT_F_PUBLISHED,
    ENDPOINT_F_SUBIF, SUBIF_IFINDEX_BASE,
};

use super::{
    csum,
    flow::{be16, be32, parse, tcp_stamp, Flow, ACK, IP, SYN, TCP},
    nat::{self, Direction},
    refused_by_tc_test_run, Expected, Model, Verdict,
};
use netpath_common::CtEntry;

pub(super) type Step = Result<(Verdict, Reason), Reason>;

pub(super) const PASS: (Verdict, Reason) = (Verdict::Pass, Reason::PassedToStack);
/// A sub-interface endpoint's packet, checked: the driver's to switch or send out.
const TO_PARENT: (Verdict, Reason) = (Verdict::Pass, Reason::PassedToParent);
const ETH_IPV4: [u8; 2] = [0x08, 0x00];
const ETH_ARP: [u8; 2] = [0x08, 0x06];
const ETH_IPV6: [u8; 2] = [0x86, 0xdd];

/// Acts as a router hop: TTL - 1 with the header checksum updated. A packet that would
/// expire is the stack's, which sends the time-exceeded.
fn decrement_ttl(p: &mut [u8]) -> bool {
    let (ttl, proto) = (p[IP + 8], p[IP + 9]);
    if ttl <= 1 {
        return false;
    }
    let c = csum::replace2(be16(p, IP + 10), [ttl, proto], [ttl - 1, proto]);
    p[IP + 10..IP + 12].copy_from_slice(&c);
    p[IP + 8] = ttl - 1;
    true
}

/// A new connection: a TCP SYN without ACK, or any packet of the other protocols.
pub(super) fn opens_connection<A>(flow: &Flow<A>) -> bool {
    flow.key.proto != TCP || (flow.tcp_flags & SYN != 0 && flow.tcp_flags & ACK == 0)
}

impl Model {
    /// from_container on `packet` arriving at host veth `ifindex`.
    pub fn from_container(&mut self, packet: &[u8], ifindex: u32) -> Expected {
        self.run_tc(packet, |m, p| m.container_step(p, ifindex))
    }

    /// uplink_in on `packet` (not marked by XDP: a test run carries no metadata).
    pub fn uplink_in(&mut self, packet: &[u8]) -> Expected {
        self.run_tc(packet, Model::uplink_in_step)
    }

    /// to_subif on `packet` arriving at sub-interface `ifindex`: it passes everything
    /// untouched, and counts what it delivers to the endpoint living there.
    pub fn to_subif(&mut self, packet: &[u8], ifindex: u32) -> Expected {
        self.run_tc(packet, |m, p| m.subif_step(p, ifindex))
    }

    fn subif_step(&mut self, p: &mut [u8], ifindex: u32) -> Step {
        // Too short for IPv4, or not IPv4: the container's stack's, untouched.
        if p.len() < IP + 20 || be16(p, 12) != ETH_IPV4 {
            return Ok(PASS);
        }
        let dst = be32(p, IP + 16);
        match self.endpoint(dst) {
            Some(ep) if ep.flags & ENDPOINT_F_SUBIF != 0 && ep.host_ifindex == ifindex => {
                self.endpoint_rx(dst, p.len() as u32);
                Ok((Verdict::Pass, Reason::ForwardedToPeer))
            }
            _ => Ok(PASS),
        }
    }

    fn run_tc(&mut self, packet: &[u8], step: impl FnOnce(&mut Model, &mut [u8]) -> Step) -> Expected {
        if refused_by_tc_test_run(packet, self.header_checks) {
            return Expected { verdict: Verdict::Refused, reason: None, packet: packet.to_vec() };
        }
        let mut p = packet.to_vec();
        let (verdict, reason) = step(self, &mut p).unwrap_or_else(|r| (Verdict::Drop, r));
        self.count(reason, packet.len() as u32);
        Expected { verdict, reason: Some(reason), packet: p }
    }

    fn container_step(&mut self, p: &mut [u8], ifindex: u32) -> Step {
        let len = p.len() as u32;
        if p.len() < 14 {
            return Err(Reason::DropMalformed);
        }
        match be16(p, 12) {
            ETH_IPV4 => {}
            ETH_ARP => return self.arp(p, ifindex),
            ETH_IPV6 => return self.container6_step(p, ifindex),
            // Out of a sub-interface they would reach the real LAN (a VLAN tag, the
            // switch's other VLANs): dropped there. From a veth they are the stack's.
            _ if ifindex & SUBIF_IFINDEX_BASE != 0 => return Err(Reason::DropUnsupportedProtocol),
            _ => return Ok(PASS),
        }
        if p.len() < IP + 20 {
            return Err(Reason::DropMalformed);
        }
        let (src, dst) = (be32(p, IP + 12), be32(p, IP + 16));
        // Only the endpoint's own address and MAC may leave its veth.
        let sender = self.sender(src, ifindex).ok_or(Reason::DropSpoofedSource)?;
        if p[6..12] != sender.mac {
            return Err(Reason::DropSpoofedSource);
        }
        self.endpoint_tx(src, len);
        // A sub-interface's own packet: where it goes is the driver's.
        if sender.flags & ENDPOINT_F_SUBIF != 0 {
            return Ok(TO_PARENT);
        }
        let bridged = sender.flags & ENDPOINT_F_BRIDGED != 0;
        if let Some(peer) = self.endpoint(dst) {
            // L2 semantics: only a frame already addressed to the peer skips the bridge.
            if bridged && p[0..6] != peer.mac {
                return Ok(PASS);
            }
            // A published container may be answering a hairpinned connection (bridged
            // or not).
            if sender.flags & ENDPOINT_F_PUBLISHED != 0 {
                match parse(p) {
                    Ok(flow) => {
                        if let Some(entry) = self.ct_lookup(&flow, len) {
                            return self.deliver_translated(p, &flow, &entry, Reason::NatTranslated);
                        }
                    }
                    Err(_) => {
                        if let Some(done) = self.outgoing_icmp_error(p) {
                            return done;
                        }
                    }
                }
            }
            // Bridged: unchanged, as the bridge would have delivered it.
            if bridged {
                return Ok(self.deliver_to_peer(p, dst, &peer, false));
            }
            if !decrement_ttl(p) {
                return Ok(PASS);
            }
            return Ok(self.deliver_to_peer(p, dst, &peer, true));
        }
        let cfg = self.world.config;
        // Routed mode: a pod address that is no endpoint (nor the gateway) reaches no one.
        let gateway = u32::from_be_bytes(cfg.pod_net).wrapping_add(1).to_be_bytes();
        if !bridged && cfg.pod_mask != [0; 4] && cfg.in_pod_cidr(dst) && dst != gateway {
            return Err(Reason::DropNoEndpoint);
        }
        self.outside_step(p)
    }

    /// A container's packet for an address that is no local container.
    fn outside_step(&mut self, p: &mut [u8]) -> Step {
        let cfg = self.world.config;
        let dst = be32(p, IP + 16);
        let to_node = dst == cfg.node_ip;
        // NAT off, or the pod network: the stack routes it untranslated.
        if cfg.node_ip == [0; 4] || cfg.in_pod_cidr(dst) {
            return Ok(PASS);
        }
        let routed = cfg.flags & NODE_F_ROUTED != 0;
        let flow = match parse(p) {
            Ok(f) => f,
            Err(_) if to_node => return Ok(PASS),
            Err(reason) => {
                if let Some(done) = self.outgoing_icmp_error(p) {
                    return done;
                }
                // Untranslatable: dropped when masquerading; on a routed prefix it goes
                // out as it is, unless malformed.
                if !routed || reason == Reason::DropMalformed {
                    return Err(reason);
                }
                return self.route(p, dst, Reason::Routed);
            }
        };
        let len = p.len() as u32;
        let (entry, reason) = match self.ct_lookup(&flow, len) {
            Some(e) => (e, Reason::NatTranslated),
            // Only a connection's first packet may start a hairpin.
            None if to_node && !opens_connection(&flow) => return Ok(PASS),
            None if to_node => match self.published(&flow.key) {
                // As on the uplink: a mapping to a container that is gone creates no state.
                Some((ip, _)) if self.endpoint(ip).is_none() => return Ok(PASS),
                Some((ip, port)) => (self.create_dnat(&flow, ip, port, len, true)?, Reason::DnatNewFlow),
                None => return Ok(PASS),
            },
            // A routed prefix: what is no tracked flow's leaves with its own address.
            None if routed => return self.route(p, dst, Reason::Routed),
            None => {
                let syn = (flow.key.proto == TCP).then(|| tcp_stamp(p, &flow));
                (self.create_snat(&flow, cfg.node_ip, len, syn, true)?, Reason::SnatNewFlow)
            }
        };
        self.deliver_translated(p, &flow, &entry, reason)
    }

    fn deliver_translated(&mut self, p: &mut [u8], flow: &Flow, entry: &CtEntry, reason: Reason) -> Step {
        self.note_closing(p, flow, entry);
        let new_dst = nat::apply(p, flow, entry);
        self.route(p, new_dst, reason)
    }

    /// An ICMP error a container sends about a translated flow, translated and routed;
    /// None when it quotes no such flow.
    fn outgoing_icmp_error(&mut self, p: &mut [u8]) -> Option<Step> {
        match self.icmp_error::<[u8; 4]>(p, Direction::FromContainer) {
            Ok(Some((_, dst))) => Some(self.route(p, dst, Reason::NatTranslated)),
            Ok(None) => None,
            Err(reason) => Some(Err(reason)),
        }
    }

    /// As the packet's router: into a container when `dst` is local, else out through
    /// the node's routes.
    fn route(&mut self, p: &mut [u8], dst: [u8; 4], reason: Reason) -> Step {
        if !decrement_ttl(p) {
            return Ok(PASS);
        }
        if let Some(peer) = self.endpoint(dst) {
            let (verdict, _) = self.deliver_to_peer(p, dst, &peer, true);
            return Ok((verdict, reason));
        }
        // No neighbour is resolved in advance: the kernel resolves it, MACs untouched.
        match self.world.fib.route(dst) {
            Some(dev) => Ok((Verdict::Out(dev), reason)),
            None => Err(Reason::DropFibFailed),
        }
    }

    /// Into `peer`'s namespace, speaking L2 as its gateway unless bridged.
    pub(super) fn deliver_to_peer(
        &mut self,
        p: &mut [u8],
        ip: [u8; 4],
        peer: &EndpointInfo,
        rewrite_macs: bool,
    ) -> (Verdict, Reason) {
        if rewrite_macs {
            p[0..6].copy_from_slice(&peer.mac);
            p[6..12].copy_from_slice(&peer.host_mac);
        }
        self.endpoint_rx(ip, p.len() as u32);
        (Verdict::Peer(peer.host_ifindex), Reason::ForwardedToPeer)
    }

    /// ARP from a container: a request for any address is answered with its host veth's
    /// MAC (routed mode), after checking the sender is the endpoint behind the veth. An
    /// ARP claiming a sub-interface endpoint's address (a request, a reply, an
    /// announcement) must come from that endpoint's interface with its MAC in the frame
    /// and the message, and goes out unanswered; from a sub-interface's index no ARP
    /// may claim any other address.
    fn arp(&mut self, p: &mut [u8], ifindex: u32) -> Step {
        const A: usize = 14;
        if p.len() < A + 28 {
            return Err(Reason::DropMalformed);
        }
        if be16(p, A) != [0, 1] || be16(p, A + 2) != [0x08, 0] || p[A + 4] != 6 || p[A + 5] != 4 {
            return Err(Reason::DropMalformed);
        }
        let (sha, spa, tpa) = (&p[A + 8..A + 14], be32(p, A + 14), be32(p, A + 24));
        // Probes (sender 0.0.0.0) and announcements get no answer: duplicate address
        // detection in the container must see silence.
        if spa == [0; 4] {
            return Ok(PASS);
        }
        let owner = self.endpoint(spa);
        if let Some(ep) = owner.filter(|e| e.flags & ENDPOINT_F_SUBIF != 0) {
            if ep.host_ifindex != ifindex || sha != ep.mac || p[6..12] != ep.mac {
                return Err(Reason::DropSpoofedSource);
            }
            return Ok(TO_PARENT);
        }
        // A sub-interface (by its index) may claim no other address: on the LAN that
        // would poison the neighbours' caches.
        if ifindex & SUBIF_IFINDEX_BASE != 0 {
            return Err(Reason::DropSpoofedSource);
        }
        if be16(p, A + 6) != [0, 1] || spa == tpa {
            return Ok(PASS);
        }
        let sender = owner.filter(|e| e.host_ifindex == ifindex).ok_or(Reason::DropSpoofedSource)?;
        if sha != sender.mac || p[6..12] != sender.mac {
            return Err(Reason::DropSpoofedSource);
        }
        // The bridge answers for its gateway in bridge mode.
        if sender.flags & ENDPOINT_F_BRIDGED != 0 {
            return Ok(PASS);
        }
        p[0..6].copy_from_slice(&sender.mac);
        p[6..12].copy_from_slice(&sender.host_mac);
        p[A + 6..A + 8].copy_from_slice(&[0, 2]);
        p[A + 8..A + 14].copy_from_slice(&sender.host_mac);
        p[A + 14..A + 18].copy_from_slice(&tpa);
        p[A + 18..A + 24].copy_from_slice(&sender.mac);
        p[A + 24..A + 28].copy_from_slice(&spa);
        Ok((Verdict::Out(ifindex), Reason::ArpReplied))
    }

    fn uplink_in_step(&mut self, p: &mut [u8]) -> Step {
        if p.len() < 14 {
            return Ok(PASS);
        }
        match be16(p, 12) {
            ETH_IPV4 => {}
            ETH_IPV6 => return self.uplink6_step(p),
            _ => return Ok(PASS),
        }
        let cfg = self.world.config;
        // A routed prefix: the outside reaches containers by their own addresses.
        if cfg.flags & NODE_F_ROUTED != 0 && cfg.pod_mask != [0; 4] {
            if p.len() < IP + 20 {
                return Err(Reason::DropMalformed);
            }
            let dst = be32(p, IP + 16);
            if cfg.in_pod_cidr(dst) {
                return self.deliver(p, dst, Reason::Routed);
            }
        }
        // Whatever netpath cannot or need not translate is the node's own traffic.
        let Ok(flow) = parse(p) else {
            if let Some((_, ip)) = self.icmp_error::<[u8; 4]>(p, Direction::ToContainer)? {
                return self.deliver(p, ip, Reason::NatTranslated);
            }
            return Ok(PASS);
        };
        if cfg.node_ip == [0; 4] || flow.key.dst != cfg.node_ip {
            return Ok(PASS);
        }
        let len = p.len() as u32;
        let (entry, reason) = match self.ct_lookup(&flow, len) {
            Some(e) => (e, Reason::NatTranslated),
            None => match self.published(&flow.key) {
                // A mapping to a container that is gone creates no state.
                Some((ip, _)) if self.endpoint(ip).is_none() => return Ok(PASS),
                Some((ip, port)) => (self.create_dnat(&flow, ip, port, len, true)?, Reason::DnatNewFlow),
                None => return Ok(PASS),
            },
        };
        let new_dst = nat::apply(p, &flow, &entry);
        self.deliver(p, new_dst, reason)
    }

    /// Into the container that owns `dst`, as its gateway.
    fn deliver(&mut self, p: &mut [u8], dst: [u8; 4], reason: Reason) -> Step {
        let Some(peer) = self.endpoint(dst) else {
            // Routed: an address of the pod CIDR that is no endpoint is the stack's.
            return if reason == Reason::Routed { Ok(PASS) } else { Err(Reason::DropRedirectFailed) };
        };
        if !decrement_ttl(p) {
            return Ok(PASS);
        }
        let (verdict, _) = self.deliver_to_peer(p, dst, &peer, true);
        Ok((verdict, reason))
    }
}
