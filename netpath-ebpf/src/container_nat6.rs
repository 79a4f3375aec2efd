//! NAT66 masquerade of what a container sends to the outside, tail-called by
//! container_path6 once it has validated the sender and found the destination outside
//! the node: IPv4's masquerade (conntrack pairs, TCP state, the port choice that
//! respects the server's TIME_WAIT) on IPv6's tables, then out through the node's routes.
//!
//! Also the IPv6 hairpin (a container's new connection to a port published on the
//! node's address, DNATed into its container, client address kept) and what a
//! container with published ports sends to a local peer or, on a routed prefix, out:
//! replies to flows made to the node's address are translated back, the rest goes on
//! untranslated.
//!
//! Three programs, each with a 512-byte stack of its own: `container_nat6` translates
//! and routes with the flow's entry; on a miss it tail-calls `container_snat6` (the port
//! search, or the hairpin's pair), which tail-calls `container_pair6` (the pair of
//! entries), which tail-calls `container_nat6` back. IPv6's 40-byte keys and 72-byte entries, the port search's
//! BPF-function frames and the translation do not fit one (nor two).
use aya_ebpf::{macros::classifier, programs::TcContext};
use netpath_common::{
    conntrack::{CT_F_DNAT, CT_F_REPLY, CT_F_SNAT, NODE6_F_MASQUERADE},
    maps::{TAIL_CONTAINER_NAT6, TAIL_CONTAINER_PAIR6, TAIL_CONTAINER_SNAT6, TAIL_ICMP6_FROM_CONTAINER},
    CtEntry6, Endpoint6Key, Ip6, NodeConfig6, Reason, ENDPOINT_F_NETKIT,
};

use crate::{
    conntrack,
    container_path6::decrement_hop_limit,
    family::{Addr, SCRATCH_PORT},
    flow::{self, Flow},
    forward::{self, Hook},
    headers::{ipv6, tcp, IPPROTO_TCP, IP_OFF},
    maps::{CT6_SCRATCH, ENDPOINTS6, NODE_CONFIG, NODE_CONFIG6, PROGS6},
    nat,
    packet::{header, ifindex, OrMalformed},
    port_map, tc_entry,
};

const PASS: i32 = aya_ebpf::bindings::TC_ACT_OK as i32;

#[classifier]
pub fn container_nat6(ctx: TcContext) -> i32 {
    tc_entry::resume6(&ctx, |ctx| {
        let Some(cfg6) = NODE_CONFIG6.get(0).copied() else {
            return Err(Reason::DropRedirectFailed);
        };
        let routed = cfg6.flags & NODE6_F_MASQUERADE == 0;
        let flow = match flow::parse6(ctx) {
            Ok(flow) => flow,
            Err(reason) => return untranslatable(ctx, &cfg6, reason),
        };
        let node = flow.key.dst.0 == cfg6.node_ip;
        let Some(entry) = conntrack::lookup(&flow, ctx.len()) else {
            if node {
                // Only a connection's first packet to a published port starts a hairpin
                // (container_snat6 makes the pair); the rest is the node's.
                if opens_connection(&flow) && port_map::target(&flow.key).is_some() {
                    // SAFETY: a tail call that succeeds does not return.
                    let _ = unsafe { PROGS6.tail_call(ctx, TAIL_CONTAINER_SNAT6) };
                }
                return Ok((PASS, Reason::PassedToStack));
            }
            // A published container's packet for a local peer that is no reply.
            if let Some(done) = to_local(ctx, &flow.key.src, &flow.key.dst) {
                return done.map(|(action, _)| (action, Reason::ForwardedToPeer));
            }
            if routed {
                // A routed prefix (the sender has published ports, or it would not be
                // here): what is no reply leaves untranslated.
                return route(ctx, flow.key.src, flow.key.dst, Reason::Routed);
            }
            // SAFETY: a tail call that succeeds does not return; the packet, unchanged,
            // is then container_snat6's.
            let _ = unsafe { PROGS6.tail_call(ctx, TAIL_CONTAINER_SNAT6) };
            // An empty slot: an agent still loading. Untranslated, it must not leave.
            return Err(Reason::DropRedirectFailed);
        };
        // The first packet of a flow comes back from container_snat6 with its entry
        // new: counted as the new flow it is.
        let reason = match entry.packets == 1 && entry.flags & CT_F_REPLY == 0 {
            true if entry.flags & CT_F_DNAT != 0 => Reason::DnatNewFlow,
            true => Reason::SnatNewFlow,
            false => Reason::NatTranslated,
        };
        translate_and_route(ctx, &flow, &entry, reason)
    })
}

/// A packet conntrack cannot take (see flow::parse6): the node's own are the stack's;
/// an ICMPv6 error may be about a tracked flow (icmp6_from_container); else it goes on
/// untranslated where that is allowed (a local peer, a routed prefix), or is dropped.
#[inline(always)]
fn untranslatable(ctx: &TcContext, cfg6: &NodeConfig6, reason: Reason) -> Result<(i32, Reason), Reason> {
    let [src, dst]: [Ip6; 2] = ctx.load(<Ip6 as Addr>::SRC_OFF).or_malformed()?;
    if dst.0 == cfg6.node_ip {
        return Ok((PASS, Reason::PassedToStack));
    }
    if reason == Reason::DropUnsupportedProtocol {
        let next: *const u8 = header(ctx, IP_OFF + ipv6::NEXT_HDR)?;
        // SAFETY: bounds-checked by header().
        if unsafe { *next } == ipv6::IPPROTO_ICMPV6 {
            // SAFETY: a tail call that succeeds does not return; the packet is then
            // icmp6_from_container's.
            let _ = unsafe { PROGS6.tail_call(ctx, TAIL_ICMP6_FROM_CONTAINER) };
            return Err(Reason::DropUnsupportedProtocol);
        }
    }
    untranslated(ctx, cfg6, src, dst).unwrap_or(Err(reason))
}

/// A packet that is no tracked flow's, where it may go as it is: into a local peer (a
/// published container's), or out on a routed prefix. None: it may not.
#[inline(always)]
pub fn untranslated(
    ctx: &TcContext,
    cfg6: &NodeConfig6,
    src: Ip6,
    dst: Ip6,
) -> Option<Result<(i32, Reason), Reason>> {
    if let Some(done) = to_local(ctx, &src, &dst) {
        return Some(done.map(|(action, _)| (action, Reason::ForwardedToPeer)));
    }
    (cfg6.flags & NODE6_F_MASQUERADE == 0).then(|| route(ctx, src, dst, Reason::Routed))
}

/// A TCP SYN without ACK, or any packet of the connectionless protocols.
#[inline(always)]
fn opens_connection(flow: &Flow<Ip6>) -> bool {
    flow.key.proto != IPPROTO_TCP || (flow.tcp_flags & tcp::SYN != 0 && flow.tcp_flags & tcp::ACK == 0)
}

/// A new flow's masquerade, first half: the port search. The port goes to
/// container_pair6 in this CPU's scratch (a tail call carries nothing but the packet).
#[classifier]
pub fn container_snat6(ctx: TcContext) -> i32 {
    tc_entry::resume6(&ctx, |ctx| {
        let flow = flow::parse6(ctx)?;
        let (Some(cfg), Some(cfg6)) = (NODE_CONFIG.get(0), NODE_CONFIG6.get(0)) else {
            return Err(Reason::DropNatPortsExhausted);
        };
        if flow.key.dst.0 == cfg6.node_ip {
            // A hairpin: a container's new connection to a published port of the node.
            // Its pair uncounted; container_nat6 counts the packet when it translates it.
            let (ip, port) = port_map::target(&flow.key).ok_or(Reason::DropNoEndpoint)?;
            conntrack::create_dnat(&flow, ip, port, ctx.len(), false)?;
            crate::hairpin::opened();
            // SAFETY: a tail call that succeeds does not return.
            let _ = unsafe { PROGS6.tail_call(ctx, TAIL_CONTAINER_NAT6) };
            return Err(Reason::DropRedirectFailed);
        }
        let syn = if flow.key.proto == IPPROTO_TCP { flow::tcp_stamp(ctx, &flow) } else { None };
        let port = conntrack::snat_port(&flow, Ip6(cfg6.node_ip), (cfg.nat_port_min, cfg.nat_port_max), syn)?;
        let slot = CT6_SCRATCH.get_ptr_mut(SCRATCH_PORT).ok_or(Reason::DropNatPortsExhausted)?;
        // SAFETY: this CPU's slot; nothing runs on this CPU between here and the tail call.
        unsafe { (*slot).sport = port.to_be_bytes() };
        // SAFETY: a tail call that succeeds does not return; the packet, unchanged, is
        // then container_pair6's.
        let _ = unsafe { PROGS6.tail_call(ctx, TAIL_CONTAINER_PAIR6) };
        Err(Reason::DropRedirectFailed)
    })
}

/// A new flow's masquerade, second half: the pair of entries on the port found, then
/// container_nat6 translates and routes the packet with them (and counts it).
#[classifier]
pub fn container_pair6(ctx: TcContext) -> i32 {
    tc_entry::resume6(&ctx, |ctx| {
        let flow = flow::parse6(ctx)?;
        let (Some(cfg6), Some(slot)) = (NODE_CONFIG6.get(0), CT6_SCRATCH.get_ptr(SCRATCH_PORT)) else {
            return Err(Reason::DropNatPortsExhausted);
        };
        // SAFETY: this CPU's slot, written by container_snat6 for this packet.
        let port = u16::from_be_bytes(unsafe { (*slot).sport });
        let syn = if flow.key.proto == IPPROTO_TCP { flow::tcp_stamp(ctx, &flow) } else { None };
        conntrack::create_snat_on(&flow, Ip6(cfg6.node_ip), port, 0, syn, false)?;
        // SAFETY: a tail call that succeeds does not return. Should the entries be gone
        // again when it looks, container_nat6 comes back here: the kernel's limit of 33
        // tail calls per packet ends that (as a drop), not a loop.
        let _ = unsafe { PROGS6.tail_call(ctx, TAIL_CONTAINER_NAT6) };
        Err(Reason::DropRedirectFailed)
    })
}

/// Out through the node's routes from `src` to `dst`, as the container's router.
#[inline(always)]
fn route(ctx: &TcContext, src: Ip6, dst: Ip6, reason: Reason) -> Result<(i32, Reason), Reason> {
    let hops: *const u8 = header(ctx, IP_OFF + ipv6::HOP_LIMIT)?;
    // SAFETY: bounds-checked by header().
    decrement_hop_limit(ctx, unsafe { *hops })?;
    Ok((forward::to_fib(ctx, ifindex(ctx), src, dst)?, reason))
}

/// Into the local container `dst`, as its router, if it is one; the sender `src` (a
/// container) says how (netkit or veth). container_path6 checked the hop limit.
#[inline(always)]
pub fn to_local(ctx: &TcContext, src: &Ip6, dst: &Ip6) -> Option<Result<(i32, Reason), Reason>> {
    // SAFETY: copied out at once.
    let peer = unsafe { ENDPOINTS6.get(Endpoint6Key::new(dst.0)) }.copied()?;
    // SAFETY: as above.
    let netkit =
        unsafe { ENDPOINTS6.get(Endpoint6Key::new(src.0)) }.is_some_and(|s| s.flags & ENDPOINT_F_NETKIT != 0);
    let hook = if netkit { Hook::NetkitXmit } else { Hook::TcIngress };
    Some((|| {
        let hops: *const u8 = header(ctx, IP_OFF + ipv6::HOP_LIMIT)?;
        // SAFETY: bounds-checked by header().
        decrement_hop_limit(ctx, unsafe { *hops })?;
        forward::to_container(ctx, hook, &peer, true)
    })())
}

#[inline(always)]
fn translate_and_route(
    ctx: &TcContext,
    flow: &Flow<Ip6>,
    entry: &CtEntry6,
    reason: Reason,
) -> Result<(i32, Reason), Reason> {
    // container_path6 checked the hop limit; a tail call carries nothing but the packet.
    let hops: *const u8 = header(ctx, IP_OFF + ipv6::HOP_LIMIT)?;
    // SAFETY: bounds-checked by header().
    let hops = unsafe { *hops };
    conntrack::note_closing(ctx, flow, entry);
    let new_dst = nat::apply(ctx, flow, entry)?;
    // A hairpinned flow, or the reply to one: into its local container.
    if let Some(done) = to_local(ctx, &flow.key.src, &new_dst) {
        return done.map(|(action, _)| (action, reason));
    }
    decrement_hop_limit(ctx, hops)?;
    let new_src = if entry.flags & CT_F_SNAT != 0 { entry.nat_src } else { flow.key.src };
    Ok((forward::to_fib(ctx, ifindex(ctx), new_src, new_dst)?, reason))
}
