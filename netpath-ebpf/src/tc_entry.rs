//! What every tc entry point does around its own work, in one place: trace the packet as
//! it arrives, run the program's logic, count the outcome under its reason, and trace
//! the packet as it leaves. A drop is the logic's `Err(reason)`.
use aya_ebpf::{bindings::TC_ACT_SHOT, programs::TcContext};
use netpath_common::Reason;

use crate::{counters, events, packet::ifindex};

/// Runs `logic` on the packet seen at trace hop `hop`; returns the tc action.
#[inline(always)]
pub fn run(ctx: &TcContext, hop: u8, logic: impl FnOnce(&TcContext) -> Result<(i32, Reason), Reason>) -> i32 {
    let len = ctx.len();
    let filter = events::filter();
    events::begin(&filter, ctx, hop, ifindex(ctx));
    let (action, reason) = match logic(ctx) {
        Ok(done) => done,
        Err(reason) => (TC_ACT_SHOT, reason),
    };
    counters::count(reason, len);
    events::emit(&filter, ctx, reason);
    action
}
