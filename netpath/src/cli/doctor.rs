//! `netpath doctor`: the seed's troubleshooting checklist, automated. Run it in the
//! node's network namespace (where the agent runs); it reads the pins and the state
//! directory, so it works whether or not the agent is up. Each finding names the fix.
use std::net::{IpAddr, Ipv4Addr};

use netpath_common::NodeConfig;
use serde::Serialize;

use super::Format;
use crate::{
    api::{AgentStatus, Reply, Request},
    cluster::{NodeStatus, Tunnel},
    datapath::{entries, AttachMode, Inspector},
    drift::{self, Drift},
    paths::Paths,
    plumbing::{bpffs, link, sysctl},
    state::{AgentId, EndpointRecord, Mode, PortRecord},
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

/// What the checks read once: the state, the node's settings in the datapath, netlink.
struct Node {
    nl: rtnetlink::Handle,
    inspector: Inspector,
    endpoints: Vec<EndpointRecord>,
    ports: Vec<PortRecord>,
    cfg: NodeConfig,
    attach: AttachMode,
    /// The agent's id (None before its first start): whose links are whose.
    id: Option<AgentId>,
}

async fn check(paths: &Paths) -> anyhow::Result<Report> {
    let mut r = Report(Vec::new());
    let (conn, nl, _) = rtnetlink::new_connection()?;
    tokio::spawn(conn);
    let inspector = Inspector::new(&paths.bpffs_dir);
    if !pins(&mut r, paths, &inspector) {
        return Ok(r);
    }
    let status = agent(&mut r, paths);
    forwarding(&mut r);
    let cfg = inspector.node_config()?;
    let attach = if cfg.flags & netpath_common::conntrack::NODE_F_CLSACT != 0 {
        AttachMode::Clsact
    } else {
        AttachMode::Tcx
    };
    let (eps, ports) = crate::state::read(paths)?;
    if eps.iter().any(|e| e.ip6.is_some()) {
        forwarding6(&mut r);
    }
    let node =
        Node { nl, endpoints: eps, ports, inspector, cfg, attach, id: AgentId::load(&paths.state_dir)? };
    endpoints(&mut r, &node).await?;
    endpoint_map(&mut r, &node)?;
    uplink(&mut r, &node, status.as_ref()).await?;
    pod_cidr(&mut r, &node).await?;
    conntrack(&mut r, &node)?;
    if let Some(cluster) = status.as_ref().and_then(|s| s.cluster.as_ref()) {
        store(&mut r, paths, cluster, &node.inspector);
    }
    Ok(r)
}

/// Cluster mode: the agent's line to the store, and the nodes it knows.
fn store(r: &mut Report, paths: &Paths, c: &crate::api::ClusterStatus, inspector: &Inspector) {
    if !c.store_connected {
        r.fail(
            "cluster store",
            format!(
                "the agent is not in touch with {} (node {}); forwarding goes on with the routes it has",
                c.store, c.node_name
            ),
            "check that etcd runs there and the node can reach it; the agent keeps retrying",
        );
        return;
    }
    match super::client::call(paths, &Request::NodeList) {
        Ok(Reply::Nodes { nodes }) => {
            let down: Vec<&str> = nodes.iter().filter(|n| !n.ready).map(|n| n.name.as_str()).collect();
            let what = format!("{} as node {} ({}), {} nodes", c.store, c.node_name, c.pod_cidr, nodes.len());
            if down.is_empty() {
                r.ok("cluster store", what);
            } else {
                r.fail(
                    "cluster store",
                    format!("{what}; not ready: {}", down.join(", ")),
                    "start their agents, or `netpath node del NAME` for nodes that are gone for good \
                     (an unused node ages out by itself after --node-gc-after)",
                );
            }
            node_routes(r, c, &nodes, inspector);
        }
        Ok(other) => {
            r.fail("cluster store", format!("unexpected answer {other:?}"), "restart `netpath agent`")
        }
        Err(e) => r.fail("cluster store", e.to_string(), "check that etcd runs and the node can reach it"),
    }
}

/// The datapath's routes against the store's nodes: one per other node, none to a node
/// the store no longer has (deleted or aged out). IPv6 too when the node has an IPv6
/// subnet: there a node without an IPv6 subnet, or (native routing) without an IPv6
/// underlay address, is owed no route.
fn node_routes(r: &mut Report, c: &crate::api::ClusterStatus, nodes: &[NodeStatus], inspector: &Inspector) {
    let others: Vec<&NodeStatus> = nodes.iter().filter(|n| n.name != c.node_name).collect();
    match inspector.node_routes() {
        Ok(rs) => {
            let found = rs.iter().map(|(k, v)| (IpAddr::from(k.addr), Ipv4Addr::from(v.underlay))).collect();
            let owed: Vec<_> = others
                .iter()
                .map(|n| (n.name.as_str(), IpAddr::V4(n.pod_cidr.network()), n.address))
                .collect();
            let held = owed.iter().map(|(_, net, _)| *net).collect();
            route_check(r, "node routes", found, &owed, held);
        }
        Err(e) => r.fail("node routes", e.to_string(), "restart `netpath agent`"),
    }
    if c.pod_cidr6.is_none() {
        return;
    }
    let native = nodes.iter().find(|n| n.name == c.node_name).is_some_and(|n| n.tunnel == Tunnel::None);
    match inspector.node_routes6() {
        Ok(rs) => {
            let found = rs.iter().map(|(k, v)| (IpAddr::from(k.addr), Ipv4Addr::from(v.underlay))).collect();
            let owed: Vec<_> = others
                .iter()
                .filter(|n| !native || n.address6.is_some())
                .filter_map(|n| Some((n.name.as_str(), IpAddr::V6(n.pod_cidr6?.network()), n.address)))
                .collect();
            let held = others.iter().filter_map(|n| Some(IpAddr::V6(n.pod_cidr6?.network()))).collect();
            route_check(r, "node routes (IPv6)", found, &owed, held);
        }
        Err(e) => r.fail("node routes (IPv6)", e.to_string(), "restart `netpath agent`"),
    }
}

/// One family's routes to the other nodes: `found` (subnet, underlay) in the datapath
/// against `owed` (node, subnet, underlay) from the store; a route is stale when no
/// other node `held` its subnet.
fn route_check(
    r: &mut Report,
    check: &str,
    found: Vec<(IpAddr, Ipv4Addr)>,
    owed: &[(&str, IpAddr, Ipv4Addr)],
    held: Vec<IpAddr>,
) {
    let missing: Vec<&str> = owed
        .iter()
        .filter(|(_, net, via)| !found.contains(&(*net, *via)))
        .map(|(name, _, _)| *name)
        .collect();
    let stale: Vec<String> = found
        .iter()
        .filter(|(net, _)| !held.contains(net))
        .map(|(net, via)| format!("{net} via {via}"))
        .collect();
    if missing.is_empty() && stale.is_empty() {
        return r.ok(check, format!("{} to the other nodes", found.len()));
    }
    let mut what = Vec::new();
    if !missing.is_empty() {
        what.push(format!("no route to node {}", missing.join(", ")));
    }
    if !stale.is_empty() {
        what.push(format!("routes to subnets no node holds (deleted or aged out): {}", stale.join(", ")));
    }
    r.fail(
        check,
        what.join("; "),
        "the agent follows the store within a second; if this stays, restart `netpath agent`",
    );
}

/// bpffs and the pins; false when there is nothing more to check without them.
fn pins(r: &mut Report, paths: &Paths, inspector: &Inspector) -> bool {
    if !bpffs::is_bpffs(&paths.bpffs_dir) {
        r.fail(
            "bpffs",
            format!("{} is not on a BPF filesystem", paths.bpffs_dir.display()),
            "start `netpath agent`: it mounts bpffs and pins its maps",
        );
        return false;
    }
    let missing = inspector.missing_maps();
    if !missing.is_empty() {
        r.fail(
            "pinned maps",
            format!("missing: {}", missing.join(", ")),
            "start `netpath agent` with the same --bpffs-dir",
        );
        return false;
    }
    r.ok("pinned maps", paths.bpffs_dir.display().to_string());
    true
}

/// The agent, and what it knows of the node.
fn agent(r: &mut Report, paths: &Paths) -> Option<AgentStatus> {
    match super::client::call(paths, &Request::Status) {
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
    }
}

/// Forwarding and reverse-path filtering. rp_filter, strict or loose, is compatible:
/// every container has a route back through its own veth (or the bridge), and
/// translated traffic bypasses the stack. Shown so the operator sees it; only a value
/// the kernel does not define fails.
fn forwarding(r: &mut Report) {
    match sysctl::get("net/ipv4/ip_forward") {
        Ok(v) if v == "1" => r.ok("ip_forward", "net.ipv4.ip_forward = 1"),
        Ok(v) => r.fail(
            "ip_forward",
            format!("net.ipv4.ip_forward = {v}: the FIB lookup refuses to route"),
            "sysctl -w net.ipv4.ip_forward=1 (the agent sets it at start)",
        ),
        Err(e) => r.fail("ip_forward", e.to_string(), "run doctor in the node's network namespace"),
    }
    match sysctl::get("net/ipv4/conf/all/rp_filter") {
        Ok(v) if ["0", "1", "2"].contains(&v.as_str()) => {
            r.ok("rp_filter", format!("net.ipv4.conf.all.rp_filter = {v}"))
        }
        Ok(v) => r.fail("rp_filter", format!("net.ipv4.conf.all.rp_filter = {v}"), "set it to 0, 1 or 2"),
        Err(e) => r.fail("rp_filter", e.to_string(), "run doctor in the node's network namespace"),
    }
}

/// IPv6 forwarding, on a node with IPv6 endpoints: what the datapath hands the stack
/// (the node, the outside) is routed by it. (The containers' duplicate address
/// detection is each endpoint's check.)
fn forwarding6(r: &mut Report) {
    match sysctl::get("net/ipv6/conf/all/forwarding") {
        Ok(v) if v == "1" => r.ok("ipv6 forwarding", "net.ipv6.conf.all.forwarding = 1"),
        Ok(v) => r.fail(
            "ipv6 forwarding",
            format!(
                "net.ipv6.conf.all.forwarding = {v}: containers' IPv6 to the node and beyond is not routed"
            ),
            "sysctl -w net.ipv6.conf.all.forwarding=1 (the agent sets it at start with --pod-cidr6)",
        ),
        Err(e) => r.fail("ipv6 forwarding", e.to_string(), "run doctor in the node's network namespace"),
    }
}

/// What reconciliation would do about a drift, as the operator's fix.
fn fix(d: &Drift) -> &'static str {
    match d {
        Drift::ForeignLink { .. } => "delete or rename that link, then run `netpath reconcile`",
        Drift::UplinkGone { .. } => {
            "bring back an interface of that name: the agent re-attaches to it by itself"
        }
        _ => "run `netpath reconcile` (the agent repairs it, and does at every start)",
    }
}

/// Each endpoint: the same checks reconciliation makes, a finding for each drift found
/// (all under the endpoint's check name), and the MTU against the uplink's.
async fn endpoints(r: &mut Report, node: &Node) -> anyhow::Result<()> {
    let unknown = AgentId::generate();
    let owner = drift::Owner { id: node.id.as_ref().unwrap_or(&unknown), adopt_unidentified: false };
    let uplink_mtu = match node.cfg.uplink_ifindex {
        0 => None,
        i => link::get_by_index(&node.nl, i).await?.map(|l| l.mtu),
    };
    let routes = link::main_routes(&node.nl).await?;
    let routes6 = link::host_routes6(&node.nl).await?;
    let pod_cidr6 = node.pod_cidr6();
    for e in &node.endpoints {
        let check = format!("endpoint {}", e.name);
        let prefix = match e.mode {
            Mode::Bridge => node.pod_prefix(),
            Mode::Routed => 32,
            Mode::Macvlan | Mode::Ipvlan => e.prefix.unwrap_or(32),
        };
        // The bridge's name is the agent's setting, not in the pins: its ports are
        // reconciliation's to check.
        let view = drift::Node {
            netlink: &node.nl,
            owner,
            attach: node.attach,
            bridge: None,
            prefix,
            pod_cidr6,
            routes: Some(&routes),
            routes6: Some(&routes6),
        };
        let drifts = drift::endpoint(&view, e).await?;
        // Marks are the agent's business (an upgrade re-marks them); not a fault.
        let faults: Vec<&Drift> = drifts.iter().filter(|d| !matches!(d, Drift::NotMarked { .. })).collect();
        // Every drift its own finding, as `reconcile --dry-run` lists them: repairing
        // the first one shown must not be the way to learn of the next.
        if !faults.is_empty() {
            for d in faults {
                r.fail(&check, d.problem(), fix(d));
            }
        } else if let Some(mtu) = uplink_mtu.filter(|m| e.mtu > *m) {
            r.fail(
                &check,
                format!("MTU {} exceeds the uplink's {mtu}", e.mtu),
                format!("re-add {} with --mtu {mtu}", e.name),
            );
        } else if let Some(parent) = &e.parent {
            r.ok(
                &check,
                format!(
                    "{} on {} in {} (a {} of {parent}), attached",
                    e.ip,
                    e.ifname,
                    e.netns.display(),
                    e.mode
                ),
            );
        } else if e.device == crate::state::Device::Veth {
            let hook = match node.inspector.endpoint_in_tcx_link(e.host_ifindex) {
                true => "a TCX link",
                false => "a clsact filter",
            };
            r.ok(&check, format!("{} on {}, attached ({hook})", e.ip, e.host_ifname));
        } else {
            r.ok(&check, format!("{} on {}, attached", e.ip, e.host_ifname));
        }
    }
    Ok(())
}

impl Node {
    fn pod_cidr(&self) -> Option<ipnet::Ipv4Net> {
        ipnet::Ipv4Net::with_netmask(Ipv4Addr::from(self.cfg.pod_net), Ipv4Addr::from(self.cfg.pod_mask))
            .map(|n| n.trunc())
            .ok()
    }

    fn pod_prefix(&self) -> u8 {
        self.pod_cidr().map_or(32, |c| c.prefix_len())
    }

    /// The IPv6 pod CIDR as the pins hold it; None without one (or its pin unreadable:
    /// bridged endpoints' IPv6 side then goes unchecked rather than checked wrongly).
    fn pod_cidr6(&self) -> Option<ipnet::Ipv6Net> {
        let cfg6 = self.inspector.node_config6().ok()?;
        if cfg6.pod_prefix == 0 {
            return None;
        }
        ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(cfg6.pod_net), cfg6.pod_prefix).ok().map(|n| n.trunc())
    }
}

/// ENDPOINTS against the state.
fn endpoint_map(r: &mut Report, node: &Node) -> anyhow::Result<()> {
    let want = entries::endpoints(&node.endpoints, &node.ports);
    let have = node.inspector.endpoints()?;
    let mut drifts = drift::endpoint_entries(&want, &have);
    let want6: Vec<_> = entries::endpoints6(&node.endpoints, &node.ports, &have)
        .into_iter()
        .map(|(ip6, _, i)| (ip6, i))
        .collect();
    drifts.extend(drift::endpoint_entries6(&want6, &node.inspector.endpoints6()?));
    // A gone veth's entry is the endpoint's finding, not the map's.
    for d in drifts {
        r.fail("endpoint map", d.problem(), fix(&d));
    }
    Ok(())
}

/// The uplink: there, with uplink_in attached.
async fn uplink(r: &mut Report, node: &Node, status: Option<&AgentStatus>) -> anyhow::Result<()> {
    let index = node.cfg.uplink_ifindex;
    // An agent without an uplink (none found, macvlan/ipvlan mode) has none to lose.
    if let Some(st) = status.filter(|st| !st.uplink_up && st.uplink.is_some()) {
        let d = Drift::UplinkGone { name: st.uplink.clone().unwrap_or_default() };
        r.fail("uplink", format!("{} {}", d.subject().trim_start_matches("uplink "), d.problem()), fix(&d));
        return Ok(());
    }
    if index == 0 {
        match link::get(&node.nl, crate::agent::SHIM_DEVICE).await?.filter(|l| l.is_subif) {
            Some(_) => r.ok(
                "uplink",
                "none in macvlan/ipvlan mode: containers are on the parent's network, nothing is translated",
            ),
            None => r.ok("uplink", "none configured: NAT is off"),
        }
        return Ok(());
    }
    let Some(up) = link::get_by_index(&node.nl, index).await? else {
        r.fail("uplink", format!("interface {index} is gone"), "restart the agent (or pass --uplink)");
        return Ok(());
    };
    match drift::uplink(&node.nl, &up.name, Some(&up), node.attach).await {
        Some(d) => r.fail("uplink", d.problem(), fix(&d)),
        None => r.ok("uplink", format!("{} ({}), mtu {}", up.name, Ipv4Addr::from(node.cfg.node_ip), up.mtu)),
    }
    Ok(())
}

/// The pod CIDR must belong to netpath alone (the docker0 ARP pitfall).
async fn pod_cidr(r: &mut Report, node: &Node) -> anyhow::Result<()> {
    let Some(cidr) = node.pod_cidr() else { return Ok(()) };
    let gateway = cidr.hosts().next().unwrap_or(cidr.network());
    let owned: Vec<u32> = node.endpoints.iter().map(|e| e.host_ifindex).collect();
    let bridge = node.endpoints.iter().any(|e| e.mode == Mode::Bridge);
    // macvlan/ipvlan mode: the pod CIDR is a range of the parent's network, reached
    // through the agent's shim; only an address inside the range is a clash.
    let shim = link::get(&node.nl, crate::agent::SHIM_DEVICE).await?.filter(|l| l.is_subif);
    let parent = shim.as_ref().and_then(|s| s.lower);
    let overlaps = |n: ipnet::Ipv4Net| match shim {
        Some(_) => cidr.contains(&n.addr()),
        None => n.contains(&cidr.network()) || cidr.contains(&n.network()),
    };
    let mut clash = None;
    for route in link::main_routes(&node.nl).await? {
        let ours = route.oif.is_some_and(|i| owned.contains(&i))
            || (bridge && route.dst == cidr)
            || (shim.is_some()
                && route.oif.is_some_and(|i| Some(i) == parent || Some(i) == shim.as_ref().map(|s| s.index)));
        if route.dst.prefix_len() != 0 && overlaps(route.dst) && !ours {
            clash = Some(format!("route {}", route.dst));
        }
    }
    for (index, addr) in link::addresses(&node.nl).await? {
        if overlaps(addr) && addr.addr() != gateway {
            let dev = link::get_by_index(&node.nl, index).await?.map_or(index.to_string(), |l| l.name);
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
    Ok(())
}

/// Conntrack headroom.
fn conntrack(r: &mut Report, node: &Node) -> anyhow::Result<()> {
    let reasons = node.inspector.reason_counters()?;
    let ct = node.inspector.conntrack_summary(&reasons)?;
    let detail = format!(
        "{} of {} entries in use, IPv6 {} of {}, {} evicted",
        ct.entries, ct.capacity, ct.entries6, ct.capacity6, ct.evicted
    );
    // A table an older agent did not pin reads as size 0: not full.
    let nearly_full = |entries: u64, capacity: u32| capacity > 0 && entries * 10 >= capacity as u64 * 9;
    if nearly_full(ct.entries, ct.capacity) || nearly_full(ct.entries6, ct.capacity6) {
        r.fail(
            "conntrack",
            detail,
            "raise --ct-max-entries (takes effect for a new table) or lower the timeouts",
        );
    } else {
        r.ok("conntrack", detail);
    }
    Ok(())
}
