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
    flow::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IP_OFF},
    packet::ptr_at,
};

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_ECHO_REQUEST: u8 = 8;

/// Which way the error travels, and so which end of the flow it speaks for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the outside to the node, about a packet the node sent for a container.
    ToContainer,
    /// From a container, about a packet it received through the NAT.
    FromContainer,
}

/// If the packet is an ICMP error quoting a flow netpath translated, rewrites it and
/// returns its new (source, destination); `Ok(None)` when it is not one.
#[inline(always)]
pub fn translate(
    ctx: &TcContext,
    cfg: &NodeConfig,
    dir: Direction,
) -> Result<Option<([u8; 4], [u8; 4])>, Reason> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, IP_OFF).map_err(|_| Reason::DropMalformed)?;
    // SAFETY: bounds-checked by ptr_at.
    let (vihl, proto, src, dst) = unsafe { ((*ip).vihl, (*ip).proto as u8, (*ip).src_addr, (*ip).dst_addr) };
    if proto != IPPROTO_ICMP {
        return Ok(None);
    }
    // The side of the flow whose address the error carries: the node's when it comes
    // in, the container's when it goes out.
    let (local, outer_addr_off) = match dir {
        Direction::ToContainer => (dst, IP_OFF + 16),
        Direction::FromContainer => (src, IP_OFF + 12),
    };
    if dir == Direction::ToContainer && dst != cfg.node_ip {
        return Ok(None);
    }
    // Errors with IP options (outer or quoted) are left alone: they are rare, and fixed
    // offsets keep the program verifiable on older kernels, whose verifier loses track
    // of packet pointers built from a variable header length here.
    if vihl & 0x0f != 5 {
        return Ok(None);
    }
    let icmp_off = IP_OFF + 20;
    let icmp: *const [u8; 8] = ptr_at(ctx, icmp_off).map_err(|_| Reason::DropMalformed)?;
    // SAFETY: bounds-checked by ptr_at.
    let ty = unsafe { (*icmp)[0] };
    if ty != ICMP_DEST_UNREACH && ty != ICMP_TIME_EXCEEDED {
        return Ok(None);
    }
    // The quoted packet: a header without options and its first 8 bytes. Going in it is
    // a packet the node sent (our side is its source); going out, one the container
    // received (our side is its destination).
    let inner_off = icmp_off + 8;
    let inner: *const Ipv4Hdr = match ptr_at(ctx, inner_off) {
        Ok(p) => p,
        Err(()) => return Ok(None),
    };
    // SAFETY: bounds-checked by ptr_at.
    let (ivihl, iproto, isrc, idst) =
        unsafe { ((*inner).vihl, (*inner).proto as u8, (*inner).src_addr, (*inner).dst_addr) };
    let (quoted_local, inner_addr_off) = match dir {
        Direction::ToContainer => (isrc, inner_off + 12),
        Direction::FromContainer => (idst, inner_off + 16),
    };
    if ivihl & 0x0f != 5 || quoted_local != local {
        return Ok(None);
    }
    let il4_off = inner_off + 20;
    let il4: *const [u8; 8] = match ptr_at(ctx, il4_off) {
        Ok(p) => p,
        Err(()) => return Ok(None),
    };
    // SAFETY: bounds-checked by ptr_at.
    let il4 = unsafe { *il4 };
    // The quoted packet reversed is the tuple of the flow's entry for our side: the
    // reply entry going in, the entry of the container's own packets going out.
    let quoted_reversed = CtKey {
        src: idst,
        dst: isrc,
        sport: [il4[2], il4[3]],
        dport: [il4[0], il4[1]],
        proto: iproto,
        _pad: [0; 3],
    };
    // Our side's port: the quoted source going in, the quoted destination going out.
    let (key, port_off) = match (iproto, dir) {
        (IPPROTO_TCP | IPPROTO_UDP, Direction::ToContainer) => (quoted_reversed, il4_off),
        (IPPROTO_TCP | IPPROTO_UDP, Direction::FromContainer) => (quoted_reversed, il4_off + 2),
        // An echo request the node sent for a container: the identifier is its "port".
        (IPPROTO_ICMP, Direction::ToContainer) if il4[0] == ICMP_ECHO_REQUEST => {
            (CtKey { sport: [0; 2], dport: [il4[4], il4[5]], ..quoted_reversed }, il4_off + 4)
        }
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
    let icmp_csum = icmp_off + 2;
    let err = |_| Reason::DropMalformed;
    let as32 = |a: [u8; 4]| u32::from_ne_bytes(a) as u64;
    let as16 = |p: [u8; 2]| u16::from_ne_bytes(p) as u64;

    // Outer address: the IP header checksum only (ICMP has no pseudo-header).
    ctx.l3_csum_replace(IP_OFF + 10, as32(local), as32(new_ip), 4).map_err(err)?;
    ctx.store(outer_addr_off, &new_ip, 0).map_err(err)?;
    // Quoted address: its own header checksum, and the ICMP checksum covering both.
    let icsum_off = inner_off + 10;
    let old_icsum: [u8; 2] = ctx.load(icsum_off).map_err(err)?;
    ctx.l3_csum_replace(icsum_off, as32(local), as32(new_ip), 4).map_err(err)?;
    let new_icsum: [u8; 2] = ctx.load(icsum_off).map_err(err)?;
    ctx.l4_csum_replace(icmp_csum, as32(local), as32(new_ip), 4).map_err(err)?;
    ctx.l4_csum_replace(icmp_csum, as16(old_icsum), as16(new_icsum), 2).map_err(err)?;
    ctx.store(inner_addr_off, &new_ip, 0).map_err(err)?;
    // Quoted port (or echo identifier). The quoted L4 checksum is left as it was: only
    // 8 bytes of the segment are quoted, so no receiver can verify it.
    let old_port: [u8; 2] = ctx.load(port_off).map_err(err)?;
    ctx.l4_csum_replace(icmp_csum, as16(old_port), as16(new_port), 2).map_err(err)?;
    ctx.store(port_off, &new_port, 0).map_err(err)?;
    Ok(Some(match dir {
        Direction::ToContainer => (src, new_ip),
        Direction::FromContainer => (new_ip, dst),
    }))
}
