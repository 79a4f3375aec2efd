//! IPv4 + L4 parsing into the tuple conntrack and NAT work on.

use netpath_common::{CtKey, Reason};
use network_types::{eth::EthHdr, icmp::IcmpHdr, ip::Ipv4Hdr, tcp::TcpHdr, udp::UdpHdr};

use crate::packet::{ptr_at, PacketData};

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;

pub const IP_OFF: usize = EthHdr::LEN;

/// Where a packet's translatable fields are, and what they hold.
pub struct Flow {
    pub key: CtKey,
    pub l4_off: usize,
    /// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10); 0 for others.
    pub tcp_flags: u8,
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Parses the packet's tuple. Errors name why it cannot be tracked: a fragment
/// (no ports after the first), a protocol without ports, or a truncated header.
#[inline(always)]
pub fn parse<C: PacketData>(ctx: &C) -> Result<Flow, Reason> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, IP_OFF).map_err(|_| Reason::DropMalformed)?;
    // SAFETY: bounds-checked by ptr_at.
    let (vihl, frags, proto, src, dst) =
        unsafe { ((*ip).vihl, (*ip).frags, (*ip).proto as u8, (*ip).src_addr, (*ip).dst_addr) };
    let ihl = (vihl & 0x0f) as usize;
    if ihl < 5 {
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
            let tcp: *const TcpHdr = ptr_at(ctx, l4_off).map_err(|_| Reason::DropMalformed)?;
            // SAFETY: bounds-checked by ptr_at. Byte 13 of the TCP header holds the flags.
            unsafe {
                key.sport = (*tcp).source;
                key.dport = (*tcp).dest;
                tcp_flags = *(tcp as *const u8).add(13);
            }
        }
        IPPROTO_UDP => {
            let udp: *const UdpHdr = ptr_at(ctx, l4_off).map_err(|_| Reason::DropMalformed)?;
            // SAFETY: bounds-checked by ptr_at.
            unsafe {
                key.sport = (*udp).src;
                key.dport = (*udp).dst;
            }
        }
        IPPROTO_ICMP => {
            let icmp: *const IcmpHdr = ptr_at(ctx, l4_off).map_err(|_| Reason::DropMalformed)?;
            // SAFETY: bounds-checked by ptr_at; the identifier is bytes 4..6 of an echo.
            let (ty, id) =
                unsafe { ((*icmp).type_, [*(icmp as *const u8).add(4), *(icmp as *const u8).add(5)]) };
            match ty {
                ICMP_ECHO_REQUEST => key.sport = id,
                ICMP_ECHO_REPLY => key.dport = id,
                _ => return Err(Reason::DropUnsupportedProtocol),
            }
        }
        _ => return Err(Reason::DropUnsupportedProtocol),
    }
    Ok(Flow { key, l4_off, tcp_flags })
}
