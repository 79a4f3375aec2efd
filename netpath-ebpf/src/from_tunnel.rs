//! tc ingress of the cluster's VXLAN device: packets from pods on other nodes, already
//! decapsulated, are delivered straight into their container with `bpf_redirect_peer`.
//! Only sources in the cluster's pod network are taken, and only from the node that owns
//! the source's subnet: any host on the underlay can send VXLAN to the port, so the
//! outer source must match the store's record of the inner source's node. IPv6 pods'
//! packets (`--cluster-cidr6`) ride the same IPv4 overlay and are checked and delivered
//! the same way (see from_other_node6).
use aya_ebpf::{
    bindings::{bpf_tunnel_key, TC_ACT_OK},
    helpers::generated::{bpf_skb_change_type, bpf_skb_get_tunnel_key},
    macros::classifier,
    programs::TcContext,
};
use netpath_common::{trace::HOP_FROM_TUNNEL, EndpointKey, Reason};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

use crate::{
    events,
    forward::{self, Hook},
    from_other_node6,
    headers::IP_OFF,
    maps::{ENDPOINTS, NODE_CONFIG, NODE_ROUTES},
    packet::header,
    tc_entry, tunnel,
};

const PASS: i32 = TC_ACT_OK as i32;
/// skb->pkt_type of a frame for this host (linux/if_packet.h).
const PACKET_HOST: u32 = 0;

/// ETH_P_IPV6 as `__sk_buff.protocol` holds it (network byte order in a u32).
const ETH_P_IPV6_BE: u32 = 0x86ddu16.to_be() as u32;

#[classifier]
pub fn from_tunnel(ctx: TcContext) -> i32 {
    if ctx.skb.protocol() == ETH_P_IPV6_BE {
        return tc_entry::run6(&ctx, HOP_FROM_TUNNEL, try_from_tunnel6);
    }
    tc_entry::run(&ctx, HOP_FROM_TUNNEL, try_from_tunnel)
}

#[inline(always)]
fn try_from_tunnel6(ctx: &TcContext) -> Result<(i32, Reason), Reason> {
    let sender = sending_node(ctx)?;
    events::arrived_from_node(sender);
    from_other_node6::deliver(ctx, Some(sender))
}

#[inline(always)]
fn try_from_tunnel(ctx: &TcContext) -> Result<(i32, Reason), Reason> {
    let eth: *const EthHdr = header(ctx, 0)?;
    // SAFETY: bounds-checked by header().
    if unsafe { (*eth).ether_type() } != Ok(EtherType::Ipv4) {
        return Ok((PASS, Reason::PassedToStack));
    }
    let ip: *const Ipv4Hdr = header(ctx, IP_OFF)?;
    // SAFETY: bounds-checked by header().
    let (src, dst) = unsafe { ((*ip).src_addr, (*ip).dst_addr) };
    let cfg = NODE_CONFIG.get(0).copied().unwrap_or_default();
    if !cfg.in_cluster_cidr(src) {
        return Err(Reason::DropSpoofedSource);
    }
    let sender = sending_node(ctx)?;
    events::arrived_from_node(sender);
    // SAFETY: copied out at once; the agent only replaces whole entries.
    let owner = unsafe { NODE_ROUTES.get(EndpointKey::new(cfg.node_subnet(src))) }.map(|r| r.underlay);
    if owner != Some(sender) {
        return Err(Reason::DropSpoofedSource);
    }
    let key = EndpointKey::new(dst);
    // SAFETY: copied out at once.
    let Some(peer) = (unsafe { ENDPOINTS.get(key) }).copied() else {
        return if cfg.in_pod_cidr(dst) {
            Err(Reason::DropNoEndpoint)
        } else {
            Ok((PASS, Reason::PassedToStack))
        };
    };
    if !forward::decrement_ttl(ctx)? {
        return Ok((PASS, Reason::PassedToStack));
    }
    // The inner frame was addressed to the sending node's gateway MAC, so the VXLAN
    // device marked it for another host; older kernels keep that mark across
    // bpf_redirect_peer and the container's stack would drop the packet.
    // SAFETY: plain helper call on our skb.
    unsafe { bpf_skb_change_type(ctx.skb.skb, PACKET_HOST) };
    forward::to_container(ctx, Hook::TcIngress, &peer, true)
}

/// The outer source of the packet: the node that sent it through the overlay.
#[inline(always)]
fn sending_node(ctx: &TcContext) -> Result<[u8; 4], Reason> {
    // SAFETY: plain data, filled by the helper.
    let mut tk: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    // SAFETY: tk is writable and of the size given; the skb is the program's.
    if unsafe { bpf_skb_get_tunnel_key(ctx.skb.skb, &mut tk, tunnel::TUNNEL_KEY_SIZE, 0) } != 0 {
        return Err(Reason::DropMalformed);
    }
    // SAFETY: an IPv4 tunnel's key; the helper gives the address in host order.
    Ok(unsafe { tk.__bindgen_anon_1.remote_ipv4 }.to_be_bytes())
}
