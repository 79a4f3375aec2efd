//! Choosing a node's subnet: the lowest /prefix of the cluster CIDR no node holds.
use std::collections::HashSet;

use ipnet::{Ipv4Net, Ipv6Net};

/// The first `prefix`-long subnet of `cluster` not in `taken`; None when all are.
pub fn free_subnet(cluster: Ipv4Net, prefix: u8, taken: &HashSet<Ipv4Net>) -> Option<Ipv4Net> {
    // The first (network) subnet of a /16 is as good as any: unlike addresses, a subnet
    // has no reserved first or last instance.
    cluster.subnets(prefix).ok()?.find(|s| !taken.contains(s))
}

/// [`free_subnet`] for the IPv6 cluster CIDR.
pub fn free_subnet6(cluster: Ipv6Net, prefix: u8, taken: &HashSet<Ipv6Net>) -> Option<Ipv6Net> {
    cluster.subnets(prefix).ok()?.find(|s| !taken.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn takes_the_lowest_free_subnet_and_none_when_full() {
        let cluster = net("10.244.0.0/22");
        let mut taken = HashSet::new();
        assert_eq!(free_subnet(cluster, 24, &taken), Some(net("10.244.0.0/24")));
        taken.insert(net("10.244.0.0/24"));
        taken.insert(net("10.244.2.0/24"));
        assert_eq!(free_subnet(cluster, 24, &taken), Some(net("10.244.1.0/24")));
        taken.insert(net("10.244.1.0/24"));
        assert_eq!(free_subnet(cluster, 24, &taken), Some(net("10.244.3.0/24")));
        taken.insert(net("10.244.3.0/24"));
        assert_eq!(free_subnet(cluster, 24, &taken), None);
        // A prefix shorter than the cluster's has no subnet in it.
        assert_eq!(free_subnet(cluster, 20, &HashSet::new()), None);
    }

    #[test]
    fn takes_the_lowest_free_ipv6_subnet_and_none_when_full() {
        let cluster: Ipv6Net = "fd00:244::/62".parse().unwrap();
        let six = |s: &str| s.parse::<Ipv6Net>().unwrap();
        let mut taken = HashSet::new();
        assert_eq!(free_subnet6(cluster, 64, &taken), Some(six("fd00:244::/64")));
        taken.insert(six("fd00:244::/64"));
        taken.insert(six("fd00:244:0:1::/64"));
        assert_eq!(free_subnet6(cluster, 64, &taken), Some(six("fd00:244:0:2::/64")));
        taken.insert(six("fd00:244:0:2::/64"));
        taken.insert(six("fd00:244:0:3::/64"));
        assert_eq!(free_subnet6(cluster, 64, &taken), None);
        assert_eq!(free_subnet6(cluster, 60, &HashSet::new()), None);
    }
}
