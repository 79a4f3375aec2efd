//! Command-line interface: clap definitions and what each command does.
mod client;
pub mod config;
mod doctor;
mod maps;
mod output;
mod trace;

use std::{net::Ipv4Addr, path::PathBuf};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use ipnet::Ipv4Net;

use crate::{
    agent::{self, Agent, AgentConfig, CtConfig},
    api::{EndpointSpec, PortSpec, Reply, Request},
    datapath::Inspector,
    paths::Paths,
    state::{parse_mac, EndpointRecord, Mode, PortRecord, Proto, Store},
};

/// Default pod CIDR: clear of Docker's 172.17.0.0/16 and Podman's 10.88.0.0/16.
pub const DEFAULT_POD_CIDR: &str = "10.77.0.0/24";

#[derive(Debug, Parser)]
#[command(name = "netpath", version, about = "Container networking on an eBPF datapath")]
pub struct Cli {
    #[command(flatten)]
    pub paths: Paths,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node agent: set the node up, load the datapath, serve the CLI.
    Agent {
        /// Read settings from this TOML file: keys are the long flag names
        /// (pod-cidr = "10.77.0.0/24", xdp = true, ...). Flags and environment win.
        #[arg(long, env = "NETPATH_CONFIG")]
        config: Option<PathBuf>,
        /// The node's pod CIDR: containers get addresses from it, its first address is
        /// their gateway.
        #[arg(long, env = "NETPATH_POD_CIDR", default_value = DEFAULT_POD_CIDR, value_parser = parse_pod_cidr)]
        pod_cidr: Ipv4Net,
        /// routed: no bridge, the datapath is the gateway; bridge: docker0's layout.
        #[arg(long, env = "NETPATH_MODE", value_enum, default_value_t = Mode::Routed)]
        mode: Mode,
        /// Name of the bridge in bridge mode.
        #[arg(long, env = "NETPATH_BRIDGE", default_value = "npbr0", value_parser = parse_ifname)]
        bridge: String,
        /// The node's uplink interface; default: the interface of the default route.
        #[arg(long, env = "NETPATH_UPLINK", value_parser = parse_ifname)]
        uplink: Option<String>,
        /// Source ports for masquerade, outside the node's ephemeral range.
        #[arg(long, env = "NETPATH_NAT_PORTS", default_value = "61000-65535", value_parser = parse_port_range)]
        nat_ports: std::ops::RangeInclusive<u16>,
        /// cgroup v2 directory whose processes reach published ports via the node address
        /// or 127.0.0.1 (connect hook; acts only in the agent's network namespace).
        /// Default: the cgroup v2 root.
        #[arg(long, env = "NETPATH_CGROUP")]
        cgroup: Option<PathBuf>,
        /// Translate published-port traffic and replies in XDP on the uplink, before the
        /// kernel builds an skb. On a veth uplink this turns off GSO on its peer.
        #[arg(long, env = "NETPATH_XDP")]
        xdp: bool,
        /// Serve Prometheus metrics at http://ADDR/metrics ("off" to disable).
        #[arg(long, env = "NETPATH_METRICS", default_value = "127.0.0.1:9464", value_parser = parse_metrics_addr)]
        metrics: MetricsAddr,
        /// How to attach tc programs: tcx (bpf links, kernel >= 6.6) or clsact (netlink,
        /// any kernel). Default: tcx where the kernel has it.
        #[arg(long, env = "NETPATH_TC_ATTACH", value_enum)]
        tc_attach: Option<crate::datapath::AttachMode>,
        /// Count runs and run time of netpath's programs (metrics program_runs and
        /// program_run_seconds). The kernel switch is machine-wide while the agent runs
        /// (BPF_ENABLE_STATS: every BPF program on the node pays about 20 ns per run).
        #[arg(long, env = "NETPATH_BPF_STATS")]
        bpf_stats: bool,
        #[command(flatten)]
        conntrack: CtConfig,
    },
    /// Publish container ports on the node (DNAT).
    #[command(subcommand)]
    Port(PortCommand),
    /// Connection tracking.
    #[command(subcommand)]
    Ct(CtCommand),
    /// Live per-packet events from the datapath: hop, tuple, decision, drop reason.
    Trace(trace::TraceArgs),
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
    Del { name: String },
    /// List endpoints (from the state directory; works without the agent).
    List {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum PortCommand {
    /// Publish HOST_PORT on the node for CONTAINER[:PORT] (PORT defaults to HOST_PORT).
    Add {
        #[arg(long, value_enum, default_value_t = Proto::Tcp)]
        proto: Proto,
        #[arg(value_parser = clap::value_parser!(u16).range(1..))]
        host_port: u16,
        /// Endpoint name, optionally with the container port: web or web:80.
        #[arg(value_parser = parse_target)]
        target: (String, Option<u16>),
        /// Publish on this node address only (default: the node address).
        #[arg(long)]
        host_ip: Option<Ipv4Addr>,
    },
    /// Unpublish a port; succeeds when it is not published.
    Del {
        #[arg(long, value_enum, default_value_t = Proto::Tcp)]
        proto: Proto,
        #[arg(value_parser = clap::value_parser!(u16).range(1..))]
        host_port: u16,
        #[arg(long)]
        host_ip: Option<Ipv4Addr>,
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
        /// ENDPOINTS, ENDPOINT_STATS, REASON_STATS, CONNTRACK, PORT_MAPS or NODE_CONFIG.
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
        /// Only entries with this address as source or destination.
        #[arg(long)]
        host: Option<Ipv4Addr>,
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
pub struct MetricsAddr(Option<std::net::SocketAddr>);

fn parse_metrics_addr(s: &str) -> Result<MetricsAddr, String> {
    if s == "off" {
        return Ok(MetricsAddr(None));
    }
    s.parse()
        .map(|a| MetricsAddr(Some(a)))
        .map_err(|_| format!("{s:?} is not an address:port like 127.0.0.1:9464 (or \"off\")"))
}

fn parse_target(s: &str) -> Result<(String, Option<u16>), String> {
    let (name, port) = match s.split_once(':') {
        None => (s, None),
        Some((name, port)) => match port.parse::<u16>() {
            Ok(p) if p > 0 => (name, Some(p)),
            _ => return Err(format!("{port:?} in {s:?} is not a port (1-65535)")),
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

fn parse_mac_arg(s: &str) -> Result<[u8; 6], String> {
    parse_mac(s).ok_or_else(|| format!("{s:?} is not a MAC address like 0a:58:0a:4d:00:02"))
}

/// A clap error as one line: the message and its tips, without the usage block.
pub fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut parts = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if !line.is_empty() {
            parts.push(line.trim_start_matches("error: ").to_string());
        }
    }
    let mut out = parts.join(" ");
    if matches!(
        e.kind(),
        clap::error::ErrorKind::MissingRequiredArgument
            | clap::error::ErrorKind::MissingSubcommand
            | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        out.push_str("; see --help");
    }
    out
}

/// The subcommand's name as typed, for messages.
fn name_of(command: &Command) -> &'static str {
    match command {
        Command::Agent { .. } => "agent",
        Command::Port(_) => "port",
        Command::Ct(_) => "ct",
        Command::Trace(_) => "trace",
        Command::Completions { .. } => "completions",
        Command::Man => "man",
        Command::Map(_) => "map",
        Command::Nat(_) => "nat",
        Command::Doctor { .. } => "doctor",
        Command::Endpoint(_) => "endpoint",
        Command::Reconcile { .. } => "reconcile",
        Command::Stats { .. } => "stats",
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    // Everything but the help texts touches the node's networking or its root-only
    // socket, state and pins: say so once, rather than as a bare EACCES from deep inside.
    let help_only = matches!(cli.command, Command::Completions { .. } | Command::Man);
    if !help_only && !nix::unistd::geteuid().is_root() {
        bail!(
            "`netpath {}` needs root: the agent's socket, its state and the pinned maps are root-only; run it with sudo",
            name_of(&cli.command)
        );
    }
    let mut cli = cli;
    if !matches!(cli.command, Command::Agent { .. }) {
        // From a shell with a mount namespace of its own (ip netns exec), the pins are
        // in the host's bpffs, where the agent put them.
        cli.paths.bpffs_dir = crate::plumbing::bpffs::locate(&cli.paths.bpffs_dir);
    }
    match cli.command {
        Command::Agent {
            config: _,
            pod_cidr,
            mode,
            bridge,
            uplink,
            nat_ports,
            cgroup,
            xdp,
            metrics,
            tc_attach,
            bpf_stats,
            conntrack,
        } => run_agent(AgentConfig {
            paths: cli.paths,
            pod_cidr,
            mode,
            bridge_name: bridge,
            uplink,
            nat_ports,
            cgroup,
            xdp,
            metrics: metrics.0,
            tc_attach,
            bpf_stats,
            conntrack,
        }),
        Command::Port(cmd) => port(&cli.paths, cmd),
        Command::Trace(args) => trace::run(&cli.paths, args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "netpath",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man => {
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut std::io::stdout())?;
            Ok(())
        }
        Command::Map(cmd) => maps::run(&cli.paths, cmd),
        Command::Nat(NatCommand::List { output }) => {
            let rows: Vec<_> = Inspector::new(&cli.paths.bpffs_dir)
                .conntrack()?
                .into_iter()
                .filter(|r| !r.reply && r.rewrite.starts_with("snat"))
                .collect();
            output::conntrack(&rows, output);
            Ok(())
        }
        Command::Doctor { output } => {
            if doctor::run(&cli.paths, output)? {
                Ok(())
            } else {
                Err(anyhow::anyhow!("doctor found problems (see above)"))
            }
        }
        Command::Ct(CtCommand::List { host, port, proto, output }) => {
            let entries: Vec<_> = Inspector::new(&cli.paths.bpffs_dir)
                .conntrack()?
                .into_iter()
                .filter(|r| host.is_none_or(|h| r.src == h || r.dst == h))
                .filter(|r| port.is_none_or(|p| r.sport == p || r.dport == p))
                .filter(|r| proto.as_deref().is_none_or(|p| r.proto == p))
                .collect();
            output::conntrack(&entries, output);
            Ok(())
        }
        Command::Endpoint(cmd) => endpoint(&cli.paths, cmd),
        Command::Stats { output } => stats(&cli.paths, output),
        Command::Reconcile { dry_run, output } => reconcile(&cli.paths, dry_run, output),
    }
}

fn reconcile(paths: &Paths, dry_run: bool, format: Format) -> anyhow::Result<()> {
    let Reply::Reconciled { dry_run, repairs } = client::call(paths, &Request::Reconcile { dry_run })? else {
        bail!("unexpected reply from the agent to reconcile");
    };
    output::repairs(&repairs, dry_run, format);
    let failed = repairs.iter().filter(|r| r.failed.is_some()).count();
    if failed > 0 {
        bail!("{failed} repair(s) failed; see above and the agent's log");
    }
    if dry_run && !repairs.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

fn run_agent(config: AgentConfig) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NETPATH_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(output::colour(&std::io::stderr()))
        .init();
    let rt = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    rt.block_on(async {
        let agent = Agent::start(config).await?;
        agent::serve(agent).await?;
        Ok(())
    })
}

fn endpoint(paths: &Paths, cmd: EndpointCommand) -> anyhow::Result<()> {
    match cmd {
        EndpointCommand::Add { name, netns, pid, ip, mac, mtu, ifname } => {
            let netns = match (netns, pid) {
                (Some(p), _) => p,
                (None, Some(pid)) => PathBuf::from(format!("/proc/{pid}/ns/net")),
                (None, None) => bail!("give the container's namespace with --netns PATH or --pid PID"),
            };
            // The agent opens the path itself; make it absolute so its cwd cannot matter.
            let netns = std::path::absolute(&netns).unwrap_or(netns);
            let spec = EndpointSpec { name, netns, ifname, ip, mac, mtu };
            match client::call(paths, &Request::EndpointAdd(spec))? {
                Reply::Endpoint(rec) => {
                    println!("{} {} via {} on {}", rec.name, rec.ip, rec.gateway, rec.host_ifname);
                    Ok(())
                }
                other => client::unexpected(other),
            }
        }
        EndpointCommand::Del { name } => {
            match client::call(paths, &Request::EndpointDel { name: name.clone() })? {
                Reply::Deleted { existed: true } => {
                    println!("{name} deleted");
                    Ok(())
                }
                Reply::Deleted { existed: false } => {
                    println!("{name} does not exist; nothing to do");
                    Ok(())
                }
                other => client::unexpected(other),
            }
        }
        EndpointCommand::List { output } => {
            let endpoints = Store::<EndpointRecord>::new(paths.state_file()).load()?;
            output::endpoints(&endpoints, output);
            Ok(())
        }
    }
}

fn stats(paths: &Paths, format: Format) -> anyhow::Result<()> {
    let inspector = Inspector::new(&paths.bpffs_dir);
    let endpoints = inspector.endpoint_counters()?;
    let reasons = inspector.reason_counters()?;
    // Names come from the state file; a map entry without one is shown by address only.
    let names = Store::<EndpointRecord>::new(paths.state_file()).load().unwrap_or_default();
    let ct = inspector.conntrack_summary(&reasons)?;
    output::stats(&endpoints, &reasons, &ct, &names, format);
    Ok(())
}

fn port(paths: &Paths, cmd: PortCommand) -> anyhow::Result<()> {
    match cmd {
        PortCommand::Add { proto, host_port, target: (endpoint, container_port), host_ip } => {
            let spec = PortSpec { proto, host_port, host_ip, endpoint, container_port };
            match client::call(paths, &Request::PortAdd(spec))? {
                Reply::Port(p) => {
                    let host = p.host_ip.map_or("*".to_string(), |a| a.to_string());
                    println!(
                        "{} {host}:{} -> {} {}:{}",
                        p.proto, p.host_port, p.endpoint, p.container_ip, p.container_port
                    );
                    Ok(())
                }
                other => client::unexpected(other),
            }
        }
        PortCommand::Del { proto, host_port, host_ip } => {
            match client::call(paths, &Request::PortDel { proto, host_port, host_ip })? {
                Reply::Deleted { existed: true } => {
                    println!("{proto}/{host_port} unpublished");
                    Ok(())
                }
                Reply::Deleted { existed: false } => {
                    println!("{proto}/{host_port} is not published; nothing to do");
                    Ok(())
                }
                other => client::unexpected(other),
            }
        }
        PortCommand::List { output } => {
            let ports = Store::<PortRecord>::new(paths.ports_file()).load()?;
            output::ports(&ports, output);
            Ok(())
        }
    }
}
