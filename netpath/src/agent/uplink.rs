//! The uplink while the agent runs: it may be deleted, come back (with a new index), or
//! change its address. The agent hears of it from the kernel's link and address events
//! and keeps NODE_CONFIG and the uplink's programs in step; `doctor`, the metrics
//! (`netpath_uplink_up`) and the replies to changes say when it is gone.
use futures::StreamExt as _;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::{link::LinkAttribute, RouteNetlinkMessage};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::{node, server::Job, Agent, AgentError};
use crate::plumbing::{self, PlumbingError};

/// What happened to a link or an address, as far as the uplink is concerned.
#[derive(Debug)]
pub enum LinkEvent {
    /// The link of the uplink's name was deleted.
    Gone { index: u32 },
    /// A link of the uplink's name exists (new, or changed).
    Present { index: u32 },
    /// An address was added to or removed from link `index`.
    Address { index: u32 },
}

/// RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR (include/uapi/linux/rtnetlink.h):
/// the IPv6 address is NAT66's source.
const GROUPS: u32 = 0x1 | 0x10 | 0x100;

/// Subscribes to the node's link and address events and turns those about `name` into
/// jobs for the agent: its link's, and the addresses of the link that has that name
/// (`index` at the start, then whichever link of that name the events announce). Other
/// links' addresses (every endpoint's veth gets and loses an IPv6 link-local one) are
/// none of the agent's business: as jobs they would wait, and hold up the requests
/// behind them, until the endpoint changes in flight end.
pub fn watch(name: String, index: Option<u32>, jobs: mpsc::Sender<Job>) -> Result<(), AgentError> {
    use rtnetlink::sys::{AsyncSocket as _, SocketAddr};
    let (mut conn, _handle, mut messages) = rtnetlink::new_connection().map_err(PlumbingError::Socket)?;
    conn.socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, GROUPS))
        .map_err(|source| AgentError::Io { what: "cannot subscribe to link events".into(), source })?;
    tokio::spawn(conn);
    tokio::spawn(async move {
        let mut uplink = index;
        while let Some((msg, _)) = messages.next().await {
            let NetlinkPayload::InnerMessage(msg) = msg.payload else { continue };
            let event = match msg {
                RouteNetlinkMessage::NewLink(l) | RouteNetlinkMessage::DelLink(l)
                    if !l.attributes.iter().any(|a| matches!(a, LinkAttribute::IfName(n) if *n == name)) =>
                {
                    continue
                }
                RouteNetlinkMessage::DelLink(l) => {
                    uplink = None;
                    LinkEvent::Gone { index: l.header.index }
                }
                RouteNetlinkMessage::NewLink(l) => {
                    uplink = Some(l.header.index);
                    LinkEvent::Present { index: l.header.index }
                }
                RouteNetlinkMessage::NewAddress(a) | RouteNetlinkMessage::DelAddress(a)
                    if uplink == Some(a.header.index) =>
                {
                    LinkEvent::Address { index: a.header.index }
                }
                _ => continue,
            };
            if jobs.send(Job::Link(event)).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

impl Agent {
    pub(super) async fn on_link_event(&mut self, event: LinkEvent) {
        if let Err(e) = self.follow_uplink(event).await {
            warn!("following the uplink: {e}");
        }
    }

    async fn follow_uplink(&mut self, event: LinkEvent) -> Result<(), AgentError> {
        let name = self.node.uplink_name.clone().unwrap_or_default();
        let current = self.node.uplink.as_ref().map(|u| u.index);
        match event {
            LinkEvent::Gone { index } if current == Some(index) => {
                error!(uplink = %name,
                       "the uplink is gone: masquerade and published ports are down until an interface of that name is back");
                self.node.uplink = None;
                self.datapath.detach_uplink(&name, index);
                self.set_uplink_up(false);
                self.write_node_config()?;
            }
            LinkEvent::Present { index } if current != Some(index) => {
                let Some(link) = plumbing::link::get_by_index(&self.netlink, index).await? else {
                    return Ok(());
                };
                if let Some(old) = current {
                    self.datapath.detach_uplink(&name, old);
                }
                self.node.uplink_ips = node::addresses_of(&self.netlink, index).await?;
                self.node.node_ip = self.node.uplink_ips.first().copied();
                self.node.node_ip6 = node::address6_of(&self.netlink, index).await?;
                self.node.uplink = Some(link.clone());
                self.write_node_config()?;
                self.attach_uplink(&link)?;
                self.set_uplink_up(true);
                info!(uplink = %name, index, node_ip = ?self.node.node_ip, "the uplink is back; programs attached");
            }
            LinkEvent::Address { index } if current == Some(index) => {
                self.node.uplink_ips = node::addresses_of(&self.netlink, index).await?;
                let ip = self.node.uplink_ips.first().copied();
                let ip6 = node::address6_of(&self.netlink, index).await?;
                if ip != self.node.node_ip || ip6 != self.node.node_ip6 {
                    info!(uplink = %name, old = ?self.node.node_ip, new = ?ip, old6 = ?self.node.node_ip6, new6 = ?ip6,
                          "the uplink's address changed");
                    self.node.node_ip = ip;
                    self.node.node_ip6 = ip6;
                    self.write_node_config()?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn set_uplink_up(&self, up: bool) {
        self.health.uplink_up.store(up, std::sync::atomic::Ordering::Relaxed);
    }
}
