//! Published ports: `proto host_ip:host_port` on the node -> a container's port, in a
//! hash map the datapath reads per new connection (cost independent of how many).
use std::net::Ipv4Addr;

use netpath_common::{PortKey, PortTarget};
use tracing::info;

use super::{Agent, AgentError};
use crate::{
    api::PortSpec,
    state::{PortRecord, Proto},
};

/// The map entry for a published port.
pub(super) fn entry(p: &PortRecord) -> (PortKey, PortTarget) {
    let key = PortKey {
        host_ip: p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED).octets(),
        port: p.host_port.to_be_bytes(),
        proto: p.proto.number(),
        _pad: 0,
    };
    let target =
        PortTarget { ip: p.container_ip.octets(), port: p.container_port.to_be_bytes(), _pad: [0; 2] };
    (key, target)
}

impl Agent {
    pub async fn port_add(&mut self, spec: PortSpec) -> Result<PortRecord, AgentError> {
        if spec.host_port == 0 || spec.container_port == Some(0) {
            return Err(AgentError::Invalid("port 0 cannot be published: use 1-65535".into()));
        }
        if self.nat_ports.contains(&spec.host_port) {
            return Err(AgentError::PortInNatRange { port: spec.host_port, nat: self.nat_ports.clone() });
        }
        let Some(ep) = self.endpoints.iter().find(|e| e.name == spec.endpoint).cloned() else {
            return Err(AgentError::Invalid(format!(
                "no endpoint {:?}; add it with `netpath endpoint add` first (see `netpath endpoint list`)",
                spec.endpoint
            )));
        };
        if let Some(ip) = spec.host_ip {
            if Some(ip) != self.node.node_ip {
                return Err(AgentError::Invalid(format!(
                    "--host-ip {ip} is not the node's uplink address ({}); omit it to publish on the node address",
                    self.node.node_ip.map_or("none".to_string(), |a| a.to_string())
                )));
            }
        }
        let rec = PortRecord {
            proto: spec.proto,
            host_ip: spec.host_ip,
            host_port: spec.host_port,
            endpoint: ep.name.clone(),
            container_ip: ep.ip,
            container_port: spec.container_port.unwrap_or(spec.host_port),
        };
        if let Some(old) = self.ports.iter().find(|p| p.clashes(&rec)) {
            if *old == rec {
                return Ok(rec);
            }
            return Err(AgentError::Invalid(format!(
                "host port {}/{} is already published for {}:{}; delete it first (netpath port del --proto {} {})",
                rec.proto, rec.host_port, old.endpoint, old.container_port, rec.proto, rec.host_port
            )));
        }
        let mut next = self.ports.clone();
        next.push(rec.clone());
        self.port_store.save(&next)?;
        self.ports = next;
        let (key, target) = entry(&rec);
        let applied = self.datapath.set_port(key, target).and_then(|()| {
            let info =
                self.endpoint_info(&ep).map_err(|e| crate::datapath::DatapathError::Cpus(e.to_string()))?;
            self.datapath.register(ep.ip, info)
        });
        if let Err(e) = applied {
            self.ports.retain(|p| *p != rec);
            let _ = self.port_store.save(&self.ports);
            let _ = self.datapath.remove_port(&key);
            return Err(e.into());
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
        let Some(pos) = self
            .ports
            .iter()
            .position(|p| p.proto == proto && p.host_port == host_port && p.host_ip == host_ip)
        else {
            return Ok(false);
        };
        let mut next = self.ports.clone();
        let rec = next.remove(pos);
        self.port_store.save(&next)?;
        self.ports = next;
        self.datapath.remove_port(&entry(&rec).0)?;
        // The endpoint may have no published port left: drop its flag.
        if let Some(ep) = self.endpoints.iter().find(|e| e.name == rec.endpoint).cloned() {
            let info = self.endpoint_info(&ep)?;
            self.datapath.register(ep.ip, info)?;
        }
        info!(proto = %rec.proto, host_port = rec.host_port, "port unpublished");
        Ok(true)
    }
}
