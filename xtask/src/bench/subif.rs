//! The sub-interface worlds: each container's eth0 a macvlan of the node's parent device,
//! on the parent's network with an address of its own, no bridge, no veth pair, no
//! program, no NAT. The parent is the lab's uplink (a veth in the node namespace whose
//! peer is the outside host's eth0), so the outside host is on the containers' network,
//! as an upstream router is for a real node. netpath's `--mode macvlan` builds the same
//! layout around the same addresses (its `--pod-cidr` a free range of the uplink's
//! 192.168.77.0/24, its shim the range's first address): the two differ only by what
//! netpath adds, and both differ from its routed veth path by the layout.
use std::net::Ipv4Addr;

use anyhow::Result;
use netpath_tests::{Lab, OUTSIDE_IP};

use super::world::ip;

/// The containers' range in the uplink's subnet, as netpath's agent is given it: not
/// the upper half, which holds the network's broadcast address (the agent refuses it).
pub const POD_CIDR: &str = "192.168.77.128/26";
/// The containers' addresses: the range's second and third, as netpath's allocator
/// gives them after its shim's.
pub const A: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 130);
pub const B: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 131);

/// The kernel's own macvlan in bridge mode (the mode netpath's agent uses): the two
/// containers' macvlans of the uplink, each made inside its container's namespace,
/// with the parent subnet's prefix and the node's default gateway (the outside host).
pub fn build_macvlan(lab: &Lab) -> Result<()> {
    for (c, addr) in lab.containers.iter().zip([A, B]) {
        let made_inside = ["link", "add", "link", "uplink0", "name", "eth0", "netns", &c.name];
        ip(&lab.node, &[&made_inside[..], &["type", "macvlan", "mode", "bridge"]].concat())?;
        ip(c, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        ip(c, &["link", "set", "eth0", "up"])?;
        ip(c, &["link", "set", "lo", "up"])?;
        ip(c, &["route", "add", "default", "via", &OUTSIDE_IP.to_string()])?;
    }
    Ok(())
}
