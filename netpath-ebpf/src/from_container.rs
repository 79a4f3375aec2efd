//! tc ingress of each container's host-side veth: everything a container sends.
//! `from_container`, attached there, tail-calls `container_path` (the work below), or
//! `container_path6` for IPv6, through pinned slots, so that no endpoint is attached
//! again when an agent restarts.
//! For a netkit endpoint (`--device netkit`) the same program is a netkit link on the
//! host device (BPF_NETKIT_PEER), run in netkit's transmit path for what the container
//! sends: same context, same verdicts (TC_ACT_OK/SHOT/REDIRECT are netkit's PASS, DROP
//! and REDIRECT).
//! Source validation; a packet for another local container is delivered straight into
//! its namespace with `bpf_redirect_peer` (`bpf_redirect` from netkit, see
//! [`forward::Hook`]); a packet for the outside is masqueraded
//! (or, for a published port on the node, hairpinned; or, on a routed prefix,
//! `--masquerade false`, left untranslated unless it is a tracked flow's reply) and
//! routed out with the FIB;
//! the node's own services get it through the stack.
//! For a macvlan/ipvlan endpoint (`ENDPOINT_F_SUBIF`) the same program runs at the egress
//! of the container's sub-interface, inside its namespace (skb->ifindex is then that
//! interface's, which is what the endpoint entry holds): the source is checked as for a
//! veth and the packet counted, then left to the driver (a sibling, or out of the
//! parent): there is no host side for the datapath to route from. What is neither IPv4
//! nor ARP (nor IPv6, container_path6's) does not leave there.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use netpath_common::{
    conntrack::NODE_F_ROUTED,
    maps::{TAIL_CONTAINER_PATH, TAIL_CONTAINER_PATH6, TAIL_TO_OTHER_NODE},
    trace::HOP_FROM_CONTAINER,
    EndpointKey, Reason, ENDPOINT_F_BRIDGED, ENDPOINT_F_NETKIT, ENDPOINT_F_PUBLISHED, ENDPOINT_F_SUBIF,
    SUBIF_IFINDEX_BASE,
};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

use crate::{
    arp::{self, ArpOutcome},
    conntrack, counters,
    flow::{self, Flow},
    forward::{self, Hook},
    hairpin,
    headers::{tcp, IPPROTO_TCP, IP_OFF},
    icmp_error::{self, Direction},
    maps::{CLUSTER_PROGS, ENDPOINTS, ENDPOINT_PROGS, ENDPOINT_PROGS6, NODE_CONFIG},
    nat,
    packet::{header, ifindex},
    port_map, tc_entry,
};

/// What an endpoint's host device runs: the container path, through the pinned slot
/// every agent fills with its own (see netpath_common::maps::ENDPOINT_PROGS). Its run
/// time, as the kernel counts it, includes the tail-called program's.
#[classifier]
pub fn from_container(ctx: TcContext) -> i32 {
    // IPv6 straight to its own program: one tail call a packet, as for IPv4. Chosen by
    // the skb's protocol, not the packet (no packet read: IPv4 pays a comparison here
    // and one in container_path); each call keeps a constant slot, which the JIT turns
    // into a direct jump.
    if ctx.skb.protocol() == ETH_P_IPV6_BE {
        // SAFETY: a tail call that succeeds does not return; the packet is
        // container_path6's. An empty slot falls through to container_path, which
        // tries the same slot and drops.
        let _ = unsafe { ENDPOINT_PROGS6.tail_call(&ctx, TAIL_CONTAINER_PATH6) };
    }
    // SAFETY: a tail call that succeeds does not return; the packet is container_path's.
    let _ = unsafe { ENDPOINT_PROGS.tail_call(&ctx, TAIL_CONTAINER_PATH) };
    // An empty slot: no agent has loaded since the pins were made; the next one attaches
    // every endpoint again.
    TC_ACT_SHOT
}

#[classifier]
pub fn container_path(ctx: TcContext) -> i32 {
    // IPv6 has a program of its own (its verifier budget and stack are not this one's).
    // from_container sends it there; this is for the from_container of an earlier
    // build, still attached where an agent restart left the links as they were.
    if ctx.skb.protocol() == ETH_P_IPV6_BE {
        // SAFETY: as above; the packet is container_path6's.
        let _ = unsafe { ENDPOINT_PROGS6.tail_call(&ctx, TAIL_CONTAINER_PATH6) };
        return TC_ACT_SHOT as i32;
    }
    tc_entry::run(&ctx, HOP_FROM_CONTAINER, try_from_container)
}

const PASS: i32 = TC_ACT_OK as i32;

/// ETH_P_IPV6 as `__sk_buff.protocol` holds it (network byte order in a u32).
const ETH_P_IPV6_BE: u32 = 0x86ddu16.to_be() as u32;

#[inline(always)]
fn try_from_container(ctx: &TcContext) -> Result<(i32, Reason), Reason> {
    let ifindex = ifindex(ctx);
    let eth: *mut EthHdr = header(ctx, 0)?;
    // SAFETY: bounds-checked by header().
    let (ether_type, eth_src, eth_dst) = unsafe { ((*eth).ether_type(), (*eth).src_addr, (*eth).dst_addr) };
    match ether_type {
        Ok(EtherType::Ipv4) => {}
        Ok(EtherType::Arp) => {
            return match arp::respond(ctx, ifindex)? {
                ArpOutcome::Replied(action) => Ok((action, Reason::ArpReplied)),
                ArpOutcome::Ignored => Ok((PASS, Reason::PassedToStack)),
                ArpOutcome::ToParent => Ok((PASS, Reason::PassedToParent)),
            };
        }
        // A sub-interface's frames go out of the parent onto the real LAN, where a VLAN
        // tag would reach the switch's other VLANs and no other type has been checked.
        _ if ifindex & SUBIF_IFINDEX_BASE != 0 => return Err(Reason::DropUnsupportedProtocol),
        // IPv6 comes here only as a frame whose type disagrees with the skb's protocol;
        // it and the rest are the stack's.
        _ => return Ok((PASS, Reason::PassedToStack)),
    }
    let ip: *const Ipv4Hdr = header(ctx, IP_OFF)?;
    // SAFETY: bounds-checked by header(); copied so later helper calls cannot invalidate it.
    let (src, dst) = unsafe { ((*ip).src_addr, (*ip).dst_addr) };

    // Only the endpoint's own address and MAC may leave its veth.
    let sender = arp::lookup_sender(&src, ifindex).ok_or(Reason::DropSpoofedSource)?;
    if eth_src != sender.mac {
        return Err(Reason::DropSpoofedSource);
    }
    let len = ctx.len();
    counters::endpoint_tx(sender.counter_slot, len);
    // A sub-interface's own packet: checked and counted; where it goes is the driver's.
    if sender.flags & ENDPOINT_F_SUBIF != 0 {
        return Ok((PASS, Reason::PassedToParent));
    }
    let bridged = sender.flags & ENDPOINT_F_BRIDGED != 0;
    let at = Sender {
        ifindex,
        hook: if sender.flags & ENDPOINT_F_NETKIT != 0 { Hook::NetkitXmit } else { Hook::TcIngress },
    };

    let dst_key = EndpointKey::new(dst);
    // SAFETY: copied out at once; the agent only replaces whole entries.
    if let Some(peer) = unsafe { ENDPOINTS.get(dst_key) }.copied() {
        // L2 semantics: only frames already addressed to the peer's own MAC skip the
        // bridge.
        if bridged && eth_dst != peer.mac {
            return Ok((PASS, Reason::PassedToStack));
        }
        // A container with published ports may be answering a hairpinned connection: its
        // reply must get the node address back. Only such containers pay the lookup, and
        // only while a hairpin may live. (A bridged one answers its neighbour on the link,
        // to its MAC, as above.)
        if sender.flags & ENDPOINT_F_PUBLISHED != 0 && hairpin::may_live() {
            match flow::parse(ctx) {
                Ok(flow) => {
                    if let Some(entry) = conntrack::lookup(&flow, len) {
                        return deliver_translated(ctx, at, &flow, &entry, Reason::NatTranslated);
                    }
                }
                Err(_) => {
                    if let Some(cfg) = NODE_CONFIG.get(0).copied() {
                        if let Some(done) = translate_icmp_error(ctx, at, &cfg) {
                            return done;
                        }
                    }
                }
            }
        }
        // Exactly as the bridge would have delivered it: unchanged.
        if bridged {
            return forward::to_container(ctx, at.hook, &peer, false);
        }
        // We are the container's router: TTL - 1, and speak L2 as the peer's gateway.
        if !forward::decrement_ttl(ctx)? {
            return Ok((PASS, Reason::PassedToStack));
        }
        return forward::to_container(ctx, at.hook, &peer, true);
    }
    if !bridged {
        if let Some(cfg) = NODE_CONFIG.get(0) {
            // Cluster mode: a pod on another node, addresses kept.
            if cfg.in_cluster_cidr(dst) && !cfg.in_pod_cidr(dst) {
                // SAFETY: a tail call that succeeds does not return; the packet, unchanged
                // so far, is then to_other_node's.
                unsafe { CLUSTER_PROGS.tail_call(ctx, TAIL_TO_OTHER_NODE) };
                // An empty slot: an agent that has not loaded the cluster programs yet.
                return Err(Reason::DropNoNodeRoute);
            }
            // Routed mode: the pod CIDR lives on this node; an address in it that is no
            // endpoint (and not the gateway) reaches no one.
            let gateway = (u32::from_be_bytes(cfg.pod_net) + 1).to_be_bytes();
            if cfg.pod_mask != [0; 4] && cfg.in_pod_cidr(dst) && dst != gateway {
                return Err(Reason::DropNoEndpoint);
            }
        }
    }
    to_outside(ctx, at)
}

/// Where the packet came from: the endpoint's host device, and the hook this program
/// runs at for it.
#[derive(Clone, Copy)]
struct Sender {
    ifindex: u32,
    hook: Hook,
}

/// A packet for an address that is not a local container.
#[inline(always)]
fn to_outside(ctx: &TcContext, at: Sender) -> Result<(i32, Reason), Reason> {
    let Some(cfg) = NODE_CONFIG.get(0).copied() else {
        return Ok((PASS, Reason::PassedToStack));
    };
    let ip: *const Ipv4Hdr = header(ctx, IP_OFF)?;
    // SAFETY: bounds-checked by header().
    let dst = unsafe { (*ip).dst_addr };
    // NAT off, the pod network itself, or the node: the node's stack decides (node
    // services, routes to other pod addresses), with no translation.
    let to_node = dst == cfg.node_ip;
    if cfg.node_ip == [0; 4] || cfg.in_pod_cidr(dst) || cfg.in_cluster_cidr(dst) {
        return Ok((PASS, Reason::PassedToStack));
    }
    // One route for every outcome: each copy of it inlined here costs instructions and
    // stack, and with one more the compiler no longer inlines this program's logic into
    // its entry point (a BPF-to-BPF call on every packet).
    let (src, dst, reason) = match flow::parse(ctx) {
        Ok(flow) => 'tracked: {
            let len = ctx.len();
            let (entry, reason) = match conntrack::lookup(&flow, len) {
                Some(e) => (e, Reason::NatTranslated),
                // Only a connection's first packet may start a hairpin: a container's
                // replies to the node's own connections must not be taken for one.
                None if to_node && !opens_connection(&flow) => return Ok((PASS, Reason::PassedToStack)),
                None if to_node => match port_map::target(&flow.key) {
                    // Hairpin: a container reaching a published port through the node address.
                    Some((ip, port)) => {
                        let entry = conntrack::create_dnat(&flow, ip, port, len, true)?;
                        hairpin::opened();
                        (entry, Reason::DnatNewFlow)
                    }
                    None => return Ok((PASS, Reason::PassedToStack)),
                },
                // A routed prefix (`--masquerade false`): only tracked flows (replies from
                // a published port, a hairpin) are translated; the rest keeps the
                // container's address.
                None if cfg.flags & NODE_F_ROUTED != 0 => {
                    break 'tracked (flow.key.src, flow.key.dst, Reason::Routed)
                }
                None => {
                    let syn = if flow.key.proto == IPPROTO_TCP { flow::tcp_stamp(ctx, &flow) } else { None };
                    (
                        conntrack::create_snat(
                            &flow,
                            cfg.node_ip,
                            (cfg.nat_port_min, cfg.nat_port_max),
                            len,
                            syn,
                        )?,
                        Reason::SnatNewFlow,
                    )
                }
            };
            let (src, dst) = translate(ctx, &flow, &entry)?;
            (src, dst, reason)
        }
        Err(_) if to_node => return Ok((PASS, Reason::PassedToStack)),
        Err(reason) => match icmp_error::translate(ctx, &cfg, Direction::FromContainer)? {
            Some((src, dst)) => (src, dst, Reason::NatTranslated),
            // What conntrack cannot take (a fragment, a protocol without ports, an ICMP
            // error about no translated flow) cannot leave masqueraded; on a routed
            // prefix it needs no translation. A malformed packet never leaves.
            None if cfg.flags & NODE_F_ROUTED == 0 || reason == Reason::DropMalformed => return Err(reason),
            None => {
                let ip: *const Ipv4Hdr = header(ctx, IP_OFF)?;
                // SAFETY: bounds-checked by header().
                let (src, dst) = unsafe { ((*ip).src_addr, (*ip).dst_addr) };
                (src, dst, Reason::Routed)
            }
        },
    };
    route(ctx, at, src, dst, reason)
}

/// Applies a conntrack entry's rewrite and hands the packet on.
#[inline(always)]
fn deliver_translated(
    ctx: &TcContext,
    at: Sender,
    flow: &Flow,
    entry: &netpath_common::CtEntry,
    reason: Reason,
) -> Result<(i32, Reason), Reason> {
    let (src, dst) = translate(ctx, flow, entry)?;
    route(ctx, at, src, dst, reason)
}

/// Applies a conntrack entry's rewrite; returns the packet's new (source, destination).
#[inline(always)]
fn translate(
    ctx: &TcContext,
    flow: &Flow,
    entry: &netpath_common::CtEntry,
) -> Result<([u8; 4], [u8; 4]), Reason> {
    conntrack::note_closing(ctx, flow, entry);
    let new_dst = nat::apply(ctx, flow, entry)?;
    let ip: *const Ipv4Hdr = header(ctx, IP_OFF)?;
    // SAFETY: bounds-checked by header().
    let new_src = unsafe { (*ip).src_addr };
    Ok((new_src, new_dst))
}

/// An ICMP error the container sends about a packet it received through the NAT,
/// translated and routed; None when it quotes no flow netpath translated.
#[inline(always)]
fn translate_icmp_error(
    ctx: &TcContext,
    at: Sender,
    cfg: &netpath_common::NodeConfig,
) -> Option<Result<(i32, Reason), Reason>> {
    match icmp_error::translate(ctx, cfg, Direction::FromContainer) {
        Ok(Some((src, dst))) => Some(route(ctx, at, src, dst, Reason::NatTranslated)),
        Ok(None) => None,
        Err(reason) => Some(Err(reason)),
    }
}

/// Hands a (translated) packet from `src` to `dst` on as their router: into a container
/// when `dst` is local (hairpin, replies to it), else out through the FIB.
#[inline(always)]
fn route(
    ctx: &TcContext,
    at: Sender,
    src: [u8; 4],
    new_dst: [u8; 4],
    reason: Reason,
) -> Result<(i32, Reason), Reason> {
    if !forward::decrement_ttl(ctx)? {
        return Ok((PASS, Reason::PassedToStack));
    }
    let new_key = EndpointKey::new(new_dst);
    // SAFETY: copied out at once.
    if let Some(peer) = unsafe { ENDPOINTS.get(new_key) }.copied() {
        let (action, _) = forward::to_container(ctx, at.hook, &peer, true)?;
        return Ok((action, reason));
    }
    Ok((forward::to_fib(ctx, at.ifindex, src, new_dst)?, reason))
}

/// A TCP SYN without ACK, or any packet of the connectionless protocols.
#[inline(always)]
fn opens_connection(flow: &Flow) -> bool {
    flow.key.proto != IPPROTO_TCP || (flow.tcp_flags & tcp::SYN != 0 && flow.tcp_flags & tcp::ACK == 0)
}
