//! Address management for the node's pod CIDR: the first host address is the
//! containers' gateway, the rest are handed out lowest-first. The IPv6 pod CIDR works
//! the same way, with its gateway outside it (fe80::1, link-local) in routed mode, and
//! its first host address, the bridge's, in bridge mode.
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use super::{EndpointRecord, StateError};

#[derive(Clone, Copy, Debug)]
pub struct Ipam {
    cidr: Ipv4Net,
}

impl Ipam {
    pub fn new(cidr: Ipv4Net) -> Self {
        Self { cidr: cidr.trunc() }
    }

    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    pub fn gateway(&self) -> Ipv4Addr {
        // hosts() skips network and broadcast; a /31 or /32 pod CIDR is refused by the CLI.
        self.cidr.hosts().next().unwrap_or(self.cidr.network())
    }

    /// Checks a requested address, or picks the lowest free one.
    pub fn assign(
        &self,
        requested: Option<Ipv4Addr>,
        taken: &[EndpointRecord],
    ) -> Result<Ipv4Addr, StateError> {
        let owners: std::collections::HashMap<Ipv4Addr, &str> =
            taken.iter().map(|e| (e.ip, e.name.as_str())).collect();
        self.assign_with(requested, |ip| owners.get(&ip).map(|n| n.to_string()))
    }

    /// [`Ipam::assign`] with the addresses taken as `owner` says (the name of who holds
    /// one): a hashed lookup, so the lowest free address of a full node costs a pass over
    /// the CIDR, not its square.
    pub fn assign_with(
        &self,
        requested: Option<Ipv4Addr>,
        owner: impl Fn(Ipv4Addr) -> Option<String>,
    ) -> Result<Ipv4Addr, StateError> {
        match requested {
            Some(ip) => {
                if !self.cidr.contains(&ip) {
                    return Err(StateError::OutsideCidr { ip, cidr: self.cidr });
                }
                if ip == self.cidr.network() || ip == self.cidr.broadcast() || ip == self.gateway() {
                    return Err(StateError::Reserved { ip, cidr: self.cidr });
                }
                if let Some(owner) = owner(ip) {
                    return Err(StateError::InUse { ip, owner });
                }
                Ok(ip)
            }
            None => self
                .cidr
                .hosts()
                .skip(1)
                .find(|ip| owner(*ip).is_none())
                .ok_or(StateError::Exhausted { cidr: self.cidr }),
        }
    }
}

/// The IPv6 pod CIDR (--pod-cidr6). Its first two addresses are kept back (the
/// subnet-router anycast address and ::1, by habit a router's: the bridge's in bridge
/// mode, where it is the containers' gateway; routed, their gateway is fe80::1); the
/// rest are handed out lowest-first.
#[derive(Clone, Copy, Debug)]
pub struct Ipam6 {
    cidr: Ipv6Net,
}

impl Ipam6 {
    pub fn new(cidr: Ipv6Net) -> Self {
        Self { cidr: cidr.trunc() }
    }

    pub fn cidr(&self) -> Ipv6Net {
        self.cidr
    }

    /// The bridge's address in bridge mode (::1 of the prefix), the containers' gateway.
    pub fn gateway(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.cidr.network()) + 1)
    }

    fn reserved(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) - u128::from(self.cidr.network()) < 2
    }

    /// Checks a requested address, or picks the lowest free one; `owner` names who holds
    /// an address (see [`Ipam::assign_with`]). The search is as long as the addresses in
    /// use, not as the CIDR: a /64 is never walked.
    pub fn assign_with(
        &self,
        requested: Option<Ipv6Addr>,
        owner: impl Fn(Ipv6Addr) -> Option<String>,
    ) -> Result<Ipv6Addr, StateError> {
        match requested {
            Some(ip) => {
                if !self.cidr.contains(&ip) {
                    return Err(StateError::OutsideCidr6 { ip, cidr: self.cidr });
                }
                if self.reserved(ip) {
                    return Err(StateError::Reserved6 { ip, cidr: self.cidr });
                }
                if let Some(owner) = owner(ip) {
                    return Err(StateError::InUse6 { ip, owner });
                }
                Ok(ip)
            }
            None => {
                let (first, last) = (u128::from(self.cidr.network()), u128::from(self.cidr.broadcast()));
                (first.saturating_add(2)..=last)
                    .map(Ipv6Addr::from)
                    .find(|ip| owner(*ip).is_none())
                    .ok_or(StateError::Exhausted6 { cidr: self.cidr })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, ip: Ipv4Addr) -> EndpointRecord {
        EndpointRecord {
            name: name.into(),
            mode: super::super::Mode::Routed,
            device: super::super::Device::Veth,
            netns: "/x".into(),
            ifname: "eth0".into(),
            ip,
            gateway: Ipv4Addr::new(10, 77, 0, 1),
            ip6: None,
            mac: String::new(),
            mtu: 1500,
            host_ifname: String::new(),
            host_ifindex: 0,
            host_mac: String::new(),
            owner: None,
            parent: None,
            ipvlan_mode: None,
            prefix: None,
        }
    }

    #[test]
    fn allocates_lowest_free_after_gateway() {
        let ipam = Ipam::new("10.77.0.0/24".parse().unwrap());
        assert_eq!(ipam.gateway(), Ipv4Addr::new(10, 77, 0, 1));
        let taken = [record("a", Ipv4Addr::new(10, 77, 0, 2))];
        assert_eq!(ipam.assign(None, &taken).unwrap(), Ipv4Addr::new(10, 77, 0, 3));
    }

    #[test]
    fn refuses_taken_reserved_and_foreign_addresses() {
        let ipam = Ipam::new("10.77.0.0/24".parse().unwrap());
        let taken = [record("a", Ipv4Addr::new(10, 77, 0, 2))];
        let err = ipam.assign(Some(Ipv4Addr::new(10, 77, 0, 2)), &taken).unwrap_err();
        assert!(err.to_string().contains("already used by endpoint a"), "{err}");
        assert!(matches!(
            ipam.assign(Some(Ipv4Addr::new(10, 77, 0, 1)), &taken),
            Err(StateError::Reserved { .. })
        ));
        assert!(matches!(
            ipam.assign(Some(Ipv4Addr::new(10, 77, 0, 255)), &taken),
            Err(StateError::Reserved { .. })
        ));
        assert!(matches!(
            ipam.assign(Some(Ipv4Addr::new(172, 17, 0, 2)), &taken),
            Err(StateError::OutsideCidr { .. })
        ));
    }

    #[test]
    fn ipv6_allocates_lowest_free_after_the_reserved_two_and_refuses_what_it_must() {
        let ipam = Ipam6::new("fd00:77::/120".parse().unwrap());
        let a: Ipv6Addr = "fd00:77::2".parse().unwrap();
        let owner = |ip: Ipv6Addr| (ip == a).then(|| "a".to_string());
        assert_eq!(ipam.assign_with(None, owner).unwrap(), "fd00:77::3".parse::<Ipv6Addr>().unwrap());
        let err = ipam.assign_with(Some(a), owner).unwrap_err();
        assert!(err.to_string().contains("already used by endpoint a"), "{err}");
        for reserved in ["fd00:77::", "fd00:77::1"] {
            let r = ipam.assign_with(Some(reserved.parse().unwrap()), owner);
            assert!(matches!(r, Err(StateError::Reserved6 { .. })), "{reserved}: {r:?}");
        }
        let r = ipam.assign_with(Some("fd00:78::2".parse().unwrap()), owner);
        assert!(matches!(r, Err(StateError::OutsideCidr6 { .. })), "{r:?}");
        let full = Ipam6::new("fd00:77::/126".parse().unwrap());
        let r =
            full.assign_with(None, |ip| (ip != "fd00:77::".parse::<Ipv6Addr>().unwrap()).then(String::new));
        assert!(matches!(r, Err(StateError::Exhausted6 { .. })), "{r:?}");
    }

    #[test]
    fn reports_exhaustion() {
        let ipam = Ipam::new("10.77.0.0/30".parse().unwrap());
        let taken = [record("a", Ipv4Addr::new(10, 77, 0, 2))];
        assert!(matches!(ipam.assign(None, &taken), Err(StateError::Exhausted { .. })));
    }
}
