//! NAT66 masquerade of what a container sends to the outside, tail-called by
//! container_path6 once it has validated the sender and found the destination outside
//! the node: IPv4's masquerade (conntrack pairs, TCP state, the port choice that
//! respects the server's TIME_WAIT) on IPv6's tables, then out through the node's routes.
//!
//! Three programs, each with a 512-byte stack of its own: `container_nat6` translates
//! and routes with the flow's entry; on a miss it tail-calls `container_snat6` (the port
//! search), which tail-calls `container_pair6` (the pair of entries), which tail-calls
//! `container_nat6` back. IPv6's 40-byte keys and 72-byte entries, the port search's
//! BPF-function frames and the translation do not fit one (nor two).
use aya_ebpf::{macros::classifier, programs::TcContext};
use netpath_common::{
    conntrack::{CT_F_SNAT, NODE6_F_MASQUERADE},
    maps::{TAIL_CONTAINER_NAT6, TAIL_CONTAINER_PAIR6, TAIL_CONTAINER_SNAT6, TAIL_ICMP6_FROM_CONTAINER},
    CtEntry6, Ip6, Reason,
};

use crate::{
    conntrack,
    container_path6::decrement_hop_limit,
    family::SCRATCH_PORT,
    flow::{self, Flow},
    forward,
    headers::{ipv6, IPPROTO_TCP, IP_OFF},
    maps::{CT6_SCRATCH, NODE_CONFIG, NODE_CONFIG6, PROGS6},
    nat,
    packet::{header, ifindex},
    tc_entry,
};

#[classifier]
pub fn container_nat6(ctx: TcContext) -> i32 {
    tc_entry::resume6(&ctx, |ctx| {
        let flow = match flow::parse6(ctx) {
            Ok(flow) => flow,
            Err(Reason::DropUnsupportedProtocol) => {
                let next: *const u8 = header(ctx, IP_OFF + ipv6::NEXT_HDR)?;
                // SAFETY: bounds-checked by header().
                if unsafe { *next } == ipv6::IPPROTO_ICMPV6 {
                    // SAFETY: a tail call that succeeds does not return; the packet is
                    // then icmp6_from_container's, which takes an ICMPv6 error about a
                    // NAT66 flow.
                    let _ = unsafe { PROGS6.tail_call(ctx, TAIL_ICMP6_FROM_CONTAINER) };
                }
                return Err(Reason::DropUnsupportedProtocol);
            }
            Err(reason) => return Err(reason),
        };
        let Some(entry) = conntrack::lookup(&flow, ctx.len()) else {
            if NODE_CONFIG6.get(0).is_some_and(|c| c.flags & NODE6_F_MASQUERADE == 0) {
                // A routed prefix (the sender has published ports, or it would not be
                // here): what is no reply leaves untranslated.
                return route(ctx, &flow);
            }
            // SAFETY: a tail call that succeeds does not return; the packet, unchanged,
            // is then container_snat6's.
            let _ = unsafe { PROGS6.tail_call(ctx, TAIL_CONTAINER_SNAT6) };
            // An empty slot: an agent still loading. Untranslated, it must not leave.
            return Err(Reason::DropRedirectFailed);
        };
        // The first packet of a flow comes back from container_snat6 with its entry
        // new: counted as the new flow it is.
        let reason = if entry.packets == 1 && entry.flags & netpath_common::conntrack::CT_F_REPLY == 0 {
            Reason::SnatNewFlow
        } else {
            Reason::NatTranslated
        };
        translate_and_route(ctx, &flow, &entry, reason)
    })
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

/// Out through the node's routes with the container's own address.
#[inline(always)]
fn route(ctx: &TcContext, flow: &Flow<Ip6>) -> Result<(i32, Reason), Reason> {
    let hops: *const u8 = header(ctx, IP_OFF + ipv6::HOP_LIMIT)?;
    // SAFETY: bounds-checked by header().
    decrement_hop_limit(ctx, unsafe { *hops })?;
    Ok((forward::to_fib(ctx, ifindex(ctx), flow.key.src, flow.key.dst)?, Reason::Routed))
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
    decrement_hop_limit(ctx, hops)?;
    let new_src = if entry.flags & CT_F_SNAT != 0 { entry.nat_src } else { flow.key.src };
    Ok((forward::to_fib(ctx, ifindex(ctx), new_src, new_dst)?, reason))
}
