//! `netpath apply`: the node's declared endpoints and ports made exactly what a file
//! says, the way an orchestrator or a config-management tool drives a node. Everything
//! that can be refused is checked against the whole file before anything changes, so a
//! file with an error changes nothing; then ports and endpoints that go are removed,
//! and those that come are added. Endpoints a runtime added (CNI) are the runtime's:
//! apply neither lists nor touches them.
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr},
};

use tracing::{info, warn};

use super::{endpoint::validate, Agent, AgentError};
use crate::{
    api::{Change, DeclRef, EndpointDecl, EndpointSpec, NodeSpec, PortDecl, PortSpec},
    state::{hosts_meet, EndpointRecord, PortRecord, Proto},
};

/// A refused or failed apply: the error, and the declared entry it is about when there
/// is one.
pub struct ApplyError {
    pub entry: Option<DeclRef>,
    pub error: Box<AgentError>,
    /// `None` when the checks refused the file and nothing changed; after a failure part
    /// way, whether what had changed was all taken back.
    pub restored: Option<bool>,
}

impl From<AgentError> for ApplyError {
    fn from(error: AgentError) -> Self {
        ApplyError { entry: None, error: Box::new(error), restored: None }
    }
}

type PortKey = (Proto, u16, Option<IpAddr>);

fn key(p: &PortRecord) -> PortKey {
    (p.proto, p.host_port, p.host_ip)
}

fn decl_key(p: &PortDecl) -> PortKey {
    (p.proto, p.host_port, p.host_ip)
}

fn shown(k: &PortKey) -> String {
    format!("port {} {}", k.0, crate::state::format_host_port(k.2, k.1))
}

fn spec_of(d: &EndpointDecl, ip: Option<Ipv4Addr>) -> EndpointSpec {
    EndpointSpec {
        name: d.name.clone(),
        netns: d.netns.clone(),
        ifname: d.ifname.clone().unwrap_or_else(|| "eth0".into()),
        ip,
        ip6: None,
        mac: None,
        mtu: d.mtu,
        owner: None,
        ports: Vec::new(),
    }
}

fn port_spec(p: &PortDecl) -> PortSpec {
    PortSpec {
        proto: p.proto,
        host_port: p.host_port,
        host_ip: p.host_ip,
        endpoint: p.endpoint.clone(),
        container_port: p.container_port,
        host_port_from: None,
    }
}

/// Does the endpoint as built match its declaration?
fn matches(rec: &EndpointRecord, d: &EndpointDecl) -> bool {
    rec.netns == d.netns
        && rec.ifname == d.ifname.as_deref().unwrap_or("eth0")
        && d.ip.is_none_or(|ip| ip == rec.ip)
        && d.mtu.is_none_or(|m| m == rec.mtu)
}

/// What apply is to do, worked out from the file and the node without changing either.
#[derive(Default)]
struct Plan {
    changes: Vec<Change>,
    /// Endpoints removed (also those replaced), with their ports.
    del_endpoints: Vec<EndpointRecord>,
    /// Declared endpoints to build (also those replaced), by index, with the address
    /// each gets: the file's, else a replaced endpoint's own, else one the plan chose.
    add_endpoints: Vec<(usize, Option<Ipv4Addr>)>,
    del_ports: Vec<PortRecord>,
    add_ports: Vec<usize>,
}

impl Agent {
    pub async fn apply(&mut self, spec: NodeSpec, dry_run: bool) -> Result<Vec<Change>, ApplyError> {
        let plan = self.plan(&spec)?;
        if dry_run || plan.changes.is_empty() {
            return Ok(plan.changes);
        }
        self.execute(&spec, &plan).await?;
        info!(changes = plan.changes.len(), "node state applied");
        Ok(plan.changes)
    }

    fn plan(&self, spec: &NodeSpec) -> Result<Plan, ApplyError> {
        let at_endpoint = |i: usize| {
            move |error| ApplyError {
                entry: Some(DeclRef::Endpoint(i)),
                error: Box::new(error),
                restored: None,
            }
        };
        let at_port = |i: usize| {
            move |error| ApplyError { entry: Some(DeclRef::Port(i)), error: Box::new(error), restored: None }
        };
        let mut plan = Plan::default();

        // Endpoints: each declared once, valid, not a runtime's.
        let mut names = HashSet::new();
        for (i, d) in spec.endpoints.iter().enumerate() {
            validate(&spec_of(d, d.ip)).map_err(at_endpoint(i))?;
            self.check_mtu(&spec_of(d, d.ip)).map_err(at_endpoint(i))?;
            if !names.insert(d.name.as_str()) {
                return Err(at_endpoint(i)(AgentError::DeclaredTwice {
                    what: format!("endpoint {}", d.name),
                }));
            }
            if let Some(owner) = self.endpoints.get(&d.name).and_then(|e| e.owner.clone()) {
                return Err(at_endpoint(i)(AgentError::RuntimeOwned { name: d.name.clone(), owner }));
            }
        }
        for rec in self.endpoints.all().iter().filter(|e| e.owner.is_none()) {
            match spec.endpoints.iter().position(|d| d.name == rec.name) {
                None => {
                    plan.changes.push(change("del", format!("endpoint {}", rec.name), rec_detail(rec)));
                    plan.del_endpoints.push(rec.clone());
                }
                Some(i) if !matches(rec, &spec.endpoints[i]) => {
                    let d = &spec.endpoints[i];
                    plan.changes.push(change(
                        "replace",
                        format!("endpoint {}", rec.name),
                        format!("{} -> {}", rec_detail(rec), decl_detail(d)),
                    ));
                    plan.del_endpoints.push(rec.clone());
                    plan.add_endpoints.push((i, d.ip.or(Some(rec.ip))));
                }
                Some(_) => {}
            }
        }
        for (i, d) in spec.endpoints.iter().enumerate() {
            if self.endpoints.get(&d.name).is_none() {
                plan.changes.push(change("add", format!("endpoint {}", d.name), decl_detail(d)));
                plan.add_endpoints.push((i, d.ip));
            }
        }
        // The addresses asked for: inside the pod CIDR, free once the removals are done.
        let gone: HashSet<&str> = plan.del_endpoints.iter().map(|e| e.name.as_str()).collect();
        let mut staying: Vec<EndpointRecord> =
            self.endpoints.all().iter().filter(|e| !gone.contains(e.name.as_str())).cloned().collect();
        // Fixed addresses first, then free ones for the rest (stand-ins, so that two
        // declarations cannot take the same address and the pool is not overdrawn). The
        // chosen address is the one built: endpoints are added in file order, and one
        // left to choose its own could take an address a later one names.
        let fixed_first = (0..plan.add_endpoints.len())
            .filter(|&k| plan.add_endpoints[k].1.is_some())
            .chain((0..plan.add_endpoints.len()).filter(|&k| plan.add_endpoints[k].1.is_none()))
            .collect::<Vec<_>>();
        for k in fixed_first {
            let (i, want) = plan.add_endpoints[k];
            let ip = self.endpoints.ipam().assign(want, &staying).map_err(|e| at_endpoint(i)(e.into()))?;
            plan.add_endpoints[k].1 = Some(ip);
            staying.push(EndpointRecord { name: spec.endpoints[i].name.clone(), ip, ..staying_stub() });
        }
        // Their namespaces exist, and none is the node's.
        for (i, _) in &plan.add_endpoints {
            let d = &spec.endpoints[*i];
            let ns = crate::plumbing::netns::open(&d.netns).map_err(|e| at_endpoint(*i)(e.into()))?;
            if let Some(what) = crate::plumbing::netns::node_namespace(&ns) {
                return Err(at_endpoint(*i)(AgentError::NodeNamespace { path: d.netns.clone(), what }));
            }
        }

        // Ports: each declared once (a port for every address and one for an address of
        // the node claim the same packets), for a declared endpoint, valid on this node.
        let mut keys: HashMap<(Proto, u16), Vec<Option<IpAddr>>> = HashMap::new();
        for (i, p) in spec.ports.iter().enumerate() {
            let same_port = keys.entry((p.proto, p.host_port)).or_default();
            if let Some(other) = same_port.iter().find(|ip| hosts_meet(**ip, p.host_ip)) {
                let what = match *other == p.host_ip {
                    true => shown(&decl_key(p)),
                    false => {
                        format!("{} (as {})", shown(&decl_key(p)), shown(&(p.proto, p.host_port, *other)))
                    }
                };
                return Err(at_port(i)(AgentError::DeclaredTwice { what }));
            }
            same_port.push(p.host_ip);
            if !names.contains(p.endpoint.as_str()) {
                return Err(at_port(i)(AgentError::UndeclaredEndpoint { name: p.endpoint.clone() }));
            }
            if p.host_port == 0 || p.container_port == Some(0) {
                return Err(at_port(i)(AgentError::PortZero));
            }
            self.ports.check_range(p.host_port).map_err(at_port(i))?;
            self.check_host_ip(p.host_ip).map_err(at_port(i))?;
        }
        let replaced: HashSet<&str> =
            plan.add_endpoints.iter().map(|(i, _)| spec.endpoints[*i].name.as_str()).collect();
        // A port on an IPv6 address needs an endpoint with IPv6: one built now gets it
        // from the agent's IPv6 pod CIDR, one that stays has what it has.
        for (i, p) in spec.ports.iter().enumerate() {
            let has_ip6 = match replaced.contains(p.endpoint.as_str()) {
                true => self.endpoints.ipam6().is_some(),
                false => self.endpoints.get(&p.endpoint).is_some_and(|e| e.ip6.is_some()),
            };
            let ip6 = has_ip6.then_some(std::net::Ipv6Addr::UNSPECIFIED);
            super::ports::check_family(p.host_ip, &p.endpoint, ip6).map_err(at_port(i))?;
        }
        let wanted = |p: &PortRecord| {
            spec.ports.iter().any(|d| {
                decl_key(d) == key(p)
                    && d.endpoint == p.endpoint
                    && d.container_port.unwrap_or(d.host_port) == p.container_port
                    && !replaced.contains(p.endpoint.as_str())
            })
        };
        for p in self.ports.all() {
            let declared_endpoint = self.endpoints.get(&p.endpoint).is_some_and(|e| e.owner.is_none());
            if declared_endpoint && !wanted(p) {
                // Ports of a replaced endpoint go with it and come back with it: no change
                // of their own unless the file changes them.
                if !replaced.contains(p.endpoint.as_str()) || !declared_same(spec, p) {
                    plan.changes.push(change("del", shown(&key(p)), port_detail(p)));
                }
                plan.del_ports.push(p.clone());
            }
        }
        let staying_ports: Vec<&PortRecord> =
            self.ports.all().iter().filter(|p| !plan.del_ports.iter().any(|d| key(d) == key(p))).collect();
        for (i, d) in spec.ports.iter().enumerate() {
            // Published exactly so and staying: nothing to do. The same host port held
            // otherwise (by a runtime's endpoint) is the clash below.
            if staying_ports.iter().any(|p| key(p) == decl_key(d) && port_same(p, d)) {
                continue;
            }
            let probe = PortRecord {
                proto: d.proto,
                host_ip: d.host_ip,
                host_port: d.host_port,
                endpoint: d.endpoint.clone(),
                container_ip: Ipv4Addr::UNSPECIFIED,
                container_ip6: None,
                container_port: d.container_port.unwrap_or(d.host_port),
            };
            if let Some(old) = staying_ports.iter().find(|p| p.clashes(&probe)) {
                return Err(at_port(i)(AgentError::PortTaken {
                    proto: d.proto,
                    port: d.host_port,
                    host_ip: old.host_ip,
                    endpoint: old.endpoint.clone(),
                    container_port: old.container_port,
                }));
            }
            let replaced_same = replaced.contains(d.endpoint.as_str())
                && self.ports.all().iter().any(|p| key(p) == decl_key(d) && port_same(p, d));
            if !replaced_same {
                plan.changes.push(change("add", shown(&decl_key(d)), decl_port_detail(d)));
            }
            plan.add_ports.push(i);
        }
        Ok(plan)
    }

    /// Carries out a checked plan: removals first (their addresses and ports become
    /// free), then additions. A failure here is the kernel's or the disk's; what was
    /// added is taken back and what was removed is built again, as far as they allow.
    async fn execute(&mut self, spec: &NodeSpec, plan: &Plan) -> Result<(), ApplyError> {
        let del_ports: Vec<PortKey> = plan.del_ports.iter().map(key).collect();
        // One transaction and one map batch: refused whole.
        self.ports_del(&del_ports).map_err(|error| ApplyError {
            entry: None,
            error: Box::new(error),
            restored: Some(true),
        })?;
        let mut removed = Vec::new();
        for rec in &plan.del_endpoints {
            if let Err(error) = self.endpoint_del(&rec.name, None).await {
                let restored = self.restore(&removed, &plan.del_ports, &[]).await;
                return Err(ApplyError { entry: None, error: Box::new(error), restored: Some(restored) });
            }
            removed.push(rec.clone());
        }
        let mut added = Vec::new();
        for (i, ip) in &plan.add_endpoints {
            let d = &spec.endpoints[*i];
            if let Err(error) = self.endpoint_add(spec_of(d, *ip)).await {
                let restored = self.restore(&removed, &plan.del_ports, &added).await;
                return Err(ApplyError {
                    entry: Some(DeclRef::Endpoint(*i)),
                    error: Box::new(error),
                    restored: Some(restored),
                });
            }
            added.push(d.name.clone());
        }
        let ports: Vec<PortSpec> = plan.add_ports.iter().map(|i| port_spec(&spec.ports[*i])).collect();
        if let Err(error) = self.ports_add(ports).await {
            let restored = self.restore(&removed, &plan.del_ports, &added).await;
            return Err(ApplyError { entry: None, error: Box::new(error), restored: Some(restored) });
        }
        Ok(())
    }

    /// Best effort back to where apply started: the endpoints it added go, those it
    /// removed and their ports come back. True when all of it did.
    async fn restore(&mut self, removed: &[EndpointRecord], ports: &[PortRecord], added: &[String]) -> bool {
        let mut all = true;
        for name in added {
            if let Err(e) = self.endpoint_del(name, None).await {
                warn!(endpoint = %name, "apply failed and cannot take back the endpoint it added: {e}");
                all = false;
            }
        }
        for rec in removed {
            let spec = EndpointSpec {
                name: rec.name.clone(),
                netns: rec.netns.clone(),
                ifname: rec.ifname.clone(),
                ip: Some(rec.ip),
                ip6: rec.ip6,
                mac: crate::state::parse_mac(&rec.mac),
                mtu: Some(rec.mtu),
                owner: None,
                ports: Vec::new(),
            };
            if let Err(e) = self.endpoint_add(spec).await {
                warn!(endpoint = %rec.name, "apply failed and cannot build the endpoint it removed again: {e}");
                all = false;
            }
        }
        let specs: Vec<PortSpec> = ports
            .iter()
            .map(|p| PortSpec {
                proto: p.proto,
                host_port: p.host_port,
                host_ip: p.host_ip,
                endpoint: p.endpoint.clone(),
                container_port: Some(p.container_port),
                host_port_from: None,
            })
            .collect();
        if let Err(e) = self.ports_add(specs).await {
            warn!("apply failed and cannot publish the ports it removed again: {e}");
            all = false;
        }
        all
    }
}

fn declared_same(spec: &NodeSpec, p: &PortRecord) -> bool {
    spec.ports.iter().any(|d| decl_key(d) == key(p) && port_same(p, d))
}

fn port_same(p: &PortRecord, d: &PortDecl) -> bool {
    d.endpoint == p.endpoint && d.container_port.unwrap_or(d.host_port) == p.container_port
}

fn change(op: &str, subject: String, detail: String) -> Change {
    Change { op: op.into(), subject, detail }
}

fn rec_detail(e: &EndpointRecord) -> String {
    format!("{} in {} ({}, mtu {})", e.ip, e.netns.display(), e.ifname, e.mtu)
}

fn decl_detail(d: &EndpointDecl) -> String {
    let ip = d.ip.map_or("a free address".to_string(), |ip| ip.to_string());
    let mtu = d.mtu.map_or(String::new(), |m| format!(", mtu {m}"));
    format!("{ip} in {} ({}{mtu})", d.netns.display(), d.ifname.as_deref().unwrap_or("eth0"))
}

fn port_detail(p: &PortRecord) -> String {
    format!("-> {}:{}", p.endpoint, p.container_port)
}

fn decl_port_detail(d: &PortDecl) -> String {
    format!("-> {}:{}", d.endpoint, d.container_port.unwrap_or(d.host_port))
}

/// An endpoint record with nothing in it but what the address check reads.
fn staying_stub() -> EndpointRecord {
    EndpointRecord {
        name: String::new(),
        mode: Default::default(),
        device: Default::default(),
        netns: Default::default(),
        ifname: String::new(),
        ip: Ipv4Addr::UNSPECIFIED,
        gateway: Ipv4Addr::UNSPECIFIED,
        ip6: None,
        mac: String::new(),
        mtu: 0,
        host_ifname: String::new(),
        host_ifindex: 0,
        host_mac: String::new(),
        owner: None,
        parent: None,
        ipvlan_mode: None,
        prefix: None,
    }
}
