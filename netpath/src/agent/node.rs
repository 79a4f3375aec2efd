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
}

pub struct NodeConfig<'a> {
    pub mode: Mode,
    pub bridge_name: &'a str,
    pub uplink: Option<&'a str>,
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
}

impl Undo {
    pub async fn run(self, handle: &Handle) {
        for (index, ip, prefix) in self.addresses {
            if let Err(e) = link::delete_address(handle, index, ip, prefix).await {
                warn!("undoing node set-up: {e}");
            }
        }
        for index in self.bridge.into_iter().chain(self.tunnel) {
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
