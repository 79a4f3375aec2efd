//! Neighbour discovery for the IPv6 gateway, the twin of the ARP responder: every
//! container routes through fe80::1, which no device on the node owns; the datapath
//! answers the container's neighbour solicitation for it with the host veth's MAC, so
//! all of the container's IPv6 traffic reaches the datapath at L3.
//!
//! Answered: a solicitation (hop limit 255, as RFC 4861 requires) from a registered
//! endpoint's address behind its own host veth, for fe80::1, with exactly one source
//! link-layer address option naming the endpoint's MAC, or, sent unicast, with none
//! (the advertisement then has none either; a multicast solicitation must carry the
//! option, RFC 4861 4.3, and its answer must carry the target's, 7.2.4: without one
//! it is left unanswered). Address probes (from ::) get no answer: netpath's containers
//! run without duplicate address detection. Anything else is not ours and goes on as
//! an ordinary packet.
use aya_ebpf::{bindings::TC_ACT_SHOT, helpers::generated::bpf_redirect, programs::TcContext};
use netpath_common::{Endpoint6Key, EndpointInfo, Reason, SenderEntry, ENDPOINT_F_BRIDGED, GATEWAY6};
use network_types::eth::EthHdr;

use crate::{
    headers::{ipv6, IPV6_L4_OFF, IP_OFF},
    packet::{header, ptr_at},
};

const NEIGHBOUR_SOLICITATION: u8 = 135;
const NEIGHBOUR_ADVERTISEMENT: u8 = 136;
/// Option types: source and target link-layer address, 1 unit of 8 bytes each.
const OPT_SOURCE_LLADDR: u8 = 1;
const OPT_TARGET_LLADDR: u8 = 2;
/// Router, Solicited, Override.
const NA_FLAGS: u8 = 0xe0;
/// A solicitation without options, and with one link-layer address option.
const NS_LEN: u16 = 24;
const NS_WITH_LLADDR_LEN: u16 = 32;

/// An ND message for a target, as it sits after the IPv6 header.
#[repr(C)]
struct NdMsg {
    kind: u8,
    code: u8,
    check: [u8; 2],
    flags: [u8; 4],
    target: [u8; 16],
}

/// A link-layer address option.
#[repr(C)]
struct LladdrOpt {
    kind: u8,
    units: u8,
    mac: [u8; 6],
}

pub enum NdOutcome {
    /// Rewritten into an advertisement; the caller returns this tc action.
    Replied(i32),
    /// An address probe, or a bridged endpoint's (its bridge answers): the stack's.
    Ignored,
    /// Not a solicitation for the gateway: an ordinary packet.
    NotOurs,
}

/// Answers a solicitation for the gateway from the endpoint behind `ifindex`.
#[inline(always)]
pub fn respond(ctx: &TcContext, ifindex: u32) -> Result<NdOutcome, Reason> {
    let Ok(msg) = ptr_at::<NdMsg, _>(ctx, IPV6_L4_OFF) else { return Ok(NdOutcome::NotOurs) };
    let eth: *mut EthHdr = header(ctx, 0)?;
    let ip: *mut [u8; ipv6::LEN] = header(ctx, IP_OFF)?;
    // SAFETY: all three pointers were bounds-checked; no helper runs while they are used.
    let (eth, ip, msg) = unsafe { (&mut *eth, &mut *ip, &mut *msg) };
    if msg.kind != NEIGHBOUR_SOLICITATION || msg.code != 0 || msg.target != GATEWAY6 {
        return Ok(NdOutcome::NotOurs);
    }
    let src: [u8; 16] = field(ip, ipv6::SRC);
    if src == [0; 16] {
        return Ok(NdOutcome::Ignored);
    }
    if ip[ipv6::HOP_LIMIT] != 255 {
        return Err(Reason::DropMalformed);
    }
    let sender = lookup_sender(&src, ifindex).ok_or(Reason::DropSpoofedSource)?;
    if eth.src_addr != sender.mac {
        return Err(Reason::DropSpoofedSource);
    }
    if sender.flags & ENDPOINT_F_BRIDGED != 0 {
        return Ok(NdOutcome::Ignored);
    }
    let with_lladdr = match u16::from_be_bytes([ip[ipv6::PAYLOAD_LEN], ip[ipv6::PAYLOAD_LEN + 1]]) {
        NS_LEN if ip[ipv6::DST] == 0xff => return Ok(NdOutcome::Ignored),
        NS_LEN => false,
        NS_WITH_LLADDR_LEN => true,
        _ => return Ok(NdOutcome::Ignored),
    };
    if with_lladdr {
        let opt: *mut LladdrOpt = header(ctx, IPV6_L4_OFF + NS_LEN as usize)?;
        // SAFETY: bounds-checked by header().
        let opt = unsafe { &mut *opt };
        if opt.kind != OPT_SOURCE_LLADDR || opt.units != 1 {
            return Ok(NdOutcome::Ignored);
        }
        if opt.mac != sender.mac {
            return Err(Reason::DropSpoofedSource);
        }
        opt.kind = OPT_TARGET_LLADDR;
        opt.mac = sender.host_mac;
    }
    eth.dst_addr = sender.mac;
    eth.src_addr = sender.host_mac;
    ip[ipv6::DST..ipv6::DST + 16].copy_from_slice(&src);
    ip[ipv6::SRC..ipv6::SRC + 16].copy_from_slice(&GATEWAY6);
    msg.kind = NEIGHBOUR_ADVERTISEMENT;
    msg.flags = [NA_FLAGS, 0, 0, 0];
    msg.check = checksum(&src, with_lladdr, &sender.host_mac);
    // Out of the same veth, back into the container.
    // SAFETY: plain helper call; it only records the target in per-CPU state.
    let action = unsafe { bpf_redirect(ifindex, 0) } as i32;
    if action == TC_ACT_SHOT {
        return Err(Reason::DropRedirectFailed);
    }
    Ok(NdOutcome::Replied(action))
}

/// The advertisement's ICMPv6 checksum, from the values it was built from: the
/// pseudo-header (fe80::1 to `dst`, its length, next header 58) and the message.
#[inline(always)]
fn checksum(dst: &[u8; 16], with_lladdr: bool, mac: &[u8; 6]) -> [u8; 2] {
    let len = if with_lladdr { NS_WITH_LLADDR_LEN } else { NS_LEN } as u32;
    let mut sum = sum16(0, &GATEWAY6) + sum16(0, dst) + len + ipv6::IPPROTO_ICMPV6 as u32;
    sum += ((NEIGHBOUR_ADVERTISEMENT as u32) << 8) + ((NA_FLAGS as u32) << 8) + sum16(0, &GATEWAY6);
    if with_lladdr {
        sum += ((OPT_TARGET_LLADDR as u32) << 8) + 1 + sum16(0, mac);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    (!(sum as u16)).to_be_bytes()
}

/// The sum of `bytes` as big-endian 16-bit words, added to `acc` (no folding).
#[inline(always)]
fn sum16<const N: usize>(mut acc: u32, bytes: &[u8; N]) -> u32 {
    let mut i = 0;
    while i + 1 < N {
        acc += u16::from_be_bytes([bytes[i], bytes[i + 1]]) as u32;
        i += 2;
    }
    acc
}

/// The 16 bytes at `at` in the IPv6 header.
#[inline(always)]
fn field(ip: &[u8; ipv6::LEN], at: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&ip[at..at + 16]);
    a
}

/// The target of the neighbour solicitation the packet (ICMPv6 right after the fixed
/// header) is; None when it is none.
#[inline(always)]
pub fn solicited_target(ctx: &TcContext) -> Option<[u8; 16]> {
    let msg = ptr_at::<NdMsg, _>(ctx, IPV6_L4_OFF).ok()?;
    // SAFETY: bounds-checked by ptr_at.
    let msg = unsafe { &*msg };
    (msg.kind == NEIGHBOUR_SOLICITATION && msg.code == 0).then_some(msg.target)
}

/// The endpoint owning IPv6 address `addr`, if it lives behind `ifindex`.
#[inline(always)]
pub fn lookup_sender(addr: &[u8; 16], ifindex: u32) -> Option<EndpointInfo> {
    // The device's slot first, as for IPv4 (arp::lookup_sender); an address the slot
    // does not hold settles nothing, and no packet matches an empty one.
    if let Some(s) = crate::maps::SENDERS.get(SenderEntry::slot(ifindex)) {
        if s.info.host_ifindex == ifindex && *addr != [0; 16] && (s.addr6 == *addr || s.link_local6 == *addr)
        {
            return Some(s.info);
        }
    }
    // SAFETY: the value is copied out at once; the agent only replaces whole entries.
    let ep = unsafe { crate::maps::ENDPOINTS6.get(Endpoint6Key::new(*addr)) }?;
    if ep.host_ifindex != ifindex {
        return None;
    }
    Some(*ep)
}
