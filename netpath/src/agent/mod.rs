//! The node agent: sets the node up, owns the datapath, and serves mutations from the
//! CLI over a root-only Unix socket.
mod endpoint;
mod gc;
mod metrics;
mod node;
mod ports;
mod reconcile;
mod server;

use std::{net::Ipv4Addr, ops::RangeInclusive, path::PathBuf};

use ipnet::Ipv4Net;
use netpath_common::NodeConfig;
use tracing::{info, warn};

use crate::{
    datapath::{Datapath, DatapathError},
    paths::Paths,
    plumbing::{self, PlumbingError},
    state::{EndpointRecord, Ipam, Mode, PortRecord, StateError, Store},
};

pub use gc::{monotonic_ns, CtConfig};
pub use server::serve;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Plumbing(#[from] PlumbingError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot listen on {path}: {source}")]
    Listen { path: PathBuf, source: std::io::Error },
}

pub struct AgentConfig {
    pub paths: Paths,
    pub pod_cidr: Ipv4Net,
    pub mode: Mode,
    pub bridge_name: String,
    pub uplink: Option<String>,
    /// Source ports for masquerade.
    pub nat_ports: RangeInclusive<u16>,
    /// cgroup v2 directory for the node-local connect hook; None: the unified root.
    pub cgroup: Option<PathBuf>,
    /// Attach the XDP fast path to the uplink.
    pub xdp: bool,
    /// Where to serve Prometheus metrics; None: not at all.
    pub metrics: Option<std::net::SocketAddr>,
    /// Force the tc attach method; None: TCX where the kernel has it.
    pub tc_attach: Option<crate::datapath::AttachMode>,
    /// Have the kernel count program runs and run time while the agent runs.
    pub bpf_stats: bool,
    pub conntrack: CtConfig,
}

pub struct Agent {
    paths: Paths,
    ipam: Ipam,
    node: node::Node,
    datapath: Datapath,
    store: Store<EndpointRecord>,
    endpoints: Vec<EndpointRecord>,
    port_store: Store<PortRecord>,
    ports: Vec<PortRecord>,
    conntrack: CtConfig,
    netlink: rtnetlink::Handle,
    /// Held while the kernel should count program runs (BPF_ENABLE_STATS).
    _bpf_stats: Option<std::os::fd::OwnedFd>,
}

/// The node's ephemeral port range: masquerade must not hand out a port the node's own
/// sockets may pick, or replies to one would be taken for the other.
fn ephemeral_ports() -> Result<RangeInclusive<u16>, AgentError> {
    let text = plumbing::sysctl::get("net/ipv4/ip_local_port_range")?;
    let mut it = text.split_whitespace().filter_map(|p| p.parse::<u16>().ok());
    match (it.next(), it.next()) {
        (Some(a), Some(b)) => Ok(a..=b),
        _ => Err(AgentError::Invalid(format!("cannot parse net.ipv4.ip_local_port_range {text:?}"))),
    }
}

impl Agent {
    /// Node set-up and datapath load. Must run inside a tokio runtime (netlink).
    pub async fn start(config: AgentConfig) -> Result<Self, AgentError> {
        let AgentConfig {
            paths,
            pod_cidr,
            mode,
            bridge_name,
            uplink,
            nat_ports,
            cgroup,
            xdp,
            metrics: metrics_addr,
            tc_attach,
            bpf_stats,
            conntrack,
        } = config;
        let (conn, netlink, _) = rtnetlink::new_connection().map_err(PlumbingError::Socket)?;
        tokio::spawn(conn);
        let store = Store::<EndpointRecord>::new(paths.state_file());
        let endpoints = store.load()?;
        let port_store = Store::<PortRecord>::new(paths.ports_file());
        let ports = port_store.load()?;
        // Checks that change nothing come first: a refused start leaves the node as it was.
        if let Some(other) = endpoints.iter().find(|e| e.mode != mode) {
            return Err(AgentError::Invalid(format!(
                "endpoint {} was attached in {} mode; start the agent with --mode {} or delete the endpoints first",
                other.name, other.mode, other.mode
            )));
        }
        if let Some(other) = endpoints.iter().find(|e| !pod_cidr.contains(&e.ip)) {
            return Err(AgentError::Invalid(format!(
                "endpoint {} has address {} outside --pod-cidr {pod_cidr}; keep the old pod CIDR or delete the endpoints first",
                other.name, other.ip
            )));
        }
        let ephemeral = ephemeral_ports()?;
        if nat_ports.start() <= ephemeral.end() && ephemeral.start() <= nat_ports.end() {
            return Err(AgentError::Invalid(format!(
                "--nat-ports {}-{} overlaps the node's ephemeral ports {}-{} (net.ipv4.ip_local_port_range); choose a range outside it",
                nat_ports.start(),
                nat_ports.end(),
                ephemeral.start(),
                ephemeral.end()
            )));
        }
        // A pinned map this build cannot adopt is refused before anything changes.
        crate::datapath::layout::check(&paths.bpffs_dir, conntrack.max_entries)?;
        let ipam = Ipam::new(pod_cidr);
        // Routes through veths netpath made are its own, also those of a veth that a
        // killed agent left behind without state (reconciliation removes it below).
        let mut owned: Vec<u32> = endpoints.iter().map(|e| e.host_ifindex).collect();
        owned.extend(
            plumbing::link::list(&netlink).await?.iter().filter(|l| reconcile::owned(l)).map(|l| l.index),
        );
        let node_cfg = node::NodeConfig { mode, bridge_name: &bridge_name, uplink: uplink.as_deref() };
        let node = node::setup(&netlink, &ipam, node_cfg, &owned).await?;
        for (key, value) in plumbing::sysctl::NODE_SYSCTLS {
            plumbing::sysctl::set(key, value)?;
        }
        plumbing::bpffs::ensure(&paths.bpffs_dir)?;
        let mut datapath = Datapath::load_with(&paths.bpffs_dir, conntrack.max_entries, tc_attach)?;
        datapath.set_node_config(NodeConfig {
            node_ip: node.node_ip.unwrap_or(Ipv4Addr::UNSPECIFIED).octets(),
            pod_net: pod_cidr.network().octets(),
            pod_mask: pod_cidr.netmask().octets(),
            uplink_ifindex: node.uplink.as_ref().map_or(0, |u| u.index),
            nat_port_min: *nat_ports.start(),
            nat_port_max: *nat_ports.end(),
            flags: if datapath.mode() == crate::datapath::AttachMode::Clsact {
                netpath_common::conntrack::NODE_F_CLSACT
            } else {
                0
            },
            netns_cookie: plumbing::netns::current_cookie().unwrap_or(0),
        })?;
        if let Some(uplink) = &node.uplink {
            datapath.attach_uplink(&uplink.name, uplink.index)?;
            if xdp {
                datapath.attach_uplink_xdp(&uplink.name, uplink.index)?;
                info!(uplink = %uplink.name, "XDP fast path attached");
            }
        }
        match cgroup.or_else(plumbing::cgroup::cgroup2_root) {
            Some(cg) => {
                datapath.attach_node_local(&cg)?;
                info!(cgroup = %cg.display(), "node-local access to published ports");
            }
            None => warn!("no cgroup v2 mount: node processes cannot reach published ports locally"),
        }
        let stats_fd = if bpf_stats {
            let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| {
                AgentError::Invalid(format!(
                    "--bpf-stats: the kernel refused BPF_ENABLE_STATS ({e}); it needs Linux 5.8 and CAP_SYS_ADMIN"
                ))
            })?;
            info!("kernel counts BPF program runs while the agent runs (--bpf-stats)");
            Some(fd)
        } else {
            None
        };
        let programs = stats_fd.is_some().then(|| datapath.program_ids());
        let mut agent = Agent {
            paths,
            ipam,
            node,
            datapath,
            store,
            endpoints,
            port_store,
            ports,
            conntrack,
            netlink,
            _bpf_stats: stats_fd,
        };
        agent.adopt().await?;
        // Every attachment now runs this agent's programs.
        agent.datapath.finish_migration()?;
        if let Some(addr) = metrics_addr {
            metrics::serve(addr, agent.paths.bpffs_dir.clone(), agent.paths.state_file(), programs)
                .await
                .map_err(|source| AgentError::Listen { path: addr.to_string().into(), source })?;
        }
        info!(mode = %mode, pod_cidr = %agent.ipam.cidr(), gateway = %agent.ipam.gateway(),
              node_ip = ?agent.node.node_ip, attach = ?agent.datapath.mode(),
              endpoints = agent.endpoints.len(), ports = agent.ports.len(), "agent ready");
        Ok(agent)
    }

    /// Takes over from the previous agent, then repairs drift. The pinned links of
    /// endpoints whose veth still exists are adopted first: the new program replaces the
    /// old one in place, so forwarding never stops, and the pins count as wanted when
    /// reconciliation prunes the rest.
    async fn adopt(&mut self) -> Result<(), AgentError> {
        for rec in self.endpoints.clone() {
            if let Some(l) = plumbing::link::get(&self.netlink, &rec.host_ifname).await? {
                if l.index == rec.host_ifindex {
                    self.datapath.attach_endpoint(&rec.host_ifname, rec.host_ifindex)?;
                }
            }
        }
        self.reconcile(false).await?;
        Ok(())
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }
}
