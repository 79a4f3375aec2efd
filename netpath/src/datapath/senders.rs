//! Which endpoint holds each SENDERS slot (the source check's shortcut, see
//! `netpath_common::maps::SENDERS`). The map is this agent's own, empty at load: this
//! table is the whole record of it, and every address a slot holds names an ENDPOINTS
//! (or ENDPOINTS6) entry that exists with that device (put in after the entry is
//! written, taken out before it is removed or moves to another device), so that a
//! packet the shortcut accepts is one the endpoint maps would accept.
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

/// A write into SENDERS.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Write {
    pub slot: u32,
    pub entry: SenderEntry,
    /// The slot was empty: write the entry with no device first, then whole, so that a
    /// packet reading the slot while the kernel copies it never sees the device's
    /// ifindex next to fields not yet written.
    pub fresh: bool,
}

impl SenderSlots {
    /// The slot of IPv4 address `ip` on `info`'s device, unless another device holds
    /// it (its endpoint keeps the slot; this one is checked through ENDPOINTS). The
    /// device's IPv6 addresses already in the slot stay.
    pub(super) fn claim(&mut self, ip: Ipv4Addr, info: EndpointInfo) -> Option<Write> {
        let slot = SenderEntry::slot(info.host_ifindex);
        let (entry, fresh) = match self.held.get(&slot) {
            Some(held) if held.info.host_ifindex != info.host_ifindex => return None,
            Some(held) => (SenderEntry { addr: ip.octets(), info, ..*held }, false),
            None => (SenderEntry { addr: ip.octets(), info, ..Default::default() }, true),
        };
        self.held.insert(slot, entry);
        Some(Write { slot, entry, fresh })
    }

    /// Adds IPv6 address `ip6` (the endpoint's own, or its link-local one) to the slot
    /// of device `ifindex`, if that device holds it.
    pub(super) fn add6(&mut self, ip6: Ipv6Addr, ifindex: u32) -> Option<Write> {
        let slot = SenderEntry::slot(ifindex);
        let held = self.held.get_mut(&slot).filter(|h| h.info.host_ifindex == ifindex)?;
        *field6(held, ip6) = ip6.octets();
        Some(Write { slot, entry: *held, fresh: false })
    }

    /// Takes IPv6 address `ip6` out of device `ifindex`'s slot, if it is there.
    pub(super) fn remove6(&mut self, ip6: Ipv6Addr, ifindex: u32) -> Option<Write> {
        let slot = SenderEntry::slot(ifindex);
        let held = self.held.get_mut(&slot).filter(|h| h.info.host_ifindex == ifindex)?;
        let field = field6(held, ip6);
        if *field != ip6.octets() {
            return None;
        }
        *field = [0; 16];
        Some(Write { slot, entry: *held, fresh: false })
    }

    /// The slot to empty when IPv4 address `ip` on `ifindex`'s device goes: only if it
    /// holds exactly that (another address of the same device, or another device,
    /// keeps it).
    pub(super) fn slot_of(&self, ip: Ipv4Addr, ifindex: u32) -> Option<u32> {
        let slot = SenderEntry::slot(ifindex);
        self.held
            .get(&slot)
            .is_some_and(|h| h.info.host_ifindex == ifindex && h.addr == ip.octets())
            .then_some(slot)
    }

    /// Marks `slot` empty (once the map says so).
    pub(super) fn release(&mut self, slot: u32) {
        self.held.remove(&slot);
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
        EndpointInfo { host_ifindex: ifindex, ..Default::default() }
    }

    #[test]
    fn a_device_keeps_its_slot_and_a_colliding_one_goes_without() {
        let mut s = SenderSlots::default();
        assert!(s.claim(A, on(7)).unwrap().fresh);
        // The same device again (its flags changed): rewritten in place.
        assert_eq!(s.claim(A, on(7)).map(|w| (w.slot, w.fresh)), Some((7, false)));
        // Another device whose ifindex falls in the same slot: none for it.
        assert_eq!(s.claim(B, on(7 + SENDER_SLOTS)), None);
        assert_eq!(s.slot_of(B, 7 + SENDER_SLOTS), None);
        assert_eq!(s.add6(A6, 7 + SENDER_SLOTS), None);
        // Only the holder empties it, then the other may take it.
        assert_eq!(s.slot_of(A, 7), Some(7));
        s.release(7);
        assert!(s.claim(B, on(7 + SENDER_SLOTS)).unwrap().fresh);
    }

    #[test]
    fn a_second_address_of_a_device_takes_the_slot_and_the_first_no_longer_empties_it() {
        let mut s = SenderSlots::default();
        s.claim(A, on(9));
        assert!(!s.claim(B, on(9)).unwrap().fresh);
        assert_eq!(s.slot_of(A, 9), None, "A's removal must not empty B's slot");
        assert_eq!(s.slot_of(B, 9), Some(9));
    }

    #[test]
    fn ipv6_addresses_join_their_devices_slot_and_survive_its_ipv4_rewrites() {
        let mut s = SenderSlots::default();
        assert_eq!(s.add6(A6, 5), None, "no slot before the IPv4 address");
        s.claim(A, on(5));
        assert_eq!(s.add6(A6, 5).unwrap().entry.addr6, A6.octets());
        assert_eq!(s.add6(A_LL, 5).unwrap().entry.link_local6, A_LL.octets());
        let rewritten = s.claim(A, EndpointInfo { flags: 1, ..on(5) }).unwrap().entry;
        assert_eq!((rewritten.addr6, rewritten.link_local6), (A6.octets(), A_LL.octets()));
        // Only the address held is taken out.
        assert_eq!(s.remove6(Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 9), 5), None);
        let w = s.remove6(A6, 5).unwrap();
        assert_eq!((w.entry.addr6, w.entry.link_local6), ([0; 16], A_LL.octets()));
    }
}
