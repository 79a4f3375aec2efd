//! tc ingress of a macvlan/ipvlan endpoint's interface, inside the container's namespace
//! (`--mode macvlan|ipvlan`): what the driver delivers to the container, from the
//! parent's LAN or from a sibling, with no host device on the way where the datapath
//! could see it. It only observes: the endpoint's received counters and the trace's
//! to-container hop; every packet passes untouched (the driver has chosen the container
//! already, and anything else, malformed or not IPv4, is the container's stack's).
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use netpath_common::{trace::HOP_TO_CONTAINER, EndpointKey, Reason, ENDPOINT_F_SUBIF};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

use crate::{
    counters,
    headers::IP_OFF,
    maps::ENDPOINTS,
    packet::{ifindex, ptr_at},
    tc_entry,
};

const PASS: i32 = TC_ACT_OK as i32;

/// The packet is traced once, at the to-container hop where it arrives: it is already
/// on its way into the container, so there is no later hop to record.
#[classifier]
pub fn to_subif(ctx: TcContext) -> i32 {
    tc_entry::run(&ctx, HOP_TO_CONTAINER, try_to_subif)
}

#[inline(always)]
fn try_to_subif(ctx: &TcContext) -> Result<(i32, Reason), Reason> {
    // Never an Err: that would be a drop, and this program drops nothing.
    const UNTOUCHED: Result<(i32, Reason), Reason> = Ok((PASS, Reason::PassedToStack));
    // Read first, straight from the context pointer: read after the packet checks, the
    // compiler reached it through a pointer it had moved, which the verifier refuses.
    let ifindex = ifindex(ctx);
    let Ok(eth) = ptr_at::<EthHdr, _>(ctx, 0) else { return UNTOUCHED };
    // SAFETY: bounds-checked by ptr_at.
    if !matches!(unsafe { (*eth).ether_type() }, Ok(EtherType::Ipv4)) {
        return UNTOUCHED;
    }
    let Ok(ip) = ptr_at::<Ipv4Hdr, _>(ctx, IP_OFF) else { return UNTOUCHED };
    // SAFETY: bounds-checked by ptr_at.
    let dst = unsafe { (*ip).dst_addr };
    // SAFETY: the value is copied out at once; the agent only replaces whole entries.
    let Some(ep) = (unsafe { ENDPOINTS.get(EndpointKey::new(dst)) }).copied() else { return UNTOUCHED };
    // On the endpoint's own interface only: what arrives for its address elsewhere is
    // not delivered to it.
    if ep.flags & ENDPOINT_F_SUBIF == 0 || ep.host_ifindex != ifindex {
        return UNTOUCHED;
    }
    counters::endpoint_rx(ep.counter_slot, ctx.len());
    Ok((PASS, Reason::ForwardedToPeer))
}
