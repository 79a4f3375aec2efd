//! The datapath's rare, unexpected events, logged with aya-log to the agent's output: a
//! redirect the kernel refused, a FIB lookup that failed (with its code), no NAT source
//! port left, conntrack unable to take a new flow. Their counters say how many; a log
//! line says which packet, which an operator needs to find the cause. At most one line
//! per reason, CPU and second, carrying how many went unlogged since the previous one,
//! so a flood of them costs a counter update each, not a log record each. The decision
//! is made once per packet on its reason, after the program's work: the fast path's
//! reasons leave at the first comparison.
use aya_ebpf::{helpers::generated::bpf_ktime_get_ns, programs::TcContext};
use aya_log_ebpf::warn;
use netpath_common::Reason;

use crate::{
    headers::{ipv4, IPPROTO_TCP, IPPROTO_UDP, IP_OFF},
    maps::LOG_LIMIT,
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

/// Logs the packet that ended with `reason` when the reason is a rare one and its
/// budget allows. Only the comparison is inlined into the programs: the rest runs as a
/// function of its own (a BPF-to-BPF call), so its stack does not add to every
/// program's frame, which with the deepest call chain must stay within the 512 bytes
/// the verifier allows (inlined, the log record pushed `from_container` past them).
#[inline(always)]
pub fn note(ctx: &TcContext, reason: Reason) {
    if matches!(
        reason,
        Reason::DropRedirectFailed
            | Reason::DropFibFailed
            | Reason::DropNatPortsExhausted
            | Reason::DropCtFull
    ) {
        log(ctx.skb.skb, reason as u32);
    }
}

#[inline(never)]
fn log(skb: *mut aya_ebpf::bindings::__sk_buff, reason: u32) {
    let what = match reason {
        r if r == Reason::DropRedirectFailed as u32 => "redirect refused by the kernel (device gone or down)",
        r if r == Reason::DropFibFailed as u32 => "no route for the packet (bpf_fib_lookup failed)",
        r if r == Reason::DropNatPortsExhausted as u32 => "no free NAT source port for this destination",
        _ => "conntrack could not take the new flow",
    };
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
    let ctx = &TcContext::new(skb);
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
    warn!(
        ctx,
        target: "netpath::datapath",
        "{}: proto {} {:i}:{} -> {:i}:{} at ifindex {} (code {}; {} more since the last report on this CPU)",
        what,
        proto,
        src,
        sport,
        dst,
        dport,
        ifindex(ctx),
        code,
        suppressed
    );
}
