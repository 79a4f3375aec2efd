//! The cluster as the operator sees it through the agent (which knows the store).
use std::net::Ipv4Addr;

use netpath_common::{conntrack::ROUTE_F_NATIVE, NodeRoute};
use tracing::{info, warn};

use super::{Agent, AgentError};
use crate::cluster::{self, NodeRecord, NodeStatus, Tunnel};
use crate::plumbing::link;

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
        let uplink = self.node.uplink.as_ref().map_or(super::endpoint::DEFAULT_MTU, |u| u.mtu);
        if self.node.tunnel.is_some() {
            uplink.saturating_sub(VXLAN_OVERHEAD)
        } else {
            uplink
        }
    }

    /// The store's nodes changed: NODE_ROUTES gets every other node's subnet and, in
    /// native routing, the node's routing table a route to each.
    pub(super) async fn on_nodes(&mut self, nodes: Vec<NodeRecord>) {
        let Some(me) = self.cluster.as_ref().map(|m| m.record().clone()) else { return };
        let others: Vec<&NodeRecord> = nodes.iter().filter(|n| n.name != me.name).collect();
        let native = me.tunnel == Tunnel::None;
        let routes: Vec<(Ipv4Addr, NodeRoute)> = others
            .iter()
            .map(|n| {
                let flags = if native { ROUTE_F_NATIVE } else { 0 };
                (n.pod_cidr.network(), NodeRoute { underlay: n.address.octets(), flags })
            })
            .collect();
        if native {
            // The kernel's route first, so the datapath's FIB lookup finds it.
            if let Err(e) = self.sync_kernel_routes(&others).await {
                warn!("cannot install the routes to the other nodes: {e}");
            }
        }
        match self.datapath.set_node_routes(&routes) {
            Ok(()) => info!(nodes = nodes.len(), routes = routes.len(), "routes to the other nodes"),
            Err(e) => warn!("cannot write the routes to the other nodes: {e}"),
        }
    }

    /// Native routing: one route per other node's subnet, via its address; the rest of
    /// netpath's go.
    async fn sync_kernel_routes(&self, others: &[&NodeRecord]) -> Result<(), AgentError> {
        for n in others {
            link::add_node_route(&self.netlink, n.pod_cidr, n.address).await?;
        }
        for (net, gw) in link::node_routes(&self.netlink).await? {
            if !others.iter().any(|n| n.pod_cidr == net && n.address == gw) {
                link::del_node_route(&self.netlink, net, gw).await?;
            }
        }
        Ok(())
    }
}
