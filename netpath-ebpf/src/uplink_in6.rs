//! IPv6 on the node's uplink, tail-called by `uplink_in`: replies to masqueraded
//! (NAT66) flows and new connections to ports published on IPv6 (`PORT_MAPS6`) are
//! translated and delivered straight into their container; on a node with a routed
//! prefix, packets for a container's own address are delivered the same way,
//! untranslated. Everything else is the node's and passes untouched.
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use netpath_common::{
    conntrack::{NODE6_F_MASQUERADE, NODE_F_IPV6},
    maps::TAIL_ICMP6_TO_CONTAINER,
    trace::HOP_UPLINK_IN,
    Endpoint6Key, Reason,
};

use crate::{
    conntrack, flow, forward,
    headers::{ipv6, IP_OFF},
    maps::{ENDPOINTS6, NODE_CONFIG, NODE_CONFIG6, PROGS6},
    nat,
    packet::header,
    port_map, tc_entry,
};

const PASS: i32 = TC_ACT_OK as i32;

#[classifier]
pub fn uplink_in6(ctx: TcContext) -> i32 {
    tc_entry::run6(&ctx, HOP_UPLINK_IN, try_uplink_in6)
}

#[inline(always)]
fn try_uplink_in6(ctx: &TcContext) -> Result<(i32, Reason), Reason> {
    if NODE_CONFIG.get(0).is_none_or(|c| c.flags & NODE_F_IPV6 == 0) {
        return Ok((PASS, Reason::PassedToStack));
    }
    let Some(cfg6) = NODE_CONFIG6.get(0).copied() else {
        return Ok((PASS, Reason::PassedToStack));
    };
    let Ok(ip) = header::<[u8; ipv6::LEN], _>(ctx, IP_OFF) else {
        return Ok((PASS, Reason::PassedToStack));
    };
    // SAFETY: bounds-checked by header(); copied so later helper calls cannot invalidate it.
    let ip = unsafe { *ip };
    if ip[0] >> 4 != 6 {
        return Ok((PASS, Reason::PassedToStack));
    }
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&ip[ipv6::DST..ipv6::DST + 16]);
    if cfg6.flags & NODE6_F_MASQUERADE == 0 && cfg6.pod_prefix != 0 && cfg6.in_pod_cidr(&dst) {
        // A routed prefix: the outside reaches containers by their own addresses.
        return deliver(ctx, dst, ip[ipv6::HOP_LIMIT], Reason::Routed);
    }
    // The node's address takes replies to NAT66 flows and connections to published
    // ports (either masquerade setting: published ports need no masquerade).
    if cfg6.node_ip == [0; 16] || dst != cfg6.node_ip {
        return Ok((PASS, Reason::PassedToStack));
    }
    // What netpath cannot or need not translate is the node's own traffic, but for an
    // ICMPv6 error about a NAT66 flow.
    let Ok(flow) = flow::parse6(ctx) else {
        if ip[ipv6::NEXT_HDR] == ipv6::IPPROTO_ICMPV6 {
            // SAFETY: a tail call that succeeds does not return; the packet is then
            // icmp6_to_container's.
            let _ = unsafe { PROGS6.tail_call(ctx, TAIL_ICMP6_TO_CONTAINER) };
        }
        return Ok((PASS, Reason::PassedToStack));
    };
    let len = ctx.len();
    let (entry, reason) = match conntrack::lookup(&flow, len) {
        Some(e) => (e, Reason::NatTranslated),
        // A published port: the flow's pair of entries, then as any tracked flow. No
        // mapping (a port published for IPv4 only among them): the node's, whose stack
        // refuses it (RST, port unreachable) unless a node socket takes it.
        None => match port_map::target(&flow.key) {
            Some((ip, port)) => (conntrack::create_dnat(&flow, ip, port, len, true)?, Reason::DnatNewFlow),
            None => return Ok((PASS, Reason::PassedToStack)),
        },
    };
    let new_dst = nat::apply(ctx, &flow, &entry)?;
    deliver(ctx, new_dst.0, ip[ipv6::HOP_LIMIT], reason)
}

/// Into the container that owns `dst`, as its gateway.
#[inline(always)]
fn deliver(ctx: &TcContext, dst: [u8; 16], hops: u8, reason: Reason) -> Result<(i32, Reason), Reason> {
    // SAFETY: copied out at once.
    let Some(peer) = (unsafe { ENDPOINTS6.get(Endpoint6Key::new(dst)) }).copied() else {
        return if reason == Reason::Routed {
            Ok((PASS, Reason::PassedToStack))
        } else {
            Err(Reason::DropRedirectFailed)
        };
    };
    if hops <= 1 {
        return Ok((PASS, Reason::PassedToStack));
    }
    crate::container_path6::decrement_hop_limit_received(ctx, hops)?;
    let (action, _) = forward::to_container(ctx, forward::Hook::TcIngress, &peer, true)?;
    Ok((action, reason))
}
