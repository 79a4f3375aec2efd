//! `netpath map list` and `netpath map dump NAME`: every map netpath pins, decoded.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::bail;
use aya::Pod;
use netpath_common::{
    conntrack::Tuple, contract, maps, PortKeyOf, PortTargetOf, ENDPOINT_F_BRIDGED, ENDPOINT_F_NETKIT,
    ENDPOINT_F_PUBLISHED,
};
use serde_json::{json, Value};

use super::{args::MapCommand, Format};
use crate::{
    datapath::{
        family::{Family, Ipv4, Ipv6},
        Inspector,
    },
    paths::Paths,
    state::format_mac,
};

pub fn run(paths: &Paths, cmd: MapCommand) -> anyhow::Result<()> {
    let inspector = Inspector::new(&paths.bpffs_dir);
    match cmd {
        MapCommand::List { output } => {
            let maps: Vec<_> =
                contract::pinned().map(|m| inspector.describe(m.name)).collect::<Result<_, _>>()?;
            if output == Format::Json {
                println!("{}", json!({ "maps": maps }));
                return Ok(());
            }
            let mut t = super::output::Table::new(&["NAME", "KIND", ">KEY", ">VALUE", ">MAX", ">ENTRIES"]);
            for m in maps {
                let entries = m.entries.map_or("-".to_string(), |e| e.to_string());
                t.row(vec![
                    m.name.to_string(),
                    m.kind.to_string(),
                    m.key_size.to_string(),
                    m.value_size.to_string(),
                    m.max_entries.to_string(),
                    entries,
                ]);
            }
            t.print();
            Ok(())
        }
        MapCommand::Dump { name, output } => {
            let rows = dump(&inspector, &name)?;
            if output == Format::Json {
                println!("{}", json!({ "map": name, "entries": rows }));
            } else {
                table(&rows);
            }
            Ok(())
        }
    }
}

/// One ENDPOINTS or ENDPOINTS6 entry, the same fields for both families.
fn endpoint_row(ip: IpAddr, e: &netpath_common::EndpointInfo) -> Value {
    let mut flags = Vec::new();
    if e.flags & ENDPOINT_F_BRIDGED != 0 {
        flags.push("bridged");
    }
    if e.flags & ENDPOINT_F_PUBLISHED != 0 {
        flags.push("published");
    }
    if e.flags & ENDPOINT_F_NETKIT != 0 {
        flags.push("netkit");
    }
    json!({ "ip": ip, "host_ifindex": e.host_ifindex, "mac": format_mac(&e.mac),
            "host_mac": format_mac(&e.host_mac), "flags": flags.join(","),
            "counter_slot": e.counter_slot })
}

fn dump(inspector: &Inspector, name: &str) -> anyhow::Result<Vec<Value>> {
    let program_array = contract::pinned().find(|m| m.name == name && m.kind == contract::MapKind::ProgArray);
    if let Some(m) = program_array {
        // Slot order, empty slots included: a tail call into one falls through.
        let slots = inspector.program_slots(m.name)?.into_iter().enumerate();
        let row = |(slot, p): (usize, Option<(String, u32)>)| {
            let (program, id) = p.map_or((Value::Null, Value::Null), |(n, id)| (n.into(), id.into()));
            json!({ "slot": slot, "program": program, "id": id })
        };
        return Ok(slots.map(row).collect());
    }
    let mut rows: Vec<Value> = match name {
        maps::ENDPOINTS => {
            inspector.endpoints()?.into_iter().map(|(ip, e)| endpoint_row(IpAddr::V4(ip), &e)).collect()
        }
        maps::ENDPOINTS6 => {
            inspector.endpoints6()?.into_iter().map(|(ip, e)| endpoint_row(IpAddr::V6(ip), &e)).collect()
        }
        maps::ENDPOINT_STATS => inspector.endpoint_counters()?.into_iter().map(|c| json!(c)).collect(),
        maps::REASON_STATS => inspector.reason_counters()?.into_iter().map(|c| json!(c)).collect(),
        maps::CONNTRACK | maps::CONNTRACK_NEW => {
            let assured = name == maps::CONNTRACK;
            let rows = inspector.conntrack_of::<Ipv4>()?.into_iter();
            rows.filter(|c| c.assured == assured).map(|c| json!(c)).collect()
        }
        maps::CONNTRACK6 | maps::CONNTRACK6_NEW => {
            let assured = name == maps::CONNTRACK6;
            let rows = inspector.conntrack_of::<Ipv6>()?.into_iter();
            rows.filter(|c| c.assured == assured).map(|c| json!(c)).collect()
        }
        maps::PORT_MAPS => port_maps::<Ipv4>(inspector)?,
        maps::PORT_MAPS6 => port_maps::<Ipv6>(inspector)?,
        maps::NODE_CONFIG => {
            let c = inspector.node_config()?;
            vec![json!({ "node_ip": Ipv4Addr::from(c.node_ip), "pod_net": Ipv4Addr::from(c.pod_net),
                         "pod_mask": Ipv4Addr::from(c.pod_mask), "uplink_ifindex": c.uplink_ifindex,
                         "nat_ports": format!("{}-{}", c.nat_port_min, c.nat_port_max),
                         "masquerade": c.flags & netpath_common::conntrack::NODE_F_ROUTED == 0,
                         "netns_cookie": c.netns_cookie,
                         "cluster_net": Ipv4Addr::from(c.cluster_net), "cluster_mask": Ipv4Addr::from(c.cluster_mask),
                         "node_mask": Ipv4Addr::from(c.node_mask), "tunnel_ifindex": c.tunnel_ifindex,
                         "vni": c.vni })]
        }
        maps::NODE_ROUTES => inspector
            .node_routes()?
            .into_iter()
            .map(|(k, r)| {
                let via =
                    if r.flags & netpath_common::conntrack::ROUTE_F_NATIVE != 0 { "native" } else { "vxlan" };
                json!({ "subnet": Ipv4Addr::from(k.addr), "node": Ipv4Addr::from(r.underlay), "via": via })
            })
            .collect(),
        maps::NODE_ROUTES6 => inspector
            .node_routes6()?
            .into_iter()
            .map(|(k, r)| {
                let via =
                    if r.flags & netpath_common::conntrack::ROUTE_F_NATIVE != 0 { "native" } else { "vxlan" };
                json!({ "subnet": Ipv6Addr::from(k.addr), "node": Ipv4Addr::from(r.underlay), "via": via })
            })
            .collect(),
        maps::NODE_CONFIG6 => {
            let c = inspector.node_config6()?;
            let masquerade = c.flags & netpath_common::conntrack::NODE6_F_MASQUERADE != 0;
            let cluster = (c.cluster_prefix != 0)
                .then(|| format!("{}/{}", Ipv6Addr::from(c.cluster_net), c.cluster_prefix));
            vec![json!({ "node_ip": Ipv6Addr::from(c.node_ip),
                         "pod_net": format!("{}/{}", Ipv6Addr::from(c.pod_net), c.pod_prefix),
                         "masquerade": masquerade, "cluster_net": cluster,
                         "node_prefix": c.node_prefix })]
        }
        maps::SNAT_CLOSED => snat_closed::<Ipv4>(inspector)?,
        maps::SNAT_CLOSED6 => snat_closed::<Ipv6>(inspector)?,
        maps::NODE_LOCAL_REV => inspector
            .node_local_redirects()?
            .into_iter()
            .map(|(k, o)| {
                json!({ "socket_cookie": k.cookie,
                        "container": format!("{}:{}", Ipv4Addr::from(k.ip), u16::from_be_bytes(k.port)),
                        "requested": format!("{}:{}", Ipv4Addr::from(o.ip), u16::from_be_bytes(o.port)) })
            })
            .collect(),
        maps::NODE_LOCAL_REV6 => inspector
            .node_local_redirects6()?
            .into_iter()
            .map(|(k, o)| {
                let at = |ip: netpath_common::Ip6, port: [u8; 2]| {
                    SocketAddr::new(Ipv6Addr::from(ip.0).into(), u16::from_be_bytes(port)).to_string()
                };
                json!({ "socket_cookie": k.cookie, "container": at(k.ip, k.port), "requested": at(o.ip, o.port) })
            })
            .collect(),
        maps::HAIRPIN => {
            let [opened, cleared] = inspector.hairpin()?;
            let skipped = maps::no_hairpin_lives(opened, cleared);
            vec![json!({ "opened": opened, "none_live_up_to": cleared.checked_sub(1),
                         "lookup": if skipped { "skipped" } else { "on" } })]
        }
        maps::EVENTS | maps::TRACE_FILTER => bail!("{name} carries trace events: use `netpath trace`"),
        other => {
            let names: Vec<_> = contract::pinned().map(|m| m.name).collect();
            bail!("no map {other:?}; netpath's maps are {}", names.join(", "))
        }
    };
    rows.sort_by_key(|r| r.to_string());
    Ok(rows)
}

/// One family's published ports, the same fields for both (`host_ip` `*`: every
/// address of the family).
fn port_maps<A: Family>(inspector: &Inspector) -> anyhow::Result<Vec<Value>>
where
    PortKeyOf<A>: Pod,
    PortTargetOf<A>: Pod,
{
    let rows = inspector.port_maps_of::<A>()?.into_iter().map(|(k, t)| {
        let proto = match k.proto {
            6 => "tcp",
            17 => "udp",
            _ => "other",
        };
        let host = if k.host_ip == A::default() { "*".to_string() } else { k.host_ip.ip().to_string() };
        json!({ "proto": proto, "host_ip": host, "host_port": u16::from_be_bytes(k.port),
                "container_ip": t.ip.ip(), "container_port": u16::from_be_bytes(t.port) })
    });
    Ok(rows.collect())
}

/// One family's closed masqueraded flows, the same fields for both.
fn snat_closed<A: Family>(inspector: &Inspector) -> anyhow::Result<Vec<Value>>
where
    Tuple<A>: Pod,
{
    let now = crate::datapath::monotonic_ns();
    let at = |ip: A, port: [u8; 2]| SocketAddr::new(ip.ip(), u16::from_be_bytes(port)).to_string();
    let rows = inspector.snat_closed::<A>()?.into_iter().map(|(k, c)| {
        json!({ "server": at(k.src, k.sport), "node": at(k.dst, k.dport), "end_seq": c.end_seq,
                "ts_val": if c.has_ts != 0 { json!(c.ts_val) } else { Value::Null },
                "closed_secs_ago": now.saturating_sub(c.closed_ns) / 1_000_000_000 })
    });
    Ok(rows.collect())
}

/// An aligned table with the rows' keys as headers.
fn table(rows: &[Value]) {
    let Some(first) = rows.first().and_then(Value::as_object) else {
        println!("(empty)");
        return;
    };
    let keys: Vec<&String> = first.keys().collect();
    let cell = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let headers: Vec<String> = keys.iter().map(|k| k.to_uppercase()).collect();
    let mut t = super::output::Table::new(&headers.iter().map(String::as_str).collect::<Vec<_>>());
    for r in rows {
        t.row(keys.iter().map(|k| cell(&r[k.as_str()])).collect());
    }
    t.print();
}
