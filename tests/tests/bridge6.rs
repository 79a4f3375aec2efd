//! Bridge mode with IPv6 (`--mode bridge --pod-cidr6`), docker0's dual stack: the
//! bridge holds the IPv6 pod CIDR's first address and is the containers' IPv6 gateway;
//! each container has its address with the pod prefix's length. Unicast between
//! containers is short-cut past the bridge, unchanged; IPv6 to the outside is
//! masqueraded (NAT66) by the datapath, never forwarded by the node's stack; ports
//! published on IPv6 reach bridged containers.
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use netpath_tests::{tcp_echo_peers, tcp_echo_to, Lab, Netns};
use serde_json::Value;

const POD_CIDR6: &str = "fd00:77::/64";
const BRIDGE: &str = "npbr0";
const AGENT: [&str; 4] = ["--mode", "bridge", "--pod-cidr6", POD_CIDR6];
/// The node's and the outside host's IPv6 addresses on the uplink.
const NODE_UPLINK_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 1);
const OUTSIDE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 2);

fn ping6(ns: &Netns, dst: Ipv6Addr) -> bool {
    let dst = dst.to_string();
    ns.exec(&["ping", "-6", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", &dst]).status.success()
}

fn out(ns: &Netns, args: &[&str]) -> String {
    String::from_utf8_lossy(&ns.exec(args).stdout).into_owned()
}

/// A bridge-mode dual-stack lab whose uplink has IPv6 too and whose node forwards no
/// IPv6 itself (ip6tables FORWARD DROP, an empty nat table), with `names` attached.
fn lab(names: &[&str]) -> Lab {
    let mut lab = Lab::new(names.len());
    let cmds: [(&Netns, &[&str]); 4] = [
        (&lab.node, &["ip", "-6", "addr", "add", "fd00:99::1/64", "dev", "uplink0", "nodad"]),
        (&lab.outside, &["ip", "-6", "addr", "add", "fd00:99::2/64", "dev", "eth0", "nodad"]),
        (&lab.node, &["ip6tables", "-P", "FORWARD", "DROP"]),
        (&lab.node, &["ip6tables", "-t", "nat", "-F"]),
    ];
    for (ns, cmd) in cmds {
        let o = ns.exec(cmd);
        assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    lab.start_agent_with(&AGENT);
    for (i, name) in names.iter().enumerate() {
        lab.add_endpoint(name, i);
    }
    lab
}

fn endpoints6(lab: &Lab) -> Vec<String> {
    let six: Value =
        serde_json::from_str(&lab.netpath_ok(&["map", "dump", "ENDPOINTS6", "-o", "json"])).unwrap();
    six["entries"].as_array().unwrap().iter().map(|e| e["ip"].as_str().unwrap().to_string()).collect()
}

#[test]
fn bridged_containers_talk_ipv6_with_the_bridge_as_gateway_and_unicast_short_cut() {
    let lab = lab(&["a", "b"]);
    let (a6, b6) = (lab.endpoint_ip6("a"), lab.endpoint_ip6("b"));
    assert_eq!((a6.to_string().as_str(), b6.to_string().as_str()), ("fd00:77::2", "fd00:77::3"));
    // docker0's layout: the bridge has the prefix's first address next to its IPv4
    // one; a container its address with the prefix's length, usable at once, and its
    // default route via the bridge's address.
    let bridge = out(&lab.node, &["ip", "-o", "addr", "show", "dev", BRIDGE]);
    assert!(bridge.contains("10.77.0.1/24") && bridge.contains("fd00:77::1/64"), "{bridge}");
    let a = &lab.containers[0];
    let addrs = out(a, &["ip", "-6", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("fd00:77::2/64"), "{addrs}");
    assert!(addrs.contains("fe80::858:aff:fe4d:2/64") && !addrs.contains("tentative"), "{addrs}");
    let routes = out(a, &["ip", "-6", "route", "show", "default"]);
    assert!(routes.contains("via fd00:77::1 dev eth0"), "{routes}");
    // No node route per container: the bridge's prefix route reaches them.
    assert!(out(&lab.node, &["ip", "-6", "route", "show", "fd00:77::2"]).trim().is_empty());

    let before = lab.stats();
    let forwarded = lab.node.snmp6("Ip6OutForwDatagrams");
    if !ping6(a, b6) {
        // What each hop saw, for a kernel where this fails.
        let show = |ns: &Netns, cmd: &[&str]| format!("{cmd:?}: {}", out(ns, cmd));
        panic!(
            "a cannot ping6 b\n{}\n{}\n{}\nstats: {}",
            show(a, &["ip", "-6", "neigh"]),
            show(&lab.containers[1], &["ip", "-6", "neigh"]),
            show(&lab.containers[1], &["ip", "-s", "link", "show", "eth0"]),
            lab.stats().0,
        );
    }
    // L2 semantics: a resolved b's own MAC, as on docker0; the datapath short-cut the
    // echo requests and replies to it (and, unchanged, b's neighbour advertisement).
    let neigh = out(a, &["ip", "-6", "neigh", "show", &b6.to_string()]);
    assert!(neigh.contains("0a:58:0a:4d:00:03"), "{neigh}");
    let after = lab.stats();
    assert!(after.reason("forwarded-to-peer") - before.reason("forwarded-to-peer") >= 6, "{}", after.0);
    for name in ["a", "b"] {
        assert!(after.endpoint(name, "rx_packets") - before.endpoint(name, "rx_packets") >= 3, "{name} rx");
    }

    // TCP: b sees a's own address.
    let server = tcp_echo_peers(&lab.containers[1], SocketAddr::new(IpAddr::V6(b6), 7000), 1);
    tcp_echo_to(a, SocketAddr::new(IpAddr::V6(b6), 7000))
        .unwrap_or_else(|e| panic!("TCP a to b over IPv6: {e}\n{}", lab.agent_log()));
    assert_eq!(server.join().unwrap()[0].ip(), IpAddr::V6(a6));
    // The gateway answers, and the node's stack forwarded nothing between them.
    assert!(ping6(a, "fd00:77::1".parse().unwrap()), "the bridge's IPv6 address is unreachable");
    assert_eq!(lab.node.snmp6("Ip6OutForwDatagrams"), forwarded);
}

#[test]
fn bridged_ipv6_to_the_outside_is_masqueraded_by_the_datapath() {
    let lab = lab(&["a"]);
    let forwarded = lab.node.snmp6("Ip6OutForwDatagrams");
    let before = lab.stats();
    let server = tcp_echo_peers(&lab.outside, SocketAddr::new(IpAddr::V6(OUTSIDE_IP6), 9000), 1);
    tcp_echo_to(&lab.containers[0], SocketAddr::new(IpAddr::V6(OUTSIDE_IP6), 9000))
        .unwrap_or_else(|e| panic!("TCP to the outside over IPv6: {e}\n{}", lab.agent_log()));
    let peer = server.join().unwrap()[0];
    assert_eq!(peer.ip(), IpAddr::V6(NODE_UPLINK_IP6), "the outside saw a pod address");
    assert!(ping6(&lab.containers[0], OUTSIDE_IP6), "ping6 to the outside\n{}", lab.agent_log());
    // The datapath did it: the node's stack forwarded nothing (its policy is DROP, its
    // nat table empty).
    assert_eq!(lab.node.snmp6("Ip6OutForwDatagrams"), forwarded);
    assert!(lab.stats().reason("snat-new-flow") - before.reason("snat-new-flow") >= 2);
    let a6 = lab.endpoint_ip6("a").to_string();
    let ct = lab.netpath_ok(&["ct", "list", "--host", &OUTSIDE_IP6.to_string(), "-o", "json"]);
    assert!(ct.contains(&a6) && ct.contains(&NODE_UPLINK_IP6.to_string()), "{ct}");
}

#[test]
fn a_port_published_on_ipv6_reaches_a_bridged_container_from_outside_and_from_a_neighbour() {
    let lab = lab(&["a", "b"]);
    let server = tcp_echo_peers(&lab.containers[1], SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 9000), 3);
    lab.netpath_ok(&["port", "add", "8080", "b:9000"]);
    let forwarded = lab.node.snmp6("Ip6OutForwDatagrams");
    let node6 = SocketAddr::new(IpAddr::V6(NODE_UPLINK_IP6), 8080);
    tcp_echo_to(&lab.outside, node6)
        .unwrap_or_else(|e| panic!("[node]:8080 from the outside: {e}\n{}", lab.agent_log()));
    // A neighbour on the bridge through the node's address (hairpin), twice: the
    // second connection's port may reuse the first's tuple in TIME_WAIT.
    for i in 0..2 {
        if let Err(e) = tcp_echo_to(&lab.containers[0], node6) {
            let show = |ns: &Netns, cmd: &[&str]| format!("{cmd:?}: {}", out(ns, cmd));
            panic!(
                "a to [node]:8080 (hairpin), connection {i}: {e}\n{}\n{}\nstats: {}\nct: {}",
                show(&lab.containers[0], &["ip", "-6", "neigh"]),
                show(&lab.containers[1], &["ip", "-6", "neigh"]),
                lab.stats().0,
                lab.netpath_ok(&["ct", "list", "-o", "json"]),
            );
        }
    }
    let peers = server.join().unwrap();
    assert_eq!(peers[0].ip(), IpAddr::V6(OUTSIDE_IP6), "the client's address kept: {peers:?}");
    assert!(peers[1..].iter().all(|p| p.ip() == IpAddr::V6(lab.endpoint_ip6("a"))), "{peers:?}");
    assert_eq!(lab.node.snmp6("Ip6OutForwDatagrams"), forwarded);
    // b still reaches a directly.
    assert!(ping6(&lab.containers[1], lab.endpoint_ip6("a")));
}

#[test]
fn bridged_ipv6_survives_a_restart_is_held_by_reconcile_and_del_leaves_nothing() {
    let mut lab = lab(&["a", "b"]);
    let (a6, b6) = (lab.endpoint_ip6("a"), lab.endpoint_ip6("b"));
    lab.stop_agent();
    lab.start_agent_with(&AGENT);
    assert!(ping6(&lab.containers[0], b6), "after the restart\n{}", lab.agent_log());
    let dry = lab.netpath(&["reconcile", "--dry-run"]);
    assert!(dry.status.success(), "drift after a restart: {}", String::from_utf8_lossy(&dry.stdout));

    // a's address gone: doctor and reconcile know it by its /64.
    let a = &lab.containers[0];
    assert!(a.exec(&["ip", "-6", "addr", "del", &format!("{a6}/64"), "dev", "eth0"]).status.success());
    let doctor = lab.netpath_in_node(&["doctor"]);
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(!doctor.status.success() && report.contains(&format!("address {a6}/64")), "{report}");
    lab.netpath_ok(&["reconcile"]);
    let routes = out(a, &["ip", "-6", "route", "show", "default"]);
    assert!(routes.contains("via fd00:77::1 dev eth0"), "{routes}");
    assert!(ping6(a, b6), "after reconcile\n{}", lab.agent_log());
    let again = lab.netpath(&["reconcile", "--dry-run"]);
    assert!(again.status.success(), "drift left: {}", String::from_utf8_lossy(&again.stdout));

    // `endpoint del` leaves nothing of b: its entries, its bridge port, its interface.
    lab.netpath_ok(&["endpoint", "del", "b"]);
    let left = endpoints6(&lab);
    assert_eq!(left.len(), 2, "a's address and link-local address only: {left:?}");
    assert!(left.contains(&a6.to_string()) && !left.contains(&b6.to_string()), "{left:?}");
    let ports = out(&lab.node, &["ip", "-o", "link", "show", "master", BRIDGE]);
    assert_eq!(ports.lines().count(), 1, "{ports}");
    assert!(!lab.containers[1].exec(&["ip", "link", "show", "eth0"]).status.success(), "eth0 left in b");
    // The bridge keeps its addresses for a, which still reaches the outside.
    let bridge = out(&lab.node, &["ip", "-o", "addr", "show", "dev", BRIDGE]);
    assert!(bridge.contains("fd00:77::1/64"), "{bridge}");
    assert!(ping6(a, OUTSIDE_IP6), "a to the outside after b went\n{}", lab.agent_log());
}
