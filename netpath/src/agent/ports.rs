//! Published ports: `proto host_ip:host_port` on the node -> a container's port, in a
//! hash map the datapath reads per new connection (cost independent of how many).
use std::net::Ipv4Addr;

use tracing::{info, warn};

use super::{Agent, AgentError};
use crate::{
    api::PortSpec,
    state::{PortRecord, Proto},
};

pub(super) use crate::datapath::entries::port as entry;

/// Where a port published without a host port lands (see `free_host_port`).
pub const FREE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

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
        if spec.container_port == Some(0) || (spec.host_port == 0 && spec.container_port.is_none()) {
            return Err(AgentError::PortZero);
        }
        let host_port = match spec.host_port {
            0 => self.free_host_port(spec.proto, spec.host_ip, spec.host_port_from.clone(), also)?,
            port => {
                self.ports.check_range(port)?;
                port
            }
        };
        match spec.host_ip {
            // Loopback: for the node's own processes only, through the socket hooks,
            // which act only where the kernel tells the node's namespace by its cookie.
            Some(ip) if ip.is_loopback() && crate::plumbing::netns::current_cookie().is_none() => {
                return Err(AgentError::LoopbackNeedsCookie { ip });
            }
            // Any address of the uplink, where the programs see the packets for it.
            Some(ip) if !ip.is_loopback() && !self.node.uplink_ips.contains(&ip) => {
                return Err(AgentError::HostIpNotNode {
                    ip,
                    uplink: self.node.uplink_name.clone().unwrap_or_default(),
                    addresses: self.node.uplink_ips.clone(),
                });
            }
            _ => {}
        }
        let rec = PortRecord {
            proto: spec.proto,
            host_ip: spec.host_ip,
            host_port,
            endpoint: endpoint.to_string(),
            container_ip,
            container_port: spec.container_port.unwrap_or(host_port),
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

    /// A host port nobody publishes for `proto` on `host_ip`, skipping the NAT range
    /// and ports the node's own sockets hold.
    /// - `from`: docker's `-p 8000-8010:80`, the first free one of the user's range.
    /// - None: docker's -p without a host port. From Kubernetes' NodePort range, below
    ///   the default ephemeral ports, also skipping the node's ephemeral range (a reply
    ///   to a node socket must not be taken for a published port); from a random start,
    ///   so that a port just freed is not handed out again at once.
    fn free_host_port(
        &self,
        proto: Proto,
        host_ip: Option<Ipv4Addr>,
        from: Option<std::ops::RangeInclusive<u16>>,
        also: &[PortRecord],
    ) -> Result<u16, AgentError> {
        let in_use = crate::plumbing::sockets::bound_ports(proto);
        let (range, ephemeral, start) = match from {
            Some(r) if *r.start() == 0 || r.is_empty() => return Err(AgentError::PortZero),
            Some(r) => (r, None, 0),
            None => {
                let start = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos() as usize);
                (FREE_PORTS, super::start::ephemeral_ports().ok(), start)
            }
        };
        let (first, count) = (*range.start(), range.end() - range.start() + 1);
        for i in 0..count as usize {
            let port = first + ((start + i) % count as usize) as u16;
            let probe = PortRecord {
                proto,
                host_ip,
                host_port: port,
                endpoint: String::new(),
                container_ip: Ipv4Addr::UNSPECIFIED,
                container_port: 0,
            };
            let taken = self.ports.clash(&probe).is_some() || also.iter().any(|p| p.clashes(&probe));
            let reserved = self.ports.check_range(port).is_err()
                || ephemeral.as_ref().is_some_and(|e| e.contains(&port))
                || in_use.contains(&port);
            if !taken && !reserved {
                return Ok(port);
            }
        }
        Err(AgentError::NoFreeHostPort { proto, range })
    }

    /// Several mappings, all or none: checked together before any is published, and
    /// those this call published are taken back when a later one fails.
    pub async fn ports_add(&mut self, specs: Vec<PortSpec>) -> Result<Vec<PortRecord>, AgentError> {
        let mut planned: Vec<PortRecord> = Vec::new();
        let mut todo = Vec::new();
        for spec in specs {
            let Some(ep) = self.endpoints.get(&spec.endpoint).cloned() else {
                return Err(AgentError::NoEndpoint { name: spec.endpoint });
            };
            match self.port_plan(&spec, &ep.name, ep.ip, &planned)? {
                // The host port as planned (a free one chosen once).
                Some(rec) => {
                    todo.push((PortSpec { host_port: rec.host_port, ..spec }, true));
                    planned.push(rec);
                }
                None => todo.push((spec, false)),
            }
        }
        let mut out = Vec::new();
        for (spec, new) in todo {
            match self.port_add(spec).await {
                Ok(rec) => out.push((rec, new)),
                Err(e) => {
                    for (rec, _) in out.iter().filter(|(_, new)| *new) {
                        if let Err(undo) = self.port_del(rec.proto, rec.host_port, rec.host_ip) {
                            warn!(proto = %rec.proto, host_port = rec.host_port,
                                  "cannot unpublish after a later port failed: {undo}; `netpath port del` removes it");
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(out.into_iter().map(|(rec, _)| rec).collect())
    }

    pub async fn port_add(&mut self, spec: PortSpec) -> Result<PortRecord, AgentError> {
        // The port's own faults first, then the endpoint's (the order users have seen).
        if spec.container_port == Some(0) || (spec.host_port == 0 && spec.container_port.is_none()) {
            return Err(AgentError::PortZero);
        }
        self.ports.check_range(spec.host_port)?;
        let Some(ep) = self.endpoints.get(&spec.endpoint).cloned() else {
            return Err(AgentError::NoEndpoint { name: spec.endpoint });
        };
        let Some(rec) = self.port_plan(&spec, &ep.name, ep.ip, &[])? else {
            // Published already, exactly so (a host port of 0 never lands here).
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
        // The programs look at other addresses of the uplink only once told to.
        let applied = applied.and_then(|()| match self.on_other_address(&rec) {
            true => self.write_node_config(),
            false => Ok(()),
        });
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
        if self.on_other_address(&rec) {
            self.write_node_config()?;
        }
        // The endpoint may have no published port left: drop its flag.
        if let Some(ep) = self.endpoints.get(&rec.endpoint).cloned() {
            let info = self.endpoint_info(&ep)?;
            self.datapath.register(ep.ip, info)?;
        }
        info!(proto = %rec.proto, host_port = rec.host_port, "port unpublished");
        Ok(true)
    }
}
