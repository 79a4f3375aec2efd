//! What the model does differently for IPv4 and IPv6, as the address type: which
//! conntrack tables a flow is in, where the addresses sit, how an address change enters
//! the checksums, where the IP packet ends, which ICMP errors are translated and how
//! they are found. Conntrack, masquerade, the rewrite and the translation of ICMP errors
//! are written once over it, as the datapath's are.
use std::{
    collections::{HashMap, HashSet},
    fmt::Debug,
    hash::Hash,
};

use netpath_common::{
    conntrack::{NatEntry, PortKeyOf, PortTargetOf, Tuple},
    Ip6, Reason,
};

use super::{
    csum,
    flow::{be16, be32, ICMP, ICMPV6, IP, L4_6},
    nat::Direction,
    Closed, Model,
};

/// One family's conntrack in the model (the fields of [`Model`] it is): the entries of
/// both tables, which of them are in the table of assured flows (CONNTRACK, CONNTRACK6;
/// the others are in CONNTRACK_NEW, CONNTRACK6_NEW), and the closed masqueraded flows
/// (SNAT_CLOSED, SNAT_CLOSED6).
pub struct Conntrack<'a, A> {
    pub entries: &'a HashMap<Tuple<A>, NatEntry<A>>,
    pub assured: &'a HashSet<Tuple<A>>,
    pub closed: &'a HashMap<Tuple<A>, Closed>,
}

/// [`Conntrack`] to change.
pub struct ConntrackMut<'a, A> {
    pub entries: &'a mut HashMap<Tuple<A>, NatEntry<A>>,
    pub assured: &'a mut HashSet<Tuple<A>>,
    pub closed: &'a mut HashMap<Tuple<A>, Closed>,
}

impl<A: Addr> ConntrackMut<'_, A> {
    /// Forgets one entry, as the LRU evicting it (or the agent removing it) does.
    pub fn forget(&mut self, key: &Tuple<A>) {
        self.entries.remove(key);
        self.assured.remove(key);
    }
}

/// An address family, as its address: `[u8; 4]` or [`Ip6`].
pub trait Addr: Copy + Eq + Hash + Default + Debug + 'static {
    /// Where the source and destination addresses are in the frame.
    const SRC: usize;
    const DST: usize;
    /// Where the protocol (IPv6: the next header) is, from the start of the IP header.
    const PROTO: usize;
    /// The family's ICMP, whose echo identifier is the tuple's "port", and its echo
    /// request.
    const ICMP: u8;
    const ECHO_REQUEST: u8;
    /// The ICMP errors translated like the flow they quote: IPv4's destination
    /// unreachable and time exceeded; ICMPv6's destination unreachable, packet too big,
    /// time exceeded and parameter problem.
    const ICMP_ERRORS: &'static [u8];

    /// The node's address (NODE_CONFIG's, NODE_CONFIG6's).
    fn node_ip(m: &Model) -> Self;

    fn ct(m: &Model) -> Conntrack<'_, Self>;
    fn ct_mut(m: &mut Model) -> ConntrackMut<'_, Self>;

    /// The family's published ports (PORT_MAPS, PORT_MAPS6).
    fn ports(m: &Model) -> &HashMap<PortKeyOf<Self>, PortTargetOf<Self>>;
    /// Is `ip` a local endpoint's address (in ENDPOINTS, ENDPOINTS6)?
    fn is_endpoint(m: &Model, ip: Self) -> bool;

    fn read(p: &[u8], off: usize) -> Self;

    /// Writes `new` over the address at `off`, updating the checksums that cover it as
    /// the datapath's helpers do: the L4 checksum at `csum_off` when `pseudo` (IPv4;
    /// IPv6's L4 checksums all cover the pseudo-header), through `l4` (which knows
    /// UDP's "no checksum"), and IPv4's header checksum.
    fn rewrite(p: &mut [u8], off: usize, new: Self, pseudo: bool, l4: &dyn Fn(&mut [u8], csum::Update));

    /// Where the IP packet ends, by its header's length field.
    fn ip_end(p: &[u8]) -> usize;

    /// The start of the ICMP message of a packet that may be an ICMP error to translate
    /// (its type not yet looked at, its 8 bytes there), by the family's checks in the
    /// datapath's order: `Err` for a packet too short for them, `None` for one that is
    /// not an error to translate. Past them only `None` remains possible: the order of
    /// the later checks does not show.
    fn icmp_error_at(p: &[u8], dir: Direction, node_ip: Self) -> Result<Option<usize>, Reason>;

    /// The length of the header an ICMP error quotes at `at`, when it is one translated
    /// (a fixed header: IPv4's without options, IPv6's whatever follows it) and whole.
    fn quoted_header_len(p: &[u8], at: usize) -> Option<usize>;

    /// Writes `new` over the address at `off` in the header an ICMP error quotes (at
    /// `ip`), updating what covers it as the datapath does: the quoted IPv4 header's
    /// checksum, and the error's own checksum (through `l4`), over the quoted bytes.
    fn rewrite_quoted(p: &mut [u8], ip: usize, off: usize, new: Self, l4: &dyn Fn(&mut [u8], csum::Update));
}

impl Addr for [u8; 4] {
    const SRC: usize = IP + 12;
    const DST: usize = IP + 16;
    const PROTO: usize = 9;
    const ICMP: u8 = ICMP;
    const ECHO_REQUEST: u8 = 8;
    const ICMP_ERRORS: &'static [u8] = &[3, 11];

    fn node_ip(m: &Model) -> Self {
        m.world.config.node_ip
    }

    fn ct(m: &Model) -> Conntrack<'_, Self> {
        Conntrack { entries: &m.ct, assured: &m.assured, closed: &m.closed }
    }
    fn ct_mut(m: &mut Model) -> ConntrackMut<'_, Self> {
        ConntrackMut { entries: &mut m.ct, assured: &mut m.assured, closed: &mut m.closed }
    }

    fn ports(m: &Model) -> &HashMap<PortKeyOf<Self>, PortTargetOf<Self>> {
        &m.ports
    }
    fn is_endpoint(m: &Model, ip: Self) -> bool {
        m.endpoints.contains_key(&ip)
    }

    fn read(p: &[u8], off: usize) -> Self {
        be32(p, off)
    }

    fn rewrite(p: &mut [u8], off: usize, new: Self, pseudo: bool, l4: &dyn Fn(&mut [u8], csum::Update)) {
        let old = be32(p, off);
        if pseudo {
            l4(p, csum::Update::Four(old, new));
        }
        let c = csum::replace4(be16(p, IP + 10), old, new);
        p[IP + 10..IP + 12].copy_from_slice(&c);
        p[off..off + 4].copy_from_slice(&new);
    }

    fn ip_end(p: &[u8]) -> usize {
        IP + u16::from_be_bytes(be16(p, IP + 2)) as usize
    }

    /// Protocol, then (going in) the node's address, then options, then length: a
    /// truncated ICMP message about to be looked at is malformed.
    fn icmp_error_at(p: &[u8], dir: Direction, node_ip: Self) -> Result<Option<usize>, Reason> {
        if p.len() < IP + 20 {
            return Err(Reason::DropMalformed);
        }
        if p[IP + 9] != ICMP
            || (dir == Direction::ToContainer && be32(p, Self::DST) != node_ip)
            || p[IP] & 0x0f != 5
        {
            return Ok(None);
        }
        if p.len() < IP + 28 {
            return Err(Reason::DropMalformed);
        }
        Ok(Some(IP + 20))
    }

    fn quoted_header_len(p: &[u8], at: usize) -> Option<usize> {
        (p.len() >= at + 20 && p[at] & 0x0f == 5).then_some(20)
    }

    /// The quoted header's checksum changes with its address, and the ICMP checksum
    /// (no pseudo-header) takes both changes, the address's first.
    fn rewrite_quoted(p: &mut [u8], ip: usize, off: usize, new: Self, l4: &dyn Fn(&mut [u8], csum::Update)) {
        let old = be32(p, off);
        let old_check = be16(p, ip + 10);
        let new_check = csum::replace4(old_check, old, new);
        p[ip + 10..ip + 12].copy_from_slice(&new_check);
        l4(p, csum::Update::Four(old, new));
        l4(p, csum::Update::Two(old_check, new_check));
        p[off..off + 4].copy_from_slice(&new);
    }
}

impl Addr for Ip6 {
    const SRC: usize = IP + 8;
    const DST: usize = IP + 24;
    const PROTO: usize = 6;
    const ICMP: u8 = ICMPV6;
    const ECHO_REQUEST: u8 = 128;
    const ICMP_ERRORS: &'static [u8] = &[1, 2, 3, 4];

    fn node_ip(m: &Model) -> Self {
        Ip6(m.world6.config.node_ip)
    }

    fn ct(m: &Model) -> Conntrack<'_, Self> {
        Conntrack { entries: &m.ct6, assured: &m.assured6, closed: &m.closed6 }
    }
    fn ct_mut(m: &mut Model) -> ConntrackMut<'_, Self> {
        ConntrackMut { entries: &mut m.ct6, assured: &mut m.assured6, closed: &mut m.closed6 }
    }

    fn ports(m: &Model) -> &HashMap<PortKeyOf<Self>, PortTargetOf<Self>> {
        &m.ports6
    }
    fn is_endpoint(m: &Model, ip: Self) -> bool {
        m.endpoints6.contains_key(&ip.0)
    }

    fn read(p: &[u8], off: usize) -> Self {
        Ip6(p[off..off + 16].try_into().expect("16 bytes"))
    }

    /// No header checksum; the L4 one (ICMPv6's too) takes the change as one difference
    /// of the 16-byte addresses (bpf_csum_diff into l4_csum_replace).
    fn rewrite(p: &mut [u8], off: usize, new: Self, _pseudo: bool, l4: &dyn Fn(&mut [u8], csum::Update)) {
        let old = Self::read(p, off);
        l4(p, csum::Update::Diff(old.0, new.0));
        p[off..off + 16].copy_from_slice(&new.0);
    }

    fn ip_end(p: &[u8]) -> usize {
        IP + 40 + u16::from_be_bytes(be16(p, IP + 4)) as usize
    }

    /// ICMPv6 right after the fixed header (both callers saw that header), with its 8
    /// bytes of message: anything else is not an error to translate; going in, the
    /// node's address is checked later, with the quote.
    fn icmp_error_at(p: &[u8], _dir: Direction, _node_ip: Self) -> Result<Option<usize>, Reason> {
        Ok((p[IP + 6] == ICMPV6 && p.len() >= L4_6 + 8).then_some(L4_6))
    }

    fn quoted_header_len(p: &[u8], at: usize) -> Option<usize> {
        (p.len() >= at + 40).then_some(40)
    }

    /// No header checksum: ICMPv6's takes the change as one 16-byte difference, as for
    /// the outer address (the same difference, applied twice by the datapath: once
    /// through the pseudo-header, once as message bytes).
    fn rewrite_quoted(p: &mut [u8], _ip: usize, off: usize, new: Self, l4: &dyn Fn(&mut [u8], csum::Update)) {
        let old = Self::read(p, off);
        l4(p, csum::Update::Diff(old.0, new.0));
        p[off..off + 16].copy_from_slice(&new.0);
    }
}
