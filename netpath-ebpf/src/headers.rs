//! Packet layouts: where every field the datapath reads or rewrites sits, derived from
//! the header types with `offset_of!` rather than written as numbers at each use. Field
//! offsets are relative to their header; the `*_OFF` constants at the bottom are
//! absolute for the one place an IPv4 header sits (right after Ethernet). Another
//! family or an encapsulation adds its block here.
use core::mem::offset_of;

use network_types::{
    eth::EthHdr,
    icmp::{IcmpEcho, IcmpHdr},
    ip::Ipv4Hdr,
    tcp::TcpHdr,
    udp::UdpHdr,
};

/// The IPv4 header follows Ethernet; netpath sees no VLAN tags (veth and the uplink's
/// skb carry them out of band).
pub const IP_OFF: usize = EthHdr::LEN;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Inside an IPv4 header.
pub mod ipv4 {
    use super::*;
    /// A header without options; `ihl` counts 32-bit words.
    pub const MIN_LEN: usize = Ipv4Hdr::LEN;
    pub const TOT_LEN: usize = offset_of!(Ipv4Hdr, tot_len);
    /// Flags (DF, MF) and the fragment offset.
    pub const FRAG_OFF: usize = offset_of!(Ipv4Hdr, frags);
    pub const CHECK: usize = offset_of!(Ipv4Hdr, check);
    pub const SRC: usize = offset_of!(Ipv4Hdr, src_addr);
    pub const DST: usize = offset_of!(Ipv4Hdr, dst_addr);
    pub const PROTO: usize = offset_of!(Ipv4Hdr, proto);
}

/// Inside a TCP or UDP header: the ports sit in the same place in both, which is what
/// lets conntrack and NAT treat them alike.
pub mod l4 {
    use super::*;
    pub const SPORT: usize = offset_of!(TcpHdr, source);
    pub const DPORT: usize = offset_of!(TcpHdr, dest);
    const _: () = assert!(SPORT == offset_of!(UdpHdr, src) && DPORT == offset_of!(UdpHdr, dst));
}

/// Inside a TCP header.
pub mod tcp {
    use super::*;
    pub const MIN_LEN: usize = TcpHdr::LEN;
    pub const SEQ: usize = offset_of!(TcpHdr, seq);
    /// The data offset is the high nibble of the first bitfield byte, the flags the
    /// second byte.
    pub const DOFF: usize = offset_of!(TcpHdr, _bitfield_1);
    pub const FLAGS: usize = DOFF + 1;
    pub const CHECK: usize = offset_of!(TcpHdr, check);

    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// Inside a UDP header.
pub mod udp {
    use super::*;
    pub const CHECK: usize = offset_of!(UdpHdr, check);
}

/// Inside an ICMP header.
pub mod icmp {
    use super::*;
    /// Type, code, checksum and the 4 bytes whose meaning depends on the type.
    pub const LEN: usize = IcmpHdr::LEN;
    pub const CHECK: usize = offset_of!(IcmpHdr, check);
    /// An echo's identifier: what conntrack treats as the port.
    pub const ECHO_ID: usize = offset_of!(IcmpHdr, data) + offset_of!(IcmpEcho, id);

    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACH: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
}

/// Inside an IPv6 header (its fixed 40 bytes; extension headers follow it).
pub mod ipv6 {
    use super::*;
    use network_types::ip::Ipv6Hdr;
    pub const LEN: usize = Ipv6Hdr::LEN;
    pub const PAYLOAD_LEN: usize = offset_of!(Ipv6Hdr, payload_len);
    pub const NEXT_HDR: usize = offset_of!(Ipv6Hdr, next_hdr);
    pub const HOP_LIMIT: usize = offset_of!(Ipv6Hdr, hop_limit);
    pub const SRC: usize = offset_of!(Ipv6Hdr, src_addr);
    pub const DST: usize = offset_of!(Ipv6Hdr, dst_addr);
    pub const IPPROTO_ICMPV6: u8 = 58;
    const _: () = assert!(LEN == 40 && NEXT_HDR == 6 && HOP_LIMIT == 7 && SRC == 8 && DST == 24);
}

/// Where the first header after a plain IPv6 header sits.
pub const IPV6_L4_OFF: usize = IP_OFF + ipv6::LEN;

pub const IPV4_CSUM_OFF: usize = IP_OFF + ipv4::CHECK;
pub const IPV4_SRC_OFF: usize = IP_OFF + ipv4::SRC;
pub const IPV4_DST_OFF: usize = IP_OFF + ipv4::DST;
pub const IPV4_TOT_LEN_OFF: usize = IP_OFF + ipv4::TOT_LEN;

// What the code around these constants was written against: a change of the header
// crate that moved a field would otherwise rewrite the wrong bytes silently.
const _: () = assert!(IP_OFF == 14 && ipv4::MIN_LEN == 20 && ipv4::CHECK == 10 && ipv4::SRC == 12);
const _: () = assert!(tcp::DOFF == 12 && tcp::CHECK == 16 && udp::CHECK == 6 && icmp::CHECK == 2);
const _: () = assert!(icmp::ECHO_ID == 4 && icmp::LEN == 8);
