//! tc ingress of the node's uplink: replies to masqueraded flows and new connections to
//! published ports are translated and delivered straight into their container with
//! `bpf_redirect_peer`; everything else is the node's and passes untouched.
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use netpath_common::{
    conntrack::{NODE_F_ADDRESS_PORTS, NODE_F_NATIVE6, NODE_F_ROUTED},
    maps::{TAIL_FROM_OTHER_NODE6, TAIL_UPLINK_IN6},
    trace::HOP_UPLINK_IN,
    EndpointKey, Reason,
};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

use crate::{
    conntrack, flow, forward,
    headers::IP_OFF,
    icmp_error::{self, Direction},
    maps::{CLUSTER_PROGS6, ENDPOINTS, NODE_CONFIG, PROGS6},
    nat,
    packet::{header, ptr_at, translated_by_xdp},
    port_map, tc_entry,
};

const PASS: i32 = TC_ACT_OK as i32;

#[classifier]
pub fn uplink_in(ctx: TcContext) -> i32 {
    tc_entry::run(&ctx, HOP_UPLINK_IN, try_uplink_in)
}

#[inline(always)]
fn try_uplink_in(ctx: &TcContext) -> Result<(i32, Reason), Reason> {
    let eth: *const EthHdr = match ptr_at(ctx, 0) {
        Ok(e) => e,
        Err(()) => return Ok((PASS, Reason::PassedToStack)),
    };
    // SAFETY: bounds-checked by ptr_at.
    match unsafe { (*eth).ether_type() } {
        Ok(EtherType::Ipv4) => {}
        Ok(EtherType::Ipv6) => {
            if NODE_CONFIG.get(0).is_some_and(|c| c.flags & NODE_F_NATIVE6 != 0) {
                // SAFETY: as below; the packet is from_other_node6's, which hands what
                // is not from another node's pod on to uplink_in6.
                let _ = unsafe { CLUSTER_PROGS6.tail_call(ctx, TAIL_FROM_OTHER_NODE6) };
            }
            // SAFETY: a tail call that succeeds does not return; the packet is uplink_in6's.
            let _ = unsafe { PROGS6.tail_call(ctx, TAIL_UPLINK_IN6) };
            // An empty slot (an agent still loading): the node's, as before IPv6.
            return Ok((PASS, Reason::PassedToStack));
        }
        _ => return Ok((PASS, Reason::PassedToStack)),
    }
    if translated_by_xdp(ctx) {
        let ip: *const Ipv4Hdr = header(ctx, IP_OFF)?;
        // SAFETY: bounds-checked by header().
        let dst = unsafe { (*ip).dst_addr };
        return deliver(ctx, dst, Reason::XdpTranslated);
    }
    let Some(cfg) = NODE_CONFIG.get(0).copied() else {
        return Ok((PASS, Reason::PassedToStack));
    };
    // Cluster mode, native routing: from a pod on another node to one of ours, with both
    // addresses kept; into the container as its gateway, past the node's stack.
    if cfg.cluster_mask != [0; 4] {
        let ip: *const Ipv4Hdr = header(ctx, IP_OFF)?;
        // SAFETY: bounds-checked by header().
        let (src, dst) = unsafe { ((*ip).src_addr, (*ip).dst_addr) };
        if cfg.in_cluster_cidr(src) && cfg.in_pod_cidr(dst) {
            return deliver(ctx, dst, Reason::ForwardedToPeer);
        }
    }
    // A routed prefix (`--masquerade false`): the outside reaches containers by their own
    // addresses, untranslated; an address of the pod CIDR that is no endpoint is the
    // stack's.
    if cfg.flags & NODE_F_ROUTED != 0 && cfg.pod_mask != [0; 4] {
        let ip: *const Ipv4Hdr = header(ctx, IP_OFF)?;
        // SAFETY: bounds-checked by header().
        let dst = unsafe { (*ip).dst_addr };
        if cfg.in_pod_cidr(dst) {
            return deliver(ctx, dst, Reason::Routed);
        }
    }
    // Whatever netpath cannot or need not translate is the node's own traffic.
    let Ok(flow) = flow::parse(ctx) else {
        if let Some((_, ip)) = icmp_error::translate(ctx, &cfg, Direction::ToContainer)? {
            return deliver(ctx, ip, Reason::NatTranslated);
        }
        return Ok((PASS, Reason::PassedToStack));
    };
    // The node address takes published ports for any address and its own; another
    // address of the uplink only those published for it alone (`--host-ip`), whose
    // flows conntrack then knows by that address.
    let to_node_ip = flow.key.dst == cfg.node_ip;
    if cfg.node_ip == [0; 4] || !(to_node_ip || cfg.flags & NODE_F_ADDRESS_PORTS != 0) {
        return Ok((PASS, Reason::PassedToStack));
    }
    let len = ctx.len();
    let (entry, reason) = match conntrack::lookup(&flow, len) {
        Some(e) => (e, Reason::NatTranslated),
        None => {
            match if to_node_ip { port_map::target(&flow.key) } else { port_map::exact_target(&flow.key) } {
                Some((ip, port)) => {
                    (conntrack::create_dnat(&flow, ip, port, len, true)?, Reason::DnatNewFlow)
                }
                None => return Ok((PASS, Reason::PassedToStack)),
            }
        }
    };
    let new_dst = nat::apply(ctx, &flow, &entry)?;
    deliver(ctx, new_dst, reason)
}

/// Into the container that owns `dst`, as its gateway.
#[inline(always)]
fn deliver(ctx: &TcContext, dst: [u8; 4], reason: Reason) -> Result<(i32, Reason), Reason> {
    let key = EndpointKey::new(dst);
    // SAFETY: copied out at once.
    let Some(peer) = (unsafe { ENDPOINTS.get(key) }).copied() else {
        return if reason == Reason::Routed {
            Ok((PASS, Reason::PassedToStack))
        } else {
            Err(Reason::DropRedirectFailed)
        };
    };
    if !forward::decrement_ttl(ctx)? {
        return Ok((PASS, Reason::PassedToStack));
    }
    let (action, _) = forward::to_container(ctx, forward::Hook::TcIngress, &peer, true)?;
    Ok((action, reason))
}
