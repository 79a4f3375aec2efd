//! The model's own connection tracking, for either family (`A`, see [`Addr`]): the entry
//! pairs a translated flow should leave in CONNTRACK (keyed by each direction's tuple as
//! it arrives, saying how to rewrite it), the TCP state timeouts depend on, and the
//! memory of closed masqueraded flows that steers port reuse away from a server's
//! TIME_WAIT.
use netpath_common::{
    conntrack::{NatEntry, Tuple, CT_F_DNAT, CT_F_REPLY, CT_F_SNAT, TCP_CLOSING, TCP_ESTABLISHED, TCP_SYN},
    Reason,
};

use super::{
    family::Addr,
    flow::{tcp_stamp, Flow, Stamp, ACK, FIN, RST, SYN, TCP},
    Closed, Model,
};

/// TCP state as far as the collector's timeouts need it: FIN or RST closes, a bare SYN
/// reopens a closing tuple (port reuse), a SYN's first plain ACK establishes.
fn next_tcp_state(state: u8, flags: u8) -> u8 {
    if flags & (FIN | RST) != 0 {
        TCP_CLOSING
    } else if flags & SYN != 0 && flags & ACK == 0 {
        if state == TCP_CLOSING {
            TCP_SYN
        } else {
            state
        }
    } else if state == TCP_SYN && flags & ACK != 0 && flags & SYN == 0 {
        TCP_ESTABLISHED
    } else {
        state
    }
}

fn new_entry<A: Addr>(flags: u8, flow: &Flow<A>, len: u32) -> NatEntry<A> {
    NatEntry {
        flags,
        // The original direction takes its first packet's flags at once.
        tcp_state: match flow.key.proto {
            TCP if flags & CT_F_REPLY == 0 => next_tcp_state(TCP_SYN, flow.tcp_flags),
            TCP => TCP_SYN,
            _ => 0,
        },
        packets: 1,
        bytes: len as u64,
        ..Default::default()
    }
}

impl Model {
    /// The packet's entry, refreshed as a packet of its flow refreshes it. A new flow's
    /// pair moves to CONNTRACK when its originator sends again after a reply (TCP: once
    /// established); a new flow's original entry without its reply entry (evicted) is
    /// half a pair: removed, and the packet is a new flow's.
    pub(super) fn ct_lookup<A: Addr>(&mut self, flow: &Flow<A>, len: u32) -> Option<NatEntry<A>> {
        let ct = A::ct_mut(self);
        let e = ct.entries.get_mut(&flow.key)?;
        e.packets += 1;
        e.bytes += len as u64;
        if flow.key.proto == TCP {
            e.tcp_state = next_tcp_state(e.tcp_state, flow.tcp_flags);
        }
        let entry = *e;
        if ct.assured.contains(&flow.key) || entry.flags & CT_F_REPLY != 0 {
            return Some(entry);
        }
        let reply_key = flow.key.partner(&entry);
        let Some(reply) = ct.entries.get(&reply_key) else {
            ct.entries.remove(&flow.key);
            return None;
        };
        let established = flow.key.proto != TCP || entry.tcp_state == TCP_ESTABLISHED;
        if established && reply.packets > 0 && !ct.assured.contains(&reply_key) {
            ct.assured.insert(reply_key);
            ct.assured.insert(flow.key);
        }
        Some(entry)
    }

    /// Both entries of a new flow; the reply's tuple must be free (or, when `reclaim`,
    /// held by a closed TCP flow, which gives it up), so no two flows share a
    /// translated tuple.
    fn create_pair<A: Addr>(
        &mut self,
        flow: &Flow<A>,
        orig: &NatEntry<A>,
        len: u32,
        reclaim: bool,
    ) -> Result<(), ()> {
        let reply_key = flow.key.partner(orig);
        let mut reply = new_entry(CT_F_REPLY, flow, len);
        (reply.packets, reply.bytes) = (0, 0);
        if orig.flags & CT_F_SNAT != 0 {
            reply.flags |= CT_F_DNAT;
            (reply.nat_dst, reply.nat_dport) = (flow.key.src, flow.key.sport);
        }
        if orig.flags & CT_F_DNAT != 0 {
            reply.flags |= CT_F_SNAT;
            (reply.nat_src, reply.nat_sport) = (flow.key.dst, flow.key.dport);
        }
        if A::ct(self).entries.contains_key(&reply_key) && !(reclaim && self.reclaim_closed(&reply_key)) {
            return Err(());
        }
        // New flows start in CONNTRACK_NEW.
        let mut ct = A::ct_mut(self);
        ct.forget(&reply_key);
        ct.forget(&flow.key);
        ct.entries.insert(reply_key, reply);
        ct.entries.insert(flow.key, *orig);
        self.count(Reason::CtCreated, 0);
        self.count(Reason::CtCreated, 0);
        Ok(())
    }

    /// A TCP flow that saw FIN or RST (either direction) gives up its tuple at once.
    fn reclaim_closed<A: Addr>(&mut self, key: &Tuple<A>) -> bool {
        let mut ct = A::ct_mut(self);
        let Some(old) = ct.entries.get(key).copied() else { return false };
        if key.proto != TCP {
            return false;
        }
        let partner = key.partner(&old);
        let partner_closing = ct.entries.get(&partner).is_some_and(|p| p.tcp_state == TCP_CLOSING);
        if old.tcp_state != TCP_CLOSING && !partner_closing {
            return false;
        }
        ct.forget(&partner);
        ct.forget(key);
        self.reasons[Reason::CtCollected as usize].0 += 2;
        true
    }

    /// Masquerade: `nat_src` and a port of the range, unique per destination, preferring
    /// a port whose server will take this SYN. `count`: the packet is counted in the new
    /// entry (else it has 0 packets, and the caller's lookup of it counts it).
    ///
    /// The datapath starts its search at a random port; the model is exact for a
    /// one-port range only (every world it is used with has one).
    pub(super) fn create_snat<A: Addr>(
        &mut self,
        flow: &Flow<A>,
        nat_src: A,
        len: u32,
        syn: Option<Stamp>,
        count: bool,
    ) -> Result<NatEntry<A>, Reason> {
        let cfg = self.world.config;
        let (min, max) = (cfg.nat_port_min, cfg.nat_port_max);
        if min == 0 {
            return Err(Reason::DropNatPortsExhausted);
        }
        assert!(max <= min, "the model predicts masquerade only with a one-port NAT range");
        let mut orig = new_entry(CT_F_SNAT, flow, len);
        if !count {
            (orig.packets, orig.bytes) = (0, 0);
        }
        orig.nat_src = nat_src;
        orig.nat_sport = min.to_be_bytes();
        // With one port, the search's choice and its fallback are that port whatever
        // the server's TIME_WAIT would say: all that decides is whether its tuple is
        // free (or held by a closed flow).
        let server_side = flow.key.partner(&orig);
        self.create_pair(flow, &orig, len, true).map_err(|_| Reason::DropNatPortsExhausted)?;
        if syn.is_some() {
            A::ct_mut(self).closed.remove(&server_side);
        }
        Ok(orig)
    }

    /// A masqueraded TCP flow the container is closing: remember where its last segment
    /// ended (RSTs leave the server no TIME_WAIT to remember).
    pub(super) fn note_closing<A: Addr>(&mut self, p: &[u8], flow: &Flow<A>, entry: &NatEntry<A>) {
        if flow.key.proto != TCP
            || entry.tcp_state != TCP_CLOSING
            || flow.tcp_flags & RST != 0
            || entry.flags & (CT_F_SNAT | CT_F_REPLY) != CT_F_SNAT
        {
            return;
        }
        let st = tcp_stamp(p, flow);
        A::ct_mut(self)
            .closed
            .insert(flow.key.partner(entry), Closed { end_seq: st.end_seq, ts_val: st.ts_val });
    }

    /// Port mapping, of either family: to `ip:port`, keeping the client's address. A
    /// stale entry on the reply tuple refuses the flow. `count`: the packet is counted
    /// in the new entry (else it has 0 packets, and the caller's lookup of it counts it,
    /// its TCP flags included: IPv6's hairpin).
    pub(super) fn create_dnat<A: Addr>(
        &mut self,
        flow: &Flow<A>,
        ip: A,
        port: [u8; 2],
        len: u32,
        count: bool,
    ) -> Result<NatEntry<A>, Reason> {
        let mut orig = new_entry(CT_F_DNAT, flow, len);
        if !count {
            (orig.packets, orig.bytes) = (0, 0);
        }
        (orig.nat_dst, orig.nat_dport) = (ip, port);
        self.create_pair(flow, &orig, len, false).map_err(|_| Reason::DropNatPortsExhausted)?;
        Ok(orig)
    }
}
