//! Handing a packet on: into a local container (bpf_redirect_peer) or out through the
//! node's routes (bpf_fib_lookup + bpf_redirect / bpf_redirect_neigh), never via the
//! node's IP stack or netfilter.
use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibParams, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_SHOT,
    },
    helpers::generated::{
        bpf_fib_lookup, bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer, bpf_skb_change_type,
    },
    programs::TcContext,
};
use netpath_common::{
    trace::{HOP_TO_CONTAINER, HOP_UPLINK_OUT},
    EndpointInfo, Reason,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{counters, events, family::Addr, headers::IP_OFF, maps::FIB_SCRATCH, packet::header};
/// skb->pkt_type of a frame for this host (linux/if_packet.h).
const PACKET_HOST: u32 = 0;

/// Acts as a router hop: TTL - 1 with the checksum fixed. A packet that would expire
/// is left to the stack, which sends the ICMP time-exceeded. The checksum is updated
/// in place as the kernel's own ip_decrease_ttl does (RFC 1624: the TTL is the high
/// byte of its 16-bit word, so the stored complement grows by 0x0100, end-around
/// carry): on every forwarded packet, a helper call and the re-derived packet pointers
/// after it cost more than the arithmetic.
#[inline(always)]
pub fn decrement_ttl(ctx: &TcContext) -> Result<bool, Reason> {
    let ip: *mut Ipv4Hdr = header(ctx, IP_OFF)?;
    // SAFETY: bounds-checked by header(); no helper runs while the pointer is used.
    let ip = unsafe { &mut *ip };
    if ip.ttl <= 1 {
        return Ok(false);
    }
    let sum = u16::from_be_bytes(ip.check) as u32 + 0x0100;
    ip.check = ((sum + (sum >= 0xffff) as u32) as u16).to_be_bytes();
    ip.ttl -= 1;
    Ok(true)
}

/// Where the running program sits, which decides how it can hand a packet into a
/// container.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// A tc ingress hook (TCX or clsact): `bpf_redirect_peer` switches the packet
    /// straight into the target's namespace, ingress to ingress, no backlog queue.
    TcIngress,
    /// netkit's transmit path (a netkit endpoint's from_container): the kernel drops a
    /// peer redirect that is not at tc ingress, so the packet goes out of the target's
    /// host device (`bpf_redirect`), whose transmit delivers it to the container's end.
    NetkitXmit,
}

/// Speaks L2 as `peer`'s gateway and hands the packet to its eth0.
#[inline(always)]
pub fn to_container(
    ctx: &TcContext,
    hook: Hook,
    peer: &EndpointInfo,
    rewrite_macs: bool,
) -> Result<(i32, Reason), Reason> {
    if rewrite_macs {
        let eth: *mut EthHdr = header(ctx, 0)?;
        // SAFETY: bounds-checked by header().
        unsafe {
            (*eth).dst_addr = peer.mac;
            (*eth).src_addr = peer.host_mac;
        }
    }
    // A bridged frame is addressed to the peer's MAC or the bridge's, not to the host
    // veth it came in on, so the kernel marked it for another host; kernels before 6.x
    // keep that mark across bpf_redirect_peer and the peer's stack drops the packet
    // (rewritten MACs too: a bridged container's hairpin). A routed frame, addressed to
    // the host veth, pays one load, not the helper call.
    // SAFETY: a field of our own skb's context, readable at tc.
    if unsafe { (*ctx.skb.skb).pkt_type } != PACKET_HOST {
        // SAFETY: plain helper call on our skb.
        unsafe { bpf_skb_change_type(ctx.skb.skb, PACKET_HOST) };
    }
    // SAFETY: plain helper calls; the kernel validates the ifindex when it acts.
    let action = match hook {
        Hook::TcIngress => unsafe { bpf_redirect_peer(peer.host_ifindex, 0) },
        Hook::NetkitXmit => unsafe { bpf_redirect(peer.host_ifindex, 0) },
    } as i32;
    if action == TC_ACT_SHOT {
        return Err(Reason::DropRedirectFailed);
    }
    events::egress(HOP_TO_CONTAINER, peer.host_ifindex);
    counters::endpoint_rx(peer.counter_slot, ctx.len());
    Ok((action, Reason::ForwardedToPeer))
}

/// Routes the packet with the node's FIB, as if it had arrived on `ifindex`, and sends it
/// out of the chosen device; the kernel resolves the neighbour when the FIB has none.
#[inline(always)]
pub fn to_fib<A: Addr>(ctx: &TcContext, ifindex: u32, src: A, dst: A) -> Result<i32, Reason> {
    let p = FIB_SCRATCH.get_ptr_mut(0).ok_or(Reason::DropFibFailed)?;
    // SAFETY: this CPU's scratch slot, valid for the program's run, no other writer
    // meanwhile. Every input field is set: the slot holds the previous lookup's answer.
    let p: &mut FibParams = unsafe { &mut *p };
    p.family = A::AF;
    p.l4_protocol = 0;
    p.sport = 0;
    p.dport = 0;
    p.__bindgen_anon_1.tot_len = 0;
    p.ifindex = ifindex;
    p.__bindgen_anon_2.rt_metric = 0;
    p.__bindgen_anon_3.ipv6_src = src.fib_words();
    p.__bindgen_anon_4.ipv6_dst = dst.fib_words();
    p.__bindgen_anon_5.tbid = 0;
    // SAFETY: p is a valid, fully initialised request of the size given.
    let rc = unsafe { bpf_fib_lookup(ctx.skb.skb as *mut _, p, core::mem::size_of::<FibParams>() as i32, 0) }
        as u32;
    let action = match rc {
        BPF_FIB_LKUP_RET_SUCCESS => {
            let eth: *mut EthHdr = header(ctx, 0)?;
            // SAFETY: bounds-checked by header().
            unsafe {
                (*eth).dst_addr = p.dmac;
                (*eth).src_addr = p.smac;
            }
            // SAFETY: plain helper call.
            unsafe { bpf_redirect(p.ifindex, 0) }
        }
        // SAFETY: plain helper call; no explicit next hop: the kernel uses the route's.
        BPF_FIB_LKUP_RET_NO_NEIGH => unsafe { bpf_redirect_neigh(p.ifindex, core::ptr::null_mut(), 0, 0) },
        rc => {
            crate::rare::detail(Reason::DropFibFailed, rc);
            return Err(Reason::DropFibFailed);
        }
    } as i32;
    if action == TC_ACT_SHOT {
        return Err(Reason::DropRedirectFailed);
    }
    events::egress(HOP_UPLINK_OUT, p.ifindex);
    Ok(action)
}
