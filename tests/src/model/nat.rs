//! Rewriting a packet by its conntrack entry, and ICMP errors about translated flows
//! (their quoted header too), with every checksum updated incrementally.
use netpath_common::{
    conntrack::{NatEntry, Tuple, CT_F_DNAT, CT_F_SNAT},
    Reason,
};

use super::{
    csum,
    family::Addr,
    flow::{be16, Flow, IP, TCP, UDP},
    Model,
};

/// Which way an ICMP error (ICMPv6's too) travels, so which end of the flow it speaks
/// for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Arriving at the node about a packet the node sent for a container.
    ToContainer,
    /// Sent by a container about a packet it received through the NAT.
    FromContainer,
}

fn store<const N: usize>(p: &mut [u8], off: usize, v: [u8; N]) {
    p[off..off + N].copy_from_slice(&v);
}

/// An L4 checksum update; UDP's "no checksum" (0) stays none and a real one never
/// becomes 0 (it is written 0xffff instead).
fn l4_update(p: &mut [u8], off: usize, udp: bool, update: csum::Update) {
    let c = be16(p, off);
    if udp && c == [0, 0] {
        return;
    }
    let mut n = update.apply(c);
    if udp && n == [0, 0] {
        n = [0xff, 0xff];
    }
    store(p, off, n);
}

/// Applies `entry`'s rewrite to the packet `flow` describes; returns its new destination.
pub fn apply<A: Addr>(p: &mut [u8], flow: &Flow<A>, entry: &NatEntry<A>) -> A {
    let l4 = flow.l4;
    let proto = flow.key.proto;
    let icmp = proto == A::ICMP;
    let (csum_off, udp) = match proto {
        TCP => (l4 + 16, false),
        UDP => (l4 + 6, true),
        _ => (l4 + 2, false),
    };
    let l4_csum = move |p: &mut [u8], u: csum::Update| l4_update(p, csum_off, udp, u);
    // IPv4's ICMP checksum covers no pseudo-header: addresses do not enter it.
    let addr = |p: &mut [u8], off: usize, new: A| {
        if A::read(p, off) != new {
            A::rewrite(p, off, new, !icmp, &l4_csum);
        }
    };
    let port = |p: &mut [u8], off: usize, new: [u8; 2]| {
        let old = be16(p, off);
        if old == new {
            return;
        }
        l4_csum(p, csum::Update::Two(old, new));
        store(p, off, new);
    };
    // An echo's identifier stands where a port would, for either end.
    let (sport_off, dport_off) = if icmp { (l4 + 4, l4 + 4) } else { (l4, l4 + 2) };
    if entry.flags & CT_F_SNAT != 0 {
        addr(p, A::SRC, entry.nat_src);
        port(p, sport_off, entry.nat_sport);
    }
    let mut dst = flow.key.dst;
    if entry.flags & CT_F_DNAT != 0 {
        addr(p, A::DST, entry.nat_dst);
        port(p, dport_off, entry.nat_dport);
        dst = entry.nat_dst;
    }
    dst
}

impl Model {
    /// If the packet is an ICMP error of its family (IPv4: unreachable, time exceeded;
    /// ICMPv6: unreachable, packet too big, time exceeded, parameter problem) quoting a
    /// flow netpath translated, rewrites it as that flow's packets are rewritten: our
    /// side's address outside, our side's address and port in the quote; returns its new
    /// (source, destination). Only fixed headers, outer and quoted, are looked at (IPv4
    /// options or IPv6 extension headers: left alone). The entry is found (in either
    /// table) but not counted: an error is no packet of its flow.
    pub(super) fn icmp_error<A: Addr>(
        &mut self,
        p: &mut [u8],
        dir: Direction,
    ) -> Result<Option<(A, A)>, Reason> {
        let node_ip = A::node_ip(self);
        let Some(icmp) = A::icmp_error_at(p, dir, node_ip)? else { return Ok(None) };
        if !A::ICMP_ERRORS.contains(&p[icmp]) {
            return Ok(None);
        }
        let inner = icmp + 8;
        let Some(il4) = A::quoted_header_len(p, inner).map(|len| inner + len) else { return Ok(None) };
        if p.len() < il4 + 8 {
            return Ok(None);
        }
        // The quoted header's fields, at the offsets the outer one has them.
        let at = |off: usize| inner + off - IP;
        let (src, dst) = (A::read(p, A::SRC), A::read(p, A::DST));
        let (iproto, isrc, idst) = (p[inner + A::PROTO], A::read(p, at(A::SRC)), A::read(p, at(A::DST)));
        // Going in, the quote is a packet the node sent (our side is its source); going
        // out, one the container received (our side is its destination).
        let (local, outer_off, quoted_local, inner_off) = match dir {
            Direction::ToContainer => (dst, A::DST, isrc, at(A::SRC)),
            Direction::FromContainer => (src, A::SRC, idst, at(A::DST)),
        };
        if quoted_local != local || (dir == Direction::ToContainer && local != node_ip) {
            return Ok(None);
        }
        // The quote reversed is our side's entry: the reply entry going in, the
        // container's own going out.
        let reversed = Tuple {
            src: idst,
            dst: isrc,
            sport: be16(p, il4 + 2),
            dport: be16(p, il4),
            proto: iproto,
            _pad: [0; 3],
        };
        let (key, port_off) = match (iproto, dir) {
            (TCP | UDP, Direction::ToContainer) => (reversed, il4),
            (TCP | UDP, Direction::FromContainer) => (reversed, il4 + 2),
            // An echo request the node sent for a container: its identifier is the "port".
            (proto, Direction::ToContainer) if proto == A::ICMP && p[il4] == A::ECHO_REQUEST => {
                (Tuple { sport: [0; 2], dport: be16(p, il4 + 4), ..reversed }, il4 + 4)
            }
            _ => return Ok(None),
        };
        let Some(entry) = A::ct(self).entries.get(&key).copied() else { return Ok(None) };
        let (new_ip, new_port) = match dir {
            Direction::ToContainer if entry.flags & CT_F_DNAT != 0 => (entry.nat_dst, entry.nat_dport),
            Direction::FromContainer if entry.flags & CT_F_SNAT != 0 => (entry.nat_src, entry.nat_sport),
            _ => return Ok(None),
        };
        // Every change enters the error's checksum, even one that changes nothing (the
        // helpers run regardless, and may turn 0xffff into 0x0000).
        let icmp_csum = icmp + 2;
        let error_csum =
            move |p: &mut [u8], u: csum::Update| store(p, icmp_csum, u.apply(be16(p, icmp_csum)));
        // The outer address: IPv4's header checksum (ICMP has no pseudo-header), ICMPv6's
        // checksum through its pseudo-header.
        A::rewrite(p, outer_off, new_ip, false, &error_csum);
        A::rewrite_quoted(p, inner, inner_off, new_ip, &error_csum);
        // The quoted L4 checksum stays: only 8 bytes are quoted, nobody can verify it.
        let old_port = be16(p, port_off);
        error_csum(p, csum::Update::Two(old_port, new_port));
        store(p, port_off, new_port);
        Ok(Some(match dir {
            Direction::ToContainer => (src, new_ip),
            Direction::FromContainer => (new_ip, dst),
        }))
    }
}
