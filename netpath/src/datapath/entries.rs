//! The map entries the state's records stand for: what the agent writes, what
//! reconciliation and `doctor` expect to find.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netpath_common::{
    EndpointInfo, PortKeyOf, PortTargetOf, ENDPOINT_F_BRIDGED, ENDPOINT_F_NETKIT, ENDPOINT_F_PUBLISHED,
    ENDPOINT_F_SUBIF,
};

use super::family::{Family, PortEntry};
use crate::state::{parse_mac, Device, EndpointRecord, Mode, PortRecord};

/// ENDPOINTS' entry for an endpoint (`published`: it has a published port); `Err` names
/// the MAC the record holds that is not one.
pub fn endpoint(rec: &EndpointRecord, published: bool) -> Result<EndpointInfo, String> {
    let mut flags = match rec.mode {
        Mode::Routed => 0,
        Mode::Bridge => ENDPOINT_F_BRIDGED,
        Mode::Macvlan | Mode::Ipvlan => ENDPOINT_F_SUBIF,
    };
    if published {
        flags |= ENDPOINT_F_PUBLISHED;
    }
    if rec.device == Device::Netkit {
        flags |= ENDPOINT_F_NETKIT;
    }
    let mac = |m: &String| parse_mac(m).ok_or_else(|| m.clone());
    Ok(EndpointInfo {
        host_ifindex: rec.host_ifindex,
        mac: mac(&rec.mac)?,
        host_mac: mac(&rec.host_mac)?,
        flags,
        // Chosen when the entry is written (Datapath::register), not by the records.
        counter_slot: 0,
    })
}

/// A published port's entry in family `A`'s table (PORT_MAPS, PORT_MAPS6); None when
/// the port is not published on `A`: its host address is of the other family, or, for
/// IPv6, the record has no container IPv6 address (an endpoint without IPv6, a record
/// from before IPv6). No host address is the all-zero one, every address of the family.
pub fn port<A: Family>(p: &PortRecord) -> Option<PortEntry<A>> {
    let host_ip = match p.host_ip {
        None => A::default(),
        Some(ip) => A::of(ip)?,
    };
    let container = [Some(IpAddr::V4(p.container_ip)), p.container_ip6.map(IpAddr::V6)];
    let ip = container.into_iter().flatten().find_map(A::of)?;
    let key = PortKeyOf { host_ip, port: p.host_port.to_be_bytes(), proto: p.proto.number(), _pad: 0 };
    Some((key, PortTargetOf { ip, port: p.container_port.to_be_bytes(), _pad: [0; 2] }))
}

/// Family `A`'s entries of `recs`, in their order.
pub fn ports<A: Family>(recs: &[PortRecord]) -> Vec<PortEntry<A>> {
    recs.iter().filter_map(port::<A>).collect()
}

/// Every ENDPOINTS6 entry the records stand for: each IPv6 endpoint's address and its
/// link-local address, with its IPv4 entry (`v4`, as written, counter slot included;
/// when the IPv4 entry is not there, the records' entry and slot 0), and the IPv4
/// address that owns them.
pub fn endpoints6(
    records: &[EndpointRecord],
    ports: &[PortRecord],
    v4: &[(Ipv4Addr, EndpointInfo)],
) -> Vec<(Ipv6Addr, Ipv4Addr, EndpointInfo)> {
    let written: std::collections::HashMap<Ipv4Addr, EndpointInfo> = v4.iter().copied().collect();
    // By address: a walk of the list per record made a reconcile pass quadratic.
    let want4: std::collections::HashMap<Ipv4Addr, EndpointInfo> =
        endpoints(records, ports).into_iter().collect();
    let mut out = Vec::new();
    for rec in records {
        let (Some(ip6), Some(mac)) = (rec.ip6, parse_mac(&rec.mac)) else { continue };
        let Some(info) = want4.get(&rec.ip) else { continue };
        let slot = written
            .get(&rec.ip)
            .filter(|w| w.without_slot() == info.without_slot())
            .map_or(0, |w| w.counter_slot);
        let info = EndpointInfo { counter_slot: slot, ..*info };
        out.push((ip6, rec.ip, info));
        out.push((crate::state::link_local(&mac), rec.ip, info));
    }
    out
}

/// Every ENDPOINTS entry the records stand for, by address; records with a bad MAC are
/// left out (the agent refuses them when it writes).
pub fn endpoints(records: &[EndpointRecord], ports: &[PortRecord]) -> Vec<(Ipv4Addr, EndpointInfo)> {
    let publishing: std::collections::HashSet<&str> = ports.iter().map(|p| p.endpoint.as_str()).collect();
    records
        .iter()
        .filter_map(|rec| {
            let published = publishing.contains(rec.name.as_str());
            endpoint(rec, published).ok().map(|info| (rec.ip, info))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use netpath_common::{Ip6, PortKey, PortKey6, PortTarget, PortTarget6};

    use super::*;
    use crate::{
        datapath::family::{Ipv4, Ipv6},
        state::Proto,
    };

    const C6: &str = "fd00:77::2";
    const NODE6: &str = "2001:db8::10";

    fn rec(host_ip: Option<&str>, container_ip6: Option<&str>) -> PortRecord {
        PortRecord {
            proto: Proto::Tcp,
            host_ip: host_ip.map(|h| h.parse().unwrap()),
            host_port: 8080,
            endpoint: "web".into(),
            container_ip: Ipv4Addr::new(10, 77, 0, 2),
            container_ip6: container_ip6.map(|c| c.parse().unwrap()),
            container_port: 80,
        }
    }

    fn v4(host: [u8; 4]) -> (PortKey, PortTarget) {
        let key = PortKey { host_ip: host, port: 8080u16.to_be_bytes(), proto: 6, _pad: 0 };
        (key, PortTarget { ip: [10, 77, 0, 2], port: 80u16.to_be_bytes(), _pad: [0; 2] })
    }

    fn v6(host: &str) -> (PortKey6, PortTarget6) {
        let ip6 = |s: &str| Ip6(s.parse::<Ipv6Addr>().unwrap().octets());
        let key = PortKey6 { host_ip: ip6(host), port: 8080u16.to_be_bytes(), proto: 6, _pad: 0 };
        (key, PortTarget6 { ip: ip6(C6), port: 80u16.to_be_bytes(), _pad: [0; 2] })
    }

    #[test]
    fn a_port_without_host_address_is_published_on_both_families_of_its_endpoint() {
        let dual = rec(None, Some(C6));
        assert_eq!(port::<Ipv4>(&dual), Some(v4([0; 4])));
        assert_eq!(port::<Ipv6>(&dual), Some(v6("::")));
        // An endpoint without IPv6, or a record from before IPv6: IPv4 alone.
        let v4_only = rec(None, None);
        assert_eq!(port::<Ipv4>(&v4_only), Some(v4([0; 4])));
        assert_eq!(port::<Ipv6>(&v4_only), None);
    }

    #[test]
    fn a_host_address_publishes_on_its_own_family_only() {
        for host in ["192.168.77.10", "127.0.0.1", "0.0.0.0"] {
            let r = rec(Some(host), Some(C6));
            let ip: Ipv4Addr = host.parse().unwrap();
            assert_eq!(port::<Ipv4>(&r), Some(v4(ip.octets())), "{host}");
            assert_eq!(port::<Ipv6>(&r), None, "{host}");
        }
        let node = rec(Some(NODE6), Some(C6));
        assert_eq!(port::<Ipv6>(&node), Some(v6(NODE6)));
        assert_eq!(port::<Ipv4>(&node), None);
        // `::`: every IPv6 address of the node, the all-zero key as no host address.
        let any6 = rec(Some("::"), Some(C6));
        assert_eq!(port::<Ipv6>(&any6), Some(v6("::")));
        assert_eq!(port::<Ipv4>(&any6), None);
        // Refused when published; a record like it still writes nothing wrong.
        assert_eq!(port::<Ipv6>(&rec(Some(NODE6), None)), None);
    }

    #[test]
    fn each_family_gets_the_entries_of_its_records_in_order() {
        let recs = [rec(None, Some(C6)), rec(Some(NODE6), Some(C6)), rec(Some("192.168.77.10"), None)];
        assert_eq!(ports::<Ipv4>(&recs), vec![v4([0; 4]), v4([192, 168, 77, 10])]);
        assert_eq!(ports::<Ipv6>(&recs), vec![v6("::"), v6(NODE6)]);
    }
}
