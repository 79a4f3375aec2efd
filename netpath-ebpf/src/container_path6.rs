//! What a container sends over IPv6, tail-called by `container_path` for every packet
//! whose protocol is IPv6 (IPv4 and the rest stay there). Same rules as for
//! IPv4: the gateway's neighbour discovery is answered here, only the endpoint's own
//! addresses and MAC may leave its veth, and a packet for another local container is
//! delivered into its namespace with `bpf_redirect_peer`, as its router (MACs rewritten,
//! hop limit - 1). A packet for the outside is masqueraded to the node's global address
//! (NAT66, with the IPv4 masquerade's conntrack and port choice) or, on a node with a
//! routed prefix (`--masquerade6 false`), forwarded with the container's own address;
//! either way out through the node's routes (bpf_fib_lookup), past the stack's
//! netfilter. What is for the node itself is the node stack's, untranslated, but for a
//! new connection to a published port, which is hairpinned into its container (the
//! client's address kept, as for IPv4).
//!
//! A packet forwarded untranslated is read only as far as its fixed header: extension
//! headers are carried, never parsed (and never misparsed). One to be translated must
//! have its transport header right after the fixed one (see flow::parse6).
//! Every packet's source is checked first, link-local and multicast ones too (a
//! container's link-local address is in ENDPOINTS6); only ICMPv6 from the unspecified
//! address (duplicate address detection, MLD while an address is being configured)
//! passes unchecked. Link-local traffic is never routed: a packet from or to fe80::/10
//! is then the stack's, as is multicast (router solicitations, MLD).
//!
//! On a node without an IPv6 pod CIDR (`NODE_F_IPV6` off) containers' IPv6 is the
//! stack's, untouched, as before IPv6 support.
use aya_ebpf::{
    bindings::{BPF_F_RECOMPUTE_CSUM, TC_ACT_OK},
    macros::classifier,
    programs::TcContext,
};
use netpath_common::{
    conntrack::{NODE6_F_MASQUERADE, NODE_F_IPV6},
    maps::{TAIL_CONTAINER_NAT6, TAIL_TO_OTHER_NODE6},
    trace::HOP_FROM_CONTAINER,
    Endpoint6Key, EndpointInfo, Ip6, Reason, ENDPOINT_F_BRIDGED, ENDPOINT_F_NETKIT, ENDPOINT_F_PUBLISHED,
    SUBIF_IFINDEX_BASE,
};
use network_types::eth::EthHdr;

use crate::{
    counters,
    forward::{self, Hook},
    headers::{ipv6, IP_OFF},
    maps::{CLUSTER_PROGS6, ENDPOINTS6, NODE_CONFIG, NODE_CONFIG6, PROGS6},
    nd::{self, NdOutcome},
    packet::{header, ifindex, OrMalformed},
    tc_entry,
};

const PASS: i32 = TC_ACT_OK as i32;
const ETH_P_IPV6: u16 = 0x86dd;

#[classifier]
pub fn container_path6(ctx: TcContext) -> i32 {
    tc_entry::run6(&ctx, HOP_FROM_CONTAINER, try_container_path6)
}

#[inline(always)]
fn try_container_path6(ctx: &TcContext) -> Result<(i32, Reason), Reason> {
    let ifindex = ifindex(ctx);
    // A macvlan/ipvlan container's frame goes out onto a real network: one that only
    // the skb calls IPv6 (a raw socket chooses that) could be anything, VLAN-tagged
    // included. (Its IPv6 is the network's otherwise: unchecked.)
    if ifindex & SUBIF_IFINDEX_BASE != 0 {
        let eth: *const EthHdr = header(ctx, 0)?;
        // SAFETY: bounds-checked by header().
        if unsafe { (*eth).ether_type } != ETH_P_IPV6.to_be() {
            return Err(Reason::DropUnsupportedProtocol);
        }
    }
    if NODE_CONFIG.get(0).is_none_or(|c| c.flags & NODE_F_IPV6 == 0) {
        return Ok((PASS, Reason::PassedToStack));
    }
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
    if sender.flags & ENDPOINT_F_BRIDGED != 0 {
        return bridged(ctx, ifindex, &sender, src, dst, ip[ipv6::HOP_LIMIT], ip[ipv6::NEXT_HDR]);
    }
    if dst[0] == 0xff || link_local(&src) || link_local(&dst) {
        return Ok((PASS, Reason::PassedToStack));
    }
    // We are the container's router: hop limit - 1 (IPv6 has no header checksum); a
    // packet that would expire is the stack's, which sends the time-exceeded (before
    // any translation, so that it reaches the container).
    if ip[ipv6::HOP_LIMIT] <= 1 {
        return Ok((PASS, Reason::PassedToStack));
    }
    let published = sender.flags & ENDPOINT_F_PUBLISHED != 0;
    // SAFETY: copied out at once; the agent only replaces whole entries.
    let Some(peer) = unsafe { ENDPOINTS6.get(Endpoint6Key::new(dst)) }.copied() else {
        return to_outside(ctx, ifindex, src, dst, ip[ipv6::HOP_LIMIT], published);
    };
    // A container with published ports may be answering a hairpinned connection: its
    // reply must get the node address back. Only such containers pay the lookup, and
    // only while a hairpin may live.
    if published && crate::hairpin::may_live() {
        // SAFETY: a tail call that succeeds does not return; the packet, unchanged, is
        // then container_nat6's, which delivers what is no such reply as below.
        let _ = unsafe { PROGS6.tail_call(ctx, TAIL_CONTAINER_NAT6) };
    }
    decrement_hop_limit(ctx, ip[ipv6::HOP_LIMIT])?;
    let hook = if sender.flags & ENDPOINT_F_NETKIT != 0 { Hook::NetkitXmit } else { Hook::TcIngress };
    forward::to_container(ctx, hook, &peer, true)
}

/// A packet for an address that is no local container: the node's own are the stack's
/// (but for published ports: container_nat6 hairpins those); the rest leave through the
/// node's routes, masqueraded or (routed prefix) not. A container with a published port
/// goes through conntrack on a routed prefix too: its replies to connections made to
/// the node's address must leave with that address.
#[inline(always)]
fn to_outside(
    ctx: &TcContext,
    ifindex: u32,
    src: [u8; 16],
    dst: [u8; 16],
    hops: u8,
    published: bool,
) -> Result<(i32, Reason), Reason> {
    let Some(cfg6) = NODE_CONFIG6.get(0).copied() else {
        return Ok((PASS, Reason::PassedToStack));
    };
    // The node's IPv6 pod prefix is all on this node: an address of it that is no
    // endpoint reaches no one.
    if cfg6.pod_prefix != 0 && cfg6.in_pod_cidr(&dst) {
        return Err(Reason::DropNoEndpoint);
    }
    // Cluster mode: a pod on another node, addresses kept.
    if cfg6.in_cluster_cidr(&dst) {
        // SAFETY: a tail call that succeeds does not return; the packet, unchanged so
        // far, is then to_other_node6's.
        let _ = unsafe { CLUSTER_PROGS6.tail_call(ctx, TAIL_TO_OTHER_NODE6) };
        // An empty slot: an agent that has not loaded the cluster programs yet.
        return Err(Reason::DropNoNodeRoute);
    }
    if cfg6.node_ip == [0; 16] {
        return Ok((PASS, Reason::PassedToStack));
    }
    if dst == cfg6.node_ip {
        // SAFETY: as below. The node's address may be a published port's (a hairpin,
        // which container_nat6 translates into the container); the rest it passes to
        // the node's stack.
        let _ = unsafe { PROGS6.tail_call(ctx, TAIL_CONTAINER_NAT6) };
        return Ok((PASS, Reason::PassedToStack));
    }
    if cfg6.flags & NODE6_F_MASQUERADE == 0 && !published {
        decrement_hop_limit(ctx, hops)?;
        return Ok((forward::to_fib(ctx, ifindex, Ip6(src), Ip6(dst))?, Reason::Routed));
    }
    // SAFETY: a tail call that succeeds does not return; the packet, unchanged so far,
    // is then container_nat6's (a program of its own: IPv6's conntrack state does not
    // fit this one's 512-byte stack).
    let _ = unsafe { PROGS6.tail_call(ctx, TAIL_CONTAINER_NAT6) };
    // An empty slot: an agent still loading. Untranslated, the packet must not leave.
    Err(Reason::DropRedirectFailed)
}

/// Writes `hops - 1` (checked above to be more than 1) as the packet's hop limit, in a
/// packet a container sent: a veth's (or netkit's) skb is never CHECKSUM_COMPLETE, so
/// no skb->csum follows the byte (see [`decrement_hop_limit_received`]).
#[inline(always)]
pub fn decrement_hop_limit(ctx: &TcContext, hops: u8) -> Result<(), Reason> {
    let hop: *mut u8 = header(ctx, IP_OFF + ipv6::HOP_LIMIT)?;
    // SAFETY: bounds-checked by header().
    unsafe { *hop = hops - 1 };
    Ok(())
}

/// [`decrement_hop_limit`] for a packet a NIC received: one in CHECKSUM_COMPLETE carries
/// the sum of its bytes in skb->csum, which must follow the change (IPv6 has no header
/// checksum to absorb it), or the container's stack finds the sum wrong ("hw csum
/// failure") and sums every such packet again in software.
#[inline(always)]
pub fn decrement_hop_limit_received(ctx: &TcContext, hops: u8) -> Result<(), Reason> {
    ctx.store(IP_OFF + ipv6::HOP_LIMIT, &(hops - 1), BPF_F_RECOMPUTE_CSUM as u64).or_malformed()
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

/// A bridged sender's packet (`--mode bridge`: the bridge is its gateway). As for
/// IPv4, unicast already addressed to a local container's own MAC skips the bridge,
/// unchanged, exactly as the bridge would have delivered it; the rest of the pod prefix
/// (the bridge's own address, frames for another MAC), link-local and multicast
/// traffic is the bridge's. Beyond the pod prefix it leaves as a routed container's
/// does (NAT66 or the routed prefix, the node's address, hairpins), past the node's
/// forwarding. As IPv4's, this takes the bridge's MAC as the only one such a packet is
/// sent to: the datapath does not know the bridge's MAC to check it.
///
/// A neighbour solicitation for a local container goes to that container alone,
/// unchanged: through the bridge it would meet the node's ip6tables FORWARD chain
/// wherever br_netfilter is loaded (Docker loads it, and its policy is often DROP),
/// and containers could not resolve each other. Only the target answers one anyway.
#[inline(always)]
fn bridged(
    ctx: &TcContext,
    ifindex: u32,
    sender: &EndpointInfo,
    src: [u8; 16],
    dst: [u8; 16],
    hops: u8,
    next_hdr: u8,
) -> Result<(i32, Reason), Reason> {
    let published = sender.flags & ENDPOINT_F_PUBLISHED != 0;
    let hook = if sender.flags & ENDPOINT_F_NETKIT != 0 { Hook::NetkitXmit } else { Hook::TcIngress };
    if next_hdr == ipv6::IPPROTO_ICMPV6 {
        if let Some(target) = nd::solicited_target(ctx) {
            // SAFETY: copied out at once; the agent only replaces whole entries.
            if let Some(peer) = unsafe { ENDPOINTS6.get(Endpoint6Key::new(target)) }.copied() {
                if peer.host_ifindex != ifindex {
                    return forward::to_container(ctx, hook, &peer, false);
                }
            }
        }
    }
    if dst[0] == 0xff {
        return Ok((PASS, Reason::PassedToStack));
    }
    // SAFETY: copied out at once; the agent only replaces whole entries.
    if let Some(peer) = unsafe { ENDPOINTS6.get(Endpoint6Key::new(dst)) }.copied() {
        let eth: *const EthHdr = header(ctx, 0)?;
        // SAFETY: bounds-checked by header().
        if unsafe { (*eth).dst_addr } != peer.mac {
            return Ok((PASS, Reason::PassedToStack));
        }
        // A container with published ports may be answering a hairpinned connection:
        // its reply must get the node's address back. container_nat6 translates such a
        // reply and delivers the rest as the peer's router (hop limit - 1). ICMPv6
        // (neighbour discovery between the two, whose hop limit must stay 255) and
        // link-local traffic stay L2.
        let l2_only = next_hdr == ipv6::IPPROTO_ICMPV6 || link_local(&src) || link_local(&dst);
        if published && hops > 1 && !l2_only {
            // SAFETY: a tail call that succeeds does not return; the packet, unchanged,
            // is then container_nat6's.
            let _ = unsafe { PROGS6.tail_call(ctx, TAIL_CONTAINER_NAT6) };
        }
        return forward::to_container(ctx, hook, &peer, false);
    }
    if link_local(&src) || link_local(&dst) {
        return Ok((PASS, Reason::PassedToStack));
    }
    let Some(cfg6) = NODE_CONFIG6.get(0) else {
        return Ok((PASS, Reason::PassedToStack));
    };
    // The pod prefix is the bridge's; another node's pods are the node routes' (as in
    // IPv4's bridge mode). A packet that would expire is the stack's, which sends the
    // time-exceeded from the bridge, the container's router.
    if (cfg6.pod_prefix != 0 && cfg6.in_pod_cidr(&dst)) || cfg6.in_cluster_cidr(&dst) || hops <= 1 {
        return Ok((PASS, Reason::PassedToStack));
    }
    to_outside(ctx, ifindex, src, dst, hops, published)
}
