//! Drift: where the kernel differs from the state directory. Read-only: the agent's
//! reconciliation repairs each [`Drift`] and `netpath doctor` reports each as a finding,
//! so the two never disagree about what is wrong.
//!
//! The checks per endpoint run in order and stop at a drift that makes the rest
//! meaningless (the namespace or the veth pair is gone, a foreign link holds the name):
//! that one is repaired by re-creating everything after it.
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use netpath_common::{EndpointInfo, PortKeyOf, PortTargetOf};
use rtnetlink::Handle;

use crate::{
    datapath::{
        endpoint_programs,
        family::{Family, PortEntry},
        program, tc_programs, AttachMode,
    },
    plumbing::{
        link::{self, Link},
        netns, PlumbingError,
    },
    state::{AgentId, EndpointRecord, Mode},
};

/// One difference between the state and the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Drift {
    /// The endpoint's container namespace no longer exists.
    NamespaceGone {
        endpoint: String,
        netns: String,
    },
    HostVethGone {
        endpoint: String,
        veth: String,
    },
    /// A link that is not this agent's holds the host veth's name.
    ForeignLink {
        endpoint: String,
        name: String,
        index: u32,
    },
    /// The host veth is there under another index (re-created by someone).
    IndexChanged {
        endpoint: String,
        veth: String,
        index: u32,
        was: u32,
    },
    /// The container's end of the pair is gone: only a new pair puts it back.
    PeerGone {
        endpoint: String,
        ifname: String,
        netns: String,
    },
    /// Address, routes or link state inside the container.
    ContainerSide {
        endpoint: String,
        missing: Vec<String>,
    },
    NotMarked {
        endpoint: String,
        veth: String,
    },
    HostDown {
        endpoint: String,
        veth: String,
    },
    NodeRouteMissing {
        endpoint: String,
        ip: IpAddr,
        veth: String,
    },
    NotOnBridge {
        endpoint: String,
        veth: String,
        bridge: String,
    },
    /// A tc program is not attached where it belongs (`subject`: endpoint or uplink).
    ProgramDetached {
        subject: String,
        program: &'static str,
        iface: String,
    },
    /// An entry of ENDPOINTS, or of ENDPOINTS6 for an IPv6 address.
    EndpointEntryMissing {
        ip: IpAddr,
    },
    EndpointEntryDiffers {
        ip: IpAddr,
    },
    EndpointEntryStray {
        ip: IpAddr,
    },
    /// An entry of PORT_MAPS, or of PORT_MAPS6 (`map`) for a port published on IPv6.
    PortEntryMissing {
        map: &'static str,
        label: String,
    },
    PortEntryDiffers {
        map: &'static str,
        label: String,
    },
    /// An entry no port record owns: its key (`host` all zeros: every address of the
    /// family) and where it leads.
    PortEntryStray {
        map: &'static str,
        proto: u8,
        host: IpAddr,
        port: u16,
        to: String,
    },
    /// A veth this agent made that no endpoint wants (`endpoint`: the one its mark names).
    StrayLink {
        name: String,
        endpoint: Option<String>,
    },
    UplinkGone {
        name: String,
    },
}

impl Drift {
    /// What drifted: an endpoint, a port, a link, a map entry.
    pub fn subject(&self) -> String {
        use Drift::*;
        match self {
            NamespaceGone { endpoint, .. }
            | HostVethGone { endpoint, .. }
            | ForeignLink { endpoint, .. }
            | IndexChanged { endpoint, .. }
            | PeerGone { endpoint, .. }
            | ContainerSide { endpoint, .. }
            | NotMarked { endpoint, .. }
            | HostDown { endpoint, .. }
            | NodeRouteMissing { endpoint, .. }
            | NotOnBridge { endpoint, .. } => format!("endpoint {endpoint}"),
            ProgramDetached { subject, .. } => subject.clone(),
            EndpointEntryMissing { ip } | EndpointEntryDiffers { ip } => format!("endpoint at {ip}"),
            EndpointEntryStray { ip } => format!("address {ip}"),
            PortEntryMissing { label, .. } | PortEntryDiffers { label, .. } => format!("port {label}"),
            PortEntryStray { port, .. } => format!("port {port}"),
            StrayLink { name, .. } => format!("link {name}"),
            UplinkGone { name } => format!("uplink {name}"),
        }
    }

    /// What is wrong with it, in words.
    pub fn problem(&self) -> String {
        use Drift::*;
        match self {
            NamespaceGone { netns, .. } => format!("its namespace {netns} is gone"),
            HostVethGone { veth, .. } => format!("host veth {veth} is gone"),
            ForeignLink { name, index, .. } => {
                format!("link {name} (index {index}) holds the host veth's name and is not netpath's")
            }
            IndexChanged { veth, index, was, .. } => {
                format!("host veth {veth} has index {index}, state says {was}")
            }
            PeerGone { ifname, netns, .. } => format!("interface {ifname} is missing in {netns}"),
            ContainerSide { missing, .. } => format!("missing in the container: {}", missing.join(", ")),
            NotMarked { veth, .. } => format!("host veth {veth} is not marked as this agent's"),
            HostDown { veth, .. } => format!("host veth {veth} is down"),
            NodeRouteMissing { ip, veth, .. } => {
                let len = if ip.is_ipv4() { 32 } else { 128 };
                format!("node route {ip}/{len} dev {veth} is missing")
            }
            NotOnBridge { veth, bridge, .. } => format!("host veth {veth} is not a port of {bridge}"),
            ProgramDetached { program, iface, .. } => format!("{program} is not attached to {iface}"),
            EndpointEntryMissing { ip } => format!("{} has no entry for {ip}", endpoint_map(ip)),
            EndpointEntryDiffers { ip } => {
                format!("{} entry for {ip} differs from the state", endpoint_map(ip))
            }
            EndpointEntryStray { ip } => {
                format!("{} has an entry for {ip} that no endpoint owns", endpoint_map(ip))
            }
            PortEntryMissing { map, .. } => format!("{map} has no entry for it"),
            PortEntryDiffers { map, .. } => format!("{map} entry differs from the state"),
            PortEntryStray { map, port, to, .. } => {
                format!("{map} publishes port {port} (to {to}) that no port record owns")
            }
            StrayLink { endpoint: Some(e), .. } => {
                format!("created for endpoint {e}, which the state does not have")
            }
            StrayLink { endpoint: None, .. } => {
                "created by this agent, which died before it was marked".into()
            }
            UplinkGone { .. } => "is gone: masquerade and published ports are down".into(),
        }
    }
}

/// Whose links are whose: the agent's id, and whether links marked by a build before
/// agent ids count as its own (only on the start that made the id: the upgrade).
#[derive(Clone, Copy)]
pub struct Owner<'a> {
    pub id: &'a AgentId,
    pub adopt_unidentified: bool,
}

impl Owner<'_> {
    /// Did this agent make this veth, although its state may not name it? Host veths
    /// carry the owner alias with the agent's id; one not yet marked has the temporary
    /// name with the agent's id in it (the agent died between creating and marking it).
    /// Links marked by a build before agent ids (`netpath:<endpoint>`), or unmarked with
    /// that build's name pattern (`np` + 10 hex digits), count only on the upgrade start.
    pub fn made(&self, l: &Link) -> bool {
        if !l.is_veth && !l.is_netkit {
            return false;
        }
        match l.owner() {
            Some(o) => match &o.agent {
                Some(agent) => agent == self.id.as_str(),
                None => self.adopt_unidentified,
            },
            None if l.alias.is_some() => false,
            None => {
                let old_pattern = l.name.len() == 12
                    && l.name.starts_with("np")
                    && l.name[2..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                self.id.made_temporary(&l.name) || (self.adopt_unidentified && old_pattern)
            }
        }
    }

    /// Does `l` carry this agent's mark for `endpoint`?
    pub fn marked(&self, l: &Link, endpoint: &str) -> bool {
        match l.owner() {
            Some(o) if o.endpoint == endpoint => match o.agent {
                Some(a) => a == self.id.as_str(),
                None => self.adopt_unidentified,
            },
            _ => false,
        }
    }

    /// Is the mark exactly this agent's current one (an upgrade re-marks the others)?
    fn current(&self, l: &Link, endpoint: &str) -> bool {
        l.owner() == Some(link::Owner::new(self.id.as_str(), endpoint))
    }
}

/// What the node looks like to the endpoint checks.
pub struct Node<'a> {
    pub netlink: &'a Handle,
    pub owner: Owner<'a>,
    pub attach: AttachMode,
    /// The bridge in bridge mode.
    pub bridge: Option<&'a Link>,
    /// The container address's prefix (/32 routed, the pod CIDR's in bridge mode).
    pub prefix: u8,
    /// The IPv6 pod CIDR, which gives a bridged container its IPv6 prefix and gateway.
    pub pod_cidr6: Option<ipnet::Ipv6Net>,
    /// The node's main routing table, read once for a pass over many endpoints (dumped
    /// per endpoint, a thousand endpoints cost a million routes parsed); None: read it.
    pub routes: Option<&'a [link::Route]>,
    /// The same for the node's IPv6 host routes (address, device), read once a pass:
    /// dumps on one netlink socket must not overlap (EBUSY), and the checks run at once.
    pub routes6: Option<&'a [(Ipv6Addr, u32)]>,
}

/// Is the namespace really gone (rather than, say, unreadable)?
fn netns_gone(e: &PlumbingError) -> bool {
    match e {
        PlumbingError::NetnsOpen { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        PlumbingError::NotNetns { .. } => true,
        _ => false,
    }
}

/// The drift of one endpoint, in the order the checks run; a structural drift (gone,
/// foreign) comes alone.
pub async fn endpoint(node: &Node<'_>, rec: &EndpointRecord) -> Result<Vec<Drift>, PlumbingError> {
    let endpoint = rec.name.clone();
    let ns = match netns::open(&rec.netns) {
        Ok(ns) => ns,
        Err(e) if netns_gone(&e) => {
            return Ok(vec![Drift::NamespaceGone { endpoint, netns: rec.netns.display().to_string() }])
        }
        Err(e) => return Err(e),
    };
    if rec.mode.is_subif() {
        return subif(node, rec, &ns).await;
    }
    let host = match link::get(node.netlink, &rec.host_ifname).await? {
        None => return Ok(vec![Drift::HostVethGone { endpoint, veth: rec.host_ifname.clone() }]),
        Some(l) if l.index != rec.host_ifindex && !node.owner.marked(&l, &rec.name) => {
            return Ok(vec![Drift::ForeignLink { endpoint, name: l.name, index: l.index }]);
        }
        Some(l) => l,
    };
    let mut out = Vec::new();
    if host.index != rec.host_ifindex {
        let (veth, index, was) = (host.name.clone(), host.index, rec.host_ifindex);
        out.push(Drift::IndexChanged { endpoint: endpoint.clone(), veth, index, was });
    }
    let (ifname, ip, prefix) = (rec.ifname.clone(), rec.ip, node.prefix);
    let ip6 = rec.ipv6(node.pod_cidr6);
    let missing =
        netns::run_in(&ns, &rec.netns, move |h| link::container_drift(h, ifname, ip, prefix, ip6)).await?;
    if missing.iter().any(|m| m.starts_with("interface")) {
        let netns = rec.netns.display().to_string();
        return Ok(vec![Drift::PeerGone { endpoint, ifname: rec.ifname.clone(), netns }]);
    }
    if !missing.is_empty() {
        out.push(Drift::ContainerSide { endpoint: endpoint.clone(), missing });
    }
    out.extend(host_side(node, rec, &host).await?);
    Ok(out)
}

/// A macvlan/ipvlan endpoint: everything is in its container: the interface (its
/// index, which the datapath knows it by), address and routes, and the two programs.
async fn subif(
    node: &Node<'_>,
    rec: &EndpointRecord,
    ns: &std::fs::File,
) -> Result<Vec<Drift>, PlumbingError> {
    let endpoint = rec.name.clone();
    let (ifname, ip, prefix, index) = (rec.ifname.clone(), rec.ip, node.prefix, rec.host_ifindex);
    // No default route is wanted without a router (ipvlan L3 routes out of the device).
    let want_default =
        rec.gateway != Ipv4Addr::UNSPECIFIED || rec.ipvlan_mode == Some(crate::state::IpvlanMode::L3);
    let (dev, mut missing, egress, ingress) = netns::run_in(ns, &rec.netns, move |h| async move {
        let dev = link::get(&h, &ifname).await?;
        let Some(d) = dev.clone().filter(|d| d.index == index) else {
            return Ok((dev, Vec::new(), Vec::new(), Vec::new()));
        };
        let missing = link::container_drift(h.clone(), ifname, ip, prefix, None).await?;
        let egress = link::bpf_filters(&h, d.index, true).await?;
        let ingress = link::bpf_filters(&h, d.index, false).await?;
        Ok((dev, missing, egress, ingress))
    })
    .await?;
    let netns = rec.netns.display().to_string();
    match dev {
        None => return Ok(vec![Drift::PeerGone { endpoint, ifname: rec.ifname.clone(), netns }]),
        Some(d) if d.index != index || !d.is_subif => {
            return Ok(vec![Drift::ForeignLink { endpoint, name: d.name, index: d.index }]);
        }
        Some(_) => {}
    }
    missing.retain(|m| want_default || !m.starts_with("default route"));
    let mut out = Vec::new();
    if !missing.is_empty() {
        out.push(Drift::ContainerSide { endpoint: endpoint.clone(), missing });
    }
    for (attached, program) in [(egress, program::FROM_CONTAINER), (ingress, program::TO_SUBIF)] {
        if !attached.iter().any(|p| p == program) {
            let subject = format!("endpoint {endpoint}");
            out.push(Drift::ProgramDetached { subject, program, iface: rec.ifname.clone() });
        }
    }
    Ok(out)
}

/// The node's side of an endpoint: the mark, the link state, the route or bridge port,
/// the program.
async fn host_side(node: &Node<'_>, rec: &EndpointRecord, host: &Link) -> Result<Vec<Drift>, PlumbingError> {
    let (endpoint, veth) = (rec.name.clone(), host.name.clone());
    let mut out = Vec::new();
    if !node.owner.current(host, &rec.name) {
        out.push(Drift::NotMarked { endpoint: endpoint.clone(), veth: veth.clone() });
    }
    if !host.up {
        out.push(Drift::HostDown { endpoint: endpoint.clone(), veth: veth.clone() });
    }
    match (rec.mode, node.bridge) {
        (Mode::Routed, _) if !has_host_route(node, rec.ip, host.index).await? => {
            out.push(Drift::NodeRouteMissing {
                endpoint: endpoint.clone(),
                ip: rec.ip.into(),
                veth: veth.clone(),
            });
        }
        (Mode::Bridge, Some(bridge)) if host.controller != Some(bridge.index) => {
            let bridge = bridge.name.clone();
            out.push(Drift::NotOnBridge { endpoint: endpoint.clone(), veth: veth.clone(), bridge });
        }
        _ => {}
    }
    if let (Mode::Routed, Some(ip6)) = (rec.mode, rec.ip6) {
        let present = match node.routes6 {
            Some(routes6) => routes6.contains(&(ip6, host.index)),
            None => link::host_routes6(node.netlink).await?.contains(&(ip6, host.index)),
        };
        if !present {
            out.push(Drift::NodeRouteMissing {
                endpoint: endpoint.clone(),
                ip: ip6.into(),
                veth: veth.clone(),
            });
        }
    }
    let programs = endpoint_programs(node.netlink, &host.name, host.index, node.attach, rec.device).await;
    // When the kernel cannot be asked, no repair on a guess.
    if !programs.is_none_or(|p| p.iter().any(|p| p == program::FROM_CONTAINER)) {
        let subject = format!("endpoint {endpoint}");
        out.push(Drift::ProgramDetached { subject, program: program::FROM_CONTAINER, iface: veth });
    }
    Ok(out)
}

async fn has_host_route(node: &Node<'_>, ip: Ipv4Addr, index: u32) -> Result<bool, PlumbingError> {
    match node.routes {
        Some(routes) => Ok(link::is_host_route(routes, ip, index)),
        None => link::has_host_route(node.netlink, ip, index).await,
    }
}

/// Is program `name` attached at `link`'s tc ingress? (When the kernel cannot be asked,
/// the answer is yes: no repair on a guess.)
pub async fn attached(netlink: &Handle, link: &Link, attach: AttachMode, name: &str) -> bool {
    tc_programs(netlink, &link.name, link.index, attach).await.is_none_or(|p| p.iter().any(|p| p == name))
}

/// The map an endpoint address's entry lives in.
fn endpoint_map(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() {
        netpath_common::maps::ENDPOINTS
    } else {
        netpath_common::maps::ENDPOINTS6
    }
}

/// ENDPOINTS as it is (`have`) against what the records stand for (`want`). Hashed on
/// both sides: a node's thousands of entries, not their square. The counter slot is
/// the datapath's own bookkeeping, not the records': any slot but 0 (none) will do.
pub fn endpoint_entries(want: &[(Ipv4Addr, EndpointInfo)], have: &[(Ipv4Addr, EndpointInfo)]) -> Vec<Drift> {
    entries_drift(want, have, |found, want| {
        found.without_slot() == want.without_slot() && found.counter_slot != 0
    })
}

/// ENDPOINTS6 as it is against what the records stand for: each IPv6 address's entry
/// is its endpoint's IPv4 entry, counter slot included (`want` carries the slot the
/// IPv4 entry has; 0 when it has none yet, and then any slot but 0 will do).
pub fn endpoint_entries6(want: &[(Ipv6Addr, EndpointInfo)], have: &[(Ipv6Addr, EndpointInfo)]) -> Vec<Drift> {
    entries_drift(want, have, |found, want| {
        found.without_slot() == want.without_slot()
            && found.counter_slot != 0
            && (want.counter_slot == 0 || found.counter_slot == want.counter_slot)
    })
}

fn entries_drift<A: Copy + Eq + std::hash::Hash + Into<IpAddr>>(
    want: &[(A, EndpointInfo)],
    have: &[(A, EndpointInfo)],
    same: impl Fn(&EndpointInfo, &EndpointInfo) -> bool,
) -> Vec<Drift> {
    let have_by_ip: HashMap<&A, &EndpointInfo> = have.iter().map(|(ip, v)| (ip, v)).collect();
    let wanted: HashSet<&A> = want.iter().map(|(ip, _)| ip).collect();
    let mut out = Vec::new();
    for (ip, info) in want {
        match have_by_ip.get(ip) {
            None => out.push(Drift::EndpointEntryMissing { ip: (*ip).into() }),
            Some(found) if !same(found, info) => out.push(Drift::EndpointEntryDiffers { ip: (*ip).into() }),
            Some(_) => {}
        }
    }
    for (ip, _) in have.iter().filter(|(ip, _)| !wanted.contains(ip)) {
        out.push(Drift::EndpointEntryStray { ip: (*ip).into() });
    }
    out
}

/// Family `A`'s published-port table (PORT_MAPS, PORT_MAPS6) as it is against the
/// published ports (`want`: label, key, target).
pub fn port_entries<A: Family>(
    want: &[(String, PortKeyOf<A>, PortTargetOf<A>)],
    have: &[PortEntry<A>],
) -> Vec<Drift> {
    let map = A::PORTS;
    let have_by_key: HashMap<&PortKeyOf<A>, &PortTargetOf<A>> = have.iter().map(|(k, t)| (k, t)).collect();
    let wanted: HashSet<&PortKeyOf<A>> = want.iter().map(|(_, k, _)| k).collect();
    let mut out = Vec::new();
    for (label, key, target) in want {
        match have_by_key.get(key) {
            Some(t) if *t == target => {}
            Some(_) => out.push(Drift::PortEntryDiffers { map, label: label.clone() }),
            None => out.push(Drift::PortEntryMissing { map, label: label.clone() }),
        }
    }
    for (key, target) in have.iter().filter(|(k, _)| !wanted.contains(k)) {
        let to = SocketAddr::new(target.ip.ip(), u16::from_be_bytes(target.port)).to_string();
        out.push(Drift::PortEntryStray {
            map,
            proto: key.proto,
            host: key.host_ip.ip(),
            port: u16::from_be_bytes(key.port),
            to,
        });
    }
    out
}

/// Host veths this agent made that no endpoint wants: left by an agent killed between
/// creating a veth and saving its state, or by a delete cut short.
pub async fn stray_links(
    netlink: &Handle,
    owner: Owner<'_>,
    endpoints: &[EndpointRecord],
) -> Result<Vec<(Link, Drift)>, PlumbingError> {
    let wanted: HashSet<(&str, u32)> =
        endpoints.iter().map(|e| (e.host_ifname.as_str(), e.host_ifindex)).collect();
    let mut out = Vec::new();
    for l in link::list(netlink).await? {
        let wanted = wanted.contains(&(l.name.as_str(), l.index));
        if wanted || !owner.made(&l) {
            continue;
        }
        let drift = Drift::StrayLink { name: l.name.clone(), endpoint: l.owner().map(|o| o.endpoint) };
        out.push((l, drift));
    }
    Ok(out)
}

/// The uplink: there (`link`, as last seen) with uplink_in attached.
pub async fn uplink(netlink: &Handle, name: &str, link: Option<&Link>, attach: AttachMode) -> Option<Drift> {
    let Some(up) = link else { return Some(Drift::UplinkGone { name: name.into() }) };
    if attached(netlink, up, attach, program::UPLINK_IN).await {
        return None;
    }
    Some(Drift::ProgramDetached {
        subject: format!("uplink {name}"),
        program: program::UPLINK_IN,
        iface: up.name.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_agents_links_are_its_own() {
        let (me, other) = (AgentId::generate(), AgentId::generate());
        let veth = |name: &str, alias: Option<String>| Link {
            name: name.into(),
            alias,
            is_veth: true,
            ..Default::default()
        };
        let mark = |id: &AgentId| Some(link::Owner::new(id.as_str(), "web").alias());
        let now = Owner { id: &me, adopt_unidentified: false };
        let upgrade = Owner { id: &me, adopt_unidentified: true };
        assert!(now.made(&veth("anything", mark(&me))));
        assert!(!now.made(&veth("anything", mark(&other))), "another agent's");
        assert!(now.made(&veth(&me.temporary_ifname(7), None)), "not yet marked");
        assert!(!upgrade.made(&veth(&other.temporary_ifname(7), None)));
        // A build before agent ids: adopted only on the upgrade start.
        assert!(upgrade.made(&veth("np0123456789", Some("netpath:web".into()))));
        assert!(!now.made(&veth("np0123456789", Some("netpath:web".into()))));
        assert!(upgrade.made(&veth("np0123456789", None)));
        assert!(!now.made(&veth("np0123456789", None)));
        assert!(!upgrade.made(&veth("np0123456789", Some("someone else's".into()))));
        assert!(!upgrade.made(&veth("np012345678z", None)));
        assert!(!upgrade.made(&veth("eth0", None)));
        assert!(!upgrade.made(&Link { is_veth: false, ..veth("np0123456789", None) }));
        let netkit = Link { is_veth: false, is_netkit: true, ..veth("anything", mark(&me)) };
        assert!(now.made(&netkit), "a netkit device is made as a veth is");
    }

    #[test]
    fn map_entries_drift_both_ways() {
        let ip = |n| Ipv4Addr::new(10, 77, 0, n);
        let info = |i| EndpointInfo { host_ifindex: i, counter_slot: 1, ..Default::default() };
        let got = endpoint_entries(
            &[(ip(2), info(7)), (ip(3), info(8)), (ip(5), info(5))],
            &[(ip(3), info(9)), (ip(4), info(1)), (ip(5), EndpointInfo { counter_slot: 0, ..info(5) })],
        );
        assert_eq!(
            got,
            [
                Drift::EndpointEntryMissing { ip: ip(2).into() },
                Drift::EndpointEntryDiffers { ip: ip(3).into() },
                // An entry without a counter slot counts nowhere anyone reads.
                Drift::EndpointEntryDiffers { ip: ip(5).into() },
                Drift::EndpointEntryStray { ip: ip(4).into() }
            ]
        );
        assert_eq!(got[3].subject(), "address 10.77.0.4");
        assert_eq!(got[0].problem(), "ENDPOINTS has no entry for 10.77.0.2");
    }

    #[test]
    fn port_entries_drift_in_the_table_of_their_family() {
        use netpath_common::{Ip6, PortKey, PortKey6, PortTarget, PortTarget6};
        let key4 = |port: u16| PortKey { host_ip: [0; 4], port: port.to_be_bytes(), proto: 6, _pad: 0 };
        let to4 = PortTarget { ip: [10, 77, 0, 2], port: 80u16.to_be_bytes(), _pad: [0; 2] };
        let got = port_entries(&[("tcp/8080".to_string(), key4(8080), to4)], &[(key4(9999), to4)]);
        assert_eq!(got[0].subject(), "port tcp/8080");
        assert_eq!(got[0].problem(), "PORT_MAPS has no entry for it");
        assert_eq!(got[1].subject(), "port 9999");
        assert_eq!(
            got[1].problem(),
            "PORT_MAPS publishes port 9999 (to 10.77.0.2:80) that no port record owns"
        );

        let ip6 = |s: &str| Ip6(s.parse::<Ipv6Addr>().unwrap().octets());
        let key6 = |port: u16| PortKey6 { host_ip: ip6("::"), port: port.to_be_bytes(), proto: 6, _pad: 0 };
        let to6 = |c: &str| PortTarget6 { ip: ip6(c), port: 80u16.to_be_bytes(), _pad: [0; 2] };
        let got = port_entries(
            &[("tcp/8080".to_string(), key6(8080), to6("fd00:77::2"))],
            &[(key6(8080), to6("fd00:77::3")), (key6(9999), to6("fd00:77::2"))],
        );
        assert_eq!(got[0].problem(), "PORT_MAPS6 entry differs from the state");
        assert_eq!(
            got[1],
            Drift::PortEntryStray {
                map: "PORT_MAPS6",
                proto: 6,
                host: "::".parse().unwrap(),
                port: 9999,
                to: "[fd00:77::2]:80".into()
            }
        );
        assert_eq!(
            got[1].problem(),
            "PORT_MAPS6 publishes port 9999 (to [fd00:77::2]:80) that no port record owns"
        );
    }

    #[test]
    fn ipv6_entries_drift_with_their_owners_counter_slot() {
        let ip6 = |n: u16| Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, n);
        let info = |slot| EndpointInfo { host_ifindex: 7, counter_slot: slot, ..Default::default() };
        let got = endpoint_entries6(
            &[(ip6(2), info(3)), (ip6(3), info(4))],
            &[(ip6(2), info(3)), (ip6(3), info(5))],
        );
        assert_eq!(got, [Drift::EndpointEntryDiffers { ip: ip6(3).into() }]);
        assert_eq!(got[0].problem(), "ENDPOINTS6 entry for fd00:77::3 differs from the state");
    }
}
