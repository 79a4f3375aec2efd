//! Cluster mode: IPv6 from a pod on another node to one of this node's, delivered
//! straight into its container (`bpf_redirect_peer`, hop limit - 1, addresses kept),
//! past the node's stack and its ip6tables. From the overlay, from_tunnel calls
//! [`deliver`] with the outer source: only the node that owns the inner source's subnet
//! (by NODE_ROUTES6) may send it. Natively routed, it arrives on the uplink: uplink_in
//! tail-calls `from_other_node6` for IPv6 on a node with `NODE_F_NATIVE6`, which takes
//! what is from the cluster's pods to this node's and hands everything else on to
//! uplink_in6, untouched and not yet traced.
use aya_ebpf::{
    bindings::TC_ACT_OK, helpers::generated::bpf_skb_change_type, macros::classifier, programs::TcContext,
};
use netpath_common::{maps::TAIL_UPLINK_IN6, trace::HOP_UPLINK_IN, Endpoint6Key, NodeConfig6, Reason};

use crate::{
    container_path6::decrement_hop_limit_received,
    forward::{self, Hook},
    headers::{ipv6, IP_OFF},
    maps::{ENDPOINTS6, NODE_CONFIG6, NODE_ROUTES6, PROGS6},
    packet::header,
    tc_entry,
    to_other_node6::addr,
};

const PASS: i32 = TC_ACT_OK as i32;
/// skb->pkt_type of a frame for this host (linux/if_packet.h).
const PACKET_HOST: u32 = 0;

#[classifier]
pub fn from_other_node6(ctx: TcContext) -> i32 {
    if from_a_pod_to_ours(&ctx) {
        return tc_entry::run6(&ctx, HOP_UPLINK_IN, |ctx| deliver(ctx, None));
    }
    // SAFETY: a tail call that succeeds does not return; the packet is uplink_in6's,
    // which traces it.
    let _ = unsafe { PROGS6.tail_call(&ctx, TAIL_UPLINK_IN6) };
    PASS
}

/// Is the packet from a pod of the cluster to a pod of this node (native routing)?
#[inline(always)]
fn from_a_pod_to_ours(ctx: &TcContext) -> bool {
    let (Some(cfg6), Ok(ip)) = (NODE_CONFIG6.get(0), header::<[u8; ipv6::LEN], _>(ctx, IP_OFF)) else {
        return false;
    };
    // SAFETY: bounds-checked by header().
    let ip = unsafe { &*ip };
    ip[0] >> 4 == 6
        && cfg6.in_cluster_cidr(&addr(ip, ipv6::SRC))
        && cfg6.pod_prefix != 0
        && cfg6.in_pod_cidr(&addr(ip, ipv6::DST))
}

/// Delivers an IPv6 packet from another node's pod into the local container it is
/// for. `sender`: the outer source of an overlay packet, checked against the owner of
/// the inner source's subnet; None for native routing (as IPv4's, which trusts the
/// underlay's routing).
#[inline(always)]
pub fn deliver(ctx: &TcContext, sender: Option<[u8; 4]>) -> Result<(i32, Reason), Reason> {
    let ip: *const [u8; ipv6::LEN] = header(ctx, IP_OFF)?;
    // SAFETY: bounds-checked by header(); copied so later helper calls cannot invalidate it.
    let ip = unsafe { *ip };
    if ip[0] >> 4 != 6 {
        return Err(Reason::DropMalformed);
    }
    let (src, dst) = (addr(&ip, ipv6::SRC), addr(&ip, ipv6::DST));
    let cfg6: NodeConfig6 = NODE_CONFIG6.get(0).copied().unwrap_or_default();
    if !cfg6.in_cluster_cidr(&src) {
        return Err(Reason::DropSpoofedSource);
    }
    if let Some(sender) = sender {
        // SAFETY: copied out at once; the agent only replaces whole entries.
        let owner =
            unsafe { NODE_ROUTES6.get(Endpoint6Key::new(cfg6.node_subnet(&src))) }.map(|r| r.underlay);
        if owner != Some(sender) {
            return Err(Reason::DropSpoofedSource);
        }
    }
    // SAFETY: copied out at once.
    let Some(peer) = (unsafe { ENDPOINTS6.get(Endpoint6Key::new(dst)) }).copied() else {
        return if cfg6.pod_prefix != 0 && cfg6.in_pod_cidr(&dst) {
            Err(Reason::DropNoEndpoint)
        } else {
            Ok((PASS, Reason::PassedToStack))
        };
    };
    let hops = ip[ipv6::HOP_LIMIT];
    if hops <= 1 {
        return Ok((PASS, Reason::PassedToStack));
    }
    decrement_hop_limit_received(ctx, hops)?;
    // The frame was addressed to the sending node's gateway MAC (overlay) or to this
    // node's uplink (native); older kernels keep an "other host" mark across
    // bpf_redirect_peer and the container's stack would drop the packet.
    // SAFETY: plain helper call on our skb.
    unsafe { bpf_skb_change_type(ctx.skb.skb, PACKET_HOST) };
    forward::to_container(ctx, Hook::TcIngress, &peer, true)
}
