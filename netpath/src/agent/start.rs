//! Agent start-up in three phases. [`preflight`] looks at everything the start depends
//! on and takes the agent's locks, changing nothing on the node; [`change_node`] gives
//! the gateway address a home and sets sysctls, recording each change; then the
//! datapath is loaded, attached and reconciled. A failure after the first phase takes
//! back what the start did ([`Undo`]), so a refused start leaves the node as it was.
use std::{
    ops::RangeInclusive,
    path::{Path, PathBuf},
    sync::Arc,
};

use tracing::{info, warn};

use super::{lock, metrics, node, records, Agent, AgentConfig, AgentError, Health};
use crate::{
    cluster::Member,
    datapath::{AttachMode, Datapath, DatapathError},
    plumbing::{self, PlumbingError},
    state::{AgentId, Device, Ipam, Ipam6, Mode},
};

/// The node's ephemeral port range: masquerade must not hand out a port the node's own
/// sockets may pick, or replies to one would be taken for the other.
pub(super) fn ephemeral_ports() -> Result<RangeInclusive<u16>, AgentError> {
    let text = plumbing::sysctl::get("net/ipv4/ip_local_port_range")?;
    let mut it = text.split_whitespace().filter_map(|p| p.parse::<u16>().ok());
    match (it.next(), it.next()) {
        (Some(a), Some(b)) => Ok(a..=b),
        _ => Err(AgentError::EphemeralRange { found: text }),
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
    /// This start created the state database: a refused start removes it again.
    fresh_db: bool,
}

/// What [`survey`] found.
struct Survey {
    netlink: rtnetlink::Handle,
    id: AgentId,
    id_is_new: bool,
    endpoints: records::Endpoints,
    ports: records::Ports,
    node: node::Node,
    cgroup: Option<PathBuf>,
    metrics: Option<std::net::TcpListener>,
    cluster: Option<Member>,
}

/// What macvlan/ipvlan mode does not go with: containers there sit on the parent's
/// network with addresses of their own, and netpath only checks and counts what they
/// send and receive.
fn refuse_with_subif(config: &AgentConfig) -> Result<(), AgentError> {
    if !config.mode.is_subif() {
        return Ok(());
    }
    let refuse = |what, why| Err(AgentError::SubifRefuses { mode: config.mode, what, why });
    if config.device == Device::Netkit {
        return refuse(
            "--device netkit",
            "the container's interface is a sub-interface of the parent, not a pair",
        );
    }
    if config.pod_cidr6.is_some() {
        return refuse(
            "--pod-cidr6",
            "IPv6 in these modes is the parent network's (its router advertisements); drop --pod-cidr6",
        );
    }
    if config.cluster.is_some() {
        return refuse(
            "--store",
            "cluster mode routes pod subnets between nodes; these containers sit on the parent's network",
        );
    }
    if config.xdp {
        return refuse("--xdp", "nothing is translated on the uplink in these modes; drop --xdp");
    }
    Ok(())
}

/// Looks at everything a start depends on and takes the agent's locks; changes nothing
/// on the node but netpath's own (empty) directories, which a failed start removes.
async fn preflight(config: &AgentConfig) -> Result<Preflight, AgentError> {
    if config.device == Device::Netkit && config.mode == Mode::Bridge {
        // netkit has no bridge port semantics netpath's bridge mode could keep.
        return Err(AgentError::NetkitBridge);
    }
    refuse_with_subif(config)?;
    if config.endpoint_attach == crate::datapath::EndpointAttach::Tcx
        && config.tc_attach.unwrap_or_else(AttachMode::detect) != AttachMode::Tcx
    {
        return Err(AgentError::NoTcx { kernel: plumbing::link::kernel_release() });
    }
    let paths = &config.paths;
    let bpffs_dir = plumbing::bpffs::locate(&paths.bpffs_dir);
    if bpffs_dir != paths.bpffs_dir {
        info!(pins = %bpffs_dir.display(),
              "this process has a mount namespace of its own (ip netns exec?): pinning into the host's bpffs");
    }
    let lock = lock::InstanceLock::acquire(&paths.run_dir, &paths.state_dir, &bpffs_dir)?;
    // Only under the lock: the database of a running agent is not a fresh one.
    let fresh_db = !paths.state_db().exists();
    match survey(config, &bpffs_dir).await {
        Ok(parts) => Ok(Preflight { lock, bpffs_dir, parts, fresh_db }),
        Err(e) => {
            if fresh_db {
                crate::state::Db::discard(paths);
            }
            lock.abandon();
            Err(e)
        }
    }
}

/// The looking part of [`preflight`], once the locks are held. Its result still lacks
/// the lock (filled in by the caller). In cluster mode the node joins first (the pod
/// CIDR comes from it); a later refusal gives the node name back.
async fn survey(config: &AgentConfig, bpffs_dir: &Path) -> Result<Survey, AgentError> {
    let paths = &config.paths;
    let (conn, netlink, _) = rtnetlink::new_connection().map_err(PlumbingError::Socket)?;
    tokio::spawn(conn);
    let (id, id_is_new) = match AgentId::load(&paths.state_dir)? {
        Some(id) => (id, false),
        None => (AgentId::generate(), true),
    };
    let cluster = match &config.cluster {
        Some(c) => {
            let v4 = node::underlay_address(&netlink, config.uplink.as_deref()).await?;
            let (uplink, v6) = node::underlay_address6(&netlink, config.uplink.as_deref()).await?;
            // Refused before joining: a refusal leaves the store as it was.
            if c.cluster_cidr6.is_some() && c.tunnel == crate::cluster::Tunnel::None && v6.is_none() {
                return Err(AgentError::NoUnderlayAddress6 { uplink });
            }
            let address = crate::cluster::Underlay { v4, v6 };
            Some(Member::start(c.clone(), id.to_string(), address, &paths.state_dir).await?)
        }
        None => None,
    };
    let leaver = cluster.as_ref().map(Member::leaver);
    let surveyed = survey_node(config, bpffs_dir, Joined { netlink, id, id_is_new, cluster }).await;
    if surveyed.is_err() {
        leave(leaver).await;
    }
    surveyed
}

/// What [`survey`] has before it looks at the node.
struct Joined {
    netlink: rtnetlink::Handle,
    id: AgentId,
    id_is_new: bool,
    cluster: Option<Member>,
}

async fn leave(leaver: Option<crate::cluster::Leaver>) {
    if let Some(l) = leaver {
        l.leave().await;
    }
}

/// The rest of [`survey`]: the node's state, its settings and the datapath's pins.
async fn survey_node(config: &AgentConfig, bpffs_dir: &Path, joined: Joined) -> Result<Survey, AgentError> {
    let Joined { netlink, id, id_is_new, cluster } = joined;
    let paths = &config.paths;
    let pod_cidr = cluster.as_ref().map_or(config.pod_cidr, |m| m.record().pod_cidr);
    // In cluster mode the cluster gives the IPv6 pod CIDR too (`--cluster-cidr6`).
    let pod_cidr6 = match &cluster {
        Some(m) => m.cluster6().map(|(_, _, subnet)| subnet),
        None => config.pod_cidr6,
    };
    let db = crate::state::Db::open(paths)?;
    let endpoints = records::Endpoints::load(db.clone(), Ipam::new(pod_cidr), pod_cidr6.map(Ipam6::new))?;
    let ports = records::Ports::load(db, config.nat_ports.clone())?;
    if let Some(other) = endpoints.all().iter().find(|e| e.mode != config.mode) {
        return Err(AgentError::ModeMismatch { endpoint: other.name.clone(), was: other.mode });
    }
    if let Some(other) = endpoints.all().iter().find(|e| e.device != config.device) {
        return Err(AgentError::DeviceMismatch { endpoint: other.name.clone(), was: other.device });
    }
    if config.device == Device::Netkit && !plumbing::link::netkit_supported(&netlink).await? {
        return Err(PlumbingError::NoNetkit { kernel: plumbing::link::kernel_release() }.into());
    }
    if let Some(other) = endpoints.all().iter().find(|e| !pod_cidr.contains(&e.ip)) {
        return Err(AgentError::OutsidePodCidr {
            endpoint: other.name.clone(),
            ip: other.ip,
            cidr: pod_cidr,
        });
    }
    if let Some(other) =
        endpoints.all().iter().find(|e| e.ip6.is_some_and(|ip6| !pod_cidr6.is_some_and(|c| c.contains(&ip6))))
    {
        return Err(AgentError::OutsidePodCidr6 {
            endpoint: other.name.clone(),
            ip: other.ip6.expect("found by its address"),
            cidr: pod_cidr6.map_or("off".to_string(), |c| c.to_string()),
        });
    }
    let ephemeral = ephemeral_ports()?;
    if ranges_meet(&config.nat_ports, &ephemeral) {
        return Err(AgentError::NatOverlapsEphemeral { nat: config.nat_ports.clone(), ephemeral });
    }
    for p in ports.all() {
        ports.check_range(p.host_port)?;
    }
    // A pinned map this build cannot adopt is refused before anything changes.
    crate::datapath::layout::check(bpffs_dir, config.conntrack.max_entries, pod_cidr6.is_some())?;
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
    // Routes through veths netpath made are its own, also those of a veth that a killed
    // agent left behind without state (reconciliation removes it later).
    let mut owned: Vec<u32> = endpoints.all().iter().map(|e| e.host_ifindex).collect();
    owned.extend(
        plumbing::link::list(&netlink)
            .await?
            .iter()
            .filter(|l| crate::drift::Owner { id: &id, adopt_unidentified: id_is_new }.made(l))
            .map(|l| l.index),
    );
    let node_cfg = node::NodeConfig {
        mode: config.mode,
        bridge_name: &config.bridge_name,
        uplink: config.uplink.as_deref(),
        parent: config.parent.as_deref(),
        ipvlan_mode: config.ipvlan_mode,
    };
    let node = node::plan(&netlink, endpoints.ipam(), &node_cfg, &owned).await?;
    if let Some(subif) = &node.subif {
        // The kernel keeps one ipvlan mode per parent: another would change every
        // container's at once.
        if let Some(other) = endpoints.all().iter().find(|e| e.parent.as_deref() != Some(&subif.parent.name))
        {
            let was = other.parent.clone().unwrap_or_default();
            return Err(AgentError::ParentMismatch { endpoint: other.name.clone(), was });
        }
        if let Some(other) = endpoints
            .all()
            .iter()
            .find(|e| e.ipvlan_mode.is_some_and(|m| config.mode == Mode::Ipvlan && m != config.ipvlan_mode))
        {
            let was = other.ipvlan_mode.expect("found by it");
            return Err(AgentError::IpvlanModeMismatch { endpoint: other.name.clone(), was });
        }
    }
    Ok(Survey { netlink, id, id_is_new, endpoints, ports, node, cgroup, metrics, cluster })
}

/// What a start changed, to be taken back when a later step fails.
struct Undo {
    netlink: rtnetlink::Handle,
    node: node::Undo,
    /// (sysctl, its value before).
    sysctls: Vec<(&'static str, String)>,
    /// The agent id this start made and saved.
    new_id: Option<PathBuf>,
}

impl Undo {
    async fn run(self, lock: lock::InstanceLock) {
        self.node.run(&self.netlink).await;
        for (key, old) in self.sysctls {
            let _ = plumbing::sysctl::set(key, &old);
        }
        if let Some(state_dir) = self.new_id {
            AgentId::forget(&state_dir);
        }
        lock.abandon();
    }
}

/// Node set-up and datapath load. Must run inside a tokio runtime (netlink).
pub async fn start(config: AgentConfig) -> Result<Agent, AgentError> {
    let Preflight { lock, bpffs_dir, parts, fresh_db } = preflight(&config).await?;
    let leaver = parts.cluster.as_ref().map(Member::leaver);
    let mut undo = Undo {
        netlink: parts.netlink.clone(),
        node: node::Undo::default(),
        sysctls: Vec::new(),
        new_id: parts.id_is_new.then(|| config.paths.state_dir.clone()),
    };
    let mut lock = Some(lock);
    let paths = config.paths.clone();
    match bring_up(config, bpffs_dir, parts, &mut undo, &mut lock).await {
        Ok(agent) => {
            if let Err(e) = agent.endpoints.db().finish_migration(&paths) {
                // The database knows the files it took in: they are not read again
                // unless something rewrites them.
                warn!("{e}; the migrated JSON files stay where they are");
            }
            Ok(agent)
        }
        Err(e) => {
            warn!("start failed, taking back what it changed: {e}");
            // A refused first start leaves no state database behind; removed while the
            // lock still keeps another agent from creating its own.
            if fresh_db {
                crate::state::Db::discard(&paths);
            }
            if let Some(lock) = lock {
                undo.run(lock).await;
            }
            leave(leaver).await;
            Err(e)
        }
    }
}

/// The phases that change the node. The lock moves into the agent on success and
/// stays in `lock` on failure, for the caller to undo and release.
async fn bring_up(
    config: AgentConfig,
    bpffs_dir: PathBuf,
    parts: Survey,
    undo: &mut Undo,
    lock: &mut Option<lock::InstanceLock>,
) -> Result<Agent, AgentError> {
    let Survey { netlink, id, id_is_new, endpoints, ports, mut node, cgroup, metrics, cluster } = parts;
    let AgentConfig {
        mut paths,
        mode,
        device,
        bridge_name,
        xdp,
        tc_attach,
        endpoint_attach,
        bpf_stats,
        conntrack,
        masquerade6,
        masquerade,
        ..
    } = config;
    paths.bpffs_dir = bpffs_dir;
    node::apply(&netlink, endpoints.ipam(), endpoints.ipam6(), &mut node, &bridge_name, &mut undo.node)
        .await?;
    if cluster.as_ref().is_some_and(|m| m.record().tunnel == crate::cluster::Tunnel::Vxlan) {
        node.tunnel = Some(node::ensure_tunnel(&netlink, &mut undo.node).await?);
    }
    set_sysctls(&mut undo.sysctls, endpoints.ipam6().is_some())?;
    let mut datapath =
        Datapath::load_with(&paths.bpffs_dir, conntrack.max_entries, endpoints.ipam6().is_some(), tc_attach)?;
    datapath.forward_logs()?;
    datapath.set_endpoint_tcx(endpoint_attach == crate::datapath::EndpointAttach::Tcx);
    if endpoints.ipam6().is_some() {
        datapath.load_ipv6_programs()?;
    }
    let stats_fd = if bpf_stats { Some(enable_stats()?) } else { None };
    let mut agent = Agent {
        paths,
        id,
        node,
        device,
        datapath,
        endpoints,
        ports,
        conntrack,
        xdp,
        masquerade6,
        masquerade,
        netlink,
        health: Arc::new(Health {
            store_connected: cluster.as_ref().map(Member::connected_flag),
            store: cluster.as_ref().map(|m| m.store().clone()),
            ..Health::default()
        }),
        trace: None,
        next_temporary: 0,
        inflight: Default::default(),
        adopt_unidentified: id_is_new,
        bpf_stats: stats_fd,
        lock: lock.take().expect("the lock is taken once"),
        cluster,
        node_routes: None,
        node_routes6: None,
        promotions: None,
    };
    if endpoint_attach == crate::datapath::EndpointAttach::Auto && agent.datapath.mode() == AttachMode::Tcx {
        agent.promotions = Some(super::promote::Promotions::new());
    }
    let served = match agent.bring_up_datapath(cgroup, id_is_new).await {
        // Once the programs loaded only when needed (XDP, cluster mode) are.
        Ok(()) => {
            let programs = agent.bpf_stats.is_some().then(|| agent.datapath.program_ids());
            serve_metrics(&agent, metrics, programs)
        }
        Err(e) => Err(e),
    };
    if let Err(e) = served {
        if let Some(u) = agent.node.uplink.clone() {
            agent.datapath.detach_uplink(&u.name, u.index);
        }
        *lock = Some(agent.lock);
        return Err(e);
    }
    let ipam = agent.endpoints.ipam();
    let pod_cidr6 = agent.endpoints.ipam6().map(|i| i.cidr().to_string());
    info!(mode = %mode, device = %device, pod_cidr = %ipam.cidr(), gateway = %ipam.gateway(), pod_cidr6 = ?pod_cidr6,
          node_ip = ?agent.node.node_ip, attach = ?agent.datapath.mode(), agent_id = %agent.id,
          endpoints = agent.endpoints.all().len(), ports = agent.ports.all().len(), "agent ready");
    Ok(agent)
}

/// The sysctls the datapath needs, each change recorded with the value before.
fn set_sysctls(changed: &mut Vec<(&'static str, String)>, ipv6: bool) -> Result<(), AgentError> {
    let v6 = if ipv6 { plumbing::sysctl::NODE_SYSCTLS6 } else { &[] };
    for (key, value) in plumbing::sysctl::NODE_SYSCTLS.iter().chain(v6) {
        let old = plumbing::sysctl::get(key)?;
        if old != *value {
            plumbing::sysctl::set(key, value)?;
            changed.push((*key, old));
        }
    }
    Ok(())
}

/// Has the kernel count program runs (BPF_ENABLE_STATS) for as long as the fd lives.
fn enable_stats() -> Result<std::os::fd::OwnedFd, AgentError> {
    let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map_err(|e| AgentError::BpfStats { source: e.io_error })?;
    info!("kernel counts BPF program runs while the agent runs (--bpf-stats)");
    Ok(fd)
}

fn serve_metrics(
    agent: &Agent,
    listener: Option<std::net::TcpListener>,
    programs: metrics::ProgramIds,
) -> Result<(), AgentError> {
    let Some(listener) = listener else { return Ok(()) };
    metrics::serve(
        listener,
        agent.paths.bpffs_dir.clone(),
        agent.paths.clone(),
        programs,
        agent.health.clone(),
    )
    .map_err(|source| AgentError::Listen { path: "metrics".into(), source })
}
