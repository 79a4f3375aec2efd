//! Cluster mode's control plane against a real etcd: nodes register, get distinct
//! subnets (also when they race), keep them across restarts, show up as not ready when
//! their agent stops, are forgotten by `netpath node del`, and ride out the store going
//! down; and pods on different nodes reach each other through the VXLAN overlay in the
//! datapath, with their own addresses, past the nodes' stacks.
use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use netpath_tests::{cluster::Underlay, Lab};
use serde_json::Value;

const CLUSTER: &str = "10.244.0.0/16";

fn agent_args(u: &Underlay, name: &str) -> Vec<String> {
    ["--store", &u.store(), "--node-name", name, "--cluster-cidr", CLUSTER, "--node-lease", "2"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn start(lab: &mut Lab, u: &Underlay, name: &str) {
    let args = agent_args(u, name);
    lab.start_agent_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// `netpath node list -o json` through `lab`'s agent: name -> node.
fn nodes(lab: &Lab) -> Vec<Value> {
    let out: Value = serde_json::from_str(&lab.netpath_ok(&["node", "list", "-o", "json"])).unwrap();
    out["nodes"].as_array().unwrap().clone()
}

fn node<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter().find(|n| n["name"] == name).unwrap_or_else(|| panic!("no node {name} in {list:?}"))
}

/// Waits (30 s at most, only a red run waits that long) for `check` on the node list.
fn wait_for(lab: &Lab, what: &str, check: impl Fn(&[Value]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = nodes(lab);
        if check(&list) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {list:?}\n{}", lab.agent_log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn nodes_get_distinct_subnets_from_the_cluster_and_keep_them_across_restarts() {
    let u = Underlay::new();
    let mut labs: Vec<Lab> = (0..3).map(|i| u.node(i, 1)).collect();
    for (i, lab) in labs.iter_mut().enumerate() {
        start(lab, &u, &format!("n{i}"));
    }
    let list = nodes(&labs[0]);
    assert_eq!(list.len(), 3, "{list:?}");
    let cluster: ipnet_lite::Net = CLUSTER.parse().unwrap();
    let mut subnets = HashSet::new();
    for (i, n) in list.iter().enumerate() {
        assert_eq!(n["name"], format!("n{i}"));
        assert_eq!(n["address"], format!("10.99.0.{}", 10 + i), "{n}");
        assert_eq!(n["ready"], true, "{n}");
        assert_eq!(n["tunnel"], "vxlan", "{n}");
        let subnet: ipnet_lite::Net = n["pod_cidr"].as_str().unwrap().parse().unwrap();
        assert!(subnet.len == 24 && cluster.contains(subnet.addr), "{n}");
        assert!(subnets.insert(subnet.addr), "two nodes share {subnet:?}: {list:?}");
    }
    // Every agent sees the same cluster.
    assert_eq!(nodes(&labs[2]), list);
    // The node's containers get addresses from the node's subnet.
    let n1: ipnet_lite::Net = node(&list, "n1")["pod_cidr"].as_str().unwrap().parse().unwrap();
    let ip = labs[1].add_endpoint("web", 0);
    assert!(n1.contains(ip), "{ip} outside {n1:?}");

    // A crash and a restart: the same subnet, the endpoint still in it, ready again.
    labs[1].kill_agent();
    start(&mut labs[1], &u, "n1");
    let after = nodes(&labs[1]);
    assert_eq!(node(&after, "n1")["pod_cidr"], node(&list, "n1")["pod_cidr"]);
    assert_eq!(node(&after, "n1")["ready"], true);
    assert!(
        labs[1].containers[0].ping(n1.gateway(), 1),
        "the container lost its network\n{}",
        labs[1].agent_log()
    );
}

#[test]
fn ten_agents_started_at_once_get_ten_distinct_subnets() {
    let u = Underlay::new();
    let store = u.store();
    let labs: Vec<Lab> = (0..10).map(|i| u.node(i, 0)).collect();
    // Every agent races for the lowest free subnet at the same moment.
    let started: Vec<Lab> = std::thread::scope(|s| {
        let handles: Vec<_> = labs
            .into_iter()
            .enumerate()
            .map(|(i, mut lab)| {
                let store = store.clone();
                s.spawn(move || {
                    let name = format!("r{i}");
                    let args = [
                        "--store",
                        &store,
                        "--node-name",
                        &name,
                        "--cluster-cidr",
                        CLUSTER,
                        "--node-lease",
                        "5",
                    ];
                    lab.start_agent_with(&args);
                    lab
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let list = nodes(&started[0]);
    assert_eq!(list.len(), 10, "{list:?}");
    let subnets: HashSet<&str> = list.iter().map(|n| n["pod_cidr"].as_str().unwrap()).collect();
    assert_eq!(subnets.len(), 10, "subnets shared: {list:?}");
}

#[test]
fn a_second_agent_with_the_same_name_is_refused_naming_the_first() {
    let u = Underlay::new();
    let (mut a, mut b) = (u.node(0, 0), u.node(1, 0));
    start(&mut a, &u, "dup");
    let args = agent_args(&u, "dup");
    let err = b.try_start_agent(&args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap_err();
    assert!(err.contains("\"dup\" is taken") && err.contains("10.99.0.10"), "{err}");
    // The refused agent changed nothing: one node, the first one's address.
    let list = nodes(&a);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["address"], "10.99.0.10");
    assert!(b.node_links().iter().all(|l| l == "lo" || l == "uplink0"), "{:?}", b.node_links());
}

#[test]
fn a_stopped_node_goes_not_ready_keeps_its_subnet_and_node_del_frees_it() {
    let u = Underlay::new();
    let (mut a, mut b, mut c) = (u.node(0, 0), u.node(1, 0), u.node(2, 0));
    start(&mut a, &u, "a");
    start(&mut b, &u, "b");
    let b_subnet = node(&nodes(&a), "b")["pod_cidr"].clone();
    b.stop_agent();
    // Not ready once its lease (2 s) has run out; its record and subnet stay.
    wait_for(&a, "b not ready", |l| node(l, "b")["ready"] == false);
    assert_eq!(node(&nodes(&a), "b")["pod_cidr"], b_subnet);

    let refused = a.netpath(&["node", "del", "a"]);
    let msg = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && msg.contains("is ready") && msg.contains("10.99.0.10"), "{msg}");
    let unknown = a.netpath(&["node", "del", "nobody"]);
    assert!(
        !unknown.status.success() && String::from_utf8_lossy(&unknown.stderr).contains("no node \"nobody\"")
    );

    // doctor says so, naming the node and the way out.
    let doctor = a.netpath_in_node(&["doctor"]);
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(!doctor.status.success() && text.contains("not ready: b") && text.contains("node del"), "{text}");

    let out = a.netpath_ok(&["node", "del", "b"]);
    assert!(out.contains("deleted"), "{out}");
    let list = nodes(&a);
    assert!(list.iter().all(|n| n["name"] != "b"), "{list:?}");
    // The freed subnet is the lowest free one: the next node gets it.
    start(&mut c, &u, "c");
    assert_eq!(node(&nodes(&a), "c")["pod_cidr"], b_subnet);
}

#[test]
fn with_the_store_down_a_known_node_restarts_and_a_new_one_is_refused() {
    let mut u = Underlay::new();
    let (mut a, mut b) = (u.node(0, 1), u.node(1, 0));
    start(&mut a, &u, "a");
    let subnet = node(&nodes(&a), "a")["pod_cidr"].clone();
    let ip = a.add_endpoint("web", 0);

    let connected = |lab: &Lab| {
        netpath_tests::metric_value(&lab.metrics().unwrap_or_default(), "netpath_store_connected ")
    };
    assert_eq!(connected(&a), Some(1));
    u.kill_etcd();
    // The running agent notices, says so in its metrics and doctor, and goes on.
    let deadline = Instant::now() + Duration::from_secs(30);
    while connected(&a) != Some(0) {
        assert!(Instant::now() < deadline, "store_connected stayed 1\n{}", a.agent_log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let doctor = a.netpath_in_node(&["doctor"]);
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(!doctor.status.success() && text.contains("not in touch with etcd://10.99.0.1:2379"), "{text}");
    a.kill_agent();
    // The node starts from the subnet it had; its container keeps its network.
    start(&mut a, &u, "a");
    assert!(a.agent_log().contains("starting with the subnet this node had"), "{}", a.agent_log());
    let gw: ipnet_lite::Net = subnet.as_str().unwrap().parse().unwrap();
    assert!(a.containers[0].ping(gw.gateway(), 1), "{ip} lost its network\n{}", a.agent_log());
    // A node that never joined cannot start without the store, and says why in one line.
    let args = agent_args(&u, "b");
    let err = b.try_start_agent(&args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap_err();
    assert!(err.contains("cannot use the store at etcd://10.99.0.1:2379"), "{err}");

    // The store comes back: the node joins on its own, ready with the same subnet.
    u.start_etcd();
    wait_for(&a, "a ready again", |l| l.len() == 1 && l[0]["ready"] == true);
    assert_eq!(nodes(&a)[0]["pod_cidr"], subnet);
    assert_eq!(connected(&a), Some(1));
}

/// `n` nodes with `--tunnel tunnel`, one pod each: the nodes and the pods' addresses.
fn pods(u: &Underlay, n: usize, tunnel: &str) -> (Vec<Lab>, Vec<std::net::Ipv4Addr>) {
    let mut labs: Vec<Lab> = (0..n as u8).map(|i| u.node(i, 1)).collect();
    for (i, lab) in labs.iter_mut().enumerate() {
        let mut args = agent_args(u, &format!("n{i}"));
        args.extend(["--tunnel".to_string(), tunnel.to_string()]);
        lab.start_agent_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
        // Containers everywhere, the node's firewall closed: only the datapath forwards.
        lab.node.exec(&["iptables", "-P", "FORWARD", "DROP"]);
    }
    let ips = labs.iter().map(|lab| lab.add_endpoint("pod", 0)).collect();
    (labs, ips)
}

#[test]
fn pods_on_different_nodes_reach_each_other_through_the_overlay_with_their_own_addresses() {
    pods_reach_each_other("vxlan");
}

#[test]
fn pods_on_different_nodes_reach_each_other_by_native_routing_with_their_own_addresses() {
    pods_reach_each_other("none");
}

fn pods_reach_each_other(tunnel: &str) {
    let u = Underlay::new();
    let (labs, ips) = pods(&u, 3, tunnel);
    // Every node has learned every other node's subnet from the store.
    for lab in &labs {
        wait_for_routes(lab, 2);
    }
    let forwarded: Vec<u64> = labs.iter().map(|l| l.node.snmp("Ip", "ForwDatagrams")).collect();
    for (i, from) in labs.iter().enumerate() {
        for (j, &to) in ips.iter().enumerate() {
            if i != j {
                assert!(
                    from.containers[0].ping(to, 1),
                    "pod {i} cannot ping pod {j} ({to})\n{}",
                    from.agent_log()
                );
            }
        }
    }
    // TCP: 4 MiB each way between nodes 0 and 2, and the server sees the pod's own address.
    let (a, c) = (ips[0], ips[2]);
    let listener =
        labs[2].containers[0].run(move || std::net::TcpListener::bind((c, 7000))).join().unwrap().unwrap();
    let server = std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        let (mut s, peer) = listener.accept().unwrap();
        let mut buf = vec![0u8; 4 << 20];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        peer
    });
    let echoed = labs[0].containers[0]
        .run(move || {
            use std::io::{Read as _, Write as _};
            let mut s = std::net::TcpStream::connect((c, 7000)).unwrap();
            let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
            s.write_all(&data).unwrap();
            let mut back = vec![0u8; data.len()];
            s.read_exact(&mut back).unwrap();
            back == data
        })
        .join()
        .unwrap();
    assert!(echoed, "the transfer came back corrupted");
    assert_eq!(server.join().unwrap().ip(), std::net::IpAddr::V4(a), "the server saw a translated source");
    // UDP, answered to the pod's own address.
    let sock = labs[1].containers[0].bind_udp((ips[1], 7001));
    let answer = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        sock.send_to(&buf[..n], from).unwrap();
        from
    });
    let b = ips[1];
    let got = labs[0].containers[0]
        .run(move || {
            let s = std::net::UdpSocket::bind((a, 0)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.send_to(b"hello", (b, 7001)).unwrap();
            let mut buf = [0u8; 64];
            s.recv(&mut buf).map(|n| buf[..n].to_vec()).unwrap_or_default()
        })
        .join()
        .unwrap();
    assert_eq!(got, b"hello");
    assert_eq!(answer.join().unwrap().ip(), std::net::IpAddr::V4(a));
    // None of it went through a node's IP stack.
    for (lab, before) in labs.iter().zip(forwarded) {
        assert_eq!(lab.node.snmp("Ip", "ForwDatagrams"), before, "a node's stack forwarded pod traffic");
    }
    let stats = labs[0].stats();
    assert!(stats.reason("to-other-node") > 0, "{:?}", stats.0);
}

#[test]
fn a_deleted_node_loses_its_route_everywhere_and_a_new_one_gains_it() {
    let u = Underlay::new();
    let (mut labs, ips) = pods(&u, 2, "vxlan");
    wait_for_routes(&labs[0], 1);
    assert!(labs[0].containers[0].ping(ips[1], 1));
    labs[1].stop_agent();
    wait_for(&labs[0], "n1 not ready", |l| node(l, "n1")["ready"] == false);
    // The stopped node's pods stay reachable: its datapath forwards without its agent.
    assert!(labs[0].containers[0].ping(ips[1], 1), "a stopped agent cut cross-node traffic");
    labs[0].netpath_ok(&["node", "del", "n1"]);
    wait_for_routes(&labs[0], 0);
    assert!(!labs[0].containers[0].ping(ips[1], 1), "a deleted node's subnet still routed");
    let stats = labs[0].stats();
    assert!(stats.reason("drop-no-node-route") > 0, "{:?}", stats.0);
}

#[test]
fn cross_node_connections_survive_agent_kills_and_the_store_going_away() {
    let mut u = Underlay::new();
    let (mut labs, ips) = pods(&u, 2, "vxlan");
    wait_for_routes(&labs[0], 1);
    let target = std::net::SocketAddrV4::new(ips[1], 7100);
    let mut conn =
        netpath_tests::EchoConn::open(&labs[1].containers[0], target, &labs[0].containers[0], target);
    conn.exchange("before");
    // kill -9 of both agents, one after the other, restarted: the pinned maps and links
    // carry the connection meanwhile, byte for byte.
    for i in 0..2 {
        labs[i].kill_agent();
        conn.exchange(&format!("agent {i} killed"));
        start(&mut labs[i], &u, &format!("n{i}"));
        conn.exchange(&format!("agent {i} restarted"));
    }
    // etcd gone: the routes stand.
    u.kill_etcd();
    conn.exchange("store down");
    labs[0].kill_agent();
    start(&mut labs[0], &u, "n0");
    conn.exchange("store down, agent restarted");
    u.start_etcd();
    wait_for(&labs[0], "both ready", |l| l.len() == 2 && l.iter().all(|n| n["ready"] == true));
    conn.exchange("store back");
    assert_eq!(conn.sent(), 8 * 64 * 1024);
}

/// Waits until `lab`'s NODE_ROUTES holds `n` routes.
fn wait_for_routes(lab: &Lab, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while lab.map_len("NODE_ROUTES") != n {
        assert!(Instant::now() < deadline, "NODE_ROUTES never held {n} routes\n{}", lab.agent_log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn cluster_flags_are_checked_in_one_line_each() {
    let mut lab = Lab::new(0);
    for (args, want) in [
        (&["--store", "etcd://10.99.0.1:2379", "--cluster-cidr", CLUSTER][..], "--node-name"),
        (
            &["--store", "http://10.99.0.1:2379", "--node-name", "a", "--cluster-cidr", CLUSTER],
            "etcd://HOST:PORT",
        ),
        (&["--store", "etcd://h:0", "--node-name", "a", "--cluster-cidr", CLUSTER], "not HOST:PORT"),
        (&["--store", "etcd://h:1", "--node-name", "a b", "--cluster-cidr", CLUSTER], "not a node name"),
        (
            &[
                "--store",
                "etcd://h:1",
                "--node-name",
                "a",
                "--cluster-cidr",
                "10.244.0.0/16",
                "--pod-cidr",
                "10.1.0.0/24",
            ],
            "--pod-cidr",
        ),
        (
            &[
                "--store",
                "etcd://h:1",
                "--node-name",
                "a",
                "--cluster-cidr",
                CLUSTER,
                "--node-cidr-prefix",
                "12",
            ],
            "--node-cidr-prefix 12",
        ),
        (&["--node-name", "a"], "--store"),
    ] {
        let err = lab.try_start_agent(args).unwrap_err();
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // An agent without a store has no cluster to list.
    lab.start_agent();
    let out = lab.netpath(&["node", "list"]);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && msg.contains("without --store"), "{msg}");
    assert_eq!(msg.trim().lines().count(), 1, "{msg}");
}

/// Just enough IPv4 prefix arithmetic for the checks above (the tests crate does not
/// depend on ipnet).
mod ipnet_lite {
    use std::net::Ipv4Addr;

    #[derive(Debug, Clone, Copy)]
    pub struct Net {
        pub addr: Ipv4Addr,
        pub len: u32,
    }

    impl std::str::FromStr for Net {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, String> {
            let (a, l) = s.split_once('/').ok_or(s.to_string())?;
            Ok(Net {
                addr: a.parse().map_err(|_| s.to_string())?,
                len: l.parse().map_err(|_| s.to_string())?,
            })
        }
    }

    impl Net {
        pub fn contains(&self, ip: Ipv4Addr) -> bool {
            let mask = u32::MAX.checked_shl(32 - self.len).unwrap_or(0);
            u32::from(ip) & mask == u32::from(self.addr) & mask
        }

        /// The first address: the pods' gateway.
        pub fn gateway(&self) -> Ipv4Addr {
            Ipv4Addr::from(u32::from(self.addr) + 1)
        }
    }
}
