//! Desired state: the endpoints the agent owns and the addresses they hold, persisted
//! crash-safely so a restarted agent never hands out an address in use.
mod db;
mod identity;
mod ipam;
mod store;

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};

pub use db::{read, Db, Tx, TX_STEPS};
pub use identity::AgentId;
pub use ipam::{Ipam, Ipam6};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("failed to read state file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("state file {path} is corrupt: {source}; move it away to start empty")]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("failed to write state file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("state database {path}: {source}")]
    Db { path: PathBuf, source: rusqlite::Error },
    #[error("address {ip} is outside the pod CIDR {cidr}; pick one inside it or omit --ip")]
    OutsideCidr { ip: Ipv4Addr, cidr: ipnet::Ipv4Net },
    #[error("address {ip} is reserved in {cidr} (network, gateway or broadcast); pick another")]
    Reserved { ip: Ipv4Addr, cidr: ipnet::Ipv4Net },
    #[error("address {ip} is already used by endpoint {owner}; pick another or omit --ip")]
    InUse { ip: Ipv4Addr, owner: String },
    #[error("pod CIDR {cidr} has no free address; delete endpoints or use a larger CIDR")]
    Exhausted { cidr: ipnet::Ipv4Net },
    #[error("IPv6 address {ip} is outside the IPv6 pod CIDR {cidr}; pick one inside it or omit --ip6")]
    OutsideCidr6 { ip: Ipv6Addr, cidr: ipnet::Ipv6Net },
    #[error("IPv6 address {ip} is reserved in {cidr} (its first two addresses); pick another")]
    Reserved6 { ip: Ipv6Addr, cidr: ipnet::Ipv6Net },
    #[error("IPv6 address {ip} is already used by endpoint {owner}; pick another or omit --ip6")]
    InUse6 { ip: Ipv6Addr, owner: String },
    #[error("IPv6 pod CIDR {cidr} has no free address; delete endpoints or use a larger CIDR")]
    Exhausted6 { cidr: ipnet::Ipv6Net },
    #[error("{path} holds {found:?}, not an agent id (16 hex digits); move it away to get a new one")]
    BadIdentity { path: PathBuf, found: String },
}

/// A transport protocol a port can be published for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A published port: `proto host_ip:host_port` on the node goes to `endpoint:container_port`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRecord {
    pub proto: Proto,
    /// None: every address of the node.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub endpoint: String,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
}

impl PortRecord {
    /// Do the two claim the same incoming packets?
    pub fn clashes(&self, other: &PortRecord) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && (self.host_ip.is_none() || other.host_ip.is_none() || self.host_ip == other.host_ip)
    }
}

/// How containers are connected on this node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// No bridge: /32 addresses, the datapath is every container's gateway (default).
    #[default]
    Routed,
    /// docker0's layout: a bridge holding the gateway address, host veths as its ports.
    Bridge,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Routed => "routed",
            Mode::Bridge => "bridge",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The kind of device pair that connects a container (`--device`, node-wide).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Device {
    /// A veth pair; from_container at the host veth's tc ingress (default).
    #[default]
    Veth,
    /// A netkit pair in L2 mode (Linux 6.7+, routed mode only); from_container as a
    /// netkit link on the host-side (primary) device, run as the container transmits.
    Netkit,
}

impl Device {
    pub fn name(self) -> &'static str {
        match self {
            Device::Veth => "veth",
            Device::Netkit => "netkit",
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One attached container, as the agent built it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub name: String,
    #[serde(default)]
    pub mode: Mode,
    /// Records from before `--device` have none: they are veths.
    #[serde(default)]
    pub device: Device,
    pub netns: PathBuf,
    pub ifname: String,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    /// The endpoint's IPv6 address, from --pod-cidr6 (its gateway is fe80::1); records
    /// from before IPv6, and endpoints of an agent without --pod-cidr6, have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    pub mac: String,
    pub mtu: u32,
    pub host_ifname: String,
    pub host_ifindex: u32,
    pub host_mac: String,
    /// The runtime's container ID, for endpoints a runtime added (CNI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    let m = mac;
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

/// The link-local address the kernel derives from `mac` (modified EUI-64, RFC 4291):
/// what a container's interface is given, and what the datapath knows it by.
pub fn link_local(mac: &[u8; 6]) -> Ipv6Addr {
    let m = mac;
    Ipv6Addr::from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, m[0] ^ 2, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]])
}

/// Parses `aa:bb:cc:dd:ee:ff`; `None` when it is not six hex octets.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn link_local_is_the_kernels_eui64() {
        // What the kernel gives 0a:58:0a:4d:00:02 (addr_gen_mode eui64).
        let want: Ipv6Addr = "fe80::858:aff:fe4d:2".parse().unwrap();
        assert_eq!(super::link_local(&[0x0a, 0x58, 10, 77, 0, 2]), want);
    }

    use super::*;

    #[test]
    fn mac_round_trips_and_rejects_garbage() {
        let mac = [0x0a, 0x58, 10, 77, 0, 2];
        assert_eq!(parse_mac(&format_mac(&mac)), Some(mac));
        assert_eq!(parse_mac("0a:58:0a:4d:00"), None);
        assert_eq!(parse_mac("0a:58:0a:4d:00:02:03"), None);
        assert_eq!(parse_mac("zz:58:0a:4d:00:02"), None);
        assert_eq!(parse_mac("0a:58:0a:4d:0:002"), None);
    }
}
