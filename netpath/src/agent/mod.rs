//! The node agent: sets the node up, owns the datapath, and serves mutations from the
//! CLI over a root-only Unix socket.
//!
//! Start-up runs in three phases: [`preflight`] looks and locks but changes nothing, so
//! a refused start leaves the node as it was; node set-up records what it changes in an
//! undo list; datapath bring-up loads, attaches and reconciles. A failure in the last two
//! takes back what the start did.
mod apply;
mod check;
mod cluster;
mod cluster6;
mod endpoint;
mod gc;
mod inflight;
mod lock;
mod metrics;
mod node;
mod ports;
mod promote;
mod reconcile;
mod records;
mod server;
mod start;
mod steps;
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
    state::{AgentId, Device, Mode, PortRecord, StateError},
};

pub use gc::CtConfig;
pub use lock::Held;
pub use node::SHIM_DEVICE;
pub use server::{serve, Stop};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Plumbing(#[from] PlumbingError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot listen on {path}: {source}")]
    Listen { path: PathBuf, source: std::io::Error },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("another netpath agent (PID {pid}) {held}")]
    AnotherAgent { pid: u32, held: Held },
    #[error("invalid endpoint name {name:?}: use 1-64 characters from A-Z a-z 0-9 - _ .")]
    BadEndpointName { name: String },
    #[error("invalid interface name {name:?}: use 1-15 printable characters without '/' or ':'")]
    BadIfname { name: String },
    #[error("invalid MTU {mtu}: use a value from {} to {}", endpoint::MTU_RANGE.start(), endpoint::MTU_RANGE.end())]
    BadMtu { mtu: u32 },
    #[error("MTU {mtu} is below IPv6's minimum of 1280, and every endpoint of this node gets an IPv6 address (--pod-cidr6 or --cluster-cidr6): {fix}")]
    MtuBelowIpv6 { mtu: u32, fix: &'static str },
    #[error("invalid MAC {mac}: use a unicast, non-zero address")]
    BadMac { mac: String },
    #[error("MAC {mac} is already used by endpoint {owner}; with --pod-cidr6 an endpoint's link-local address comes from its MAC, so each needs its own: pick another or omit --mac")]
    MacInUse { mac: String, owner: String },
    #[error("state file has a bad MAC {mac} for endpoint {endpoint}; delete the endpoint and add it again")]
    StoredMac { endpoint: String, mac: String },
    #[error("endpoint {name} already exists with other settings (netns {}, ip {ip}); delete it first", netns.display())]
    EndpointExists { name: String, netns: PathBuf, ip: Ipv4Addr },
    #[error("no endpoint {name:?}; add it with `netpath endpoint add` first (see `netpath endpoint list`)")]
    NoEndpoint { name: String },
    #[error("a port of endpoint {name:?}, which the file does not declare; declare it under endpoints")]
    UndeclaredEndpoint { name: String },
    #[error("{what} is declared twice; keep one")]
    DeclaredTwice { what: String },
    #[error("endpoint {name} belongs to the runtime's container {owner}; apply manages only endpoints no runtime added, rename it in the file")]
    RuntimeOwned { name: String, owner: String },
    #[error("cannot take SIGTERM and SIGINT: {0}")]
    Signals(std::io::Error),
    #[error("port 0 cannot be published: use 1-65535")]
    PortZero,
    #[error(
        "--host-ip {ip} is neither the node's address on the uplink {uplink} ({}) nor a loopback address; \
         publish on one of those (omit --host-ip for the node address, 127.0.0.1 for the node's \
         processes only), or add {ip} to {uplink}, where netpath's programs see its packets",
        if addresses.is_empty() { "none".to_string() } else {
            addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
        }
    )]
    HostIpNotNode { ip: Ipv4Addr, uplink: String, addresses: Vec<Ipv4Addr> },
    #[error(
        "--host-ip {ip} publishes for the node's own processes only, which needs kernel 5.14+ \
         (SO_NETNS_COOKIE) and this kernel lacks it; omit --host-ip to publish on the node address"
    )]
    LoopbackNeedsCookie { ip: std::net::IpAddr },
    #[error(
        "--host-ip {ip} is neither the node's IPv6 address on the uplink {uplink} ({}) nor :: nor ::1; \
         publish on one of those (:: for every IPv6 address of the node, ::1 for the node's processes \
         only), or omit --host-ip to publish on both families",
        address.map_or("none".to_string(), |a| a.to_string())
    )]
    HostIp6NotNode { ip: std::net::Ipv6Addr, uplink: String, address: Option<std::net::Ipv6Addr> },
    #[error(
        "endpoint {endpoint} has no IPv6 address, so --host-ip {ip} cannot publish to it; omit --host-ip or \
         give an IPv4 one, or give the endpoint an IPv6 address (an agent with --pod-cidr6 gives each \
         endpoint it adds one: delete and add the endpoint again)"
    )]
    EndpointWithoutIpv6 { endpoint: String, ip: std::net::Ipv6Addr },
    #[error(
        "no free host port for {proto} in {}-{}: every one is published or reserved; give a host port",
        range.start(), range.end()
    )]
    NoFreeHostPort { proto: crate::state::Proto, range: std::ops::RangeInclusive<u16> },
    #[error(
        "host port {proto}/{port} is already published for {endpoint}:{container_port}; delete it first \
         (netpath port del --proto {proto} {port}{})",
        host_ip.map_or(String::new(), |ip| format!(" --host-ip {ip}"))
    )]
    PortTaken {
        proto: crate::state::Proto,
        port: u16,
        /// The published port's host address, which deleting it names.
        host_ip: Option<std::net::IpAddr>,
        endpoint: String,
        container_port: u16,
    },
    #[error("cannot parse net.ipv4.ip_local_port_range {found:?}")]
    EphemeralRange { found: String },
    #[error(
        "--bpf-stats: the kernel refused BPF_ENABLE_STATS ({source}); it needs Linux 5.8 and CAP_SYS_ADMIN"
    )]
    BpfStats { source: std::io::Error },
    #[error("link {name} (index {index}) holds the host veth's name and is not netpath's")]
    ForeignLink { name: String, index: u32 },
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
        "endpoint {endpoint} was attached with a {was} device; start the agent with --device {was} or delete the endpoints first"
    )]
    DeviceMismatch { endpoint: String, was: Device },
    #[error("--device netkit works in routed mode only; drop --mode bridge or use --device veth")]
    NetkitBridge,
    #[error("--endpoint-attach tcx needs TCX (Linux 6.6+; this kernel is {kernel}, or --tc-attach clsact was given); use --endpoint-attach clsact")]
    NoTcx { kernel: String },
    #[error("--mode {mode} does not go with {what}: {why}")]
    SubifRefuses { mode: Mode, what: &'static str, why: &'static str },
    #[error(
        "MAC {mac} cannot be given in ipvlan mode: ipvlan interfaces share the parent's MAC; drop --mac"
    )]
    IpvlanMac { mac: String },
    #[error("parent interface {name} does not exist; check --parent (default: the uplink)")]
    NoParent { name: String },
    #[error("--mode {mode} needs a parent interface: give --parent IFACE (the node has no default route to find an uplink by)")]
    NoParentFound { mode: Mode },
    #[error(
        "pod CIDR {cidr} is not inside a subnet of {parent} ({subnets}); in {mode} mode containers take addresses on the parent's network: give --pod-cidr a free range of it"
    )]
    PodCidrNotOnParent { cidr: Ipv4Net, parent: String, subnets: String, mode: Mode },
    #[error(
        "pod CIDR {cidr} holds {addr} ({what}); give --pod-cidr a range of the parent's network without it"
    )]
    PodCidrHoldsNode { cidr: Ipv4Net, addr: Ipv4Addr, what: String },
    #[error(
        "endpoint {endpoint} was attached with --ipvlan-mode {was}; start the agent with --ipvlan-mode {was} or delete the endpoints first"
    )]
    IpvlanModeMismatch { endpoint: String, was: crate::state::IpvlanMode },
    #[error(
        "endpoint {endpoint} is a sub-interface of {was}; start the agent with --parent {was} or delete the endpoints first"
    )]
    ParentMismatch { endpoint: String, was: String },
    #[error(
        "ports are not published in {mode} mode: containers have addresses of their own on {parent}'s network; reach them there (port {port})"
    )]
    PortsInSubifMode { mode: Mode, parent: String, port: u16 },
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
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error(
        "cluster mode needs the node's underlay address, and {}; give --uplink an interface with an IPv4 address",
        uplink.as_ref().map_or("the node has no default route".to_string(), |u| format!("uplink {u} has no IPv4 address"))
    )]
    NoUnderlayAddress { uplink: Option<String> },
    #[error(
        "--cluster-cidr6 with --tunnel none routes pods' IPv6 to each node via its IPv6 underlay address (Linux routes \
         IPv6 through IPv6 gateways only), and {}; give the uplink a global IPv6 address, or use --tunnel vxlan",
        uplink.as_ref().map_or("the node has no default route".to_string(), |u| format!("uplink {u} has none"))
    )]
    NoUnderlayAddress6 { uplink: Option<String> },
    #[error("this agent runs without --store: there is no cluster to ask")]
    NotClustered,
    #[error(
        "endpoint {endpoint} has IPv6 address {ip} outside --pod-cidr6 ({cidr}); keep the old IPv6 pod CIDR or delete the endpoints first"
    )]
    OutsidePodCidr6 { endpoint: String, ip: std::net::Ipv6Addr, cidr: String },
    #[error("this agent has no IPv6 pod CIDR, so there is no IPv6 address to give: start it with --pod-cidr6, or omit --ip6")]
    NoPodCidr6,
}

pub struct AgentConfig {
    pub paths: Paths,
    pub pod_cidr: Ipv4Net,
    /// The IPv6 pod CIDR; None: endpoints get IPv4 only.
    pub pod_cidr6: Option<ipnet::Ipv6Net>,
    /// Masquerade containers' IPv6 to the outside (NAT66); false: a routed prefix.
    pub masquerade6: bool,
    /// Masquerade containers' IPv4 to the outside; false: a routed prefix.
    pub masquerade: bool,
    pub mode: Mode,
    /// `--mode macvlan|ipvlan`: the parent device; None: the uplink.
    pub parent: Option<String>,
    /// `--mode ipvlan`: L2 or L3.
    pub ipvlan_mode: crate::state::IpvlanMode,
    /// The device pair new endpoints get.
    pub device: Device,
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
    /// How new veth endpoints are attached (`--endpoint-attach`).
    pub endpoint_attach: crate::datapath::EndpointAttach,
    /// Have the kernel count program runs and run time while the agent runs.
    pub bpf_stats: bool,
    pub conntrack: CtConfig,
    /// Cluster mode: the node's pod CIDR comes from the cluster, not `pod_cidr`.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

/// What other tasks (metrics, the socket's connections) read while the agent works.
#[derive(Debug, Default)]
pub struct Health {
    /// Is the uplink there? False from the moment it is deleted until it is back.
    pub uplink_up: AtomicBool,
    /// Cluster mode: is the agent in touch with the store?
    pub store_connected: Option<Arc<AtomicBool>>,
    /// Cluster mode: the store, asked for the node counts at each scrape.
    pub store: Option<crate::cluster::StoreUrl>,
}

pub struct Agent {
    paths: Paths,
    id: AgentId,
    node: node::Node,
    /// The device pair new endpoints get (`--device`).
    device: Device,
    datapath: Datapath,
    endpoints: records::Endpoints,
    ports: records::Ports,
    conntrack: CtConfig,
    xdp: bool,
    /// `--masquerade6`.
    masquerade6: bool,
    /// `--masquerade`.
    masquerade: bool,
    netlink: rtnetlink::Handle,
    health: Arc<Health>,
    /// The running trace, if any (one per node).
    trace: Option<trace::Session>,
    /// Sequence for host veths' temporary names.
    next_temporary: u16,
    /// Endpoint changes whose kernel work runs beside other requests, and the requests
    /// that wait for them.
    inflight: inflight::InFlight,
    /// This start made the agent's identity: links marked by a build from before
    /// identities (no agent in their alias) are taken as this agent's, once.
    adopt_unidentified: bool,
    /// Held while the kernel should count program runs (BPF_ENABLE_STATS).
    bpf_stats: Option<std::os::fd::OwnedFd>,
    lock: lock::InstanceLock,
    /// The node's membership in cluster mode.
    cluster: Option<crate::cluster::Member>,
    /// The routes to the other nodes as last written; None until the first full sync.
    node_routes: Option<cluster::Routes>,
    /// The same for the other nodes' IPv6 subnets (`--cluster-cidr6`).
    node_routes6: Option<cluster6::Routes6>,
    /// Veth endpoints moved from filters to TCX links when idle (`--endpoint-attach
    /// auto` on a TCX kernel); None otherwise.
    promotions: Option<promote::Promotions>,
}

impl Agent {
    /// Node set-up and datapath load. Must run inside a tokio runtime (netlink).
    pub async fn start(config: AgentConfig) -> Result<Self, AgentError> {
        start::start(config).await
    }

    /// Node settings into the maps, programs onto the uplink and the cgroup, then the
    /// endpoints of the state adopted and reconciled.
    async fn bring_up_datapath(
        &mut self,
        cgroup: Option<PathBuf>,
        id_is_new: bool,
    ) -> Result<(), AgentError> {
        self.write_node_config()?;
        // Endpoints get the default MTU unless they ask: below IPv6's minimum every add
        // that does not ask is refused (and packet-too-big below 1280 would be ignored).
        let mtu = self.default_mtu();
        if self.endpoints.ipam6().is_some() && mtu < endpoint::IPV6_MIN_MTU {
            warn!(
                mtu,
                "endpoints' default MTU below IPv6's minimum of 1280: {}",
                endpoint::DEFAULT_MTU_BELOW_IPV6
            );
        }
        self.datapath.set_cluster_programs(self.cluster.is_some())?;
        self.datapath.set_cluster_programs6(self.cluster.as_ref().is_some_and(|m| m.cluster6().is_some()))?;
        // No trace survives an agent: its client's connection died with the old one.
        self.datapath.set_trace_filter(netpath_common::TraceFilter::default())?;
        if let Some(uplink) = self.node.uplink.clone() {
            self.attach_uplink(&uplink)?;
        }
        if let Some(tunnel) = self.node.tunnel.clone() {
            self.datapath.attach_tunnel(&tunnel.name, tunnel.index)?;
        }
        self.health.uplink_up.store(self.node.uplink.is_some(), std::sync::atomic::Ordering::Relaxed);
        match cgroup.filter(|_| self.node.subif.is_none()) {
            Some(cg) => {
                self.datapath.attach_node_local(&cg)?;
                info!(cgroup = %cg.display(), "node-local access to published ports");
            }
            None if self.node.subif.is_some() => {}
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

    /// Is `port` published on an IPv4 address of the uplink other than the node address?
    /// IPv6 never is: the programs take only the node's IPv6 address and `::`.
    fn on_other_address(&self, port: &PortRecord) -> bool {
        match port.host_ip {
            Some(std::net::IpAddr::V4(ip)) => !ip.is_loopback() && Some(ip) != self.node.node_ip,
            Some(std::net::IpAddr::V6(_)) | None => false,
        }
    }

    /// NODE_CONFIG from what the agent knows of the node now.
    fn write_node_config(&mut self) -> Result<(), AgentError> {
        let pod_cidr = self.endpoints.ipam().cidr();
        let nat = self.ports.nat_range().clone();
        let cfg =
            NodeConfig {
                node_ip: self.node.node_ip.unwrap_or(Ipv4Addr::UNSPECIFIED).octets(),
                pod_net: pod_cidr.network().octets(),
                pod_mask: pod_cidr.netmask().octets(),
                uplink_ifindex: self.node.uplink.as_ref().map_or(0, |u| u.index),
                nat_port_min: *nat.start(),
                nat_port_max: *nat.end(),
                flags: if self.datapath.mode() == crate::datapath::AttachMode::Clsact {
                    netpath_common::conntrack::NODE_F_CLSACT
                } else {
                    0
                } | if self.ports.all().iter().any(|p| self.on_other_address(p)) {
                    netpath_common::conntrack::NODE_F_ADDRESS_PORTS
                } else {
                    0
                } | if self.endpoints.ipam6().is_some() {
                    netpath_common::conntrack::NODE_F_IPV6
                } else {
                    0
                } | if self.cluster.as_ref().is_some_and(|m| {
                    m.cluster6().is_some() && m.record().tunnel == crate::cluster::Tunnel::None
                }) {
                    netpath_common::conntrack::NODE_F_NATIVE6
                } else {
                    0
                } | if self.masquerade { 0 } else { netpath_common::conntrack::NODE_F_ROUTED },
                netns_cookie: plumbing::netns::current_cookie().unwrap_or(0),
                ..NodeConfig::default()
            };
        let cfg = match &self.cluster {
            Some(m) => NodeConfig {
                cluster_net: m.cluster_cidr().network().octets(),
                cluster_mask: m.cluster_cidr().netmask().octets(),
                node_mask: m.record().pod_cidr.netmask().octets(),
                tunnel_ifindex: self.node.tunnel.as_ref().map_or(0, |t| t.index),
                vni: crate::cluster::VNI,
                path_mtu: u16::try_from(self.default_mtu()).unwrap_or(u16::MAX),
                ..cfg
            },
            None => cfg,
        };
        self.datapath.set_node_config(cfg)?;
        if let Some(ipam6) = self.endpoints.ipam6() {
            let cidr = ipam6.cidr();
            let cfg6 = netpath_common::NodeConfig6 {
                node_ip: self.node.node_ip6.unwrap_or(std::net::Ipv6Addr::UNSPECIFIED).octets(),
                pod_net: cidr.network().octets(),
                pod_prefix: cidr.prefix_len(),
                flags: if self.masquerade6 { netpath_common::conntrack::NODE6_F_MASQUERADE } else { 0 },
                ..Default::default()
            };
            let cfg6 = match self.cluster.as_ref().and_then(|m| m.cluster6()) {
                Some((cluster, node_prefix, _)) => netpath_common::NodeConfig6 {
                    cluster_net: cluster.network().octets(),
                    cluster_prefix: cluster.prefix_len(),
                    node_prefix,
                    ..cfg6
                },
                None => cfg6,
            };
            self.datapath.set_node_config6(cfg6)?;
        }
        Ok(())
    }

    /// uplink_in (and XDP when asked for) on the uplink.
    fn attach_uplink(&mut self, uplink: &plumbing::link::Link) -> Result<(), AgentError> {
        self.datapath.attach_uplink(&uplink.name, uplink.index)?;
        if self.xdp {
            self.datapath.attach_uplink_xdp(&uplink.name, uplink.index)?;
            info!(uplink = %uplink.name, "XDP fast path attached");
            // The kernel's veth_xdp_set clears the peer's software GSO while an XDP
            // program is on a veth: what the peer sends is segmented before it crosses.
            if uplink.is_veth {
                warn!(
                    uplink = %uplink.name,
                    "--xdp on a veth uplink turns off GSO on its peer: TCP streams through it are cut into \
                     MTU-sized packets (a quarter of the throughput in the benchmark); the tc programs alone \
                     do the same work without it: drop --xdp on veth uplinks"
                );
            }
        }
        Ok(())
    }

    /// Takes over from the previous agent, then repairs drift. The pinned links of
    /// endpoints whose veth still exists are adopted first: the new program replaces the
    /// old one in place, so forwarding never stops, and the pins count as wanted when
    /// reconciliation prunes the rest.
    async fn adopt(&mut self) -> Result<(), AgentError> {
        let start = std::time::Instant::now();
        // Endpoints attached with this very slot keep their filters; any other case
        // (first start of a build with the slot, its pin removed, a start that failed
        // before it had taken over every endpoint) attaches them again.
        const SLOT_KEY: &str = "endpoint_slot_map_id";
        let slot = self.datapath.endpoint_slot_id().map(|id| id.to_string());
        let same_slot = slot.is_some() && self.endpoints.db().meta(SLOT_KEY)? == slot;
        self.datapath.set_reattach_endpoints(!same_slot);
        let slotted = self.datapath.adopt_counter_slots()?;
        if slotted > 0 {
            info!(endpoints = slotted, "endpoints of an earlier build given counter slots");
        }
        // From here on, endpoints' filters run this agent's container path.
        self.datapath.set_endpoint_slot(true)?;
        for rec in self.endpoints.all().to_vec() {
            if !self.datapath.adopts_endpoint(rec.host_ifindex, rec.device) {
                continue;
            }
            if rec.mode.is_subif() {
                // Filters inside the container: attached again there (a namespace gone
                // is reconciliation's to find).
                if let Ok(ns) = plumbing::netns::open(&rec.netns) {
                    if let Err(e) = self.datapath.attach_subif(&ns, &rec.ifname) {
                        warn!(endpoint = %rec.name, "cannot attach to its interface again: {e}; reconciliation retries");
                    }
                }
                continue;
            }
            if let Some(l) = plumbing::link::get(&self.netlink, &rec.host_ifname).await? {
                if l.index == rec.host_ifindex {
                    self.datapath.adopt_endpoint(&rec.host_ifname, rec.host_ifindex, rec.device)?;
                }
            }
        }
        if let (false, Some(slot)) = (same_slot, &slot) {
            self.endpoints.db().set_meta(SLOT_KEY, slot)?;
        }
        let attached = start.elapsed();
        self.reconcile(false).await?;
        // Unidentified links left now are someone else's.
        self.adopt_unidentified = false;
        info!(
            endpoints = self.endpoints.all().len(),
            attach_ms = attached.as_millis() as u64,
            reconcile_ms = (start.elapsed() - attached).as_millis() as u64,
            "endpoints adopted"
        );
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
