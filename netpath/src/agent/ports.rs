//! Published ports: `proto host_ip:host_port` on the node -> a container's port, in a
//! hash map per family the datapath reads per new connection (cost independent of how
//! many). A port without a host address is published on both families of its endpoint,
//! one with a host address on that address's family only.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tracing::{info, warn};

use super::{Agent, AgentError};
use crate::{
    api::PortSpec,
    datapath::{
        entries,
        family::{Ipv4, Ipv6},
    },
    state::{PortRecord, Proto},
};

/// A port's key: what `port del` names.
type Key = (Proto, u16, Option<IpAddr>);

/// Where a port published without a host port lands (see `free_host_port`).
pub const FREE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

impl Agent {
    /// The record `spec` asks for, for the endpoint `endpoint` at `container_ip` (and
    /// `container_ip6`, when it has IPv6), checked against the node and the published
    /// ports (and `also`, ports about to be published with it) without changing
    /// anything. `None`: exactly that is published.
    pub(super) fn port_plan(
        &self,
        spec: &PortSpec,
        endpoint: &str,
        container_ip: Ipv4Addr,
        container_ip6: Option<Ipv6Addr>,
        also: &[PortRecord],
    ) -> Result<Option<PortRecord>, AgentError> {
        self.ports_apply(spec.host_port)?;
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
        check_family(spec.host_ip, endpoint, container_ip6)?;
        let rec = PortRecord {
            proto: spec.proto,
            host_ip: spec.host_ip,
            host_port,
            endpoint: endpoint.to_string(),
            container_ip,
            container_ip6,
            container_port: spec.container_port.unwrap_or(host_port),
        };
        let planned = also.iter().find(|p| p.clashes(&rec));
        if let Some(old) = self.ports.clash(&rec).or(planned) {
            if old.same_mapping(&rec) {
                return Ok(None);
            }
            return Err(AgentError::PortTaken {
                proto: rec.proto,
                port: rec.host_port,
                host_ip: old.host_ip,
                endpoint: old.endpoint.clone(),
                container_port: old.container_port,
            });
        }
        Ok(Some(rec))
    }

    /// Can a port be published on `host_ip` (None: every node address)?
    /// Published ports do not apply in macvlan/ipvlan mode: nothing of the node's stands
    /// between its containers and their network.
    fn ports_apply(&self, port: u16) -> Result<(), AgentError> {
        match &self.node.subif {
            Some(s) => Err(AgentError::PortsInSubifMode {
                mode: self.node.mode,
                parent: s.parent.name.clone(),
                port,
            }),
            None => Ok(()),
        }
    }

    pub(super) fn check_host_ip(&self, host_ip: Option<IpAddr>) -> Result<(), AgentError> {
        match host_ip {
            None => Ok(()),
            Some(IpAddr::V4(ip)) => self.check_host_ip4(ip),
            Some(IpAddr::V6(ip)) => check_host_ip6(
                ip,
                self.node.node_ip6,
                self.node.uplink_name.as_deref().unwrap_or_default(),
                || crate::plumbing::netns::current_cookie().is_some(),
            ),
        }
    }

    fn check_host_ip4(&self, ip: Ipv4Addr) -> Result<(), AgentError> {
        // Loopback: for the node's own processes only, through the socket hooks, which
        // act only where the kernel tells the node's namespace by its cookie.
        if ip.is_loopback() {
            return match crate::plumbing::netns::current_cookie() {
                Some(_) => Ok(()),
                None => Err(AgentError::LoopbackNeedsCookie { ip: ip.into() }),
            };
        }
        // Any address of the uplink, where the programs see the packets for it.
        if !self.node.uplink_ips.contains(&ip) {
            return Err(AgentError::HostIpNotNode {
                ip,
                uplink: self.node.uplink_name.clone().unwrap_or_default(),
                addresses: self.node.uplink_ips.clone(),
            });
        }
        Ok(())
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
        host_ip: Option<IpAddr>,
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
                container_ip6: None,
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
            self.ports_apply(spec.host_port)?;
            // The port's own faults first, then the endpoint's (the order users have seen).
            if spec.container_port == Some(0) || (spec.host_port == 0 && spec.container_port.is_none()) {
                return Err(AgentError::PortZero);
            }
            self.ports.check_range(spec.host_port)?;
            let Some(ep) = self.endpoints.get(&spec.endpoint) else {
                return Err(AgentError::NoEndpoint { name: spec.endpoint });
            };
            let (name, ip, ip6) = (ep.name.clone(), ep.ip, ep.ip6);
            match self.port_plan(&spec, &name, ip, ip6, &planned)? {
                Some(rec) => {
                    out.push(rec.clone());
                    planned.push(rec);
                }
                // Published already, exactly so (a host port of 0 never lands here): the
                // record as it is, which says on which families.
                None => {
                    let asked = PortRecord {
                        proto: spec.proto,
                        host_ip: spec.host_ip,
                        host_port: spec.host_port,
                        endpoint: name,
                        container_ip: ip,
                        container_ip6: ip6,
                        container_port: spec.container_port.unwrap_or(spec.host_port),
                    };
                    let found = self.ports.all().iter().chain(&planned).find(|p| p.same_mapping(&asked));
                    out.push(found.cloned().unwrap_or(asked));
                }
            }
        }
        self.publish(&planned[held..])?;
        Ok(out)
    }

    pub async fn port_add(&mut self, spec: PortSpec) -> Result<PortRecord, AgentError> {
        let mut recs = self.ports_add(vec![spec]).await?;
        Ok(recs.remove(0))
    }

    /// Records `recs` and writes them to the datapath, both families; on any failure
    /// neither the state nor either table keeps them.
    fn publish(&mut self, recs: &[PortRecord]) -> Result<(), AgentError> {
        if recs.is_empty() {
            return Ok(());
        }
        let (v4, v6) = (entries::ports::<Ipv4>(recs), entries::ports::<Ipv6>(recs));
        self.ports.insert_many(recs)?;
        let applied = self
            .datapath
            .set_ports(&v4)
            .and_then(|()| self.datapath.set_ports(&v6))
            .map_err(AgentError::from)
            .and_then(|()| {
                // The endpoints' "has published ports" flag.
                self.reregister(recs)?;
                // The programs look at other addresses of the uplink only once told to.
                match recs.iter().any(|r| self.on_other_address(r)) {
                    true => self.write_node_config(),
                    false => Ok(()),
                }
            });
        if let Err(e) = applied {
            let keys: Vec<Key> = recs.iter().map(key).collect();
            if let Err(undo) = self.ports.remove_many(&keys) {
                warn!(
                    "cannot take back the ports of a failed publish: {undo}; `netpath reconcile` repairs it"
                );
            }
            // The keys are new (a clash was refused): none of them was another's.
            let _ = self.datapath.remove_ports(&v4.iter().map(|(k, _)| *k).collect::<Vec<_>>());
            let _ = self.datapath.remove_ports(&v6.iter().map(|(k, _)| *k).collect::<Vec<_>>());
            let _ = self.reregister(recs);
            return Err(e);
        }
        match recs {
            [rec] => info!(proto = %rec.proto, host_port = rec.host_port, endpoint = %rec.endpoint,
                           container_port = rec.container_port, ipv6 = entries::port::<Ipv6>(rec).is_some(),
                           "port published"),
            _ => info!(count = recs.len(), "ports published"),
        }
        Ok(())
    }

    /// Writes the datapath's entry of every endpoint `recs` name again (once each).
    /// Both families' entries: the IPv6 path reads the flag from ENDPOINTS6 (a published
    /// container's replies on a routed prefix must leave with the node's address).
    fn reregister(&mut self, recs: &[PortRecord]) -> Result<(), AgentError> {
        let names: std::collections::BTreeSet<&str> = recs.iter().map(|r| r.endpoint.as_str()).collect();
        for name in names {
            if let Some(ep) = self.endpoints.get(name).cloned() {
                let info = self.endpoint_info(&ep)?;
                self.datapath.register(ep.ip, info)?;
                for ip6 in super::endpoint::addresses6(&ep) {
                    self.datapath.register6(ip6, ep.ip, info)?;
                }
            }
        }
        Ok(())
    }

    /// Unpublishes several ports in one state transaction and one map batch per family;
    /// returns, for each, whether it was published.
    pub fn ports_del(&mut self, keys: &[Key]) -> Result<Vec<bool>, AgentError> {
        let gone = self.ports.remove_many(keys)?;
        let existed = keys.iter().map(|k| gone.iter().any(|p| key(p) == *k)).collect();
        if gone.is_empty() {
            return Ok(existed);
        }
        let (v4, v6) = (entries::ports::<Ipv4>(&gone), entries::ports::<Ipv6>(&gone));
        let removed = self
            .datapath
            .remove_ports(&v4.iter().map(|(k, _)| *k).collect::<Vec<_>>())
            .and_then(|()| self.datapath.remove_ports(&v6.iter().map(|(k, _)| *k).collect::<Vec<_>>()));
        if let Err(e) = removed {
            // The state said gone while the maps still served them: put all back (a
            // batch may have stopped part way, or the second family's failed).
            if let Err(undo) = self.ports.insert_many(&gone) {
                warn!("cannot take back the ports of a failed unpublish: {undo}; `netpath reconcile` repairs it");
            }
            let _ = self.datapath.set_ports(&v4);
            let _ = self.datapath.set_ports(&v6);
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
        host_ip: Option<IpAddr>,
    ) -> Result<bool, AgentError> {
        Ok(self.ports_del(&[(proto, host_port, host_ip)])?[0])
    }
}

fn key(p: &PortRecord) -> Key {
    (p.proto, p.host_port, p.host_ip)
}

/// Can a port be published on IPv6 address `ip` of a node whose uplink `uplink` has the
/// IPv6 address `node_ip6`? The IPv6 programs take that address and, for every address,
/// `::`; `::1` is for the node's own processes only, served by the socket hooks, which
/// act only where the kernel tells the node's namespace by its cookie (`has_cookie`).
fn check_host_ip6(
    ip: Ipv6Addr,
    node_ip6: Option<Ipv6Addr>,
    uplink: &str,
    has_cookie: impl FnOnce() -> bool,
) -> Result<(), AgentError> {
    if ip.is_loopback() {
        return match has_cookie() {
            true => Ok(()),
            false => Err(AgentError::LoopbackNeedsCookie { ip: ip.into() }),
        };
    }
    if !ip.is_unspecified() && Some(ip) != node_ip6 {
        return Err(AgentError::HostIp6NotNode { ip, uplink: uplink.into(), address: node_ip6 });
    }
    Ok(())
}

/// A port published on an IPv6 address needs an endpoint with one (`container_ip6`).
pub(super) fn check_family(
    host_ip: Option<IpAddr>,
    endpoint: &str,
    container_ip6: Option<Ipv6Addr>,
) -> Result<(), AgentError> {
    match (host_ip, container_ip6) {
        (Some(IpAddr::V6(ip)), None) => {
            Err(AgentError::EndpointWithoutIpv6 { endpoint: endpoint.into(), ip })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_ports_go_on_the_node_address_every_address_or_loopback_with_a_cookie() {
        let node6: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let cookie = || true;
        assert!(check_host_ip6(node6, Some(node6), "eth0", cookie).is_ok());
        assert!(check_host_ip6(Ipv6Addr::UNSPECIFIED, Some(node6), "eth0", cookie).is_ok());
        // Every IPv6 address of the node, whichever it has (none yet included).
        assert!(check_host_ip6(Ipv6Addr::UNSPECIFIED, None, "eth0", cookie).is_ok());
        let other = check_host_ip6("fd00:99::7".parse().unwrap(), Some(node6), "eth0", cookie)
            .unwrap_err()
            .to_string();
        for part in ["--host-ip fd00:99::7", "uplink eth0", "2001:db8::10", "::", "::1"] {
            assert!(other.contains(part), "{part}: {other}");
        }
        assert!(!other.contains('\n'), "{other}");
        let none = check_host_ip6(node6, None, "eth0", cookie).unwrap_err().to_string();
        assert!(none.contains("2001:db8::10") && none.contains("(none)"), "{none}");
        // Loopback: for the node's processes, where the hooks can tell its namespace,
        // whether or not the uplink has an IPv6 address.
        assert!(check_host_ip6(Ipv6Addr::LOCALHOST, Some(node6), "eth0", cookie).is_ok());
        assert!(check_host_ip6(Ipv6Addr::LOCALHOST, None, "eth0", cookie).is_ok());
        let lo = check_host_ip6(Ipv6Addr::LOCALHOST, Some(node6), "eth0", || false).unwrap_err().to_string();
        assert!(lo.contains("--host-ip ::1") && lo.contains("5.14") && !lo.contains('\n'), "{lo}");
        // The cookie is asked for loopback only.
        let asked = std::cell::Cell::new(false);
        assert!(check_host_ip6(node6, Some(node6), "eth0", || asked.replace(true)).is_ok());
        assert!(!asked.get());
    }

    #[test]
    fn an_ipv6_host_address_needs_an_endpoint_with_ipv6() {
        let node6: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let err = check_family(Some(node6.into()), "web", None).unwrap_err().to_string();
        assert!(err.contains("endpoint web has no IPv6 address") && err.contains("2001:db8::10"), "{err}");
        assert!(err.contains("--pod-cidr6"), "{err}");
        assert!(check_family(Some(node6.into()), "web", Some("fd00:77::2".parse().unwrap())).is_ok());
        // IPv4, or both families: the endpoint's IPv4 address is enough.
        assert!(check_family(None, "web", None).is_ok());
        assert!(check_family(Some(IpAddr::V4(Ipv4Addr::LOCALHOST)), "web", None).is_ok());
    }
}
