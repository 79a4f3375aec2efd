//! XDP on the uplink: replies to masqueraded flows and connections to published ports are
//! translated here, before the kernel builds an skb, and marked in the packet metadata so
//! the tc program only delivers them. Everything else passes untouched. Optional
//! (`netpath agent --xdp`): on a veth uplink, XDP costs the peer its GSO.
use aya_ebpf::{
    bindings::xdp_action::XDP_PASS, helpers::generated::bpf_xdp_adjust_meta, macros::xdp,
    programs::XdpContext,
};
use netpath_common::{
    conntrack::{CT_F_DNAT, CT_F_SNAT},
    trace::HOP_UPLINK_XDP,
    CtEntry, Reason,
};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

use crate::{
    conntrack, events,
    flow::{self, Flow},
    headers::{l4, tcp, udp, IPPROTO_TCP, IPPROTO_UDP, IP_OFF},
    maps::NODE_CONFIG,
    packet::{ptr_at, XDP_TRANSLATED},
    port_map,
};

#[xdp]
pub fn uplink_xdp(ctx: XdpContext) -> u32 {
    let filter = events::filter();
    // SAFETY: the context pointer is the kernel's.
    events::begin(filter, &ctx, HOP_UPLINK_XDP, unsafe { (*ctx.ctx).ingress_ifindex });
    // Whatever goes wrong here, tc sees the packet as it came and decides.
    // (Counted once, by uplink_in when it delivers the marked packet.)
    if try_uplink_xdp(&ctx).is_ok() {
        events::emit(filter, &ctx, Reason::XdpTranslated);
    }
    XDP_PASS
}

#[inline(always)]
fn try_uplink_xdp(ctx: &XdpContext) -> Result<(), ()> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: bounds-checked by ptr_at.
    if unsafe { (*eth).ether_type() } != Ok(EtherType::Ipv4) {
        return Err(());
    }
    let cfg = NODE_CONFIG.get(0).copied().ok_or(())?;
    let flow = flow::parse(ctx).map_err(|_| ())?;
    // ICMP (echo replies, errors) is rarer and stays with tc.
    if cfg.node_ip == [0; 4]
        || flow.key.dst != cfg.node_ip
        || (flow.key.proto != IPPROTO_TCP && flow.key.proto != IPPROTO_UDP)
    {
        return Err(());
    }
    let len = (ctx.data_end() - ctx.data()) as u32;
    let entry = match conntrack::lookup(&flow, len) {
        Some(e) => e,
        None => {
            let (ip, port) = port_map::target(&flow.key).ok_or(())?;
            conntrack::create_dnat(&flow, ip, port, len, true).map_err(|_| ())?
        }
    };
    // Entries on this side only rewrite the destination; anything else is tc's.
    if entry.flags & CT_F_DNAT == 0 || entry.flags & CT_F_SNAT != 0 {
        return Err(());
    }
    rewrite_destination(ctx, &flow, &entry)?;
    // SAFETY: plain helper call; grows the metadata area in front of the packet.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -4) } != 0 {
        // No room for metadata: tc would translate again, so undo is not possible;
        // the conntrack refresh above is harmless, the rewrite is not. Never happens
        // on drivers with XDP headroom (veth has 256 bytes).
        return Err(());
    }
    // SAFETY: the context pointer is the kernel's.
    let (meta, data) = unsafe { ((*ctx.ctx).data_meta as usize, (*ctx.ctx).data as usize) };
    if meta + 4 > data {
        return Err(());
    }
    // SAFETY: meta..meta+4 lies before data, bounds-checked just above.
    unsafe { *(meta as *mut u32) = XDP_TRANSLATED };
    Ok(())
}

/// One's-complement incremental update (RFC 1624): HC' = ~(~HC + ~m + m').
#[inline(always)]
fn csum_update(csum: [u8; 2], old: [u8; 2], new: [u8; 2]) -> [u8; 2] {
    let hc = u16::from_be_bytes(csum);
    let mut s = (!hc as u32) + (!u16::from_be_bytes(old) as u32 & 0xffff) + u16::from_be_bytes(new) as u32;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    (!(s as u16)).to_be_bytes()
}

#[inline(always)]
fn csum_update4(csum: [u8; 2], old: [u8; 4], new: [u8; 4]) -> [u8; 2] {
    let c = csum_update(csum, [old[0], old[1]], [new[0], new[1]]);
    csum_update(c, [old[2], old[3]], [new[2], new[3]])
}

#[inline(always)]
fn rewrite_destination(ctx: &XdpContext, flow: &Flow, entry: &CtEntry) -> Result<(), ()> {
    let ip: *mut Ipv4Hdr = ptr_at(ctx, IP_OFF)?;
    let csum_off = flow.l4_off + if flow.key.proto == IPPROTO_TCP { tcp::CHECK } else { udp::CHECK };
    let l4_csum: *mut [u8; 2] = ptr_at(ctx, csum_off)?;
    let dport: *mut [u8; 2] = ptr_at(ctx, flow.l4_off + l4::DPORT)?;
    // SAFETY: all three pointers were bounds-checked by ptr_at.
    unsafe {
        (*ip).check = csum_update4((*ip).check, flow.key.dst, entry.nat_dst);
        (*ip).dst_addr = entry.nat_dst;
        let mut c = *l4_csum;
        // UDP checksum 0 means none: it stays none.
        let none = flow.key.proto == IPPROTO_UDP && c == [0, 0];
        if !none {
            c = csum_update4(c, flow.key.dst, entry.nat_dst);
            c = csum_update(c, flow.key.dport, entry.nat_dport);
            if flow.key.proto == IPPROTO_UDP && c == [0, 0] {
                c = [0xff, 0xff];
            }
            *l4_csum = c;
        }
        *dport = entry.nat_dport;
    }
    Ok(())
}
