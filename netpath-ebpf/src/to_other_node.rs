//! Cluster mode's half of what a container sends: a packet for a pod on another node,
//! tail-called from from_container once it has validated the sender. A program of its
//! own so that only cluster nodes load and verify it (see netpath_common::maps::
//! CLUSTER_PROGS).
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use netpath_common::Reason;
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

use crate::{
    headers::IP_OFF,
    maps::NODE_CONFIG,
    packet::{header, ifindex},
    tc_entry, tunnel,
};

#[classifier]
pub fn to_other_node(ctx: TcContext) -> i32 {
    tc_entry::resume(&ctx, try_to_other_node)
}

#[inline(always)]
fn try_to_other_node(ctx: &TcContext) -> Result<(i32, Reason), Reason> {
    // from_container parsed these already; a tail call carries nothing but the packet.
    let eth: *const EthHdr = header(ctx, 0)?;
    // SAFETY: bounds-checked by header().
    if unsafe { (*eth).ether_type() } != Ok(EtherType::Ipv4) {
        return Ok((TC_ACT_OK as i32, Reason::PassedToStack));
    }
    let ip: *const Ipv4Hdr = header(ctx, IP_OFF)?;
    // SAFETY: bounds-checked by header().
    let (src, dst) = unsafe { ((*ip).src_addr, (*ip).dst_addr) };
    let cfg = NODE_CONFIG.get(0).ok_or(Reason::DropNoNodeRoute)?;
    tunnel::to_other_node(ctx, cfg, ifindex(ctx), src, dst)
}
