//! The keys netpath keeps in etcd, under one versioned prefix:
//! - `/netpath/v1/nodes/<name>`: the node's record (JSON), persistent;
//! - `/netpath/v1/subnets/<a.b.c.d-len>`: the name of the node holding the subnet,
//!   persistent; its existence is what makes two nodes never share a subnet;
//! - `/netpath/v1/subnets6/<ipv6-len>`: the same for the node's IPv6 subnet
//!   (`--cluster-cidr6`);
//! - `/netpath/v1/alive/<name>`: the agent holding the name (JSON), under its lease.
use ipnet::{Ipv4Net, Ipv6Net};

pub const NODES: &str = "/netpath/v1/nodes/";
pub const ALIVE: &str = "/netpath/v1/alive/";
pub const SUBNETS: &str = "/netpath/v1/subnets/";
pub const SUBNETS6: &str = "/netpath/v1/subnets6/";

pub fn node(name: &str) -> String {
    format!("{NODES}{name}")
}

pub fn alive(name: &str) -> String {
    format!("{ALIVE}{name}")
}

pub fn subnet(net: Ipv4Net) -> String {
    format!("{SUBNETS}{}-{}", net.network(), net.prefix_len())
}

/// The subnet a `subnets/` key names.
pub fn parse_subnet(key: &str) -> Option<Ipv4Net> {
    let (addr, len) = key.strip_prefix(SUBNETS)?.split_once('-')?;
    Ipv4Net::new(addr.parse().ok()?, len.parse().ok()?).ok()
}

pub fn subnet6(net: Ipv6Net) -> String {
    format!("{SUBNETS6}{}-{}", net.network(), net.prefix_len())
}

/// The subnet a `subnets6/` key names.
pub fn parse_subnet6(key: &str) -> Option<Ipv6Net> {
    let (addr, len) = key.strip_prefix(SUBNETS6)?.rsplit_once('-')?;
    Ipv6Net::new(addr.parse().ok()?, len.parse().ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_keys_round_trip() {
        let net: Ipv4Net = "10.244.7.0/24".parse().unwrap();
        assert_eq!(subnet(net), "/netpath/v1/subnets/10.244.7.0-24");
        assert_eq!(parse_subnet(&subnet(net)), Some(net));
        assert_eq!(parse_subnet("/netpath/v1/subnets/garbage"), None);
        let net6: Ipv6Net = "fd00:244:0:7::/64".parse().unwrap();
        assert_eq!(subnet6(net6), "/netpath/v1/subnets6/fd00:244:0:7::-64");
        assert_eq!(parse_subnet6(&subnet6(net6)), Some(net6));
        // The IPv4 prefix's keys are not IPv6 subnets, nor the other way round.
        assert_eq!(parse_subnet6(&subnet(net)), None);
        assert_eq!(parse_subnet(&subnet6(net6)), None);
    }
}
