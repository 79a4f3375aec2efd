//! The command line as clap sees it: every verb, flag and value parser. The library's
//! own types stay free of clap; this module turns arguments into them.
use std::{net::Ipv4Addr, path::PathBuf};

use clap::{builder::PossibleValue, Parser, Subcommand, ValueEnum};
use ipnet::{Ipv4Net, Ipv6Net};

use crate::{
    agent::CtConfig,
    cluster::{StoreUrl, Tunnel},
    datapath::{AttachMode, EndpointAttach},
    paths::Paths,
    state::{parse_mac, Device, IpvlanMode, MacvlanMode, Mode, Proto},
};

/// Default pod CIDR: clear of Docker's 172.17.0.0/16 and Podman's 10.88.0.0/16.
pub const DEFAULT_POD_CIDR: &str = "10.77.0.0/24";

#[derive(Debug, Parser)]
#[command(name = "netpath", version, about = "Container networking on an eBPF datapath")]
pub struct Cli {
    #[command(flatten)]
    pub paths: PathArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node agent: set the node up, load the datapath, serve the CLI.
    Agent(Box<AgentArgs>),
    /// Publish container ports on the node (DNAT).
    #[command(subcommand)]
    Port(PortCommand),
    /// Connection tracking.
    #[command(subcommand)]
    Ct(CtCommand),
    /// Live per-packet events from the datapath: hop, tuple, decision, drop reason.
    Trace(super::trace::TraceArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Man,
    /// Decoded dumps of netpath's pinned maps.
    #[command(subcommand)]
    Map(MapCommand),
    /// Masquerade allocations: which container flow holds which node port.
    #[command(subcommand)]
    Nat(NatCommand),
    /// Check the node: pins, agent, programs, endpoints, forwarding, pod CIDR, conntrack.
    /// Run it in the node's network namespace. Exits non-zero when anything is wrong.
    Doctor {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Attach, detach and list containers.
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// Compare the state directory with the kernel (links, addresses, routes, map
    /// entries, attachments) and repair the drift: re-create what is missing, remove
    /// what netpath owns but no longer wants. Exits non-zero when a repair failed or,
    /// with --dry-run, when there is drift.
    Reconcile {
        /// Only report the drift; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Make the node's endpoints and published ports exactly what FILE declares (TOML or
    /// JSON, as `netpath export` prints it): prints the difference and applies it, all
    /// or nothing. Endpoints a runtime added (CNI) are left alone.
    Apply {
        /// The file (`-` for standard input).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: std::path::PathBuf,
        /// Only print the difference; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Print the node's endpoints and published ports as `netpath apply -f` takes them
    /// (from the state directory; works without the agent).
    Export {
        #[arg(short, long, value_enum, default_value_t = FileFormat::Toml)]
        output: FileFormat,
    },
    /// The cluster's nodes (cluster mode: an agent started with --store).
    #[command(subcommand)]
    Node(NodeCommand),
    /// Container runtimes: netpath as their CNI plugin.
    #[command(subcommand)]
    Cni(CniCommand),
    /// Datapath counters per endpoint and per reason, read from the pinned maps.
    Stats {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Give a container namespace its network: veth, eth0, address, routes, datapath.
    Add {
        name: String,
        /// The container's network namespace file (e.g. /run/netns/NAME).
        #[arg(long, required_unless_present = "pid", conflicts_with = "pid")]
        netns: Option<PathBuf>,
        /// A process in the container (as `docker inspect -f {{.State.Pid}}` gives it).
        #[arg(long)]
        pid: Option<u32>,
        /// Address inside the pod CIDR; allocated when omitted.
        #[arg(long)]
        ip: Option<Ipv4Addr>,
        /// IPv6 address inside the agent's --pod-cidr6; allocated when omitted.
        #[arg(long)]
        ip6: Option<std::net::Ipv6Addr>,
        /// MAC of the container's interface; derived from the address when omitted.
        #[arg(long, value_parser = parse_mac_arg)]
        mac: Option<[u8; 6]>,
        #[arg(long)]
        mtu: Option<u32>,
        /// Interface name inside the container.
        #[arg(long, default_value = "eth0", value_parser = parse_ifname)]
        ifname: String,
    },
    /// Remove a container's network; succeeds when there is none.
    Del {
        name: String,
        /// Return once the endpoint is out of the state and the datapath (its container
        /// cut off); the veth pair is deleted in the background, and a later change of
        /// the same endpoint waits for that.
        #[arg(long)]
        no_wait: bool,
    },
    /// List endpoints (from the state directory; works without the agent).
    List {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum CniCommand {
    /// Print a CNI network configuration list for the running agent (its --run-dir),
    /// for a runtime's CNI configuration directory.
    Conflist {
        /// The network's name, as runtimes refer to it (`podman run --network NAME`).
        #[arg(long, default_value = "netpath", value_parser = parse_network_name)]
        name: String,
    },
}

fn parse_network_name(s: &str) -> Result<String, String> {
    let ok =
        !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a network name: use 1-64 characters from A-Z a-z 0-9 - _ ."))
    }
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Every node the cluster records: name, underlay address, pod subnet, ready, tunnel.
    List {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Forget a node for good and free its subnet (refused while its agent runs).
    Del {
        #[arg(value_parser = parse_node_name)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PortCommand {
    /// Publish HOST_PORT on the node for ENDPOINT[:PORT] (PORT defaults to HOST_PORT), as
    /// docker's -p: `8080 web:80`, a range `8000-8010 web:80-90`, `8000-8010 web:80` for
    /// the first free host port of the range, or `web:80` alone for a free host port from
    /// 30000-32767 (the chosen port is printed). Several mappings in a row (`8080 web:80
    /// 8443 web:443`) go in one call. All or none are published.
    Add {
        #[arg(long, value_enum, default_value_t = Proto::Tcp)]
        proto: Proto,
        /// [HOST_PORT[-END]] ENDPOINT[:PORT[-END]] ...
        #[arg(num_args = 1.., required = true, value_name = "PORTS")]
        ports: Vec<String>,
        /// Publish on this address only, on its family only (default: every address of
        /// the node, IPv4 and, when the endpoint has one, IPv6, and loopback for node
        /// processes). IPv4: any address of the uplink, or a loopback address (127.0.0.1)
        /// for the node's own processes only. IPv6: the node's IPv6 address, :: for
        /// every IPv6 address of the node, or ::1 for the node's own processes only.
        #[arg(long)]
        host_ip: Option<std::net::IpAddr>,
    },
    /// Unpublish ports or ranges (8000-8010), all in one call; succeeds for those that
    /// are not published.
    Del {
        #[arg(long, value_enum, default_value_t = Proto::Tcp)]
        proto: Proto,
        #[arg(value_parser = parse_host_ports, value_name = "HOST_PORT[-END]", num_args = 1.., required = true)]
        host_port: Vec<std::ops::RangeInclusive<u16>>,
        /// The address the ports were published on (as `port add --host-ip`).
        #[arg(long)]
        host_ip: Option<std::net::IpAddr>,
    },
    /// List published ports (from the state directory; works without the agent).
    List {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum MapCommand {
    /// netpath's maps, their kind, size and pin.
    List {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Every entry of one map, decoded (addresses, ports, protocols, states, ages).
    Dump {
        /// A pinned map's name, as `map list` shows them (ENDPOINTS, CONNTRACK6, NODE_CONFIG6, ...).
        name: String,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum NatCommand {
    /// Masqueraded flows: container address and port -> node address and port.
    List {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum CtCommand {
    /// Conntrack entries, read from the pinned map.
    List {
        /// Only entries with this address (IPv4 or IPv6) as source or destination.
        #[arg(long)]
        host: Option<std::net::IpAddr>,
        /// Only entries with this port as source or destination.
        #[arg(long)]
        port: Option<u16>,
        /// Only this protocol (tcp, udp, icmp).
        #[arg(long, value_parser = ["tcp", "udp", "icmp"])]
        proto: Option<String>,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// The formats of `apply`'s and `export`'s files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FileFormat {
    Toml,
    Json,
}

/// Ranges no pod CIDR may touch: hosts cannot hold such addresses, or the kernel and
/// every other host treat them specially.
const SPECIAL_RANGES: [(&str, &str); 5] = [
    ("0.0.0.0/8", "\"this network\" (RFC 791)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved, with the broadcast address"),
];

fn parse_pod_cidr(s: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = s.parse().map_err(|_| format!("{s:?} is not an IPv4 CIDR like 10.77.0.0/24"))?;
    if net.prefix_len() > 30 {
        return Err(format!("{s} leaves no room for a gateway and a container: use /30 or larger"));
    }
    let net = net.trunc();
    for (range, what) in SPECIAL_RANGES {
        let range: Ipv4Net = range.parse().expect("a valid CIDR");
        if range.contains(&net.network()) || net.contains(&range.network()) {
            return Err(format!(
                "{s} overlaps {range}, the {what} range: containers cannot use it; choose a private range such as 10.77.0.0/24"
            ));
        }
    }
    Ok(net)
}

/// IPv6 ranges no pod network may overlap, and why.
const SPECIAL_RANGES6: [(&str, &str); 5] = [
    ("::/8", "reserved (unspecified, loopback, IPv4-mapped)"),
    ("fe80::/10", "link-local (the containers' gateway is fe80::1)"),
    ("ff00::/8", "multicast"),
    ("2001:db8::/32", "documentation"),
    ("64:ff9b::/96", "NAT64"),
];

fn parse_pod_cidr6(s: &str) -> Result<Ipv6Net, String> {
    let net: Ipv6Net = s.parse().map_err(|_| format!("{s:?} is not an IPv6 CIDR like fd00:77::/64"))?;
    if !(48..=120).contains(&net.prefix_len()) {
        return Err(format!("{s}: use a prefix from /48 to /120 (a /64 is usual)"));
    }
    let net = net.trunc();
    for (range, what) in SPECIAL_RANGES6 {
        let range: Ipv6Net = range.parse().expect("a valid CIDR");
        if range.contains(&net.network()) || net.contains(&range.network()) {
            return Err(format!(
                "{s} overlaps {range}, the {what} range: containers cannot use it; choose a unique local range such as fd00:77::/64"
            ));
        }
    }
    Ok(net)
}

/// `--cluster-cidr6`: the pods' IPv6 network of the whole cluster, which each node's
/// `--node-cidr-prefix6` subnet comes from; the pod CIDR's reserved ranges apply.
fn parse_cluster_cidr6(s: &str) -> Result<Ipv6Net, String> {
    let net: Ipv6Net = s.parse().map_err(|_| format!("{s:?} is not an IPv6 CIDR like fd00:244::/48"))?;
    if !(16..=112).contains(&net.prefix_len()) {
        return Err(format!("{s}: use a prefix from /16 to /112 (a /48 with a /64 per node is usual)"));
    }
    let net = net.trunc();
    for (range, what) in SPECIAL_RANGES6 {
        let range: Ipv6Net = range.parse().expect("a valid CIDR");
        if range.contains(&net.network()) || net.contains(&range.network()) {
            return Err(format!(
                "{s} overlaps {range}, the {what} range: pods cannot use it; choose a unique local range such as fd00:244::/48"
            ));
        }
    }
    Ok(net)
}

/// An interface name the kernel takes: 1-15 printable characters, no '/', ':' or space.
fn parse_ifname(s: &str) -> Result<String, String> {
    let ok =
        !s.is_empty() && s.len() <= 15 && s.chars().all(|c| c.is_ascii_graphic() && c != '/' && c != ':');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not an interface name: use 1-15 printable characters without '/', ':' or spaces"
        ))
    }
}

fn parse_port_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let bad = || format!("{s:?} is not a port range like 61000-65535");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u16, u16) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok(a..=b)
}

/// `--metrics`: an address, or "off".
#[derive(Clone, Debug)]
pub struct MetricsAddr(pub Option<std::net::SocketAddr>);

fn parse_metrics_addr(s: &str) -> Result<MetricsAddr, String> {
    if s == "off" {
        return Ok(MetricsAddr(None));
    }
    s.parse()
        .map(|a| MetricsAddr(Some(a)))
        .map_err(|_| format!("{s:?} is not an address:port like 127.0.0.1:9464 (or \"off\")"))
}

/// `8080` or `8000-8010`.
pub fn parse_host_ports(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    parse_ports(s)
        .map_err(|()| format!("host port {s:?} is not a port: use 1-65535 or a range such as 8000-8010"))
}

fn parse_ports(s: &str) -> Result<std::ops::RangeInclusive<u16>, ()> {
    let one = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0).ok_or(());
    let range = match s.split_once('-') {
        None => one(s).map(|p| p..=p)?,
        Some((a, b)) => one(a)?..=one(b)?,
    };
    if range.is_empty() {
        return Err(());
    }
    Ok(range)
}

/// One mapping of `port add`: host port or range (None: a free one), endpoint, and
/// container port or range (None: the host's).
pub type Publish = (Option<std::ops::RangeInclusive<u16>>, String, Option<std::ops::RangeInclusive<u16>>);

/// `port add`'s positionals, one or more mappings `[HOST_PORT[-END]] ENDPOINT[:PORT[-END]]`
/// in a row: a port (or range) followed by another word is that mapping's host part.
pub fn parse_publish(ports: &[String]) -> Result<Vec<Publish>, String> {
    let mut out = Vec::new();
    let mut words = ports.iter().peekable();
    while let Some(word) = words.next() {
        let is_port = !word.is_empty() && word.chars().all(|c| c.is_ascii_digit() || c == '-');
        let host = match (is_port, words.peek()) {
            (true, Some(_)) => Some(parse_host_ports(word)?),
            (true, None) => {
                return Err(format!(
                    "{word:?} is a host port without an endpoint; give [HOST_PORT[-END]] ENDPOINT[:PORT[-END]], e.g. {word} web:80"
                ))
            }
            (false, _) => None,
        };
        let target = if host.is_some() { words.next().unwrap_or(word) } else { word };
        let (name, container) = parse_target(target)?;
        out.push((host, name, container));
    }
    if out.is_empty() {
        return Err("give [HOST_PORT[-END]] ENDPOINT[:PORT[-END]], e.g. 8080 web:80".into());
    }
    Ok(out)
}

fn parse_target(s: &str) -> Result<(String, Option<std::ops::RangeInclusive<u16>>), String> {
    let (name, port) = match s.split_once(':') {
        None => (s, None),
        Some((name, port)) => match parse_ports(port) {
            Ok(p) => (name, Some(p)),
            _ => return Err(format!("{port:?} in {s:?} is not a port (1-65535) or a range such as 80-90")),
        },
    };
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !name_ok {
        return Err(format!(
            "{name:?} in {s:?} is not an endpoint name: give ENDPOINT or ENDPOINT:PORT (see `netpath endpoint list`)"
        ));
    }
    Ok((name.to_string(), port))
}

/// A node name: what etcd keys and `netpath node del` take, 1-63 characters.
fn parse_node_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !s.starts_with('.');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a node name: use 1-63 characters from A-Z a-z 0-9 - _ . (not starting with '.')"
        ))
    }
}

fn parse_mac_arg(s: &str) -> Result<[u8; 6], String> {
    parse_mac(s).ok_or_else(|| format!("{s:?} is not a MAC address like 0a:58:0a:4d:00:02"))
}

/// `netpath agent`'s settings (also the keys of its config file).
#[derive(Debug, clap::Args)]
// What --masquerade6 needs: an IPv6 pod CIDR of the node's own or the cluster's.
#[command(group = clap::ArgGroup::new("ipv6").args(["pod_cidr6", "cluster_cidr6"]).multiple(true))]
pub struct AgentArgs {
    /// Read settings from this TOML file: keys are the long flag names
    /// (pod-cidr = "10.77.0.0/24", xdp = true, ...). Flags and environment win.
    #[arg(long, env = "NETPATH_CONFIG")]
    pub config: Option<PathBuf>,
    /// The node's pod CIDR: containers get addresses from it, its first address is
    /// their gateway. In cluster mode (--store) the cluster gives it instead.
    #[arg(long, env = "NETPATH_POD_CIDR", default_value = DEFAULT_POD_CIDR, value_parser = parse_pod_cidr,
          conflicts_with = "store")]
    pub pod_cidr: Ipv4Net,
    /// The node's IPv6 pod CIDR (a ULA /64 such as fd00:77::/64): every container also
    /// gets an IPv6 address from it, with fe80::1 as its gateway (answered by the
    /// datapath). Off when not given. Routed mode. In cluster mode --cluster-cidr6 gives it.
    #[arg(long, env = "NETPATH_POD_CIDR6", value_parser = parse_pod_cidr6, conflicts_with = "store")]
    pub pod_cidr6: Option<Ipv6Net>,
    /// IPv6 to the outside: true masquerades it to the uplink's global IPv6 address
    /// (NAT66, with IPv4's connection tracking); false forwards it with the containers'
    /// own addresses (a routed prefix: the network must route --pod-cidr6 to this node).
    #[arg(long, env = "NETPATH_MASQUERADE6", default_value_t = true, action = clap::ArgAction::Set,
          requires = "ipv6")]
    pub masquerade6: bool,
    /// IPv4 to the outside: true masquerades it to the uplink's IPv4 address; false
    /// forwards it with the containers' own addresses (a routed prefix: the network must
    /// route the pod CIDR to this node). Published ports work either way.
    #[arg(long, env = "NETPATH_MASQUERADE", default_value_t = true, action = clap::ArgAction::Set)]
    pub masquerade: bool,
    /// routed: no bridge, the datapath is the gateway; bridge: docker0's layout;
    /// macvlan / ipvlan: each container's interface a sub-interface of --parent, on its
    /// network with an address of its own (--pod-cidr: a free range of that network).
    #[arg(long, env = "NETPATH_MODE", value_enum, default_value_t = Mode::Routed)]
    pub mode: Mode,
    /// macvlan's mode: bridge (containers on one parent reach each other directly).
    #[arg(long, env = "NETPATH_MACVLAN_MODE", value_enum, default_value_t = MacvlanMode::Bridge)]
    pub macvlan_mode: MacvlanMode,
    /// ipvlan's mode: l2 (switched, ARP on the parent's network) or l3 (routed by IP,
    /// no ARP: the network must route --pod-cidr to this node).
    #[arg(long, env = "NETPATH_IPVLAN_MODE", value_enum, default_value_t = IpvlanMode::L2)]
    pub ipvlan_mode: IpvlanMode,
    /// The parent device of macvlan/ipvlan mode's interfaces; default: the uplink.
    #[arg(long, env = "NETPATH_PARENT", value_parser = parse_ifname)]
    pub parent: Option<String>,
    /// The device pair that connects each new container: veth, or netkit (Linux 6.7+,
    /// routed mode only; from_container runs as a netkit link on the host side).
    #[arg(long, env = "NETPATH_DEVICE", value_enum, default_value_t = Device::Veth)]
    pub device: Device,
    /// Name of the bridge in bridge mode.
    #[arg(long, env = "NETPATH_BRIDGE", default_value = "npbr0", value_parser = parse_ifname)]
    pub bridge: String,
    /// The node's uplink interface; default: the interface of the default route.
    #[arg(long, env = "NETPATH_UPLINK", value_parser = parse_ifname)]
    pub uplink: Option<String>,
    /// Source ports for masquerade, outside the node's ephemeral range.
    #[arg(long, env = "NETPATH_NAT_PORTS", default_value = "61000-65535", value_parser = parse_port_range)]
    pub nat_ports: std::ops::RangeInclusive<u16>,
    /// cgroup v2 directory whose processes reach published ports via the node address,
    /// 127.0.0.1 or ::1 (socket hooks; act only in the agent's network namespace).
    /// Default: the cgroup v2 root.
    #[arg(long, env = "NETPATH_CGROUP")]
    pub cgroup: Option<PathBuf>,
    /// Translate published-port traffic and replies in XDP on the uplink, before the
    /// kernel builds an skb. On a veth uplink this turns off GSO on its peer.
    #[arg(long, env = "NETPATH_XDP")]
    pub xdp: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics ("off" to disable).
    #[arg(long, env = "NETPATH_METRICS", default_value = "127.0.0.1:9464", value_parser = parse_metrics_addr)]
    pub metrics: MetricsAddr,
    /// How to attach tc programs: tcx (bpf links, kernel >= 6.6) or clsact (netlink,
    /// any kernel). Default: tcx where the kernel has it.
    #[arg(long, env = "NETPATH_TC_ATTACH", value_enum)]
    pub tc_attach: Option<AttachMode>,
    /// How each new veth endpoint's from_container is attached: clsact (a cls_bpf
    /// filter: two netlink messages, the fast endpoint add), tcx (a TCX link, Linux
    /// 6.6+: the cheaper hook per packet, but each link made waits out an RCU grace
    /// period under the RTNL lock, ~13 ms per endpoint add), or auto: a filter at the
    /// add, moved to a TCX link once the agent has been idle a moment (on kernels with
    /// TCX; elsewhere auto is clsact). Endpoints keep the attachment they have when the
    /// agent restarts.
    #[arg(long, env = "NETPATH_ENDPOINT_ATTACH", value_enum, default_value_t = EndpointAttach::Auto)]
    pub endpoint_attach: EndpointAttach,
    /// Count runs and run time of netpath's programs (metrics program_runs and
    /// program_run_seconds). The kernel switch is machine-wide while the agent runs
    /// (BPF_ENABLE_STATS: every BPF program on the node pays about 20 ns per run).
    #[arg(long, env = "NETPATH_BPF_STATS")]
    pub bpf_stats: bool,
    #[command(flatten)]
    pub conntrack: CtArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Cluster mode: the node registers in etcd and gets its pod subnet from the cluster.
#[derive(Clone, Debug, clap::Args)]
pub struct ClusterArgs {
    /// Join the cluster kept in these etcd members: etcd://HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "NETPATH_STORE", requires_all = ["node_name", "cluster_cidr"])]
    pub store: Option<StoreUrl>,
    /// This node's name in the cluster (unique; a restarted agent keeps its subnet by it).
    #[arg(long, env = "NETPATH_NODE_NAME", requires = "store", value_parser = parse_node_name)]
    pub node_name: Option<String>,
    /// The pod network of the whole cluster; each node gets a subnet of it.
    #[arg(long, env = "NETPATH_CLUSTER_CIDR", requires = "store", value_parser = parse_pod_cidr)]
    pub cluster_cidr: Option<Ipv4Net>,
    /// Prefix length of each node's subnet.
    #[arg(long, env = "NETPATH_NODE_CIDR_PREFIX", default_value_t = 24,
          value_parser = clap::value_parser!(u8).range(8..=30))]
    pub node_cidr_prefix: u8,
    /// The IPv6 pod network of the whole cluster (a ULA such as fd00:244::/48): each node
    /// also gets an IPv6 subnet of it, its pods an IPv6 address, and pods reach pods on
    /// other nodes over IPv6 without NAT, as over IPv4. Off when not given.
    #[arg(long, env = "NETPATH_CLUSTER_CIDR6", requires = "store", value_parser = parse_cluster_cidr6)]
    pub cluster_cidr6: Option<Ipv6Net>,
    /// Prefix length of each node's IPv6 subnet (of --cluster-cidr6).
    #[arg(long, env = "NETPATH_NODE_CIDR_PREFIX6", default_value_t = 64,
          value_parser = clap::value_parser!(u8).range(48..=120))]
    pub node_cidr_prefix6: u8,
    /// How pods reach pods on other nodes: vxlan (any underlay) or none (native
    /// routing, nodes on one segment).
    #[arg(long, env = "NETPATH_TUNNEL", value_enum, default_value_t = Tunnel::Vxlan)]
    pub tunnel: Tunnel,
    /// Seconds a node stays ready after its agent last reached the store.
    #[arg(long, env = "NETPATH_NODE_LEASE", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub node_lease: u64,
    /// How long a node whose agent is gone keeps its record and subnet before it ages
    /// out of the cluster: 90s, 10m, 24h or plain seconds; longer than --node-lease.
    #[arg(long, env = "NETPATH_NODE_GC_AFTER", default_value = "24h", value_parser = gc_after)]
    pub node_gc_after: u64,
}

/// Where netpath keeps things. Every location is configurable so tests and the demo can
/// run isolated instances side by side without touching the defaults.
#[derive(Clone, Debug, clap::Args)]
pub struct PathArgs {
    /// Directory in bpffs where netpath pins its maps (created if missing).
    #[arg(long, env = "NETPATH_BPFFS_DIR", default_value = "/sys/fs/bpf/netpath", global = true)]
    pub bpffs_dir: PathBuf,
    /// Directory for the agent's Unix socket.
    #[arg(long, env = "NETPATH_RUN_DIR", default_value = "/run/netpath", global = true)]
    pub run_dir: PathBuf,
    /// Directory for desired state (endpoints, address allocations).
    #[arg(long, env = "NETPATH_STATE_DIR", default_value = "/var/lib/netpath", global = true)]
    pub state_dir: PathBuf,
}

impl From<PathArgs> for Paths {
    fn from(a: PathArgs) -> Self {
        Paths { bpffs_dir: a.bpffs_dir, run_dir: a.run_dir, state_dir: a.state_dir }
    }
}

/// Connection tracking: table size, idle timeouts per protocol and state, collection.
#[derive(Clone, Debug, clap::Args)]
pub struct CtArgs {
    /// Size of the conntrack table (two entries per flow); when full, the least recently
    /// used entries are evicted. At least 256 per possible CPU. A new size given to a
    /// restarted agent migrates the pinned table: a new one of that size gets every
    /// tracked flow.
    #[arg(long = "ct-max-entries", env = "NETPATH_CT_MAX_ENTRIES", default_value_t = netpath_common::maps::CONNTRACK_ENTRIES,
          value_parser = ct_max_entries)]
    pub max_entries: u32,
    /// Established TCP connections.
    #[arg(long = "ct-tcp-timeout", env = "NETPATH_CT_TCP_TIMEOUT", default_value_t = 21600, value_parser = timeout)]
    pub tcp_established: u64,
    /// TCP connections not yet established (SYN seen).
    #[arg(long = "ct-tcp-syn-timeout", default_value_t = 60, value_parser = timeout)]
    pub tcp_syn: u64,
    /// TCP connections closing (FIN or RST seen).
    #[arg(long = "ct-tcp-close-timeout", default_value_t = 10, value_parser = timeout)]
    pub tcp_closing: u64,
    #[arg(long = "ct-udp-timeout", env = "NETPATH_CT_UDP_TIMEOUT", default_value_t = 60, value_parser = timeout)]
    pub udp: u64,
    #[arg(long = "ct-icmp-timeout", default_value_t = 30, value_parser = timeout)]
    pub icmp: u64,
    /// How often the collector walks the table.
    #[arg(long = "ct-gc-interval", env = "NETPATH_CT_GC_INTERVAL", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub gc_interval: u64,
}

impl From<CtArgs> for CtConfig {
    fn from(a: CtArgs) -> Self {
        CtConfig {
            max_entries: a.max_entries,
            tcp_established: a.tcp_established,
            tcp_syn: a.tcp_syn,
            tcp_closing: a.tcp_closing,
            udp: a.udp,
            icmp: a.icmp,
            gc_interval: a.gc_interval,
        }
    }
}

/// A conntrack timeout in seconds: at least one, at most a year (a longer one would
/// keep a dead flow's entry, and its NAT port, for good).
/// A conntrack size: from 256 per possible CPU (below it, the kernel's LRU evicts the
/// entries of flows being set up, see `maps::ct_min_entries`) to 2^24.
fn ct_max_entries(s: &str) -> Result<u32, String> {
    const MAX: u32 = 16_777_216;
    let min = crate::datapath::layout::ct_min_entries();
    match s.parse::<u32>() {
        Ok(n) if (min..=MAX).contains(&n) => Ok(n),
        Ok(n) if n < min => Err(format!(
            "{n} is below the minimum of {min} entries for this machine's {} possible CPUs (256 per CPU)",
            min / netpath_common::maps::CT_ENTRIES_PER_CPU
        )),
        _ => Err(format!("{s:?} is not a number of entries from {min} to {MAX}")),
    }
}

/// The longest lease etcd grants (its MaxLeaseTTL): the record's lease carries it.
const MAX_GC_AFTER: u64 = 9_000_000_000;

/// `--node-gc-after`: seconds, from `90s`, `10m`, `24h`, `7d` or plain seconds.
fn gc_after(s: &str) -> Result<u64, String> {
    let bad =
        || format!("{s:?} is not a duration: give seconds, or a number with s, m, h or d (90s, 10m, 24h)");
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let secs = digits.parse::<u64>().ok().and_then(|n| n.checked_mul(scale)).ok_or_else(bad)?;
    match secs {
        0 => Err(format!(
            "{s:?} is no time at all: a node would age out at once; give a duration longer than --node-lease"
        )),
        n if n > MAX_GC_AFTER => Err(format!("{s:?} is longer than etcd's longest lease ({MAX_GC_AFTER}s)")),
        n => Ok(n),
    }
}

fn timeout(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if (1..=31_536_000).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a timeout in seconds from 1 to 31536000 (a year)")),
    }
}

/// The library's enums as clap values, spelled as their Display.
macro_rules! value_enum {
    ($ty:ty, [$($variant:expr),+]) => {
        impl ValueEnum for $ty {
            fn value_variants<'a>() -> &'a [Self] {
                &[$($variant),+]
            }
            fn to_possible_value(&self) -> Option<PossibleValue> {
                Some(PossibleValue::new(match self {
                    $(v if *v == $variant => v.name(),)+
                    _ => unreachable!("every variant is listed"),
                }))
            }
        }
    };
}

value_enum!(Mode, [Mode::Routed, Mode::Bridge, Mode::Macvlan, Mode::Ipvlan]);
value_enum!(MacvlanMode, [MacvlanMode::Bridge]);
value_enum!(IpvlanMode, [IpvlanMode::L2, IpvlanMode::L3]);
value_enum!(Device, [Device::Veth, Device::Netkit]);
value_enum!(Proto, [Proto::Tcp, Proto::Udp]);
value_enum!(AttachMode, [AttachMode::Tcx, AttachMode::Clsact]);
value_enum!(EndpointAttach, [EndpointAttach::Auto, EndpointAttach::Clsact, EndpointAttach::Tcx]);
value_enum!(Tunnel, [Tunnel::Vxlan, Tunnel::None]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_after_takes_units_and_plain_seconds_and_names_bad_values() {
        assert_eq!(gc_after("90s"), Ok(90));
        assert_eq!(gc_after("10m"), Ok(600));
        assert_eq!(gc_after("24h"), Ok(86_400));
        assert_eq!(gc_after("2d"), Ok(172_800));
        assert_eq!(gc_after("45"), Ok(45));
        for bad in ["", "h", "10x", "1.5h", "-3", "10 m", "99999999999999999999"] {
            let err = gc_after(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
        assert!(gc_after("0s").unwrap_err().contains("no time"));
        assert!(gc_after("9000000001").unwrap_err().contains("longest lease"));
    }
}
