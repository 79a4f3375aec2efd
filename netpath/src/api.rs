//! The agent's API: one JSON request per line on a Unix socket, one JSON reply line.
//! The CLI and the agent share these types instead of parsing each other's output.
use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
};

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
    /// The IPv6 address, inside the agent's --pod-cidr6; allocated when omitted (an
    /// agent with an IPv6 pod CIDR gives every endpoint both families).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<std::net::Ipv6Addr>,
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
    /// None: every address of the node, both families; an address: its family only.
    pub host_ip: Option<IpAddr>,
    pub endpoint: String,
    /// Defaults to the host port.
    pub container_port: Option<u16>,
    /// With `host_port` 0, the host ports to choose the free one from, first free first
    /// (docker's `-p 8000-8010:80`); `None`: one of `FREE_PORTS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port_from: Option<std::ops::RangeInclusive<u16>>,
}

/// What a node should have (`netpath apply -f`, `netpath export`): the endpoints an
/// operator declares and their published ports. Endpoints a runtime added (CNI) are the
/// runtime's and not part of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    #[serde(default)]
    pub endpoints: Vec<EndpointDecl>,
    #[serde(default)]
    pub ports: Vec<PortDecl>,
}

/// One declared endpoint; what it leaves out the agent chooses, as `endpoint add` does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointDecl {
    pub name: String,
    pub netns: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// Default `eth0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// One declared published port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortDecl {
    #[serde(default = "tcp")]
    pub proto: Proto,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub endpoint: String,
    /// Default: the host port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<u16>,
}

fn tcp() -> Proto {
    Proto::Tcp
}

impl NodeSpec {
    /// The node's state as an apply file declares it (`netpath export`): the endpoints no
    /// runtime added, with everything the agent chose for them, and their ports.
    pub fn of_state(endpoints: &[EndpointRecord], ports: &[PortRecord]) -> NodeSpec {
        let declared: Vec<&EndpointRecord> = endpoints.iter().filter(|e| e.owner.is_none()).collect();
        NodeSpec {
            endpoints: declared
                .iter()
                .map(|e| EndpointDecl {
                    name: e.name.clone(),
                    netns: e.netns.clone(),
                    ip: Some(e.ip),
                    ifname: Some(e.ifname.clone()),
                    mtu: Some(e.mtu),
                })
                .collect(),
            ports: ports
                .iter()
                .filter(|p| declared.iter().any(|e| e.name == p.endpoint))
                .map(|p| PortDecl {
                    proto: p.proto,
                    host_ip: p.host_ip,
                    host_port: p.host_port,
                    endpoint: p.endpoint.clone(),
                    container_port: Some(p.container_port),
                })
                .collect(),
        }
    }
}

/// One change `apply` made (or would make).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// `add`, `del` or `replace`.
    pub op: String,
    /// `endpoint web`, `port tcp *:8080`.
    pub subject: String,
    pub detail: String,
}

/// The declared entry an `apply` refusal is about, for the CLI to name its line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeclRef {
    Endpoint(usize),
    Port(usize),
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
        /// Answer once the endpoint is out of the state and the datapath, before its
        /// pair is gone (the kernel's deletion waits out RCU, ~20 ms); a later change of
        /// the same endpoint waits for it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        no_wait: bool,
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
        host_ip: Option<IpAddr>,
    },
    /// Several ports, in one transaction; the reply says which were published.
    PortsDel {
        proto: Proto,
        host_ports: Vec<u16>,
        host_ip: Option<IpAddr>,
    },
    /// Make the node's declared endpoints and ports exactly `spec` (or only say what
    /// that would change).
    Apply {
        spec: NodeSpec,
        dry_run: bool,
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
    pub host: Option<std::net::IpAddr>,
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
    /// The node's IPv6 subnet, when the agent runs with `--cluster-cidr6` (older agents
    /// send none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr6: Option<ipnet::Ipv6Net>,
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
    Applied {
        dry_run: bool,
        changes: Vec<Change>,
    },

    /// An `apply` refused, naming the declared entry at fault; nothing was changed.
    ApplyRefused {
        entry: DeclRef,
        message: String,
    },
    /// An `apply` that failed part way (the kernel or the disk refused a change the
    /// checks allowed), at the declared entry when there is one; `restored` says whether
    /// what it had changed was all taken back.
    ApplyFailed {
        entry: Option<DeclRef>,
        message: String,
        restored: bool,
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
