//! The agent's API: one JSON request per line on a Unix socket, one JSON reply line.
//! The CLI and the agent share these types instead of parsing each other's output.
use std::{net::Ipv4Addr, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::{EndpointRecord, PortRecord, Proto};

/// What a user asks for when attaching a container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSpec {
    pub name: String,
    /// The container's network namespace (a bind-mounted netns file or /proc/PID/ns/net).
    pub netns: PathBuf,
    /// Interface name inside the container.
    pub ifname: String,
    pub ip: Option<Ipv4Addr>,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    /// Who asked for it: a runtime's container ID (CNI). An add of the same name by
    /// another owner is refused; the same owner's is idempotent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Ports to publish with it, all or none: checked before anything is made, and the
    /// endpoint is taken away again when one cannot be published (`endpoint` of each is
    /// this endpoint).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
}

/// What a user asks for when publishing a port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    pub proto: Proto,
    pub host_port: u16,
    pub host_ip: Option<Ipv4Addr>,
    pub endpoint: String,
    /// Defaults to the host port.
    pub container_port: Option<u16>,
    /// With `host_port` 0, the host ports to choose the free one from, first free first
    /// (docker's `-p 8000-8010:80`); `None`: one of `FREE_PORTS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port_from: Option<std::ops::RangeInclusive<u16>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    EndpointAdd(EndpointSpec),
    EndpointDel {
        name: String,
        /// Delete only when the endpoint is this owner's (CNI: a container whose ID
        /// shares the name's prefix must not take another's endpoint with it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
    },
    /// `host_port` 0: a free one from 30000-32767.
    PortAdd(PortSpec),
    /// Several mappings, all or none (a range of docker's -p).
    PortsAdd {
        ports: Vec<PortSpec>,
    },
    PortDel {
        proto: Proto,
        host_port: u16,
        host_ip: Option<Ipv4Addr>,
    },
    /// Several ports, in one transaction; the reply says which were published.
    PortsDel {
        proto: Proto,
        host_ports: Vec<u16>,
        host_ip: Option<Ipv4Addr>,
    },
    /// Compare the state with the kernel and repair the drift (or only report it).
    Reconcile {
        dry_run: bool,
    },
    /// Arm the datapath's trace filter for as long as this connection stays open.
    TraceStart(TraceSpec),
    /// What the agent knows of the node now.
    Status,
    /// Every node of the cluster (cluster mode).
    NodeList,
    /// Forget a stopped node and free its subnet (cluster mode).
    NodeDel {
        name: String,
    },
    /// Compare one endpoint, and the ports it should publish, with the kernel; change
    /// nothing (CNI's CHECK).
    EndpointCheck {
        name: String,
        /// Exactly the ports it should publish (others of its own are drift too).
        ports: Vec<PortSpec>,
        /// What the runtime knows of it: any that differs is drift.
        #[serde(default)]
        expect: CheckExpect,
    },
    /// Every endpoint, as the agent holds it (CNI's GC: the state file is the agent's;
    /// the plugin knows only the socket).
    EndpointList,
}

/// What a runtime's CHECK expects of an endpoint, as its ADD left it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckExpect {
    pub owner: Option<String>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    pub ip: Option<Ipv4Addr>,
    pub mac: Option<String>,
}

/// What a trace shows; every field narrows it (None/false: no restriction).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceSpec {
    pub endpoint: Option<String>,
    pub host: Option<Ipv4Addr>,
    pub port: Option<u16>,
    /// IP protocol number (6, 17, 1).
    pub proto: Option<u8>,
    pub drops_only: bool,
}

/// The agent's answer to [`Request::Status`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub pid: u32,
    pub agent_id: String,
    /// The uplink's name (configured or found at start).
    pub uplink: Option<String>,
    /// False while the uplink is gone.
    pub uplink_up: bool,
    pub node_ip: Option<Ipv4Addr>,
    /// The subnet endpoints get their addresses from (agents before this field: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<ipnet::Ipv4Net>,
    pub endpoints: usize,
    pub ports: usize,
    /// The running trace: its client's PID and filter.
    pub trace: Option<String>,
    /// Cluster mode: the node's membership.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
}

/// What [`AgentStatus`] says of the node's cluster membership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node_name: String,
    pub store: String,
    pub pod_cidr: ipnet::Ipv4Net,
    /// Is the agent in touch with the store now?
    pub store_connected: bool,
}

/// One drift found by reconciliation, and what was (or would be) done about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repair {
    /// What drifted: an endpoint, a port, a link, a map entry.
    pub subject: String,
    pub problem: String,
    pub fix: String,
    /// Why the repair failed; None when it succeeded or was not attempted (dry run).
    pub failed: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Reply {
    Endpoint(EndpointRecord),
    Port(PortRecord),
    Ports {
        ports: Vec<PortRecord>,
    },
    Deleted {
        existed: bool,
    },
    /// For each port of a `PortsDel`, in order: was it published?
    PortsDeleted {
        existed: Vec<bool>,
    },
    Reconciled {
        dry_run: bool,
        repairs: Vec<Repair>,
    },
    TraceStarted {
        session: u64,
    },
    Status(AgentStatus),
    Nodes {
        nodes: Vec<crate::cluster::NodeStatus>,
    },
    NodeDeleted(crate::cluster::NodeRecord),
    /// What differs between an endpoint and the kernel: one line each, none when it
    /// matches.
    Checked {
        drift: Vec<String>,
    },
    Endpoints {
        endpoints: Vec<EndpointRecord>,
    },
    Error {
        message: String,
    },
}

/// One reply line: the reply, and what the operator should know besides (a change that
/// was made but cannot take effect yet, for instance).
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    #[serde(flatten)]
    pub reply: Reply,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}
