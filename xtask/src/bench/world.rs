//! The three datapaths, each built in namespaces of its own around the same workload:
//! two containers (a, b) on a node with an uplink to an outside host.
use std::{
    net::{Ipv6Addr, SocketAddr, SocketAddrV4},
    process::Command,
};

use anyhow::{anyhow, bail, Context as _, Result};
use netpath_tests::{Lab, Netns, NODE_UPLINK_IP, OUTSIDE_IP};
use serde::{Deserialize, Serialize};

/// The port every server listens on, and the node port published for it.
pub const SERVICE_PORT: u16 = 5001;
pub const HOST_PORT: u16 = 8080;

/// The uplink's IPv6 addresses (the node's, the outside host's), in the worlds with an
/// IPv6 path to the outside: the IPv4 uplink's 192.168.77.0/24 spelled in IPv6.
pub const NODE_UPLINK_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x192, 0x168, 0x77, 0, 0, 0, 1);
pub const OUTSIDE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x192, 0x168, 0x77, 0, 0, 0, 2);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Datapath {
    #[serde(rename = "netpath")]
    Netpath,
    /// Docker's bridge driver: bridge, veths enslaved, MASQUERADE, DNAT, DOCKER chains.
    #[serde(rename = "bridge+iptables")]
    Iptables,
    /// One plain veth pair between the two endpoints (and loopback): the limit.
    #[serde(rename = "limit")]
    Limit,
    /// netpath with the XDP fast path on the uplink (--xdp), for the NAT paths.
    #[serde(rename = "netpath+xdp")]
    NetpathXdp,
    /// netpath's container-to-container layout with a program that only looks up the
    /// destination and redirects (see bench::floor): the floor of that layout.
    #[serde(rename = "layout floor")]
    Floor,
    /// netpath with `--endpoint-attach clsact`: the endpoints' from_container kept in
    /// clsact filters rather than moved to TCX links, container to container only.
    #[serde(rename = "netpath clsact")]
    NetpathClsact,
    /// Each container's eth0 a macvlan (bridge mode) of the node's uplink, nothing else:
    /// the kernel's sub-interface datapath (bench::subif).
    #[serde(rename = "macvlan")]
    Macvlan,
    /// netpath with `--mode macvlan`: macvlan's layout and addresses, netpath's programs
    /// on the containers' interfaces.
    #[serde(rename = "netpath macvlan")]
    NetpathMacvlan,
    /// Each container's eth0 an ipvlan (L2 mode) of the node's uplink, nothing else.
    #[serde(rename = "ipvlan")]
    Ipvlan,
    /// The same in L3 mode: no ARP, the outside host routes the range to the node.
    #[serde(rename = "ipvlan l3")]
    IpvlanL3,
    /// netpath with `--mode ipvlan --ipvlan-mode l2`: ipvlan's layout, netpath's programs.
    #[serde(rename = "netpath ipvlan")]
    NetpathIpvlan,
}

impl Datapath {
    pub fn name(self) -> &'static str {
        match self {
            Datapath::Netpath => "netpath",
            Datapath::Iptables => "bridge+iptables",
            Datapath::Limit => "limit",
            Datapath::NetpathXdp => "netpath+xdp",
            Datapath::Floor => "layout floor",
            Datapath::NetpathClsact => "netpath clsact",
            Datapath::Macvlan => "macvlan",
            Datapath::NetpathMacvlan => "netpath macvlan",
            Datapath::Ipvlan => "ipvlan",
            Datapath::IpvlanL3 => "ipvlan l3",
            Datapath::NetpathIpvlan => "netpath ipvlan",
        }
    }

    /// The sub-interface worlds: a table of their own (one CPU only), and none of the
    /// generator's cross-checks, which check the generator, not a datapath.
    pub fn is_subif(self) -> bool {
        matches!(
            self,
            Datapath::Macvlan
                | Datapath::NetpathMacvlan
                | Datapath::Ipvlan
                | Datapath::IpvlanL3
                | Datapath::NetpathIpvlan
        )
    }

    /// netpath's own worlds: an agent, its counters and its conntrack table.
    fn is_netpath(self) -> bool {
        matches!(
            self,
            Datapath::Netpath
                | Datapath::NetpathXdp
                | Datapath::NetpathClsact
                | Datapath::NetpathMacvlan
                | Datapath::NetpathIpvlan
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathKind {
    #[serde(rename = "container-to-container")]
    C2c,
    #[serde(rename = "container-to-container (IPv6)")]
    C2c6,
    #[serde(rename = "container-to-outside (SNAT)")]
    Snat,
    #[serde(rename = "container-to-outside (SNAT66)")]
    Snat6,
    #[serde(rename = "outside-to-mapped-port (DNAT)")]
    Dnat,
    #[serde(rename = "outside-to-mapped-port (DNAT66)")]
    Dnat6,
    #[serde(rename = "loopback")]
    Loopback,
}

impl PathKind {
    pub fn name(self) -> &'static str {
        match self {
            PathKind::C2c => "container-to-container",
            PathKind::C2c6 => "container-to-container (IPv6)",
            PathKind::Snat => "container-to-outside (SNAT)",
            PathKind::Snat6 => "container-to-outside (SNAT66)",
            PathKind::Dnat => "outside-to-mapped-port (DNAT)",
            PathKind::Dnat6 => "outside-to-mapped-port (DNAT66)",
            PathKind::Loopback => "loopback",
        }
    }

    /// Every path, in the tables' order.
    pub const ALL: [PathKind; 7] = [
        PathKind::C2c,
        PathKind::C2c6,
        PathKind::Snat,
        PathKind::Snat6,
        PathKind::Dnat,
        PathKind::Dnat6,
        PathKind::Loopback,
    ];

    /// Through NAT on the uplink: the limit has no such path.
    pub fn is_nat(self) -> bool {
        matches!(self, PathKind::Snat | PathKind::Snat6 | PathKind::Dnat | PathKind::Dnat6)
    }

    /// Over IPv6.
    pub fn is_ipv6(self) -> bool {
        matches!(self, PathKind::C2c6 | PathKind::Snat6 | PathKind::Dnat6)
    }

    /// What the limit measures for this path: its NAT paths' container-to-container
    /// counterpart of the same family.
    pub fn on_the_limit(self) -> PathKind {
        match self {
            PathKind::Snat | PathKind::Dnat => PathKind::C2c,
            PathKind::Snat6 | PathKind::Dnat6 => PathKind::C2c6,
            p => p,
        }
    }
}

/// A lab of two containers whose clients may reuse their own TIME_WAIT ports for new
/// connections (net.ipv4.tcp_tw_reuse=1, in the lab's namespaces only). TCP_CRR closes
/// normally, so each connection leaves a TIME_WAIT at the client: without reuse, a few
/// seconds at 10k connections/s exhaust the client's 28k ephemeral ports and the test
/// measures the client's port search instead of the datapath. Same on every datapath.
fn lab(prefix: &str) -> Result<Lab> {
    let lab = Lab::with_prefix(prefix, 2);
    for ns in lab.containers.iter().chain([&lab.outside]) {
        in_ns(ns, &["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"])?;
    }
    Ok(lab)
}

pub struct World {
    pub datapath: Datapath,
    pub lab: Lab,
    b: std::net::Ipv4Addr,
    /// b's IPv6 address, in the worlds with an IPv6 path.
    b6: Option<Ipv6Addr>,
    /// What its agent was started with (netpath's worlds): a restart keeps them.
    pub agent_args: Vec<String>,
    /// The floor's programs, attached while this is held.
    _floor: Option<aya::Ebpf>,
}

/// Who serves and who asks on one path.
pub struct Endpoints<'w> {
    pub server: &'w Netns,
    pub listen: SocketAddr,
    pub client: &'w Netns,
    pub target: SocketAddr,
}

pub(super) fn ip(ns: &Netns, args: &[&str]) -> Result<()> {
    let o = Command::new("ip").args(["-n", &ns.name]).args(args).output()?;
    if !o.status.success() {
        bail!("ip -n {} {}: {}", ns.name, args.join(" "), String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok(())
}

pub fn in_ns(ns: &Netns, args: &[&str]) -> Result<()> {
    let o = ns.exec(args);
    if !o.status.success() {
        bail!("{} in {}: {}", args.join(" "), ns.name, String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok(())
}

/// The uplink's IPv6 addresses, without duplicate address detection: the outside host
/// on the node's subnet, as IPv4's (no route needed either way, the node's masquerades).
fn uplink6(lab: &Lab) -> Result<()> {
    ip(&lab.node, &["-6", "addr", "add", &format!("{NODE_UPLINK_IP6}/64"), "dev", "uplink0", "nodad"])?;
    ip(&lab.outside, &["-6", "addr", "add", &format!("{OUTSIDE_IP6}/64"), "dev", "eth0", "nodad"])
}

/// The bridge br0 on the node, each container's veth enslaved to it, addresses
/// 10.77.0.2 and up (fd00:77::2 and up), the bridge the default gateway, as Docker's
/// bridge with IPv6 enabled (addresses without duplicate address detection, as
/// netpath's).
fn bridge_network(lab: &Lab) -> Result<()> {
    let node = &lab.node;
    ip(node, &["link", "add", "br0", "type", "bridge"])?;
    ip(node, &["addr", "add", "10.77.0.1/24", "dev", "br0"])?;
    ip(node, &["-6", "addr", "add", "fd00:77::1/64", "dev", "br0", "nodad"])?;
    ip(node, &["link", "set", "br0", "up"])?;
    for (i, c) in lab.containers.iter().enumerate() {
        let host = format!("veth{i}");
        let addr = format!("10.77.0.{}/24", i + 2);
        ip(node, &["link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &c.name])?;
        ip(node, &["link", "set", &host, "master", "br0", "up"])?;
        ip(c, &["addr", "add", &addr, "dev", "eth0"])?;
        ip(c, &["-6", "addr", "add", &format!("fd00:77::{}/64", i + 2), "dev", "eth0", "nodad"])?;
        ip(c, &["link", "set", "eth0", "up"])?;
        ip(c, &["link", "set", "lo", "up"])?;
        ip(c, &["route", "add", "default", "via", "10.77.0.1"])?;
        ip(c, &["-6", "route", "add", "default", "via", "fd00:77::1"])?;
    }
    Ok(())
}

/// An endpoint's IPv6 address, as `netpath endpoint list` gives it.
fn endpoint_ip6(lab: &Lab, name: &str) -> Result<Ipv6Addr> {
    let list: serde_json::Value = serde_json::from_str(&lab.netpath_ok(&["endpoint", "list", "-o", "json"]))?;
    let ep = list["endpoints"].as_array().into_iter().flatten().find(|e| e["name"] == name);
    ep.and_then(|e| e["ip6"].as_str())
        .context("the endpoint has no IPv6 address")?
        .parse()
        .context("its IPv6 address")
}

/// Docker's nat table: its DOCKER chain for local destinations, MASQUERADE for the
/// bridge's subnet, and the published port's DNAT for each protocol.
fn docker_nat_rules() -> Vec<String> {
    let mut rules: Vec<String> = [
        "-t nat -N DOCKER",
        "-t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
        "-t nat -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER",
        "-t nat -A POSTROUTING -s 10.77.0.0/24 ! -o br0 -j MASQUERADE",
        "-t nat -A DOCKER -i br0 -j RETURN",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for proto in ["tcp", "udp"] {
        rules.push(format!(
            "-t nat -A DOCKER ! -i br0 -p {proto} --dport {HOST_PORT} -j DNAT --to-destination 10.77.0.3:{SERVICE_PORT}"
        ));
    }
    rules
}

/// A rule of Docker's for IPv4 as Docker writes it for its bridge network's IPv6 (with
/// ip6tables enabled): the same chains and rules, the bridge's IPv6 addresses.
fn ip6_rule(rule: &str) -> Result<String> {
    let b = format!("10.77.0.3:{SERVICE_PORT}");
    let rule = rule
        .replace("127.0.0.0/8", "::1/128")
        .replace("10.77.0.0/24", "fd00:77::/64")
        .replace("10.77.0.3/32", "fd00:77::3/128")
        .replace(&b, &format!("[fd00:77::3]:{SERVICE_PORT}"));
    if rule.contains("10.77.") {
        bail!("an IPv4 address left in the ip6tables rule {rule}");
    }
    Ok(rule)
}

/// Docker's filter table: FORWARD through DOCKER-USER and DOCKER, the bridge's own
/// traffic and replies accepted, and its per-port ACCEPT for each published protocol.
fn docker_filter_rules() -> Vec<String> {
    let mut rules: Vec<String> = [
        "-N DOCKER",
        "-N DOCKER-USER",
        "-A DOCKER-USER -j RETURN",
        "-P FORWARD DROP",
        "-A FORWARD -j DOCKER-USER",
        "-A FORWARD -o br0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A FORWARD -o br0 -j DOCKER",
        "-A FORWARD -i br0 ! -o br0 -j ACCEPT",
        "-A FORWARD -i br0 -o br0 -j ACCEPT",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for proto in ["tcp", "udp"] {
        rules.push(format!(
            "-A DOCKER -d 10.77.0.3/32 ! -i br0 -o br0 -p {proto} --dport {SERVICE_PORT} -j ACCEPT"
        ));
    }
    rules
}

impl World {
    pub fn netpath() -> Result<World> {
        // Dual-stack, for the IPv6 path (its IPv4 paths are the same with or without).
        Self::netpath_with("npbench", Datapath::Netpath, &["--pod-cidr6", "fd00:77::/64"])
    }

    /// netpath with the uplink's XDP fast path.
    pub fn netpath_xdp() -> Result<World> {
        Self::netpath_with("npbxdp", Datapath::NetpathXdp, &["--xdp"])
    }

    /// netpath with its endpoints kept in clsact filters (`--endpoint-attach clsact`):
    /// the hook's share of the container-to-container path, next to the default, which
    /// moves them to TCX links.
    pub fn netpath_clsact() -> Result<World> {
        Self::netpath_with(
            "npbcls",
            Datapath::NetpathClsact,
            &["--pod-cidr6", "fd00:77::/64", "--endpoint-attach", "clsact"],
        )
    }

    fn netpath_with(prefix: &str, datapath: Datapath, args: &[&str]) -> Result<World> {
        let mut lab = lab(prefix)?;
        let dual = matches!(datapath, Datapath::Netpath | Datapath::NetpathClsact);
        if dual {
            // NAT66 masquerades to the uplink's IPv6 address, and ports are published on
            // it: there before the agent.
            uplink6(&lab)?;
        }
        lab.start_agent_with(args);
        lab.add_endpoint("a", 0);
        let b = lab.add_endpoint("b", 1);
        // Published on both families (the default) where b has an IPv6 address:
        // PORT_MAPS for the DNAT path, PORT_MAPS6 for DNAT66.
        for proto in ["tcp", "udp"] {
            lab.netpath_ok(&[
                "port",
                "add",
                "--proto",
                proto,
                &HOST_PORT.to_string(),
                &format!("b:{SERVICE_PORT}"),
            ]);
        }
        // Measured on the hook the endpoints settle on, not across the move.
        if datapath != Datapath::NetpathClsact {
            lab.wait_for_tcx_links();
        }
        let b6 = if dual { Some(endpoint_ip6(&lab, "b")?) } else { None };
        let agent_args = args.iter().map(|a| a.to_string()).collect();
        Ok(World { datapath, lab, b, b6, agent_args, _floor: None })
    }

    /// Docker's bridge network as its bridge driver builds it (the seed's manual set-up
    /// plus Docker's rules), with the same addresses as netpath's.
    pub fn iptables() -> Result<World> {
        let lab = lab("npbase")?;
        bridge_network(&lab)?;
        let node = &lab.node;
        in_ns(node, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        in_ns(node, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
        for rule in docker_nat_rules().into_iter().chain(docker_filter_rules()) {
            let mut args = vec!["iptables"];
            args.extend(rule.split_whitespace());
            in_ns(node, &args).context("building the iptables baseline")?;
        }
        // Docker's rules again in ip6tables, for its IPv6 bridge network (the uplink's
        // IPv6 addresses): MASQUERADE for the container-to-outside path over IPv6, and
        // the published port's DNAT to [fd00:77::3]:SERVICE_PORT in its DOCKER chain
        // with the FORWARD ACCEPT for it, for the outside-to-mapped-port path over IPv6.
        uplink6(&lab)?;
        for rule in docker_nat_rules().into_iter().chain(docker_filter_rules()) {
            let rule = ip6_rule(&rule)?;
            let mut args = vec!["ip6tables"];
            args.extend(rule.split_whitespace());
            in_ns(node, &args).context("building the ip6tables baseline")?;
        }
        Ok(World {
            datapath: Datapath::Iptables,
            lab,
            b: "10.77.0.3".parse()?,
            b6: Some("fd00:77::3".parse()?),
            agent_args: Vec::new(),
            _floor: None,
        })
    }

    /// The two endpoints joined by one veth pair, nothing in between.
    pub fn limit() -> Result<World> {
        let lab = lab("nplimit")?;
        let (c0, c1) = (&lab.containers[0], &lab.containers[1]);
        ip(c0, &["link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &c1.name])?;
        for (c, addr, addr6) in [(c0, "10.99.0.1/24", "fd00:99::1/64"), (c1, "10.99.0.2/24", "fd00:99::2/64")]
        {
            ip(c, &["addr", "add", addr, "dev", "eth0"])?;
            ip(c, &["-6", "addr", "add", addr6, "dev", "eth0", "nodad"])?;
            ip(c, &["link", "set", "eth0", "up"])?;
            ip(c, &["link", "set", "lo", "up"])?;
        }
        Ok(World {
            datapath: Datapath::Limit,
            lab,
            b: "10.99.0.2".parse()?,
            b6: Some("fd00:99::2".parse()?),
            agent_args: Vec::new(),
            _floor: None,
        })
    }

    /// netpath's layout, its one lookup and the redirect, nothing else (bench::floor).
    pub fn floor() -> Result<World> {
        let lab = lab("npfloor")?;
        let ebpf = super::floor::build(&lab).context("building the layout floor")?;
        Ok(World {
            datapath: Datapath::Floor,
            lab,
            b: super::floor::B,
            b6: None,
            agent_args: Vec::new(),
            _floor: Some(ebpf),
        })
    }

    /// The kernel's macvlan in bridge mode, no netpath (bench::subif).
    pub fn macvlan() -> Result<World> {
        let lab = lab("npbmv")?;
        super::subif::build_macvlan(&lab).context("building the macvlan world")?;
        Ok(World {
            datapath: Datapath::Macvlan,
            lab,
            b: super::subif::B,
            b6: None,
            agent_args: Vec::new(),
            _floor: None,
        })
    }

    /// netpath's `--mode macvlan` on macvlan's layout and addresses (bench::subif). No
    /// port is published: that mode publishes none.
    pub fn netpath_macvlan() -> Result<World> {
        let args = ["--mode", "macvlan", "--pod-cidr", super::subif::POD_CIDR];
        Self::netpath_subif("npbnmv", Datapath::NetpathMacvlan, &args)
    }

    /// netpath's `--mode ipvlan` (L2) on ipvlan's layout and addresses (bench::subif).
    pub fn netpath_ipvlan() -> Result<World> {
        let args = ["--mode", "ipvlan", "--ipvlan-mode", "l2", "--pod-cidr", super::subif::POD_CIDR];
        Self::netpath_subif(super::subif::NETPATH_IPVLAN_PREFIX, Datapath::NetpathIpvlan, &args)
    }

    fn netpath_subif(prefix: &str, datapath: Datapath, args: &[&str]) -> Result<World> {
        let mut lab = lab(prefix)?;
        lab.try_start_agent(args).map_err(|e| anyhow!("netpath agent {}: {e}", args.join(" ")))?;
        lab.add_endpoint("a", 0);
        let b = lab.add_endpoint("b", 1);
        let agent_args = args.iter().map(|a| a.to_string()).collect();
        Ok(World { datapath, lab, b, b6: None, agent_args, _floor: None })
    }

    /// The kernel's ipvlan in L2 or L3 mode, no netpath (bench::subif).
    pub fn ipvlan(mode: super::subif::IpvlanMode) -> Result<World> {
        let lab = lab(mode.prefix())?;
        super::subif::build_ipvlan(&lab, mode)
            .with_context(|| format!("building the {} world", mode.name()))?;
        Ok(World {
            datapath: mode.datapath(),
            lab,
            b: super::subif::B,
            b6: None,
            agent_args: Vec::new(),
            _floor: None,
        })
    }

    /// The paths this datapath has.
    pub fn paths(&self) -> Vec<PathKind> {
        match self.datapath {
            Datapath::Limit => vec![PathKind::C2c, PathKind::C2c6, PathKind::Loopback],
            Datapath::Floor => vec![PathKind::C2c],
            Datapath::NetpathClsact => vec![PathKind::C2c, PathKind::C2c6],
            // On the uplink's network: no NAT, nothing published; the container-to-outside
            // path reaches the outside host directly.
            Datapath::Macvlan
            | Datapath::NetpathMacvlan
            | Datapath::Ipvlan
            | Datapath::IpvlanL3
            | Datapath::NetpathIpvlan => vec![PathKind::C2c, PathKind::Snat],
            Datapath::Netpath | Datapath::Iptables => {
                vec![
                    PathKind::C2c,
                    PathKind::C2c6,
                    PathKind::Snat,
                    PathKind::Snat6,
                    PathKind::Dnat,
                    PathKind::Dnat6,
                ]
            }
            // XDP sits on the uplink: only the NAT paths go through it (IPv4's: it
            // translates no IPv6).
            Datapath::NetpathXdp => vec![PathKind::Snat, PathKind::Dnat],
        }
    }

    pub fn endpoints(&self, path: PathKind) -> Endpoints<'_> {
        let c = &self.lab.containers;
        let svc = |ip| SocketAddr::V4(SocketAddrV4::new(ip, SERVICE_PORT));
        match path {
            PathKind::C2c => {
                Endpoints { server: &c[1], listen: svc(self.b), client: &c[0], target: svc(self.b) }
            }
            PathKind::C2c6 => {
                let b6 = SocketAddr::new(self.b6.expect("a world with IPv6").into(), SERVICE_PORT);
                Endpoints { server: &c[1], listen: b6, client: &c[0], target: b6 }
            }
            PathKind::Snat => Endpoints {
                server: &self.lab.outside,
                listen: svc(OUTSIDE_IP),
                client: &c[0],
                target: svc(OUTSIDE_IP),
            },
            PathKind::Snat6 => {
                let outside = SocketAddr::new(OUTSIDE_IP6.into(), SERVICE_PORT);
                Endpoints { server: &self.lab.outside, listen: outside, client: &c[0], target: outside }
            }
            PathKind::Dnat => Endpoints {
                server: &c[1],
                listen: svc(self.b),
                client: &self.lab.outside,
                target: SocketAddr::V4(SocketAddrV4::new(NODE_UPLINK_IP, HOST_PORT)),
            },
            PathKind::Dnat6 => Endpoints {
                server: &c[1],
                listen: SocketAddr::new(self.b6.expect("a world with IPv6").into(), SERVICE_PORT),
                client: &self.lab.outside,
                target: SocketAddr::new(NODE_UPLINK_IP6.into(), HOST_PORT),
            },
            PathKind::Loopback => {
                let lo = svc("127.0.0.1".parse().expect("loopback"));
                Endpoints { server: &c[0], listen: lo, client: &c[0], target: lo }
            }
        }
    }

    /// The datapath's own account of the last run (netpath worlds): `netpath stats`.
    pub fn print_counters(&self) {
        if self.datapath.is_netpath() {
            print!("{}", self.lab.netpath_ok(&["stats"]));
        }
    }

    /// Clears connection tracking so one test's leftovers do not load the next.
    pub fn flush_conntrack(&self) {
        if self.datapath.is_netpath() {
            let _ = crate::bench::ct::flush(&self.lab.bpffs_dir);
        } else if self.datapath == Datapath::Iptables {
            let _ = self.lab.node.exec(&["conntrack", "-F"]);
        }
    }
}
