//! Hitless restart: the datapath keeps forwarding and translating while the agent is
//! killed and restarted, and long-lived connections on every path lose nothing.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddrV4, TcpStream},
    time::Duration,
};

use netpath_tests::{EchoConn, Lab, Netns, NODE_UPLINK_IP, OUTSIDE_IP};

fn open(
    server: &Netns,
    listen: impl Into<std::net::SocketAddr>,
    client: &Netns,
    target: impl Into<std::net::SocketAddr>,
) -> EchoConn {
    EchoConn::open(server, listen, client, target)
}

#[test]
fn connections_survive_an_agent_killed_and_restarted() {
    let mut lab = Lab::new(2);
    assert!(lab.node.exec(&["iptables", "-P", "FORWARD", "DROP"]).status.success());
    assert!(lab.node.exec(&["ip6tables", "-P", "FORWARD", "DROP"]).status.success());
    // The uplink has IPv6 too: containers' IPv6 to the outside is masqueraded (NAT66).
    for (ns, cmd) in [
        (&lab.node, ["ip", "-6", "addr", "add", "fd00:99::1/64", "dev", "uplink0", "nodad"]),
        (&lab.outside, ["ip", "-6", "addr", "add", "fd00:99::2/64", "dev", "eth0", "nodad"]),
    ] {
        assert!(ns.exec(&cmd).status.success(), "{cmd:?}");
    }
    let outside6 = |port| std::net::SocketAddrV6::new("fd00:99::2".parse().unwrap(), port, 0, 0);
    // Dual-stack: IPv6 rides through the restart next to IPv4. The endpoints keep
    // their filters (the restart of TCX-linked ones is the tests below).
    const AGENT: &[&str] = &["--pod-cidr6", "fd00:77::/64", "--endpoint-attach", "clsact"];
    lab.start_agent_with(AGENT);
    lab.add_endpoint("a", 0);
    let b = lab.add_endpoint("b", 1);
    let b6 = lab.endpoint_ip6("b");
    let v6 = |port| std::net::SocketAddrV6::new(b6, port, 0, 0);
    lab.netpath_ok(&["port", "add", "8080", "b:7100"]);
    let (c, o) = (&lab.containers, &lab.outside);
    let mut conns = [
        (
            "container to container",
            open(&c[1], SocketAddrV4::new(b, 7000), &c[0], SocketAddrV4::new(b, 7000)),
        ),
        ("container to container over IPv6", open(&c[1], v6(7010), &c[0], v6(7010))),
        (
            "container to outside",
            open(o, SocketAddrV4::new(OUTSIDE_IP, 7001), &c[0], SocketAddrV4::new(OUTSIDE_IP, 7001)),
        ),
        ("container to outside over IPv6 (NAT66)", open(o, outside6(7011), &c[0], outside6(7011))),
        (
            "outside to published port",
            open(&c[1], SocketAddrV4::new(b, 7100), o, SocketAddrV4::new(NODE_UPLINK_IP, 8080)),
        ),
    ];
    for (what, conn) in conns.iter_mut() {
        conn.exchange(what);
    }
    let filters_before = endpoint_filters(&lab);

    // SIGKILL: no chance to clean up anything.
    let pid = lab.agent_pid().expect("agent running");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    for (what, conn) in conns.iter_mut() {
        conn.exchange(&format!("{what}, agent dead"));
    }
    // A new connection works too while no agent runs.
    let mut fresh = open(&c[1], SocketAddrV4::new(b, 7002), &c[0], SocketAddrV4::new(b, 7002));
    fresh.exchange("new connection, agent dead");
    let mut fresh6 = open(&c[1], v6(7012), &c[0], v6(7012));
    fresh6.exchange("new IPv6 connection, agent dead");
    let mut fresh_nat6 = open(o, outside6(7014), &c[0], outside6(7014));
    fresh_nat6.exchange("new NAT66 connection, agent dead");

    lab.kill_agent(); // reap the dead process
    lab.start_agent_with(AGENT);
    for (what, conn) in conns.iter_mut() {
        conn.exchange(&format!("{what}, agent restarted"));
    }
    fresh.exchange("new connection, agent restarted");
    fresh6.exchange("new IPv6 connection, agent restarted");
    fresh_nat6.exchange("new NAT66 connection, agent restarted");
    // The restarted agent took over the attachments rather than stacking new ones: one
    // program per interface. The uplink's is a pinned TCX link (before 6.6 a clsact
    // filter); an endpoint's is the filter its creation put there, untouched: it runs
    // whatever program the pinned slot holds, the new agent's now.
    let links: Vec<String> = std::fs::read_dir(lab.bpffs_dir.join("links"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(links.iter().filter(|l| l.starts_with("from_container-")).count(), 0, "{links:?}");
    if netpath_tests::kernel_at_least(6, 6) {
        assert_eq!(links.iter().filter(|l| l.starts_with("uplink_in-")).count(), 1, "{links:?}");
    }
    assert_eq!(endpoint_filters(&lab), filters_before, "the endpoints' filters changed");
    for dev in lab.node_links().iter().filter(|l| !netpath_tests::kernel_at_least(6, 6) && *l == "uplink0") {
        let out = lab.node.exec(&["tc", "filter", "show", "dev", dev, "ingress"]);
        let copies = String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(" name ")).count();
        assert_eq!(copies, 1, "{dev}: {out:?}");
    }

    // The slot's pin gone while no agent runs (someone cleaned the pin directory): the
    // kernel empties the slot once the agent's references go, and the endpoints' filters
    // drop everything. The next agent makes a new slot and attaches every endpoint again.
    lab.kill_agent();
    std::fs::remove_file(lab.bpffs_dir.join("ENDPOINT_PROGS")).unwrap();
    lab.start_agent_with(AGENT);
    let mut again =
        open(&lab.containers[1], SocketAddrV4::new(b, 7003), &lab.containers[0], SocketAddrV4::new(b, 7003));
    again.exchange("new connection, new slot");
    let mut again6 = open(&lab.containers[1], v6(7013), &lab.containers[0], v6(7013));
    again6.exchange("new IPv6 connection, new slot");
    let after = endpoint_filters(&lab);
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.iter().all(|f| !filters_before.contains(f)), "{after:?} not attached again");

    // And the restarted agent still manages the node: a deleted endpoint goes, with its
    // attachment.
    lab.netpath_ok(&["endpoint", "del", "a"]);
    assert_eq!(lab.node_links().iter().filter(|l| l.starts_with("np")).count(), 1);
    assert_eq!(endpoint_filters(&lab).len(), 1);
}

/// Each endpoint veth's ingress filters, as `tc` lists them (program id and tag), one
/// string per veth: one filter each, or the test fails here.
fn endpoint_filters(lab: &Lab) -> Vec<String> {
    let mut out = Vec::new();
    for dev in lab.node_links().iter().filter(|l| l.starts_with("np")) {
        let show = lab.node.exec(&["tc", "filter", "show", "dev", dev, "ingress"]);
        let text = String::from_utf8_lossy(&show.stdout).into_owned();
        let filters: Vec<&str> = text.lines().filter(|l| l.contains(" name ")).collect();
        assert_eq!(filters.len(), 1, "{dev}: {text}");
        assert!(
            filters[0].contains("from_container")
                && (filters[0].contains("pref 2048") || filters[0].contains("pref 2049")),
            "{dev}: {text}"
        );
        out.push(filters[0].to_string());
    }
    out
}

#[test]
fn pinned_maps_of_an_old_layout_are_replaced_or_refused() {
    let mut lab = Lab::new(1);
    std::fs::create_dir_all(&lab.bpffs_dir).unwrap();
    let dir = lab.bpffs_dir.clone();
    let pin = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let create = |name: &str, kind: &str, value: &str, entries: &str| {
        let p = pin(name);
        netpath_tests::sh(&[
            "bpftool",
            "map",
            "create",
            &p,
            "type",
            kind,
            "key",
            if kind.ends_with("array") { "4" } else { "16" },
            "value",
            value,
            "entries",
            entries,
            "name",
            name,
        ]);
    };
    // An older build's conntrack table, with a different entry layout: live flows would
    // depend on it, so the agent must neither misread nor empty it.
    create("CONNTRACK", "lru_hash", "40", "1024");
    let links_before = lab.node_links();
    let err = lab.try_start_agent(&[]).unwrap_err();
    assert!(
        err.contains("CONNTRACK") && err.contains("value 40 B") && err.contains("remove the pin"),
        "{err}"
    );
    // Refused before anything changed: the old table is still pinned, alone, and the
    // node's links are as they were.
    let pins: Vec<String> = std::fs::read_dir(&lab.bpffs_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into())
        .collect();
    assert_eq!(pins, ["CONNTRACK"]);
    assert_eq!(lab.node_links(), links_before);

    // Once the operator removed it, an old per-reason counters array (disposable) is
    // replaced by one of this build's layout, and the agent runs.
    std::fs::remove_file(pin("CONNTRACK")).unwrap();
    create("REASON_STATS", "percpu_array", "16", "3");
    lab.start_agent();
    let maps: serde_json::Value =
        serde_json::from_str(&lab.netpath_ok(&["map", "list", "-o", "json"])).unwrap();
    let reasons =
        maps["maps"].as_array().unwrap().iter().find(|m| m["name"] == "REASON_STATS").unwrap().clone();
    assert_eq!(reasons["value_size"], 32, "{reasons}");
    assert!(reasons["max_entries"].as_u64().unwrap() > 3, "{reasons}");
    lab.add_endpoint("a", 0);
    assert!(lab.containers[0].ping(OUTSIDE_IP, 1), "the agent with the new counters forwards");
    assert!(lab.stats().reason("snat-new-flow") >= 1, "and counts into the new array");
}

#[test]
fn a_table_of_new_flows_of_the_common_kind_is_migrated_to_the_per_cpu_kind() {
    // What an agent from before issue 23 left pinned: CONNTRACK_NEW as a common LRU,
    // with a new flow's pair in it.
    let mut lab = Lab::new(1);
    std::fs::create_dir_all(&lab.bpffs_dir).unwrap();
    let pin = lab.bpffs_dir.join("CONNTRACK_NEW").to_string_lossy().into_owned();
    let entries =
        netpath::datapath::layout::new_flow_entries(netpath_common::maps::CONNTRACK_ENTRIES).to_string();
    let create = ["map", "create", &pin, "type", "lru_hash", "key", "16", "value", "48", "entries", &entries];
    netpath_tests::sh(&[&["bpftool"][..], &create, &["name", "CONNTRACK_NEW"]].concat());
    let bytes = |b: &[u8]| b.iter().map(|b| b.to_string()).collect::<Vec<_>>();
    // 10.77.0.2:12345 -> 1.2.3.4:80 UDP, masqueraded as 192.168.77.1:61000; and its reply.
    let orig_key = bytes(&[10, 77, 0, 2, 1, 2, 3, 4, 0x30, 0x39, 0, 80, 17, 0, 0, 0]);
    let reply_key = bytes(&[1, 2, 3, 4, 192, 168, 77, 1, 0, 80, 0xee, 0x48, 17, 0, 0, 0]);
    let mut orig = [0u8; 48];
    orig[..4].copy_from_slice(&[192, 168, 77, 1]);
    orig[8..10].copy_from_slice(&[0xee, 0x48]);
    orig[12] = netpath_common::conntrack::CT_F_SNAT;
    let mut reply = [0u8; 48];
    reply[4..8].copy_from_slice(&[10, 77, 0, 2]);
    reply[10..12].copy_from_slice(&[0x30, 0x39]);
    reply[12] = netpath_common::conntrack::CT_F_REPLY | netpath_common::conntrack::CT_F_SNAT;
    for (key, value) in [(orig_key, bytes(&orig)), (reply_key, bytes(&reply))] {
        let mut args =
            vec!["bpftool".to_string(), "map".into(), "update".into(), "pinned".into(), pin.clone()];
        args.push("key".into());
        args.extend(key);
        args.push("value".into());
        args.extend(value);
        netpath_tests::sh(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }
    lab.start_agent();
    let log = lab.agent_log();
    let migrated = log.lines().find(|l| l.contains("entries migrated to the new map")).unwrap_or_default();
    assert!(migrated.contains("CONNTRACK_NEW") && migrated.contains("entries=2"), "{log}");
    let show: serde_json::Value =
        serde_json::from_str(&netpath_tests::sh(&["bpftool", "-j", "map", "show", "pinned", &pin])).unwrap();
    // BPF_F_NO_COMMON_LRU.
    assert_eq!(show["flags"].as_u64().unwrap() & 2, 2, "still a common LRU: {show}");
}

#[test]
fn a_resized_conntrack_table_is_migrated_under_live_connections() {
    let mut lab = Lab::new(2);
    assert!(lab.node.exec(&["iptables", "-P", "FORWARD", "DROP"]).status.success());
    lab.start_agent_with(&["--ct-max-entries", "1024"]);
    lab.add_endpoint("a", 0);
    let b = lab.add_endpoint("b", 1);
    lab.netpath_ok(&["port", "add", "8080", "b:7100"]);
    let (c, o) = (&lab.containers, &lab.outside);
    let mut conns = [
        (
            "container to outside",
            open(o, SocketAddrV4::new(OUTSIDE_IP, 7001), &c[0], SocketAddrV4::new(OUTSIDE_IP, 7001)),
        ),
        (
            "outside to published port",
            open(&c[1], SocketAddrV4::new(b, 7100), o, SocketAddrV4::new(NODE_UPLINK_IP, 8080)),
        ),
    ];
    for (what, conn) in conns.iter_mut() {
        conn.exchange(what);
    }
    let flows = |lab: &Lab| {
        let ct: serde_json::Value =
            serde_json::from_str(&lab.netpath_ok(&["ct", "list", "-o", "json"])).unwrap();
        ct["conntrack"].as_array().unwrap().len()
    };
    let tracked = flows(&lab);
    assert!(tracked >= 4, "{tracked} entries");

    // A new build or a new setting: the table must grow, and every flow with it.
    lab.kill_agent();
    lab.start_agent_with(&["--ct-max-entries", "4096"]);
    assert!(lab.agent_log().contains("migrat"), "no migration logged:\n{}", lab.agent_log());
    for (what, conn) in conns.iter_mut() {
        conn.exchange(&format!("{what}, table migrated"));
    }
    assert_eq!(lab.stats().0["conntrack"]["capacity"], 4096);
    assert!(flows(&lab) >= tracked, "entries lost in the migration");
    let maps: serde_json::Value =
        serde_json::from_str(&lab.netpath_ok(&["map", "list", "-o", "json"])).unwrap();
    let ct = maps["maps"].as_array().unwrap().iter().find(|m| m["name"] == "CONNTRACK").unwrap().clone();
    assert_eq!(ct["max_entries"], 4096, "{ct}");
}

/// The agent sizes the IPv6 conntrack tables by `--pod-cidr6`: as small as the machine
/// allows without it, as IPv4's with it. Turning IPv6 on is a migration: the IPv6 flows
/// the tables held are still there.
#[test]
fn the_ipv6_conntrack_tables_grow_when_the_node_gets_ipv6() {
    use netpath::datapath::layout;
    use netpath_common::{conntrack::TCP_ESTABLISHED, Ip6};
    let mut lab = Lab::new(0);
    let ct_entries = layout::ct_min_entries() * 8;
    let ct_arg = ["--ct-max-entries".to_string(), ct_entries.to_string()];
    let ct_arg: Vec<&str> = ct_arg.iter().map(String::as_str).collect();
    lab.start_agent_with(&ct_arg);
    let sizes = |lab: &Lab| {
        let maps: serde_json::Value =
            serde_json::from_str(&lab.netpath_ok(&["map", "list", "-o", "json"])).unwrap();
        ["CONNTRACK", "CONNTRACK6", "CONNTRACK6_NEW", "SNAT_CLOSED6"].map(|name| {
            let m = maps["maps"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap();
            m["max_entries"].as_u64().unwrap() as u32
        })
    };
    let small = layout::ct_min_entries();
    assert_eq!(sizes(&lab), [ct_entries, small, small, small]);
    let ip6 = |s: &str| Ip6(s.parse::<std::net::Ipv6Addr>().unwrap().octets());
    let now = netpath::datapath::monotonic_ns();
    let (client, server, node) = (ip6("fd00:77::2"), ip6("2001:db8::1"), ip6("2001:db8::77"));
    let pair =
        netpath_tests::snat_pair(6, (client, 40000), (server, 443), (node, 61000), TCP_ESTABLISHED, now);
    for (key, entry) in &pair {
        netpath_tests::map_update(&lab.bpffs_dir.join("CONNTRACK6"), key, entry);
    }

    lab.kill_agent();
    lab.start_agent_with(&[&ct_arg[..], &["--pod-cidr6", "fd00:77::/64"]].concat());
    let log = lab.agent_log();
    assert!(
        log.lines().any(|l| l.contains("migrating its entries") && l.contains("map=\"CONNTRACK6\"")),
        "no migration of CONNTRACK6 logged:\n{log}"
    );
    let new_flows = layout::new_flow_entries(ct_entries);
    assert_eq!(sizes(&lab), [ct_entries, ct_entries, new_flows, netpath_common::maps::SNAT_CLOSED_ENTRIES]);
    let ct: serde_json::Value = serde_json::from_str(&lab.netpath_ok(&["ct", "list", "-o", "json"])).unwrap();
    let v6: Vec<_> = ct["conntrack"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["dport"] == 443 || r["sport"] == 443)
        .collect();
    assert_eq!(v6.len(), 2, "the IPv6 flow did not come along: {ct}");
}

#[test]
fn clsact_filters_are_swapped_without_a_gap() {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };
    let mut lab = Lab::new(1);
    lab.start_agent_with(&["--tc-attach", "clsact"]);
    let a = lab.add_endpoint("a", 0);
    lab.netpath_ok(&["port", "add", "8080", "a:80"]);
    netpath_tests::echo_server(&lab.containers[0], SocketAddrV4::new(a, 80));
    // New connections to the published port, back to back, while the agent restarts:
    // each needs uplink_in at the moment its SYN arrives.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let stop = stop.clone();
        lab.outside.run(move || {
            let (mut done, mut failed) = (0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let target = SocketAddrV4::new(NODE_UPLINK_IP, 8080);
                let r =
                    TcpStream::connect_timeout(&target.into(), Duration::from_secs(3)).and_then(|mut s| {
                        s.set_read_timeout(Some(Duration::from_secs(3)))?;
                        s.write_all(b"ping")?;
                        s.read_exact(&mut [0u8; 4])
                    });
                if let Err(e) = r {
                    failed.push(e.to_string());
                }
                done += 1;
            }
            (done, failed)
        })
    };
    // Two swaps in the emulated guests: each restart there holds the one vCPU in the
    // verifier for half a minute while the client hammers it.
    for _ in 0..netpath_tests::rounds(6, 2) {
        lab.stop_agent();
        lab.start_agent_with(&["--tc-attach", "clsact"]);
    }
    stop.store(true, Ordering::Relaxed);
    let (done, failed) = client.join().unwrap();
    assert!(done > 100, "only {done} connections");
    assert!(
        failed.is_empty(),
        "{} of {done} connections failed across restarts, first: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    // Swapped, not stacked: one filter per interface.
    for dev in lab.node_links().iter().filter(|l| l.starts_with("np") || *l == "uplink0") {
        let out = lab.node.exec(&["tc", "filter", "show", "dev", dev, "ingress"]);
        let filters = String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(" name ")).count();
        assert_eq!(filters, 1, "{dev}: {out:?}");
    }
}

/// `--endpoint-attach tcx`: each endpoint's veth gets a pinned TCX link rather than a
/// clsact filter (the cheaper hook per packet), traffic flows through it, a restarted
/// agent keeps every link as it is (no update, each would wait for a grace period), and
/// a deleted endpoint's link goes with its veth. Kernels without TCX refuse the flag in
/// one line and start nothing.
#[test]
fn endpoints_attached_with_tcx_links_keep_them_across_restarts() {
    const AGENT: &[&str] = &["--endpoint-attach", "tcx"];
    if !netpath_tests::kernel_at_least(6, 6) {
        let mut lab = Lab::new(1);
        let err = lab.try_start_agent(AGENT).unwrap_err();
        assert!(
            err.contains("--endpoint-attach tcx needs TCX") && err.contains("--endpoint-attach clsact"),
            "{err}"
        );
        assert!(lab.node_links().iter().all(|l| !l.starts_with("np")), "{:?}", lab.node_links());
        return;
    }
    let (mut lab, ips) = Lab::setup(2).agent(AGENT).endpoints(&["a", "b"]).build();
    let before = endpoint_links(&lab);
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(lab.containers[0].ping(ips[1], 1), "{}", lab.agent_log());
    let mut conn = open(
        &lab.containers[1],
        SocketAddrV4::new(ips[1], 7020),
        &lab.containers[0],
        SocketAddrV4::new(ips[1], 7020),
    );
    conn.exchange("through the TCX links");
    let doctor = lab.netpath_in_node(&["doctor"]);
    assert!(doctor.status.success(), "{}", String::from_utf8_lossy(&doctor.stdout));

    lab.kill_agent();
    lab.start_agent_with(AGENT);
    assert_eq!(endpoint_links(&lab), before, "a restart touched the endpoints' links");
    conn.exchange("after the restart");

    lab.netpath_ok(&["endpoint", "del", "a"]);
    let after = endpoint_links(&lab);
    assert_eq!(after.len(), 1, "{after:?}");
    let (gone_pin, gone_id, _) = before.iter().find(|l| !after.contains(l)).unwrap();
    assert!(!std::path::Path::new(gone_pin).exists(), "{gone_pin} left behind");
    let link = lab.node.exec(&["bpftool", "link", "show", "id", &gone_id.to_string()]);
    assert!(!link.status.success(), "link {gone_id} outlived its endpoint: {link:?}");
}

/// The default (`--endpoint-attach auto`): an endpoint is made with a clsact filter and
/// moved to a TCX link once the agent is idle, without losing a packet; a restart keeps
/// the links; an endpoint whose link someone removed is repaired onto a filter and moved
/// again; a deleted endpoint's link goes with it. `--endpoint-attach clsact` moves
/// nothing, and neither does auto on kernels without TCX.
#[test]
fn endpoints_move_from_filters_to_tcx_links_when_the_agent_is_idle() {
    let (mut lab, ips) = Lab::setup(3).endpoints(&["a", "b"]).build();
    // 3 s of pings every 10 ms across the move: none may be lost.
    let pinger = {
        let a = lab.containers[0].path();
        let b = ips[1].to_string();
        std::thread::spawn(move || {
            let mut cmd = std::process::Command::new("ping");
            cmd.args(["-n", "-q", "-c", "300", "-i", "0.01", "-W", "1", &b]);
            netpath_tests::in_netns(&mut cmd, &a);
            cmd.output().unwrap()
        })
    };
    if !netpath_tests::kernel_at_least(6, 6) {
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(endpoint_filters(&lab).len(), 2, "auto on a kernel without TCX must keep the filters");
        assert!(pinger.join().unwrap().status.success());
        return;
    }
    lab.wait_for_tcx_links();
    let promoted = endpoint_links(&lab);
    assert_eq!(promoted.len(), 2, "{promoted:?}");
    let ping = pinger.join().unwrap();
    let summary = String::from_utf8_lossy(&ping.stdout);
    assert!(summary.contains(" 0% packet loss"), "packets lost while the endpoints moved: {summary}");
    let mut conn = open(
        &lab.containers[1],
        SocketAddrV4::new(ips[1], 7030),
        &lab.containers[0],
        SocketAddrV4::new(ips[1], 7030),
    );
    conn.exchange("through the TCX links");
    let doctor = lab.netpath_in_node(&["doctor"]);
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(doctor.status.success(), "{report}");
    assert_eq!(report.matches("attached (a TCX link)").count(), 2, "{report}");

    // A restart keeps every link as it is.
    lab.kill_agent();
    lab.start_agent();
    assert_eq!(endpoint_links(&lab), promoted, "a restart touched the endpoints' links");
    conn.exchange("after the restart");

    // a's link removed behind the agent's back: reconciliation attaches a filter, and
    // the idle agent moves it to a link again.
    let a_pin =
        &promoted.iter().find(|l| l.0.ends_with(&format!("-{}", lab.endpoint_ifindex("a")))).unwrap().0;
    std::fs::remove_file(a_pin).unwrap();
    let drift = lab.netpath(&["reconcile"]);
    assert!(
        String::from_utf8_lossy(&drift.stdout).contains("from_container is not attached"),
        "{}",
        String::from_utf8_lossy(&drift.stdout)
    );
    lab.wait_for_tcx_links();
    assert_eq!(endpoint_links(&lab).len(), 2);
    conn.exchange("after the repair");

    lab.netpath_ok(&["endpoint", "del", "a"]);
    let after = endpoint_links(&lab);
    assert_eq!(after.len(), 1, "{after:?}");

    // clsact: a new endpoint stays on its filter.
    lab.stop_agent();
    lab.start_agent_with(&["--endpoint-attach", "clsact"]);
    lab.add_endpoint("c", 2);
    std::thread::sleep(Duration::from_secs(1));
    let link = lab.bpffs_dir.join(format!("links/from_container-{}", lab.endpoint_ifindex("c")));
    assert!(!link.exists(), "--endpoint-attach clsact moved an endpoint to a TCX link");
    let doctor = lab.netpath_in_node(&["doctor"]);
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(report.contains("attached (a clsact filter)"), "{report}");
}

/// Each endpoint veth's TCX link (its pin, and the kernel's ids of the link and of the
/// program in it: an update would keep the one and change the other), checking that the
/// veth has no filter besides: one link each, or the test fails here.
fn endpoint_links(lab: &Lab) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    for dev in lab.node_links().iter().filter(|l| l.starts_with("np")) {
        let show = lab.node.exec(&["tc", "filter", "show", "dev", dev, "ingress"]);
        let text = String::from_utf8_lossy(&show.stdout).into_owned();
        assert!(!text.contains(" name "), "{dev} has a filter: {text}");
        let ifindex = lab.ifindex_of(dev);
        let pin = lab.bpffs_dir.join(format!("links/from_container-{ifindex}"));
        let pin = pin.to_str().unwrap().to_string();
        let json = netpath_tests::sh(&["bpftool", "-j", "link", "show", "pinned", &pin]);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        // BPF_LINK_TYPE_TCX, which bpftool before 7.3 prints as its number.
        assert!(v["type"] == "tcx" || v["type"] == 11, "{dev}: {json}");
        out.push((pin, v["id"].as_u64().unwrap(), v["prog_id"].as_u64().unwrap()));
    }
    out
}
