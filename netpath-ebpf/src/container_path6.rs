//! What a container sends over IPv6, tail-called by `container_path` for every packet
//! whose protocol is IPv6 (IPv4 and the rest stay there). Same rules as for
//! IPv4: the gateway's neighbour discovery is answered here, only the endpoint's own
//! addresses and MAC may leave its veth, and a packet for another local container is
//! delivered into its namespace with `bpf_redirect_peer`, as its router (MACs rewritten,
//! hop limit - 1). What is not for a local container (the node, the outside) is the
//! node stack's, untranslated.
//!
//! Only the fixed header is read: the path never looks past it for a packet it
//! forwards, so extension headers are carried, never parsed (and never misparsed).
//! Every packet's source is checked first, link-local and multicast ones too (a
//! container's link-local address is in ENDPOINTS6); only ICMPv6 from the unspecified
//! address (duplicate address detection, MLD while an address is being configured)
//! passes unchecked. Link-local traffic is never routed: a packet from or to fe80::/10
//! is then the stack's, as is multicast (router solicitations, MLD).
//!
//! On a node without an IPv6 pod CIDR (`NODE_F_IPV6` off) containers' IPv6 is the
//! stack's, untouched, as before IPv6 support.
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use netpath_common::{
    conntrack::NODE_F_IPV6, trace::HOP_FROM_CONTAINER, Endpoint6Key, Reason, ENDPOINT_F_BRIDGED,
    ENDPOINT_F_NETKIT,
};
use network_types::eth::EthHdr;

use crate::{
    counters,
    forward::{self, Hook},
    headers::{ipv6, IP_OFF},
    maps::{ENDPOINTS6, NODE_CONFIG},
    nd::{self, NdOutcome},
    packet::{header, ifindex},
    tc_entry,
};

const PASS: i32 = TC_ACT_OK as i32;
const ETH_P_IPV6: u16 = 0x86dd;

#[classifier]
pub fn container_path6(ctx: TcContext) -> i32 {
    tc_entry::run(&ctx, HOP_FROM_CONTAINER, try_container_path6)
}

#[inline(always)]
fn try_container_path6(ctx: &TcContext) -> Result<(i32, Reason), Reason> {
    if NODE_CONFIG.get(0).is_none_or(|c| c.flags & NODE_F_IPV6 == 0) {
        return Ok((PASS, Reason::PassedToStack));
    }
    let ifindex = ifindex(ctx);
    let eth: *const EthHdr = header(ctx, 0)?;
    let ip: *const [u8; ipv6::LEN] = header(ctx, IP_OFF)?;
    // SAFETY: bounds-checked by header(); copied so later helper calls cannot invalidate it.
    let (ether_type, eth_src, ip) = unsafe { ((*eth).ether_type, (*eth).src_addr, *ip) };
    if ether_type != ETH_P_IPV6.to_be() {
        // The skb said IPv6, the frame does not: the stack decides, as for IPv4.
        return Ok((PASS, Reason::PassedToStack));
    }
    if ip[0] >> 4 != 6 {
        return Err(Reason::DropMalformed);
    }
    let (src, dst) = (addr(&ip, ipv6::SRC), addr(&ip, ipv6::DST));
    if ip[ipv6::NEXT_HDR] == ipv6::IPPROTO_ICMPV6 {
        match nd::respond(ctx, ifindex)? {
            NdOutcome::Replied(action) => return Ok((action, Reason::NdAnswered)),
            NdOutcome::Ignored => return Ok((PASS, Reason::PassedToStack)),
            NdOutcome::NotOurs => {}
        }
    }
    if src == [0; 16] {
        return if ip[ipv6::NEXT_HDR] == ipv6::IPPROTO_ICMPV6 {
            Ok((PASS, Reason::PassedToStack))
        } else {
            Err(Reason::DropSpoofedSource)
        };
    }
    // Only the endpoint's own addresses and MAC may leave its veth.
    let sender = nd::lookup_sender(&src, ifindex).ok_or(Reason::DropSpoofedSource)?;
    if eth_src != sender.mac {
        return Err(Reason::DropSpoofedSource);
    }
    counters::endpoint_tx(sender.counter_slot, ctx.len());
    if sender.flags & ENDPOINT_F_BRIDGED != 0 || dst[0] == 0xff || link_local(&src) || link_local(&dst) {
        return Ok((PASS, Reason::PassedToStack));
    }
    let hook = if sender.flags & ENDPOINT_F_NETKIT != 0 { Hook::NetkitXmit } else { Hook::TcIngress };
    // SAFETY: copied out at once; the agent only replaces whole entries.
    let Some(peer) = unsafe { ENDPOINTS6.get(Endpoint6Key::new(dst)) }.copied() else {
        return Ok((PASS, Reason::PassedToStack));
    };
    // We are the container's router: hop limit - 1 (IPv6 has no header checksum); a
    // packet that would expire is the stack's, which sends the time-exceeded.
    if ip[ipv6::HOP_LIMIT] <= 1 {
        return Ok((PASS, Reason::PassedToStack));
    }
    let hop: *mut u8 = header(ctx, IP_OFF + ipv6::HOP_LIMIT)?;
    // SAFETY: bounds-checked by header().
    unsafe { *hop = ip[ipv6::HOP_LIMIT] - 1 };
    forward::to_container(ctx, hook, &peer, true)
}

#[inline(always)]
fn addr(ip: &[u8; ipv6::LEN], at: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&ip[at..at + 16]);
    a
}

/// fe80::/10.
#[inline(always)]
fn link_local(a: &[u8; 16]) -> bool {
    a[0] == 0xfe && a[1] & 0xc0 == 0x80
}
