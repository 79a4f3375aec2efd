//! Cluster mode: a packet for a pod on another node leaves through the overlay (a
//! collect-metadata VXLAN device, the outer destination set per packet from
//! `NODE_ROUTES` or `NODE_ROUTES6`) or, in native routing, through the node's routes;
//! both keep the pod addresses (no NAT). The overlay's outer header is IPv4 for either
//! inner family: the nodes' underlay addresses are IPv4.
use aya_ebpf::{
    bindings::{bpf_tunnel_key, TC_ACT_SHOT},
    helpers::generated::{bpf_redirect, bpf_skb_set_tunnel_key},
    programs::TcContext,
};
use netpath_common::{conntrack::ROUTE_F_NATIVE, trace::HOP_TO_TUNNEL, EndpointKey, NodeConfig, Reason};

use crate::{events, forward, frag_needed, maps::NODE_ROUTES};

/// The key's size up to the local-address fields: what every kernel since 4.x accepts
/// (5.10's struct ends there; newer kernels take this size as the older layout).
pub const TUNNEL_KEY_SIZE: u32 = core::mem::offset_of!(bpf_tunnel_key, __bindgen_anon_3) as u32;
const _: () = assert!(TUNNEL_KEY_SIZE == 28);
/// The outer header's TTL: the underlay is a few hops at most.
const OUTER_TTL: u8 = 64;

/// Sends the packet (from `src` on `ifindex`) to the node whose subnet holds `dst`.
#[inline(always)]
pub fn to_other_node(
    ctx: &TcContext,
    cfg: &NodeConfig,
    ifindex: u32,
    src: [u8; 4],
    dst: [u8; 4],
) -> Result<(i32, Reason), Reason> {
    let key = EndpointKey::new(cfg.node_subnet(dst));
    // SAFETY: copied out at once; the agent only replaces whole entries.
    let route = unsafe { NODE_ROUTES.get(key) }.copied().ok_or(Reason::DropNoNodeRoute)?;
    if frag_needed::too_big(ctx, cfg) {
        return frag_needed::reply(ctx, cfg, ifindex);
    }
    if !forward::decrement_ttl(ctx)? {
        return Ok((aya_ebpf::bindings::TC_ACT_OK as i32, Reason::PassedToStack));
    }
    if route.flags & ROUTE_F_NATIVE != 0 {
        return Ok((forward::to_fib(ctx, ifindex, src, dst)?, Reason::ToOtherNode));
    }
    into_overlay(ctx, cfg, route.underlay)
}

/// Encapsulates the packet (by the VXLAN device, from the key set here) towards the node
/// at `underlay`.
#[inline(always)]
pub fn into_overlay(ctx: &TcContext, cfg: &NodeConfig, underlay: [u8; 4]) -> Result<(i32, Reason), Reason> {
    if cfg.tunnel_ifindex == 0 {
        return Err(Reason::DropNoNodeRoute);
    }
    // SAFETY: plain data; every field the helper reads is set below or zero.
    let mut tk: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    tk.tunnel_id = cfg.vni;
    // The helper takes the remote address in host order.
    tk.__bindgen_anon_1.remote_ipv4 = u32::from_be_bytes(underlay);
    tk.tunnel_ttl = OUTER_TTL;
    // SAFETY: tk is a valid key of the size given; the skb is the program's.
    if unsafe { bpf_skb_set_tunnel_key(ctx.skb.skb, &mut tk, TUNNEL_KEY_SIZE, 0) } != 0 {
        return Err(Reason::DropRedirectFailed);
    }
    // SAFETY: plain helper call; the kernel validates the ifindex when it acts.
    let action = unsafe { bpf_redirect(cfg.tunnel_ifindex, 0) } as i32;
    if action == TC_ACT_SHOT {
        return Err(Reason::DropRedirectFailed);
    }
    events::egress_to_node(HOP_TO_TUNNEL, cfg.tunnel_ifindex, underlay);
    Ok((action, Reason::ToOtherNode))
}
