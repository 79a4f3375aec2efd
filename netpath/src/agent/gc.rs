//! Conntrack upkeep: a flow's two entries expire together, after the timeout of its
//! protocol and TCP state, counted from the last packet either way, in the IPv4 and the
//! IPv6 tables alike. The agent runs a pass every `gc_interval`.
use std::{collections::HashSet, time::Duration};

use aya::Pod;
use netpath_common::{
    conntrack::{NatEntry, Tuple, CT_F_REPLY, TCP_CLOSING, TCP_ESTABLISHED},
    Ip6, Reason,
};
use tracing::debug;

use crate::datapath::{
    family::{Family, Ipv4, Ipv6},
    monotonic_ns, Datapath, DatapathError,
};

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
    /// Whether the flow of entries `a` and `b` (`b` may be gone) has been idle past its
    /// timeout at `now`.
    fn idle<A>(&self, now: u64, proto: u8, a: &NatEntry<A>, b: Option<&NatEntry<A>>) -> bool {
        let last = a.last_seen_ns.max(b.map_or(0, |b| b.last_seen_ns));
        now.saturating_sub(last) >= self.of(proto, a, b).as_nanos() as u64
    }

    /// Timeout of a flow whose entries are `a` and `b` (`b` may be gone). ICMPv6 echo
    /// (58) times out as ICMP echo does.
    fn of<A>(&self, proto: u8, a: &NatEntry<A>, b: Option<&NatEntry<A>>) -> Duration {
        let state = a.tcp_state.max(b.map_or(0, |b| b.tcp_state));
        // A flow nobody answered is no established connection, whatever its first packet
        // said: a bare ACK (an ACK scan, a stray segment) keeps it for the SYN timeout.
        let answered = [Some(a), b].into_iter().flatten().all(|e| e.flags & CT_F_REPLY == 0 || e.packets > 0);
        let secs = match proto {
            6 if state == TCP_CLOSING => self.tcp_closing,
            6 if state == TCP_ESTABLISHED && answered => self.tcp_established,
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

    /// One collection pass over every conntrack table, both families; returns how many
    /// entries were removed. A pass that saw no hairpin flow tells the datapath so.
    pub fn collect(&self, datapath: &mut Datapath) -> Result<u64, DatapathError> {
        // Read before the tables: a hairpin opened after this read counts past it (the
        // datapath counts after the pair went in), so clearing up to it never hides one.
        // What the shortcut needs and cannot read leaves it off (the lookup stays), and
        // never holds up the collection.
        let opened = datapath.hairpins_opened();
        let endpoints: Result<HashSet<Ipv4>, _> =
            datapath.endpoint_entries().map(|e| e.iter().map(|(ip, _)| ip.octets()).collect());
        let endpoints6: Result<HashSet<Ipv6>, _> =
            datapath.endpoint_entries6().map(|e| e.iter().map(|(ip, _)| Ip6(ip.octets())).collect());
        let now = monotonic_ns();
        let (removed, hairpin) = self.collect_family::<Ipv4>(datapath, now, endpoints.as_ref().ok())?;
        let (removed6, hairpin6) = self.collect_family::<Ipv6>(datapath, now, endpoints6.as_ref().ok())?;
        let removed = removed + removed6;
        if removed > 0 {
            datapath.add_to_reason(Reason::CtCollected, removed)?;
            debug!(removed, "conntrack entries collected");
        }
        // A pass that sees a hairpin, or cannot tell, turns the lookup back on: a pass
        // that missed one (or a hairpin-shaped entry something else made) costs at most
        // one interval, not until the next hairpin opens.
        let none_live = match (opened, endpoints, endpoints6) {
            (Ok(opened), Ok(_), Ok(_)) => (!hairpin && !hairpin6).then_some(opened),
            (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
                debug!("hairpin shortcut off: {e}");
                None
            }
        };
        if let Err(e) = datapath.hairpin_shortcut(none_live) {
            debug!("hairpin shortcut not written: {e}");
        }
        Ok(removed)
    }

    /// [`CtConfig::collect`] of family `A`'s two tables: how many entries went, and
    /// whether the tables held a hairpin flow (an entry from one of `endpoints` to
    /// another: a published container's reply to a hairpin, which only such a flow's
    /// entries are; counted before the removals, so one just removed holds the datapath's
    /// lookup for one more pass). Without `endpoints`, true.
    fn collect_family<A: Family>(
        &self,
        datapath: &mut Datapath,
        now: u64,
        endpoints: Option<&HashSet<A>>,
    ) -> Result<(u64, bool), DatapathError>
    where
        Tuple<A>: Pod,
        NatEntry<A>: Pod,
    {
        let entries = datapath.conntrack_entries::<A>()?;
        let hairpin = endpoints
            .is_none_or(|eps| entries.iter().any(|(k, _)| eps.contains(&k.src) && eps.contains(&k.dst)));
        let by_key: std::collections::HashMap<Tuple<A>, NatEntry<A>> = entries.iter().copied().collect();
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
            if !self.idle(now, key.proto, entry, partner) {
                continue;
            }
            // The walk is a snapshot, and a long one on a big table: since it was taken,
            // a packet may have brought the flow back (a client reusing its port: the
            // entries are refreshed in place, a SYN on a closed flow's tuple). Removing
            // it then breaks a live connection mid-stream, so both entries are read
            // again and must be as the snapshot saw them: no packet since.
            let [a, b] = datapath.conntrack_get(key)?;
            let Some(fresh) = a.or(b) else { continue };
            let [a, b] = datapath.conntrack_get(&partner_key)?;
            let fresh_partner = a.or(b);
            let seen = |e: Option<&NatEntry<A>>| e.map(|e| e.last_seen_ns);
            if fresh.last_seen_ns != entry.last_seen_ns || seen(fresh_partner.as_ref()) != seen(partner) {
                continue;
            }
            // The original direction first: a packet arriving in between finds no
            // original entry and starts a new flow, rather than a translation whose
            // reply entry is already gone.
            let (first, second) =
                if fresh.flags & CT_F_REPLY != 0 { (partner_key, *key) } else { (*key, partner_key) };
            removed += u64::from(datapath.remove_conntrack(&first)?);
            if fresh_partner.is_some() {
                removed += u64::from(datapath.remove_conntrack(&second)?);
            }
        }
        Ok((removed, hairpin))
    }
}

#[cfg(test)]
mod tests {
    use netpath_common::conntrack::TCP_SYN;

    use super::*;

    fn config() -> CtConfig {
        CtConfig {
            max_entries: 0,
            tcp_established: 21600,
            tcp_syn: 60,
            tcp_closing: 10,
            udp: 60,
            icmp: 30,
            gc_interval: 10,
        }
    }

    fn entry(flags: u8, state: u8, packets: u64) -> NatEntry<[u8; 4]> {
        NatEntry { flags, tcp_state: state, packets, ..Default::default() }
    }

    /// An established TCP flow keeps the long timeout only once its reply direction has
    /// seen a packet; a closing one is short either way.
    #[test]
    fn an_unanswered_tcp_flow_times_out_as_a_syn_whatever_its_first_packet() {
        let c = config();
        let orig = entry(0, TCP_ESTABLISHED, 1);
        let (silent, answered) = (entry(CT_F_REPLY, TCP_SYN, 0), entry(CT_F_REPLY, TCP_SYN, 1));
        assert_eq!(c.of(6, &orig, Some(&silent)), Duration::from_secs(60));
        assert_eq!(c.of(6, &silent, Some(&orig)), Duration::from_secs(60), "either order");
        assert_eq!(c.of(6, &orig, Some(&answered)), Duration::from_secs(21600));
        assert_eq!(c.of(6, &orig, None), Duration::from_secs(21600), "half a pair: as its state says");
        assert_eq!(c.of(6, &entry(0, TCP_CLOSING, 1), Some(&silent)), Duration::from_secs(10));
    }
}
