//! Links, addresses and routes, one small typed function per netlink operation.
use std::{
    fs::File,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
};

use futures::TryStreamExt as _;
use rtnetlink::{
    packet_route::{
        link::{InfoData, InfoKind, InfoNetkit, InfoVeth, LinkAttribute, LinkMessage, NetkitMode},
        route::RouteScope,
    },
    Handle, LinkBridge, LinkMessageBuilder, LinkNetkit, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder,
};

use super::{errno, PlumbingError};
use crate::state::ContainerIpv6;

/// A link as netpath needs to know it.
#[derive(Clone, Debug, Default)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub up: bool,
    /// IFLA_IFALIAS: netpath marks the links it creates with it (see [`OWNER_ALIAS`]).
    pub alias: Option<String>,
    pub is_veth: bool,
    /// A netkit device (`--device netkit`), either end.
    pub is_netkit: bool,
    /// The bridge the link is a port of.
    pub controller: Option<u32>,
    /// A macvlan or ipvlan device.
    pub is_subif: bool,
    /// IFLA_LINK: the device a sub-interface (macvlan, ipvlan, vlan) sits on, as an
    /// index of the namespace it was made in.
    pub lower: Option<u32>,
}

/// Prefix of the alias netpath gives every host-side veth it creates (followed by the
/// agent's id and the endpoint name): what lets reconciliation tell its own links from
/// everyone else's, other agents' included.
pub const OWNER_ALIAS: &str = "netpath:";

/// Who made a link: `netpath:<agent id>:<endpoint>`; builds before agent ids wrote
/// `netpath:<endpoint>` (agent None).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub agent: Option<String>,
    pub endpoint: String,
}

impl Owner {
    pub fn new(agent: &str, endpoint: &str) -> Self {
        Owner { agent: Some(agent.into()), endpoint: endpoint.into() }
    }

    pub fn alias(&self) -> String {
        match &self.agent {
            Some(a) => format!("{OWNER_ALIAS}{a}:{}", self.endpoint),
            None => format!("{OWNER_ALIAS}{}", self.endpoint),
        }
    }

    fn parse(alias: &str) -> Option<Self> {
        let rest = alias.strip_prefix(OWNER_ALIAS)?;
        // Endpoint names never hold ':', agent ids are hex: the first ':' separates them.
        Some(match rest.split_once(':') {
            Some((agent, endpoint)) => Owner { agent: Some(agent.into()), endpoint: endpoint.into() },
            None => Owner { agent: None, endpoint: rest.into() },
        })
    }
}

impl Link {
    /// Who created this link, if netpath did.
    pub fn owner(&self) -> Option<Owner> {
        Owner::parse(self.alias.as_deref()?)
    }
}

fn link_of(msg: &LinkMessage) -> Link {
    use rtnetlink::packet_route::link::{LinkFlags, LinkInfo};
    let mut link =
        Link { index: msg.header.index, up: msg.header.flags.contains(LinkFlags::Up), ..Link::default() };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::Address(a) if a.len() == 6 => link.mac.copy_from_slice(a),
            LinkAttribute::IfName(n) => link.name.clone_from(n),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::IfAlias(a) => link.alias = Some(a.clone()),
            LinkAttribute::Controller(c) => link.controller = Some(*c),
            LinkAttribute::Link(l) => link.lower = Some(*l),
            LinkAttribute::LinkInfo(infos) => {
                link.is_veth |= infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)));
                link.is_netkit |= infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Netkit)));
                link.is_subif |=
                    infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::MacVlan | InfoKind::IpVlan)));
            }
            _ => {}
        }
    }
    link
}

/// Every link of the namespace the handle belongs to.
pub async fn list(handle: &Handle) -> Result<Vec<Link>, PlumbingError> {
    let mut out = Vec::new();
    let mut links = handle.link().get().execute();
    while let Some(msg) = links.try_next().await.map_err(PlumbingError::netlink("failed to list links"))? {
        out.push(link_of(&msg));
    }
    Ok(out)
}

/// Marks a link as created by agent `agent` for `endpoint`, and renames it to `name`
/// when given (in the same request). The kernel ignores IFLA_IFALIAS when a link is
/// created, so this is a request of its own.
pub async fn set_owner(
    handle: &Handle,
    index: u32,
    owner: &Owner,
    name: Option<&str>,
) -> Result<(), PlumbingError> {
    let mut msg = LinkUnspec::new_with_index(index).alias(owner.alias());
    if let Some(name) = name {
        msg = msg.name(name.to_string());
    }
    match handle.link().set(msg.build()).execute().await {
        Err(e) if errno(&e) == Some(libc::EEXIST) && name.is_some() => Err(PlumbingError::LinkExists {
            name: name.unwrap_or_default().into(),
            place: "on the node".into(),
        }),
        r => r.map_err(PlumbingError::netlink(format!("failed to mark link {index} as netpath's"))),
    }
}

/// Removes `ip/prefix` (either family) from a link; absent is fine.
pub async fn delete_address(
    handle: &Handle,
    index: u32,
    ip: std::net::IpAddr,
    prefix: u8,
) -> Result<(), PlumbingError> {
    use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
    let mut msg = AddressMessage::default();
    msg.header.family = match ip {
        std::net::IpAddr::V4(_) => rtnetlink::packet_route::AddressFamily::Inet,
        std::net::IpAddr::V6(_) => rtnetlink::packet_route::AddressFamily::Inet6,
    };
    msg.header.index = index;
    msg.header.prefix_len = prefix;
    msg.attributes.push(AddressAttribute::Local(ip));
    msg.attributes.push(AddressAttribute::Address(ip));
    match handle.address().del(msg).execute().await {
        Err(e) if errno(&e) != Some(libc::EADDRNOTAVAIL) && errno(&e) != Some(libc::ENODEV) => {
            Err(PlumbingError::netlink(format!("failed to remove {ip}/{prefix} from link {index}"))(e))
        }
        _ => Ok(()),
    }
}

pub async fn get_by_index(handle: &Handle, index: u32) -> Result<Option<Link>, PlumbingError> {
    let mut links = handle.link().get().match_index(index).execute();
    match links.try_next().await {
        Ok(msg) => Ok(msg.as_ref().map(link_of)),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(PlumbingError::netlink(format!("failed to look up interface {index}"))(e)),
    }
}

/// Creates the bridge `name` unless it exists; returns it.
pub async fn ensure_bridge(handle: &Handle, name: &str) -> Result<Link, PlumbingError> {
    if let Some(link) = get(handle, name).await? {
        return Ok(link);
    }
    handle
        .link()
        .add(LinkBridge::new(name).build())
        .execute()
        .await
        .map_err(PlumbingError::netlink(format!("failed to create bridge {name}")))?;
    get(handle, name).await?.ok_or_else(|| PlumbingError::LinkNotFound(name.into()))
}

/// The VXLAN port IANA assigned (RFC 7348).
pub const VXLAN_PORT: u16 = 4789;

/// The cluster's VXLAN device in collect-metadata mode (`external`): one device for
/// every other node, the outer destination and VNI set per packet by the datapath. No
/// learning: the datapath knows where every pod subnet is. Existing is fine.
pub async fn ensure_vxlan(handle: &Handle, name: &str) -> Result<Link, PlumbingError> {
    if let Some(link) = get(handle, name).await? {
        return Ok(link);
    }
    handle
        .link()
        .add(LinkVxlan::new(name, 0).port(VXLAN_PORT).collect_metadata(true).learning(false).build())
        .execute()
        .await
        .map_err(PlumbingError::netlink(format!("failed to create VXLAN device {name}")))?;
    get(handle, name).await?.ok_or_else(|| PlumbingError::LinkNotFound(name.into()))
}

/// Adds `ip/prefix` to a link; already present is fine.
pub async fn add_address(
    handle: &Handle,
    index: u32,
    name: &str,
    ip: Ipv4Addr,
    prefix: u8,
) -> Result<(), PlumbingError> {
    handle
        .address()
        .add(index, ip.into(), prefix)
        .replace()
        .execute()
        .await
        .map_err(PlumbingError::netlink(format!("failed to add {ip}/{prefix} to {name}")))
}

pub async fn get(handle: &Handle, name: &str) -> Result<Option<Link>, PlumbingError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some(link_of(&msg))),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(PlumbingError::netlink(format!("failed to look up interface {name}"))(e)),
    }
}

/// Creates the veth pair for a container in one netlink request: `host` in the current
/// namespace (a port of `bridge` when given), `peer` directly inside `ns` with its final
/// name, MAC and MTU. Nothing has to be renamed or moved afterwards, so there is no
/// half-built state to undo here.
pub async fn add_veth(
    handle: &Handle,
    host: &str,
    peer: &str,
    ns: &File,
    peer_mac: [u8; 6],
    mtu: u32,
    bridge: Option<u32>,
) -> Result<Link, PlumbingError> {
    let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer.to_string())
        .address(peer_mac.to_vec())
        .mtu(mtu)
        .setns_by_fd(ns.as_raw_fd())
        .build();
    let mut msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(host.to_string())
        .mtu(mtu)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)));
    if let Some(bridge) = bridge {
        msg = msg.controller(bridge);
    }
    add_pair(handle, msg.build(), "veth", host, peer).await
}

/// Sends one request that creates a device pair (`host` here, `peer` in the container)
/// and returns the host end; a name taken on either side is its own error.
async fn add_pair(
    handle: &Handle,
    msg: LinkMessage,
    kind: &str,
    host: &str,
    peer: &str,
) -> Result<Link, PlumbingError> {
    if let Err(e) = handle.link().add(msg).execute().await {
        if errno(&e) == Some(libc::EEXIST) {
            return Err(PlumbingError::LinkExists {
                name: format!("{host} or {peer}"),
                place: "on the node or in the container namespace".into(),
            });
        }
        return Err(PlumbingError::netlink(format!("failed to create {kind} pair {host}/{peer}"))(e));
    }
    get(handle, host).await?.ok_or_else(|| PlumbingError::LinkNotFound(host.into()))
}

/// Creates a netkit pair for a container in one netlink request, as [`add_veth`] does
/// a veth pair: `host` (the primary device) here, `peer` directly inside `ns` with its
/// final name and MTU. L2 mode: the datapath parses Ethernet headers and answers the
/// container's ARP as on a veth. Both policies stay "forward" (the kernel's default),
/// so without a program the container's packets reach the node's stack, as they do on
/// a veth without one. The container's end gets `peer_mac` (6.12 takes it; the caller
/// reads the MAC back in case a kernel keeps its own), the host's a random one.
pub async fn add_netkit(
    handle: &Handle,
    host: &str,
    peer: &str,
    ns: &File,
    peer_mac: [u8; 6],
    mtu: u32,
) -> Result<Link, PlumbingError> {
    let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer.to_string())
        .address(peer_mac.to_vec())
        .mtu(mtu)
        .setns_by_fd(ns.as_raw_fd())
        .build();
    // LinkNetkit::new would add a peer message of its own: the one here carries the
    // namespace and MTU.
    let msg = LinkMessageBuilder::<LinkNetkit>::new_with_info_kind(InfoKind::Netkit)
        .name(host.to_string())
        .mtu(mtu)
        .set_info_data(InfoData::Netkit(vec![InfoNetkit::Mode(NetkitMode::L2), InfoNetkit::Peer(peer_msg)]))
        .build();
    add_pair(handle, msg, "netkit", host, peer).await
}

/// What a container's (or the node's shim's) sub-interface of a parent device is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubifKind {
    /// macvlan in bridge mode: a MAC of its own, switched to its siblings by the driver.
    Macvlan,
    /// ipvlan in L2 or L3 mode: the parent's MAC, switched by IP.
    Ipvlan(crate::state::IpvlanMode),
}

impl SubifKind {
    fn builder(self, name: &str, parent: u32) -> LinkMessageBuilder<LinkUnspec> {
        use rtnetlink::packet_route::link::{InfoIpVlan, InfoMacVlan, IpVlanMode, MacVlanMode};
        let (kind, data) = match self {
            SubifKind::Macvlan => {
                (InfoKind::MacVlan, InfoData::MacVlan(vec![InfoMacVlan::Mode(MacVlanMode::Bridge)]))
            }
            SubifKind::Ipvlan(mode) => {
                let mode = match mode {
                    crate::state::IpvlanMode::L2 => IpVlanMode::L2,
                    crate::state::IpvlanMode::L3 => IpVlanMode::L3,
                };
                (InfoKind::IpVlan, InfoData::IpVlan(vec![InfoIpVlan::Mode(mode)]))
            }
        };
        LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(kind)
            .name(name.to_string())
            .link(parent)
            .set_info_data(data)
    }

    fn name(self) -> &'static str {
        match self {
            SubifKind::Macvlan => "macvlan",
            SubifKind::Ipvlan(_) => "ipvlan",
        }
    }
}

/// Creates a container's interface `name` as a sub-interface of `parent` (an index of
/// the handle's namespace) directly inside `ns`, in one request: with interface index
/// `index` there (the datapath tells endpoints apart by it, so the agent picks indexes
/// unique among its endpoints), its MTU and, for macvlan, its MAC (ipvlan devices share
/// the parent's). Nothing has to be renamed or moved afterwards.
#[allow(clippy::too_many_arguments)]
pub async fn add_subif(
    handle: &Handle,
    kind: SubifKind,
    parent: u32,
    name: &str,
    ns: &File,
    index: u32,
    mac: Option<[u8; 6]>,
    mtu: u32,
) -> Result<(), PlumbingError> {
    let mut b = kind.builder(name, parent).mtu(mtu).setns_by_fd(ns.as_raw_fd());
    if let Some(mac) = mac {
        b = b.address(mac.to_vec());
    }
    let mut msg = b.build();
    msg.header.index = index;
    match handle.link().add(msg).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::EEXIST) => {
            Err(PlumbingError::LinkExists { name: name.into(), place: "in the container namespace".into() })
        }
        // The index is taken in the container namespace (by a device the container made).
        Err(e) if errno(&e) == Some(libc::EBUSY) => Err(PlumbingError::LinkExists {
            name: format!("interface index {index}"),
            place:
                "in the container namespace (netpath gives each container's interface an index of its own)"
                    .into(),
        }),
        Err(e) => Err(PlumbingError::netlink(format!(
            "failed to create {} {name} on parent {parent} in the container",
            kind.name()
        ))(e)),
    }
}

/// The node's own sub-interface `name` of `parent` (the shim through which the node
/// reaches its containers: a parent does not see what its sub-interfaces send).
/// Returns it and whether this call made it; one of that name that is no sub-interface
/// of `parent` is refused.
pub async fn ensure_shim(
    handle: &Handle,
    kind: SubifKind,
    parent: u32,
    name: &str,
) -> Result<(Link, bool), PlumbingError> {
    if let Some(l) = get(handle, name).await? {
        if !l.is_subif || l.lower != Some(parent) {
            return Err(PlumbingError::LinkExists {
                name: name.into(),
                place: format!("on the node and it is not a {} of interface {parent}", kind.name()),
            });
        }
        return Ok((l, false));
    }
    handle.link().add(kind.builder(name, parent).build()).execute().await.map_err(PlumbingError::netlink(
        format!("failed to create {} {name} on interface {parent}", kind.name()),
    ))?;
    let l = get(handle, name).await?.ok_or_else(|| PlumbingError::LinkNotFound(name.into()))?;
    Ok((l, true))
}

/// Adds `route`, replacing a route to the same destination: every route netpath adds
/// is idempotent so.
async fn replace_route(
    handle: &Handle,
    route: rtnetlink::packet_route::route::RouteMessage,
    what: String,
) -> Result<(), PlumbingError> {
    handle.route().add(route).replace().execute().await.map_err(PlumbingError::netlink(what))
}

/// `net dev index scope link`, replacing what was there: the node's route to a container
/// (a /32 through its host veth), or to macvlan/ipvlan containers through the shim.
pub async fn add_subnet_route(handle: &Handle, net: ipnet::Ipv4Net, index: u32) -> Result<(), PlumbingError> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(net.network(), net.prefix_len())
        .output_interface(index)
        .scope(RouteScope::Link)
        .build();
    replace_route(handle, route, format!("failed to add node route to {net} via interface {index}")).await
}

/// Inside a container: lo and `ifname` up, `ip/prefix` on `ifname` (idempotent).
async fn up_with_address(
    handle: &Handle,
    ifname: &str,
    ip: Ipv4Addr,
    prefix: u8,
) -> Result<Link, PlumbingError> {
    let lo = get(handle, "lo").await?.ok_or_else(|| PlumbingError::LinkNotFound("lo".into()))?;
    set_up(handle, lo.index, "lo").await?;
    let eth = get(handle, ifname).await?.ok_or_else(|| PlumbingError::LinkNotFound(ifname.into()))?;
    set_up(handle, eth.index, ifname).await?;
    add_address(handle, eth.index, ifname, ip, prefix).await?;
    Ok(eth)
}

/// A macvlan/ipvlan container's side: lo and the interface up, the address with the
/// parent subnet's prefix, and the default route: via the network's router when there
/// is one, straight out of the interface in ipvlan L3 (no ARP there: the parent's
/// namespace routes), none otherwise (the subnet alone).
pub async fn configure_subif(
    handle: Handle,
    ifname: String,
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
    l3: bool,
) -> Result<(), PlumbingError> {
    if let Some(gateway) = gateway.filter(|_| !l3) {
        return configure_container(handle, ifname, ip, prefix, gateway).await;
    }
    let eth = up_with_address(&handle, &ifname, ip, prefix).await?;
    if l3 {
        let default = RouteMessageBuilder::<Ipv4Addr>::new()
            .output_interface(eth.index)
            .scope(RouteScope::Link)
            .build();
        replace_route(&handle, default, format!("failed to add the default route on {ifname}")).await?;
    }
    Ok(())
}

/// The running kernel's release (`uname -r`), for messages.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map_or_else(|_| "?".into(), |s| s.trim().into())
}

/// Can this kernel make netkit devices? Asked without making one: a request to create
/// a netkit link with an invalid mode fails with EOPNOTSUPP ("Unknown device type")
/// where the kernel has no netkit driver (after trying to load the module), and with
/// another error (the attribute's policy or the driver refusing the mode) where it has
/// one; nothing is created either way. Kernels before 6.7 have no netkit at all.
pub async fn netkit_supported(handle: &Handle) -> Result<bool, PlumbingError> {
    let release = kernel_release();
    let mut it = release.split(['.', '-']).filter_map(|p| p.parse::<u32>().ok());
    if (it.next().unwrap_or(0), it.next().unwrap_or(0)) < (6, 7) {
        return Ok(false);
    }
    const PROBE: &str = "npnetkitprobe";
    let msg = LinkMessageBuilder::<LinkNetkit>::new_with_info_kind(InfoKind::Netkit)
        .name(PROBE.to_string())
        .set_info_data(InfoData::Netkit(vec![InfoNetkit::Mode(NetkitMode::Other(0xdead))]))
        .build();
    match handle.link().add(msg).execute().await {
        Err(e) if errno(&e) == Some(libc::EOPNOTSUPP) => Ok(false),
        Err(_) => Ok(true),
        Ok(()) => {
            // A kernel that took the mode after all: the probe must not stay.
            if let Some(l) = get(handle, PROBE).await? {
                delete(handle, l.index).await?;
            }
            Ok(true)
        }
    }
}

pub async fn set_up(handle: &Handle, index: u32, name: &str) -> Result<(), PlumbingError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(PlumbingError::netlink(format!("failed to bring {name} up")))
}

/// Deletes a link; a link that is already gone is not an error.
pub async fn delete(handle: &Handle, index: u32) -> Result<(), PlumbingError> {
    match handle.link().del(index).execute().await {
        Err(e) if errno(&e) != Some(libc::ENODEV) => {
            Err(PlumbingError::netlink(format!("failed to delete link {index}"))(e))
        }
        _ => Ok(()),
    }
}

/// The container side of the seed's steps: lo and eth0 up, the address, a link route to
/// the gateway and the default route through it. In routed mode the address is a /32:
/// every packet, even to a neighbour in the pod CIDR, goes to the gateway, i.e. into
/// the datapath. In bridge mode it carries the pod CIDR's prefix, as docker0's do.
pub async fn configure_container(
    handle: Handle,
    ifname: String,
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
) -> Result<(), PlumbingError> {
    let eth = up_with_address(&handle, &ifname, ip, prefix).await?;
    let to_gateway = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(gateway, 32)
        .output_interface(eth.index)
        .scope(RouteScope::Link)
        .build();
    replace_route(&handle, to_gateway, format!("failed to add route to gateway {gateway}")).await?;
    let default = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
        .gateway(gateway)
        .output_interface(eth.index)
        .build();
    replace_route(&handle, default, format!("failed to add default route via {gateway}")).await
}

/// The container interface's IPv6 sysctls (net/ipv6/conf/IFNAME/KEY), in the order
/// [`configure_container6`] sets them and [`container_drift`] holds them to.
/// addr_gen_mode first: enabling IPv6 on an interface already up would otherwise let
/// the namespace's own mode (stable-privacy, say) add a link-local address of its own.
pub const CONTAINER_SYSCTLS6: [(&str, &str); 3] =
    [("addr_gen_mode", "1"), ("accept_dad", "0"), ("disable_ipv6", "0")];

/// The container's IPv6 side, before its interface comes up: no address the kernel
/// makes itself (addr_gen_mode none) and no duplicate address detection (accept_dad 0,
/// and every address added "nodad"): its link-local address is the EUI-64 one of its
/// MAC, which the datapath knows it by, and neither address waits a second or more as
/// tentative, nor can another container's probe stall it. Then its address (routed a
/// /128, everything goes to the gateway fe80::1; in bridge mode the pod prefix's, with
/// the bridge's address as gateway) and the default route.
pub async fn configure_container6(
    handle: Handle,
    ifname: String,
    v6: ContainerIpv6,
) -> Result<(), PlumbingError> {
    let conf = |key: &str| format!("net/ipv6/conf/{ifname}/{key}");
    if super::sysctl::get(&conf("disable_ipv6")).is_err() {
        return Err(PlumbingError::NoIpv6 { ifname: ifname.clone() });
    }
    for (key, value) in CONTAINER_SYSCTLS6 {
        super::sysctl::set(&conf(key), value)?;
    }
    let eth = get(&handle, &ifname).await?.ok_or_else(|| PlumbingError::LinkNotFound(ifname.clone()))?;
    add_address6(&handle, eth.index, &ifname, v6.link_local, 64).await?;
    add_address6(&handle, eth.index, &ifname, v6.ip, v6.prefix).await?;
    set_up(&handle, eth.index, &ifname).await?;
    let gateway = v6.gateway;
    let default = RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(Ipv6Addr::UNSPECIFIED, 0)
        .gateway(gateway)
        .output_interface(eth.index)
        .build();
    replace_route(&handle, default, format!("failed to add IPv6 default route via {gateway}")).await
}

/// An IPv6 address without duplicate address detection (IFA_F_NODAD); already present
/// is fine.
pub async fn add_address6(
    handle: &Handle,
    index: u32,
    name: &str,
    ip: Ipv6Addr,
    prefix: u8,
) -> Result<(), PlumbingError> {
    use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
    let mut req = handle.address().add(index, ip.into(), prefix).replace();
    let msg = req.message_mut();
    msg.header.flags |= AddressHeaderFlags::Nodad;
    msg.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
    req.execute().await.map_err(PlumbingError::netlink(format!("failed to add {ip}/{prefix} to {name}")))
}

/// What is missing inside a container of [`configure_container`]'s work (and of
/// [`configure_container6`]'s, given its IPv6 side); empty when nothing is. Only what netpath put there is checked. Runs in the container's
/// namespace: its sysctls are read from this thread's /proc/sys/net.
pub async fn container_drift(
    handle: Handle,
    ifname: String,
    ip: Ipv4Addr,
    prefix: u8,
    ip6: Option<ContainerIpv6>,
) -> Result<Vec<String>, PlumbingError> {
    let Some(eth) = get(&handle, &ifname).await? else {
        return Ok(vec![format!("interface {ifname}")]);
    };
    let mut missing = Vec::new();
    if !eth.up {
        missing.push(format!("{ifname} up"));
    }
    let addrs = addresses(&handle).await?;
    if !addrs.iter().any(|(i, net)| *i == eth.index && net.addr() == ip && net.prefix_len() == prefix) {
        missing.push(format!("address {ip}/{prefix}"));
    }
    let routes = main_routes(&handle).await?;
    if !routes.iter().any(|r| r.dst.prefix_len() == 0 && r.oif == Some(eth.index)) {
        missing.push(format!("default route on {ifname}"));
    }
    if let Some(v6) = ip6 {
        // The settings first: one changed (duplicate address detection back on, the
        // kernel making addresses, IPv6 off) is often why the rest is missing.
        for (key, want) in CONTAINER_SYSCTLS6 {
            let name = format!("net.ipv6.conf.{ifname}.{key}");
            match super::sysctl::get(&format!("net/ipv6/conf/{ifname}/{key}")) {
                Ok(v) if v == want => {}
                Ok(v) => missing.push(format!("{name} = {want} (it is {v})")),
                // Not there: the interface has no IPv6 (a repair says why, NoIpv6).
                Err(PlumbingError::Sysctl { source, .. }) => {
                    missing.push(format!("{name} = {want} (cannot read it: {source})"))
                }
                Err(e) => return Err(e),
            }
        }
        let addrs6 = addresses6(&handle).await?;
        for (addr, prefix) in [(v6.ip, v6.prefix), (v6.link_local, 64)] {
            match addrs6
                .iter()
                .find(|a| a.index == eth.index && a.net.addr() == addr && a.net.prefix_len() == prefix)
            {
                None => missing.push(format!("address {addr}/{prefix}")),
                // Duplicate address detection is off for netpath's addresses: one still
                // tentative, or failed, was not made by netpath's configuration.
                Some(a) if a.tentative => {
                    missing.push(format!("address {addr}/{prefix} usable (it is tentative or failed DAD)"))
                }
                Some(_) => {}
            }
        }
        if !default6(&handle, eth.index).await? {
            missing.push(format!("IPv6 default route on {ifname}"));
        }
    }
    Ok(missing)
}

/// An IPv6 address on an interface, and whether it is unusable yet or for good
/// (tentative, or duplicate address detection failed).
pub struct Address6 {
    pub index: u32,
    pub net: ipnet::Ipv6Net,
    pub tentative: bool,
}

/// Every IPv6 address in the namespace.
pub async fn addresses6(handle: &Handle) -> Result<Vec<Address6>, PlumbingError> {
    use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
    let mut out = Vec::new();
    let mut addrs = handle.address().get().execute();
    while let Some(msg) =
        addrs.try_next().await.map_err(PlumbingError::netlink("failed to list addresses"))?
    {
        let mut tentative =
            msg.header.flags.intersects(AddressHeaderFlags::Tentative | AddressHeaderFlags::Dadfailed);
        let mut addr = None;
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Address(std::net::IpAddr::V6(a)) => addr = Some(*a),
                AddressAttribute::Flags(f) => {
                    tentative |= f.intersects(AddressFlags::Tentative | AddressFlags::Dadfailed)
                }
                _ => {}
            }
        }
        if let Some(net) = addr.and_then(|a| ipnet::Ipv6Net::new(a, msg.header.prefix_len).ok()) {
            out.push(Address6 { index: msg.header.index, net, tentative });
        }
    }
    Ok(out)
}

/// Is there an IPv6 default route through interface `index` in the main table?
async fn default6(handle: &Handle, index: u32) -> Result<bool, PlumbingError> {
    use rtnetlink::packet_route::route::RouteAttribute;
    let mut routes = handle.route().get(RouteMessageBuilder::<Ipv6Addr>::new().build()).execute();
    while let Some(msg) = routes.try_next().await.map_err(PlumbingError::netlink("failed to list routes"))? {
        let oif =
            msg.attributes.iter().find_map(|a| if let RouteAttribute::Oif(i) = a { Some(*i) } else { None });
        if msg.header.destination_prefix_length == 0 && oif == Some(index) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Is the node's route to a container (`ip/32 dev index`) in place?
pub async fn has_host_route(handle: &Handle, ip: Ipv4Addr, index: u32) -> Result<bool, PlumbingError> {
    Ok(is_host_route(&main_routes(handle).await?, ip, index))
}

/// Is the node's route to a container (`ip/32` through link `index`) among `routes`?
pub fn is_host_route(routes: &[Route], ip: Ipv4Addr, index: u32) -> bool {
    let want = ipnet::Ipv4Net::new(ip, 32).expect("/32 is a valid prefix");
    routes.iter().any(|r| r.dst == want && r.oif == Some(index))
}

/// Makes a link a port of `bridge`.
pub async fn set_controller(handle: &Handle, index: u32, bridge: u32) -> Result<(), PlumbingError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).controller(bridge).build())
        .execute()
        .await
        .map_err(PlumbingError::netlink(format!("failed to put link {index} on bridge {bridge}")))
}

/// The node's route to a container: `ip/32 dev host_veth scope link`.
pub async fn add_host_route(handle: &Handle, ip: Ipv4Addr, index: u32) -> Result<(), PlumbingError> {
    add_subnet_route(handle, ipnet::Ipv4Net::new(ip, 32).expect("/32 is a valid prefix"), index).await
}

/// The node's route to a container's IPv6 address, through its host veth.
pub async fn add_host_route6(handle: &Handle, ip: Ipv6Addr, index: u32) -> Result<(), PlumbingError> {
    let route =
        RouteMessageBuilder::<Ipv6Addr>::new().destination_prefix(ip, 128).output_interface(index).build();
    replace_route(handle, route, format!("failed to add node route to {ip}")).await
}

/// The node's IPv6 host routes (`ip/128` through a device): (address, device index).
pub async fn host_routes6(handle: &Handle) -> Result<Vec<(Ipv6Addr, u32)>, PlumbingError> {
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
    let mut out = Vec::new();
    let mut routes = handle.route().get(RouteMessageBuilder::<Ipv6Addr>::new().build()).execute();
    while let Some(msg) = routes.try_next().await.map_err(PlumbingError::netlink("failed to list routes"))? {
        let (mut dst, mut oif) = (None, None);
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Destination(RouteAddress::Inet6(a)) => dst = Some(*a),
                RouteAttribute::Oif(i) => oif = Some(*i),
                _ => {}
            }
        }
        if let (128, Some(dst), Some(oif)) = (msg.header.destination_prefix_length, dst, oif) {
            out.push((dst, oif));
        }
    }
    Ok(out)
}

/// The routing protocol number netpath's cluster routes carry (`ip route` shows
/// "proto 78"), so the agent finds its own among the node's routes.
const RTPROT_NETPATH: u8 = 78;

/// A cluster route as netpath writes it: `net` via `gateway`, marked as netpath's.
fn node_route(net: ipnet::Ipv4Net, gateway: Ipv4Addr) -> rtnetlink::packet_route::route::RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(net.network(), net.prefix_len())
        .gateway(gateway)
        .protocol(rtnetlink::packet_route::route::RouteProtocol::Other(RTPROT_NETPATH))
        .build()
}

/// Native routing: `net` via the node at `gateway`. Replaces what was there.
pub async fn add_node_route(
    handle: &Handle,
    net: ipnet::Ipv4Net,
    gateway: Ipv4Addr,
) -> Result<(), PlumbingError> {
    replace_route(handle, node_route(net, gateway), format!("failed to add the route to {net} via {gateway}"))
        .await
}

/// netpath's cluster routes now in the main table: (subnet, gateway).
pub async fn node_routes(handle: &Handle) -> Result<Vec<(ipnet::Ipv4Net, Ipv4Addr)>, PlumbingError> {
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteProtocol};
    let mut out = Vec::new();
    let mut routes = handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute();
    while let Some(msg) = routes.try_next().await.map_err(PlumbingError::netlink("failed to list routes"))? {
        if msg.header.protocol != RouteProtocol::Other(RTPROT_NETPATH) {
            continue;
        }
        let (mut dst, mut gw) = (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED);
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = *a,
                RouteAttribute::Gateway(RouteAddress::Inet(a)) => gw = *a,
                _ => {}
            }
        }
        if let Ok(net) = ipnet::Ipv4Net::new(dst, msg.header.destination_prefix_length) {
            out.push((net, gw));
        }
    }
    Ok(out)
}

/// Removes netpath's cluster route to `net`; already gone is fine.
pub async fn del_node_route(
    handle: &Handle,
    net: ipnet::Ipv4Net,
    gateway: Ipv4Addr,
) -> Result<(), PlumbingError> {
    match handle.route().del(node_route(net, gateway)).execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => Ok(()),
        Err(e) => Err(PlumbingError::netlink(format!("failed to remove the route to {net}"))(e)),
    }
}

/// An IPv6 cluster route as netpath writes it: `net` via `gateway` (the other node's
/// IPv6 underlay address), marked as netpath's.
fn node_route6(net: ipnet::Ipv6Net, gateway: Ipv6Addr) -> rtnetlink::packet_route::route::RouteMessage {
    RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(net.network(), net.prefix_len())
        .gateway(gateway)
        .protocol(rtnetlink::packet_route::route::RouteProtocol::Other(RTPROT_NETPATH))
        .build()
}

/// Native routing over IPv6: `net` via the node at `gateway`. Replaces what was there.
pub async fn add_node_route6(
    handle: &Handle,
    net: ipnet::Ipv6Net,
    gateway: Ipv6Addr,
) -> Result<(), PlumbingError> {
    replace_route(
        handle,
        node_route6(net, gateway),
        format!("failed to add the route to {net} via {gateway}"),
    )
    .await
}

/// netpath's IPv6 cluster routes now in the main table: (subnet, gateway).
pub async fn node_routes6(handle: &Handle) -> Result<Vec<(ipnet::Ipv6Net, Ipv6Addr)>, PlumbingError> {
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteProtocol};
    let mut out = Vec::new();
    let mut routes = handle.route().get(RouteMessageBuilder::<Ipv6Addr>::new().build()).execute();
    while let Some(msg) = routes.try_next().await.map_err(PlumbingError::netlink("failed to list routes"))? {
        if msg.header.protocol != RouteProtocol::Other(RTPROT_NETPATH) {
            continue;
        }
        let (mut dst, mut gw) = (Ipv6Addr::UNSPECIFIED, Ipv6Addr::UNSPECIFIED);
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Destination(RouteAddress::Inet6(a)) => dst = *a,
                RouteAttribute::Gateway(RouteAddress::Inet6(a)) => gw = *a,
                _ => {}
            }
        }
        if let Ok(net) = ipnet::Ipv6Net::new(dst, msg.header.destination_prefix_length) {
            out.push((net, gw));
        }
    }
    Ok(out)
}

/// Removes netpath's IPv6 cluster route to `net`; already gone is fine.
pub async fn del_node_route6(
    handle: &Handle,
    net: ipnet::Ipv6Net,
    gateway: Ipv6Addr,
) -> Result<(), PlumbingError> {
    match handle.route().del(node_route6(net, gateway)).execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => Ok(()),
        Err(e) => Err(PlumbingError::netlink(format!("failed to remove the route to {net}"))(e)),
    }
}

/// An IPv4 route of the main table, as the overlap check needs it.
#[derive(Clone, Debug)]
pub struct Route {
    pub dst: ipnet::Ipv4Net,
    pub oif: Option<u32>,
    pub gateway: Option<Ipv4Addr>,
}

pub async fn main_routes(handle: &Handle) -> Result<Vec<Route>, PlumbingError> {
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
    const RT_TABLE_MAIN: u32 = 254;
    let mut out = Vec::new();
    let mut routes = handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute();
    while let Some(msg) = routes.try_next().await.map_err(PlumbingError::netlink("failed to list routes"))? {
        let mut dst = Ipv4Addr::UNSPECIFIED;
        let mut oif = None;
        let mut gateway = None;
        let mut table = msg.header.table as u32;
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = *a,
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(*g),
                RouteAttribute::Table(t) => table = *t,
                _ => {}
            }
        }
        if table != RT_TABLE_MAIN {
            continue;
        }
        if let Ok(dst) = ipnet::Ipv4Net::new(dst, msg.header.destination_prefix_length) {
            out.push(Route { dst, oif, gateway });
        }
    }
    Ok(out)
}

/// Every IPv4 address on the node: (interface index, address/prefix).
pub async fn addresses(handle: &Handle) -> Result<Vec<(u32, ipnet::Ipv4Net)>, PlumbingError> {
    use rtnetlink::packet_route::address::AddressAttribute;
    let mut out = Vec::new();
    let mut addrs = handle.address().get().execute();
    while let Some(msg) =
        addrs.try_next().await.map_err(PlumbingError::netlink("failed to list addresses"))?
    {
        for attr in &msg.attributes {
            if let AddressAttribute::Address(std::net::IpAddr::V4(a)) = attr {
                if let Ok(net) = ipnet::Ipv4Net::new(*a, msg.header.prefix_len) {
                    out.push((msg.header.index, net));
                }
            }
        }
    }
    Ok(out)
}

/// Names of the BPF programs attached as tc filters (clsact) at `index`'s ingress.
pub async fn ingress_bpf_filters(handle: &Handle, index: u32) -> Result<Vec<String>, PlumbingError> {
    bpf_filters(handle, index, false).await
}

/// Names of the BPF programs attached as tc filters (clsact) at `index`'s ingress, or
/// at its egress.
pub async fn bpf_filters(handle: &Handle, index: u32, egress: bool) -> Result<Vec<String>, PlumbingError> {
    use rtnetlink::packet_route::tc::{TcAttribute, TcFilterBpfOption, TcOption};
    let mut names = Vec::new();
    let get = handle.traffic_filter(index as i32).get();
    let mut filters = if egress { get.egress() } else { get.ingress() }.execute();
    while let Some(msg) = filters
        .try_next()
        .await
        .map_err(PlumbingError::netlink(format!("failed to list tc filters on {index}")))?
    {
        for attr in &msg.attributes {
            if let TcAttribute::Options(opts) = attr {
                for o in opts {
                    if let TcOption::Bpf(TcFilterBpfOption::ProgName(n)) = o {
                        names.push(n.clone());
                    }
                }
            }
        }
    }
    Ok(names)
}
