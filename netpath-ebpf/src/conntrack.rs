//! Connection tracking: find a flow's entry, create a flow's pair of entries, keep TCP
//! state and last-seen times for the agent's garbage collector.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::generated::{bpf_get_prandom_u32, bpf_ktime_get_ns},
};
use netpath_common::{
    conntrack::{CT_F_DNAT, CT_F_REPLY, CT_F_SNAT, TCP_CLOSING, TCP_ESTABLISHED, TCP_SYN},
    CtEntry, NodeConfig, Reason,
};

use crate::{
    counters,
    flow::{Flow, IPPROTO_TCP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN as F_SYN},
    maps::CONNTRACK,
};

/// Ports tried before a new flow is refused for want of one. Bounded so the verifier
/// sees a finite loop; with a random start, 32 misses mean the range is nearly full.
const NAT_PORT_TRIES: u32 = 32;

#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// The entry for this packet's tuple, refreshed (last seen, counters, TCP state).
#[inline(always)]
pub fn lookup(flow: &Flow, len: u32) -> Option<CtEntry> {
    let e = CONNTRACK.get_ptr_mut(&flow.key)?;
    // SAFETY: the map value stays valid for the program's run (RCU); racing updates of
    // these statistics fields from other CPUs are harmless.
    unsafe {
        (*e).last_seen_ns = now();
        (*e).packets += 1;
        (*e).bytes += len as u64;
        if flow.key.proto == IPPROTO_TCP {
            (*e).tcp_state = next_tcp_state((*e).tcp_state, flow.tcp_flags);
        }
        Some(*e)
    }
}

#[inline(always)]
fn next_tcp_state(state: u8, flags: u8) -> u8 {
    if flags & (TCP_FIN | TCP_RST) != 0 {
        TCP_CLOSING
    } else if flags & F_SYN != 0 && flags & TCP_ACK == 0 {
        // A fresh SYN on a closing tuple: the port was reused for a new connection.
        if state == TCP_CLOSING {
            TCP_SYN
        } else {
            state
        }
    } else if state == TCP_SYN && flags & TCP_ACK != 0 && flags & F_SYN == 0 {
        TCP_ESTABLISHED
    } else {
        state
    }
}

#[inline(always)]
fn entry(flags: u8, flow: &Flow, len: u32) -> CtEntry {
    let t = now();
    CtEntry {
        flags,
        tcp_state: if flow.key.proto == IPPROTO_TCP { TCP_SYN } else { 0 },
        created_ns: t,
        last_seen_ns: t,
        packets: 1,
        bytes: len as u64,
        ..Default::default()
    }
}

/// Creates both entries of a flow whose original packet is `flow` and whose rewrite is
/// `orig`; the reply entry undoes it. The reply is inserted first with NOEXIST, so two
/// flows can never claim the same translated tuple.
#[inline(always)]
fn create_pair(flow: &Flow, orig: &CtEntry, len: u32) -> Result<(), ()> {
    let reply_key = flow.key.partner(orig);
    let mut reply = entry(CT_F_REPLY, flow, len);
    reply.packets = 0;
    reply.bytes = 0;
    if orig.flags & CT_F_SNAT != 0 {
        reply.flags |= CT_F_DNAT;
        reply.nat_dst = flow.key.src;
        reply.nat_dport = flow.key.sport;
    }
    if orig.flags & CT_F_DNAT != 0 {
        reply.flags |= CT_F_SNAT;
        reply.nat_src = flow.key.dst;
        reply.nat_sport = flow.key.dport;
    }
    CONNTRACK.insert(&reply_key, &reply, BPF_NOEXIST as u64).map_err(|_| ())?;
    if CONNTRACK.insert(&flow.key, orig, 0).is_err() {
        let _ = CONNTRACK.remove(&reply_key);
        return Err(());
    }
    counters::count(Reason::CtCreated, 0);
    counters::count(Reason::CtCreated, 0);
    Ok(())
}

/// Masquerade: a new flow from a container to the outside leaves with the node's address
/// and a source port (ICMP: identifier) from the configured range, unique for the
/// destination.
#[inline(always)]
pub fn create_snat(flow: &Flow, cfg: &NodeConfig, len: u32) -> Result<CtEntry, Reason> {
    let min = cfg.nat_port_min as u32;
    let span = (cfg.nat_port_max as u32).saturating_sub(min) + 1;
    if min == 0 || span == 0 {
        return Err(Reason::DropNatPortsExhausted);
    }
    // SAFETY: helper without arguments.
    let start = unsafe { bpf_get_prandom_u32() };
    let mut orig = entry(CT_F_SNAT, flow, len);
    orig.nat_src = cfg.node_ip;
    for i in 0..NAT_PORT_TRIES {
        let port = (min + (start.wrapping_add(i)) % span) as u16;
        orig.nat_sport = port.to_be_bytes();
        if create_pair(flow, &orig, len).is_ok() {
            return Ok(orig);
        }
    }
    Err(Reason::DropNatPortsExhausted)
}

/// Port mapping: a new connection to a published port is sent to `ip:port`, keeping the
/// client's address; replies get the node's address and the published port back.
#[inline(always)]
pub fn create_dnat(flow: &Flow, ip: [u8; 4], port: [u8; 2], len: u32) -> Result<CtEntry, Reason> {
    let mut orig = entry(CT_F_DNAT, flow, len);
    orig.nat_dst = ip;
    orig.nat_dport = port;
    // A clash means a stale reply entry holds the tuple; the flow can't be tracked.
    create_pair(flow, &orig, len).map_err(|_| Reason::DropNatPortsExhausted)?;
    Ok(orig)
}
