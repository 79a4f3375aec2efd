//! Pods on different nodes reach each other over IPv6 (`--cluster-cidr6`) through the
//! cluster's datapath, as over IPv4 (`cross_node`): the VXLAN overlay (outer IPv4,
//! inner IPv6) and native routing (the other node's IPv6 subnet via its IPv6 underlay
//! address) in BPF, with the pods' own addresses, past the nodes' stacks and their
//! ip6tables. Each node's IPv6 subnet comes from the store and survives a restart. Two
//! nodes per case: an agent start is what a cluster test costs.
use std::{
    net::{Ipv6Addr, SocketAddr, SocketAddrV6},
    time::{Duration, Instant},
};

use netpath_tests::{
    cluster::{
        agent_args6, node, nodes, start_nodes6, underlay6, wait_for_routes, wait_for_routes6, Underlay,
        CLUSTER6,
    },
    tcp_echo_once, Lab, Netns,
};

#[test]
fn pods_on_different_nodes_reach_each_other_over_ipv6_through_the_overlay_with_their_own_addresses() {
    let u = Underlay::new();
    let (mut labs, ips) = cluster6(&u, "vxlan");
    pods_reach_each_other_over_ipv6(&labs, &ips);
    a_port_published_on_ipv6_is_reached_from_the_other_node(&labs, &ips);
    a_pod_learns_the_ipv6_path_mtu_to_another_node(&labs, ips[1], 1450);
    a_restarted_node_keeps_its_ipv6_subnet(&u, &mut labs, &ips, "vxlan");
}

#[test]
fn pods_on_different_nodes_reach_each_other_over_ipv6_by_native_routing_with_their_own_addresses() {
    let u = Underlay::new();
    let (labs, ips) = cluster6(&u, "none");
    pods_reach_each_other_over_ipv6(&labs, &ips);
    a_port_published_on_ipv6_is_reached_from_the_other_node(&labs, &ips);
    a_pod_learns_the_ipv6_path_mtu_to_another_node(&labs, ips[1], 1400);
    // The route the agent installed for the other node's IPv6 subnet: via its IPv6
    // underlay address, marked as netpath's.
    let subnet1 = node(&nodes(&labs[0]), "n1")["pod_cidr6"].as_str().unwrap().to_string();
    let route = out(&labs[0].node, &["ip", "-6", "route", "show", &subnet1]);
    assert!(route.contains("via fd99::11") && route.contains("proto 78"), "{route}");
    doctor_and_metrics_see_the_ipv6_routes(&labs[0], &subnet1);
}

/// doctor checks the IPv6 routes to the other nodes next to the IPv4 ones, and the
/// metrics count them; a route missing from the datapath is named.
fn doctor_and_metrics_see_the_ipv6_routes(lab: &Lab, subnet: &str) {
    let doctor = lab.netpath_in_node(&["doctor"]);
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(doctor.status.success(), "{text}");
    assert!(
        text.lines().any(|l| l.contains("node routes (IPv6)") && l.contains("1 to the other nodes")),
        "{text}"
    );
    let metrics = lab.metrics().unwrap_or_default();
    assert_eq!(netpath_tests::metric_value(&metrics, "netpath_node_routes6 "), Some(1), "{metrics}");

    // The entry gone from NODE_ROUTES6 (a datapath that lost it): doctor names the node.
    let net: Ipv6Addr = subnet.split_once('/').unwrap().0.parse().unwrap();
    let pin = lab.bpffs_dir.join("NODE_ROUTES6");
    let key: Vec<String> = net.octets().iter().map(|b| b.to_string()).collect();
    let mut args = vec!["bpftool", "map", "delete", "pinned", pin.to_str().unwrap(), "key"];
    args.extend(key.iter().map(String::as_str));
    netpath_tests::sh(&args);
    let doctor = lab.netpath_in_node(&["doctor"]);
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(!doctor.status.success(), "{text}");
    assert!(
        text.lines().any(|l| l.contains("node routes (IPv6)") && l.contains("no route to node n1")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.contains("node routes") && !l.contains("IPv6") && l.contains("1 to")),
        "{text}"
    );
}

/// Two dual-stack nodes with `--tunnel tunnel`, one pod each ("pod", container 0), and
/// on node 0 a second one ("big", container 1) whose MTU, 1500, is more than the path to
/// node 1 carries: the VXLAN overhead, or in native routing node 0's uplink, lowered to
/// 1400 before its agent starts. Every node has learned the other's subnets. The nodes
/// and the "pod"s' IPv6 addresses.
fn cluster6(u: &Underlay, tunnel: &str) -> (Vec<Lab>, Vec<Ipv6Addr>) {
    let mut labs: Vec<Lab> = (0..2).map(|i| u.node(i, if i == 0 { 2 } else { 1 })).collect();
    if tunnel == "none" {
        labs[0].node.exec(&["ip", "link", "set", "uplink0", "mtu", "1400"]);
    }
    start_nodes6(u, &mut labs, tunnel);
    for lab in &labs {
        lab.add_endpoint("pod", 0);
    }
    let big = labs[0].containers[1].path();
    labs[0].netpath_ok(&["endpoint", "add", "big", "--netns", big.to_str().unwrap(), "--mtu", "1500"]);
    let ips: Vec<Ipv6Addr> = labs.iter().map(|lab| lab.endpoint_ip6("pod")).collect();
    for lab in &labs {
        wait_for_routes(lab, 1);
        wait_for_routes6(lab, 1);
    }
    // Each node has a /64 of its own from the cluster's IPv6 CIDR, and its pod's address
    // is in it.
    let list = nodes(&labs[0]);
    let subnets: Vec<String> =
        (0..2).map(|i| node(&list, &format!("n{i}"))["pod_cidr6"].as_str().unwrap().to_string()).collect();
    assert_ne!(subnets[0], subnets[1], "two nodes share an IPv6 subnet: {list:?}");
    for (subnet, ip) in subnets.iter().zip(&ips) {
        let (net, len) = subnet.split_once('/').unwrap();
        assert_eq!(len, "64", "{list:?}");
        assert!(net.starts_with("fd00:244:"), "{subnet} outside {CLUSTER6}");
        let net: Ipv6Addr = net.parse().unwrap();
        assert_eq!(net.segments()[..4], ip.segments()[..4], "{ip} outside {subnet}");
    }
    (labs, ips)
}

/// ping6 both ways, then TCP from node 0's pod to node 1's: the server sees the pod's
/// own IPv6 address, and neither node's stack forwarded a packet (their ip6tables
/// FORWARD policy is DROP).
fn pods_reach_each_other_over_ipv6(labs: &[Lab], ips: &[Ipv6Addr]) {
    let forwarded: Vec<u64> = labs.iter().map(|l| l.node.snmp6("Ip6OutForwDatagrams")).collect();
    for (i, lab) in labs.iter().enumerate() {
        let to = ips[1 - i];
        assert!(ping6(&lab.containers[0], to), "node {i}'s pod cannot ping6 {to}\n{}", lab.agent_log());
    }
    let bind = SocketAddrV6::new(ips[1], 7000, 0, 0);
    let peer = tcp_echo_once(&labs[1].containers[0], bind, &labs[0].containers[0], bind.into(), 64 * 1024);
    assert_eq!(peer.ip(), std::net::IpAddr::V6(ips[0]), "the server saw a translated source");
    for (lab, before) in labs.iter().zip(forwarded) {
        assert_eq!(lab.node.snmp6("Ip6OutForwDatagrams"), before, "a node's stack forwarded pod traffic");
    }
    assert!(labs[0].stats().reason("to-other-node") > 0, "{:?}", labs[0].stats().0);
}

/// A port published on node 1 reached over IPv6 by node 0's pod through node 1's IPv6
/// underlay address: the node's address is no pod address, so the pod leaves its node
/// masqueraded (NAT66) and comes in through node 1's published port (DNAT66).
fn a_port_published_on_ipv6_is_reached_from_the_other_node(labs: &[Lab], ips: &[Ipv6Addr]) {
    labs[1].netpath_ok(&["port", "add", "8080", "pod:80"]);
    let bind = SocketAddrV6::new(ips[1], 80, 0, 0);
    let node1 = SocketAddr::new(underlay6(1).into(), 8080);
    let peer = tcp_echo_once(&labs[1].containers[0], bind, &labs[0].containers[0], node1, 5);
    assert_eq!(peer.ip(), std::net::IpAddr::V6(underlay6(0)), "node 0 masqueraded its pod");
    assert!(labs[1].stats().reason("dnat-new-flow") > 0, "{:?}", labs[1].stats().0);
    labs[1].netpath_ok(&["port", "del", "8080"]);
}

/// Node 0's "big" pod sends IPv6 datagrams of 1500 bytes, more than the path to node 1
/// carries (`path`): no router on the way fragments IPv6, so the datapath answers
/// "packet too big" as the pod's gateway, and the socket learns the path MTU; a datagram
/// that fits it arrives whole. The pod is deleted after.
fn a_pod_learns_the_ipv6_path_mtu_to_another_node(labs: &[Lab], to: Ipv6Addr, path: u32) {
    let sock = labs[1].containers[0].bind_udp(SocketAddrV6::new(to, 7003, 0, 0));
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let learned = labs[0].containers[1]
        .run(move || {
            let s = std::net::UdpSocket::bind("[::]:0").unwrap();
            s.connect((to, 7003)).unwrap();
            sockopt(&s, libc::IPV6_MTU_DISCOVER, Some(libc::IPV6_PMTUDISC_DO));
            // 1500 bytes of IPv6: fits the pod's link, not the path.
            let big = [7u8; 1500 - 48];
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut mtu = sockopt(&s, libc::IPV6_MTU, None);
            while mtu == 1500 && Instant::now() < deadline {
                let _ = s.send(&big);
                std::thread::sleep(Duration::from_millis(100));
                mtu = sockopt(&s, libc::IPV6_MTU, None);
            }
            let refused = s.send(&big).map_err(|e| e.raw_os_error());
            let _ = s.take_error();
            let fits = vec![9u8; mtu as usize - 48];
            s.send(&fits).unwrap();
            (mtu, refused)
        })
        .join()
        .unwrap();
    assert_eq!(learned.0, path, "the socket never learned the path MTU\n{}", labs[0].agent_log());
    assert_eq!(learned.1, Err(Some(libc::EMSGSIZE)), "a too-big datagram was still sent");
    let mut buf = [0u8; 2048];
    let n = loop {
        let n = sock.recv(&mut buf).expect("the datagram that fits never arrived");
        if buf[0] == 9 {
            break n;
        }
    };
    assert_eq!(n, path as usize - 48);
    assert!(labs[0].stats().reason("drop-packet-too-big") > 0, "{:?}", labs[0].stats().0);
    // Its MTU is more than the uplink's in native routing, which doctor (later) names.
    labs[0].netpath_ok(&["endpoint", "del", "big"]);
}

/// Sets an IPPROTO_IPV6 socket option to `set`, or reads it (`None`).
fn sockopt(s: &std::net::UdpSocket, name: libc::c_int, set: Option<libc::c_int>) -> u32 {
    use std::os::fd::AsRawFd as _;
    let mut v: libc::c_int = set.unwrap_or(0);
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let p = (&mut v as *mut libc::c_int).cast();
    // SAFETY: a valid socket and option buffer of the size given.
    let rc = unsafe {
        match set {
            Some(_) => libc::setsockopt(s.as_raw_fd(), libc::IPPROTO_IPV6, name, p, len),
            None => libc::getsockopt(s.as_raw_fd(), libc::IPPROTO_IPV6, name, p, &mut len),
        }
    };
    assert_eq!(rc, 0, "IPPROTO_IPV6 option {name}: {}", std::io::Error::last_os_error());
    v as u32
}

/// A killed and restarted agent gets its IPv6 subnet back from the store, by name, and
/// its pod is reachable again over IPv6.
fn a_restarted_node_keeps_its_ipv6_subnet(u: &Underlay, labs: &mut [Lab], ips: &[Ipv6Addr], tunnel: &str) {
    let before = node(&nodes(&labs[0]), "n1")["pod_cidr6"].clone();
    labs[1].kill_agent();
    let args = agent_args6(u, "n1", tunnel);
    labs[1].start_agent_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(node(&nodes(&labs[1]), "n1")["pod_cidr6"], before);
    assert_eq!(labs[1].endpoint_ip6("pod"), ips[1]);
    assert!(ping6(&labs[0].containers[0], ips[1]), "after the restart\n{}", labs[1].agent_log());
}

fn ping6(ns: &Netns, dst: Ipv6Addr) -> bool {
    let dst = dst.to_string();
    ns.exec(&["ping", "-6", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", &dst]).status.success()
}

fn out(ns: &Netns, args: &[&str]) -> String {
    String::from_utf8_lossy(&ns.exec(args).stdout).into_owned()
}
