//! Path MTU towards other nodes. A pod whose MTU is larger than the path to another node
//! can carry (an endpoint added with a larger `--mtu`, or an uplink whose MTU went down
//! since) may send a packet that does not fit. With DF set, a router would answer
//! "fragmentation needed" so the sender's socket learns the path MTU; the overlay and
//! the redirect are no router, so the datapath answers in their place, as the pod's
//! gateway, and the packet is dropped. Without DF the packet goes on (the overlay's
//! outer packet is fragmented).
//!
//! GSO packets are left alone: their segments follow the TCP MSS, which the peer (a pod
//! with the path's MTU) has already lowered. An ICMP error gets no error back: it is
//! only dropped.
use aya_ebpf::{
    bindings::{__sk_buff, TC_ACT_SHOT},
    helpers::generated::{bpf_csum_diff, bpf_redirect, bpf_skb_change_tail, bpf_skb_pull_data},
    programs::TcContext,
};
use netpath_common::{NodeConfig, Reason};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    events,
    headers::{icmp, ipv4, IPPROTO_ICMP, IP_OFF},
    packet::{header, OrMalformed},
};

/// IPv4's "don't fragment" bit, in the flags-and-offset field read in host order.
const DF: u16 = 0x4000;
/// ICMP destination unreachable, fragmentation needed (RFC 792, RFC 1191).
const DEST_UNREACH: u8 = 3;
const FRAG_NEEDED: u8 = 4;
/// What RFC 792 quotes: the offending packet's header and its first 8 bytes.
const QUOTE_LEN: usize = ipv4::MIN_LEN + 8;
const ICMP_OFF: usize = IP_OFF + ipv4::MIN_LEN;
const QUOTE_OFF: usize = ICMP_OFF + icmp::LEN;
const REPLY_LEN: usize = QUOTE_OFF + QUOTE_LEN;

/// Is the packet bigger than `cfg.path_mtu` with DF set?
#[inline(always)]
pub fn too_big(ctx: &TcContext, cfg: &NodeConfig) -> bool {
    let mtu = cfg.path_mtu as u32;
    // SAFETY: reading the context's own fields.
    let (len, gso) = unsafe { ((*ctx.skb.skb).len, (*ctx.skb.skb).gso_size) };
    if mtu == 0 || gso != 0 || len <= IP_OFF as u32 + mtu {
        return false;
    }
    let Ok(frag) = ctx.load::<[u8; 2]>(IP_OFF + ipv4::FRAG_OFF) else { return false };
    u16::from_be_bytes(frag) & DF != 0
}

/// Turns the packet, in place, into the ICMP error its sender (behind `ifindex`) needs,
/// and sends it back. The error is counted as the drop it reports.
#[inline(always)]
pub fn reply(ctx: &TcContext, cfg: &NodeConfig, ifindex: u32) -> Result<(i32, Reason), Reason> {
    let gateway = u32::from_be_bytes(cfg.pod_net) + 1;
    match build(ctx.skb.skb, gateway, cfg.path_mtu as u32, ifindex) {
        TC_ACT_SHOT => Err(Reason::DropFragNeeded),
        action => {
            events::egress(netpath_common::trace::HOP_TO_CONTAINER, ifindex);
            Ok((action, Reason::DropFragNeeded))
        }
    }
}

/// [`reply`]'s work, a function of its own (a BPF-to-BPF call) with scalar arguments and
/// result, everything written in the packet itself: the programs that call it already
/// use most of the 512 bytes of stack the verifier allows a call chain. Returns the tc
/// action; TC_ACT_SHOT when no error could be built.
#[inline(never)]
fn build(skb: *mut __sk_buff, gateway: u32, mtu: u32, ifindex: u32) -> i32 {
    let ctx = TcContext::new(skb);
    match write(&ctx, gateway.to_be_bytes(), mtu as u16) {
        // SAFETY: plain helper call: out of the sender's host device, into its namespace.
        Ok(()) => unsafe { bpf_redirect(ifindex, 0) as i32 },
        Err(_) => TC_ACT_SHOT,
    }
}

#[inline(always)]
fn write(ctx: &TcContext, gateway: [u8; 4], mtu: u16) -> Result<(), Reason> {
    let vihl: u8 = ctx.load(IP_OFF).or_malformed()?;
    // Options would move the quoted transport bytes; such senders get no answer.
    if vihl != 0x45 {
        return Err(Reason::DropFragNeeded);
    }
    // No ICMP error about an ICMP error (RFC 1122 3.2.2).
    let proto: u8 = ctx.load(IP_OFF + ipv4::PROTO).or_malformed()?;
    let kind: u8 = ctx.load(ICMP_OFF).or_malformed()?;
    if proto == IPPROTO_ICMP && matches!(kind, 3 | 4 | 5 | 11 | 12) {
        return Err(Reason::DropFragNeeded);
    }
    // SAFETY: plain helper calls on our skb; pointers are derived from it afterwards.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, REPLY_LEN as u32, 0) } != 0
        || unsafe { bpf_skb_pull_data(ctx.skb.skb, REPLY_LEN as u32) } != 0
    {
        return Err(Reason::DropFragNeeded);
    }
    let p: *mut [u32; REPLY_LEN / 4] = header(ctx, 2)?;
    // SAFETY: bounds-checked by header(): the whole reply is in the linear data. Word
    // by word (from byte 2, so the IP header and everything after it are whole words):
    // few registers, no stack.
    unsafe {
        let w = p as *mut u32;
        let at = |off: usize| w.add(word(off));
        // The quote (the offending header and 8 bytes) moves behind the new headers.
        for i in 0..QUOTE_LEN / 4 {
            at(QUOTE_OFF).add(i).write_unaligned(at(IP_OFF).add(i).read_unaligned());
        }
        let mac = (p as *mut u8).sub(2) as *mut [u8; 6];
        core::ptr::swap(mac, mac.add(1));
        let ip = at(IP_OFF);
        ip.write_unaligned(u32::from_ne_bytes([0x45, 0xc0, 0, (REPLY_LEN - IP_OFF) as u8]));
        ip.add(1).write_unaligned(0);
        ip.add(2).write_unaligned(u32::from_ne_bytes([64, IPPROTO_ICMP, 0, 0]));
        ip.add(3).write_unaligned(u32::from_ne_bytes(gateway));
        // To the offending packet's source.
        ip.add(4).write_unaligned(at(QUOTE_OFF).add(3).read_unaligned());
        let sum = fold(bpf_csum_diff(core::ptr::null_mut(), 0, ip, ipv4::MIN_LEN as u32, 0));
        (ip as *mut u16).add(5).write_unaligned(sum);
        let icmp = at(ICMP_OFF);
        icmp.write_unaligned(u32::from_ne_bytes([DEST_UNREACH, FRAG_NEEDED, 0, 0]));
        let [hi, lo] = mtu.to_be_bytes();
        icmp.add(1).write_unaligned(u32::from_ne_bytes([0, 0, hi, lo]));
        let sum = fold(bpf_csum_diff(core::ptr::null_mut(), 0, icmp, (REPLY_LEN - ICMP_OFF) as u32, 0));
        (icmp as *mut u16).add(1).write_unaligned(sum);
    }
    Ok(())
}

/// The word of the reply's word view (which starts at byte 2) that byte `off` begins.
const fn word(off: usize) -> usize {
    (off - 2) / 4
}

/// The Internet checksum (RFC 1071) from `bpf_csum_diff`'s sum of native-order words,
/// to be stored in native order.
#[inline(always)]
pub fn fold(sum: i64) -> u16 {
    let mut sum = sum as u32;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

const _: () = assert!(REPLY_LEN == 14 + 20 + 8 + 28 && IP_OFF == EthHdr::LEN);
// The word view starts at byte 2: every header from IP on starts on a word.
const _: () = assert!((IP_OFF - 2) % 4 == 0 && (ICMP_OFF - 2) % 4 == 0 && (QUOTE_OFF - 2) % 4 == 0);
const _: () = assert!(core::mem::size_of::<Ipv4Hdr>() == ipv4::MIN_LEN);
