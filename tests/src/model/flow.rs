//! What the datapath reads from a packet: the tuple conntrack is keyed by, and the TCP
//! sequence and timestamp that masquerade's port reuse depends on. Offsets assume an
//! untagged Ethernet frame, as the programs do (a VLAN tag is not IPv4 to them).
use netpath_common::{conntrack::Tuple, CtKey, CtKey6, Ip6, Reason};

use super::family::Addr;

pub const IP: usize = 14;
/// Where the header after IPv6's fixed one starts.
pub const L4_6: usize = IP + 40;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

pub fn be16(p: &[u8], off: usize) -> [u8; 2] {
    [p[off], p[off + 1]]
}

pub fn be32(p: &[u8], off: usize) -> [u8; 4] {
    [p[off], p[off + 1], p[off + 2], p[off + 3]]
}

/// A packet's tuple and where its L4 header starts (`A`: the family's address).
#[derive(Clone, Copy, Debug)]
pub struct Flow<A = [u8; 4]> {
    pub key: Tuple<A>,
    pub l4: usize,
    /// TCP flags byte; 0 for the other protocols.
    pub tcp_flags: u8,
}

/// The tuple of an IPv4 packet, or why it has none: a truncated header
/// (`DropMalformed`), a fragment (no ports after the first, so none are trusted in the
/// first either), or a protocol without ports (`DropUnsupportedProtocol`; ICMP other
/// than echo included). The IPv4 version and total length are not checked: the node's
/// stack judges those for whatever it receives.
pub fn parse(p: &[u8]) -> Result<Flow, Reason> {
    if p.len() < IP + 20 {
        return Err(Reason::DropMalformed);
    }
    let ihl = (p[IP] & 0x0f) as usize;
    if ihl < 5 {
        return Err(Reason::DropMalformed);
    }
    if p[IP + 6] & 0x3f != 0 || p[IP + 7] != 0 {
        return Err(Reason::DropFragment);
    }
    let l4 = IP + ihl * 4;
    let proto = p[IP + 9];
    let mut key = CtKey { src: be32(p, IP + 12), dst: be32(p, IP + 16), proto, ..Default::default() };
    let need = |n: usize| if p.len() < l4 + n { Err(Reason::DropMalformed) } else { Ok(()) };
    let mut tcp_flags = 0;
    match proto {
        TCP => {
            need(20)?;
            (key.sport, key.dport, tcp_flags) = (be16(p, l4), be16(p, l4 + 2), p[l4 + 13]);
        }
        UDP => {
            need(8)?;
            (key.sport, key.dport) = (be16(p, l4), be16(p, l4 + 2));
        }
        ICMP => {
            need(8)?;
            // An echo's identifier is its "port": the request's source, the reply's
            // destination, so a request's reversed tuple is its reply's.
            match p[l4] {
                8 => key.sport = be16(p, l4 + 4),
                0 => key.dport = be16(p, l4 + 4),
                _ => return Err(Reason::DropUnsupportedProtocol),
            }
        }
        _ => return Err(Reason::DropUnsupportedProtocol),
    }
    Ok(Flow { key, l4, tcp_flags })
}

/// IPv6 extension headers (RFC 8200 4.1) that may stand before a transport header.
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DESTINATION_OPTIONS: u8 = 60;

/// The tuple of an IPv6 packet (its fixed header present), or why it has none. Only a
/// transport header right after the fixed header counts: behind a fragment header it
/// is `DropFragment`, behind another extension header `DropExtensionHeader` (NAT66 does
/// not walk them); ICMPv6 other than echo and any other protocol are
/// `DropUnsupportedProtocol`. The payload length is not checked.
pub fn parse6(p: &[u8]) -> Result<Flow<Ip6>, Reason> {
    if p.len() < L4_6 {
        return Err(Reason::DropMalformed);
    }
    let proto = p[IP + 6];
    let mut key =
        CtKey6 { src: Ip6::read(p, Ip6::SRC), dst: Ip6::read(p, Ip6::DST), proto, ..Default::default() };
    let l4 = L4_6;
    let need = |n: usize| if p.len() < l4 + n { Err(Reason::DropMalformed) } else { Ok(()) };
    let mut tcp_flags = 0;
    match proto {
        TCP => {
            need(20)?;
            (key.sport, key.dport, tcp_flags) = (be16(p, l4), be16(p, l4 + 2), p[l4 + 13]);
        }
        UDP => {
            need(8)?;
            (key.sport, key.dport) = (be16(p, l4), be16(p, l4 + 2));
            // A zero checksum is invalid in IPv6 (RFC 8200 8.1).
            if be16(p, l4 + 6) == [0; 2] {
                return Err(Reason::DropMalformed);
            }
        }
        ICMPV6 => {
            need(8)?;
            match p[l4] {
                128 => key.sport = be16(p, l4 + 4),
                129 => key.dport = be16(p, l4 + 4),
                _ => return Err(Reason::DropUnsupportedProtocol),
            }
        }
        FRAGMENT => return Err(Reason::DropFragment),
        HOP_BY_HOP | ROUTING | DESTINATION_OPTIONS => return Err(Reason::DropExtensionHeader),
        _ => return Err(Reason::DropUnsupportedProtocol),
    }
    Ok(Flow { key, l4, tcp_flags })
}

/// Where a TCP segment ends in sequence space, and its timestamp option if it sits
/// where real stacks put it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub seq: u32,
    pub end_seq: u32,
    pub ts_val: Option<u32>,
}

/// The offsets into the options where Linux, BSD and macOS put the timestamp.
const TS_OFFSETS: [usize; 4] = [0, 2, 6, 10];

pub fn tcp_stamp<A: Addr>(p: &[u8], flow: &Flow<A>) -> Stamp {
    let l4 = flow.l4;
    let seq = u32::from_be_bytes(be32(p, l4 + 4));
    let doff = ((p[l4 + 12] >> 4) as usize) * 4;
    // The payload as the IP header declares it (a lie in it only moves end_seq).
    let payload = A::ip_end(p).saturating_sub(l4 + doff) as u32;
    let syn_fin = (flow.tcp_flags & (SYN | FIN) != 0) as u32;
    let mut ts_val = None;
    for off in TS_OFFSETS {
        let at = l4 + 20 + off;
        if 20 + off + 10 > doff || at + 6 > p.len() {
            break;
        }
        if p[at] == 8 && p[at + 1] == 10 {
            ts_val = Some(u32::from_be_bytes(be32(p, at + 2)));
            break;
        }
    }
    Stamp { seq, end_seq: seq.wrapping_add(payload).wrapping_add(syn_fin), ts_val }
}
