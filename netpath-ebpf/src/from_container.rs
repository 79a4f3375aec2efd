//! tc ingress of each container's host-side veth: everything a container sends.
//! Source validation, then a packet for another local container is delivered straight
//! into its namespace with `bpf_redirect_peer` (no bridge, no netfilter, no routing by
//! the node's stack); anything else goes to the stack.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::generated::bpf_redirect_peer,
    macros::classifier,
    programs::TcContext,
};
use netpath_common::{EndpointInfo, EndpointKey, Reason, ENDPOINT_F_BRIDGED};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

use crate::{
    arp::{self, ArpOutcome},
    counters,
    maps::ENDPOINTS,
    packet::{ifindex, ptr_at},
};

#[classifier]
pub fn from_container(ctx: TcContext) -> i32 {
    let len = ctx.len();
    match try_from_container(&ctx) {
        Ok((action, reason)) => {
            counters::count(reason, len);
            action
        }
        Err(reason) => {
            counters::count(reason, len);
            TC_ACT_SHOT
        }
    }
}

/// Offset of the IPv4 checksum, for the TTL rewrite.
const IPV4_CSUM_OFF: usize = EthHdr::LEN + 10;
/// Flag for bpf_l3_csum_replace: the replaced quantity is 2 bytes wide.
const CSUM_SIZE_2: u64 = 2;

#[inline(always)]
fn try_from_container(ctx: &TcContext) -> Result<(i32, Reason), Reason> {
    let ifindex = ifindex(ctx);
    let eth: *mut EthHdr = ptr_at(ctx, 0).map_err(|_| Reason::DropMalformed)?;
    // SAFETY: bounds-checked by ptr_at.
    match unsafe { (*eth).ether_type() } {
        Ok(EtherType::Ipv4) => {}
        Ok(EtherType::Arp) => {
            return match arp::respond(ctx, ifindex)? {
                ArpOutcome::Replied(action) => Ok((action, Reason::ArpReplied)),
                ArpOutcome::Ignored => Ok((TC_ACT_OK as i32, Reason::PassedToStack)),
            };
        }
        // IPv6 and the rest are the stack's until the datapath handles them.
        _ => return Ok((TC_ACT_OK as i32, Reason::PassedToStack)),
    }
    let ip: *mut Ipv4Hdr = ptr_at(ctx, EthHdr::LEN).map_err(|_| Reason::DropMalformed)?;
    // SAFETY: bounds-checked by ptr_at; copied so later helper calls cannot invalidate it.
    let (src, dst, ttl, proto) = unsafe { ((*ip).src_addr, (*ip).dst_addr, (*ip).ttl, (*ip).proto) };

    let sender = arp::lookup_sender(&src, ifindex).ok_or(Reason::DropSpoofedSource)?;
    let src_key = EndpointKey::new(src);
    let len = ctx.len();
    counters::endpoint_tx(&src_key, len);

    let dst_key = EndpointKey::new(dst);
    // SAFETY: copied out at once, see arp::lookup_sender.
    let Some(peer) = (unsafe { ENDPOINTS.get(dst_key) }).copied() else {
        return Ok((TC_ACT_OK as i32, Reason::PassedToStack));
    };
    if sender.flags & ENDPOINT_F_BRIDGED != 0 {
        // L2 semantics: only frames already addressed to the peer's own MAC skip the
        // bridge, unchanged, exactly as the bridge would have delivered them.
        // SAFETY: bounds-checked by ptr_at above; no helper has run since.
        if unsafe { (*eth).dst_addr } != peer.mac {
            return Ok((TC_ACT_OK as i32, Reason::PassedToStack));
        }
        return redirect(&peer, &dst_key, len);
    }
    // TTL 1 would expire here: the stack sends the ICMP time-exceeded.
    if ttl <= 1 {
        return Ok((TC_ACT_OK as i32, Reason::PassedToStack));
    }

    // We are the container's router: decrement TTL, and speak L2 as the peer's gateway.
    let proto = proto as u8;
    let old = u16::from_be_bytes([ttl, proto]);
    let new = u16::from_be_bytes([ttl - 1, proto]);
    ctx.l3_csum_replace(IPV4_CSUM_OFF, old.to_be() as u64, new.to_be() as u64, CSUM_SIZE_2)
        .map_err(|_| Reason::DropMalformed)?;
    // Packet pointers are invalid after a helper that may change the skb: re-derive.
    let ip: *mut Ipv4Hdr = ptr_at(ctx, EthHdr::LEN).map_err(|_| Reason::DropMalformed)?;
    let eth: *mut EthHdr = ptr_at(ctx, 0).map_err(|_| Reason::DropMalformed)?;
    // SAFETY: bounds-checked by ptr_at just above.
    unsafe {
        (*ip).ttl = ttl - 1;
        (*eth).dst_addr = peer.mac;
        (*eth).src_addr = peer.host_mac;
    }

    redirect(&peer, &dst_key, len)
}

/// Hands the packet to the peer container's eth0, skipping the node's stack.
#[inline(always)]
fn redirect(peer: &EndpointInfo, key: &EndpointKey, len: u32) -> Result<(i32, Reason), Reason> {
    // SAFETY: plain helper call; the kernel validates the ifindex when it acts.
    let action = unsafe { bpf_redirect_peer(peer.host_ifindex, 0) } as i32;
    if action == TC_ACT_SHOT {
        return Err(Reason::DropRedirectFailed);
    }
    counters::endpoint_rx(key, len);
    Ok((action, Reason::ForwardedToPeer))
}
