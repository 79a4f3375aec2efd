//! IPv4 + L4 parsing into the tuple conntrack and NAT work on.

use netpath_common::{conntrack::Tuple, CtKey, CtKey6, Ip6, Reason};
use network_types::{icmp::IcmpHdr, ip::Ipv4Hdr, tcp::TcpHdr, udp::UdpHdr};

use aya_ebpf::programs::TcContext;

use crate::{
    family::Addr,
    headers::{icmp, ipv4, ipv6, tcp, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPV6_L4_OFF, IP_OFF},
    packet::{header, PacketData},
};

/// Where a packet's translatable fields are, and what they hold (`A`: the family's
/// address, see [`crate::family::Addr`]).
pub struct Flow<A = [u8; 4]> {
    pub key: Tuple<A>,
    pub l4_off: usize,
    /// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10); 0 for others.
    pub tcp_flags: u8,
}

/// Parses the packet's tuple. Errors name why it cannot be tracked: a fragment
/// (no ports after the first), a protocol without ports, or a truncated header.
#[inline(always)]
pub fn parse<C: PacketData>(ctx: &C) -> Result<Flow, Reason> {
    let ip: *const Ipv4Hdr = header(ctx, IP_OFF)?;
    // SAFETY: bounds-checked by header().
    let (vihl, frags, proto, src, dst) =
        unsafe { ((*ip).vihl, (*ip).frags, (*ip).proto as u8, (*ip).src_addr, (*ip).dst_addr) };
    let ihl = (vihl & 0x0f) as usize;
    if ihl * 4 < ipv4::MIN_LEN {
        return Err(Reason::DropMalformed);
    }
    // More-fragments set or a non-zero offset: ports are not in every fragment.
    if frags[0] & 0x3f != 0 || frags[1] != 0 {
        return Err(Reason::DropFragment);
    }
    // IP options are skipped, not rejected: the header length says where L4 starts.
    let l4_off = IP_OFF + ihl * 4;
    let mut key = CtKey { src, dst, proto, ..Default::default() };
    let mut tcp_flags = 0;
    match proto {
        IPPROTO_TCP => {
            let th: *const TcpHdr = header(ctx, l4_off)?;
            // SAFETY: bounds-checked by header().
            unsafe {
                key.sport = (*th).source;
                key.dport = (*th).dest;
                tcp_flags = *(th as *const u8).add(tcp::FLAGS);
            }
        }
        IPPROTO_UDP => {
            let udp: *const UdpHdr = header(ctx, l4_off)?;
            // SAFETY: bounds-checked by header().
            unsafe {
                key.sport = (*udp).src;
                key.dport = (*udp).dst;
            }
        }
        IPPROTO_ICMP => {
            let ih: *const IcmpHdr = header(ctx, l4_off)?;
            // SAFETY: bounds-checked by header(); the identifier lies inside the header.
            let (ty, id) = unsafe {
                let id = (ih as *const u8).add(icmp::ECHO_ID);
                ((*ih).type_, [*id, *id.add(1)])
            };
            match ty {
                icmp::ECHO_REQUEST => key.sport = id,
                icmp::ECHO_REPLY => key.dport = id,
                _ => return Err(Reason::DropUnsupportedProtocol),
            }
        }
        _ => return Err(Reason::DropUnsupportedProtocol),
    }
    Ok(Flow { key, l4_off, tcp_flags })
}

/// IPv6 extension headers (RFC 8200 4.1) netpath may meet before a transport header.
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_DSTOPTS: u8 = 60;

/// [`parse`] for IPv6. Only a transport header right after the fixed header is
/// translatable: a fragment is `DropFragment`, any other extension header
/// `DropExtensionHeader` (never walked, so never misread).
#[inline(always)]
pub fn parse6(ctx: &TcContext) -> Result<Flow<Ip6>, Reason> {
    let next: *const u8 = header(ctx, IP_OFF + ipv6::NEXT_HDR)?;
    // SAFETY: bounds-checked by header().
    let mut key = CtKey6 { proto: unsafe { *next }, ..Default::default() };
    // Both addresses (they follow each other in the header) in one helper call, into
    // aligned words: copied byte by byte from the packet, the assembly spills a
    // register per byte, 256 bytes of the 512-byte stack.
    // SAFETY: CtKey6 is repr(C) with src and dst first: 32 bytes of plain data, written
    // by the helper (constant length, as the verifier wants) or left zero on failure.
    let rc = unsafe {
        aya_ebpf::helpers::generated::bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            (IP_OFF + ipv6::SRC) as u32,
            (&mut key as *mut CtKey6).cast(),
            32,
        )
    };
    if rc != 0 {
        return Err(Reason::DropMalformed);
    }
    let l4_off = IPV6_L4_OFF;
    let mut tcp_flags = 0;
    match key.proto {
        IPPROTO_TCP => {
            let th: *const TcpHdr = header(ctx, l4_off)?;
            // SAFETY: bounds-checked by header().
            unsafe {
                key.sport = (*th).source;
                key.dport = (*th).dest;
                tcp_flags = *(th as *const u8).add(tcp::FLAGS);
            }
        }
        IPPROTO_UDP => {
            let udp: *const UdpHdr = header(ctx, l4_off)?;
            // SAFETY: bounds-checked by header().
            let check = unsafe {
                key.sport = (*udp).src;
                key.dport = (*udp).dst;
                (*udp).check
            };
            // IPv6 makes UDP's checksum mandatory (RFC 8200 8.1): receivers discard a
            // zero one, so a flow is not made of it, nor a zero translated into a wrong one.
            if check == [0; 2] {
                return Err(Reason::DropMalformed);
            }
        }
        ipv6::IPPROTO_ICMPV6 => {
            let ih: *const IcmpHdr = header(ctx, l4_off)?;
            // SAFETY: bounds-checked by header(); the identifier lies inside the header.
            let (ty, id) = unsafe {
                let id = (ih as *const u8).add(icmp::ECHO_ID);
                ((*ih).type_, [*id, *id.add(1)])
            };
            match ty {
                t if t == <Ip6 as Addr>::ECHO_REQUEST => key.sport = id,
                t if t == <Ip6 as Addr>::ECHO_REPLY => key.dport = id,
                _ => return Err(Reason::DropUnsupportedProtocol),
            }
        }
        IPPROTO_FRAGMENT => return Err(Reason::DropFragment),
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => return Err(Reason::DropExtensionHeader),
        _ => return Err(Reason::DropUnsupportedProtocol),
    }
    Ok(Flow { key, l4_off, tcp_flags })
}

/// Where a TCP segment sits in sequence space, and its timestamp option.
#[derive(Clone, Copy)]
pub struct TcpStamp {
    /// Sequence number after the segment (SYN and FIN count one).
    pub end_seq: u32,
    pub seq: u32,
    pub ts_val: Option<u32>,
}

/// Where real stacks put the timestamp option, as offsets into the options: first
/// (0), after NOP NOP (2: Linux on every segment after the SYN), after MSS and SACK_PERM
/// or MSS NOP NOP (6: Linux SYNs), after MSS NOP WS NOP NOP (10: BSD and macOS SYNs).
/// Fixed probes rather than a walk over the options: a walk's data-dependent offsets
/// multiply the verifier's states past its limit.
const TS_OFFSETS: [usize; 4] = [0, 2, 6, 10];
const TCPOPT_TIMESTAMP: u8 = 8;
const TCPOLEN_TIMESTAMP: u8 = 10;

/// Reads a TCP segment's sequence numbers and timestamp. Only the few packets that need
/// it pay for it (a masqueraded flow's SYN and its closing segments).
#[inline(always)]
pub fn tcp_stamp<A: Addr>(ctx: &TcContext, flow: &Flow<A>) -> Option<TcpStamp> {
    let l4 = flow.l4_off;
    let seq = u32::from_be_bytes(ctx.load::<[u8; 4]>(l4 + tcp::SEQ).ok()?);
    let doff = ((ctx.load::<u8>(l4 + tcp::DOFF).ok()? >> 4) as usize) * 4;
    let payload = A::ip_end(ctx)?.saturating_sub(l4 + doff) as u32;
    let flags = flow.tcp_flags;
    let end_seq = seq.wrapping_add(payload).wrapping_add((flags & (tcp::SYN | tcp::FIN) != 0) as u32);
    let mut ts_val = None;
    for off in TS_OFFSETS {
        if tcp::MIN_LEN + off + TCPOLEN_TIMESTAMP as usize > doff {
            break;
        }
        let Ok(opt) = ctx.load::<[u8; 6]>(l4 + tcp::MIN_LEN + off) else { break };
        if opt[0] == TCPOPT_TIMESTAMP && opt[1] == TCPOLEN_TIMESTAMP {
            ts_val = Some(u32::from_be_bytes([opt[2], opt[3], opt[4], opt[5]]));
            break;
        }
    }
    Some(TcpStamp { end_seq, seq, ts_val })
}
