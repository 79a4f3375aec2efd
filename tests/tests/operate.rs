//! The operator's tools against a live lab: trace with named drop reasons, listings.
use std::{process::Command, time::Duration};

use netpath_tests::{
    metric_value,
    trace::{events, start_trace},
    Lab, OUTSIDE_IP,
};

#[test]
fn trace_names_the_hop_and_the_drop_reason() {
    let mut lab = Lab::new(2);
    lab.start_agent();
    lab.add_endpoint("a", 0);
    let b = lab.add_endpoint("b", 1);

    // A forwarded packet: where it came in, where it left, and the decision.
    let t = start_trace(&lab, &["--endpoint", "b", "--proto", "icmp", "--count", "4", "--duration", "10"]);
    assert!(lab.containers[0].ping(b, 1));
    let evs = events(t);
    let hops: Vec<&str> = evs.iter().map(|e| e["hop"].as_str().unwrap()).collect();
    assert_eq!(hops, ["from-container", "to-container", "from-container", "to-container"], "{evs:?}");
    assert!(evs.iter().all(|e| e["decision"] == "forwarded-to-peer"), "{evs:?}");
    assert_eq!(evs[0]["src_endpoint"], "a");
    assert_eq!(evs[0]["dst_endpoint"], "b");
    // The request leaves through b's host veth, the reply through a's.
    assert_eq!(evs[1]["ifindex"], evs[2]["ifindex"], "{evs:?}");
    assert_eq!(evs[3]["ifindex"], evs[0]["ifindex"], "{evs:?}");

    // Drops only: an address of the pod network nobody has, then a spoofed source.
    let t = start_trace(&lab, &["--drops", "--count", "2", "--duration", "10"]);
    let c0 = &lab.containers[0];
    c0.exec(&["ping", "-c", "1", "-W", "1", "10.77.0.99"]);
    assert!(c0.exec(&["ip", "addr", "add", "10.77.0.200/32", "dev", "eth0"]).status.success());
    c0.exec(&["ping", "-c", "1", "-W", "1", "-I", "10.77.0.200", &b.to_string()]);
    let evs = events(t);
    let reasons: Vec<&str> = evs.iter().map(|e| e["decision"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["drop-no-endpoint", "drop-spoofed-source"], "{evs:?}");
    assert!(evs.iter().all(|e| e["drop"] == true));
    assert_eq!(evs[0]["dst"], "10.77.0.99");
    assert_eq!(evs[1]["src"], "10.77.0.200");

    // The filter is disarmed afterwards: nothing is lost or pending.
    let stats = lab.stats();
    assert_eq!(stats.reason("trace-events-lost"), 0);
}

#[test]
fn trace_follows_a_published_port_through_the_uplink() {
    let mut lab = Lab::new(1);
    lab.start_agent();
    let a = lab.add_endpoint("web", 0);
    lab.netpath_ok(&["port", "add", "8080", "web:80"]);
    let listener =
        lab.containers[0].run(move || std::net::TcpListener::bind((a, 80))).join().unwrap().unwrap();
    let t = start_trace(&lab, &["--port", "8080", "--count", "2", "--duration", "10"]);
    let client = lab.outside.run(|| {
        std::net::TcpStream::connect_timeout(
            &(netpath_tests::NODE_UPLINK_IP, 8080).into(),
            Duration::from_secs(3),
        )
        .is_ok()
    });
    let _conn = listener.accept().unwrap();
    assert!(client.join().unwrap());
    let evs = events(t);
    assert_eq!(evs[0]["hop"], "uplink-in", "{evs:?}");
    assert_eq!(evs[0]["decision"], "dnat-new-flow");
    assert_eq!(evs[0]["src"], OUTSIDE_IP.to_string());
    // The same SYN as it enters the container: translated to the container's port.
    assert_eq!(evs[1]["hop"], "to-container", "{evs:?}");
    assert_eq!((evs[1]["dst"].as_str(), evs[1]["dport"].as_u64()), (Some(a.to_string().as_str()), Some(80)));
    assert_eq!(evs[1]["src"], OUTSIDE_IP.to_string(), "the client's address is kept");

    // Masquerade, seen on both sides: the container's address going in, the node's out.
    // Only the outside host's: the container's own ICMPv6 (router solicitation, MLD,
    // sent seconds after its link comes up in a slow guest) is ICMP too, and passes to
    // the node's stack.
    let outside = OUTSIDE_IP.to_string();
    let t = start_trace(&lab, &["--proto", "icmp", "--host", &outside, "--count", "2", "--duration", "10"]);
    assert!(lab.containers[0].ping(OUTSIDE_IP, 1));
    let evs = events(t);
    assert_eq!(
        (evs[0]["hop"].as_str(), evs[0]["decision"].as_str()),
        (Some("from-container"), Some("snat-new-flow"))
    );
    assert_eq!(evs[0]["src"], a.to_string());
    assert_eq!(evs[1]["hop"], "uplink-out", "{evs:?}");
    assert_eq!(evs[1]["src"], netpath_tests::NODE_UPLINK_IP.to_string(), "{evs:?}");
}

fn scrape(lab: &Lab) -> String {
    lab.metrics().expect("metrics endpoint")
}

fn sample(text: &str, prefix: &str) -> u64 {
    metric_value(text, prefix).unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
}

#[test]
fn metrics_move_with_traffic() {
    let mut lab = Lab::new(2);
    lab.start_agent();
    lab.add_endpoint("a", 0);
    let b = lab.add_endpoint("b", 1);
    let before = scrape(&lab);
    assert!(before.starts_with("HTTP/1.1 200 OK"), "{before}");
    // The format prometheus-client writes, said so: OpenMetrics, ending in # EOF.
    assert!(
        before
            .to_ascii_lowercase()
            .contains("\r\ncontent-type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n"),
        "{before}"
    );
    assert!(before.trim_end().ends_with("# EOF"), "{before}");
    // Anything but GET /metrics is not found.
    let other = lab
        .node
        .run(|| {
            use std::io::{Read as _, Write as _};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", 9464)).unwrap();
            s.write_all(b"GET /other HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").unwrap();
            let mut reply = String::new();
            s.read_to_string(&mut reply).unwrap();
            reply
        })
        .join()
        .unwrap();
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    let tx = r#"netpath_endpoint_packets_total{endpoint="a",ip="10.77.0.2",direction="tx"}"#;
    let fwd = r#"netpath_datapath_packets_total{reason="forwarded-to-peer"}"#;
    assert!(lab.containers[0].ping(b, 3));
    let c0 = &lab.containers[0];
    assert!(c0.exec(&["ip", "addr", "add", "10.77.0.200/32", "dev", "eth0"]).status.success());
    c0.exec(&["ping", "-c", "1", "-W", "1", "-I", "10.77.0.200", &b.to_string()]);
    let after = scrape(&lab);
    assert_eq!(sample(&after, tx) - sample(&before, tx), 3);
    assert!(sample(&after, fwd) - sample(&before, fwd) >= 6);
    assert!(sample(&after, r#"netpath_drops_total{reason="drop-spoofed-source"}"#) >= 1);
    assert!(after.contains("netpath_conntrack_entries "), "{after}");
    assert!(after.contains("netpath_conntrack_evictions_total "), "{after}");
    assert!(after.contains("netpath_nat_port_allocation_failures_total "), "{after}");
    // Program runs are the kernel's to count, and only on request (--bpf-stats).
    assert!(!after.contains("netpath_program_runs_total"), "{after}");
}

#[test]
fn program_runs_are_counted_on_request() {
    let mut lab = Lab::new(2);
    lab.start_agent_with(&["--bpf-stats"]);
    lab.add_endpoint("a", 0);
    let b = lab.add_endpoint("b", 1);
    let runs = r#"netpath_program_runs_total{program="from_container"}"#;
    let before = scrape(&lab);
    assert!(lab.containers[0].ping(b, 3));
    let after = scrape(&lab);
    // Three requests and three replies, each through one from_container.
    assert!(sample(&after, runs) - sample(&before, runs) >= 6, "{after}");
    assert!(after.contains(r#"netpath_program_runs_total{program="uplink_in"}"#), "{after}");
    assert!(after.contains(r#"netpath_program_run_seconds_total{program="from_container"}"#), "{after}");
    // Restarted, the agent leaves the endpoints' filters (and their from_container
    // instances) alone; their runs are still counted.
    lab.stop_agent();
    lab.start_agent_with(&["--bpf-stats"]);
    let before = scrape(&lab);
    assert!(lab.containers[0].ping(b, 3));
    let after = scrape(&lab);
    assert!(sample(&after, runs) - sample(&before, runs) >= 6, "after a restart: {after}");
}

/// `netpath doctor -o json` in the node: (healthy, failed check names).
fn doctor(lab: &Lab) -> (bool, Vec<String>, serde_json::Value) {
    let o = lab.netpath_in_node(&["doctor", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor output: {e}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    let failed: Vec<String> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["ok"] == false)
        .map(|f| f["check"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(o.status.success(), failed.is_empty(), "exit status disagrees with findings: {v}");
    (v["healthy"] == true, failed, v)
}

#[test]
fn doctor_passes_a_healthy_node_and_names_each_injected_fault() {
    let mut lab = Lab::new(2);
    lab.start_agent();
    lab.add_endpoint("a", 0);
    lab.add_endpoint("b", 1);
    let (healthy, failed, v) = doctor(&lab);
    assert!(healthy, "healthy node reported sick: {failed:?} {v}");

    // ip_forward off.
    lab.node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    assert_eq!(doctor(&lab).1, ["ip_forward"]);
    lab.node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);

    // An overlapping subnet: the docker0 pitfall.
    lab.node.exec(&["ip", "addr", "add", "10.77.0.100/16", "dev", "uplink0"]);
    let (_, failed, v) = doctor(&lab);
    assert_eq!(failed, ["pod CIDR"], "{v}");
    assert!(v.to_string().contains("10.77.0.100/16 on uplink0"), "{v}");
    lab.node.exec(&["ip", "addr", "del", "10.77.0.100/16", "dev", "uplink0"]);

    // A veth deleted behind netpath's back.
    let rec: serde_json::Value =
        serde_json::from_str(&lab.netpath_ok(&["endpoint", "list", "-o", "json"])).unwrap();
    let veth = rec["endpoints"][1]["host_ifname"].as_str().unwrap().to_string();
    lab.node.exec(&["ip", "link", "del", &veth]);
    let (_, failed, v) = doctor(&lab);
    assert_eq!(failed, ["endpoint b"], "{v}");
    assert!(v.to_string().contains("is gone"), "{v}");

    // The agent stopped: the datapath keeps running, doctor names only the agent.
    lab.stop_agent();
    let (_, failed, v) = doctor(&lab);
    assert_eq!(failed, ["agent", "endpoint b"], "{v}");
    // Programs detached: named per veth and for the uplink.
    lab.detach_programs();
    let (_, failed, v) = doctor(&lab);
    for want in ["agent", "endpoint a", "uplink"] {
        assert!(failed.iter().any(|f| f == want), "{want} not reported: {v}");
    }
    assert!(v.to_string().contains("from_container is not attached"), "{v}");
}

#[test]
fn maps_and_nat_listings_decode_what_traffic_left() {
    let mut lab = Lab::new(1);
    lab.start_agent();
    let a = lab.add_endpoint("a", 0);
    lab.netpath_ok(&["port", "add", "--proto", "udp", "5353", "a:53"]);
    // Two echoes: the second request, after a reply, assures the flow (CONNTRACK).
    assert!(lab.containers[0].ping(OUTSIDE_IP, 2));

    let list = lab.netpath_ok(&["map", "list"]);
    for name in netpath_common::contract::pinned().map(|m| m.name) {
        assert!(list.contains(name), "{name} missing from:\n{list}");
    }
    assert!(list.lines().all(|l| l.len() <= 80), "wider than 80 columns:\n{list}");

    let dump = |name: &str| -> serde_json::Value {
        serde_json::from_str(&lab.netpath_ok(&["map", "dump", name, "-o", "json"])).unwrap()
    };
    let eps = dump("ENDPOINTS");
    assert_eq!(eps["entries"][0]["ip"], a.to_string());
    assert_eq!(eps["entries"][0]["flags"], "published");
    let ports = dump("PORT_MAPS");
    assert_eq!(ports["entries"][0]["host_port"], 5353);
    assert_eq!(ports["entries"][0]["container_ip"], a.to_string());
    let cfg = dump("NODE_CONFIG");
    assert_eq!(cfg["entries"][0]["node_ip"], "192.168.77.1");
    let ct = dump("CONNTRACK");
    assert_eq!(ct["entries"].as_array().unwrap().len(), 2, "one ICMP flow, two entries: {ct}");
    let new = dump("CONNTRACK_NEW");
    assert_eq!(new["entries"].as_array().unwrap().len(), 0, "the assured flow is still new: {new}");
    let table = lab.netpath_ok(&["map", "dump", "CONNTRACK"]);
    assert!(table.contains("icmp") && table.contains("snat 192.168.77.1:"), "{table}");

    let nat: serde_json::Value =
        serde_json::from_str(&lab.netpath_ok(&["nat", "list", "-o", "json"])).unwrap();
    let rows = nat["conntrack"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{nat}");
    assert_eq!(rows[0]["src"], a.to_string());
    assert_eq!(rows[0]["dst"], OUTSIDE_IP.to_string());

    // A masqueraded TCP connection the container closes is remembered for port reuse.
    let server = lab.outside.run(|| std::net::TcpListener::bind((OUTSIDE_IP, 7070))).join().unwrap().unwrap();
    let accepted = std::thread::spawn(move || server.accept().map(|(s, _)| s));
    lab.containers[0]
        .run(|| std::net::TcpStream::connect_timeout(&(OUTSIDE_IP, 7070).into(), Duration::from_secs(3)))
        .join()
        .unwrap()
        .expect("connect through the NAT");
    let _server_side = accepted.join().unwrap().unwrap();
    let closed = dump("SNAT_CLOSED");
    let rows = closed["entries"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{closed}");
    assert_eq!(rows[0]["server"], format!("{OUTSIDE_IP}:7070"));
    assert!(rows[0]["node"].as_str().unwrap().starts_with("192.168.77.1:"), "{closed}");
    assert!(rows[0]["ts_val"].is_u64(), "Linux sends timestamps: {closed}");

    // IPv6's tables (crafted entries: a masqueraded TCP flow and a closed one) are listed
    // with IPv4's, the same fields, the addresses as IPv6 text; IPv4's rows stay as they
    // were.
    let ct_list = || -> Vec<serde_json::Value> {
        let v: serde_json::Value =
            serde_json::from_str(&lab.netpath_ok(&["ct", "list", "-o", "json"])).unwrap();
        v["conntrack"].as_array().unwrap().clone()
    };
    let is_v6 = |r: &serde_json::Value| r["src"].as_str().unwrap().contains(':');
    let v4_rows = ct_list();
    assert!(!v4_rows.is_empty() && !v4_rows.iter().any(is_v6), "{v4_rows:?}");
    add_ipv6_flows(&lab);
    let rows = ct_list();
    let (v6, v4): (Vec<_>, Vec<_>) = rows.into_iter().partition(is_v6);
    assert_eq!(v4.len(), v4_rows.len(), "IPv4's rows changed: {v4:?}");
    assert_eq!(v6.len(), 2, "{v6:?}");
    let orig = v6.iter().find(|r| r["reply"] == false).unwrap();
    assert_eq!(orig["src"], "fd00:77::2");
    assert_eq!(
        (&orig["sport"], &orig["dst"], &orig["dport"]),
        (&40000.into(), &"2001:db8::1".into(), &443.into())
    );
    assert_eq!(orig["rewrite"], "snat [2001:db8::77]:61000");
    assert_eq!(
        (&orig["proto"], &orig["state"], &orig["assured"]),
        (&"tcp".into(), &"established".into(), &true.into())
    );
    let reply = v6.iter().find(|r| r["reply"] == true).unwrap();
    assert_eq!((&reply["src"], &reply["dst"]), (&"2001:db8::1".into(), &"2001:db8::77".into()));
    assert_eq!(reply["rewrite"], "dnat [fd00:77::2]:40000");
    let table = lab.netpath_ok(&["ct", "list"]);
    assert!(
        table.contains("[fd00:77::2]:40000 -> [2001:db8::1]:443")
            && table.contains("snat [2001:db8::77]:61000"),
        "{table}"
    );

    let nat: serde_json::Value =
        serde_json::from_str(&lab.netpath_ok(&["nat", "list", "-o", "json"])).unwrap();
    // Ages tick between the two listings (seconds apart under emulation): compared without.
    let timeless = |r: &serde_json::Value| {
        let mut r = r.clone();
        for k in ["age_secs", "idle_secs"] {
            r.as_object_mut().unwrap().remove(k);
        }
        r
    };
    let nat6: Vec<_> =
        nat["conntrack"].as_array().unwrap().iter().filter(|r| is_v6(r)).map(timeless).collect();
    assert_eq!(nat6, [timeless(orig)], "{nat}");
    let ct6 = dump("CONNTRACK6");
    assert_eq!(ct6["entries"].as_array().unwrap().len(), 2, "{ct6}");
    assert!(ct6["entries"].as_array().unwrap().iter().all(is_v6), "{ct6}");
    assert_eq!(dump("CONNTRACK6_NEW")["entries"].as_array().unwrap().len(), 0);
    let ct4 = dump("CONNTRACK");
    assert!(!ct4["entries"].as_array().unwrap().iter().any(is_v6), "IPv6 in CONNTRACK: {ct4}");
    let closed6 = dump("SNAT_CLOSED6");
    let rows = closed6["entries"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{closed6}");
    assert_eq!(
        (&rows[0]["server"], &rows[0]["node"]),
        (&"[2001:db8::1]:443".into(), &"[2001:db8::77]:61002".into())
    );
    assert_eq!((&rows[0]["end_seq"], &rows[0]["ts_val"]), (&7.into(), &serde_json::Value::Null));
    let maps: serde_json::Value =
        serde_json::from_str(&lab.netpath_ok(&["map", "list", "-o", "json"])).unwrap();
    let entries = |name: &str| {
        maps["maps"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap()["entries"].clone()
    };
    assert_eq!((entries("CONNTRACK6"), entries("SNAT_CLOSED6")), (2.into(), 1.into()), "{maps}");
    let stats = lab.stats();
    assert_eq!(stats.0["conntrack"]["entries6"], 2, "{}", stats.0);
    assert_eq!(stats.0["conntrack"]["entries"].as_u64().unwrap(), entries("CONNTRACK").as_u64().unwrap());
    assert_eq!(sample(&scrape(&lab), "netpath_conntrack6_entries "), 2);

    let o = lab.netpath(&["map", "dump", "NOPE"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no map \"NOPE\""));

    // Every map `map list` names can be dumped (the trace's two point at `trace`).
    for name in netpath_common::contract::pinned().map(|m| m.name) {
        let o = lab.netpath(&["map", "dump", name, "-o", "json"]);
        let err = String::from_utf8_lossy(&o.stderr);
        if ["EVENTS", "TRACE_FILTER"].contains(&name) {
            assert!(!o.status.success() && err.contains("netpath trace"), "{name}: {err}");
        } else {
            assert!(o.status.success(), "map dump {name}: {err}");
        }
    }
    // A program array's slots name the programs the tail calls reach.
    let slots = dump("ENDPOINT_PROGS");
    assert_eq!(slots["entries"][0]["slot"], 0, "{slots}");
    assert_eq!(slots["entries"][0]["program"], "container_path", "{slots}");
    assert!(slots["entries"][0]["id"].as_u64().unwrap() > 0, "{slots}");
    // IPv6's stages are loaded only on a node with --pod-cidr6: every slot shown, empty.
    let progs6 = dump("PROGS6");
    let slots6 = progs6["entries"].as_array().unwrap();
    assert!(slots6.len() == 6 && slots6.iter().all(|r| r["program"].is_null()), "{progs6}");
    // No hairpin was opened: the count is 0, and the lookup skipped once a pass saw none.
    let hairpin = dump("HAIRPIN");
    assert_eq!(hairpin["entries"][0]["opened"], 0, "{hairpin}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while dump("HAIRPIN")["entries"][0]["lookup"] != "skipped" {
        assert!(std::time::Instant::now() < deadline, "no pass cleared the lookup: {}", dump("HAIRPIN"));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(dump("HAIRPIN")["entries"][0]["none_live_up_to"], 0);
}

/// Writes a masqueraded IPv6 TCP flow (fd00:77::2:40000 -> [2001:db8::1]:443, as
/// [2001:db8::77]:61000), just used, into the lab's CONNTRACK6, and a closed one into its
/// SNAT_CLOSED6: what NAT66 traffic leaves, whether or not the node has IPv6.
fn add_ipv6_flows(lab: &Lab) {
    use netpath_common::{conntrack::TCP_ESTABLISHED, ClosedFlow, CtKey6, Ip6};
    let ip6 = |s: &str| Ip6(s.parse::<std::net::Ipv6Addr>().unwrap().octets());
    let (client, server, node) = (ip6("fd00:77::2"), ip6("2001:db8::1"), ip6("2001:db8::77"));
    let now = netpath::datapath::monotonic_ns();
    let pair =
        netpath_tests::snat_pair(6, (client, 40000), (server, 443), (node, 61000), TCP_ESTABLISHED, now);
    for (key, entry) in &pair {
        netpath_tests::map_update(&lab.bpffs_dir.join("CONNTRACK6"), key, entry);
    }
    let closed = CtKey6 {
        src: server,
        dst: node,
        sport: 443u16.to_be_bytes(),
        dport: 61002u16.to_be_bytes(),
        proto: 6,
        _pad: [0; 3],
    };
    let record = ClosedFlow { end_seq: 7, closed_ns: now, ..Default::default() };
    netpath_tests::map_update(&lab.bpffs_dir.join("SNAT_CLOSED6"), &closed, &record);
}

#[test]
fn completions_and_man_page_come_from_the_cli_definition() {
    let bin = netpath_tests::netpath_bin();
    let bash = Command::new(&bin).args(["completions", "bash"]).output().unwrap();
    let bash = String::from_utf8_lossy(&bash.stdout);
    assert!(bash.contains("netpath") && bash.contains("endpoint") && bash.contains("--pod-cidr"), "{bash}");
    let man = Command::new(&bin).arg("man").output().unwrap();
    let man = String::from_utf8_lossy(&man.stdout);
    assert!(man.starts_with(".ie") || man.contains(".TH netpath"), "{man}");
}

#[test]
fn doctor_sees_clsact_attachments_too() {
    let mut lab = Lab::new(1);
    lab.start_agent_with(&["--tc-attach", "clsact"]);
    lab.add_endpoint("a", 0);
    let (healthy, failed, v) = doctor(&lab);
    assert!(healthy, "{failed:?} {v}");
    lab.stop_agent();
    lab.detach_programs();
    let (_, failed, v) = doctor(&lab);
    for want in ["endpoint a", "uplink"] {
        assert!(failed.iter().any(|f| f == want), "{want} not reported: {v}");
    }
}
