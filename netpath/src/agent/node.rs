//! Node set-up at agent start: refuse a pod CIDR that collides with the node's own
//! networks, find the uplink, then give the gateway address a home. Everything that is
//! only looked at comes first ([`plan`]); what changes the node ([`apply`]) is recorded
//! in an [`Undo`] so that a start that fails later leaves the node as it was.
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use rtnetlink::Handle;
use tracing::{info, warn};

use super::AgentError;
use crate::{
    plumbing::link::{self, Link},
    state::{Ipam, Ipam6, Mode},
};

/// What the agent learned about the node.
pub struct Node {
    pub mode: Mode,
    /// The uplink's name as configured or found; it may come and go (see `uplink`).
    pub uplink_name: Option<String>,
    /// The uplink as last seen; None while it is gone.
    pub uplink: Option<Link>,
    /// The uplink's first IPv4 address: source of masqueraded traffic, destination of
    /// published ports.
    pub node_ip: Option<Ipv4Addr>,
    /// Every IPv4 address of the uplink, the node address first: those a port can be
    /// published on alone (`--host-ip`, CNI `hostIP`).
    pub uplink_ips: Vec<Ipv4Addr>,
    /// The uplink's first usable IPv6 address that is not link-local: the source of
    /// masqueraded (NAT66) IPv6.
    pub node_ip6: Option<std::net::Ipv6Addr>,
    /// The bridge in bridge mode.
    pub bridge: Option<Link>,
    /// Cluster mode with VXLAN: the overlay device.
    pub tunnel: Option<Link>,
    /// `--mode macvlan|ipvlan`: the parent and its network.
    pub subif: Option<Subif>,
}

/// The parent device of macvlan/ipvlan mode and the network the containers join.
#[derive(Clone, Debug)]
pub struct Subif {
    pub kind: link::SubifKind,
    pub parent: Link,
    /// The parent's subnet that holds the pod CIDR: the containers' prefix.
    pub lan: Ipv4Net,
    /// The node's default gateway on that subnet: the containers' default route.
    pub gateway: Option<Ipv4Addr>,
    /// The node's own sub-interface, once made.
    pub shim: Option<Link>,
}

/// The node's own sub-interface of the parent in macvlan/ipvlan mode: the parent
/// cannot talk to its sub-interfaces, a sibling can (Docker's documented workaround).
pub const SHIM_DEVICE: &str = "npshim0";

pub struct NodeConfig<'a> {
    pub mode: Mode,
    pub bridge_name: &'a str,
    pub uplink: Option<&'a str>,
    /// `--parent` (macvlan/ipvlan mode); None: the uplink.
    pub parent: Option<&'a str>,
    pub ipvlan_mode: crate::state::IpvlanMode,
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Fails when the pod CIDR overlaps a route or address the node already has and netpath
/// does not own: the seed's pitfall of a container subnet that belongs to docker0,
/// where ARP goes to the wrong place and nothing answers.
async fn check_overlap(
    handle: &Handle,
    ipam: &Ipam,
    cfg: &NodeConfig<'_>,
    owned: &[u32],
) -> Result<(), AgentError> {
    let cidr = ipam.cidr();
    let bridge = link::get(handle, cfg.bridge_name).await?.map(|l| l.index);
    let is_ours = |oif: Option<u32>| {
        oif.is_some_and(|i| owned.contains(&i) || (cfg.mode == Mode::Bridge && Some(i) == bridge))
    };
    let name_of = |i: u32| async move {
        link::get_by_index(handle, i).await.ok().flatten().map(|l| l.name).unwrap_or_else(|| i.to_string())
    };
    for route in link::main_routes(handle).await? {
        if route.dst.prefix_len() == 0 || !overlaps(route.dst, cidr) || is_ours(route.oif) {
            continue;
        }
        let dev = match route.oif {
            Some(i) => format!(" dev {}", name_of(i).await),
            None => String::new(),
        };
        return Err(AgentError::PodCidrTaken { cidr, by: format!("the node's route {}{dev}", route.dst) });
    }
    let gateway = ipam.gateway();
    for (index, addr) in link::addresses(handle).await? {
        if !overlaps(addr, cidr) {
            continue;
        }
        let lo_gateway = cfg.mode == Mode::Routed && addr == Ipv4Net::new(gateway, 32).unwrap_or(addr);
        let bridge_gateway = cfg.mode == Mode::Bridge && Some(index) == bridge && addr.addr() == gateway;
        if lo_gateway || bridge_gateway {
            continue;
        }
        return Err(AgentError::PodCidrTaken {
            cidr,
            by: format!("address {addr} on {}", name_of(index).await),
        });
    }
    Ok(())
}

/// Looks at the node and decides, changing nothing: the pod CIDR is free, the uplink
/// exists (when one is named) and what its address is.
pub async fn plan(
    handle: &Handle,
    ipam: &Ipam,
    cfg: &NodeConfig<'_>,
    owned: &[u32],
) -> Result<Node, AgentError> {
    if cfg.mode.is_subif() {
        return plan_subif(handle, ipam, cfg).await;
    }
    check_overlap(handle, ipam, cfg, owned).await?;
    let uplink = find_uplink(handle, cfg.uplink).await?;
    let uplink_ips = match &uplink {
        Some(u) => addresses_of(handle, u.index).await?,
        None => Vec::new(),
    };
    let node_ip = uplink_ips.first().copied();
    let node_ip6 = match &uplink {
        Some(u) => address6_of(handle, u.index).await?,
        None => None,
    };
    match &uplink {
        Some(u) => info!(uplink = %u.name, mtu = u.mtu, node_ip = ?node_ip, "uplink"),
        None => info!("no uplink: the node has no default route and none was configured; NAT is off"),
    }
    if let (Some(u), None) = (&uplink, node_ip) {
        warn!(uplink = %u.name, "the uplink has no IPv4 address: masquerade and published ports wait for one");
    }
    Ok(Node {
        mode: cfg.mode,
        uplink_name: uplink.as_ref().map(|u| u.name.clone()),
        uplink,
        node_ip,
        uplink_ips,
        node_ip6,
        bridge: None,
        tunnel: None,
        subif: None,
    })
}

/// macvlan/ipvlan mode: the parent (`--parent`, else the uplink), and a pod CIDR that is
/// a free range of the parent's subnet. No uplink: masquerade and published ports do
/// not apply where containers sit on the parent's network with addresses of their own.
async fn plan_subif(handle: &Handle, ipam: &Ipam, cfg: &NodeConfig<'_>) -> Result<Node, AgentError> {
    let mode = cfg.mode;
    let parent = match cfg.parent.or(cfg.uplink) {
        Some(name) => {
            link::get(handle, name).await?.ok_or_else(|| AgentError::NoParent { name: name.into() })?
        }
        None => find_uplink(handle, None).await?.ok_or(AgentError::NoParentFound { mode })?,
    };
    let cidr = ipam.cidr();
    let addresses = link::addresses(handle).await?;
    let subnets: Vec<Ipv4Net> =
        addresses.iter().filter(|(i, _)| *i == parent.index).map(|(_, n)| n.trunc()).collect();
    let Some(lan) = subnets.iter().copied().find(|n| n.contains(&cidr)) else {
        let subnets = if subnets.is_empty() {
            "it has no IPv4 address".to_string()
        } else {
            subnets.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        };
        return Err(AgentError::PodCidrNotOnParent { cidr, parent: parent.name, subnets, mode });
    };
    let routes = link::main_routes(handle).await?;
    let shim = link::get(handle, SHIM_DEVICE).await?.filter(|l| l.is_subif && l.lower == Some(parent.index));
    // Addresses the containers must not get: the node's (but the shim's, which holds
    // the pod CIDR's first address) and the network's router. (The subnet's own and
    // broadcast addresses can only be the range's, which IPAM never hands out.)
    let gateway = routes
        .iter()
        .find(|r| r.dst.prefix_len() == 0 && r.oif == Some(parent.index))
        .and_then(|r| r.gateway)
        .filter(|g| lan.contains(g));
    let mut taken: Vec<(Ipv4Addr, String)> = Vec::new();
    for (index, addr) in &addresses {
        if shim.as_ref().is_some_and(|s| s.index == *index) {
            continue;
        }
        let name = link::get_by_index(handle, *index).await?.map_or_else(|| index.to_string(), |l| l.name);
        taken.push((addr.addr(), format!("address of {name}")));
    }
    taken.extend(gateway.map(|g| (g, "the network's router, the node's default gateway".to_string())));
    if let Some((addr, what)) = taken.into_iter().find(|(a, _)| cidr.contains(a)) {
        return Err(AgentError::PodCidrHoldsNode { cidr, addr, what });
    }
    let ours = |oif: Option<u32>| {
        oif.is_some() && (oif == Some(parent.index) || oif == shim.as_ref().map(|s| s.index))
    };
    if let Some(r) = routes.iter().find(|r| {
        r.dst.prefix_len() > 0 && overlaps(r.dst, cidr) && !(ours(r.oif) && (r.dst == lan || r.dst == cidr))
    }) {
        return Err(AgentError::PodCidrTaken { cidr, by: format!("the node's route {}", r.dst) });
    }
    let kind = match mode {
        Mode::Ipvlan => link::SubifKind::Ipvlan(cfg.ipvlan_mode),
        _ => link::SubifKind::Macvlan,
    };
    info!(mode = %mode, parent = %parent.name, network = %lan, gateway = ?gateway, "containers join the parent's network");
    Ok(Node {
        mode,
        uplink_name: None,
        uplink: None,
        node_ip: None,
        uplink_ips: Vec::new(),
        node_ip6: None,
        bridge: None,
        tunnel: None,
        subif: Some(Subif { kind, parent, lan, gateway, shim: None }),
    })
}

/// The first IPv4 address of link `index`.
pub async fn address_of(handle: &Handle, index: u32) -> Result<Option<Ipv4Addr>, AgentError> {
    Ok(addresses_of(handle, index).await?.first().copied())
}

/// The IPv4 addresses of link `index`, in the kernel's order (the primary first).
pub async fn addresses_of(handle: &Handle, index: u32) -> Result<Vec<Ipv4Addr>, AgentError> {
    Ok(link::addresses(handle)
        .await?
        .into_iter()
        .filter(|(i, _)| *i == index)
        .map(|(_, a)| a.addr())
        .collect())
}

/// The first usable IPv6 address of link `index` that is not link-local (global or
/// unique local): what NAT66 masquerades to.
pub async fn address6_of(handle: &Handle, index: u32) -> Result<Option<std::net::Ipv6Addr>, AgentError> {
    Ok(link::addresses6(handle)
        .await?
        .into_iter()
        .filter(|a| a.index == index && !a.tentative)
        .map(|a| a.net.addr())
        .find(|a| a.segments()[0] & 0xffc0 != 0xfe80 && !a.is_loopback() && !a.is_multicast()))
}

/// What [`apply`] changed, to be taken back if the start fails later.
#[derive(Default)]
pub struct Undo {
    /// (link index, address, prefix) added by this start.
    addresses: Vec<(u32, IpAddr, u8)>,
    /// The bridge, when this start created it.
    bridge: Option<u32>,
    /// The VXLAN device, when this start created it.
    tunnel: Option<u32>,
    /// The macvlan/ipvlan shim, when this start created it.
    shim: Option<u32>,
}

impl Undo {
    pub async fn run(self, handle: &Handle) {
        for (index, ip, prefix) in self.addresses {
            if let Err(e) = link::delete_address(handle, index, ip, prefix).await {
                warn!("undoing node set-up: {e}");
            }
        }
        for index in self.bridge.into_iter().chain(self.tunnel).chain(self.shim) {
            if let Err(e) = link::delete(handle, index).await {
                warn!("undoing node set-up: {e}");
            }
        }
    }
}

/// Gives the gateway address a home (lo in routed mode, the bridge in bridge mode, and
/// there the IPv6 pod CIDR's first address too, `ipam6`), recording each change in `undo`.
pub async fn apply(
    handle: &Handle,
    ipam: &Ipam,
    ipam6: Option<&Ipam6>,
    node: &mut Node,
    bridge_name: &str,
    undo: &mut Undo,
) -> Result<(), AgentError> {
    let gateway = ipam.gateway();
    let had = |index: u32, prefix: u8| async move {
        link::addresses(handle)
            .await
            .map(|a| a.iter().any(|(i, n)| *i == index && n.addr() == gateway && n.prefix_len() == prefix))
    };
    match node.mode {
        // The node owns the gateway address, so containers can reach it (ping, DNS on
        // the node); no interface needs to be in the pod CIDR for that.
        Mode::Routed => {
            let lo = link::get(handle, "lo").await?.ok_or(AgentError::NoLoopback)?;
            if !had(lo.index, 32).await? {
                link::add_address(handle, lo.index, "lo", gateway, 32).await?;
                undo.addresses.push((lo.index, gateway.into(), 32));
            }
        }
        Mode::Bridge => {
            let existed = link::get(handle, bridge_name).await?.is_some();
            let br = link::ensure_bridge(handle, bridge_name).await?;
            if !existed {
                undo.bridge = Some(br.index);
            }
            let prefix = ipam.cidr().prefix_len();
            if !had(br.index, prefix).await? {
                link::add_address(handle, br.index, &br.name, gateway, prefix).await?;
                undo.addresses.push((br.index, gateway.into(), prefix));
            }
            if let Some(ipam6) = ipam6 {
                // The containers' IPv6 gateway, as docker0's; without duplicate address
                // detection, as the containers' own: usable at once.
                let (gateway6, prefix6) = (ipam6.gateway(), ipam6.cidr().prefix_len());
                let had6 = link::addresses6(handle).await?.iter().any(|a| {
                    a.index == br.index && a.net.addr() == gateway6 && a.net.prefix_len() == prefix6
                });
                if !had6 {
                    link::add_address6(handle, br.index, &br.name, gateway6, prefix6).await?;
                    undo.addresses.push((br.index, gateway6.into(), prefix6));
                }
            }
            link::set_up(handle, br.index, &br.name).await?;
            node.bridge = Some(br);
        }
        // The node's way to its containers: the shim holds the pod CIDR's first
        // address, and the pod CIDR is routed through it. Containers reach the node at
        // that address.
        Mode::Macvlan | Mode::Ipvlan => {
            let subif = node.subif.as_mut().expect("planned in macvlan/ipvlan mode");
            let (shim, made) = link::ensure_shim(handle, subif.kind, subif.parent.index, SHIM_DEVICE).await?;
            if made {
                undo.shim = Some(shim.index);
            }
            if !had(shim.index, 32).await? {
                link::add_address(handle, shim.index, SHIM_DEVICE, gateway, 32).await?;
                if !made {
                    undo.addresses.push((shim.index, gateway.into(), 32));
                }
            }
            link::set_up(handle, shim.index, SHIM_DEVICE).await?;
            link::add_subnet_route(handle, ipam.cidr(), shim.index).await?;
            subif.shim = Some(shim);
        }
    }
    Ok(())
}

/// The cluster's overlay device, recorded in `undo` when this start creates it.
pub async fn ensure_tunnel(handle: &Handle, undo: &mut Undo) -> Result<Link, AgentError> {
    let existed = link::get(handle, TUNNEL_DEVICE).await?.is_some();
    let dev = link::ensure_vxlan(handle, TUNNEL_DEVICE).await?;
    if !existed {
        undo.tunnel = Some(dev.index);
    }
    link::set_up(handle, dev.index, &dev.name).await?;
    info!(device = %dev.name, mtu = dev.mtu, "VXLAN overlay to the other nodes");
    Ok(dev)
}

/// The overlay device's name.
pub const TUNNEL_DEVICE: &str = "npvx0";

/// The address other nodes reach this one at: the uplink's IPv4 address.
pub async fn underlay_address(handle: &Handle, uplink: Option<&str>) -> Result<Ipv4Addr, AgentError> {
    let link = find_uplink(handle, uplink).await?;
    let address = match &link {
        Some(l) => address_of(handle, l.index).await?,
        None => None,
    };
    address.ok_or_else(|| AgentError::NoUnderlayAddress { uplink: link.map(|l| l.name) })
}

/// The node's IPv6 underlay address: its uplink's first global one, if it has one (the
/// uplink's name too, for an error about it).
pub async fn underlay_address6(
    handle: &Handle,
    uplink: Option<&str>,
) -> Result<(Option<String>, Option<std::net::Ipv6Addr>), AgentError> {
    let link = find_uplink(handle, uplink).await?;
    let address = match &link {
        Some(l) => address6_of(handle, l.index).await?,
        None => None,
    };
    Ok((link.map(|l| l.name), address))
}

/// The configured uplink, or the interface of the default route.
async fn find_uplink(handle: &Handle, name: Option<&str>) -> Result<Option<Link>, AgentError> {
    if let Some(name) = name {
        return match link::get(handle, name).await? {
            Some(l) => Ok(Some(l)),
            None => Err(AgentError::NoUplink { name: name.into() }),
        };
    }
    for route in link::main_routes(handle).await? {
        if route.dst.prefix_len() == 0 && route.dst.addr() == Ipv4Addr::UNSPECIFIED {
            if let Some(oif) = route.oif {
                return Ok(link::get_by_index(handle, oif).await?);
            }
        }
    }
    Ok(None)
}
