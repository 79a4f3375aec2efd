//! The endpoint lifecycle as a container sees it: the seed's manual steps, done by the
//! agent through rtnetlink, atomically and idempotently.
use netpath_tests::Lab;

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn container_gets_eth0_address_and_default_route() {
    let mut lab = Lab::new(1);
    lab.start_agent();
    let ip = lab.add_endpoint("web", 0);
    let c = &lab.containers[0];
    let addrs = out(&c.exec(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"]));
    assert!(addrs.contains(&format!("{ip}/32")), "{addrs}");
    let routes = out(&c.exec(&["ip", "route"]));
    assert!(routes.contains("default via 10.77.0.1 dev eth0"), "{routes}");
    let lo = out(&c.exec(&["ip", "-o", "link", "show", "lo"]));
    assert!(lo.contains("UP"), "{lo}");
    // The gateway answers ARP without any bridge on the node.
    assert!(!lab.node_links().iter().any(|l| l.contains("br") || l == "docker0"));
    assert!(c.ping("10.77.0.1".parse().unwrap(), 2), "gateway unreachable");
    let neigh = out(&c.exec(&["ip", "neigh", "show", "10.77.0.1"]));
    assert!(neigh.contains("lladdr"), "gateway not resolved: {neigh}");
    // MTU follows the uplink's by default.
    let eth0 = out(&c.exec(&["ip", "-o", "link", "show", "eth0"]));
    assert!(eth0.contains("mtu 1500"), "{eth0}");
}

#[test]
fn endpoint_can_be_named_by_a_process_id() {
    let mut lab = Lab::new(1);
    lab.start_agent();
    let mut sleeper = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.containers[0].name, "sleep", "60"])
        .spawn()
        .unwrap();
    // Wait until the process has entered the namespace.
    let target = std::fs::read_link(lab.containers[0].path()).ok();
    let ns_ino =
        std::fs::metadata(lab.containers[0].path()).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap();
    let pid = sleeper.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let ino =
            std::fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        if ino.ok() == Some(ns_ino) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "sleep never entered the namespace ({target:?})");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    lab.netpath_ok(&["endpoint", "add", "bypid", "--pid", &pid.to_string(), "--ip", "10.77.0.50"]);
    let addrs = out(&lab.containers[0].exec(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"]));
    assert!(addrs.contains("10.77.0.50/32"), "{addrs}");
    lab.netpath_ok(&["endpoint", "del", "bypid"]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let o = lab.netpath(&["endpoint", "add", "gone", "--pid", &pid.to_string()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("/proc/{pid}/ns/net")));
}

#[test]
fn fifty_endpoints_come_and_go_without_leaks() {
    // Twelve in the emulated guests: each add and delete is the same netlink work, at
    // two seconds apiece there.
    let n = netpath_tests::rounds(50, 12);
    let mut lab = Lab::new(n);
    lab.start_agent();
    let links = lab.node_links();
    let mut ips = Vec::new();
    for i in 0..n {
        ips.push(lab.add_endpoint(&format!("ep{i}"), i));
    }
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), n, "addresses handed out twice");
    assert_eq!(lab.node_links().len(), links.len() + n);
    assert!(lab.containers[0].ping(ips[n - 1], 1), "first cannot reach last");
    for i in 0..n {
        lab.netpath_ok(&["endpoint", "del", &format!("ep{i}")]);
    }
    assert_eq!(lab.node_links(), links);
    let stats = lab.stats();
    assert!(stats.0["endpoints"].as_array().unwrap().is_empty(), "map entries left: {}", stats.0);
    let routes = out(&lab.node.exec(&["ip", "route"]));
    assert!(!routes.contains("10.77.0."), "routes left: {routes}");
    // Every address is free again: the lowest comes back first.
    assert_eq!(lab.add_endpoint("again", 0), "10.77.0.2".parse::<std::net::Ipv4Addr>().unwrap());
}

#[test]
fn allocations_survive_an_agent_restart() {
    let mut lab = Lab::new(4);
    lab.start_agent();
    let a = lab.add_endpoint("a", 0);
    let b = lab.add_endpoint("b", 1);
    lab.stop_agent();
    lab.start_agent();
    let c = lab.add_endpoint("c", 2);
    assert!(c != a && c != b, "restart handed out {c} again");
    lab.netpath_ok(&["endpoint", "del", "a"]);
    lab.stop_agent();
    lab.start_agent();
    assert_eq!(lab.add_endpoint("d", 3), a, "freed address not reused");
    assert!(lab.containers[1].ping(c, 1));
}

#[test]
fn pod_cidr_overlapping_the_node_is_refused() {
    let mut lab = Lab::new(0);
    // The seed's pitfall: the container subnet already belongs to an interface.
    lab.node.exec(&["ip", "addr", "add", "10.77.0.100/16", "dev", "uplink0"]);
    let err = lab.try_start_agent(&[]).expect_err("agent started on an overlapping CIDR");
    assert!(err.contains("pod CIDR 10.77.0.0/24 overlaps"), "{err}");
    assert!(err.contains("uplink0"), "{err}");
    // Nothing changed: the gateway address was not added.
    assert!(!out(&lab.node.exec(&["ip", "addr", "show", "lo"])).contains("10.77.0.1"));
    // Another CIDR is fine.
    lab.try_start_agent(&["--pod-cidr", "10.78.0.0/24"]).unwrap();
}

#[test]
fn exhausted_pool_is_refused_cleanly() {
    let mut lab = Lab::new(2);
    lab.start_agent_with(&["--pod-cidr", "10.79.0.0/30"]);
    lab.add_endpoint("only", 0);
    let links = lab.node_links();
    let o = lab.netpath(&["endpoint", "add", "more", "--netns", lab.containers[1].path().to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("10.79.0.0/30 has no free address"));
    assert_eq!(lab.node_links(), links);
}

#[test]
fn bridge_mode_builds_the_docker0_layout() {
    let mut lab = Lab::new(2);
    lab.start_agent_with(&["--mode", "bridge"]);
    let a = lab.add_endpoint("a", 0);
    let b = lab.add_endpoint("b", 1);
    let bridge = out(&lab.node.exec(&["ip", "-4", "-o", "addr", "show", "dev", "npbr0"]));
    assert!(bridge.contains("10.77.0.1/24"), "{bridge}");
    let ports = out(&lab.node.exec(&["ip", "-o", "link", "show", "master", "npbr0"]));
    assert_eq!(ports.lines().count(), 2, "{ports}");
    let addrs = out(&lab.containers[0].exec(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"]));
    assert!(addrs.contains(&format!("{a}/24")), "{addrs}");
    let before = lab.stats();
    if !lab.containers[0].ping(b, 3) {
        // What each hop saw, for a kernel where this fails.
        let show = |ns: &netpath_tests::Netns, cmd: &[&str]| format!("{cmd:?}: {}", out(&ns.exec(cmd)));
        let show_with_sysfs =
            |ns: &netpath_tests::Netns, cmd: &[&str]| format!("{cmd:?}: {}", out(&ns.exec_with_sysfs(cmd)));
        panic!(
            "a cannot reach b over the bridge\n{}\n{}\n{}\n{}\n{}\nstats: {:?}",
            show(&lab.containers[0], &["ip", "neigh"]),
            show(&lab.containers[1], &["ip", "-s", "link", "show", "eth0"]),
            show(&lab.node, &["ip", "-s", "-d", "link", "show", "master", "npbr0"]),
            show(&lab.node, &["tc", "-s", "filter", "show", "dev", "npbr0", "ingress"]),
            show_with_sysfs(&lab.node, &["sh", "-c", "grep . /sys/class/net/npbr0/brif/*/state /sys/class/net/npbr0/bridge/stp_state /proc/sys/net/bridge/* 2>&1"]),
            lab.stats().0,
        );
    }
    // L2 semantics: a resolved b's own MAC, as on docker0.
    let neigh = out(&lab.containers[0].exec(&["ip", "neigh", "show", &b.to_string()]));
    assert!(neigh.contains("0a:58:0a:4d:00:03"), "{neigh}");
    // ...and the datapath still short-cut the unicast frames past the bridge.
    let after = lab.stats();
    assert!(after.reason("forwarded-to-peer") - before.reason("forwarded-to-peer") >= 6);
    assert!(lab.containers[0].ping("10.77.0.1".parse().unwrap(), 1), "bridge gateway unreachable");
    lab.netpath_ok(&["endpoint", "del", "a"]);
    let ports = out(&lab.node.exec(&["ip", "-o", "link", "show", "master", "npbr0"]));
    assert_eq!(ports.lines().count(), 1, "{ports}");
    // Restarting in the other mode would mix layouts: refused.
    lab.stop_agent();
    let err = lab.try_start_agent(&[]).expect_err("mode switch accepted");
    assert!(err.contains("attached in bridge mode"), "{err}");
}

#[test]
fn add_is_idempotent_and_del_removes_everything() {
    let mut lab = Lab::new(1);
    lab.start_agent();
    let links_before = lab.node_links();
    let ip = lab.add_endpoint("web", 0);
    let links_with = lab.node_links();
    assert_eq!(links_with.len(), links_before.len() + 1);
    let again = lab.add_endpoint("web", 0);
    assert_eq!(ip, again);
    assert_eq!(lab.node_links(), links_with, "second add changed the node");

    lab.netpath_ok(&["endpoint", "del", "web"]);
    assert_eq!(lab.node_links(), links_before);
    assert!(!lab.stats().has_endpoint("web"));
    let eth0 = lab.containers[0].exec(&["ip", "link", "show", "eth0"]);
    assert!(!eth0.status.success(), "eth0 left in the container");
    assert!(!lab.state().contains("\"web\""), "{}", lab.state());
    // Deleting what is not there succeeds.
    lab.netpath_ok(&["endpoint", "del", "web"]);
}

#[test]
fn failed_adds_leave_nothing_behind_and_name_the_bad_value() {
    let mut lab = Lab::new(2);
    lab.start_agent();
    let ip = lab.add_endpoint("web", 0);
    let links = lab.node_links();
    let state = lab.state();
    let c1 = lab.containers[1].path();
    let c1 = c1.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["endpoint", "add", "db", "--netns", "/run/netns/no-such-ns"], "/run/netns/no-such-ns"),
        (&["endpoint", "add", "db", "--netns", "/proc/version"], "/proc/version"),
        (&["endpoint", "add", "db", "--netns", c1, "--ip", &ip.to_string()], &ip.to_string()),
        (&["endpoint", "add", "db", "--netns", c1, "--ip", "172.17.0.2"], "172.17.0.2"),
        (&["endpoint", "add", "db", "--netns", c1, "--mtu", "20"], "20"),
    ];
    for (args, value) in cases {
        let o = lab.netpath(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
        assert!(err.contains(value), "{args:?}: error does not name {value}: {err}");
        assert_eq!(lab.node_links(), links, "{args:?} left a link");
        assert_eq!(lab.state(), state, "{args:?} changed state");
    }
    // eth0 already taken inside the container: the veth creation is refused whole.
    assert!(lab.containers[1]
        .exec(&["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "x0"])
        .status
        .success());
    let o = lab.netpath(&["endpoint", "add", "db", "--netns", c1]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("eth0"));
    assert_eq!(lab.node_links(), links);
    assert!(!lab.stats().has_endpoint("db"));
}

#[test]
fn cli_without_agent_says_so() {
    let lab = Lab::new(1);
    let p = lab.containers[0].path();
    let o = lab.netpath(&["endpoint", "add", "web", "--netns", p.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no agent is listening"));
}

#[test]
fn agent_takes_settings_from_its_config_file_and_refuses_a_bad_one() {
    let mut lab = Lab::new(1);
    let bad = lab.work_dir.join("bad.toml");
    std::fs::write(&bad, "pod-cidr = \"10.78.0.0/24\"\nxdp = \"yes\"\n").unwrap();
    let err = lab.try_start_agent(&["--config", bad.to_str().unwrap()]).unwrap_err();
    assert!(err.contains("`xdp` must be true or false"), "{err}");
    assert_eq!(lab.agent_log().lines().count(), 1, "not one line: {}", lab.agent_log());
    assert!(!lab.bpffs_dir.exists(), "a refused config file left pins behind");
    let good = lab.work_dir.join("agent.toml");
    std::fs::write(&good, "pod-cidr = \"10.78.0.0/24\"\nmetrics = \"off\"\n").unwrap();
    lab.start_agent_with(&["--config", good.to_str().unwrap()]);
    assert_eq!(lab.add_endpoint("a", 0), "10.78.0.2".parse::<std::net::Ipv4Addr>().unwrap());
}

/// Bridge mode, IPv4: a published port reaches a bridged container from the outside and,
/// through the node's address (hairpin), from a neighbour on the bridge, twice (the
/// second connection may reuse the first's tuple in TIME_WAIT); the neighbour reaches
/// the outside masqueraded; the node's stack forwards nothing (FORWARD DROP, an empty
/// nat table).
#[test]
fn a_port_published_reaches_a_bridged_container_from_outside_and_from_a_neighbour() {
    use netpath_tests::{tcp_echo_peers, tcp_echo_to, NODE_UPLINK_IP, OUTSIDE_IP};
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    let mut lab = Lab::new(2);
    lab.node.exec(&["iptables", "-P", "FORWARD", "DROP"]);
    lab.node.exec(&["iptables", "-t", "nat", "-F"]);
    lab.start_agent_with(&["--mode", "bridge"]);
    let a = lab.add_endpoint("a", 0);
    lab.add_endpoint("b", 1);
    let server = tcp_echo_peers(&lab.containers[1], SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 9000), 3);
    lab.netpath_ok(&["port", "add", "8080", "b:9000"]);
    let forwarded = lab.node.snmp("Ip", "ForwDatagrams");
    let node = SocketAddr::new(IpAddr::V4(NODE_UPLINK_IP), 8080);
    tcp_echo_to(&lab.outside, node)
        .unwrap_or_else(|e| panic!("node:8080 from the outside: {e}\n{}", lab.agent_log()));
    for i in 0..2 {
        if let Err(e) = tcp_echo_to(&lab.containers[0], node) {
            panic!(
                "a to node:8080 (hairpin), connection {i}: {e}\n{}\nstats: {}\nct: {}",
                out(&lab.containers[0].exec(&["ip", "neigh"])),
                lab.stats().0,
                lab.netpath_ok(&["ct", "list", "-o", "json"]),
            );
        }
    }
    let peers = server.join().unwrap();
    assert_eq!(peers[0].ip(), IpAddr::V4(OUTSIDE_IP), "the client's address kept: {peers:?}");
    assert!(peers[1..].iter().all(|p| p.ip() == IpAddr::V4(a)), "{peers:?}");
    // And to the outside, masqueraded by the datapath.
    let outside = tcp_echo_peers(&lab.outside, SocketAddr::new(IpAddr::V4(OUTSIDE_IP), 9001), 1);
    tcp_echo_to(&lab.containers[0], SocketAddr::new(IpAddr::V4(OUTSIDE_IP), 9001))
        .unwrap_or_else(|e| panic!("a to the outside: {e}\n{}", lab.agent_log()));
    assert_eq!(outside.join().unwrap()[0].ip(), IpAddr::V4(NODE_UPLINK_IP), "the outside saw a pod address");
    assert_eq!(lab.node.snmp("Ip", "ForwDatagrams"), forwarded, "the node's stack forwarded");
}
