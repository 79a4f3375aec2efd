//! Rewriting a packet by its conntrack entry, and ICMP errors about translated flows
//! (their quoted header too), with every checksum updated incrementally.
use netpath_common::{
    conntrack::{NatEntry, CT_F_DNAT, CT_F_SNAT},
    CtKey, Reason,
};

use super::{
    csum,
    family::Addr,
    flow::{be16, be32, Flow, ICMP, IP, TCP, UDP},
    Model,
};

const IP_CSUM: usize = IP + 10;
const IP_SRC: usize = IP + 12;
const IP_DST: usize = IP + 16;

/// Which way an ICMP error travels, so which end of the flow it speaks for.
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

/// A packet's (source, destination) after a rewrite.
type Addresses = ([u8; 4], [u8; 4]);

impl Model {
    /// If the packet is an ICMP error (unreachable, time exceeded) quoting a flow netpath
    /// translated, rewrites it as that flow's packets are rewritten, our side's address
    /// outside and our side's address and port in the quote, and returns its new
    /// (source, destination). Errors with IP options, outer or quoted, are left alone.
    pub(super) fn icmp_error(&mut self, p: &mut [u8], dir: Direction) -> Result<Option<Addresses>, Reason> {
        if p.len() < IP + 20 {
            return Err(Reason::DropMalformed);
        }
        let (src, dst) = (be32(p, IP_SRC), be32(p, IP_DST));
        if p[IP + 9] != ICMP {
            return Ok(None);
        }
        let (local, outer_off) = match dir {
            Direction::ToContainer => (dst, IP_DST),
            Direction::FromContainer => (src, IP_SRC),
        };
        if dir == Direction::ToContainer && dst != self.world.config.node_ip {
            return Ok(None);
        }
        if p[IP] & 0x0f != 5 {
            return Ok(None);
        }
        let icmp = IP + 20;
        if p.len() < icmp + 8 {
            return Err(Reason::DropMalformed);
        }
        if p[icmp] != 3 && p[icmp] != 11 {
            return Ok(None);
        }
        let inner = icmp + 8;
        let il4 = inner + 20;
        if p.len() < il4 + 8 || p[inner] & 0x0f != 5 {
            return Ok(None);
        }
        let (iproto, isrc, idst) = (p[inner + 9], be32(p, inner + 12), be32(p, inner + 16));
        let (quoted_local, inner_off) = match dir {
            Direction::ToContainer => (isrc, inner + 12),
            Direction::FromContainer => (idst, inner + 16),
        };
        if quoted_local != local {
            return Ok(None);
        }
        // The quote reversed is our side's entry: the reply entry going in, the
        // container's own going out.
        let reversed = CtKey {
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
            (ICMP, Direction::ToContainer) if p[il4] == 8 => {
                (CtKey { sport: [0; 2], dport: be16(p, il4 + 4), ..reversed }, il4 + 4)
            }
            _ => return Ok(None),
        };
        let Some(entry) = self.ct.get(&key).copied() else { return Ok(None) };
        let (new_ip, new_port) = match dir {
            Direction::ToContainer if entry.flags & CT_F_DNAT != 0 => (entry.nat_dst, entry.nat_dport),
            Direction::FromContainer if entry.flags & CT_F_SNAT != 0 => (entry.nat_src, entry.nat_sport),
            _ => return Ok(None),
        };
        let icmp_csum = icmp + 2;
        store(p, IP_CSUM, csum::replace4(be16(p, IP_CSUM), local, new_ip));
        store(p, outer_off, new_ip);
        // The quoted header's checksum changes with its address, and the ICMP checksum
        // covers both changes.
        let old_icsum = be16(p, inner + 10);
        let new_icsum = csum::replace4(old_icsum, local, new_ip);
        store(p, inner + 10, new_icsum);
        let c = csum::replace4(be16(p, icmp_csum), local, new_ip);
        store(p, icmp_csum, csum::replace2_wide(c, old_icsum, new_icsum));
        store(p, inner_off, new_ip);
        // The quoted L4 checksum stays: only 8 bytes are quoted, nobody can verify it.
        let old_port = be16(p, port_off);
        store(p, icmp_csum, csum::replace2_wide(be16(p, icmp_csum), old_port, new_port));
        store(p, port_off, new_port);
        Ok(Some(match dir {
            Direction::ToContainer => (src, new_ip),
            Direction::FromContainer => (new_ip, dst),
        }))
    }
}
