//! The datapath's rare, unexpected events, logged with aya-log to the agent's output: a
//! redirect the kernel refused, a FIB lookup that failed (with its code), no NAT source
//! port left, conntrack unable to take a new flow. Their counters say how many; a log
//! line says which packet, which an operator needs to find the cause. At most one line
//! per reason, CPU and second, carrying how many went unlogged since the previous one,
//! so a flood of them costs a counter update each, not a log record each. The decision
//! is made once per packet on its reason, after the program's work: the fast path's
//! reasons leave at the first comparison.
//!
//! The logging itself is a program of its own, `log_rare`, tail-called with the packet:
//! inlined, its log record pushed `from_container` past the 512-byte stack old kernels
//! allow; as a called function, those kernels verified it again on every path reaching
//! it (a third of the agent's load time under emulation). A tail call is verified once
//! and has a stack of its own. Every rare reason is a drop, so `log_rare` drops.
use aya_ebpf::{
    bindings::TC_ACT_SHOT, helpers::generated::bpf_ktime_get_ns, macros::classifier, programs::TcContext,
};
use aya_log_ebpf::warn;
use netpath_common::{maps::TAIL_LOG_RARE, Reason};

use crate::{
    headers::{ipv4, IPPROTO_TCP, IPPROTO_UDP, IP_OFF},
    maps::{LOG_LIMIT, RARE_PROGS},
    packet::ifindex,
};

const EVERY_NS: u64 = 1_000_000_000;

/// Records a detail of the event about to be returned as `reason` (logged with it).
#[inline(always)]
pub fn detail(reason: Reason, detail: u32) {
    if let Some(slot) = LOG_LIMIT.get_ptr_mut(reason as u32) {
        // SAFETY: this CPU's slot; no other writer while this program runs here.
        unsafe { (*slot).detail = detail };
    }
}

/// Hands the packet that ended with `reason` to `log_rare` when the reason is a rare
/// one. Returns only when it is not, or when no agent filled the slot.
#[inline(always)]
pub fn note(ctx: &TcContext, reason: Reason) {
    if matches!(
        reason,
        Reason::DropRedirectFailed
            | Reason::DropFibFailed
            | Reason::DropNatPortsExhausted
            | Reason::DropCtFull
    ) {
        // skb->cb is the programs' own scratch, carried across a tail call.
        // SAFETY: the context's skb, valid for the program's run; tc programs may write cb.
        unsafe { (*ctx.skb.skb).cb[0] = reason as u32 };
        // SAFETY: a tail call that succeeds does not return; the packet is then dropped
        // by log_rare, as the caller would have.
        let _ = unsafe { RARE_PROGS.tail_call(ctx, TAIL_LOG_RARE) };
    }
}

#[classifier]
pub fn log_rare(ctx: TcContext) -> i32 {
    // SAFETY: as in `note`.
    let reason = unsafe { (*ctx.skb.skb).cb[0] };
    log(&ctx, reason);
    TC_ACT_SHOT
}

#[inline(always)]
fn log(ctx: &TcContext, reason: u32) {
    let Some(slot) = LOG_LIMIT.get_ptr_mut(reason) else { return };
    // SAFETY: this CPU's slot, as above.
    let slot = unsafe { &mut *slot };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    if slot.last_ns != 0 && now.wrapping_sub(slot.last_ns) < EVERY_NS {
        slot.suppressed = slot.suppressed.wrapping_add(1);
        return;
    }
    let (suppressed, code) = (slot.suppressed, slot.detail);
    slot.last_ns = now;
    slot.suppressed = 0;
    let (Ok(src), Ok(dst), Ok(proto)) = (
        ctx.load::<[u8; 4]>(IP_OFF + ipv4::SRC),
        ctx.load::<[u8; 4]>(IP_OFF + ipv4::DST),
        ctx.load::<u8>(IP_OFF + ipv4::PROTO),
    ) else {
        return;
    };
    let (mut sport, mut dport) = (0u16, 0u16);
    if proto == IPPROTO_TCP || proto == IPPROTO_UDP {
        let ihl = ctx.load::<u8>(IP_OFF).map_or(5, |b| b & 0x0f) as usize;
        if let Ok(p) = ctx.load::<[u8; 4]>(IP_OFF + ihl * 4) {
            sport = u16::from_be_bytes([p[0], p[1]]);
            dport = u16::from_be_bytes([p[2], p[3]]);
        }
    }
    let at = ifindex(ctx);
    if reason == Reason::DropFibFailed as u32 {
        warn!(
            ctx,
            target: "netpath::datapath",
            "no route for the packet (bpf_fib_lookup code {}): proto {} {:i}:{} -> {:i}:{} at ifindex {} ({} more since the last report on this CPU)",
            code, proto, src, sport, dst, dport, at, suppressed
        );
        return;
    }
    let what = match reason {
        r if r == Reason::DropRedirectFailed as u32 => "redirect refused by the kernel (device gone or down)",
        r if r == Reason::DropNatPortsExhausted as u32 => "no free NAT source port for this destination",
        _ => "conntrack could not take the new flow",
    };
    warn!(
        ctx,
        target: "netpath::datapath",
        "{}: proto {} {:i}:{} -> {:i}:{} at ifindex {} ({} more since the last report on this CPU)",
        what, proto, src, sport, dst, dport, at, suppressed
    );
}
