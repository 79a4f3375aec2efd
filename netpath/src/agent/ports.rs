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
        self.check_host_ip(spec.host_ip)?;
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

    /// Can a port be published on `host_ip` (None: every node address)?
    pub(super) fn check_host_ip(&self, host_ip: Option<Ipv4Addr>) -> Result<(), AgentError> {
        match host_ip {
            // Loopback: for the node's own processes only, through the socket hooks,
            // which act only where the kernel tells the node's namespace by its cookie.
            Some(ip) if ip.is_loopback() && crate::plumbing::netns::current_cookie().is_none() => {
                Err(AgentError::LoopbackNeedsCookie { ip })
            }
            // Any address of the uplink, where the programs see the packets for it.
            Some(ip) if !ip.is_loopback() && !self.node.uplink_ips.contains(&ip) => {
                Err(AgentError::HostIpNotNode {
                    ip,
                    uplink: self.node.uplink_name.clone().unwrap_or_default(),
                    addresses: self.node.uplink_ips.clone(),
                })
            }
            _ => Ok(()),
        }
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

    /// Several mappings, all or none: checked together, then published in one state
    /// transaction and one map batch, so ten thousand cost about what one does. Asking
    /// for what is published already, exactly so, is a success that changes nothing.
    pub async fn ports_add(&mut self, specs: Vec<PortSpec>) -> Result<Vec<PortRecord>, AgentError> {
        // The ports adds in flight will publish count as taken.
        let mut planned: Vec<PortRecord> = self.inflight.held_ports();
        let held = planned.len();
        let mut out = Vec::with_capacity(specs.len());
        for spec in specs {
            // The port's own faults first, then the endpoint's (the order users have seen).
            if spec.container_port == Some(0) || (spec.host_port == 0 && spec.container_port.is_none()) {
                return Err(AgentError::PortZero);
            }
            self.ports.check_range(spec.host_port)?;
            let Some(ep) = self.endpoints.get(&spec.endpoint) else {
                return Err(AgentError::NoEndpoint { name: spec.endpoint });
            };
            let (name, ip) = (ep.name.clone(), ep.ip);
            match self.port_plan(&spec, &name, ip, &planned)? {
                Some(rec) => {
                    out.push(rec.clone());
                    planned.push(rec);
                }
                // Published already, exactly so (a host port of 0 never lands here).
                None => out.push(PortRecord {
                    proto: spec.proto,
                    host_ip: spec.host_ip,
                    host_port: spec.host_port,
                    endpoint: name,
                    container_ip: ip,
                    container_port: spec.container_port.unwrap_or(spec.host_port),
                }),
            }
        }
        self.publish(&planned[held..])?;
        Ok(out)
    }

    pub async fn port_add(&mut self, spec: PortSpec) -> Result<PortRecord, AgentError> {
        let mut recs = self.ports_add(vec![spec]).await?;
        Ok(recs.remove(0))
    }

    /// Records `recs` and writes them to the datapath; on any failure neither keeps them.
    fn publish(&mut self, recs: &[PortRecord]) -> Result<(), AgentError> {
        if recs.is_empty() {
            return Ok(());
        }
        let entries: Vec<_> = recs.iter().map(entry).collect();
        self.ports.insert_many(recs)?;
        let applied = self.datapath.set_ports(&entries).map_err(AgentError::from).and_then(|()| {
            // The endpoints' "has published ports" flag.
            self.reregister(recs)?;
            // The programs look at other addresses of the uplink only once told to.
            match recs.iter().any(|r| self.on_other_address(r)) {
                true => self.write_node_config(),
                false => Ok(()),
            }
        });
        if let Err(e) = applied {
            let keys: Vec<_> = recs.iter().map(|r| (r.proto, r.host_port, r.host_ip)).collect();
            if let Err(undo) = self.ports.remove_many(&keys) {
                warn!(
                    "cannot take back the ports of a failed publish: {undo}; `netpath reconcile` repairs it"
                );
            }
            let _ = self.datapath.remove_ports(&entries.iter().map(|(k, _)| *k).collect::<Vec<_>>());
            let _ = self.reregister(recs);
            return Err(e);
        }
        match recs {
            [rec] => info!(proto = %rec.proto, host_port = rec.host_port, endpoint = %rec.endpoint,
                           container_port = rec.container_port, "port published"),
            _ => info!(count = recs.len(), "ports published"),
        }
        Ok(())
    }

    /// Writes the datapath's entry of every endpoint `recs` name again (once each).
    fn reregister(&mut self, recs: &[PortRecord]) -> Result<(), AgentError> {
        let names: std::collections::BTreeSet<&str> = recs.iter().map(|r| r.endpoint.as_str()).collect();
        for name in names {
            if let Some(ep) = self.endpoints.get(name).cloned() {
                let info = self.endpoint_info(&ep)?;
                self.datapath.register(ep.ip, info)?;
            }
        }
        Ok(())
    }

    /// Unpublishes several ports in one state transaction and one map batch; returns, for
    /// each, whether it was published.
    pub fn ports_del(&mut self, keys: &[(Proto, u16, Option<Ipv4Addr>)]) -> Result<Vec<bool>, AgentError> {
        let gone = self.ports.remove_many(keys)?;
        let existed =
            keys.iter().map(|k| gone.iter().any(|p| (p.proto, p.host_port, p.host_ip) == *k)).collect();
        if gone.is_empty() {
            return Ok(existed);
        }
        if let Err(e) = self.datapath.remove_ports(&gone.iter().map(|r| entry(r).0).collect::<Vec<_>>()) {
            // The state said gone while the maps still served them: put both back (a
            // batch may have stopped part way).
            if let Err(undo) = self.ports.insert_many(&gone) {
                warn!("cannot take back the ports of a failed unpublish: {undo}; `netpath reconcile` repairs it");
            }
            let _ = self.datapath.set_ports(&gone.iter().map(entry).collect::<Vec<_>>());
            return Err(e.into());
        }
        if gone.iter().any(|r| self.on_other_address(r)) {
            self.write_node_config()?;
        }
        // An endpoint may have no published port left: drop its flag.
        self.reregister(&gone)?;
        match &gone[..] {
            [rec] => info!(proto = %rec.proto, host_port = rec.host_port, "port unpublished"),
            _ => info!(count = gone.len(), "ports unpublished"),
        }
        Ok(existed)
    }

    /// Unpublishes a port; `Ok(false)` when it was not published.
    pub fn port_del(
        &mut self,
        proto: Proto,
        host_port: u16,
        host_ip: Option<Ipv4Addr>,
    ) -> Result<bool, AgentError> {
        Ok(self.ports_del(&[(proto, host_port, host_ip)])?[0])
    }
}
