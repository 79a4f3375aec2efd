//! Desired state: the endpoints the agent owns and the addresses they hold, persisted
//! crash-safely so a restarted agent never hands out an address in use.
mod db;
mod identity;
mod ipam;
mod store;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
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
    /// None: every address of the node, IPv4 and (when the endpoint has one) IPv6. An
    /// IPv4 address publishes on IPv4 only, an IPv6 one (`::`: every IPv6 address of the
    /// node) on IPv6 only. Records from before IPv6 hold an IPv4 address or none: both
    /// are written as the same string, so they load unchanged.
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub endpoint: String,
    pub container_ip: Ipv4Addr,
    /// The endpoint's IPv6 address when the port was published, where IPv6 clients go.
    /// Records from before IPv6 have none: they stay IPv4 only, as they were published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_ip6: Option<Ipv6Addr>,
    pub container_port: u16,
}

impl PortRecord {
    /// Do the two claim the same incoming packets?
    pub fn clashes(&self, other: &PortRecord) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && hosts_meet(self.host_ip, other.host_ip)
    }

    /// Does `other` publish the same port to the same place? The container's IPv6
    /// address is left out: a record from before IPv6 has none, and asking for it again
    /// (a runtime retrying an add) must not be taken for a clash.
    pub fn same_mapping(&self, other: &PortRecord) -> bool {
        (self.proto, self.host_ip, self.host_port, &self.endpoint, self.container_ip, self.container_port)
            == (
                other.proto,
                other.host_ip,
                other.host_port,
                &other.endpoint,
                other.container_ip,
                other.container_port,
            )
    }
}

/// Do ports published on host addresses `a` and `b` share packets? None is every
/// address of both families and `::` every IPv6 address; otherwise only the same
/// address does (0.0.0.0 included: an address like any other, as before IPv6).
pub fn hosts_meet(a: Option<IpAddr>, b: Option<IpAddr>) -> bool {
    match (a, b) {
        (None, _) | (_, None) => true,
        (Some(IpAddr::V6(a)), Some(IpAddr::V6(b))) => a == b || a.is_unspecified() || b.is_unspecified(),
        (Some(a), Some(b)) => a == b,
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
    /// Each container's interface is a macvlan (bridge mode) of a parent device: the
    /// container sits on the parent's network with an address of its own.
    Macvlan,
    /// Each container's interface is an ipvlan (L2 or L3, [`IpvlanMode`]) of a parent
    /// device, sharing its MAC.
    Ipvlan,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Routed => "routed",
            Mode::Bridge => "bridge",
            Mode::Macvlan => "macvlan",
            Mode::Ipvlan => "ipvlan",
        }
    }

    /// Is a container's interface a sub-interface of a parent device (no host side)?
    pub fn is_subif(self) -> bool {
        matches!(self, Mode::Macvlan | Mode::Ipvlan)
    }
}

/// ipvlan's own modes (`--ipvlan-mode`): the kernel keeps one per parent, for all of
/// its ipvlan devices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IpvlanMode {
    /// Switched by MAC (the parent's, shared) and IP, ARP among the devices (default).
    #[default]
    L2,
    /// Routed by IP alone, no ARP or broadcast: the network routes the containers'
    /// addresses to the node.
    L3,
}

impl IpvlanMode {
    pub fn name(self) -> &'static str {
        match self {
            IpvlanMode::L2 => "l2",
            IpvlanMode::L3 => "l3",
        }
    }
}

impl std::fmt::Display for IpvlanMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// macvlan's modes netpath offers (`--macvlan-mode`): bridge only. private would cut
/// containers off from each other and vepa needs a switch that hairpins; passthru
/// gives the whole parent to one container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MacvlanMode {
    #[default]
    Bridge,
}

impl MacvlanMode {
    pub fn name(self) -> &'static str {
        "bridge"
    }
}

impl std::fmt::Display for MacvlanMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
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
    /// The endpoint's IPv6 address, from --pod-cidr6 (its gateway: see
    /// [`EndpointRecord::ipv6`]); records from before IPv6, and endpoints of an agent
    /// without --pod-cidr6, have none.
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
    /// `--mode macvlan|ipvlan`: the parent device the container's interface is a
    /// sub-interface of (`host_ifindex` is then the sub-interface's index inside the
    /// container, `host_ifname` empty, `host_mac` the parent's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// `--mode ipvlan`: the parent's ipvlan mode when the endpoint was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipvlan_mode: Option<IpvlanMode>,
    /// `--mode macvlan|ipvlan`: the container address's prefix length, the parent's
    /// subnet's (the other modes derive theirs from the pod CIDR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<u8>,
}

/// A container's IPv6 side as netpath configures it (and drift checks it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContainerIpv6 {
    pub ip: Ipv6Addr,
    /// 128 when routed (everything goes to the gateway, i.e. into the datapath); the
    /// IPv6 pod CIDR's in bridge mode, as docker0's.
    pub prefix: u8,
    /// The EUI-64 address of the container's MAC, which the datapath knows it by.
    pub link_local: Ipv6Addr,
    /// The default route's: fe80::1 when routed (answered by the datapath's neighbour
    /// discovery); in bridge mode the bridge's address, as Docker's IPv6 gateway.
    pub gateway: Ipv6Addr,
}

impl EndpointRecord {
    /// The container's IPv6 side on a node whose IPv6 pod CIDR is `pod_cidr6`; None
    /// without IPv6, with a MAC that is none (refused when written), or in bridge mode
    /// without the pod CIDR its prefix and gateway come from.
    pub fn ipv6(&self, pod_cidr6: Option<ipnet::Ipv6Net>) -> Option<ContainerIpv6> {
        let (ip, mac) = (self.ip6?, parse_mac(&self.mac)?);
        let (prefix, gateway) = match self.mode {
            Mode::Routed => (128, Ipv6Addr::from(netpath_common::GATEWAY6)),
            // No IPv6 in these modes (refused at start).
            Mode::Macvlan | Mode::Ipvlan => return None,
            Mode::Bridge => {
                let ipam = Ipam6::new(pod_cidr6?);
                (ipam.cidr().prefix_len(), ipam.gateway())
            }
        };
        Some(ContainerIpv6 { ip, prefix, link_local: link_local(&mac), gateway })
    }
}

/// Where a port is published, as listings show it: `*:8080` for every address of the
/// node, `192.168.77.10:8080`, `[2001:db8::10]:8080`.
pub fn format_host_port(host_ip: Option<IpAddr>, port: u16) -> String {
    match host_ip {
        None => format!("*:{port}"),
        Some(ip) => std::net::SocketAddr::new(ip, port).to_string(),
    }
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
    fn a_container_routes_ipv6_via_fe80_1_when_routed_and_via_the_bridge_in_bridge_mode() {
        let rec = EndpointRecord {
            name: "web".into(),
            mode: Mode::Routed,
            device: Device::Veth,
            netns: "/run/netns/web".into(),
            ifname: "eth0".into(),
            ip: Ipv4Addr::new(10, 77, 0, 2),
            gateway: Ipv4Addr::new(10, 77, 0, 1),
            ip6: Some("fd00:77::2".parse().unwrap()),
            mac: "0a:58:0a:4d:00:02".into(),
            mtu: 1500,
            host_ifname: "np0".into(),
            host_ifindex: 7,
            host_mac: "0e:00:00:00:00:01".into(),
            owner: None,
            parent: None,
            ipvlan_mode: None,
            prefix: None,
        };
        let cidr6: ipnet::Ipv6Net = "fd00:77::/64".parse().unwrap();
        let ll: Ipv6Addr = "fe80::858:aff:fe4d:2".parse().unwrap();
        let ip: Ipv6Addr = "fd00:77::2".parse().unwrap();
        let routed = rec.ipv6(Some(cidr6)).unwrap();
        assert_eq!(
            routed,
            ContainerIpv6 { ip, prefix: 128, link_local: ll, gateway: "fe80::1".parse().unwrap() }
        );
        let bridged = EndpointRecord { mode: Mode::Bridge, ..rec.clone() };
        let gateway: Ipv6Addr = "fd00:77::1".parse().unwrap();
        assert_eq!(
            bridged.ipv6(Some(cidr6)),
            Some(ContainerIpv6 { ip, prefix: 64, link_local: ll, gateway })
        );
        // Without the prefix a bridged container's side is unknown; without IPv6 there is none.
        assert_eq!(bridged.ipv6(None), None);
        assert_eq!(EndpointRecord { ip6: None, ..rec }.ipv6(Some(cidr6)), None);
    }

    fn port(host_ip: Option<&str>, host_port: u16) -> PortRecord {
        PortRecord {
            proto: Proto::Tcp,
            host_ip: host_ip.map(|h| h.parse().unwrap()),
            host_port,
            endpoint: "web".into(),
            container_ip: Ipv4Addr::new(10, 77, 0, 2),
            container_ip6: Some("fd00:77::2".parse().unwrap()),
            container_port: 80,
        }
    }

    #[test]
    fn a_port_record_from_before_ipv6_loads_as_it_was() {
        let old = r#"{"proto":"tcp","host_ip":"192.168.77.10","host_port":8080,"endpoint":"web","container_ip":"10.77.0.2","container_port":80}"#;
        let rec: PortRecord = serde_json::from_str(old).unwrap();
        assert_eq!(rec, PortRecord { container_ip6: None, ..port(Some("192.168.77.10"), 8080) });
        // Written back byte for byte: an older agent reads what this one writes.
        assert_eq!(serde_json::to_string(&rec).unwrap(), old);
        let every: PortRecord = serde_json::from_str(&old.replace("\"192.168.77.10\"", "null")).unwrap();
        assert_eq!(every.host_ip, None);
        let v6 = serde_json::to_value(port(Some("2001:db8::10"), 8080)).unwrap();
        assert_eq!((&v6["host_ip"], &v6["container_ip6"]), (&"2001:db8::10".into(), &"fd00:77::2".into()));
    }

    #[test]
    fn ports_clash_on_shared_addresses_and_never_across_families() {
        let clash = |a: Option<&str>, b: Option<&str>| port(a, 8080).clashes(&port(b, 8080));
        // Every address (None) takes every other one, of both families.
        for other in [None, Some("192.168.77.10"), Some("127.0.0.1"), Some("::"), Some("2001:db8::10")] {
            assert!(clash(None, other) && clash(other, None), "{other:?}");
        }
        // One family's address never takes the other's packets.
        assert!(!clash(Some("192.168.77.10"), Some("2001:db8::10")));
        assert!(!clash(Some("192.168.77.10"), Some("::")));
        // `::` is every IPv6 address of the node.
        assert!(clash(Some("::"), Some("2001:db8::10")) && clash(Some("2001:db8::10"), Some("::")));
        assert!(clash(Some("2001:db8::10"), Some("2001:db8::10")));
        assert!(!clash(Some("2001:db8::10"), Some("2001:db8::11")));
        // 0.0.0.0 is an IPv4 address like another, as it was.
        assert!(!clash(Some("0.0.0.0"), Some("192.168.77.10")) && clash(Some("0.0.0.0"), Some("0.0.0.0")));
        assert!(!clash(Some("0.0.0.0"), Some("::")));
        // Another port or protocol is another claim.
        assert!(!port(None, 8080).clashes(&port(None, 8081)));
        assert!(!port(None, 8080).clashes(&PortRecord { proto: Proto::Udp, ..port(None, 8080) }));
    }

    #[test]
    fn a_port_published_again_is_the_same_mapping_whatever_its_ipv6_address() {
        let old = PortRecord { container_ip6: None, ..port(None, 8080) };
        assert!(old.same_mapping(&port(None, 8080)));
        assert!(!old.same_mapping(&PortRecord { container_port: 81, ..port(None, 8080) }));
        assert!(!old.same_mapping(&port(Some("::"), 8080)));
    }

    #[test]
    fn host_ports_show_ipv6_in_brackets() {
        assert_eq!(format_host_port(None, 8080), "*:8080");
        assert_eq!(format_host_port(Some("192.168.77.10".parse().unwrap()), 8080), "192.168.77.10:8080");
        assert_eq!(format_host_port(Some("2001:db8::10".parse().unwrap()), 8080), "[2001:db8::10]:8080");
        assert_eq!(format_host_port(Some("::".parse().unwrap()), 8080), "[::]:8080");
    }

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
