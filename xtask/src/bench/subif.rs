//! The sub-interface worlds: each container's eth0 a macvlan or an ipvlan of the node's parent device,
//! on the parent's network with an address of its own, no bridge, no veth pair, no
//! program, no NAT. The parent is the lab's uplink (a veth in the node namespace whose
//! peer is the outside host's eth0), so the outside host is on the containers' network,
//! as an upstream router is for a real node. netpath's `--mode macvlan` builds the same
//! layout around the same addresses (its `--pod-cidr` a free range of the uplink's
//! 192.168.77.0/24, its shim the range's first address): the two differ only by what
//! netpath adds, and both differ from its routed veth path by the layout.
use std::net::Ipv4Addr;

use anyhow::Result;
use netpath_tests::{Lab, NODE_UPLINK_IP, OUTSIDE_IP};

use super::world::{ip, Datapath, World};

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

/// The kernel's ipvlan modes the bench measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpvlanMode {
    L2,
    L3,
}

impl IpvlanMode {
    pub fn name(self) -> &'static str {
        match self {
            IpvlanMode::L2 => "ipvlan (l2)",
            IpvlanMode::L3 => "ipvlan (l3)",
        }
    }

    pub fn datapath(self) -> Datapath {
        match self {
            IpvlanMode::L2 => Datapath::Ipvlan,
            IpvlanMode::L3 => Datapath::IpvlanL3,
        }
    }

    /// The lab's prefix: none a prefix of another's, so that sweeping one spares the rest.
    pub const fn prefix(self) -> &'static str {
        match self {
            IpvlanMode::L2 => "npbipv",
            IpvlanMode::L3 => "npbil3",
        }
    }
}

/// The kernel's own ipvlan, laid out as [`build_macvlan`]'s macvlan. L3 answers no ARP:
/// the containers route everything out of the interface, and the outside host routes
/// the range to the node, as a network must for netpath's `--ipvlan-mode l3`.
pub fn build_ipvlan(lab: &Lab, mode: IpvlanMode) -> Result<()> {
    let gateway = OUTSIDE_IP.to_string();
    let (kind, route): (&str, [&str; 5]) = match mode {
        IpvlanMode::L2 => ("l2", ["route", "add", "default", "via", &gateway]),
        IpvlanMode::L3 => ("l3", ["route", "add", "default", "dev", "eth0"]),
    };
    for (c, addr) in lab.containers.iter().zip([A, B]) {
        let made_inside = ["link", "add", "link", "uplink0", "name", "eth0", "netns", &c.name];
        ip(&lab.node, &[&made_inside[..], &["type", "ipvlan", "mode", kind]].concat())?;
        ip(c, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        ip(c, &["link", "set", "eth0", "up"])?;
        ip(c, &["link", "set", "lo", "up"])?;
        ip(c, &route)?;
    }
    if mode == IpvlanMode::L3 {
        ip(&lab.outside, &["route", "add", POD_CIDR, "via", &NODE_UPLINK_IP.to_string()])?;
    }
    Ok(())
}

/// netpath's `--mode ipvlan` world's lab prefix.
pub const NETPATH_IPVLAN_PREFIX: &str = "npbnip";

/// Every ipvlan world's lab prefix (for the sweeps).
pub const IPVLAN_PREFIXES: [&str; 3] =
    [IpvlanMode::L2.prefix(), IpvlanMode::L3.prefix(), NETPATH_IPVLAN_PREFIX];

/// The three ipvlan worlds (the kernel's L2 and L3, netpath's L2 mode), or, when this
/// kernel makes no ipvlan link, why not: printed here and stated in the report, never
/// measured. Told by the kernel's own answer to the first world's `ip link add`, so a
/// kernel with ipvlan is measured natively. A later world that fails is an error, as
/// for every other world.
pub fn ipvlan_worlds() -> Result<Result<Vec<World>, String>> {
    let first = match World::ipvlan(IpvlanMode::L2) {
        Ok(w) => w,
        Err(e) => {
            let why = format!(
                "ipvlan (l2, l3) and netpath --mode ipvlan: this kernel makes no ipvlan link ({e:#}); \
                 `cargo xtask bench --vm 6.1` measures them in an emulated guest"
            );
            println!("skipped: {why}");
            return Ok(Err(why));
        }
    };
    Ok(Ok(vec![first, World::ipvlan(IpvlanMode::L3)?, World::netpath_ipvlan()?]))
}
