//! Cluster mode's control plane against a real etcd: nodes register, get distinct
//! subnets (also when they race), keep them across restarts, show up as not ready when
//! their agent stops, are forgotten by `netpath node del`, and ride out the store going
//! down. User space only, the same on every kernel: the host runs it; the cross-node
//! datapath is `cross_node`, which the guests run too.
use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use netpath_tests::{
    cluster::{agent_args, ipnet_lite, node, nodes, start, wait_for, wait_for_routes, Underlay, CLUSTER},
    metric_value, Lab,
};

/// `lab`'s metric `name` (with its labels, as exposed), if it has it.
fn metric(lab: &Lab, name: &str) -> Option<u64> {
    metric_value(&lab.metrics().unwrap_or_default(), &format!("{name} "))
}

/// Starts `lab`'s agent as node `name`, ageing out after `gc_after` unused.
fn start_gc(lab: &mut Lab, u: &Underlay, name: &str, gc_after: &str) -> Result<(), String> {
    let mut args = agent_args(u, name);
    args.extend(["--node-gc-after".to_string(), gc_after.to_string()]);
    lab.try_start_agent(&args.iter().map(String::as_str).collect::<Vec<_>>())
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
    // The metrics count it as not ready, and its route stays (its pods stay reachable).
    assert_eq!(metric(&a, r#"netpath_cluster_nodes{ready="true"}"#), Some(1), "{:?}", a.metrics());
    assert_eq!(metric(&a, r#"netpath_cluster_nodes{ready="false"}"#), Some(1), "{:?}", a.metrics());
    assert_eq!(metric(&a, "netpath_node_routes"), Some(1), "{:?}", a.metrics());

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
    // The store's view and the agent's flag are two observers: the flag follows within
    // one exchange.
    let deadline = Instant::now() + Duration::from_secs(10);
    while connected(&a) != Some(1) {
        assert!(Instant::now() < deadline, "store_connected stayed 0\n{}", a.agent_log());
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
        (
            &[
                "--store",
                "etcd://h:1",
                "--node-name",
                "a",
                "--cluster-cidr",
                CLUSTER,
                "--node-gc-after",
                "10x",
            ],
            "\"10x\" is not a duration",
        ),
        (
            &["--store", "etcd://h:1", "--node-name", "a", "--cluster-cidr", CLUSTER, "--node-gc-after", "0"],
            "\"0\" is no time",
        ),
        (
            &[
                "--store",
                "etcd://h:1",
                "--node-name",
                "a",
                "--cluster-cidr",
                CLUSTER,
                "--node-lease",
                "60",
                "--node-gc-after",
                "1m",
            ],
            "--node-gc-after 60s is not longer than --node-lease 60s",
        ),
        (&["--cluster-cidr6", "fd00:244::/48"], "--store"),
        (
            &[
                "--store",
                "etcd://h:1",
                "--node-name",
                "a",
                "--cluster-cidr",
                CLUSTER,
                "--cluster-cidr6",
                "fd00:244::zz/48",
            ],
            "\"fd00:244::zz/48\" is not an IPv6 CIDR",
        ),
        (
            &[
                "--store",
                "etcd://h:1",
                "--node-name",
                "a",
                "--cluster-cidr",
                CLUSTER,
                "--cluster-cidr6",
                "fd00:244::/56",
                "--node-cidr-prefix6",
                "52",
            ],
            "--node-cidr-prefix6 52 is wider than --cluster-cidr6 fd00:244::/56",
        ),
        (
            &[
                "--store",
                "etcd://h:1",
                "--node-name",
                "a",
                "--cluster-cidr",
                CLUSTER,
                "--cluster-cidr6",
                "fd00:244::/48",
                "--pod-cidr6",
                "fd00:77::/64",
            ],
            "--pod-cidr6",
        ),
        // Native routing over IPv6 needs the node's IPv6 underlay address; this lab's
        // uplink has none. Refused before the store is asked (none runs here).
        (
            &[
                "--store",
                "etcd://h:1",
                "--node-name",
                "a",
                "--cluster-cidr",
                CLUSTER,
                "--cluster-cidr6",
                "fd00:244::/48",
                "--tunnel",
                "none",
            ],
            "has none; give the uplink a global IPv6 address",
        ),
    ] {
        let err = lab.try_start_agent(args).unwrap_err();
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    // An agent without a store has no cluster to list.
    lab.start_agent();
    let out = lab.netpath(&["node", "list"]);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && msg.contains("without --store"), "{msg}");
    assert_eq!(msg.trim().lines().count(), 1, "{msg}");
}

#[test]
fn an_unused_node_ages_out_after_node_gc_after_its_route_goes_and_its_subnet_is_free() {
    let u = Underlay::new();
    let (mut a, mut b, mut c) = (u.node(0, 0), u.node(1, 0), u.node(2, 0));
    // 6 s: a window of some 4 s between not ready and gone, wide enough to see on a
    // loaded machine.
    start_gc(&mut a, &u, "a", "6s").unwrap();
    start_gc(&mut b, &u, "b", "6s").unwrap();
    wait_for_routes(&a, 1);
    let b_subnet = node(&nodes(&a), "b")["pod_cidr"].clone();
    assert_eq!(metric(&a, r#"netpath_cluster_nodes{ready="true"}"#), Some(2), "{:?}", a.metrics());
    assert_eq!(metric(&a, r#"netpath_cluster_nodes{ready="false"}"#), Some(0), "{:?}", a.metrics());
    assert_eq!(metric(&a, "netpath_node_routes"), Some(1), "{:?}", a.metrics());
    // Running agents keep their records well past --node-gc-after.
    std::thread::sleep(Duration::from_secs(8));
    let list = nodes(&a);
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.iter().all(|n| n["ready"] == true), "{list:?}");

    b.stop_agent();
    let stopped = Instant::now();
    wait_for(&a, "b not ready", |l| l.iter().any(|n| n["name"] == "b" && n["ready"] == false));
    wait_for(&a, "b aged out", |l| l.iter().all(|n| n["name"] != "b"));
    // Not before its time: the lease (2 s) and then the record's (6 s) ran out.
    assert!(stopped.elapsed() >= Duration::from_secs(5), "aged out after {:?}", stopped.elapsed());
    wait_for_routes(&a, 0);
    assert_eq!(metric(&a, r#"netpath_cluster_nodes{ready="true"}"#), Some(1), "{:?}", a.metrics());
    assert_eq!(metric(&a, r#"netpath_cluster_nodes{ready="false"}"#), Some(0), "{:?}", a.metrics());
    assert_eq!(metric(&a, "netpath_node_routes"), Some(0), "{:?}", a.metrics());
    let doctor = a.netpath_in_node(&["doctor"]);
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(doctor.status.success() && !text.contains("not ready"), "{text}");
    // Its subnet is free: the next node gets it.
    start(&mut c, &u, "c");
    assert_eq!(node(&nodes(&a), "c")["pod_cidr"], b_subnet);
    wait_for_routes(&a, 1);
}

#[test]
fn a_restart_within_node_gc_after_keeps_the_subnet_and_one_after_it_rejoins() {
    let u = Underlay::new();
    let (mut a, mut b, mut c) = (u.node(0, 0), u.node(1, 0), u.node(2, 0));
    start_gc(&mut a, &u, "a", "4s").unwrap();
    start_gc(&mut b, &u, "b", "4s").unwrap();
    let b_subnet = node(&nodes(&a), "b")["pod_cidr"].clone();
    b.stop_agent();
    std::thread::sleep(Duration::from_secs(1));
    start_gc(&mut b, &u, "b", "4s").unwrap();
    assert_eq!(node(&nodes(&a), "b")["pod_cidr"], b_subnet);
    // The record now lives on the restarted agent's lease: the stopped one's running
    // out must not take it away.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(node(&nodes(&a), "b")["ready"], true, "{:?}", nodes(&a));

    // Aged out, then back: the same subnet, as nobody took it.
    b.stop_agent();
    wait_for(&a, "b aged out", |l| l.iter().all(|n| n["name"] != "b"));
    start_gc(&mut b, &u, "b", "4s").unwrap();
    assert_eq!(node(&nodes(&a), "b")["pod_cidr"], b_subnet);
    assert!(b.agent_log().contains("re-joined with its subnet"), "{}", b.agent_log());
    wait_for_routes(&a, 1);

    // Aged out, its subnet taken meanwhile: a new one, and the log says so.
    b.stop_agent();
    wait_for(&a, "b aged out", |l| l.iter().all(|n| n["name"] != "b"));
    start(&mut c, &u, "c");
    assert_eq!(node(&nodes(&a), "c")["pod_cidr"], b_subnet);
    start_gc(&mut b, &u, "b", "4s").unwrap();
    let list = nodes(&a);
    assert!(node(&list, "b")["pod_cidr"] != b_subnet, "{list:?}");
    assert!(b.agent_log().contains("its subnet went to another node"), "{}", b.agent_log());
    wait_for_routes(&a, 2);
}

#[test]
fn a_start_that_fails_after_joining_gives_the_name_back_and_a_retry_succeeds_at_once() {
    let u = Underlay::new();
    let mut a = u.node(0, 0);
    let store = u.store();
    // A long lease: without giving the name back, the retry would be refused for 30 s.
    let args = ["--store", &store, "--node-name", "a", "--cluster-cidr", CLUSTER, "--node-lease", "30"];
    // Refused after joining: the NAT range is checked against the node's ephemeral ports
    // once the node's subnet is known.
    let bad: Vec<&str> = args.iter().copied().chain(["--nat-ports", "32768-40000"]).collect();
    let err = a.try_start_agent(&bad).unwrap_err();
    assert!(err.contains("ephemeral"), "{err}");
    a.try_start_agent(&args).unwrap_or_else(|e| panic!("the retry was refused: {e}"));
    assert!(err.contains("gave the node name back"), "{err}");
    let list = nodes(&a);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["ready"], true, "{list:?}");
}
