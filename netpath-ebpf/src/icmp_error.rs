//! ICMP errors about translated flows (destination unreachable, fragmentation needed,
//! time exceeded), in both directions. They are translated like the flow they quote,
//! the quoted header included:
//! - arriving at the node about a packet the node sent for a container, so the
//!   container's socket sees them (port unreachable becomes ECONNREFUSED, fragmentation
//!   needed a path-MTU update);
//! - sent by a container about a packet it received through NAT, so the remote peer
//!   sees an error about the packet it sent (to the node address and published or
//!   masquerade port), not one quoting a pod address it has never heard of.
use aya_ebpf::{helpers::generated::bpf_ktime_get_ns, programs::TcContext};
use netpath_common::{
    conntrack::{CT_F_DNAT, CT_F_SNAT},
    CtKey, NodeConfig, Reason,
};
use network_types::ip::Ipv4Hdr;

use crate::{
    conntrack,
    headers::{
        icmp, ipv4, l4, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPV4_CSUM_OFF, IPV4_DST_OFF, IPV4_SRC_OFF,
        IP_OFF,
    },
    packet::{header, ptr_at, OrMalformed},
};

/// Which way the error travels, and so which end of the flow it speaks for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the outside to the node, about a packet the node sent for a container.
    ToContainer,
    /// From a container, about a packet it received through the NAT.
    FromContainer,
}

/// Errors with IP options (outer or quoted) are left alone: they are rare, and fixed
/// offsets keep the program verifiable on older kernels, whose verifier loses track of
/// packet pointers built from a variable header length here.
const ICMP_OFF: usize = IP_OFF + ipv4::MIN_LEN;
/// The quoted packet: a header without options and the first 8 bytes of its payload.
const INNER_OFF: usize = ICMP_OFF + icmp::LEN;
const INNER_L4_OFF: usize = INNER_OFF + ipv4::MIN_LEN;
const ICMP_CSUM_OFF: usize = ICMP_OFF + icmp::CHECK;

/// An ICMP error about a translated flow: where our side's address and port are, what
/// they become, and the outer addresses.
struct Quoted {
    /// Our side's address as the error carries it (outer and quoted alike).
    local: [u8; 4],
    outer_addr_off: usize,
    inner_addr_off: usize,
    port_off: usize,
    new_ip: [u8; 4],
    new_port: [u8; 2],
    src: [u8; 4],
    dst: [u8; 4],
}

/// If the packet is an ICMP error quoting a flow netpath translated, rewrites it and
/// returns its new (source, destination); `Ok(None)` when it is not one.
#[inline(always)]
pub fn translate(
    ctx: &TcContext,
    cfg: &NodeConfig,
    dir: Direction,
) -> Result<Option<([u8; 4], [u8; 4])>, Reason> {
    let Some(q) = quoted_flow(ctx, cfg, dir)? else { return Ok(None) };
    rewrite(ctx, &q)?;
    Ok(Some(match dir {
        Direction::ToContainer => (q.src, q.new_ip),
        Direction::FromContainer => (q.new_ip, q.dst),
    }))
}

/// Finds the translated flow an ICMP error quotes, and what our side becomes.
#[inline(always)]
fn quoted_flow(ctx: &TcContext, cfg: &NodeConfig, dir: Direction) -> Result<Option<Quoted>, Reason> {
    let ip: *const Ipv4Hdr = header(ctx, IP_OFF)?;
    // SAFETY: bounds-checked by header().
    let (vihl, proto, src, dst) = unsafe { ((*ip).vihl, (*ip).proto as u8, (*ip).src_addr, (*ip).dst_addr) };
    if proto != IPPROTO_ICMP || (vihl & 0x0f) as usize * 4 != ipv4::MIN_LEN {
        return Ok(None);
    }
    // The side of the flow whose address the error carries: the node's when it comes
    // in, the container's when it goes out.
    let (local, outer_addr_off) = match dir {
        Direction::ToContainer => (dst, IPV4_DST_OFF),
        Direction::FromContainer => (src, IPV4_SRC_OFF),
    };
    if dir == Direction::ToContainer && dst != cfg.node_ip {
        return Ok(None);
    }
    let msg: *const [u8; icmp::LEN] = header(ctx, ICMP_OFF)?;
    // SAFETY: bounds-checked by header().
    let ty = unsafe { (*msg)[0] };
    if ty != icmp::DEST_UNREACH && ty != icmp::TIME_EXCEEDED {
        return Ok(None);
    }
    // Going in, the quoted packet is one the node sent (our side is its source); going
    // out, one the container received (our side is its destination).
    let Ok(inner) = ptr_at::<Ipv4Hdr, _>(ctx, INNER_OFF) else { return Ok(None) };
    // SAFETY: bounds-checked by ptr_at.
    let (ivihl, iproto, isrc, idst) =
        unsafe { ((*inner).vihl, (*inner).proto as u8, (*inner).src_addr, (*inner).dst_addr) };
    let (quoted_local, inner_addr_off) = match dir {
        Direction::ToContainer => (isrc, INNER_OFF + ipv4::SRC),
        Direction::FromContainer => (idst, INNER_OFF + ipv4::DST),
    };
    if (ivihl & 0x0f) as usize * 4 != ipv4::MIN_LEN || quoted_local != local {
        return Ok(None);
    }
    let Ok(il4) = ptr_at::<[u8; 8], _>(ctx, INNER_L4_OFF) else { return Ok(None) };
    // SAFETY: bounds-checked by ptr_at.
    let il4 = unsafe { *il4 };
    let port = |off: usize| [il4[off], il4[off + 1]];
    // The quoted packet reversed is the tuple of the flow's entry for our side: the
    // reply entry going in, the entry of the container's own packets going out.
    let quoted_reversed = CtKey {
        src: idst,
        dst: isrc,
        sport: port(l4::DPORT),
        dport: port(l4::SPORT),
        proto: iproto,
        _pad: [0; 3],
    };
    // Our side's port: the quoted source going in, the quoted destination going out.
    let (key, port_off) = match (iproto, dir) {
        (IPPROTO_TCP | IPPROTO_UDP, Direction::ToContainer) => (quoted_reversed, INNER_L4_OFF + l4::SPORT),
        (IPPROTO_TCP | IPPROTO_UDP, Direction::FromContainer) => (quoted_reversed, INNER_L4_OFF + l4::DPORT),
        // An echo request the node sent for a container: the identifier is its "port".
        (IPPROTO_ICMP, Direction::ToContainer) if il4[0] == icmp::ECHO_REQUEST => (
            CtKey { sport: [0; 2], dport: port(icmp::ECHO_ID), ..quoted_reversed },
            INNER_L4_OFF + icmp::ECHO_ID,
        ),
        _ => return Ok(None),
    };
    let Some(entry) = conntrack::find(&key) else { return Ok(None) };
    // SAFETY: map value valid for the program's run; the timestamp is advisory.
    let entry = unsafe {
        (*entry).last_seen_ns = bpf_ktime_get_ns();
        *entry
    };
    let (new_ip, new_port) = match dir {
        Direction::ToContainer if entry.flags & CT_F_DNAT != 0 => (entry.nat_dst, entry.nat_dport),
        Direction::FromContainer if entry.flags & CT_F_SNAT != 0 => (entry.nat_src, entry.nat_sport),
        _ => return Ok(None),
    };
    Ok(Some(Quoted { local, outer_addr_off, inner_addr_off, port_off, new_ip, new_port, src, dst }))
}

/// Rewrites our side's address in the outer and the quoted header and its port in the
/// quoted one, with every checksum that covers them.
#[inline(always)]
fn rewrite(ctx: &TcContext, q: &Quoted) -> Result<(), Reason> {
    let as32 = |a: [u8; 4]| u32::from_ne_bytes(a) as u64;
    let as16 = |p: [u8; 2]| u16::from_ne_bytes(p) as u64;
    let (old, new) = (as32(q.local), as32(q.new_ip));
    // Outer address: the IP header checksum only (ICMP has no pseudo-header).
    ctx.l3_csum_replace(IPV4_CSUM_OFF, old, new, 4).or_malformed()?;
    ctx.store(q.outer_addr_off, &q.new_ip, 0).or_malformed()?;
    // Quoted address: its own header checksum, and the ICMP checksum covering both.
    let icsum_off = INNER_OFF + ipv4::CHECK;
    let old_icsum: [u8; 2] = ctx.load(icsum_off).or_malformed()?;
    ctx.l3_csum_replace(icsum_off, old, new, 4).or_malformed()?;
    let new_icsum: [u8; 2] = ctx.load(icsum_off).or_malformed()?;
    ctx.l4_csum_replace(ICMP_CSUM_OFF, old, new, 4).or_malformed()?;
    ctx.l4_csum_replace(ICMP_CSUM_OFF, as16(old_icsum), as16(new_icsum), 2).or_malformed()?;
    ctx.store(q.inner_addr_off, &q.new_ip, 0).or_malformed()?;
    // Quoted port (or echo identifier). The quoted L4 checksum is left as it was: only
    // 8 bytes of the segment are quoted, so no receiver can verify it.
    let old_port: [u8; 2] = ctx.load(q.port_off).or_malformed()?;
    ctx.l4_csum_replace(ICMP_CSUM_OFF, as16(old_port), as16(q.new_port), 2).or_malformed()?;
    ctx.store(q.port_off, &q.new_port, 0).or_malformed()
}
