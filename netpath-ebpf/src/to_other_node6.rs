//! Cluster mode's half of what a container sends over IPv6: a packet for a pod of the
//! IPv6 cluster CIDR on another node, tail-called from container_path6 once it has
//! validated the sender. Into the overlay (the outer header IPv4, to the other node's
//! underlay address) or, in native routing, out through the node's route to the other
//! node's IPv6 subnet (the agent installs it via that node's IPv6 underlay address);
//! hop limit - 1 either way, addresses kept; a packet bigger than the path carries is
//! answered with ICMPv6 packet too big (see packet_too_big). A program of its own, in a
//! slot of its own (see netpath_common::maps::CLUSTER_PROGS6).
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use netpath_common::{conntrack::ROUTE_F_NATIVE, Endpoint6Key, Ip6, Reason};

use crate::{
    container_path6::decrement_hop_limit,
    forward,
    headers::{ipv6, IP_OFF},
    maps::{NODE_CONFIG, NODE_CONFIG6, NODE_ROUTES6},
    packet::{header, ifindex},
    packet_too_big, tc_entry, tunnel,
};

const PASS: i32 = TC_ACT_OK as i32;

#[classifier]
pub fn to_other_node6(ctx: TcContext) -> i32 {
    tc_entry::resume6(&ctx, try_to_other_node6)
}

#[inline(always)]
fn try_to_other_node6(ctx: &TcContext) -> Result<(i32, Reason), Reason> {
    // container_path6 checked the frame is IPv6; a tail call carries nothing but the packet.
    let ip: *const [u8; ipv6::LEN] = header(ctx, IP_OFF)?;
    // SAFETY: bounds-checked by header(); copied so later helper calls cannot invalidate it.
    let ip = unsafe { *ip };
    let (src, dst) = (addr(&ip, ipv6::SRC), addr(&ip, ipv6::DST));
    let cfg6 = NODE_CONFIG6.get(0).ok_or(Reason::DropNoNodeRoute)?;
    let key = Endpoint6Key::new(cfg6.node_subnet(&dst));
    // SAFETY: copied out at once; the agent only replaces whole entries.
    let route = unsafe { NODE_ROUTES6.get(key) }.copied().ok_or(Reason::DropNoNodeRoute)?;
    let cfg = NODE_CONFIG.get(0).ok_or(Reason::DropNoNodeRoute)?;
    // Before the hop limit changes: the error quotes the packet as the pod sent it.
    if packet_too_big::too_big(ctx, cfg) {
        return packet_too_big::reply(ctx, cfg, ifindex(ctx));
    }
    let hops = ip[ipv6::HOP_LIMIT];
    if hops <= 1 {
        // The stack sends the time-exceeded.
        return Ok((PASS, Reason::PassedToStack));
    }
    decrement_hop_limit(ctx, hops)?;
    if route.flags & ROUTE_F_NATIVE != 0 {
        return Ok((forward::to_fib(ctx, ifindex(ctx), Ip6(src), Ip6(dst))?, Reason::ToOtherNode));
    }
    tunnel::into_overlay(ctx, cfg, route.underlay)
}

#[inline(always)]
pub fn addr(ip: &[u8; ipv6::LEN], at: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&ip[at..at + 16]);
    a
}
