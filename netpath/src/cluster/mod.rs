//! Cluster membership through etcd, the way flannel's etcd backend keeps it: each node
//! registers under its name, gets a pod subnet of its own from the cluster CIDR (in a
//! transaction, so racing nodes never share one; keyed by name, so a restarted agent
//! keeps it), and shows it is alive under a lease its agent keeps alive. The subnet
//! record outlives its agent: a stopped node is "not ready", not forgotten, until
//! `netpath node del` or until it has been unused for `--node-gc-after` (see
//! `member.rs` for how it ages out).
mod keys;
mod member;
mod subnet;

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

pub use member::{delete_node, list_nodes, watch_nodes, Leaver, Member, Underlay};

/// The VXLAN network identifier of the overlay (one per cluster).
pub const VNI: u32 = 1;
pub use subnet::{free_subnet, free_subnet6};

/// How pods on different nodes reach each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tunnel {
    /// VXLAN between nodes (any underlay).
    Vxlan,
    /// Native routing: the nodes share an L2/L3 segment that routes pod subnets.
    None,
}

impl Tunnel {
    pub fn name(&self) -> &'static str {
        match self {
            Tunnel::Vxlan => "vxlan",
            Tunnel::None => "none",
        }
    }
}

impl std::fmt::Display for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `--store etcd://HOST:PORT[,HOST:PORT...]`: the etcd members to talk to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreUrl {
    pub endpoints: Vec<String>,
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "etcd://{}", self.endpoints.join(","))
    }
}

impl std::str::FromStr for StoreUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("{s:?} is not a store URL: give etcd://HOST:PORT[,HOST:PORT...]"))?;
        let mut endpoints = Vec::new();
        for member in rest.split(',') {
            let ok = member.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty()
                    && host.chars().all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c))
                    && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !ok {
                return Err(format!(
                    "{member:?} in {s:?} is not HOST:PORT (for example etcd://10.0.0.1:2379)"
                ));
            }
            endpoints.push(member.to_string());
        }
        Ok(StoreUrl { endpoints })
    }
}

/// What an agent in cluster mode is told.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub store: StoreUrl,
    pub node_name: String,
    pub cluster_cidr: Ipv4Net,
    /// Prefix length of each node's subnet.
    pub node_prefix: u8,
    pub tunnel: Tunnel,
    /// The IPv6 pod network of the whole cluster (`--cluster-cidr6`), and the prefix
    /// length of each node's IPv6 subnet; None: pods get IPv4 only.
    pub cluster_cidr6: Option<Ipv6Net>,
    pub node_prefix6: u8,
    /// Seconds a node stays ready after its agent last reached the store.
    pub lease_secs: u64,
    /// Seconds a node's record and subnet outlive its agent before they age out.
    pub gc_after_secs: u64,
}

/// A node as the cluster records it: until `netpath node del`, or until it ages out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    /// The node's underlay address (its uplink's).
    pub address: Ipv4Addr,
    pub pod_cidr: Ipv4Net,
    pub tunnel: Tunnel,
    /// The node's IPv6 pod subnet (`--cluster-cidr6`); records of earlier builds and
    /// nodes without IPv6 have none. Kept while the node is registered, also by a start
    /// without `--cluster-cidr6`: only `netpath node del` (or ageing out) frees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr6: Option<Ipv6Net>,
    /// The node's IPv6 underlay address (its uplink's global one), if it has one: the
    /// next hop of its IPv6 subnet in native routing (Linux routes IPv6 through IPv6
    /// gateways only: an IPv6 route refuses an IPv4 `via`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<Ipv6Addr>,
}

/// A node as `netpath node list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub address: Ipv4Addr,
    pub pod_cidr: Ipv4Net,
    /// The node's IPv6 pod subnet, if it has one (JSON: null).
    pub pod_cidr6: Option<Ipv6Net>,
    /// The node's IPv6 underlay address, if it has one (JSON: null): in native routing,
    /// a node without one gets no IPv6 route from the others.
    #[serde(default)]
    pub address6: Option<Ipv6Addr>,
    /// Its agent holds a live lease.
    pub ready: bool,
    pub tunnel: Tunnel,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "cannot use the store at {store}: {reason}; check that etcd runs there and that --store names it"
    )]
    Store { store: StoreUrl, reason: String },
    #[error("node name {name:?} is taken by the running agent at {address}: give this node another --node-name, or stop that agent")]
    NameTaken { name: String, address: String },
    #[error("the cluster CIDR {cidr} has no free /{prefix} subnet left: widen --cluster-cidr, or free one with `netpath node del`")]
    Full { cidr: Ipv4Net, prefix: u8 },
    #[error("node {name:?} is registered with subnet {recorded}, which is not a /{prefix} of the cluster CIDR {cidr}: use the cluster's --cluster-cidr and --node-cidr-prefix, or `netpath node del {name}` first")]
    SubnetMismatch { name: String, recorded: Ipv4Net, cidr: Ipv4Net, prefix: u8 },
    #[error("the IPv6 cluster CIDR {cidr} has no free /{prefix} subnet left: widen --cluster-cidr6, or free one with `netpath node del`")]
    Full6 { cidr: Ipv6Net, prefix: u8 },
    #[error("node {name:?} is registered with IPv6 subnet {recorded}, which is not a /{prefix} of the IPv6 cluster CIDR {cidr}: use the cluster's --cluster-cidr6 and --node-cidr-prefix6, or `netpath node del {name}` first")]
    SubnetMismatch6 { name: String, recorded: Ipv6Net, cidr: Ipv6Net, prefix: u8 },
    #[error("store key {key} holds something netpath cannot read ({reason}): remove it with etcdctl")]
    Corrupt { key: String, reason: String },
    #[error("no node {name:?} in the cluster (see `netpath node list`)")]
    UnknownNode { name: String },
    #[error("node {name:?} is ready (its agent at {address} is running): stop it before `netpath node del`")]
    StillReady { name: String, address: String },
    #[error("the store's records kept changing under this change; try again")]
    Contended,
}
