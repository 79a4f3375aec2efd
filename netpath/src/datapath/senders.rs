//! Which endpoint holds each SENDERS slot (the source check's shortcut, see
//! `netpath_common::maps::SENDERS`). The map is this agent's own, empty at load: this
//! table is the whole record of it, and every address a slot holds names an ENDPOINTS
//! (or ENDPOINTS6) entry that exists with that device and the same EndpointInfo (put in
//! after the entry is written, taken out before it is removed or moves to another
//! device), so that a packet the shortcut accepts is one the endpoint maps would accept,
//! with the answer they would give.
//!
//! The table plans each change ([`Change`]) and records it only once the map holds it:
//! a refused write never leaves the record saying less than the map.
use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use netpath_common::{EndpointInfo, SenderEntry};

/// The filled slots, as written.
#[derive(Debug, Default)]
pub(super) struct SenderSlots {
    held: HashMap<u32, SenderEntry>,
}

/// One slot going from what it holds to what it should.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Change {
    pub slot: u32,
    held: Option<SenderEntry>,
    to: Option<SenderEntry>,
}

impl Change {
    /// The values to write into the slot, in order. The kernel copies a value in
    /// unlocked, and a packet reads the device, then the address, then the info, as
    /// separate loads: so no write changes an address or info under a device's name.
    /// A held slot is first unnamed (only its ifindex changes, to 0, which no device
    /// has), the new content goes in unnamed, and only then is it named. A reader would
    /// have to stall across whole system calls to see a mix.
    pub fn writes(&self) -> Vec<SenderEntry> {
        let unnamed = |e: SenderEntry| SenderEntry { info: EndpointInfo { host_ifindex: 0, ..e.info }, ..e };
        let mut writes = Vec::with_capacity(3);
        if let Some(held) = self.held {
            writes.push(unnamed(held));
        }
        match self.to {
            Some(to) => writes.extend([unnamed(to), to]),
            None => writes.push(SenderEntry::default()),
        }
        writes.dedup();
        writes
    }

    /// The same slot emptied instead: what to do when a write of this change is refused
    /// (the map then holds `held`, or something unnamed, which matches nothing).
    pub fn emptied(&self) -> Change {
        Change { slot: self.slot, held: self.held, to: None }
    }
}

impl SenderSlots {
    fn change(&self, slot: u32, to: Option<SenderEntry>) -> Option<Change> {
        let held = self.held.get(&slot).copied();
        (held != to).then_some(Change { slot, held, to })
    }

    /// Records that the map now holds what `change` planned.
    pub(super) fn done(&mut self, change: &Change) {
        match change.to {
            Some(to) => self.held.insert(change.slot, to),
            None => self.held.remove(&change.slot),
        };
    }

    /// Puts IPv4 address `ip` with `info` into the slot of `info`'s device, unless
    /// another device holds it (its endpoint keeps the slot; this one is checked through
    /// ENDPOINTS). IPv6 addresses already in the slot stay only while the address and
    /// info are the same: they were added under that info, and register6 adds them again
    /// under the new one.
    pub(super) fn claim(&self, ip: Ipv4Addr, info: EndpointInfo) -> Option<Change> {
        let slot = SenderEntry::slot(info.host_ifindex);
        let fresh = SenderEntry { addr: ip.octets(), info, ..Default::default() };
        let to = match self.held.get(&slot) {
            Some(held) if held.info.host_ifindex != info.host_ifindex => return None,
            Some(held) if held.addr == fresh.addr && held.info == info => *held,
            _ => fresh,
        };
        self.change(slot, Some(to))
    }

    /// Adds IPv6 address `ip6` (the endpoint's own, or its link-local one) with `info`
    /// to its device's slot, if that device holds it with the same info.
    pub(super) fn add6(&self, ip6: Ipv6Addr, info: EndpointInfo) -> Option<Change> {
        let slot = SenderEntry::slot(info.host_ifindex);
        let mut to = *self.held.get(&slot).filter(|h| h.info == info)?;
        *field6(&mut to, ip6) = ip6.octets();
        self.change(slot, Some(to))
    }

    /// Takes IPv6 address `ip6` out of device `ifindex`'s slot, if it is there.
    pub(super) fn remove6(&self, ip6: Ipv6Addr, ifindex: u32) -> Option<Change> {
        let slot = SenderEntry::slot(ifindex);
        let mut to = *self.held.get(&slot).filter(|h| h.info.host_ifindex == ifindex)?;
        let field = field6(&mut to, ip6);
        if *field != ip6.octets() {
            return None;
        }
        *field = [0; 16];
        self.change(slot, Some(to))
    }

    /// Empties the slot when IPv4 address `ip` on `ifindex`'s device goes: only if it
    /// holds exactly that (another address of the same device, or another device,
    /// keeps it).
    pub(super) fn remove(&self, ip: Ipv4Addr, ifindex: u32) -> Option<Change> {
        let slot = SenderEntry::slot(ifindex);
        let held = self.held.get(&slot)?;
        (held.info.host_ifindex == ifindex && held.addr == ip.octets()).then_some(Change {
            slot,
            held: Some(*held),
            to: None,
        })
    }
}

/// Where in a slot IPv6 address `ip6` goes: the link-local field or the other.
fn field6(entry: &mut SenderEntry, ip6: Ipv6Addr) -> &mut [u8; 16] {
    if ip6.is_unicast_link_local() {
        &mut entry.link_local6
    } else {
        &mut entry.addr6
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netpath_common::maps::SENDER_SLOTS;

    const A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
    const B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
    const A6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2);
    const A_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x0858, 0x0aff, 0xfe4d, 2);

    fn on(ifindex: u32) -> EndpointInfo {
        EndpointInfo { host_ifindex: ifindex, counter_slot: 3, ..Default::default() }
    }

    /// Plans `change` and records it, as a write the kernel took.
    fn apply(s: &mut SenderSlots, plan: impl FnOnce(&SenderSlots) -> Option<Change>) -> Option<Change> {
        let change = plan(s);
        if let Some(c) = &change {
            s.done(c);
        }
        change
    }

    fn unnamed(e: SenderEntry) -> SenderEntry {
        SenderEntry { info: EndpointInfo { host_ifindex: 0, ..e.info }, ..e }
    }

    #[test]
    fn a_device_keeps_its_slot_and_a_colliding_one_goes_without() {
        let mut s = SenderSlots::default();
        let first = apply(&mut s, |s| s.claim(A, on(7))).unwrap();
        assert_eq!(first.held, None);
        assert_eq!(s.claim(A, on(7)), None, "the same address and info: nothing to write");
        // The same device with other info (its flags changed): rewritten.
        let flagged = EndpointInfo { flags: 1, ..on(7) };
        assert_eq!(apply(&mut s, |s| s.claim(A, flagged)).map(|c| c.slot), Some(7));
        // Another device whose ifindex falls in the same slot: none for it.
        assert_eq!(s.claim(B, on(7 + SENDER_SLOTS)), None);
        assert_eq!(s.remove(B, 7 + SENDER_SLOTS), None);
        assert_eq!(s.add6(A6, on(7 + SENDER_SLOTS)), None);
        // Only the holder empties it, then the other may take it.
        assert!(apply(&mut s, |s| s.remove(A, 7)).is_some());
        assert_eq!(s.claim(B, on(7 + SENDER_SLOTS)).unwrap().held, None);
    }

    #[test]
    fn nothing_is_recorded_until_the_map_holds_it() {
        let mut s = SenderSlots::default();
        let refused = s.claim(A, on(4)).unwrap();
        // The write was refused: the slot is still free, and its removal writes nothing.
        assert_eq!(s.remove(A, 4), None);
        assert_eq!(refused.emptied().to, None);
        apply(&mut s, |s| s.claim(A, on(4)));
        let _refused = s.remove(A, 4).unwrap();
        assert!(s.remove(A, 4).is_some(), "a refused removal leaves the slot recorded as held");
    }

    #[test]
    fn no_address_or_info_changes_under_a_devices_name() {
        let mut s = SenderSlots::default();
        let a = SenderEntry { addr: A.octets(), info: on(6), ..Default::default() };
        // Fresh: written unnamed, then named.
        assert_eq!(apply(&mut s, |s| s.claim(A, on(6))).unwrap().writes(), [unnamed(a), a]);
        // Held: unnamed first, the new content unnamed, then named.
        let b = SenderEntry { addr: B.octets(), ..a };
        assert_eq!(apply(&mut s, |s| s.claim(B, on(6))).unwrap().writes(), [unnamed(a), unnamed(b), b]);
        let b6 = SenderEntry { addr6: A6.octets(), ..b };
        assert_eq!(apply(&mut s, |s| s.add6(A6, on(6))).unwrap().writes(), [unnamed(b), unnamed(b6), b6]);
        // Taking an IPv6 address out: never zeroed in place.
        assert_eq!(apply(&mut s, |s| s.remove6(A6, 6)).unwrap().writes(), [unnamed(b6), unnamed(b), b]);
        // Emptied: unnamed, then cleared.
        assert_eq!(s.remove(B, 6).unwrap().writes(), [unnamed(b), SenderEntry::default()]);
        assert_eq!(s.claim(A, on(6)).unwrap().emptied().writes(), [unnamed(b), SenderEntry::default()]);
    }

    #[test]
    fn a_second_address_of_a_device_takes_the_slot_and_the_first_no_longer_empties_it() {
        let mut s = SenderSlots::default();
        apply(&mut s, |s| s.claim(A, on(9)));
        assert!(apply(&mut s, |s| s.claim(B, on(9))).unwrap().held.is_some());
        assert_eq!(s.remove(A, 9), None, "A's removal must not empty B's slot");
        assert!(s.remove(B, 9).is_some());
    }

    #[test]
    fn ipv6_addresses_join_their_devices_slot_only_under_the_same_address_and_info() {
        let mut s = SenderSlots::default();
        assert_eq!(s.add6(A6, on(5)), None, "no slot before the IPv4 address");
        apply(&mut s, |s| s.claim(A, on(5)));
        assert_eq!(
            s.add6(A6, EndpointInfo { counter_slot: 4, ..on(5) }),
            None,
            "other info: the hash answers"
        );
        assert_eq!(apply(&mut s, |s| s.add6(A6, on(5))).unwrap().to.unwrap().addr6, A6.octets());
        assert_eq!(apply(&mut s, |s| s.add6(A_LL, on(5))).unwrap().to.unwrap().link_local6, A_LL.octets());
        // Only the address held is taken out.
        assert_eq!(s.remove6(Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 9), 5), None);
        let to = s.remove6(A6, 5).unwrap().to.unwrap();
        assert_eq!((to.addr6, to.link_local6), ([0; 16], A_LL.octets()));
        // The IPv4 entry rewritten with other info, or another address of the device
        // taking the slot: the IPv6 addresses added under the old go with it.
        let flagged = apply(&mut s, |s| s.claim(A, EndpointInfo { flags: 1, ..on(5) })).unwrap().to.unwrap();
        assert_eq!((flagged.addr6, flagged.link_local6), ([0; 16], [0; 16]));
        apply(&mut s, |s| s.add6(A6, EndpointInfo { flags: 1, ..on(5) }));
        let other = s.claim(B, EndpointInfo { flags: 1, ..on(5) }).unwrap().to.unwrap();
        assert_eq!(other.addr6, [0; 16], "B's slot must not answer for A's IPv6 address");
    }
}
