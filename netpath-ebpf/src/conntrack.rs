//! Connection tracking: find a flow's entry, create a flow's pair of entries, keep TCP
//! state and last-seen times for the agent's garbage collector.
//!
//! Two tables, as netfilter protects "assured" connections: a new flow's entries go to
//! CONNTRACK_NEW and move to CONNTRACK when the flow is assured (its originator sends
//! again after the first reply: the TCP handshake's final ACK, a UDP or ICMP exchange
//! continued). A flood of new flows only ever evicts other new flows.
use aya_ebpf::programs::TcContext;
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::generated::{bpf_get_prandom_u32, bpf_ktime_get_ns},
};
use netpath_common::{
    conntrack::NatEntry,
    conntrack::{
        Tuple, CT_F_DNAT, CT_F_REPLY, CT_F_SNAT, TCP_CLOSING, TCP_ESTABLISHED, TCP_SYN, TIME_WAIT_NS,
    },
    ClosedFlow, CtKey, CtKey6, Reason,
};

use crate::{
    counters,
    family::{Addr, Table, SCRATCH_CANDIDATE, SCRATCH_FLOW, SCRATCH_SOURCE},
    flow::{self, Flow, TcpStamp},
    headers::{tcp, IPPROTO_TCP},
    maps::{CONNTRACK, CONNTRACK_NEW, CT6_SCRATCH},
};

/// The error a NOEXIST insert returns when the key is taken.
const EEXIST: i32 = 17;

/// Ports tried before a new flow is refused for want of one. Bounded so the verifier
/// sees a finite loop; with a random start, 32 misses mean the range is nearly full.
const NAT_PORT_TRIES: u32 = 32;

#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// The entry for this packet's tuple, refreshed (last seen, counters, TCP state); a new
/// flow's entries move to CONNTRACK when this packet assures it. An entry of assured
/// flow returns at once; a new flow's original-direction entry whose reply entry is
/// gone (evicted) is half a pair: it is removed and the packet is a new flow's.
#[inline(always)]
pub fn lookup<A: Addr>(flow: &Flow<A>, len: u32) -> Option<NatEntry<A>> {
    if let Some(e) = A::assured().get_ptr_mut(&flow.key) {
        return Some(refresh(e, flow, len));
    }
    let entry = refresh(A::new_flows().get_ptr_mut(&flow.key)?, flow, len);
    if entry.flags & CT_F_REPLY == 0 && !assure(&flow.key, &entry) {
        let _ = A::new_flows().remove(&flow.key);
        return None;
    }
    Some(entry)
}

#[inline(always)]
fn refresh<A: Addr>(e: *mut NatEntry<A>, flow: &Flow<A>, len: u32) -> NatEntry<A> {
    // SAFETY: the map value stays valid for the program's run (RCU); racing updates of
    // these statistics fields from other CPUs are harmless.
    unsafe {
        (*e).last_seen_ns = now();
        (*e).packets += 1;
        (*e).bytes += len as u64;
        if flow.key.proto == IPPROTO_TCP {
            (*e).tcp_state = next_tcp_state((*e).tcp_state, flow.tcp_flags);
        }
        *e
    }
}

/// The originator of a new flow sent again: if a reply came before (and, for TCP, this
/// completed the handshake), the flow is assured and its pair moves to CONNTRACK, whole
/// or not at all. Returns false when the reply entry is in neither table: the pair was
/// half evicted.
#[inline(always)]
fn assure<A: Addr>(key: &Tuple<A>, entry: &NatEntry<A>) -> bool {
    let (assured, new_flows) = (A::assured(), A::new_flows());
    let reply_key = key.partner(entry);
    // Inserted straight from the map value: a copy on the stack would take 5.10's
    // verifier past its 512 bytes for the whole call chain.
    let Some(reply) = new_flows.get_ptr(&reply_key) else {
        // Another CPU may be moving this very pair: its reply entry goes to CONNTRACK
        // before it leaves CONNTRACK_NEW.
        return assured.get_ptr(&reply_key).is_some();
    };
    if key.proto == IPPROTO_TCP && entry.tcp_state != TCP_ESTABLISHED {
        return true;
    }
    // SAFETY: the map value stays valid for the program's run (RCU).
    let reply = unsafe { &*reply };
    if reply.packets == 0 {
        return true;
    }
    // An insert into a full LRU evicts, and the kernel frees in batches: the second
    // insert can evict the first. The pair leaves CONNTRACK_NEW only once both entries
    // are seen in CONNTRACK; else the flow stays new, whole, and tries again with its
    // next packet.
    if assured.insert(&reply_key, reply, 0).is_err() {
        return true;
    }
    if assured.insert(key, entry, 0).is_err() || assured.get_ptr(&reply_key).is_none() {
        let _ = assured.remove(key);
        let _ = assured.remove(&reply_key);
        return true;
    }
    let _ = new_flows.remove(&reply_key);
    let _ = new_flows.remove(key);
    true
}

/// A tracked entry for `key` in either table, for ICMP errors about the flow.
#[inline(always)]
pub fn find(key: &CtKey) -> Option<*mut netpath_common::CtEntry> {
    CONNTRACK.get_ptr_mut(key).or_else(|| CONNTRACK_NEW.get_ptr_mut(key))
}

#[inline(always)]
fn next_tcp_state(state: u8, flags: u8) -> u8 {
    if flags & (tcp::FIN | tcp::RST) != 0 {
        TCP_CLOSING
    } else if flags & tcp::SYN != 0 && flags & tcp::ACK == 0 {
        // A fresh SYN on a closing tuple: the port was reused for a new connection.
        if state == TCP_CLOSING {
            TCP_SYN
        } else {
            state
        }
    } else if state == TCP_SYN && flags & tcp::ACK != 0 && flags & tcp::SYN == 0 {
        TCP_ESTABLISHED
    } else {
        state
    }
}

/// A new TCP flow's entries start in SYN; the original direction's then takes its first
/// packet's flags, as any later packet's (a first packet with RST or FIN, the tail of a
/// connection the table lost, starts closing). One rule for both families: IPv6 builds
/// the pair in a program of its own and applies the flags at the lookup that follows.
#[inline(always)]
fn tcp_state_at_creation<A: Addr>(flags: u8, flow: &Flow<A>) -> u8 {
    match flow.key.proto {
        IPPROTO_TCP if flags & CT_F_REPLY == 0 => next_tcp_state(TCP_SYN, flow.tcp_flags),
        IPPROTO_TCP => TCP_SYN,
        _ => 0,
    }
}

#[inline(always)]
fn entry<A: Addr>(flags: u8, flow: &Flow<A>, len: u32) -> NatEntry<A> {
    let t = now();
    NatEntry {
        flags,
        tcp_state: tcp_state_at_creation(flags, flow),
        created_ns: t,
        last_seen_ns: t,
        packets: 1,
        bytes: len as u64,
        ..Default::default()
    }
}

/// Creates both entries of a flow whose original packet is `flow` and whose rewrite is
/// `orig`, in CONNTRACK_NEW; the reply entry undoes it. The reply's tuple must be free
/// in both tables (it is inserted with NOEXIST), so two flows can never claim the same
/// translated tuple: a clash is `DropNatPortsExhausted`. The pair is created whole or
/// not at all: when the table cannot hold both entries, the flow is refused
/// (`DropCtFull`).
#[inline(always)]
fn create_pair<A: Addr>(flow: &Flow<A>, orig: &NatEntry<A>, len: u32, reclaim: bool) -> Result<(), Reason> {
    let (assured, new_flows) = (A::assured(), A::new_flows());
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
    // Only the last attempt of a search may take over a closed flow's tuple; doing it
    // in every iteration multiplies the verifier's work past its limit.
    if assured.get_ptr(&reply_key).is_some() && !(reclaim && reclaim_closed(assured, &reply_key)) {
        return Err(Reason::DropNatPortsExhausted);
    }
    if let Err(e) = new_flows.insert(&reply_key, &reply, BPF_NOEXIST as u64) {
        if e != -EEXIST {
            return Err(Reason::DropCtFull);
        }
        if !reclaim || !reclaim_closed(new_flows, &reply_key) {
            return Err(Reason::DropNatPortsExhausted);
        }
        new_flows.insert(&reply_key, &reply, BPF_NOEXIST as u64).map_err(|_| Reason::DropCtFull)?;
    }
    // The second insert may evict the first (see assure): look again. The lookups also
    // mark both entries used, so the LRU's next pass keeps them over entries nobody has
    // touched since they came in.
    if new_flows.insert(&flow.key, orig, 0).is_err()
        || new_flows.get_ptr(&reply_key).is_none()
        || new_flows.get_ptr(&flow.key).is_none()
    {
        let _ = new_flows.remove(&flow.key);
        let _ = new_flows.remove(&reply_key);
        return Err(Reason::DropCtFull);
    }
    counters::count(Reason::CtCreated, 0);
    counters::count(Reason::CtCreated, 0);
    Ok(())
}

/// A TCP flow that has seen FIN or RST no longer needs its tuple: like a socket in
/// TIME_WAIT taken over by a new SYN, its entries are removed so the tuple (and the NAT
/// port it holds) can serve a new connection at once, instead of after the closing
/// timeout. Without this, a burst of short connections to one server exhausts the NAT
/// range within the timeout.
#[inline(always)]
fn reclaim_closed<A: Addr>(table: &Table<A>, key: &Tuple<A>) -> bool {
    // SAFETY: copied out at once.
    let Some(old) = (unsafe { table.get(key) }).copied() else { return false };
    if key.proto != IPPROTO_TCP {
        return false;
    }
    // Each direction keeps its own state: either side's FIN or RST closes the flow.
    let partner = key.partner(&old);
    // SAFETY: copied out at once.
    let partner_closing = unsafe { table.get(&partner) }.is_some_and(|p| p.tcp_state == TCP_CLOSING);
    if old.tcp_state != TCP_CLOSING && !partner_closing {
        return false;
    }
    let _ = table.remove(&partner);
    let _ = table.remove(key);
    // Removed by netpath, not evicted by the LRU: counted with the collector's removals.
    counters::count_entries(Reason::CtCollected, 2);
    true
}

/// Masquerade: a new flow from a container to the outside leaves with the node's address
/// and a source port (ICMP: identifier) from the configured range, unique for the
/// destination. For a TCP SYN (`syn`), ports whose previous flow to the same server
/// closed are taken only if the server will accept the SYN over that flow's TIME_WAIT
/// (see [`ClosedFlow`]); a port it would refuse is used only when nothing else is left.
#[inline(always)]
pub fn create_snat<A: Addr>(
    flow: &Flow<A>,
    nat_src: A,
    ports: (u16, u16),
    len: u32,
    syn: Option<TcpStamp>,
) -> Result<NatEntry<A>, Reason> {
    let port = snat_port(flow, nat_src, ports, syn)?;
    create_snat_on(flow, nat_src, port, len, syn, true)
}

/// The masquerade port search of [`create_snat`]: the first usable port of up to
/// [`NAT_PORT_TRIES`] from a random start (a BPF function of its own, snat_pick_port, that
/// only reads): a free one, or one whose flow has closed (taken over when the pair is
/// created), either way one whose server will take the SYN; else the first one tried.
#[inline(always)]
pub fn snat_port<A: Addr>(
    flow: &Flow<A>,
    nat_src: A,
    ports: (u16, u16),
    syn: Option<TcpStamp>,
) -> Result<u16, Reason> {
    let min = ports.0 as u32;
    let span = (ports.1 as u32).saturating_sub(min) + 1;
    if min == 0 || span == 0 {
        return Err(Reason::DropNatPortsExhausted);
    }
    // SAFETY: helper without arguments.
    let start = unsafe { bpf_get_prandom_u32() };
    let range = min as u64 | (ports.1 as u64) << 16 | (start as u64) << 32;
    let (syn_seq, syn_ts) = syn_words(syn);
    Ok(match A::pick_port(&flow.key, nat_src, range, syn_seq, syn_ts) {
        // Nothing usable among the ports tried: the first one, if its flow has closed.
        0 => (min + start % span) as u16,
        tried => (min + (start.wrapping_add(tried - 1)) % span) as u16,
    })
}

/// The masquerade pair of [`create_snat`] on source port `port`. `count`: the packet is
/// counted in the new entry (false when the caller's lookup of it will count it).
#[inline(always)]
pub fn create_snat_on<A: Addr>(
    flow: &Flow<A>,
    nat_src: A,
    port: u16,
    len: u32,
    syn: Option<TcpStamp>,
    count: bool,
) -> Result<NatEntry<A>, Reason> {
    let mut orig = entry(CT_F_SNAT, flow, len);
    if !count {
        orig.packets = 0;
        orig.bytes = 0;
    }
    orig.nat_src = nat_src;
    orig.nat_sport = port.to_be_bytes();
    // A port found free may have been taken by another CPU meanwhile: the flow then
    // fails like an exhausted range, and the client's retransmission tries again.
    create_pair(flow, &orig, len, true)?;
    if syn.is_some() {
        let _ = A::closed().remove(&flow.key.partner(&orig));
    }
    Ok(orig)
}

/// A SYN's stamp as two words: the sequence number with bit 32 set when there is a SYN
/// (bit 33 when it carries a timestamp), and the timestamp value.
#[inline(always)]
fn syn_words(syn: Option<TcpStamp>) -> (u64, u64) {
    match syn {
        None => (0, 0),
        Some(s) => {
            let ts = s.ts_val.is_some() as u64;
            (s.seq as u64 | 1 << 32 | ts << 33, s.ts_val.unwrap_or(0) as u64)
        }
    }
}

/// The masquerade port search of [`create_snat`]: up to [`NAT_PORT_TRIES`] ports of the
/// range from a random start, stopping at the first usable one (see
/// [`snat_port_usable`]); returns which try that was, from 1, or 0 when none is (the
/// port itself would be one more value to keep across the call, and this function's
/// stack frame, counted with from_container's, must stay within 5.10's 512 bytes). The flow's key as [`CtKey::to_words`]; `range`: the
/// range's first port (bits 0-15), its last (16-31) and the random start (32-63);
/// `syn_seq` and the high half of `ip_ts` the SYN as [`syn_words`]; the low half of
/// `ip_ts` the node's address (the translated source).
///
/// Global BPF functions (exported, never inlined), this one and the check it calls: the
/// kernel verifies each once, on its own, and from_container sees one call. Inlined, the
/// loop made 5.10's and 6.1's verifiers walk the check and everything after the loop
/// once per try (493k instructions processed on 6.1 with 32 tries, 96k with 4; 20-27 s
/// of every agent start under software emulation). Same checks, same order as before.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn snat_pick_port(lo: u64, hi: u64, range: u64, syn_seq: u64, ip_ts: u64) -> u32 {
    let min = (range & 0xffff) as u32;
    let span = (((range >> 16) & 0xffff) as u32).saturating_sub(min) + 1;
    let start = (range >> 32) as u32;
    if min == 0 || span == 0 {
        return 0;
    }
    let nat_src = (ip_ts as u32).to_ne_bytes();
    for i in 0..NAT_PORT_TRIES {
        let port = (min + (start.wrapping_add(i)) % span) as u16;
        let [slo, shi] = CtKey::snat_partner_words([lo, hi], nat_src, port.to_be_bytes());
        if snat_port_usable(slo, shi, syn_seq, ip_ts >> 32) != 0 {
            return i + 1;
        }
    }
    0
}

/// Can a masqueraded flow take the port in `server_side` (its partner tuple, as
/// [`CtKey::to_words`]) for the SYN in `syn_seq`/`syn_ts` ([`syn_words`])? Yes if a flow on
/// it closed and the server will take this SYN over its TIME_WAIT, or if no flow on it
/// closed recently and neither table holds it; 1 for yes.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn snat_port_usable(lo: u64, hi: u64, syn_seq: u64, syn_ts: u64) -> u32 {
    let words = [lo, hi];
    // SAFETY: CtKey is 16 bytes of plain data with alignment 1, and the words are its
    // bytes (CtKey::to_words, padding zero). Used in place: a key built field by field
    // would cost a memset call, a fifth stack frame in 5.10's count.
    let server_side = unsafe { &*words.as_ptr().cast::<CtKey>() };
    port_usable(server_side, syn_seq, syn_ts) as u32
}

/// [`snat_pick_port`] for IPv6: the same search, with the flow's key and the
/// masquerade source in this CPU's CT6_SCRATCH slots (a 40-byte key does not fit five
/// scalar arguments, and 5.10's BPF functions take nothing else).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn snat6_pick_port(range: u64, syn_seq: u64, syn_ts: u64) -> u32 {
    let min = (range & 0xffff) as u32;
    let span = (((range >> 16) & 0xffff) as u32).saturating_sub(min) + 1;
    let start = (range >> 32) as u32;
    if min == 0 || span == 0 {
        return 0;
    }
    let (Some(key), Some(source), Some(cand)) = (
        CT6_SCRATCH.get_ptr(SCRATCH_FLOW),
        CT6_SCRATCH.get_ptr(SCRATCH_SOURCE),
        CT6_SCRATCH.get_ptr_mut(SCRATCH_CANDIDATE),
    ) else {
        return 0;
    };
    for i in 0..NAT_PORT_TRIES {
        let port = (min + (start.wrapping_add(i)) % span) as u16;
        // SAFETY: this CPU's slots, valid for the program's run, written by the caller
        // (family::Addr::pick_port) before the call; nobody else writes them meanwhile.
        unsafe {
            (*cand).src = (*key).dst;
            (*cand).dst = (*source).src;
            (*cand).sport = (*key).dport;
            (*cand).dport = port.to_be_bytes();
            (*cand).proto = (*key).proto;
            (*cand)._pad = [0; 3];
        }
        if snat6_port_usable(syn_seq, syn_ts) != 0 {
            return i + 1;
        }
    }
    0
}

/// [`snat_port_usable`] for IPv6, on the candidate tuple in CT6_SCRATCH.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn snat6_port_usable(syn_seq: u64, syn_ts: u64) -> u32 {
    let Some(cand) = CT6_SCRATCH.get_ptr(SCRATCH_CANDIDATE) else { return 0 };
    // SAFETY: this CPU's slot, valid for the program's run.
    let server_side: &CtKey6 = unsafe { &*cand };
    port_usable(server_side, syn_seq, syn_ts) as u32
}

/// The check of [`snat_port_usable`], for either family.
#[inline(always)]
fn port_usable<A: Addr>(server_side: &Tuple<A>, syn_seq: u64, syn_ts: u64) -> bool {
    let syn = (syn_seq & 1 << 32 != 0).then(|| TcpStamp {
        end_seq: 0,
        seq: syn_seq as u32,
        ts_val: (syn_seq & 1 << 33 != 0).then_some(syn_ts as u32),
    });
    match reuse(server_side, syn) {
        Reuse::Refused => false,
        Reuse::AfterClose => true,
        Reuse::Fresh => {
            A::assured().get_ptr(server_side).is_none() && A::new_flows().get_ptr(server_side).is_none()
        }
    }
}

#[derive(PartialEq, Eq)]
enum Reuse {
    /// No flow on this tuple closed recently (as far as netpath remembers).
    Fresh,
    /// A flow on it closed, and the server will accept this SYN over its TIME_WAIT.
    AfterClose,
    /// The server would answer this SYN with an ACK for the old flow.
    Refused,
}

/// Would the server accept `syn` on the translated tuple `server_side` (its key as
/// replies arrive)? The rule of tcp_timewait_state_process: a newer timestamp when both
/// segments carry one, else a higher sequence number.
#[inline(always)]
fn reuse<A: Addr>(server_side: &Tuple<A>, syn: Option<TcpStamp>) -> Reuse {
    let Some(syn) = syn else { return Reuse::Fresh };
    // SAFETY: copied out at once.
    let Some(closed) = (unsafe { A::closed().get(server_side) }).copied() else { return Reuse::Fresh };
    if now().saturating_sub(closed.closed_ns) > TIME_WAIT_NS {
        return Reuse::AfterClose;
    }
    let newer = match (closed.has_ts != 0, syn.ts_val) {
        (true, Some(ts)) => (ts.wrapping_sub(closed.ts_val) as i32) > 0,
        _ => (syn.seq.wrapping_sub(closed.end_seq) as i32) > 0,
    };
    if newer {
        Reuse::AfterClose
    } else {
        Reuse::Refused
    }
}

/// A masqueraded TCP flow is closing: remember where the container's last segment
/// ended, for [`reuse`]. Later segments overwrite earlier ones, so the record ends with
/// the flow's final ACK. RSTs are not recorded: they carry no timestamp (the server's
/// TIME_WAIT keeps the last one it had), and a RST the server accepts leaves it no
/// TIME_WAIT at all.
#[inline(always)]
pub fn note_closing<A: Addr>(ctx: &TcContext, flow: &Flow<A>, entry: &NatEntry<A>) {
    if flow.key.proto != IPPROTO_TCP
        || entry.tcp_state != TCP_CLOSING
        || flow.tcp_flags & tcp::RST != 0
        || entry.flags & (CT_F_SNAT | CT_F_REPLY) != CT_F_SNAT
    {
        return;
    }
    let Some(st) = flow::tcp_stamp(ctx, flow) else { return };
    let record = ClosedFlow {
        end_seq: st.end_seq,
        ts_val: st.ts_val.unwrap_or(0),
        has_ts: st.ts_val.is_some() as u8,
        _pad: [0; 7],
        closed_ns: now(),
    };
    let _ = A::closed().insert(&flow.key.partner(entry), &record, 0);
}

/// Port mapping: a new connection to a published port is sent to `ip:port`, keeping the
/// client's address; replies get the node's address and the published port back.
/// `count`: the packet is counted now (else by the lookup that translates it).
#[inline(always)]
pub fn create_dnat<A: Addr>(
    flow: &Flow<A>,
    ip: A,
    port: [u8; 2],
    len: u32,
    count: bool,
) -> Result<NatEntry<A>, Reason> {
    let mut orig = entry(CT_F_DNAT, flow, len);
    if !count {
        orig.packets = 0;
        orig.bytes = 0;
    }
    orig.nat_dst = ip;
    orig.nat_dport = port;
    // A clash means a stale reply entry holds the tuple; the flow can't be tracked.
    create_pair(flow, &orig, len, false)?;
    Ok(orig)
}
