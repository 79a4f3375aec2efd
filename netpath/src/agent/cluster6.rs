//! The other nodes' IPv6 subnets (`--cluster-cidr6`), as [`super::cluster`] keeps their
//! IPv4 ones: NODE_ROUTES6 gets each with its node's underlay address (the overlay's
//! outer header is IPv4 for either family) and, in native routing, the node's routing
//! table a route to each via the node's IPv6 underlay address. Linux refuses an IPv4
//! next hop for an IPv6 route (`via inet` is for IPv4 routes only, RFC 5549's
//! direction), so a natively routed node without an IPv6 address gets no IPv6 route.
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::Ipv6Net;
use netpath_common::{conntrack::ROUTE_F_NATIVE, NodeRoute};
use tracing::{info, warn};

use super::{Agent, AgentError};
use crate::{
    cluster::{NodeRecord, Tunnel},
    plumbing::link,
};

/// Where another node's IPv6 subnet goes: its IPv4 underlay address (the overlay's
/// outer destination) and, for native routing, its IPv6 one (the route's next hop).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Peer6 {
    underlay: Ipv4Addr,
    next_hop: Option<Ipv6Addr>,
}

/// The other nodes' IPv6 subnets as written to the datapath.
pub(super) type Routes6 = std::collections::HashMap<Ipv6Net, Peer6>;

impl Agent {
    /// The store's nodes changed: the IPv6 half of [`Agent::on_nodes`], which calls it.
    /// Only what changed since the last list is written; the first list after a start,
    /// or after a failed write, syncs in full.
    pub(super) async fn on_nodes6(&mut self, me: &NodeRecord, nodes: &[NodeRecord]) {
        if self.cluster.as_ref().and_then(|m| m.cluster6()).is_none() {
            return;
        }
        let native = me.tunnel == Tunnel::None;
        let mut wanted = Routes6::new();
        for n in nodes.iter().filter(|n| n.name != me.name) {
            let Some(net6) = n.pod_cidr6 else { continue };
            if native && n.address6.is_none() {
                warn!(node = %n.name, subnet6 = %net6, "the node has no IPv6 underlay address: no IPv6 route to its pods");
                continue;
            }
            wanted.insert(net6, Peer6 { underlay: n.address, next_hop: n.address6 });
        }
        let written = match self.node_routes6.take() {
            Some(before) => {
                let upsert: Routes6 = wanted
                    .iter()
                    .filter(|(net, p)| before.get(net) != Some(p))
                    .map(|(n, p)| (*n, *p))
                    .collect();
                let gone: Routes6 = before
                    .iter()
                    .filter(|(net, _)| !wanted.contains_key(net))
                    .map(|(n, p)| (*n, *p))
                    .collect();
                self.write_routes6(native, &upsert, &gone, false).await
            }
            None => self.write_routes6(native, &wanted, &Routes6::new(), true).await,
        };
        match written {
            Ok(()) => {
                info!(routes = wanted.len(), "IPv6 routes to the other nodes");
                self.node_routes6 = Some(wanted);
            }
            Err(e) => warn!("cannot write the IPv6 routes to the other nodes (a full sync follows): {e}"),
        }
    }

    /// Writes `upsert` and removes `gone`; `full`: `upsert` is every route, and any
    /// other route of netpath's (kernel or map) goes.
    async fn write_routes6(
        &mut self,
        native: bool,
        upsert: &Routes6,
        gone: &Routes6,
        full: bool,
    ) -> Result<(), AgentError> {
        let route = |p: &Peer6| NodeRoute {
            underlay: p.underlay.octets(),
            flags: if native { ROUTE_F_NATIVE } else { 0 },
        };
        if native {
            // The kernel's route first, so the datapath's FIB lookup finds it.
            for (net, peer) in upsert {
                if let Some(gw) = peer.next_hop {
                    link::add_node_route6(&self.netlink, *net, gw).await?;
                }
            }
        }
        let entries: Vec<(Ipv6Addr, NodeRoute)> =
            upsert.iter().map(|(n, p)| (n.network(), route(p))).collect();
        if full {
            self.datapath.set_node_routes6(&entries)?;
        } else {
            let removed: Vec<Ipv6Addr> = gone.keys().map(|n| n.network()).collect();
            self.datapath.update_node_routes6(&entries, &removed)?;
        }
        if native {
            for (net, peer) in gone {
                if let Some(gw) = peer.next_hop {
                    link::del_node_route6(&self.netlink, *net, gw).await?;
                }
            }
        }
        if full {
            // netpath's kernel routes that no node wants now (any mode: a node that
            // changed from native routing to VXLAN leaves none behind).
            for (net, gw) in link::node_routes6(&self.netlink).await? {
                let wanted = native && upsert.get(&net).and_then(|p| p.next_hop) == Some(gw);
                if !wanted {
                    link::del_node_route6(&self.netlink, net, gw).await?;
                }
            }
        }
        Ok(())
    }
}
