//! Endpoint add/del: the seed's manual steps as one atomic, idempotent operation.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netpath_common::EndpointInfo;
use tracing::{info, warn};

use super::{steps::Steps, Agent, AgentError};
use crate::{
    api::{EndpointSpec, PortSpec},
    datapath::entries,
    plumbing::{link, netns},
    state::{format_mac, parse_mac, Device, EndpointRecord, Mode},
};

pub(super) const DEFAULT_MTU: u32 = 1500;
/// IPv4 requires 68 (RFC 791); veth accepts up to 65535.
pub(super) const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;
/// The least MTU a link carrying IPv6 may have (RFC 8200, 5).
pub(super) const IPV6_MIN_MTU: u32 = 1280;
/// What to do when the node's default MTU is below [`IPV6_MIN_MTU`].
pub(super) const DEFAULT_MTU_BELOW_IPV6: &str =
    "it is the node's default (the uplink's, less VXLAN's 50 bytes \
     in an overlay): raise the uplink's MTU (runtimes' adds ask for the default), or ask for 1280 or more \
     (--mtu, or `mtu` in an apply file)";

impl Agent {
    /// The mark this agent gives the host veth of `endpoint`.
    pub(super) fn owner_mark(&self, endpoint: &str) -> link::Owner {
        link::Owner::new(self.id.as_str(), endpoint)
    }

    /// What the datapath needs to know about an endpoint.
    pub(super) fn endpoint_info(&self, rec: &EndpointRecord) -> Result<EndpointInfo, AgentError> {
        let published = self.ports.of_endpoint(&rec.name).next().is_some();
        entries::endpoint(rec, published)
            .map_err(|mac| AgentError::StoredMac { endpoint: rec.name.clone(), mac })
    }
}

/// Host-side veth name: derived from the endpoint name so it is stable across restarts,
/// hashed to fit IFNAMSIZ (15) whatever the endpoint name's length.
pub(super) fn host_ifname(name: &str) -> String {
    // FNV-1a: tiny, stable across Rust versions (unlike DefaultHasher).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("np{:010x}", h & 0xff_ffff_ffff)
}

/// Locally administered unicast MAC derived from the address, as Kubernetes does
/// (0a:58:IP), so the same container always gets the same MAC.
fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

fn validate_name(name: &str) -> Result<(), AgentError> {
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !name_ok {
        return Err(AgentError::BadEndpointName { name: name.into() });
    }
    Ok(())
}

pub(super) fn validate(spec: &EndpointSpec) -> Result<(), AgentError> {
    validate_name(&spec.name)?;
    let ifname_ok = !spec.ifname.is_empty()
        && spec.ifname.len() <= 15
        && spec.ifname.chars().all(|c| c.is_ascii_graphic() && c != '/' && c != ':');
    if !ifname_ok {
        return Err(AgentError::BadIfname { name: spec.ifname.clone() });
    }
    if let Some(mtu) = spec.mtu {
        if !MTU_RANGE.contains(&mtu) {
            return Err(AgentError::BadMtu { mtu });
        }
    }
    if let Some(mac) = spec.mac {
        if mac[0] & 1 == 1 || mac == [0; 6] {
            return Err(AgentError::BadMac { mac: format_mac(&mac) });
        }
    }
    Ok(())
}

/// Does an existing endpoint already satisfy `spec`? (idempotent add)
fn satisfies(rec: &EndpointRecord, spec: &EndpointSpec) -> bool {
    rec.netns == spec.netns
        && rec.ifname == spec.ifname
        && spec.ip.is_none_or(|ip| ip == rec.ip)
        && spec.ip6.is_none_or(|ip6| Some(ip6) == rec.ip6)
        && spec.mac.is_none_or(|m| format_mac(&m) == rec.mac)
        && spec.mtu.is_none_or(|m| m == rec.mtu)
        && (spec.owner.is_none() || spec.owner == rec.owner)
}

/// An endpoint add, checked and given its address, before the kernel work: the
/// [`Builder`] and the record it fills in, and the ports to publish once it is built.
pub(super) struct AddPlan {
    pub builder: Builder,
    pub ns: std::fs::File,
    pub rec: EndpointRecord,
    pub planned: Vec<crate::state::PortRecord>,
}

/// How an add starts: already done (a repeated add), or with kernel work to do.
pub(super) enum AddStart {
    Done(Box<EndpointRecord>),
    Build(Box<AddPlan>),
}

/// An endpoint delete once the state, the ports and the datapath let it go: what is
/// left is the veth pair, whose deletion waits out RCU in the kernel.
pub(super) struct DelPlan {
    netlink: rtnetlink::Handle,
    rec: EndpointRecord,
    steps: Steps,
    /// The endpoint's TCX link, released once its veth is gone.
    link_pin: Option<std::path::PathBuf>,
}

/// The kernel work of making an endpoint's pair, marking it and configuring both sides:
/// nothing of the agent's but a netlink handle, so it runs outside the agent's task and
/// holds up no other request (see `inflight`).
pub(super) struct Builder {
    netlink: rtnetlink::Handle,
    mark: link::Owner,
    bridge: Option<u32>,
    temporary: String,
    prefix: u8,
    /// The IPv6 pod CIDR: the container's IPv6 prefix and gateway in bridge mode.
    pod_cidr6: Option<ipnet::Ipv6Net>,
    /// macvlan/ipvlan mode: what the container's interface is, and of which parent.
    subif: Option<(link::SubifKind, u32)>,
    pub steps: Steps,
}

/// The index a container's macvlan/ipvlan interface gets in its namespace: the
/// datapath knows the endpoint by it, so it must differ between the agent's endpoints
/// (where namespaces each count their own from 1); one derived from the address is,
/// and stays the same when the interface is made again. High (SUBIF_IFINDEX_BASE set,
/// by which the datapath knows it runs at a sub-interface, whatever the packet claims),
/// where a container's own devices do not reach; the node's namespace must not have it either (a request
/// naming an index there would change that device), which its counting from 1 keeps.
pub(super) fn subif_ifindex(ip: Ipv4Addr) -> u32 {
    netpath_common::subif_ifindex(ip.octets())
}

impl Builder {
    /// Builds what `rec` describes, up to the datapath: the veth or netkit pair (filling
    /// in the host side's index and MAC, and for netkit the container's MAC as the
    /// kernel set it), the mark, addresses and routes. On failure deletes what it made.
    pub async fn build(&mut self, ns: &std::fs::File, rec: &mut EndpointRecord) -> Result<(), AgentError> {
        let mac = parse_mac(&rec.mac)
            .ok_or_else(|| AgentError::StoredMac { endpoint: rec.name.clone(), mac: rec.mac.clone() })?;
        if let Some((kind, parent)) = self.subif {
            return self.build_subif(ns, rec, kind, parent, mac).await;
        }
        if let Some(l) = link::get(&self.netlink, &rec.host_ifname).await? {
            return Err(crate::plumbing::PlumbingError::LinkExists {
                name: l.name,
                place: format!("on the node (index {}) and it is not this endpoint's", l.index),
            }
            .into());
        }
        let host = match rec.device {
            Device::Veth => {
                link::add_veth(&self.netlink, &self.temporary, &rec.ifname, ns, mac, rec.mtu, self.bridge)
                    .await?
            }
            Device::Netkit => {
                link::add_netkit(&self.netlink, &self.temporary, &rec.ifname, ns, mac, rec.mtu).await?
            }
        };
        self.steps.mark("pair");
        super::steps::slow_step("pair").await;
        rec.host_ifindex = host.index;
        rec.host_mac = format_mac(&host.mac);
        // From here on every failure undoes everything: deleting the host veth removes
        // its peer, the container's address and routes, and the node route with it.
        if let Err(e) = self.connect(ns, rec).await {
            // (The container's IPv6 sysctls stay as set: they belong to its interface,
            // which goes with the pair.)
            let _ = link::delete(&self.netlink, rec.host_ifindex).await;
            return Err(e);
        }
        Ok(())
    }

    /// macvlan/ipvlan mode: the container's interface made in its namespace with its
    /// index, then marked and configured there; on failure it is deleted again.
    async fn build_subif(
        &mut self,
        ns: &std::fs::File,
        rec: &mut EndpointRecord,
        kind: link::SubifKind,
        parent: u32,
        mac: [u8; 6],
    ) -> Result<(), AgentError> {
        let index = subif_ifindex(rec.ip);
        let own_mac = (kind == link::SubifKind::Macvlan).then_some(mac);
        link::add_subif(&self.netlink, kind, parent, &rec.ifname, ns, index, own_mac, rec.mtu).await?;
        self.steps.mark("subif");
        super::steps::slow_step("subif").await;
        rec.host_ifindex = index;
        let (mark, ifname, ip, prefix) = (self.mark.clone(), rec.ifname.clone(), rec.ip, self.prefix);
        let gateway = (rec.gateway != Ipv4Addr::UNSPECIFIED).then_some(rec.gateway);
        let l3 = rec.ipvlan_mode == Some(crate::state::IpvlanMode::L3);
        let configured = netns::run_in(ns, &rec.netns, move |h| async move {
            let dev = link::get_by_index(&h, index)
                .await?
                .ok_or_else(|| crate::plumbing::PlumbingError::LinkNotFound(ifname.clone()))?;
            link::set_owner(&h, index, &mark, None).await?;
            link::configure_subif(h, ifname, ip, prefix, gateway, l3).await?;
            Ok(dev.mac)
        })
        .await;
        match configured {
            Ok(dev_mac) => {
                // ipvlan devices carry the parent's MAC, whatever was asked.
                rec.mac = format_mac(&dev_mac);
                self.steps.mark("container");
                Ok(())
            }
            Err(e) => {
                let _ = netns::run_in(ns, &rec.netns, move |h| async move { link::delete(&h, index).await })
                    .await;
                Err(e.into())
            }
        }
    }

    async fn connect(&mut self, ns: &std::fs::File, rec: &mut EndpointRecord) -> Result<(), AgentError> {
        if rec.device == Device::Netkit {
            let ifname = rec.ifname.clone();
            let peer =
                netns::run_in(ns, &rec.netns, move |h| async move { link::get(&h, &ifname).await }).await?;
            let peer =
                peer.ok_or_else(|| crate::plumbing::PlumbingError::LinkNotFound(rec.ifname.clone()))?;
            rec.mac = format_mac(&peer.mac);
        }
        // Created under a temporary name that carries the agent's id, renamed when it is
        // marked: a veth whose agent died in between is still known as its own.
        link::set_owner(&self.netlink, rec.host_ifindex, &self.mark, Some(&rec.host_ifname)).await?;
        self.steps.mark("mark");
        configure_container(ns, rec, self.prefix, self.pod_cidr6).await?;
        self.steps.mark("container");
        link::set_up(&self.netlink, rec.host_ifindex, &rec.host_ifname).await?;
        // In bridge mode the bridge's own prefix route reaches the container.
        if rec.mode == Mode::Routed {
            link::add_host_route(&self.netlink, rec.ip, rec.host_ifindex).await?;
            if let Some(ip6) = rec.ip6 {
                link::add_host_route6(&self.netlink, ip6, rec.host_ifindex).await?;
            }
        }
        self.steps.mark("up-route");
        Ok(())
    }
}

impl DelPlan {
    /// The endpoint going: its address's route and its container's interface go with
    /// the pair.
    pub fn record(&self) -> &EndpointRecord {
        &self.rec
    }

    /// Deletes the pair, which takes the container's side, its addresses and routes, and
    /// the node's route to it.
    pub async fn run(mut self) -> Result<(), AgentError> {
        if self.rec.mode.is_subif() {
            delete_subif(&self.rec).await?;
            self.steps.mark("subif");
            info!(endpoint = %self.rec.name, ip = %self.rec.ip, steps = %self.steps, "endpoint deleted");
            return Ok(());
        }
        super::steps::slow_step("veth").await;
        link::delete(&self.netlink, self.rec.host_ifindex).await?;
        self.steps.mark("veth");
        if let Some(pin) = &self.link_pin {
            crate::datapath::release_link(pin);
            self.steps.mark("link");
        }
        info!(endpoint = %self.rec.name, ip = %self.rec.ip, steps = %self.steps, "endpoint deleted");
        Ok(())
    }
}

/// Deletes a macvlan/ipvlan endpoint's interface in its container, which takes its
/// address and routes; a namespace that is gone took the interface with it.
pub(super) async fn delete_subif(rec: &EndpointRecord) -> Result<(), AgentError> {
    let ns = match netns::open(&rec.netns) {
        Ok(ns) => ns,
        Err(crate::plumbing::PlumbingError::NetnsOpen { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(())
        }
        Err(crate::plumbing::PlumbingError::NotNetns { .. }) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let (index, name) = (rec.host_ifindex, rec.ifname.clone());
    netns::run_in(&ns, &rec.netns, move |h| async move {
        // Only the interface netpath made: its index and name.
        match link::get_by_index(&h, index).await? {
            Some(l) if l.name == name => link::delete(&h, index).await,
            _ => Ok(()),
        }
    })
    .await?;
    Ok(())
}

/// The container's side: interface up, addresses, routes (idempotent). IPv6 first:
/// its settings must be in place before the interface first comes up.
async fn configure_container(
    ns: &std::fs::File,
    rec: &EndpointRecord,
    prefix: u8,
    pod_cidr6: Option<ipnet::Ipv6Net>,
) -> Result<(), AgentError> {
    if rec.mode.is_subif() {
        let (ifname, ip) = (rec.ifname.clone(), rec.ip);
        let gateway = (rec.gateway != Ipv4Addr::UNSPECIFIED).then_some(rec.gateway);
        let l3 = rec.ipvlan_mode == Some(crate::state::IpvlanMode::L3);
        netns::run_in(ns, &rec.netns, move |h| link::configure_subif(h, ifname, ip, prefix, gateway, l3))
            .await?;
        return Ok(());
    }
    if rec.ip6.is_some() {
        let v6 = rec.ipv6(pod_cidr6).ok_or_else(|| match parse_mac(&rec.mac) {
            None => AgentError::StoredMac { endpoint: rec.name.clone(), mac: rec.mac.clone() },
            // Only a bridge-mode record lacks what its IPv6 side needs: the pod CIDR,
            // which every agent with IPv6 endpoints has (a start without it is refused).
            Some(_) => AgentError::NoPodCidr6,
        })?;
        let ifname = rec.ifname.clone();
        netns::run_in(ns, &rec.netns, move |h| link::configure_container6(h, ifname, v6)).await?;
    }
    let (ifname, ip, gateway) = (rec.ifname.clone(), rec.ip, rec.gateway);
    netns::run_in(ns, &rec.netns, move |h| link::configure_container(h, ifname, ip, prefix, gateway)).await?;
    Ok(())
}

/// An endpoint's IPv6 addresses as the datapath knows them: its own, and the
/// link-local one its neighbour solicitations come from. Empty without IPv6.
pub(super) fn addresses6(rec: &EndpointRecord) -> Vec<Ipv6Addr> {
    match (rec.ip6, parse_mac(&rec.mac)) {
        (Some(ip6), Some(mac)) => vec![ip6, crate::state::link_local(&mac)],
        _ => Vec::new(),
    }
}

impl Agent {
    /// Adds an endpoint, start to end, in the agent's task (apply, and every caller but
    /// the socket's, which runs the kernel work beside other requests).
    pub async fn endpoint_add(&mut self, spec: EndpointSpec) -> Result<EndpointRecord, AgentError> {
        match self.add_begin(spec, &[], &[]).await? {
            AddStart::Done(rec) => Ok(*rec),
            AddStart::Build(mut plan) => {
                let built = plan.builder.build(&plan.ns, &mut plan.rec).await;
                self.add_finish(*plan, built).await
            }
        }
    }

    /// Refuses an add whose MTU cannot carry IPv6 on a node that gives every endpoint
    /// an IPv6 address.
    pub(super) fn check_mtu(&self, spec: &EndpointSpec) -> Result<(), AgentError> {
        // Linux takes IPv6 off a link below 1280 bytes (RFC 8200's minimum): the
        // container would get no IPv6 address, and the add would fail half way.
        let mtu = spec.mtu.unwrap_or(self.default_mtu());
        if self.endpoints.ipam6().is_some() && mtu < IPV6_MIN_MTU {
            return Err(AgentError::MtuBelowIpv6 {
                mtu,
                fix: if spec.mtu.is_some() {
                    "ask for 1280 or more (--mtu, or `mtu` in an apply file)"
                } else {
                    DEFAULT_MTU_BELOW_IPV6
                },
            });
        }
        Ok(())
    }

    /// The checks of an add and the address it gets, none of `held` (the addresses of
    /// changes in flight), and its ports, none of `held_ports` (those adds in flight
    /// will publish). A repeated add is done here.
    pub(super) async fn add_begin(
        &mut self,
        spec: EndpointSpec,
        held: &[IpAddr],
        held_ports: &[crate::state::PortRecord],
    ) -> Result<AddStart, AgentError> {
        let mut steps = Steps::default();
        validate(&spec)?;
        if let (Some(mac), Some(link::SubifKind::Ipvlan(_))) =
            (spec.mac, self.node.subif.as_ref().map(|s| s.kind))
        {
            return Err(AgentError::IpvlanMac { mac: format_mac(&mac) });
        }
        let existing = self.endpoints.get(&spec.name).cloned();
        if let Some(rec) = &existing {
            if satisfies(rec, &spec) {
                // A repeated add (a runtime retrying): its ports too, all or none.
                let ports =
                    spec.ports.iter().map(|p| PortSpec { endpoint: rec.name.clone(), ..p.clone() }).collect();
                self.ports_add(ports).await?;
                return Ok(AddStart::Done(Box::new(rec.clone())));
            }
            if spec.owner.is_none() || spec.owner != rec.owner {
                return Err(AgentError::EndpointExists {
                    name: rec.name.clone(),
                    netns: rec.netns.clone(),
                    ip: rec.ip,
                });
            }
        }
        // Before an old endpoint makes way below: a refused add leaves it.
        self.check_mtu(&spec)?;
        if let Some(rec) = existing {
            // The same container in a new sandbox (a DEL missed while the agent was down,
            // a reboot): the old endpoint is dead; it makes way, ports and address too.
            info!(endpoint = %rec.name, old = %rec.netns.display(), new = %spec.netns.display(),
                  "endpoint re-added by its owner in a new namespace");
            self.endpoint_del(&rec.name, None).await?;
        }
        let mut planned: Vec<crate::state::PortRecord> = Vec::new();
        let mut taken = held_ports.to_vec();
        // The addresses are not chosen yet; whether it gets an IPv6 one is known (every
        // endpoint of an agent with --pod-cidr6 does), which is what a port on an IPv6
        // host address needs. The records are made again once it is built.
        let ip6 = self.endpoints.ipam6().map(|_| Ipv6Addr::UNSPECIFIED);
        for p in &spec.ports {
            if let Some(rec) = self.port_plan(p, &spec.name, Ipv4Addr::UNSPECIFIED, ip6, &taken)? {
                taken.push(rec.clone());
                planned.push(rec);
            }
        }
        let ns = netns::open(&spec.netns)?;
        // The node's own namespace as a "container" would lose the node its default route.
        if let Some(what) = netns::node_namespace(&ns) {
            return Err(AgentError::NodeNamespace { path: spec.netns.clone(), what });
        }
        let held4: Vec<Ipv4Addr> =
            held.iter().filter_map(|a| if let IpAddr::V4(a) = a { Some(*a) } else { None }).collect();
        let held6: Vec<Ipv6Addr> =
            held.iter().filter_map(|a| if let IpAddr::V6(a) = a { Some(*a) } else { None }).collect();
        let ip = self.endpoints.assign(spec.ip, &held4)?;
        let ip6 = self.endpoints.assign6(spec.ip6, &held6)?;
        steps.mark("check");
        let mac = spec.mac.unwrap_or_else(|| mac_for(ip));
        // The IPv6 link-local address (an ENDPOINTS6 key) is derived from the MAC.
        if ip6.is_some() {
            if let Some(other) = self.endpoints.all().iter().find(|e| parse_mac(&e.mac) == Some(mac)) {
                return Err(AgentError::MacInUse { mac: format_mac(&mac), owner: other.name.clone() });
            }
        }
        // Same MTU as the uplink by default, so containers never send what it cannot carry.
        let mtu = spec.mtu.unwrap_or(self.default_mtu());
        let subif = self.node.subif.as_ref();
        let rec = EndpointRecord {
            name: spec.name.clone(),
            mode: self.node.mode,
            device: self.device,
            netns: spec.netns.clone(),
            ifname: spec.ifname.clone(),
            ip,
            // A sub-interface's gateway is its network's router (none: the subnet alone).
            gateway: match subif {
                Some(s) => s.gateway.unwrap_or(Ipv4Addr::UNSPECIFIED),
                None => self.endpoints.ipam().gateway(),
            },
            ip6,
            mac: format_mac(&mac),
            mtu,
            host_ifname: if subif.is_some() { String::new() } else { host_ifname(&spec.name) },
            // Filled in by the builder.
            host_ifindex: 0,
            // A sub-interface has no host side: the parent's MAC stands in.
            host_mac: subif.map_or_else(String::new, |s| format_mac(&s.parent.mac)),
            owner: spec.owner.clone(),
            parent: subif.map(|s| s.parent.name.clone()),
            ipvlan_mode: match subif.map(|s| s.kind) {
                Some(link::SubifKind::Ipvlan(m)) => Some(m),
                _ => None,
            },
            prefix: subif.map(|s| s.lan.prefix_len()),
        };
        let builder = self.builder(&rec, steps);
        Ok(AddStart::Build(Box::new(AddPlan { builder, ns, rec, planned })))
    }

    /// What builds `rec`'s pair, timing on from `steps`.
    fn builder(&mut self, rec: &EndpointRecord, steps: Steps) -> Builder {
        let temporary = self.id.temporary_ifname(self.next_temporary);
        self.next_temporary = self.next_temporary.wrapping_add(1);
        Builder {
            netlink: self.netlink.clone(),
            mark: self.owner_mark(&rec.name),
            bridge: self.node.bridge.as_ref().map(|b| b.index),
            temporary,
            prefix: self.prefix(rec),
            pod_cidr6: self.pod_cidr6(),
            subif: self.node.subif.as_ref().map(|s| (s.kind, s.parent.index)),
            steps,
        }
    }

    /// The rest of an add once the builder is done (`built`): the datapath's entry and
    /// attachment, the state, the ports. Undoes the pair when any of it fails.
    pub(super) async fn add_finish(
        &mut self,
        plan: AddPlan,
        built: Result<(), AgentError>,
    ) -> Result<EndpointRecord, AgentError> {
        let AddPlan { builder, rec, planned, ns } = plan;
        built?;
        let mut steps = builder.steps;
        if let Err(e) = self.wire(&ns, &rec, &mut steps) {
            self.unplumb(&rec).await;
            return Err(e);
        }
        if let Err(e) = self.endpoints.insert(rec.clone()) {
            self.unplumb(&rec).await;
            return Err(e.into());
        }
        steps.mark("state");
        for p in &planned {
            let publish = PortSpec {
                proto: p.proto,
                host_port: p.host_port,
                host_ip: p.host_ip,
                endpoint: rec.name.clone(),
                container_port: Some(p.container_port),
                host_port_from: None,
            };
            if let Err(e) = self.port_add(publish).await {
                // Checked when the add began; what fails here is the kernel, the disk,
                // or a port another request took meanwhile.
                if let Err(undo) = self.endpoint_del(&rec.name, None).await {
                    warn!(endpoint = %rec.name, "cannot take the endpoint back after its port failed: {undo}; \
                           `netpath reconcile` or `netpath endpoint del` removes it");
                }
                return Err(e);
            }
        }
        if !planned.is_empty() {
            steps.mark("ports");
        }
        info!(endpoint = %rec.name, ip = %rec.ip, veth = %rec.host_ifname, steps = %steps, "endpoint added");
        Ok(rec)
    }

    /// Builds an endpoint `rec` describes again (reconciliation), datapath included. On
    /// failure removes everything it made.
    pub(super) async fn plumb(
        &mut self,
        ns: &std::fs::File,
        rec: &mut EndpointRecord,
    ) -> Result<(), AgentError> {
        let mut builder = self.builder(rec, Steps::default());
        builder.build(ns, rec).await?;
        let mut steps = builder.steps;
        if let Err(e) = self.wire(ns, rec, &mut steps) {
            self.unplumb(rec).await;
            return Err(e);
        }
        Ok(())
    }

    /// The datapath's part of an endpoint: its entry, then from_container on its device
    /// (for a sub-interface: its programs inside the container, `ns`).
    fn wire(
        &mut self,
        ns: &std::fs::File,
        rec: &EndpointRecord,
        steps: &mut Steps,
    ) -> Result<(), AgentError> {
        let info = self.endpoint_info(rec)?;
        self.datapath.register(rec.ip, info)?;
        for ip6 in addresses6(rec) {
            self.datapath.register6(ip6, rec.ip, info)?;
        }
        steps.mark("maps");
        if rec.mode.is_subif() {
            self.datapath.attach_subif(ns, &rec.ifname)?;
            steps.mark("attach");
            return Ok(());
        }
        self.datapath.attach_endpoint(&rec.host_ifname, rec.host_ifindex, rec.device)?;
        steps.mark("attach");
        Ok(())
    }

    /// Removes an endpoint's attachment, datapath entry and veth pair; best effort.
    async fn unplumb(&mut self, rec: &EndpointRecord) {
        if !rec.mode.is_subif() {
            let _ = self.datapath.detach_endpoint(&rec.host_ifname, rec.host_ifindex);
        }
        for ip6 in addresses6(rec) {
            let _ = self.datapath.unregister6(ip6);
        }
        let _ = self.datapath.unregister(rec.ip);
        if rec.mode.is_subif() {
            let _ = delete_subif(rec).await;
        } else {
            let _ = link::delete(&self.netlink, rec.host_ifindex).await;
        }
    }

    /// The container's side: interface up, address, routes (idempotent).
    pub(super) async fn configure_container(
        &self,
        ns: &std::fs::File,
        rec: &EndpointRecord,
    ) -> Result<(), AgentError> {
        configure_container(ns, rec, self.prefix(rec), self.pod_cidr6()).await
    }

    /// The IPv6 pod CIDR, when the agent has one.
    pub(super) fn pod_cidr6(&self) -> Option<ipnet::Ipv6Net> {
        self.endpoints.ipam6().map(|i| i.cidr())
    }

    /// The container address's prefix: /32 when routed (every packet goes to the
    /// gateway, i.e. into the datapath), the pod CIDR's in bridge mode as docker0's.
    pub(super) fn prefix(&self, rec: &EndpointRecord) -> u8 {
        match rec.mode {
            Mode::Routed => 32,
            Mode::Bridge => self.endpoints.ipam().cidr().prefix_len(),
            // The parent's subnet's, as recorded (the subnet as found now for a record
            // without it).
            Mode::Macvlan | Mode::Ipvlan => {
                rec.prefix.or(self.node.subif.as_ref().map(|s| s.lan.prefix_len())).unwrap_or(32)
            }
        }
    }

    /// Deletes an endpoint; `Ok(false)` when there was none by that name (of `owner`,
    /// when given).
    pub async fn endpoint_del(&mut self, name: &str, owner: Option<&str>) -> Result<bool, AgentError> {
        match self.del_begin(name, owner)? {
            None => Ok(false),
            Some(plan) => plan.run().await.map(|()| true),
        }
    }

    /// Everything of a delete but the veth pair: the ports, the state, the datapath.
    /// None when there is no endpoint by that name (of `owner`, when given).
    pub(super) fn del_begin(
        &mut self,
        name: &str,
        owner: Option<&str>,
    ) -> Result<Option<DelPlan>, AgentError> {
        let mut steps = Steps::default();
        validate_name(name)?;
        let Some(rec) = self.endpoints.get(name).cloned() else {
            return Ok(None);
        };
        if owner.is_some() && rec.owner.as_deref() != owner {
            return Ok(None);
        }
        // Its published ports go with it, as docker's do with the container.
        let ports: Vec<_> = self.ports.of_endpoint(name).map(|p| (p.proto, p.host_port, p.host_ip)).collect();
        if !ports.is_empty() {
            self.ports_del(&ports)?;
            steps.mark("ports");
        }
        self.endpoints.remove(name)?;
        steps.mark("state");
        // A sub-interface's filters go with it, and so does a veth's filter; its TCX
        // link is released after it.
        let link_pin =
            if rec.mode.is_subif() { None } else { self.datapath.release_endpoint_link(rec.host_ifindex) };
        steps.mark("detach");
        for ip6 in addresses6(&rec) {
            self.datapath.unregister6(ip6)?;
        }
        self.datapath.unregister(rec.ip)?;
        steps.mark("maps");
        Ok(Some(DelPlan { netlink: self.netlink.clone(), rec, steps, link_pin }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ifname_fits_ifnamsiz_and_is_stable() {
        let n = host_ifname("a-very-long-container-name-that-exceeds-everything");
        assert!(n.len() <= 15, "{n}");
        assert_eq!(n, host_ifname("a-very-long-container-name-that-exceeds-everything"));
        assert_ne!(host_ifname("web"), host_ifname("db"));
    }

    #[test]
    fn bad_specs_are_refused_with_the_value_named() {
        let spec = EndpointSpec {
            name: "web".into(),
            netns: "/run/netns/web".into(),
            ifname: "eth0".into(),
            ip: None,
            ip6: None,
            mac: None,
            mtu: Some(40),
            owner: None,
            ports: Vec::new(),
        };
        assert!(validate(&spec).unwrap_err().to_string().contains("invalid MTU 40"));
        let spec = EndpointSpec { mtu: None, name: "we b".into(), ..spec };
        assert!(validate(&spec).unwrap_err().to_string().contains("\"we b\""));
        let spec = EndpointSpec { name: "web".into(), mac: Some([1, 0, 0, 0, 0, 1]), ..spec };
        assert!(validate(&spec).unwrap_err().to_string().contains("01:00:00:00:00:01"));
    }
}
