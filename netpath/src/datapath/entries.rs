//! The map entries the state's records stand for: what the agent writes, what
//! reconciliation and `doctor` expect to find.
use std::net::{Ipv4Addr, Ipv6Addr};

use netpath_common::{
    EndpointInfo, PortKey, PortTarget, ENDPOINT_F_BRIDGED, ENDPOINT_F_NETKIT, ENDPOINT_F_PUBLISHED,
};

use crate::state::{parse_mac, Device, EndpointRecord, Mode, PortRecord};

/// ENDPOINTS' entry for an endpoint (`published`: it has a published port); `Err` names
/// the MAC the record holds that is not one.
pub fn endpoint(rec: &EndpointRecord, published: bool) -> Result<EndpointInfo, String> {
    let mut flags = match rec.mode {
        Mode::Routed => 0,
        Mode::Bridge => ENDPOINT_F_BRIDGED,
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

/// PORT_MAPS' entry for a published port.
pub fn port(p: &PortRecord) -> (PortKey, PortTarget) {
    let key = PortKey {
        host_ip: p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED).octets(),
        port: p.host_port.to_be_bytes(),
        proto: p.proto.number(),
        _pad: 0,
    };
    let target =
        PortTarget { ip: p.container_ip.octets(), port: p.container_port.to_be_bytes(), _pad: [0; 2] };
    (key, target)
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
