//! The keys netpath keeps in etcd, under one versioned prefix:
//! - `/netpath/v1/nodes/<name>`: the node's record (JSON), persistent;
//! - `/netpath/v1/subnets/<a.b.c.d-len>`: the name of the node holding the subnet,
//!   persistent; its existence is what makes two nodes never share a subnet;
//! - `/netpath/v1/alive/<name>`: the agent holding the name (JSON), under its lease.
use ipnet::Ipv4Net;

pub const NODES: &str = "/netpath/v1/nodes/";
pub const ALIVE: &str = "/netpath/v1/alive/";
pub const SUBNETS: &str = "/netpath/v1/subnets/";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_keys_round_trip() {
        let net: Ipv4Net = "10.244.7.0/24".parse().unwrap();
        assert_eq!(subnet(net), "/netpath/v1/subnets/10.244.7.0-24");
        assert_eq!(parse_subnet(&subnet(net)), Some(net));
        assert_eq!(parse_subnet("/netpath/v1/subnets/garbage"), None);
    }
}
