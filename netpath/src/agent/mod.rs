//! The node agent: sets the node up, owns the datapath, and serves mutations from the
//! CLI over a root-only Unix socket.
//!
//! Start-up runs in three phases: [`preflight`] looks and locks but changes nothing, so
//! a refused start leaves the node as it was; node set-up records what it changes in an
//! undo list; datapath bring-up loads, attaches and reconciles. A failure in the last two
//! takes back what the start did.
mod endpoint;
mod gc;
mod lock;
mod metrics;
mod node;
mod ports;
mod reconcile;
mod server;
mod trace;
mod uplink;

use std::{
    net::Ipv4Addr,
    ops::RangeInclusive,
    path::PathBuf,
    sync::{atomic::AtomicBool, Arc},
};

use ipnet::Ipv4Net;
use netpath_common::NodeConfig;
use tracing::{info, warn};

use crate::{
    datapath::{Datapath, DatapathError},
    paths::Paths,
    plumbing::{self, PlumbingError},
    state::{AgentId, EndpointRecord, Ipam, Mode, PortRecord, StateError, Store},
};

pub use gc::{monotonic_ns, CtConfig};
pub use lock::Held;
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
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("another netpath agent (PID {pid}) {held}")]
    AnotherAgent { pid: u32, held: Held },
    #[error("uplink interface {name} does not exist; check --uplink")]
    NoUplink { name: String },
    #[error("pod CIDR {cidr} overlaps {by}; choose another --pod-cidr")]
    PodCidrTaken { cidr: Ipv4Net, by: String },
    #[error("the node namespace has no lo interface")]
    NoLoopback,
    #[error(
        "endpoint {endpoint} was attached in {was} mode; start the agent with --mode {was} or delete the endpoints first"
    )]
    ModeMismatch { endpoint: String, was: Mode },
    #[error(
        "endpoint {endpoint} has address {ip} outside --pod-cidr {cidr}; keep the old pod CIDR or delete the endpoints first"
    )]
    OutsidePodCidr { endpoint: String, ip: Ipv4Addr, cidr: Ipv4Net },
    #[error(
        "--nat-ports {}-{} overlaps the node's ephemeral ports {}-{} (net.ipv4.ip_local_port_range); choose a range outside it",
        nat.start(), nat.end(), ephemeral.start(), ephemeral.end()
    )]
    NatOverlapsEphemeral { nat: RangeInclusive<u16>, ephemeral: RangeInclusive<u16> },
    #[error(
        "host port {port} is inside --nat-ports {}-{}: masqueraded flows take their node ports from that range, so \
         a reply to one could be taken for a connection to the published port; publish a port outside it or move --nat-ports",
        nat.start(), nat.end()
    )]
    PortInNatRange { port: u16, nat: RangeInclusive<u16> },
    #[error(
        "{path} is {what}; endpoints must be containers' namespaces: pass the container's netns file or the PID of a process inside it"
    )]
    NodeNamespace { path: PathBuf, what: &'static str },
    #[error(
        "a trace is already running (PID {pid}, {filter}); stop it first (Ctrl-C in its terminal), one trace at a time per node"
    )]
    TraceRunning { pid: u32, filter: String },
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

/// What other tasks (metrics, the socket's connections) read while the agent works.
#[derive(Debug, Default)]
pub struct Health {
    /// Is the uplink there? False from the moment it is deleted until it is back.
    pub uplink_up: AtomicBool,
}

pub struct Agent {
    paths: Paths,
    id: AgentId,
    ipam: Ipam,
    node: node::Node,
    datapath: Datapath,
    store: Store<EndpointRecord>,
    endpoints: Vec<EndpointRecord>,
    port_store: Store<PortRecord>,
    ports: Vec<PortRecord>,
    conntrack: CtConfig,
    nat_ports: RangeInclusive<u16>,
    xdp: bool,
    netlink: rtnetlink::Handle,
    health: Arc<Health>,
    /// The running trace, if any (one per node).
    trace: Option<trace::Session>,
    /// Sequence for host veths' temporary names.
    next_temporary: u16,
    /// This start made the agent's identity: links marked by a build from before
    /// identities (no agent in their alias) are taken as this agent's, once.
    adopt_unidentified: bool,
    /// Held while the kernel should count program runs (BPF_ENABLE_STATS).
    _bpf_stats: Option<std::os::fd::OwnedFd>,
    lock: lock::InstanceLock,
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

/// Do two port ranges share a port?
fn ranges_meet(a: &RangeInclusive<u16>, b: &RangeInclusive<u16>) -> bool {
    a.start() <= b.end() && b.start() <= a.end()
}

/// Everything [`preflight`] found and locked, for the phases that change the node.
struct Preflight {
    lock: lock::InstanceLock,
    /// Where the pins really go (see `plumbing::bpffs::locate`).
    bpffs_dir: PathBuf,
    parts: Survey,
}

/// What [`survey`] found.
struct Survey {
    netlink: rtnetlink::Handle,
    id: AgentId,
    id_is_new: bool,
    store: Store<EndpointRecord>,
    endpoints: Vec<EndpointRecord>,
    port_store: Store<PortRecord>,
    ports: Vec<PortRecord>,
    ipam: Ipam,
    node: node::Node,
    cgroup: Option<PathBuf>,
    metrics: Option<std::net::TcpListener>,
}

/// Looks at everything a start depends on and takes the agent's locks; changes nothing
/// on the node but netpath's own (empty) directories, which a failed start removes.
async fn preflight(config: &AgentConfig) -> Result<Preflight, AgentError> {
    let paths = &config.paths;
    let bpffs_dir = plumbing::bpffs::locate(&paths.bpffs_dir);
    if bpffs_dir != paths.bpffs_dir {
        info!(pins = %bpffs_dir.display(),
              "this process has a mount namespace of its own (ip netns exec?): pinning into the host's bpffs");
    }
    let lock = lock::InstanceLock::acquire(&paths.run_dir, &paths.state_dir, &bpffs_dir)?;
    match survey(config, &bpffs_dir).await {
        Ok(parts) => Ok(Preflight { lock, bpffs_dir, parts }),
        Err(e) => {
            lock.abandon();
            Err(e)
        }
    }
}

/// The looking part of [`preflight`], once the locks are held. Its result still lacks
/// the lock (filled in by the caller).
async fn survey(config: &AgentConfig, bpffs_dir: &std::path::Path) -> Result<Survey, AgentError> {
    let paths = &config.paths;
    let (conn, netlink, _) = rtnetlink::new_connection().map_err(PlumbingError::Socket)?;
    tokio::spawn(conn);
    let store = Store::<EndpointRecord>::new(paths.state_file());
    let endpoints = store.load()?;
    let port_store = Store::<PortRecord>::new(paths.ports_file());
    let ports = port_store.load()?;
    let (id, id_is_new) = match AgentId::load(&paths.state_dir)? {
        Some(id) => (id, false),
        None => (AgentId::generate(), true),
    };
    if let Some(other) = endpoints.iter().find(|e| e.mode != config.mode) {
        return Err(AgentError::ModeMismatch { endpoint: other.name.clone(), was: other.mode });
    }
    if let Some(other) = endpoints.iter().find(|e| !config.pod_cidr.contains(&e.ip)) {
        return Err(AgentError::OutsidePodCidr {
            endpoint: other.name.clone(),
            ip: other.ip,
            cidr: config.pod_cidr,
        });
    }
    let ephemeral = ephemeral_ports()?;
    if ranges_meet(&config.nat_ports, &ephemeral) {
        return Err(AgentError::NatOverlapsEphemeral { nat: config.nat_ports.clone(), ephemeral });
    }
    if let Some(p) = ports.iter().find(|p| config.nat_ports.contains(&p.host_port)) {
        return Err(AgentError::PortInNatRange { port: p.host_port, nat: config.nat_ports.clone() });
    }
    // A pinned map this build cannot adopt is refused before anything changes.
    crate::datapath::layout::check(bpffs_dir, config.conntrack.max_entries)?;
    let cgroup = match &config.cgroup {
        Some(dir) => Some(plumbing::cgroup::locate(dir)),
        None => plumbing::cgroup::cgroup2_root(),
    };
    if let Some(dir) = &cgroup {
        std::fs::read_dir(dir).map_err(|source| DatapathError::Cgroup { path: dir.clone(), source })?;
    }
    let metrics = match config.metrics {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .map_err(|source| AgentError::Listen { path: addr.to_string().into(), source })?,
        ),
        None => None,
    };
    let ipam = Ipam::new(config.pod_cidr);
    // Routes through veths netpath made are its own, also those of a veth that a killed
    // agent left behind without state (reconciliation removes it later).
    let mut owned: Vec<u32> = endpoints.iter().map(|e| e.host_ifindex).collect();
    owned.extend(
        plumbing::link::list(&netlink)
            .await?
            .iter()
            .filter(|l| reconcile::owned_by(l, &id, id_is_new))
            .map(|l| l.index),
    );
    let node_cfg = node::NodeConfig {
        mode: config.mode,
        bridge_name: &config.bridge_name,
        uplink: config.uplink.as_deref(),
    };
    let node = node::plan(&netlink, &ipam, &node_cfg, &owned).await?;
    Ok(Survey { netlink, id, id_is_new, store, endpoints, port_store, ports, ipam, node, cgroup, metrics })
}

impl Agent {
    /// Node set-up and datapath load. Must run inside a tokio runtime (netlink).
    pub async fn start(config: AgentConfig) -> Result<Self, AgentError> {
        let pre = preflight(&config).await?;
        let netlink = pre.parts.netlink.clone();
        let (state_dir, id_is_new) = (config.paths.state_dir.clone(), pre.parts.id_is_new);
        let mut undo = node::Undo::default();
        let mut sysctls = Vec::new();
        match Self::bring_up(config, pre, &mut undo, &mut sysctls).await {
            Ok(agent) => Ok(agent),
            Err((e, lock)) => {
                warn!("start failed, taking back what it changed: {e}");
                undo.run(&netlink).await;
                for (key, old) in sysctls {
                    let _ = plumbing::sysctl::set(key, &old);
                }
                if id_is_new {
                    AgentId::forget(&state_dir);
                }
                lock.abandon();
                Err(e)
            }
        }
    }

    /// The phases that change the node. On error, the lock comes back with it, so the
    /// caller can undo before releasing it.
    async fn bring_up(
        config: AgentConfig,
        pre: Preflight,
        undo: &mut node::Undo,
        sysctls: &mut Vec<(&'static str, String)>,
    ) -> Result<Self, (AgentError, lock::InstanceLock)> {
        let Preflight { lock, bpffs_dir, parts } = pre;
        let Survey {
            netlink,
            id,
            id_is_new,
            store,
            endpoints,
            port_store,
            ports,
            ipam,
            mut node,
            cgroup,
            metrics,
        } = parts;
        let AgentConfig {
            mut paths, mode, bridge_name, nat_ports, xdp, tc_attach, bpf_stats, conntrack, ..
        } = config;
        paths.bpffs_dir = bpffs_dir;
        macro_rules! try_ {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(e) => return Err((e.into(), lock)),
                }
            };
        }
        try_!(node::apply(&netlink, &ipam, &mut node, &bridge_name, undo).await);
        for (key, value) in plumbing::sysctl::NODE_SYSCTLS {
            let old = try_!(plumbing::sysctl::get(key));
            if old != *value {
                try_!(plumbing::sysctl::set(key, value));
                sysctls.push((*key, old));
            }
        }
        let datapath = try_!(Datapath::load_with(&paths.bpffs_dir, conntrack.max_entries, tc_attach));
        let stats_fd = if bpf_stats {
            let fd = try_!(aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| {
                AgentError::Invalid(format!(
                    "--bpf-stats: the kernel refused BPF_ENABLE_STATS ({e}); it needs Linux 5.8 and CAP_SYS_ADMIN"
                ))
            }));
            info!("kernel counts BPF program runs while the agent runs (--bpf-stats)");
            Some(fd)
        } else {
            None
        };
        let programs = stats_fd.is_some().then(|| datapath.program_ids());
        let health = Arc::new(Health::default());
        let mut agent = Agent {
            paths,
            id,
            ipam,
            node,
            datapath,
            store,
            endpoints,
            port_store,
            ports,
            conntrack,
            nat_ports,
            xdp,
            netlink,
            health,
            trace: None,
            next_temporary: 0,
            adopt_unidentified: id_is_new,
            _bpf_stats: stats_fd,
            lock,
        };
        match agent.bring_up_datapath(cgroup, id_is_new).await {
            Ok(()) => {}
            Err(e) => {
                if let Some(u) = agent.node.uplink.clone() {
                    agent.datapath.detach_uplink(&u.name, u.index);
                }
                return Err((e, agent.lock));
            }
        }
        if let Some(listener) = metrics {
            let served = metrics::serve(
                listener,
                agent.paths.bpffs_dir.clone(),
                agent.paths.state_file(),
                programs,
                agent.health.clone(),
            );
            if let Err(source) = served {
                return Err((AgentError::Listen { path: "metrics".into(), source }, agent.lock));
            }
        }
        info!(mode = %mode, pod_cidr = %agent.ipam.cidr(), gateway = %agent.ipam.gateway(),
              node_ip = ?agent.node.node_ip, attach = ?agent.datapath.mode(), agent_id = %agent.id,
              endpoints = agent.endpoints.len(), ports = agent.ports.len(), "agent ready");
        Ok(agent)
    }

    /// Node settings into the maps, programs onto the uplink and the cgroup, then the
    /// endpoints of the state adopted and reconciled.
    async fn bring_up_datapath(
        &mut self,
        cgroup: Option<PathBuf>,
        id_is_new: bool,
    ) -> Result<(), AgentError> {
        self.write_node_config()?;
        // No trace survives an agent: its client's connection died with the old one.
        self.datapath.set_trace_filter(netpath_common::TraceFilter::default())?;
        if let Some(uplink) = self.node.uplink.clone() {
            self.attach_uplink(&uplink)?;
        }
        self.health.uplink_up.store(self.node.uplink.is_some(), std::sync::atomic::Ordering::Relaxed);
        match cgroup {
            Some(cg) => {
                self.datapath.attach_node_local(&cg)?;
                info!(cgroup = %cg.display(), "node-local access to published ports");
            }
            None => warn!("no cgroup v2 mount: node processes cannot reach published ports locally"),
        }
        if id_is_new {
            // Before any link carries it.
            self.id.save(&self.paths.state_dir)?;
        }
        self.adopt().await?;
        // Every attachment now runs this agent's programs.
        self.datapath.finish_migration()?;
        Ok(())
    }

    /// NODE_CONFIG from what the agent knows of the node now.
    fn write_node_config(&mut self) -> Result<(), AgentError> {
        let pod_cidr = self.ipam.cidr();
        let cfg = NodeConfig {
            node_ip: self.node.node_ip.unwrap_or(Ipv4Addr::UNSPECIFIED).octets(),
            pod_net: pod_cidr.network().octets(),
            pod_mask: pod_cidr.netmask().octets(),
            uplink_ifindex: self.node.uplink.as_ref().map_or(0, |u| u.index),
            nat_port_min: *self.nat_ports.start(),
            nat_port_max: *self.nat_ports.end(),
            flags: if self.datapath.mode() == crate::datapath::AttachMode::Clsact {
                netpath_common::conntrack::NODE_F_CLSACT
            } else {
                0
            },
            netns_cookie: plumbing::netns::current_cookie().unwrap_or(0),
        };
        Ok(self.datapath.set_node_config(cfg)?)
    }

    /// uplink_in (and XDP when asked for) on the uplink.
    fn attach_uplink(&mut self, uplink: &plumbing::link::Link) -> Result<(), AgentError> {
        self.datapath.attach_uplink(&uplink.name, uplink.index)?;
        if self.xdp {
            self.datapath.attach_uplink_xdp(&uplink.name, uplink.index)?;
            info!(uplink = %uplink.name, "XDP fast path attached");
        }
        Ok(())
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
        // Unidentified links left now are someone else's.
        self.adopt_unidentified = false;
        Ok(())
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// Warnings an operator should see with the answer to a change.
    fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let (Some(name), None) = (&self.node.uplink_name, &self.node.uplink) {
            out.push(format!(
                "the uplink {name} is gone: masquerade and published ports are down until it is back"
            ));
        }
        out
    }
}
