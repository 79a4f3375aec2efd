//! Rewriting addresses and ports with incremental checksum updates.
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use netpath_common::{
    conntrack::{CT_F_DNAT, CT_F_SNAT},
    CtEntry, Reason,
};

use crate::{
    flow::Flow,
    headers::{
        icmp, l4, tcp, udp, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPV4_CSUM_OFF, IPV4_DST_OFF, IPV4_SRC_OFF,
    },
    packet::OrMalformed,
};

/// Applies `entry`'s rewrite to the packet described by `flow`; returns the destination
/// address the packet has afterwards.
#[inline(always)]
pub fn apply(ctx: &TcContext, flow: &Flow, entry: &CtEntry) -> Result<[u8; 4], Reason> {
    let (csum_off, l4_flags) = match flow.key.proto {
        IPPROTO_TCP => (flow.l4_off + tcp::CHECK, BPF_F_PSEUDO_HDR as u64),
        // UDP checksum 0 means "none": keep it 0, and never produce 0 from a real one.
        IPPROTO_UDP => (flow.l4_off + udp::CHECK, (BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0) as u64),
        // ICMP's checksum covers no pseudo-header: addresses don't enter it.
        IPPROTO_ICMP => (flow.l4_off + icmp::CHECK, 0),
        _ => return Err(Reason::DropUnsupportedProtocol),
    };
    let pseudo = flow.key.proto != IPPROTO_ICMP;
    let mut dst = flow.key.dst;
    if entry.flags & CT_F_SNAT != 0 {
        rewrite_addr(ctx, IPV4_SRC_OFF, flow.key.src, entry.nat_src, csum_off, l4_flags, pseudo)?;
        // ICMP echo: a request carries its identifier where a port would be.
        let port_off = flow.l4_off + if flow.key.proto == IPPROTO_ICMP { icmp::ECHO_ID } else { l4::SPORT };
        rewrite_port(ctx, port_off, entry.nat_sport, csum_off, l4_flags)?;
    }
    if entry.flags & CT_F_DNAT != 0 {
        rewrite_addr(ctx, IPV4_DST_OFF, flow.key.dst, entry.nat_dst, csum_off, l4_flags, pseudo)?;
        let port_off = flow.l4_off + if flow.key.proto == IPPROTO_ICMP { icmp::ECHO_ID } else { l4::DPORT };
        rewrite_port(ctx, port_off, entry.nat_dport, csum_off, l4_flags)?;
        dst = entry.nat_dst;
    }
    Ok(dst)
}

#[inline(always)]
fn rewrite_addr(
    ctx: &TcContext,
    off: usize,
    old: [u8; 4],
    new: [u8; 4],
    l4_csum_off: usize,
    l4_flags: u64,
    pseudo: bool,
) -> Result<(), Reason> {
    if old == new {
        return Ok(());
    }
    let (o, n) = (u32::from_ne_bytes(old) as u64, u32::from_ne_bytes(new) as u64);
    if pseudo {
        ctx.l4_csum_replace(l4_csum_off, o, n, l4_flags | 4).or_malformed()?;
    }
    ctx.l3_csum_replace(IPV4_CSUM_OFF, o, n, 4).or_malformed()?;
    ctx.store(off, &new, 0).or_malformed()
}

#[inline(always)]
fn rewrite_port(
    ctx: &TcContext,
    off: usize,
    new: [u8; 2],
    l4_csum_off: usize,
    l4_flags: u64,
) -> Result<(), Reason> {
    // The checksum update needs the field's value, not the tuple's: an ICMP echo has one
    // identifier, which the tuple holds as the source port of a request but as the
    // destination port of a reply, and a container's reply is masqueraded as a source.
    let old: [u8; 2] = ctx.load(off).or_malformed()?;
    if old == new {
        return Ok(());
    }
    let (o, n) = (u16::from_ne_bytes(old) as u64, u16::from_ne_bytes(new) as u64);
    // The pseudo-header flag is for address changes only.
    let flags = (l4_flags & !(BPF_F_PSEUDO_HDR as u64)) | 2;
    ctx.l4_csum_replace(l4_csum_off, o, n, flags).or_malformed()?;
    ctx.store(off, &new, 0).or_malformed()
}
