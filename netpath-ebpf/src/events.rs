//! Trace events for `netpath trace`: off, they cost one array lookup per packet; on,
//! each packet's tuple is snapshotted as it arrives, filtered in the kernel, and the
//! matching ones go to user space through a ring buffer.
use aya_ebpf::helpers::generated::bpf_ktime_get_ns;
use netpath_common::{Reason, TraceEvent, TraceFilter};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    counters,
    flow::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IP_OFF},
    maps::{EVENTS, TRACE_FILTER, TRACE_SCRATCH},
    packet::{ptr_at, PacketData},
};

/// The filter; `enabled` is 0 when no trace runs. A plain value rather than an Option:
/// LLVM leaves the payload of a `None` uninitialised, and the verifier rejects the
/// spill of an uninitialised register.
#[inline(always)]
pub fn filter() -> TraceFilter {
    TRACE_FILTER.get(0).copied().unwrap_or_default()
}

/// When tracing, snapshots the packet into this CPU's scratch slot. The snapshot lives
/// in a map, not on the stack: the verifier does not track map contents, so the many
/// shapes a snapshot can take do not multiply the states of the whole program.
#[inline(always)]
pub fn begin<C: PacketData>(filter: &TraceFilter, ctx: &C, hop: u8, ifindex: u32) {
    if filter.enabled == 0 {
        return;
    }
    if let Some(slot) = TRACE_SCRATCH.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, no other writer while this program runs on this CPU.
        unsafe { *slot = snapshot(ctx, hop, ifindex) };
    }
}

/// The packet as it arrives at `hop`, before any rewrite. Best effort: fields that
/// cannot be parsed stay zero.
#[inline(always)]
fn snapshot<C: PacketData>(ctx: &C, hop: u8, ifindex: u32) -> TraceEvent {
    let mut ev = TraceEvent { hop, ifindex, len: (ctx.data_end() - ctx.data()) as u32, ..Default::default() };
    let Ok(eth) = ptr_at::<EthHdr, C>(ctx, 0) else { return ev };
    // SAFETY: bounds-checked by ptr_at.
    if unsafe { (*eth).ether_type } != 0x0800u16.to_be() {
        return ev;
    }
    let Ok(ip) = ptr_at::<Ipv4Hdr, C>(ctx, IP_OFF) else { return ev };
    // SAFETY: bounds-checked by ptr_at.
    let (vihl, proto) = unsafe {
        ev.src = (*ip).src_addr;
        ev.dst = (*ip).dst_addr;
        ((*ip).vihl, (*ip).proto as u8)
    };
    ev.proto = proto;
    let l4_off = IP_OFF + ((vihl & 0x0f) as usize) * 4;
    if let Ok(l4) = ptr_at::<[u8; 8], C>(ctx, l4_off) {
        // SAFETY: bounds-checked by ptr_at.
        let l4 = unsafe { *l4 };
        match proto {
            IPPROTO_TCP | IPPROTO_UDP => {
                ev.sport = [l4[0], l4[1]];
                ev.dport = [l4[2], l4[3]];
            }
            // ICMP: type and code where ports would be, for the reader.
            IPPROTO_ICMP => {
                ev.sport = [0, l4[0]];
                ev.dport = [0, l4[1]];
            }
            _ => {}
        }
    }
    ev
}

/// Sends the snapshot taken by [`begin`] when the filter wants it; a full ring buffer is
/// counted, not fatal.
#[inline(always)]
pub fn emit(filter: &TraceFilter, reason: Reason) {
    if filter.enabled == 0 {
        return;
    }
    let Some(slot) = TRACE_SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: per-CPU slot written by begin() in this same program run.
    let mut ev = unsafe { *slot };
    ev.reason = reason as u8;
    if !filter.matches(&ev, reason.is_drop()) {
        return;
    }
    // SAFETY: helper without arguments.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    if EVENTS.output::<TraceEvent>(&ev, 0).is_err() {
        counters::count(Reason::TraceEventsLost, 0);
    }
}
