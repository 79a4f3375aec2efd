//! Rewriting addresses and ports with incremental checksum updates.
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_F_RECOMPUTE_CSUM},
    programs::TcContext,
};
use netpath_common::{
    conntrack::{NatEntry, CT_F_DNAT, CT_F_SNAT},
    Reason,
};

use crate::{
    family::Addr,
    flow::Flow,
    headers::{icmp, l4, tcp, udp, IPPROTO_TCP, IPPROTO_UDP},
    packet::OrMalformed,
};

/// Applies `entry`'s rewrite to the packet described by `flow`; returns the destination
/// address the packet has afterwards.
#[inline(always)]
pub fn apply<A: Addr>(ctx: &TcContext, flow: &Flow<A>, entry: &NatEntry<A>) -> Result<A, Reason> {
    let icmp = flow.key.proto == A::ICMP;
    let (csum_off, l4_flags) = match flow.key.proto {
        IPPROTO_TCP => (flow.l4_off + tcp::CHECK, BPF_F_PSEUDO_HDR as u64),
        // UDP checksum 0 means "none": keep it 0, and never produce 0 from a real one.
        IPPROTO_UDP => (flow.l4_off + udp::CHECK, (BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0) as u64),
        // ICMP's checksum covers no pseudo-header: addresses don't enter it (ICMPv6's
        // does: the family's rewrite knows).
        _ if icmp => (flow.l4_off + icmp::CHECK, 0),
        _ => return Err(Reason::DropUnsupportedProtocol),
    };
    let pseudo = !icmp;
    let mut dst = flow.key.dst;
    if entry.flags & CT_F_SNAT != 0 {
        rewrite_addr(ctx, A::SRC_OFF, flow.key.src, entry.nat_src, csum_off, l4_flags, pseudo)?;
        // ICMP echo: a request carries its identifier where a port would be.
        let port_off = flow.l4_off + if icmp { icmp::ECHO_ID } else { l4::SPORT };
        rewrite_port(ctx, port_off, entry.nat_sport, csum_off, l4_flags)?;
    }
    if entry.flags & CT_F_DNAT != 0 {
        rewrite_addr(ctx, A::DST_OFF, flow.key.dst, entry.nat_dst, csum_off, l4_flags, pseudo)?;
        let port_off = flow.l4_off + if icmp { icmp::ECHO_ID } else { l4::DPORT };
        rewrite_port(ctx, port_off, entry.nat_dport, csum_off, l4_flags)?;
        dst = entry.nat_dst;
    }
    Ok(dst)
}

#[inline(always)]
fn rewrite_addr<A: Addr>(
    ctx: &TcContext,
    off: usize,
    old: A,
    new: A,
    l4_csum_off: usize,
    l4_flags: u64,
    pseudo: bool,
) -> Result<(), Reason> {
    if old == new {
        return Ok(());
    }
    A::rewrite(ctx, off, old, new, l4_csum_off, l4_flags, pseudo)
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
    // A UDP datagram without a checksum (0, kept 0 by the helper) has no field that
    // absorbs the port's change: in CHECKSUM_COMPLETE (a NIC's skb) skb->csum follows
    // the store instead.
    let unsummed = l4_flags & BPF_F_MARK_MANGLED_0 as u64 != 0
        && ctx.load::<[u8; 2]>(l4_csum_off).or_malformed()? == [0, 0];
    // The pseudo-header flag is for address changes only.
    let flags = (l4_flags & !(BPF_F_PSEUDO_HDR as u64)) | 2;
    ctx.l4_csum_replace(l4_csum_off, o, n, flags).or_malformed()?;
    ctx.store(off, &new, if unsummed { BPF_F_RECOMPUTE_CSUM as u64 } else { 0 }).or_malformed()
}
