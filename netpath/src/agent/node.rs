//! Node set-up at agent start: refuse a pod CIDR that collides with the node's own
//! networks, give the gateway address a home, find the uplink.
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use rtnetlink::Handle;
use tracing::info;

use super::AgentError;
use crate::{
    plumbing::link::{self, Link},
    state::{Ipam, Mode},
};

/// What the agent learned about the node.
pub struct Node {
    pub mode: Mode,
    pub uplink: Option<Link>,
    /// The uplink's first IPv4 address: source of masqueraded traffic, destination of
    /// published ports.
    pub node_ip: Option<Ipv4Addr>,
    /// The bridge in bridge mode.
    pub bridge: Option<Link>,
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
        return Err(AgentError::Invalid(format!(
            "pod CIDR {cidr} overlaps the node's route {}{dev}; choose another --pod-cidr",
            route.dst
        )));
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
        return Err(AgentError::Invalid(format!(
            "pod CIDR {cidr} overlaps address {addr} on {}; choose another --pod-cidr",
            name_of(index).await
        )));
    }
    Ok(())
}

pub async fn setup(
    handle: &Handle,
    ipam: &Ipam,
    cfg: NodeConfig<'_>,
    owned: &[u32],
) -> Result<Node, AgentError> {
    check_overlap(handle, ipam, &cfg, owned).await?;
    let gateway = ipam.gateway();
    let bridge = match cfg.mode {
        // The node owns the gateway address, so containers can reach it (ping, DNS on
        // the node); no interface needs to be in the pod CIDR for that.
        Mode::Routed => {
            let lo = link::get(handle, "lo").await?.ok_or_else(|| AgentError::Invalid("no lo".into()))?;
            link::add_address(handle, lo.index, "lo", gateway, 32).await?;
            None
        }
        Mode::Bridge => {
            let br = link::ensure_bridge(handle, cfg.bridge_name).await?;
            link::add_address(handle, br.index, &br.name, gateway, ipam.cidr().prefix_len()).await?;
            link::set_up(handle, br.index, &br.name).await?;
            Some(br)
        }
    };
    let uplink = find_uplink(handle, cfg.uplink).await?;
    let mut node_ip = None;
    if let Some(u) = &uplink {
        node_ip =
            link::addresses(handle).await?.into_iter().find(|(i, _)| *i == u.index).map(|(_, a)| a.addr());
    }
    match &uplink {
        Some(u) => info!(uplink = %u.name, mtu = u.mtu, node_ip = ?node_ip, "uplink"),
        None => info!("no uplink: the node has no default route and none was configured; NAT is off"),
    }
    Ok(Node { mode: cfg.mode, uplink, node_ip, bridge })
}

/// The configured uplink, or the interface of the default route.
async fn find_uplink(handle: &Handle, name: Option<&str>) -> Result<Option<Link>, AgentError> {
    if let Some(name) = name {
        return match link::get(handle, name).await? {
            Some(l) => Ok(Some(l)),
            None => {
                Err(AgentError::Invalid(format!("uplink interface {name} does not exist; check --uplink")))
            }
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
