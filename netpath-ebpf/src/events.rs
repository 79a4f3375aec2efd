//! Trace events for `netpath trace`: off, they cost one array lookup per packet; on,
//! each packet's tuple is snapshotted as it arrives, filtered in the kernel, and the
//! matching ones go to user space through a ring buffer.
use aya_ebpf::{
    helpers::generated::{bpf_ktime_get_ns, bpf_skb_load_bytes},
    programs::TcContext,
};
use netpath_common::{trace::FAMILY_IPV6, Reason, TraceEvent, TraceFilter};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    counters,
    headers::{ipv6, l4, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPV6_L4_OFF, IP_OFF},
    maps::{EVENTS, TRACE_FILTER, TRACE_SCRATCH},
    packet::{ptr_at, PacketData},
};

/// The filter of the trace that runs, if one does. A reference into the map rather
/// than a copy: off, a packet pays the lookup (inlined for an array) and one load.
#[inline(always)]
pub fn filter() -> Option<&'static TraceFilter> {
    TRACE_FILTER.get(0).filter(|f| f.enabled != 0)
}

/// When tracing, snapshots the packet into this CPU's scratch slot. The snapshot lives
/// in a map, not on the stack: the verifier does not track map contents, so the many
/// shapes a snapshot can take do not multiply the states of the whole program; and it is
/// written and sent in place, never copied through the stack (older kernels allow
/// 512 bytes of stack for the whole call chain, and struct copies become calls).
#[inline(always)]
pub fn begin<C: PacketData>(filter: Option<&TraceFilter>, ctx: &C, hop: u8, ifindex: u32) {
    begin_with(filter, ctx, hop, ifindex, snapshot::<C>)
}

/// [`begin`] in a program that sees IPv6 only.
#[inline(always)]
pub fn begin6(filter: Option<&TraceFilter>, ctx: &TcContext, hop: u8, ifindex: u32) {
    begin_with(filter, ctx, hop, ifindex, snapshot6)
}

#[inline(always)]
fn begin_with<C>(
    filter: Option<&TraceFilter>,
    ctx: &C,
    hop: u8,
    ifindex: u32,
    snap: impl Fn(*mut TraceEvent, &C, u8, u32),
) {
    if filter.is_none() {
        return;
    }
    if let Some(slot) = TRACE_SCRATCH.get_ptr_mut(0) {
        snap(slot, ctx, hop, ifindex);
        // SAFETY: per-CPU slot, no other writer while this program runs on this CPU.
        unsafe { (*slot).node = [0; 4] };
    }
    if let Some(out) = TRACE_SCRATCH.get_ptr_mut(1) {
        // SAFETY: as above. No egress recorded yet for this packet.
        unsafe { (*out).hop = 0 };
    }
}

/// Notes the other node of a packet that arrived through the overlay (`from-tunnel`).
#[inline(always)]
pub fn arrived_from_node(node: [u8; 4]) {
    if let Some(slot) = TRACE_SCRATCH.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, no other writer while this program runs on this CPU.
        unsafe { (*slot).node = node };
    }
}

/// Notes that the packet leaves through `hop` (`ifindex`). Two stores, traced or not:
/// asking whether a trace runs, in every inlined copy, grew container_path past what
/// LLVM inlines into the entry. The snapshot of the packet as it leaves is taken by
/// [`emit`] at the end of the program, from the packet as it then is (after NAT), rather than here, deep in the
/// forwarding paths, where each inlined copy would cost stack and verifier work.
#[inline(always)]
pub fn egress(hop: u8, ifindex: u32) {
    egress_to_node(hop, ifindex, [0; 4]);
}

/// [`egress`] into the overlay, towards the node at `node` on the underlay.
#[inline(always)]
pub fn egress_to_node(hop: u8, ifindex: u32, node: [u8; 4]) {
    if let Some(out) = TRACE_SCRATCH.get_ptr_mut(1) {
        // SAFETY: per-CPU slot, no other writer while this program runs on this CPU.
        unsafe {
            (*out).hop = hop;
            (*out).ifindex = ifindex;
            (*out).node = node;
        }
    }
}

/// Writes into `ev` the packet as it is now at `hop`. Best effort: fields that cannot
/// be parsed stay zero.
#[inline(always)]
fn snapshot<C: PacketData>(ev: *mut TraceEvent, ctx: &C, hop: u8, ifindex: u32) {
    // SAFETY: `ev` is this CPU's scratch slot, valid for the program's run, and no other
    // writer runs on this CPU meanwhile. Field by field: no struct on the stack.
    let ev = unsafe { &mut *ev };
    ev.hop = hop;
    ev.ifindex = ifindex;
    ev.len = (ctx.data_end() - ctx.data()) as u32;
    ev.src = [0; 4];
    ev.dst = [0; 4];
    ev.sport = [0; 2];
    ev.dport = [0; 2];
    ev.proto = 0;
    ev.family = 0;
    let Ok(eth) = ptr_at::<EthHdr, C>(ctx, 0) else { return };
    // SAFETY: bounds-checked by ptr_at.
    if unsafe { (*eth).ether_type } != 0x0800u16.to_be() {
        return;
    }
    let Ok(ip) = ptr_at::<Ipv4Hdr, C>(ctx, IP_OFF) else { return };
    // SAFETY: bounds-checked by ptr_at.
    let (vihl, proto) = unsafe {
        ev.src = (*ip).src_addr;
        ev.dst = (*ip).dst_addr;
        ((*ip).vihl, (*ip).proto as u8)
    };
    ev.proto = proto;
    let l4_off = IP_OFF + ((vihl & 0x0f) as usize) * 4;
    if let Ok(head) = ptr_at::<[u8; 8], C>(ctx, l4_off) {
        // SAFETY: bounds-checked by ptr_at.
        let head = unsafe { *head };
        match proto {
            IPPROTO_TCP | IPPROTO_UDP => {
                ev.sport = [head[l4::SPORT], head[l4::SPORT + 1]];
                ev.dport = [head[l4::DPORT], head[l4::DPORT + 1]];
            }
            // ICMP: type and code where ports would be, for the reader.
            IPPROTO_ICMP => {
                ev.sport = [0, head[0]];
                ev.dport = [0, head[1]];
            }
            _ => {}
        }
    }
}

/// IPv6's [`snapshot`], for the programs that see IPv6 only: the fixed header, and the
/// ports (ICMPv6's type and code) when the transport header follows it at once.
#[inline(always)]
fn snapshot6(ev: *mut TraceEvent, ctx: &TcContext, hop: u8, ifindex: u32) {
    // SAFETY: as in snapshot.
    let ev = unsafe { &mut *ev };
    ev.hop = hop;
    ev.ifindex = ifindex;
    ev.len = ctx.len();
    ev.src = [0; 4];
    ev.dst = [0; 4];
    ev.sport = [0; 2];
    ev.dport = [0; 2];
    ev.proto = 0;
    ev.family = 0;
    let Ok(fixed) = ptr_at::<[u8; 8], TcContext>(ctx, IP_OFF) else { return };
    // SAFETY: bounds-checked by ptr_at.
    let (version, next) = unsafe { ((*fixed)[0] >> 4, (*fixed)[ipv6::NEXT_HDR]) };
    if version != 6 {
        return;
    }
    // Both addresses (they follow each other, as src6 and dst6 do) straight into the
    // map value: copied byte by byte through registers, they would spill.
    // SAFETY: src6 and dst6 are 32 contiguous bytes of this CPU's slot; constant length.
    let rc = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            (IP_OFF + ipv6::SRC) as u32,
            ev.src6.as_mut_ptr().cast(),
            32,
        )
    };
    if rc != 0 {
        return;
    }
    ev.family = FAMILY_IPV6;
    ev.proto = next;
    if let Ok(head) = ptr_at::<[u8; 4], TcContext>(ctx, IPV6_L4_OFF) {
        // SAFETY: bounds-checked by ptr_at.
        let head = unsafe { *head };
        match next {
            IPPROTO_TCP | IPPROTO_UDP => {
                ev.sport = [head[0], head[1]];
                ev.dport = [head[2], head[3]];
            }
            ipv6::IPPROTO_ICMPV6 => {
                ev.sport = [0, head[0]];
                ev.dport = [0, head[1]];
            }
            _ => {}
        }
    }
}

/// Sends the snapshot taken by [`begin`] and, when the packet was handed on
/// ([`egress`]), one of the packet as it leaves, if the filter wants them; a full ring
/// buffer is counted, not fatal.
#[inline(always)]
pub fn emit<C: PacketData>(filter: Option<&TraceFilter>, ctx: &C, reason: Reason) {
    emit_with(filter, ctx, reason, snapshot::<C>)
}

/// [`emit`] after [`begin6`].
#[inline(always)]
pub fn emit6(filter: Option<&TraceFilter>, ctx: &TcContext, reason: Reason) {
    emit_with(filter, ctx, reason, snapshot6)
}

#[inline(always)]
fn emit_with<C>(
    filter: Option<&TraceFilter>,
    ctx: &C,
    reason: Reason,
    snap: impl Fn(*mut TraceEvent, &C, u8, u32),
) {
    let Some(filter) = filter else { return };
    let (Some(ev), Some(out)) = (TRACE_SCRATCH.get_ptr_mut(0), TRACE_SCRATCH.get_ptr_mut(1)) else { return };
    // SAFETY: per-CPU slots written by begin() and egress() in this same program run.
    let (hop, ifindex) = unsafe { ((*out).hop, (*out).ifindex) };
    let egressed = hop != 0;
    if egressed {
        snap(out, ctx, hop, ifindex);
    }
    // SAFETY: as above.
    let (ev, left) = unsafe { (&mut *ev, &mut *out) };
    ev.reason = reason as u8;
    left.reason = reason as u8;
    let is_drop = reason.is_drop();
    // A packet that matches on either side is shown on both: a filter on the node
    // address finds a masqueraded flow's container side too.
    if !filter.matches(ev, is_drop) && !(egressed && filter.matches(left, is_drop)) {
        return;
    }
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    ev.ts_ns = now;
    if EVENTS.output::<TraceEvent>(ev, 0).is_err() {
        counters::count(Reason::TraceEventsLost, 0);
    }
    if egressed {
        left.ts_ns = now;
        if EVENTS.output::<TraceEvent>(left, 0).is_err() {
            counters::count(Reason::TraceEventsLost, 0);
        }
    }
}
