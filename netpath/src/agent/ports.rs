//! Published ports: `proto host_ip:host_port` on the node -> a container's port, in a
//! hash map the datapath reads per new connection (cost independent of how many).
use std::net::Ipv4Addr;

use tracing::info;

use super::{Agent, AgentError};
use crate::{
    api::PortSpec,
    state::{PortRecord, Proto},
};

pub(super) use crate::datapath::entries::port as entry;

impl Agent {
    /// The record `spec` asks for, for the endpoint `endpoint` at `container_ip`,
    /// checked against the node and the published ports (and `also`, ports about to be
    /// published with it) without changing anything. `None`: exactly that is published.
    pub(super) fn port_plan(
        &self,
        spec: &PortSpec,
        endpoint: &str,
        container_ip: Ipv4Addr,
        also: &[PortRecord],
    ) -> Result<Option<PortRecord>, AgentError> {
        if spec.host_port == 0 || spec.container_port == Some(0) {
            return Err(AgentError::PortZero);
        }
        self.ports.check_range(spec.host_port)?;
        if let Some(ip) = spec.host_ip {
            if Some(ip) != self.node.node_ip {
                return Err(AgentError::HostIpNotNode { ip, node_ip: self.node.node_ip });
            }
        }
        let rec = PortRecord {
            proto: spec.proto,
            host_ip: spec.host_ip,
            host_port: spec.host_port,
            endpoint: endpoint.to_string(),
            container_ip,
            container_port: spec.container_port.unwrap_or(spec.host_port),
        };
        let planned = also.iter().find(|p| p.clashes(&rec));
        if let Some(old) = self.ports.clash(&rec).or(planned) {
            if *old == rec {
                return Ok(None);
            }
            return Err(AgentError::PortTaken {
                proto: rec.proto,
                port: rec.host_port,
                endpoint: old.endpoint.clone(),
                container_port: old.container_port,
            });
        }
        Ok(Some(rec))
    }

    pub async fn port_add(&mut self, spec: PortSpec) -> Result<PortRecord, AgentError> {
        // The port's own faults first, then the endpoint's (the order users have seen).
        if spec.host_port == 0 || spec.container_port == Some(0) {
            return Err(AgentError::PortZero);
        }
        self.ports.check_range(spec.host_port)?;
        let Some(ep) = self.endpoints.get(&spec.endpoint).cloned() else {
            return Err(AgentError::NoEndpoint { name: spec.endpoint });
        };
        let Some(rec) = self.port_plan(&spec, &ep.name, ep.ip, &[])? else {
            return Ok(PortRecord {
                proto: spec.proto,
                host_ip: spec.host_ip,
                host_port: spec.host_port,
                endpoint: ep.name,
                container_ip: ep.ip,
                container_port: spec.container_port.unwrap_or(spec.host_port),
            });
        };
        self.ports.insert(rec.clone())?;
        let (key, target) = entry(&rec);
        let applied = match self.datapath.set_port(key, target) {
            Ok(()) => self.endpoint_info(&ep).and_then(|info| Ok(self.datapath.register(ep.ip, info)?)),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = applied {
            let _ = self.ports.remove(rec.proto, rec.host_port, rec.host_ip);
            let _ = self.datapath.remove_port(&key);
            return Err(e);
        }
        info!(proto = %rec.proto, host_port = rec.host_port, endpoint = %rec.endpoint,
              container_port = rec.container_port, "port published");
        Ok(rec)
    }

    /// Unpublishes a port; `Ok(false)` when it was not published.
    pub fn port_del(
        &mut self,
        proto: Proto,
        host_port: u16,
        host_ip: Option<Ipv4Addr>,
    ) -> Result<bool, AgentError> {
        let Some(rec) = self.ports.remove(proto, host_port, host_ip)? else {
            return Ok(false);
        };
        self.datapath.remove_port(&entry(&rec).0)?;
        // The endpoint may have no published port left: drop its flag.
        if let Some(ep) = self.endpoints.get(&rec.endpoint).cloned() {
            let info = self.endpoint_info(&ep)?;
            self.datapath.register(ep.ip, info)?;
        }
        info!(proto = %rec.proto, host_port = rec.host_port, "port unpublished");
        Ok(true)
    }
}
