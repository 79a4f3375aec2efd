//! Per-CPU counters: one slot per reason, one per endpoint (the endpoint entry names
//! it). Both are arrays: the kernel inlines their lookups (6.10+ for per-CPU arrays), no
//! hash is computed per packet, and the maps never grow from traffic.
use netpath_common::Reason;

use crate::maps::{ENDPOINT_STATS, REASON_STATS};

#[inline(always)]
pub fn count(reason: Reason, bytes: u32) {
    if let Some(c) = REASON_STATS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while we run.
        unsafe {
            (*c).tx_packets += 1;
            (*c).tx_bytes += bytes as u64;
        }
    }
}

/// Adds `n` to a reason that counts conntrack entries rather than packets.
#[inline(always)]
pub fn count_entries(reason: Reason, n: u64) {
    if let Some(c) = REASON_STATS.get_ptr_mut(reason as u32) {
        // SAFETY: as above.
        unsafe { (*c).tx_packets += n };
    }
}

#[inline(always)]
pub fn endpoint_tx(slot: u16, bytes: u32) {
    if let Some(c) = ENDPOINT_STATS.get_ptr_mut(slot as u32) {
        // SAFETY: as above, per-CPU value.
        unsafe {
            (*c).tx_packets += 1;
            (*c).tx_bytes += bytes as u64;
        }
    }
}

#[inline(always)]
pub fn endpoint_rx(slot: u16, bytes: u32) {
    if let Some(c) = ENDPOINT_STATS.get_ptr_mut(slot as u32) {
        // SAFETY: as above, per-CPU value.
        unsafe {
            (*c).rx_packets += 1;
            (*c).rx_bytes += bytes as u64;
        }
    }
}
