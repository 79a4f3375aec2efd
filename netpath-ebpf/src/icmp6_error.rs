//! ICMPv6 errors about NAT66 flows (destination unreachable, packet too big, time
//! exceeded, parameter problem), in both directions, as `icmp_error` does for IPv4:
//! translated like the flow they quote, the quoted header included, so that a
//! container's socket learns of an error about what it sent (a packet-too-big becomes a
//! path-MTU update: path-MTU discovery works through NAT66), and the outside hears of a
//! container's error about the node's address and port, not a pod address.
//!
//! Two programs (one per direction, so a packet from the outside can never be taken for
//! a container's), tail-called through PROGS6: `icmp6_to_container` by uplink_in6 for an
//! ICMPv6 error to the node's address, `icmp6_from_container` by container_nat6 for one
//! a container sends to the outside. Only errors whose outer and quoted headers are
//! fixed headers with nothing between them are translated (fixed offsets keep them
//! verifiable on older kernels); the rest are left as they are.
use aya_ebpf::{
    bindings::{BPF_F_PSEUDO_HDR, BPF_F_RECOMPUTE_CSUM},
    helpers::generated::{bpf_csum_diff, bpf_ktime_get_ns},
    macros::classifier,
    programs::TcContext,
};
use netpath_common::{
    conntrack::{CT_F_DNAT, CT_F_SNAT, NODE_F_IPV6},
    CtKey6, Endpoint6Key, Ip6, Reason,
};

use crate::{
    container_nat6::{to_local, untranslated},
    container_path6::{decrement_hop_limit, decrement_hop_limit_received},
    family::Addr,
    forward,
    headers::{icmp, ipv6, l4, IPPROTO_TCP, IPPROTO_UDP, IPV6_L4_OFF, IP_OFF},
    maps::{CONNTRACK6, CONNTRACK6_NEW, ENDPOINTS6, NODE_CONFIG, NODE_CONFIG6},
    packet::{header, ifindex, OrMalformed},
    tc_entry,
};

const PASS: i32 = aya_ebpf::bindings::TC_ACT_OK as i32;

/// ICMPv6 error types (RFC 4443).
const DEST_UNREACH: u8 = 1;
const PACKET_TOO_BIG: u8 = 2;
const TIME_EXCEEDED: u8 = 3;
const PARAM_PROBLEM: u8 = 4;

const ICMP6_OFF: usize = IPV6_L4_OFF;
const ICMP6_CSUM_OFF: usize = ICMP6_OFF + icmp::CHECK;
/// The quoted packet: its fixed header and the first 8 bytes after it.
const INNER_OFF: usize = ICMP6_OFF + 8;
const INNER_L4_OFF: usize = INNER_OFF + ipv6::LEN;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// From the outside to the node, about a packet the node sent for a container.
    ToContainer,
    /// From a container, about a packet it received through NAT66.
    FromContainer,
}

#[classifier]
pub fn icmp6_to_container(ctx: TcContext) -> i32 {
    tc_entry::resume6(&ctx, |ctx| {
        let Some((_, dst, hops)) = translate(ctx, Direction::ToContainer)? else {
            return Ok((PASS, Reason::PassedToStack));
        };
        // SAFETY: copied out at once.
        let Some(peer) = (unsafe { ENDPOINTS6.get(Endpoint6Key::new(dst.0)) }).copied() else {
            return Err(Reason::DropRedirectFailed);
        };
        if hops <= 1 {
            return Ok((PASS, Reason::PassedToStack));
        }
        decrement_hop_limit_received(ctx, hops)?;
        let (action, _) = forward::to_container(ctx, forward::Hook::TcIngress, &peer, true)?;
        Ok((action, Reason::NatTranslated))
    })
}

#[classifier]
pub fn icmp6_from_container(ctx: TcContext) -> i32 {
    tc_entry::resume6(&ctx, |ctx| {
        // The sender, as it was before the translation (for a local delivery's hook).
        let [sender, _]: [Ip6; 2] = ctx.load(<Ip6 as Addr>::SRC_OFF).or_malformed()?;
        if let Some((src, dst, hops)) = translate(ctx, Direction::FromContainer)? {
            // About a hairpinned flow: into the local client, as the flow's packets go.
            if let Some(done) = to_local(ctx, &sender, &dst) {
                return done.map(|(action, _)| (action, Reason::NatTranslated));
            }
            decrement_hop_limit(ctx, hops)?;
            return Ok((forward::to_fib(ctx, ifindex(ctx), src, dst)?, Reason::NatTranslated));
        }
        // Other ICMPv6 (an error about no tracked flow, another message) goes on as it
        // is where pod addresses may go: to a local peer (a container with published
        // ports comes this way for those), out on a routed prefix. Masqueraded, it
        // would leave with a pod address: dropped, as the rest NAT66 cannot translate.
        let cfg6 = NODE_CONFIG6.get(0).copied().ok_or(Reason::DropUnsupportedProtocol)?;
        let [src, dst]: [Ip6; 2] = ctx.load(<Ip6 as Addr>::SRC_OFF).or_malformed()?;
        untranslated(ctx, &cfg6, src, dst).unwrap_or(Err(Reason::DropUnsupportedProtocol))
    })
}

/// If the packet is an ICMPv6 error quoting a NAT66 flow, rewrites it; its new source
/// and destination, and its hop limit. `Ok(None)` when it is not one.
#[inline(always)]
fn translate(ctx: &TcContext, dir: Direction) -> Result<Option<(Ip6, Ip6, u8)>, Reason> {
    if NODE_CONFIG.get(0).is_none_or(|c| c.flags & NODE_F_IPV6 == 0) {
        return Ok(None);
    }
    let Some(cfg6) = NODE_CONFIG6.get(0) else { return Ok(None) };
    let node_ip = Ip6(cfg6.node_ip);
    let outer: *const [u8; ipv6::LEN] = header(ctx, IP_OFF)?;
    // SAFETY: bounds-checked by header().
    let (next, hops) = unsafe { ((*outer)[ipv6::NEXT_HDR], (*outer)[ipv6::HOP_LIMIT]) };
    if next != ipv6::IPPROTO_ICMPV6 {
        return Ok(None);
    }
    // A message too short to be an error is not one (the kernel discards it).
    let Ok(msg) = header::<[u8; 8], _>(ctx, ICMP6_OFF) else { return Ok(None) };
    // SAFETY: bounds-checked by header().
    let ty = unsafe { (*msg)[0] };
    if !matches!(ty, DEST_UNREACH | PACKET_TOO_BIG | TIME_EXCEEDED | PARAM_PROBLEM) {
        return Ok(None);
    }
    let [src, dst]: [Ip6; 2] = ctx.load(<Ip6 as Addr>::SRC_OFF).or_malformed()?;
    let Ok(inner) = header::<[u8; ipv6::LEN], _>(ctx, INNER_OFF) else { return Ok(None) };
    // SAFETY: bounds-checked by header().
    let inner_next = unsafe { (*inner)[ipv6::NEXT_HDR] };
    let [isrc, idst]: [Ip6; 2] = ctx.load(INNER_OFF + ipv6::SRC).or_malformed()?;
    let Ok(il4) = header::<[u8; 8], _>(ctx, INNER_L4_OFF) else { return Ok(None) };
    // SAFETY: bounds-checked by header().
    let il4 = unsafe { *il4 };
    let port = |off: usize| [il4[off], il4[off + 1]];
    // Our side of the flow: the node's going in (the error's destination, the quoted
    // packet's source), the container's going out (its source, the quoted destination).
    let (local, outer_off, inner_off, port_off) = match dir {
        Direction::ToContainer => {
            (dst, <Ip6 as Addr>::DST_OFF, INNER_OFF + ipv6::SRC, INNER_L4_OFF + l4::SPORT)
        }
        Direction::FromContainer => {
            (src, <Ip6 as Addr>::SRC_OFF, INNER_OFF + ipv6::DST, INNER_L4_OFF + l4::DPORT)
        }
    };
    let quoted_local = if dir == Direction::ToContainer { isrc } else { idst };
    if quoted_local != local || (dir == Direction::ToContainer && local != node_ip) {
        return Ok(None);
    }
    // The quoted packet reversed is the key of our side's entry: the reply entry going
    // in, the container's own going out.
    let mut key = CtKey6 {
        src: idst,
        dst: isrc,
        sport: port(l4::DPORT),
        dport: port(l4::SPORT),
        proto: inner_next,
        ..Default::default()
    };
    let port_off = match (inner_next, dir) {
        (IPPROTO_TCP | IPPROTO_UDP, _) => port_off,
        // An echo request the node sent for a container: the identifier is its "port".
        (ipv6::IPPROTO_ICMPV6, Direction::ToContainer) if il4[0] == <Ip6 as Addr>::ECHO_REQUEST => {
            key.sport = [0; 2];
            key.dport = port(icmp::ECHO_ID);
            INNER_L4_OFF + icmp::ECHO_ID
        }
        _ => return Ok(None),
    };
    let Some(entry) = CONNTRACK6.get_ptr_mut(&key).or_else(|| CONNTRACK6_NEW.get_ptr_mut(&key)) else {
        return Ok(None);
    };
    // SAFETY: map value valid for the program's run; the timestamp is advisory.
    let entry = unsafe {
        (*entry).last_seen_ns = bpf_ktime_get_ns();
        *entry
    };
    let (new_ip, new_port) = match dir {
        Direction::ToContainer if entry.flags & CT_F_DNAT != 0 => (entry.nat_dst, entry.nat_dport),
        Direction::FromContainer if entry.flags & CT_F_SNAT != 0 => (entry.nat_src, entry.nat_sport),
        _ => return Ok(None),
    };
    // One address change, twice: in the outer header (in ICMPv6's checksum through the
    // pseudo-header) and in the quoted one (in the message itself). The quoted packet's
    // own L4 checksum is left: only its first 8 bytes are quoted, nobody can verify it.
    // SAFETY: two 16-byte values on the stack, sizes given; the helper only reads them.
    let diff = unsafe { bpf_csum_diff(local.0.as_ptr() as *mut _, 16, new_ip.0.as_ptr() as *mut _, 16, 0) };
    if diff < 0 {
        return Err(Reason::DropMalformed);
    }
    ctx.l4_csum_replace(ICMP6_CSUM_OFF, 0, diff as u64, BPF_F_PSEUDO_HDR as u64).or_malformed()?;
    // skb->csum (CHECKSUM_COMPLETE) follows the store: see Ip6::rewrite.
    ctx.store(outer_off, &new_ip, BPF_F_RECOMPUTE_CSUM as u64).or_malformed()?;
    ctx.l4_csum_replace(ICMP6_CSUM_OFF, 0, diff as u64, 0).or_malformed()?;
    ctx.store(inner_off, &new_ip, 0).or_malformed()?;
    let old_port: [u8; 2] = ctx.load(port_off).or_malformed()?;
    let as16 = |p: [u8; 2]| u16::from_ne_bytes(p) as u64;
    ctx.l4_csum_replace(ICMP6_CSUM_OFF, as16(old_port), as16(new_port), 2).or_malformed()?;
    ctx.store(port_off, &new_port, 0).or_malformed()?;
    Ok(Some(match dir {
        Direction::ToContainer => (src, new_ip, hops),
        Direction::FromContainer => (new_ip, dst, hops),
    }))
}
