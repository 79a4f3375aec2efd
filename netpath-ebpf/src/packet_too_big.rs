//! Path MTU towards other nodes, for IPv6 (frag_needed's twin). A pod whose MTU is
//! larger than the path to another node carries may send a packet that does not fit.
//! IPv6 has no fragmentation on the way, so a router would drop it and answer "packet
//! too big" (RFC 4443 3.2) for the sender to learn the path MTU; the overlay and the
//! redirect are no router, so the datapath answers in their place, from the pod's
//! gateway (fe80::1), and the packet is dropped.
//!
//! GSO packets are left alone: their segments follow the TCP MSS, which the peer (a pod
//! with the path's MTU) has already lowered. An ICMPv6 error gets no error back (RFC
//! 4443 2.4 e): it is only dropped.
use aya_ebpf::{
    bindings::{__sk_buff, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, TC_ACT_SHOT},
    helpers::generated::{
        bpf_csum_diff, bpf_redirect, bpf_skb_adjust_room, bpf_skb_change_tail, bpf_skb_pull_data,
    },
    programs::TcContext,
};
use netpath_common::{NodeConfig, Reason, GATEWAY6};

use crate::{
    events,
    frag_needed::fold,
    headers::{ipv6, IPV6_L4_OFF, IP_OFF},
    packet::header,
};

/// ICMPv6 packet too big (RFC 4443 3.2).
const PACKET_TOO_BIG: u8 = 2;
/// The first informational type: below it, an ICMPv6 error.
const ICMPV6_INFO_MIN: u8 = 128;
/// The headers put in front of the offending packet: IPv6 and ICMPv6's 8 bytes.
const ROOM: usize = ipv6::LEN + 8;
/// How much of the offending packet is quoted. RFC 4443 asks for as much as fits in
/// 1280 bytes; this is what one `bpf_csum_diff` can sum with the pseudo-header's
/// addresses (its limit is 512 bytes), enough for the fixed header, any extension
/// headers a sender uses in practice and the transport header the receiver needs to
/// find the socket.
const QUOTE_LEN: usize = 512 - 32 - 8;
const ICMP_OFF: usize = IPV6_L4_OFF;
const REPLY_LEN: usize = IP_OFF + ROOM + QUOTE_LEN;

/// Is the packet bigger than `cfg.path_mtu`? (What may be answered; see [`reply`].)
#[inline(always)]
pub fn too_big(ctx: &TcContext, cfg: &NodeConfig) -> bool {
    let mtu = cfg.path_mtu as u32;
    // SAFETY: reading the context's own fields.
    let (len, gso) = unsafe { ((*ctx.skb.skb).len, (*ctx.skb.skb).gso_size) };
    mtu != 0 && gso == 0 && len > IP_OFF as u32 + mtu
}

/// Turns the packet, in place, into the ICMPv6 error its sender (behind `ifindex`)
/// needs, and sends it back. The error is counted as the drop it reports.
#[inline(always)]
pub fn reply(ctx: &TcContext, cfg: &NodeConfig, ifindex: u32) -> Result<(i32, Reason), Reason> {
    match build(ctx.skb.skb, cfg.path_mtu as u32, ifindex) {
        TC_ACT_SHOT => Err(Reason::DropPacketTooBig),
        action => {
            events::egress(netpath_common::trace::HOP_TO_CONTAINER, ifindex);
            Ok((action, Reason::DropPacketTooBig))
        }
    }
}

/// [`reply`]'s work, a function of its own (a BPF-to-BPF call) with scalar arguments and
/// result, everything written in the packet itself. Returns the tc action; TC_ACT_SHOT
/// when no error could (or may) be built.
#[inline(never)]
fn build(skb: *mut __sk_buff, mtu: u32, ifindex: u32) -> i32 {
    let ctx = TcContext::new(skb);
    match write(&ctx, mtu) {
        // SAFETY: plain helper call: out of the sender's host device, into its namespace.
        Ok(()) => unsafe { bpf_redirect(ifindex, 0) as i32 },
        Err(_) => TC_ACT_SHOT,
    }
}

#[inline(always)]
fn write(ctx: &TcContext, mtu: u32) -> Result<(), Reason> {
    // A packet too short to quote (a path MTU below IPv6's minimum) gets no answer.
    if (ctx.len() as usize) < IP_OFF + QUOTE_LEN {
        return Err(Reason::DropPacketTooBig);
    }
    let head: *const [u8; ipv6::LEN + 1] = header(ctx, IP_OFF)?;
    // SAFETY: bounds-checked by header().
    let (next, first) = unsafe { ((*head)[ipv6::NEXT_HDR], (*head)[ipv6::LEN]) };
    if next == ipv6::IPPROTO_ICMPV6 && first < ICMPV6_INFO_MIN {
        return Err(Reason::DropPacketTooBig);
    }
    // Room for the new headers between the Ethernet header and the offending packet,
    // which becomes the quote, cut to its length.
    // SAFETY: plain helper calls on our skb; pointers are derived from it afterwards.
    if unsafe { bpf_skb_adjust_room(ctx.skb.skb, ROOM as i32, BPF_ADJ_ROOM_MAC, 0) } != 0
        || unsafe { bpf_skb_change_tail(ctx.skb.skb, REPLY_LEN as u32, 0) } != 0
        || unsafe { bpf_skb_pull_data(ctx.skb.skb, REPLY_LEN as u32) } != 0
    {
        return Err(Reason::DropPacketTooBig);
    }
    let p: *mut [u8; REPLY_LEN] = header(ctx, 0)?;
    // SAFETY: bounds-checked by header(): the whole reply is in the linear data. Written
    // word by word: few registers, no stack.
    unsafe {
        let b = p as *mut u8;
        let mac = b as *mut [u8; 6];
        core::ptr::swap(mac, mac.add(1));
        let word = |off: usize| b.add(off) as *mut u32;
        let ip = IP_OFF;
        let quote = IP_OFF + ROOM;
        word(ip).write_unaligned(u32::from_ne_bytes([0x60, 0, 0, 0]));
        let [hi, lo] = ((8 + QUOTE_LEN) as u16).to_be_bytes();
        word(ip + 4).write_unaligned(u32::from_ne_bytes([hi, lo, ipv6::IPPROTO_ICMPV6, 64]));
        for i in 0..4 {
            word(ip + ipv6::SRC + 4 * i).write_unaligned(u32::from_ne_bytes([
                GATEWAY6[4 * i],
                GATEWAY6[4 * i + 1],
                GATEWAY6[4 * i + 2],
                GATEWAY6[4 * i + 3],
            ]));
            // To the offending packet's source.
            word(ip + ipv6::DST + 4 * i).write_unaligned(word(quote + ipv6::SRC + 4 * i).read_unaligned());
        }
        word(ICMP_OFF).write_unaligned(u32::from_ne_bytes([PACKET_TOO_BIG, 0, 0, 0]));
        word(ICMP_OFF + 4).write_unaligned(u32::from_ne_bytes(mtu.to_be_bytes()));
        // The checksum covers the pseudo-header: the addresses (just written, next to the
        // message), the message's length and next header 58 (the seed).
        // (One big-endian word: 480 + 58 carries nothing between its 16-bit halves.)
        let seed = u32::from_ne_bytes(((8 + QUOTE_LEN) as u32 + ipv6::IPPROTO_ICMPV6 as u32).to_be_bytes());
        let from = word(ip + ipv6::SRC);
        let sum =
            bpf_csum_diff(core::ptr::null_mut(), 0, from, (REPLY_LEN - IP_OFF - ipv6::SRC) as u32, seed);
        (b.add(ICMP_OFF + 2) as *mut u16).write_unaligned(fold(sum));
    }
    Ok(())
}

// One bpf_csum_diff call: the addresses, the ICMPv6 header and the quote in 512 bytes.
const _: () = assert!(REPLY_LEN - IP_OFF - ipv6::SRC == 512 && QUOTE_LEN % 4 == 0);
