//! The node agent: sets the node up, owns the datapath, and serves mutations from the
//! CLI over a root-only Unix socket.
mod endpoint;
mod node;
mod server;

use std::path::PathBuf;

use ipnet::Ipv4Net;
use tracing::{info, warn};

use crate::{
    datapath::{Datapath, DatapathError},
    paths::Paths,
    plumbing::{self, PlumbingError},
    state::{EndpointRecord, Ipam, Mode, StateError, Store},
};

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
}

pub struct Agent {
    paths: Paths,
    ipam: Ipam,
    node: node::Node,
    datapath: Datapath,
    store: Store,
    endpoints: Vec<EndpointRecord>,
    netlink: rtnetlink::Handle,
}

impl Agent {
    /// Node set-up and datapath load. Must run inside a tokio runtime (netlink).
    pub async fn start(config: AgentConfig) -> Result<Self, AgentError> {
        let AgentConfig { paths, pod_cidr, mode, bridge_name, uplink } = config;
        let (conn, netlink, _) = rtnetlink::new_connection().map_err(PlumbingError::Socket)?;
        tokio::spawn(conn);
        let store = Store::new(paths.state_file());
        let endpoints = store.load()?;
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
        let ipam = Ipam::new(pod_cidr);
        let owned: Vec<u32> = endpoints.iter().map(|e| e.host_ifindex).collect();
        let node_cfg = node::NodeConfig { mode, bridge_name: &bridge_name, uplink: uplink.as_deref() };
        let node = node::setup(&netlink, &ipam, node_cfg, &owned).await?;
        for (key, value) in plumbing::sysctl::NODE_SYSCTLS {
            plumbing::sysctl::set(key, value)?;
        }
        plumbing::bpffs::ensure(&paths.bpffs_dir)?;
        let datapath = Datapath::load(&paths.bpffs_dir)?;
        let mut agent = Agent { paths, ipam, node, datapath, store, endpoints, netlink };
        agent.adopt().await?;
        info!(mode = %mode, pod_cidr = %agent.ipam.cidr(), gateway = %agent.ipam.gateway(),
              attach = ?agent.datapath.mode(), endpoints = agent.endpoints.len(), "agent ready");
        Ok(agent)
    }

    /// Re-attaches the endpoints in the state file whose veth still exists; forgets those
    /// whose container is gone (their veth died with the namespace).
    async fn adopt(&mut self) -> Result<(), AgentError> {
        let mut kept = Vec::new();
        for rec in std::mem::take(&mut self.endpoints) {
            match plumbing::link::get(&self.netlink, &rec.host_ifname).await? {
                Some(link) if link.index == rec.host_ifindex => {
                    self.datapath.register(rec.ip, endpoint::info_of(&rec)?)?;
                    self.datapath.attach(&rec.host_ifname, rec.host_ifindex)?;
                    kept.push(rec);
                }
                _ => {
                    warn!(endpoint = %rec.name, veth = %rec.host_ifname, "veth gone; forgetting endpoint");
                    self.datapath.unregister(rec.ip)?;
                }
            }
        }
        self.endpoints = kept;
        self.store.save(&self.endpoints)?;
        Ok(())
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }
}
