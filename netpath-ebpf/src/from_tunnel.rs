//! tc ingress of the cluster's VXLAN device: packets from pods on other nodes, already
//! decapsulated, are delivered straight into their container with `bpf_redirect_peer`.
//! Only sources in the cluster's pod network are taken: the overlay carries nothing
//! else.
use aya_ebpf::{
    bindings::TC_ACT_OK, helpers::generated::bpf_skb_change_type, macros::classifier, programs::TcContext,
};
use netpath_common::{trace::HOP_FROM_TUNNEL, EndpointKey, Reason};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

use crate::{
    forward::{self, Hook},
    headers::IP_OFF,
    maps::{ENDPOINTS, NODE_CONFIG},
    packet::header,
    tc_entry,
};

const PASS: i32 = TC_ACT_OK as i32;
/// skb->pkt_type of a frame for this host (linux/if_packet.h).
const PACKET_HOST: u32 = 0;

#[classifier]
pub fn from_tunnel(ctx: TcContext) -> i32 {
    tc_entry::run(&ctx, HOP_FROM_TUNNEL, try_from_tunnel)
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
    forward::to_container(ctx, Hook::TcIngress, &peer, &key, true)
}
