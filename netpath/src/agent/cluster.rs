//! The cluster as the operator sees it through the agent (which knows the store).
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use netpath_common::{conntrack::ROUTE_F_NATIVE, NodeRoute};
use tracing::{info, warn};

use super::{Agent, AgentError};
use crate::cluster::{self, NodeRecord, NodeStatus, Tunnel};
use crate::plumbing::link;

/// The other nodes' subnets and their underlay addresses, as written to the datapath.
pub(super) type Routes = std::collections::HashMap<Ipv4Net, Ipv4Addr>;

/// Outer IPv4 (20), UDP (8), VXLAN (8) and inner Ethernet (14) headers.
const VXLAN_OVERHEAD: u32 = 50;

impl Agent {
    pub(super) async fn node_list(&self) -> Result<Vec<NodeStatus>, AgentError> {
        let member = self.cluster.as_ref().ok_or(AgentError::NotClustered)?;
        Ok(cluster::list_nodes(member.store()).await?)
    }

    pub(super) async fn node_del(&self, name: &str) -> Result<NodeRecord, AgentError> {
        let member = self.cluster.as_ref().ok_or(AgentError::NotClustered)?;
        Ok(cluster::delete_node(member.store(), name).await?)
    }
}

impl Agent {
    /// A pod's MTU when none is asked for: the uplink's, less the VXLAN encapsulation
    /// when packets to other nodes are encapsulated.
    pub(super) fn default_mtu(&self) -> u32 {
        // A sub-interface cannot be larger than its parent.
        let uplink = self
            .node
            .uplink
            .as_ref()
            .or(self.node.subif.as_ref().map(|s| &s.parent))
            .map_or(super::endpoint::DEFAULT_MTU, |u| u.mtu);
        if self.node.tunnel.is_some() {
            uplink.saturating_sub(VXLAN_OVERHEAD)
        } else {
            uplink
        }
    }

    /// The store's nodes changed: NODE_ROUTES gets every other node's subnet and, in
    /// native routing, the node's routing table a route to each. Only what changed since
    /// the last list is written (the watch hands over the whole list at every change):
    /// a node joining a cluster of thousands costs one map entry and one route, not
    /// thousands. The first list after a start, or after a failed write, syncs in full.
    pub(super) async fn on_nodes(&mut self, nodes: Vec<NodeRecord>) {
        let Some(me) = self.cluster.as_ref().map(|m| m.record().clone()) else { return };
        self.on_nodes6(&me, &nodes).await;
        let wanted: Routes =
            nodes.iter().filter(|n| n.name != me.name).map(|n| (n.pod_cidr, n.address)).collect();
        let native = me.tunnel == Tunnel::None;
        let route = |gw: &Ipv4Addr| NodeRoute {
            underlay: gw.octets(),
            flags: if native { ROUTE_F_NATIVE } else { 0 },
        };
        let written = match self.node_routes.take() {
            Some(before) => {
                let upsert: Routes = wanted
                    .iter()
                    .filter(|(net, gw)| before.get(net) != Some(gw))
                    .map(|(n, g)| (*n, *g))
                    .collect();
                let gone: Vec<(Ipv4Net, Ipv4Addr)> = before
                    .iter()
                    .filter(|(net, _)| !wanted.contains_key(net))
                    .map(|(n, g)| (*n, *g))
                    .collect();
                self.write_route_changes(native, &upsert, &gone, route).await
            }
            None => self.write_all_routes(native, &wanted, route).await,
        };
        match written {
            Ok(()) => {
                info!(nodes = nodes.len(), routes = wanted.len(), "routes to the other nodes");
                self.node_routes = Some(wanted);
            }
            Err(e) => warn!("cannot write the routes to the other nodes (a full sync follows): {e}"),
        }
    }

    async fn write_route_changes(
        &mut self,
        native: bool,
        upsert: &Routes,
        gone: &[(Ipv4Net, Ipv4Addr)],
        route: impl Fn(&Ipv4Addr) -> NodeRoute,
    ) -> Result<(), AgentError> {
        if native {
            // The kernel's route first, so the datapath's FIB lookup finds it.
            for (net, gw) in upsert {
                link::add_node_route(&self.netlink, *net, *gw).await?;
            }
        }
        let entries: Vec<(Ipv4Addr, NodeRoute)> =
            upsert.iter().map(|(n, g)| (n.network(), route(g))).collect();
        let removed: Vec<Ipv4Addr> = gone.iter().map(|(n, _)| n.network()).collect();
        self.datapath.update_node_routes(&entries, &removed)?;
        if native {
            for (net, gw) in gone {
                link::del_node_route(&self.netlink, *net, *gw).await?;
            }
        }
        Ok(())
    }

    async fn write_all_routes(
        &mut self,
        native: bool,
        wanted: &Routes,
        route: impl Fn(&Ipv4Addr) -> NodeRoute,
    ) -> Result<(), AgentError> {
        if native {
            self.sync_kernel_routes(wanted).await?;
        }
        let entries: Vec<(Ipv4Addr, NodeRoute)> =
            wanted.iter().map(|(n, g)| (n.network(), route(g))).collect();
        Ok(self.datapath.set_node_routes(&entries)?)
    }

    /// Native routing: one route per other node's subnet, via its address; the rest of
    /// netpath's go.
    async fn sync_kernel_routes(&self, wanted: &Routes) -> Result<(), AgentError> {
        for (net, gw) in wanted {
            link::add_node_route(&self.netlink, *net, *gw).await?;
        }
        for (net, gw) in link::node_routes(&self.netlink).await? {
            if wanted.get(&net) != Some(&gw) {
                link::del_node_route(&self.netlink, net, gw).await?;
            }
        }
        Ok(())
    }
}
