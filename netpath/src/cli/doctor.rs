//! `netpath doctor`: the seed's troubleshooting checklist, automated. Run it in the
//! node's network namespace (where the agent runs); it reads the pins and the state
//! directory, so it works whether or not the agent is up. Each finding names the fix.
use std::net::Ipv4Addr;

use serde::Serialize;

use super::Format;
use crate::{
    api::{Reply, Request},
    datapath::{tc_programs, AttachMode, Inspector},
    paths::Paths,
    plumbing::{bpffs, link, sysctl},
    state::{EndpointRecord, Mode, Store},
};

#[derive(Debug, Serialize)]
pub struct Finding {
    pub check: String,
    pub ok: bool,
    pub detail: String,
    /// What to do about it (empty when ok).
    pub fix: String,
}

struct Report(Vec<Finding>);

impl Report {
    fn ok(&mut self, check: &str, detail: impl Into<String>) {
        self.0.push(Finding { check: check.into(), ok: true, detail: detail.into(), fix: String::new() });
    }
    fn fail(&mut self, check: &str, detail: impl Into<String>, fix: impl Into<String>) {
        self.0.push(Finding { check: check.into(), ok: false, detail: detail.into(), fix: fix.into() });
    }
}

pub fn run(paths: &Paths, format: Format) -> anyhow::Result<bool> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = rt.block_on(check(paths))?;
    let healthy = report.0.iter().all(|f| f.ok);
    if format == Format::Json {
        println!("{}", serde_json::json!({ "healthy": healthy, "findings": report.0 }));
    } else {
        let mut t = super::output::Table::new(&["", "CHECK", "DETAIL"]);
        for f in &report.0 {
            let detail = if f.ok { f.detail.clone() } else { format!("{} (fix: {})", f.detail, f.fix) };
            t.row(vec![if f.ok { "ok" } else { "FAIL" }.into(), f.check.clone(), detail]);
        }
        t.print();
        let bad = report.0.iter().filter(|f| !f.ok).count();
        println!("{}", if bad == 0 { "healthy".to_string() } else { format!("{bad} problem(s) found") });
    }
    Ok(healthy)
}

async fn check(paths: &Paths) -> anyhow::Result<Report> {
    let mut r = Report(Vec::new());
    let (conn, nl, _) = rtnetlink::new_connection()?;
    tokio::spawn(conn);

    // bpffs and pins.
    let inspector = Inspector::new(&paths.bpffs_dir);
    if !bpffs::is_bpffs(&paths.bpffs_dir) {
        r.fail(
            "bpffs",
            format!("{} is not on a BPF filesystem", paths.bpffs_dir.display()),
            "start `netpath agent`: it mounts bpffs and pins its maps",
        );
        return Ok(r);
    }
    let missing = inspector.missing_maps();
    if missing.is_empty() {
        r.ok("pinned maps", paths.bpffs_dir.display().to_string());
    } else {
        r.fail(
            "pinned maps",
            format!("missing: {}", missing.join(", ")),
            "start `netpath agent` with the same --bpffs-dir",
        );
        return Ok(r);
    }
    // The agent, and what it knows of the node.
    let status = match super::client::call(paths, &Request::Status) {
        Ok(Reply::Status(st)) => {
            r.ok(
                "agent",
                format!("PID {} (id {}), listening on {}", st.pid, st.agent_id, paths.socket().display()),
            );
            Some(st)
        }
        Ok(other) => {
            r.fail("agent", format!("unexpected answer {other:?}"), "restart `netpath agent`");
            None
        }
        Err(e) => {
            r.fail(
                "agent",
                format!("not reachable on {} ({e:#})", paths.socket().display()),
                "start `netpath agent`: the datapath keeps forwarding without it, but nothing can change",
            );
            None
        }
    };
    // Forwarding.
    match sysctl::get("net/ipv4/ip_forward") {
        Ok(v) if v == "1" => r.ok("ip_forward", "net.ipv4.ip_forward = 1"),
        Ok(v) => r.fail(
            "ip_forward",
            format!("net.ipv4.ip_forward = {v}: the FIB lookup refuses to route"),
            "sysctl -w net.ipv4.ip_forward=1 (the agent sets it at start)",
        ),
        Err(e) => r.fail("ip_forward", e.to_string(), "run doctor in the node's network namespace"),
    }

    // Reverse-path filtering, strict or loose, is compatible: every container has a route
    // back through its own veth (or the bridge), and translated traffic bypasses the
    // stack. Shown so the operator sees it; only a value the kernel does not define fails.
    match sysctl::get("net/ipv4/conf/all/rp_filter") {
        Ok(v) if ["0", "1", "2"].contains(&v.as_str()) => {
            r.ok("rp_filter", format!("net.ipv4.conf.all.rp_filter = {v}"))
        }
        Ok(v) => r.fail("rp_filter", format!("net.ipv4.conf.all.rp_filter = {v}"), "set it to 0, 1 or 2"),
        Err(e) => r.fail("rp_filter", e.to_string(), "run doctor in the node's network namespace"),
    }

    let endpoints = Store::<EndpointRecord>::new(paths.state_file()).load()?;
    let in_map = inspector.endpoints()?;
    let cfg = inspector.node_config()?;
    let attach = if cfg.flags & netpath_common::conntrack::NODE_F_CLSACT != 0 {
        AttachMode::Clsact
    } else {
        AttachMode::Tcx
    };

    // Endpoints: state vs kernel vs map, and the program on each veth.
    for e in &endpoints {
        let check = format!("endpoint {}", e.name);
        let link = link::get(&nl, &e.host_ifname).await?;
        let Some(link) = link.filter(|l| l.index == e.host_ifindex) else {
            r.fail(
                &check,
                format!("veth {} is gone", e.host_ifname),
                format!("netpath endpoint del {} and add it again", e.name),
            );
            continue;
        };
        match in_map.iter().find(|(ip, _)| *ip == e.ip) {
            Some((_, info)) if info.host_ifindex == link.index => {}
            Some(_) => {
                r.fail(
                    &check,
                    format!("map entry for {} points at another interface", e.ip),
                    "restart the agent: it rewrites the entries from its state",
                );
                continue;
            }
            None => {
                r.fail(
                    &check,
                    format!("{} is not in the ENDPOINTS map", e.ip),
                    "restart the agent: it re-registers its endpoints",
                );
                continue;
            }
        }
        match tc_programs(&nl, &e.host_ifname, link.index, attach).await {
            Some(progs) if !progs.iter().any(|p| p == "from_container") => {
                r.fail(
                    &check,
                    format!("from_container is not attached to {}", e.host_ifname),
                    "start or restart `netpath agent`",
                );
                continue;
            }
            _ => {}
        }
        if cfg.uplink_ifindex != 0 {
            if let Some(up) = link::get_by_index(&nl, cfg.uplink_ifindex).await? {
                if e.mtu > up.mtu {
                    r.fail(
                        &check,
                        format!("MTU {} exceeds the uplink's {}", e.mtu, up.mtu),
                        format!("re-add {} with --mtu {}", e.name, up.mtu),
                    );
                    continue;
                }
            }
        }
        r.ok(&check, format!("{} on {}, attached", e.ip, e.host_ifname));
    }
    for (ip, info) in &in_map {
        if !endpoints.iter().any(|e| e.ip == *ip) {
            r.fail(
                "endpoint map",
                format!("{ip} (ifindex {}) is in the map but no endpoint owns it", info.host_ifindex),
                "restart the agent: it removes entries it does not own",
            );
        }
    }

    // The uplink.
    if let Some(st) = status.as_ref().filter(|st| !st.uplink_up) {
        let name = st.uplink.clone().unwrap_or_default();
        r.fail(
            "uplink",
            format!("{name} is gone: masquerade and published ports are down"),
            format!("bring back an interface named {name}: the agent re-attaches to it by itself"),
        );
    } else if cfg.uplink_ifindex == 0 {
        r.ok("uplink", "none configured: NAT is off");
    } else {
        match link::get_by_index(&nl, cfg.uplink_ifindex).await? {
            None => r.fail(
                "uplink",
                format!("interface {} is gone", cfg.uplink_ifindex),
                "restart the agent (or pass --uplink)",
            ),
            Some(up) => match tc_programs(&nl, &up.name, up.index, attach).await {
                Some(progs) if !progs.iter().any(|p| p == "uplink_in") => r.fail(
                    "uplink",
                    format!("uplink_in is not attached to {}", up.name),
                    "start or restart `netpath agent`",
                ),
                _ => r.ok("uplink", format!("{} ({}), mtu {}", up.name, Ipv4Addr::from(cfg.node_ip), up.mtu)),
            },
        }
    }

    // The pod CIDR must belong to netpath alone (the docker0 ARP pitfall).
    let cidr = ipnet::Ipv4Net::with_netmask(Ipv4Addr::from(cfg.pod_net), Ipv4Addr::from(cfg.pod_mask))
        .map(|n| n.trunc())
        .ok();
    if let Some(cidr) = cidr {
        let gateway = cidr.hosts().next().unwrap_or(cidr.network());
        let owned: Vec<u32> = endpoints.iter().map(|e| e.host_ifindex).collect();
        let bridge = endpoints.iter().any(|e| e.mode == Mode::Bridge);
        let overlaps = |n: ipnet::Ipv4Net| n.contains(&cidr.network()) || cidr.contains(&n.network());
        let mut clash = None;
        for route in link::main_routes(&nl).await? {
            if route.dst.prefix_len() == 0
                || !overlaps(route.dst)
                || route.oif.is_some_and(|i| owned.contains(&i))
            {
                continue;
            }
            if bridge && route.dst == cidr {
                continue;
            }
            clash = Some(format!("route {}", route.dst));
        }
        for (index, addr) in link::addresses(&nl).await? {
            if overlaps(addr) && addr.addr() != gateway {
                let dev = link::get_by_index(&nl, index).await?.map_or(index.to_string(), |l| l.name);
                clash = Some(format!("address {addr} on {dev}"));
            }
        }
        match clash {
            Some(c) => r.fail(
                "pod CIDR",
                format!("{cidr} overlaps {c}"),
                "remove the overlapping route or address, or move netpath to another --pod-cidr",
            ),
            None => r.ok("pod CIDR", format!("{cidr} is netpath's alone")),
        }
    }

    // Conntrack headroom.
    let reasons = inspector.reason_counters()?;
    let ct = inspector.conntrack_summary(&reasons)?;
    if ct.entries * 10 >= ct.capacity as u64 * 9 {
        r.fail(
            "conntrack",
            format!("{} of {} entries in use, {} evicted", ct.entries, ct.capacity, ct.evicted),
            "raise --ct-max-entries (takes effect for a new table) or lower the timeouts",
        );
    } else {
        r.ok(
            "conntrack",
            format!("{} of {} entries in use, {} evicted", ct.entries, ct.capacity, ct.evicted),
        );
    }
    Ok(r)
}
