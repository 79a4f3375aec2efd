//! Which ENDPOINT_STATS slot each endpoint counts in. The slot is a field of the
//! endpoint's own ENDPOINTS entry, which the datapath looks up anyway, so counting costs
//! the packet an array index instead of a hash lookup; and the kernel map is the only
//! record of it: a restarted agent reads the slots back from ENDPOINTS.
use std::{collections::HashMap, net::Ipv4Addr};

use netpath_common::{maps::ENDPOINT_STATS_SLOTS, EndpointInfo};

/// The slots in use, by endpoint address.
#[derive(Debug)]
pub(super) struct CounterSlots {
    by_ip: HashMap<Ipv4Addr, u16>,
    used: Vec<bool>,
    /// Where the search for a free slot starts: just after the last one given out, so a
    /// freed slot is taken again as late as possible (a packet of the endpoint that held
    /// it may still be counting in it).
    next: u16,
}

impl CounterSlots {
    /// The slots `entries` (ENDPOINTS as found) hold. Returns the table and the
    /// addresses whose entry has no slot of its own: none yet (written by a build
    /// before slots), out of range, or one another entry holds too.
    pub(super) fn scan(entries: &[(Ipv4Addr, EndpointInfo)]) -> (Self, Vec<Ipv4Addr>) {
        let mut table = CounterSlots {
            by_ip: HashMap::with_capacity(entries.len()),
            used: vec![false; ENDPOINT_STATS_SLOTS as usize],
            next: 1,
        };
        let mut without = Vec::new();
        for (ip, info) in entries {
            let slot = info.counter_slot;
            if slot == 0 || slot as u32 >= ENDPOINT_STATS_SLOTS || table.used[slot as usize] {
                without.push(*ip);
                continue;
            }
            table.used[slot as usize] = true;
            table.by_ip.insert(*ip, slot);
        }
        (table, without)
    }

    /// `ip`'s slot, and whether it was given out just now (its counters must be zeroed
    /// before the endpoint's entry names it). None: every slot is taken.
    pub(super) fn assign(&mut self, ip: Ipv4Addr) -> Option<(u16, bool)> {
        if let Some(&slot) = self.by_ip.get(&ip) {
            return Some((slot, false));
        }
        let slots = ENDPOINT_STATS_SLOTS as usize;
        // Slot 0 is nobody's: it takes the counts of entries that have no slot yet.
        let found = (0..slots - 1)
            .map(|i| 1 + (self.next as usize - 1 + i) % (slots - 1))
            .find(|&s| !self.used[s])?;
        let slot = found as u16;
        self.used[found] = true;
        self.by_ip.insert(ip, slot);
        self.next = if found + 1 >= slots { 1 } else { slot + 1 };
        Some((slot, true))
    }

    /// The slot `ip` holds, if any.
    pub(super) fn slot_of(&self, ip: Ipv4Addr) -> Option<u16> {
        self.by_ip.get(&ip).copied()
    }

    /// Gives `ip`'s slot back, if it had one.
    pub(super) fn release(&mut self, ip: Ipv4Addr) {
        if let Some(slot) = self.by_ip.remove(&ip) {
            self.used[slot as usize] = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8, slot: u16) -> (Ipv4Addr, EndpointInfo) {
        (Ipv4Addr::new(10, 0, 0, n), EndpointInfo { counter_slot: slot, ..Default::default() })
    }

    #[test]
    fn scan_keeps_unique_slots_and_names_the_entries_without_one() {
        let (mut t, without) =
            CounterSlots::scan(&[entry(1, 5), entry(2, 0), entry(3, 5), entry(4, u16::MAX)]);
        assert_eq!(
            without,
            [Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3), Ipv4Addr::new(10, 0, 0, 4)]
        );
        assert_eq!(t.assign(Ipv4Addr::new(10, 0, 0, 1)), Some((5, false)));
        let (slot, fresh) = t.assign(Ipv4Addr::new(10, 0, 0, 3)).unwrap();
        assert!(fresh && slot != 5 && slot != 0);
    }

    #[test]
    fn a_freed_slot_is_taken_again_only_after_the_others() {
        let (mut t, _) = CounterSlots::scan(&[]);
        let a = Ipv4Addr::new(10, 0, 0, 1);
        assert_eq!(t.assign(a), Some((1, true)));
        t.release(a);
        assert_eq!(t.assign(Ipv4Addr::new(10, 0, 0, 2)), Some((2, true)));
        assert_eq!(t.assign(a), Some((3, true)));
    }

    #[test]
    fn every_slot_but_zero_is_given_out_once_then_none() {
        let (mut t, _) = CounterSlots::scan(&[]);
        let mut seen = vec![false; ENDPOINT_STATS_SLOTS as usize];
        for i in 0..ENDPOINT_STATS_SLOTS - 1 {
            let (slot, fresh) = t.assign(Ipv4Addr::from(0x0a00_0000 + i)).unwrap();
            assert!(fresh && slot != 0 && !seen[slot as usize]);
            seen[slot as usize] = true;
        }
        assert_eq!(t.assign(Ipv4Addr::new(10, 255, 0, 1)), None);
        t.release(Ipv4Addr::from(0x0a00_0007));
        assert_eq!(t.assign(Ipv4Addr::new(10, 255, 0, 1)), Some((8, true)));
    }
}
