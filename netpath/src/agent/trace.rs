//! The node's one trace: the agent arms the datapath's filter for a client and disarms
//! it when that client's connection ends, however it ends. A second trace is refused,
//! naming the first, instead of silently taking its filter.
use netpath_common::TraceFilter;
use tracing::{info, warn};

use super::{Agent, AgentError};
use crate::api::{AgentStatus, TraceSpec};

pub struct Session {
    id: u64,
    pid: u32,
    filter: String,
}

/// The filter in words, for the refusal of a second trace and the agent's log.
fn describe(spec: &TraceSpec) -> String {
    let mut parts = Vec::new();
    if let Some(e) = &spec.endpoint {
        parts.push(format!("endpoint {e}"));
    }
    if let Some(h) = spec.host {
        parts.push(format!("host {h}"));
    }
    if let Some(p) = spec.port {
        parts.push(format!("port {p}"));
    }
    if let Some(p) = spec.proto {
        parts.push(match p {
            6 => "tcp".to_string(),
            17 => "udp".to_string(),
            1 => "icmp".to_string(),
            p => format!("protocol {p}"),
        });
    }
    if spec.drops_only {
        parts.push("drops only".into());
    }
    if parts.is_empty() {
        "every packet".into()
    } else {
        parts.join(", ")
    }
}

impl Agent {
    pub(super) fn trace_start(&mut self, spec: TraceSpec, pid: u32) -> Result<u64, AgentError> {
        if let Some(t) = &self.trace {
            return Err(AgentError::TraceRunning { pid: t.pid, filter: t.filter.clone() });
        }
        // An endpoint's packets of both families: its IPv4 address and its IPv6 one.
        let (endpoint, endpoint6) = match &spec.endpoint {
            None => ([0; 4], [0; 16]),
            Some(name) => self
                .endpoints
                .get(name)
                .map(|e| (e.ip.octets(), e.ip6.map_or([0; 16], |a| a.octets())))
                .ok_or_else(|| AgentError::NoEndpoint { name: name.clone() })?,
        };
        let (host, host6) = match spec.host {
            None => ([0; 4], [0; 16]),
            Some(std::net::IpAddr::V4(h)) => (h.octets(), [0; 16]),
            Some(std::net::IpAddr::V6(h)) => ([0; 4], h.octets()),
        };
        let filter = TraceFilter {
            enabled: 1,
            drops_only: spec.drops_only.into(),
            endpoint,
            host,
            port: spec.port.map_or([0; 2], u16::to_be_bytes),
            proto: spec.proto.unwrap_or(0),
            _pad: 0,
            endpoint6,
            host6,
        };
        self.datapath.set_trace_filter(filter)?;
        let id = self.trace.as_ref().map_or(0, |t| t.id)
            + u64::from(pid) * 1_000_003
            + crate::datapath::monotonic_ns();
        let session = Session { id, pid, filter: describe(&spec) };
        info!(pid, filter = %session.filter, "trace started");
        self.trace = Some(session);
        Ok(id)
    }

    /// The client of trace `id` is gone: disarm (every armed packet pays a snapshot).
    pub(super) fn trace_end(&mut self, id: u64) {
        if self.trace.as_ref().is_some_and(|t| t.id == id) {
            self.trace_stop_all();
        }
    }

    pub(super) fn trace_stop_all(&mut self) {
        if let Some(t) = self.trace.take() {
            if let Err(e) = self.datapath.set_trace_filter(TraceFilter::default()) {
                warn!("cannot disarm the trace filter: {e}");
            }
            info!(pid = t.pid, "trace ended");
        }
    }

    pub(super) fn status(&self) -> AgentStatus {
        AgentStatus {
            pid: std::process::id(),
            agent_id: self.id.to_string(),
            uplink: self.node.uplink_name.clone(),
            uplink_up: self.node.uplink.is_some(),
            node_ip: self.node.node_ip,
            pod_cidr: Some(self.endpoints.ipam().cidr()),
            endpoints: self.endpoints.all().len(),
            ports: self.ports.all().len(),
            trace: self.trace.as_ref().map(|t| format!("PID {}, {}", t.pid, t.filter)),
            cluster: self.cluster.as_ref().map(|m| crate::api::ClusterStatus {
                node_name: m.record().name.clone(),
                store: m.store().to_string(),
                pod_cidr: m.record().pod_cidr,
                pod_cidr6: m.cluster6().map(|(_, _, net)| net),
                store_connected: m.connected(),
            }),
        }
    }
}
