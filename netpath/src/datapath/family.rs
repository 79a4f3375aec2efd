//! The two address families conntrack keeps flows of, as user space tells them apart.
//! The tables' types are generic over the address ([`Ipv4`], [`Ipv6`]: see
//! [`netpath_common::conntrack::Tuple`]), so conntrack's upkeep, listings and migration
//! are written once; what differs is which pinned maps hold a family's flows and how its
//! addresses read.
use std::{
    hash::Hash,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use netpath_common::{
    conntrack::{NatEntry, Tuple},
    maps, Ip6,
};

/// IPv4's address as the conntrack tables hold it ([`netpath_common::CtKey`]'s).
pub type Ipv4 = [u8; 4];
/// IPv6's ([`netpath_common::CtKey6`]'s).
pub type Ipv6 = Ip6;

/// A conntrack table's entries, key and value, read at once.
pub type Entries<A> = Vec<(Tuple<A>, NatEntry<A>)>;

/// An address family's conntrack tables. Code generic over it also needs the tables'
/// types to be plain data, which Rust cannot state here once for all callers: they say
/// `where Tuple<A>: Pod, NatEntry<A>: Pod`.
pub trait Family: Copy + Eq + Hash + Send + Sync + 'static {
    /// Assured flows.
    const ASSURED: &'static str;
    /// Flows not yet assured.
    const NEW: &'static str;
    /// Closed masqueraded flows remembered for port reuse.
    const CLOSED: &'static str;
    /// Both flow tables, assured first.
    const TABLES: [&'static str; 2] = [Self::ASSURED, Self::NEW];

    fn ip(self) -> IpAddr;
}

impl Family for Ipv4 {
    const ASSURED: &'static str = maps::CONNTRACK;
    const NEW: &'static str = maps::CONNTRACK_NEW;
    const CLOSED: &'static str = maps::SNAT_CLOSED;

    fn ip(self) -> IpAddr {
        Ipv4Addr::from(self).into()
    }
}

impl Family for Ipv6 {
    const ASSURED: &'static str = maps::CONNTRACK6;
    const NEW: &'static str = maps::CONNTRACK6_NEW;
    const CLOSED: &'static str = maps::SNAT_CLOSED6;

    fn ip(self) -> IpAddr {
        Ipv6Addr::from(self.0).into()
    }
}
