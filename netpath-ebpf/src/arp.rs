//! ARP responder: with no bridge on the node, nothing else would answer a container
//! asking for its gateway. Every request from a registered container is answered with
//! the host veth's MAC, so all of the container's traffic reaches the datapath at L3 and
//! the docker0 pitfall (a subnet owned by a bridge answering nobody) cannot happen.
//! A macvlan/ipvlan endpoint's container sits on the parent's LAN instead: its ARP goes
//! out unanswered, but every ARP claiming its address is checked, replies and
//! announcements too, since on a LAN those poison the neighbours' caches as well; and
//! from its interface no ARP may claim any other address.
use aya_ebpf::{bindings::TC_ACT_SHOT, helpers::generated::bpf_redirect, programs::TcContext};
use netpath_common::{
    EndpointInfo, EndpointKey, Reason, SenderEntry, ENDPOINT_F_BRIDGED, ENDPOINT_F_SUBIF, SUBIF_IFINDEX_BASE,
};
use network_types::{arp::ArpHdr, eth::EthHdr};

use crate::packet::header;

const ARP_REQUEST: [u8; 2] = 1u16.to_be_bytes();
const ARP_REPLY: [u8; 2] = 2u16.to_be_bytes();
const HTYPE_ETHERNET: [u8; 2] = 1u16.to_be_bytes();
const PTYPE_IPV4: [u8; 2] = 0x0800u16.to_be_bytes();

pub enum ArpOutcome {
    /// Rewritten into a reply; the caller returns this tc action.
    Replied(i32),
    /// Not a request we answer (DAD probe, gratuitous ARP, reply): let the stack see it.
    Ignored,
    /// A macvlan/ipvlan endpoint's own ARP, checked: the driver sends it on, unanswered.
    ToParent,
}

/// Answers a request from the endpoint behind `ifindex`, after checking it is one.
#[inline(always)]
pub fn respond(ctx: &TcContext, ifindex: u32) -> Result<ArpOutcome, Reason> {
    let eth: *mut EthHdr = header(ctx, 0)?;
    let arp: *mut ArpHdr = header(ctx, EthHdr::LEN)?;
    // SAFETY: both pointers were bounds-checked by header().
    let (eth, arp) = unsafe { (&mut *eth, &mut *arp) };
    if arp.htype != HTYPE_ETHERNET || arp.ptype != PTYPE_IPV4 || arp.hlen != 6 || arp.plen != 4 {
        return Err(Reason::DropMalformed);
    }
    // Address probes (sender 0.0.0.0) claim no address; they and announcements (target
    // == sender) must get no answer, or duplicate address detection in the container
    // would fail.
    if arp.spa == [0; 4] {
        return Ok(ArpOutcome::Ignored);
    }
    // SAFETY: the value is copied out at once; the agent only replaces whole entries.
    let owner = unsafe { crate::maps::ENDPOINTS.get(EndpointKey::new(arp.spa)) }.copied();
    if let Some(ep) = owner.filter(|e| e.flags & ENDPOINT_F_SUBIF != 0) {
        // Only its own interface, with its own MAC in the frame and the message, may
        // speak for a sub-interface endpoint's address, whatever the operation.
        if ep.host_ifindex != ifindex || arp.sha != ep.mac || eth.src_addr != ep.mac {
            return Err(Reason::DropSpoofedSource);
        }
        return Ok(ArpOutcome::ToParent);
    }
    // At a sub-interface (known by its index, not by the address claimed) the frame goes
    // out on the real LAN: a claim of any other address, the LAN router's or one no
    // endpoint has, would poison the neighbours' caches, whatever the operation.
    if ifindex & SUBIF_IFINDEX_BASE != 0 {
        return Err(Reason::DropSpoofedSource);
    }
    if arp.oper != ARP_REQUEST || arp.spa == arp.tpa {
        return Ok(ArpOutcome::Ignored);
    }
    let sender = owner.filter(|e| e.host_ifindex == ifindex).ok_or(Reason::DropSpoofedSource)?;
    if arp.sha != sender.mac || eth.src_addr != sender.mac {
        return Err(Reason::DropSpoofedSource);
    }
    // In bridge mode the bridge owns the gateway address and answers for it.
    if sender.flags & ENDPOINT_F_BRIDGED != 0 {
        return Ok(ArpOutcome::Ignored);
    }
    let target = arp.tpa;
    eth.dst_addr = sender.mac;
    eth.src_addr = sender.host_mac;
    arp.oper = ARP_REPLY;
    arp.tha = sender.mac;
    arp.tpa = arp.spa;
    arp.sha = sender.host_mac;
    arp.spa = target;
    // Out of the same veth, back into the container.
    // SAFETY: plain helper call; it only records the target in per-CPU state.
    let action = unsafe { bpf_redirect(ifindex, 0) } as i32;
    if action == TC_ACT_SHOT {
        return Err(Reason::DropRedirectFailed);
    }
    Ok(ArpOutcome::Replied(action))
}

/// The endpoint owning `addr`, if it lives behind `ifindex`.
#[inline(always)]
pub fn lookup_sender(addr: &[u8; 4], ifindex: u32) -> Option<EndpointInfo> {
    // The device's slot first: one array load where ENDPOINTS costs a hash and two
    // cold cache lines. A slot that holds another device (two endpoints' ifindexes
    // sharing it) or another address (a spoof, or an entry being rewritten) settles
    // nothing: ENDPOINTS decides, as it always did.
    if let Some(s) = crate::maps::SENDERS.get(SenderEntry::slot(ifindex)) {
        if s.info.host_ifindex == ifindex && s.addr == *addr {
            return Some(s.info);
        }
    }
    // SAFETY: the value is copied out at once; the agent only replaces whole entries.
    let ep = unsafe { crate::maps::ENDPOINTS.get(EndpointKey::new(*addr)) }?;
    if ep.host_ifindex != ifindex {
        return None;
    }
    Some(*ep)
}
