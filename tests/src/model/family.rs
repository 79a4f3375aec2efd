//! What the model does differently for IPv4 and IPv6, as the address type: which
//! conntrack tables a flow is in, where the addresses sit, how an address change enters
//! the checksums, where the IP packet ends. Conntrack, masquerade and the rewrite are
//! written once over it, as the datapath's are.
use std::{
    collections::{HashMap, HashSet},
    fmt::Debug,
    hash::Hash,
};

use netpath_common::{
    conntrack::{NatEntry, Tuple},
    Ip6,
};

use super::{
    csum,
    flow::{be16, be32, ICMP, ICMPV6, IP},
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
    /// The family's ICMP, whose echo identifier is the tuple's "port".
    const ICMP: u8;

    fn ct(m: &Model) -> Conntrack<'_, Self>;
    fn ct_mut(m: &mut Model) -> ConntrackMut<'_, Self>;

    fn read(p: &[u8], off: usize) -> Self;

    /// Writes `new` over the address at `off`, updating the checksums that cover it as
    /// the datapath's helpers do: the L4 checksum at `csum_off` when `pseudo` (IPv4;
    /// IPv6's L4 checksums all cover the pseudo-header), through `l4` (which knows
    /// UDP's "no checksum"), and IPv4's header checksum.
    fn rewrite(p: &mut [u8], off: usize, new: Self, pseudo: bool, l4: &dyn Fn(&mut [u8], csum::Update));

    /// Where the IP packet ends, by its header's length field.
    fn ip_end(p: &[u8]) -> usize;
}

impl Addr for [u8; 4] {
    const SRC: usize = IP + 12;
    const DST: usize = IP + 16;
    const ICMP: u8 = ICMP;

    fn ct(m: &Model) -> Conntrack<'_, Self> {
        Conntrack { entries: &m.ct, assured: &m.assured, closed: &m.closed }
    }
    fn ct_mut(m: &mut Model) -> ConntrackMut<'_, Self> {
        ConntrackMut { entries: &mut m.ct, assured: &mut m.assured, closed: &mut m.closed }
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
}

impl Addr for Ip6 {
    const SRC: usize = IP + 8;
    const DST: usize = IP + 24;
    const ICMP: u8 = ICMPV6;

    fn ct(m: &Model) -> Conntrack<'_, Self> {
        Conntrack { entries: &m.ct6, assured: &m.assured6, closed: &m.closed6 }
    }
    fn ct_mut(m: &mut Model) -> ConntrackMut<'_, Self> {
        ConntrackMut { entries: &mut m.ct6, assured: &mut m.assured6, closed: &mut m.closed6 }
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
}
