//! The benchmark's layout floor, never attached by the agent: netpath's container-to-
//! container layout (a host veth's tc ingress, `bpf_redirect_peer` into the other
//! container) with a program that does only what any datapath routing by destination
//! must do there: read the destination address, look it up in ENDPOINTS, redirect.
//! No source check, counter, trace, conntrack, MAC or TTL rewrite. `cargo xtask bench`
//! measures it next to netpath and the plain veth pair: what is left between the floor
//! and the limit is the layout's own cost, which no program on this layout can remove.
use aya_ebpf::{
    bindings::TC_ACT_UNSPEC, helpers::generated::bpf_redirect_peer, macros::classifier, programs::TcContext,
};
use netpath_common::EndpointKey;
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

use crate::{headers::IP_OFF, maps::ENDPOINTS, packet::ptr_at};

#[classifier]
pub fn layout_floor(ctx: TcContext) -> i32 {
    match peer(&ctx) {
        // SAFETY: plain helper call; the kernel validates the ifindex when it acts.
        Some(ifindex) => unsafe { bpf_redirect_peer(ifindex, 0) as i32 },
        // TCX_NEXT under TCX (the next program decides: netpath's, when the bench puts
        // the floor in front of it), and the default action under clsact: the stack's.
        None => TC_ACT_UNSPEC,
    }
}

#[inline(always)]
fn peer(ctx: &TcContext) -> Option<u32> {
    let eth: *const EthHdr = ptr_at(ctx, 0).ok()?;
    // SAFETY: bounds-checked by ptr_at().
    if unsafe { (*eth).ether_type() } != Ok(EtherType::Ipv4) {
        return None;
    }
    let ip: *const Ipv4Hdr = ptr_at(ctx, IP_OFF).ok()?;
    // SAFETY: bounds-checked by ptr_at(); the entry is read at once.
    unsafe { ENDPOINTS.get(EndpointKey::new((*ip).dst_addr)).map(|p| p.host_ifindex) }
}
