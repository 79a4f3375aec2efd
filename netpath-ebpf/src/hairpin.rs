//! Whether a container with published ports may be answering a hairpinned connection
//! (see netpath_common::maps::HAIRPIN): the datapath counts each hairpin it opens, the
//! agent says when a conntrack pass found none left. Only while one may live does such
//! a container's traffic to another container pay the conntrack lookup (two hash
//! misses, ~50 ns a packet, on every packet a published server sends a local client).
use core::intrinsics::{atomic_xadd, AtomicOrdering};

use netpath_common::maps::{no_hairpin_lives, HAIRPIN_CLEARED, HAIRPIN_OPENED};

use crate::maps::HAIRPIN;

/// False only when the agent's last pass found no hairpin flow and none opened since.
#[inline(always)]
pub fn may_live() -> bool {
    match (HAIRPIN.get(HAIRPIN_OPENED), HAIRPIN.get(HAIRPIN_CLEARED)) {
        (Some(opened), Some(cleared)) => !no_hairpin_lives(*opened, *cleared),
        _ => true,
    }
}

/// Counts a hairpin just opened: after its conntrack pair went in, so that a pass that
/// read the count before this and cleared it saw the pair.
#[inline(always)]
pub fn opened() {
    if let Some(p) = HAIRPIN.get_ptr_mut(HAIRPIN_OPENED) {
        // An atomic add (BPF_ATOMIC): other CPUs count too, and a count lost to a race
        // could bring the value back to one the agent cleared at. core's AtomicU64 has
        // no read-modify-write on this target (no compare-and-swap), the intrinsic has.
        // SAFETY: a map value, valid and 8-byte aligned for the program's run.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, 1) };
    }
}
