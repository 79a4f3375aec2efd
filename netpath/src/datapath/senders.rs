//! Which endpoint holds each SENDERS slot (the source check's shortcut, see
//! `netpath_common::maps::SENDERS`). The map is this agent's own, empty at load: this
//! table is the whole record of it, and every slot it fills names an ENDPOINTS entry
//! that exists with that device (filled after the entry is written, emptied before it
//! is removed), so that a packet the shortcut accepts is one ENDPOINTS would accept.
use std::{collections::HashMap, net::Ipv4Addr};

use netpath_common::SenderEntry;

/// The filled slots: slot -> (device ifindex, address).
#[derive(Debug, Default)]
pub(super) struct SenderSlots {
    held: HashMap<u32, (u32, Ipv4Addr)>,
}

/// What to write into a slot.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Claim {
    /// The slot is free: write the entry with no device first, then whole, so that a
    /// packet reading the slot while the kernel copies it never sees the device's
    /// ifindex next to fields not yet written.
    Fresh(u32),
    /// The slot is already this device's: rewrite it (fields of the same endpoint).
    Rewrite(u32),
}

impl SenderSlots {
    /// The slot of `ifindex`'s device for address `ip`, unless another device holds it
    /// (its endpoint keeps the slot; this one is checked through ENDPOINTS).
    pub(super) fn claim(&mut self, ip: Ipv4Addr, ifindex: u32) -> Option<Claim> {
        let slot = SenderEntry::slot(ifindex);
        match self.held.get(&slot) {
            Some(&(held, _)) if held != ifindex => None,
            Some(_) => {
                self.held.insert(slot, (ifindex, ip));
                Some(Claim::Rewrite(slot))
            }
            None => {
                self.held.insert(slot, (ifindex, ip));
                Some(Claim::Fresh(slot))
            }
        }
    }

    /// The slot to empty when `ip` on `ifindex`'s device goes: only if it holds exactly
    /// that (another address of the same device, or another device, keeps it).
    pub(super) fn slot_of(&self, ip: Ipv4Addr, ifindex: u32) -> Option<u32> {
        let slot = SenderEntry::slot(ifindex);
        (self.held.get(&slot) == Some(&(ifindex, ip))).then_some(slot)
    }

    /// Marks `slot` empty (once the map says so).
    pub(super) fn release(&mut self, slot: u32) {
        self.held.remove(&slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netpath_common::maps::SENDER_SLOTS;

    const A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
    const B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);

    #[test]
    fn a_device_keeps_its_slot_and_a_colliding_one_goes_without() {
        let mut s = SenderSlots::default();
        assert_eq!(s.claim(A, 7), Some(Claim::Fresh(7)));
        // The same device again (its flags changed): rewritten in place.
        assert_eq!(s.claim(A, 7), Some(Claim::Rewrite(7)));
        // Another device whose ifindex falls in the same slot: none for it.
        assert_eq!(s.claim(B, 7 + SENDER_SLOTS), None);
        assert_eq!(s.slot_of(B, 7 + SENDER_SLOTS), None);
        // Only the holder empties it, then the other may take it.
        assert_eq!(s.slot_of(A, 7), Some(7));
        s.release(7);
        assert_eq!(s.claim(B, 7 + SENDER_SLOTS), Some(Claim::Fresh(7)));
    }

    #[test]
    fn a_second_address_of_a_device_takes_the_slot_and_the_first_no_longer_empties_it() {
        let mut s = SenderSlots::default();
        s.claim(A, 9);
        assert_eq!(s.claim(B, 9), Some(Claim::Rewrite(9)));
        assert_eq!(s.slot_of(A, 9), None, "A's removal must not empty B's slot");
        assert_eq!(s.slot_of(B, 9), Some(9));
    }
}
