//! What every tc entry point does around its own work, in one place: trace the packet as
//! it arrives, run the program's logic, count the outcome under its reason, and trace
//! the packet as it leaves. A drop is the logic's `Err(reason)`. A program tail-called
//! to continue another's work ([`resume`]) does the same but for the arrival, which the
//! caller traced.
use aya_ebpf::{bindings::TC_ACT_SHOT, programs::TcContext};
use netpath_common::Reason;

use crate::{counters, events, packet::ifindex, rare};

/// Runs `logic` on the packet seen at trace hop `hop`; returns the tc action.
#[inline(always)]
pub fn run(ctx: &TcContext, hop: u8, logic: impl FnOnce(&TcContext) -> Result<(i32, Reason), Reason>) -> i32 {
    let filter = events::filter();
    events::begin(filter, ctx, hop, ifindex(ctx));
    finish::<false>(ctx, filter, logic)
}

/// [`run`] for a program that sees IPv6 only: the trace snapshots IPv6 headers (and the
/// IPv4 programs never carry the code for it).
#[inline(always)]
pub fn run6(
    ctx: &TcContext,
    hop: u8,
    logic: impl FnOnce(&TcContext) -> Result<(i32, Reason), Reason>,
) -> i32 {
    let filter = events::filter();
    events::begin6(filter, ctx, hop, ifindex(ctx));
    finish::<true>(ctx, filter, logic)
}

/// Runs `logic` in a program tail-called by one that [`run`] started: the packet's
/// arrival is already traced, and nothing in between has changed its length.
#[inline(always)]
pub fn resume(ctx: &TcContext, logic: impl FnOnce(&TcContext) -> Result<(i32, Reason), Reason>) -> i32 {
    finish::<false>(ctx, events::filter(), logic)
}

/// [`resume`] after [`run6`].
#[inline(always)]
pub fn resume6(ctx: &TcContext, logic: impl FnOnce(&TcContext) -> Result<(i32, Reason), Reason>) -> i32 {
    finish::<true>(ctx, events::filter(), logic)
}

#[inline(always)]
fn finish<const V6: bool>(
    ctx: &TcContext,
    filter: Option<&netpath_common::TraceFilter>,
    logic: impl FnOnce(&TcContext) -> Result<(i32, Reason), Reason>,
) -> i32 {
    let len = ctx.len();
    let (action, reason) = match logic(ctx) {
        Ok(done) => done,
        Err(reason) => (TC_ACT_SHOT, reason),
    };
    counters::count(reason, len);
    if V6 {
        events::emit6(filter, ctx, reason);
    } else {
        events::emit(filter, ctx, reason);
    }
    rare::note(ctx, reason);
    action
}
