//! ICMP errors about translated flows (destination unreachable, fragmentation needed,
//! time exceeded) arrive addressed to the node. They are translated like the flow they
//! quote, the quoted header included, so the container's socket sees them: port
//! unreachable becomes ECONNREFUSED, fragmentation needed a path-MTU update.
use aya_ebpf::{helpers::generated::bpf_ktime_get_ns, programs::TcContext};
use netpath_common::{conntrack::CT_F_DNAT, CtKey, NodeConfig, Reason};
use network_types::ip::Ipv4Hdr;

use crate::{
    flow::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IP_OFF},
    maps::CONNTRACK,
    packet::ptr_at,
};

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_ECHO_REQUEST: u8 = 8;

/// If the packet is an ICMP error quoting a flow netpath translated, rewrites it for
/// the container and returns the container's address; `Ok(None)` when it is not one.
#[inline(always)]
pub fn translate(ctx: &TcContext, cfg: &NodeConfig) -> Result<Option<[u8; 4]>, Reason> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, IP_OFF).map_err(|_| Reason::DropMalformed)?;
    // SAFETY: bounds-checked by ptr_at.
    let (vihl, proto, dst) = unsafe { ((*ip).vihl, (*ip).proto as u8, (*ip).dst_addr) };
    if proto != IPPROTO_ICMP || dst != cfg.node_ip {
        return Ok(None);
    }
    let ihl = (vihl & 0x0f) as usize;
    if ihl < 5 {
        return Ok(None);
    }
    let icmp_off = IP_OFF + ihl * 4;
    let icmp: *const [u8; 8] = ptr_at(ctx, icmp_off).map_err(|_| Reason::DropMalformed)?;
    // SAFETY: bounds-checked by ptr_at.
    let ty = unsafe { (*icmp)[0] };
    if ty != ICMP_DEST_UNREACH && ty != ICMP_TIME_EXCEEDED {
        return Ok(None);
    }
    // The quoted packet: the node's own header (no options) and its first 8 bytes.
    let inner_off = icmp_off + 8;
    let inner: *const Ipv4Hdr = match ptr_at(ctx, inner_off) {
        Ok(p) => p,
        Err(()) => return Ok(None),
    };
    // SAFETY: bounds-checked by ptr_at.
    let (ivihl, iproto, isrc, idst) =
        unsafe { ((*inner).vihl, (*inner).proto as u8, (*inner).src_addr, (*inner).dst_addr) };
    if ivihl & 0x0f != 5 || isrc != cfg.node_ip {
        return Ok(None);
    }
    let il4_off = inner_off + 20;
    let il4: *const [u8; 8] = match ptr_at(ctx, il4_off) {
        Ok(p) => p,
        Err(()) => return Ok(None),
    };
    // SAFETY: bounds-checked by ptr_at.
    let il4 = unsafe { *il4 };
    // The key a reply to the quoted packet would have: the flow's entry for this side.
    let (key, port_off) = match iproto {
        IPPROTO_TCP | IPPROTO_UDP => (
            CtKey {
                src: idst,
                dst: isrc,
                sport: [il4[2], il4[3]],
                dport: [il4[0], il4[1]],
                proto: iproto,
                _pad: [0; 3],
            },
            il4_off,
        ),
        IPPROTO_ICMP if il4[0] == ICMP_ECHO_REQUEST => (
            CtKey {
                src: idst,
                dst: isrc,
                sport: [0; 2],
                dport: [il4[4], il4[5]],
                proto: iproto,
                _pad: [0; 3],
            },
            il4_off + 4,
        ),
        _ => return Ok(None),
    };
    let Some(entry) = CONNTRACK.get_ptr_mut(&key) else { return Ok(None) };
    // SAFETY: map value valid for the program's run; the timestamp is advisory.
    let entry = unsafe {
        (*entry).last_seen_ns = bpf_ktime_get_ns();
        *entry
    };
    if entry.flags & CT_F_DNAT == 0 {
        return Ok(None);
    }
    let (new_ip, new_port) = (entry.nat_dst, entry.nat_dport);
    let icmp_csum = icmp_off + 2;
    let err = |_| Reason::DropMalformed;
    let as32 = |a: [u8; 4]| u32::from_ne_bytes(a) as u64;
    let as16 = |p: [u8; 2]| u16::from_ne_bytes(p) as u64;

    // Outer destination: the IP header checksum only (ICMP has no pseudo-header).
    ctx.l3_csum_replace(IP_OFF + 10, as32(dst), as32(new_ip), 4).map_err(err)?;
    ctx.store(IP_OFF + 16, &new_ip, 0).map_err(err)?;
    // Quoted source address: its own header checksum, and the ICMP checksum covering both.
    let icsum_off = inner_off + 10;
    let old_icsum: [u8; 2] = ctx.load(icsum_off).map_err(err)?;
    ctx.l3_csum_replace(icsum_off, as32(isrc), as32(new_ip), 4).map_err(err)?;
    let new_icsum: [u8; 2] = ctx.load(icsum_off).map_err(err)?;
    ctx.l4_csum_replace(icmp_csum, as32(isrc), as32(new_ip), 4).map_err(err)?;
    ctx.l4_csum_replace(icmp_csum, as16(old_icsum), as16(new_icsum), 2).map_err(err)?;
    ctx.store(inner_off + 12, &new_ip, 0).map_err(err)?;
    // Quoted source port (or echo identifier).
    let old_port: [u8; 2] = ctx.load(port_off).map_err(err)?;
    ctx.l4_csum_replace(icmp_csum, as16(old_port), as16(new_port), 2).map_err(err)?;
    ctx.store(port_off, &new_port, 0).map_err(err)?;
    Ok(Some(new_ip))
}
