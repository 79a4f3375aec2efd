//! The two address families conntrack keeps flows of and ports are published on, as
//! user space tells them apart. The tables' types are generic over the address
//! ([`Ipv4`], [`Ipv6`]: see [`netpath_common::conntrack::Tuple`] and
//! [`netpath_common::PortKeyOf`]), so conntrack's upkeep, listings and migration, and the
//! published ports' writes and checks, are written once; what differs is which pinned
//! maps hold a family's entries and how its addresses read.
use std::{
    hash::Hash,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use netpath_common::{
    conntrack::{NatEntry, Tuple},
    maps, Ip6, PortKeyOf, PortTargetOf,
};

/// IPv4's address as the conntrack tables hold it ([`netpath_common::CtKey`]'s).
pub type Ipv4 = [u8; 4];
/// IPv6's ([`netpath_common::CtKey6`]'s).
pub type Ipv6 = Ip6;

/// A conntrack table's entries, key and value, read at once.
pub type Entries<A> = Vec<(Tuple<A>, NatEntry<A>)>;

/// A published port's entry in its family's table, key and value.
pub type PortEntry<A> = (PortKeyOf<A>, PortTargetOf<A>);

/// An address family's tables. Code generic over it also needs the tables' types to be
/// plain data, which Rust cannot state here once for all callers: they say
/// `where Tuple<A>: Pod, NatEntry<A>: Pod` (or `PortKeyOf<A>: Pod, PortTargetOf<A>: Pod`).
/// The default address is all zeros (a published port's "every address").
pub trait Family: Copy + Eq + Hash + Default + Send + Sync + 'static {
    /// Assured flows.
    const ASSURED: &'static str;
    /// Flows not yet assured.
    const NEW: &'static str;
    /// Closed masqueraded flows remembered for port reuse.
    const CLOSED: &'static str;
    /// Both flow tables, assured first.
    const TABLES: [&'static str; 2] = [Self::ASSURED, Self::NEW];
    /// Published ports: [`netpath_common::PortKeyOf`] -> [`netpath_common::PortTargetOf`].
    const PORTS: &'static str;

    fn ip(self) -> IpAddr;

    /// `ip` as the tables hold it; None when it is of the other family.
    fn of(ip: IpAddr) -> Option<Self>;
}

impl Family for Ipv4 {
    const ASSURED: &'static str = maps::CONNTRACK;
    const NEW: &'static str = maps::CONNTRACK_NEW;
    const CLOSED: &'static str = maps::SNAT_CLOSED;
    const PORTS: &'static str = maps::PORT_MAPS;

    fn ip(self) -> IpAddr {
        Ipv4Addr::from(self).into()
    }

    fn of(ip: IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V4(ip) => Some(ip.octets()),
            IpAddr::V6(_) => None,
        }
    }
}

impl Family for Ipv6 {
    const ASSURED: &'static str = maps::CONNTRACK6;
    const NEW: &'static str = maps::CONNTRACK6_NEW;
    const CLOSED: &'static str = maps::SNAT_CLOSED6;
    const PORTS: &'static str = maps::PORT_MAPS6;

    fn ip(self) -> IpAddr {
        Ipv6Addr::from(self.0).into()
    }

    fn of(ip: IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V6(ip) => Some(Ip6(ip.octets())),
            IpAddr::V4(_) => None,
        }
    }
}
