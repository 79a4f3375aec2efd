//! Conntrack upkeep: a flow's two entries expire together, after the timeout of its
//! protocol and TCP state, counted from the last packet either way. The agent runs a
//! pass every `gc_interval`.
use std::{collections::HashSet, time::Duration};

use netpath_common::{
    conntrack::{TCP_CLOSING, TCP_ESTABLISHED},
    CtEntry, CtKey, Reason,
};
use tracing::debug;

use crate::datapath::{monotonic_ns, Datapath, DatapathError};

/// Connection tracking's size and idle timeouts (seconds), and how often the agent
/// collects idle entries.
#[derive(Clone, Debug)]
pub struct CtConfig {
    /// Size of the table of assured flows (two entries per flow).
    pub max_entries: u32,
    pub tcp_established: u64,
    pub tcp_syn: u64,
    pub tcp_closing: u64,
    pub udp: u64,
    pub icmp: u64,
    pub gc_interval: u64,
}

impl CtConfig {
    /// Timeout of a flow whose entries are `a` and `b` (`b` may be gone).
    fn of(&self, proto: u8, a: &CtEntry, b: Option<&CtEntry>) -> Duration {
        let state = a.tcp_state.max(b.map_or(0, |b| b.tcp_state));
        let secs = match proto {
            6 if state == TCP_CLOSING => self.tcp_closing,
            6 if state == TCP_ESTABLISHED => self.tcp_established,
            6 => self.tcp_syn,
            17 => self.udp,
            _ => self.icmp,
        };
        Duration::from_secs(secs)
    }
}

impl CtConfig {
    pub fn gc_interval(&self) -> Duration {
        Duration::from_secs(self.gc_interval.max(1))
    }

    /// One collection pass over both tables; returns how many entries were removed.
    pub fn collect(&self, datapath: &mut Datapath) -> Result<u64, DatapathError> {
        let now = monotonic_ns();
        let entries = datapath.conntrack_entries()?;
        let by_key: std::collections::HashMap<CtKey, CtEntry> = entries.iter().copied().collect();
        let mut done = HashSet::new();
        let mut removed = 0;
        for (key, entry) in &entries {
            if done.contains(key) {
                continue;
            }
            let partner_key = key.partner(entry);
            let partner = by_key.get(&partner_key);
            done.insert(*key);
            done.insert(partner_key);
            let last = entry.last_seen_ns.max(partner.map_or(0, |p| p.last_seen_ns));
            if now.saturating_sub(last) < self.of(key.proto, entry, partner).as_nanos() as u64 {
                continue;
            }
            removed += u64::from(datapath.remove_conntrack(key)?);
            if partner.is_some() {
                removed += u64::from(datapath.remove_conntrack(&partner_key)?);
            }
        }
        if removed > 0 {
            datapath.add_to_reason(Reason::CtCollected, removed)?;
            debug!(removed, "conntrack entries collected");
        }
        Ok(removed)
    }
}
