//! Sysctls of the namespace the agent runs in (procfs resolves /proc/sys/net per netns).
use std::fs;

use super::PlumbingError;

/// Sysctls the datapath needs on the node, set at agent start. Documented in README.
pub const NODE_SYSCTLS: &[(&str, &str)] = &[
    // The node routes for containers whose traffic leaves through the stack.
    ("net/ipv4/ip_forward", "1"),
];

/// The same for IPv6, set when the node has an IPv6 pod CIDR. With forwarding on, the
/// kernel stops taking router advertisements on interfaces whose accept_ra is 1: a node
/// whose uplink is configured by them needs accept_ra=2 there (README, IPv6).
pub const NODE_SYSCTLS6: &[(&str, &str)] = &[
    // What the datapath hands the stack (the node, the outside) is routed by it.
    ("net/ipv6/conf/all/forwarding", "1"),
];

pub fn set(key: &str, value: &str) -> Result<(), PlumbingError> {
    let path = format!("/proc/sys/{key}");
    fs::write(&path, value).map_err(|source| PlumbingError::Sysctl { key: key.replace('/', "."), source })
}

pub fn get(key: &str) -> Result<String, PlumbingError> {
    fs::read_to_string(format!("/proc/sys/{key}"))
        .map(|s| s.trim().to_string())
        .map_err(|source| PlumbingError::Sysctl { key: key.replace('/', "."), source })
}
