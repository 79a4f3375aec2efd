//! Pods on different nodes reach each other through the cluster's datapath: the VXLAN
//! overlay and native routing in BPF, with their own addresses, past the nodes' stacks;
//! a node's routes follow the store; live connections ride out agent kills and the store
//! going away. The guests run it too (their initramfs carries etcd).
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use netpath_tests::{
    cluster::{node, pods, start, start_nodes, wait_for, wait_for_routes, Underlay},
    trace::{events, start_trace},
    Lab,
};
use serde_json::Value;

/// Three nodes in the overlay, each case of the datapath on the same cluster: agent
/// starts are what a cluster test costs, in an emulated guest above all (a minute each
/// on 5.10), so the cases share one.
#[test]
fn pods_on_different_nodes_reach_each_other_through_the_overlay_with_their_own_addresses() {
    let u = Underlay::new();
    let (labs, ips, ips2) = cluster(&u, "vxlan");
    pods_reach_each_other(&labs, &ips, &ips2);
    trace_shows_the_tunnel_hops_with_the_other_node(&labs, &ips);
    a_published_port_is_reached_from_other_nodes_by_hairpin_and_from_the_node(&labs, &ips, &ips2);
    overlay_packets_claiming_another_nodes_pod_are_dropped(&u, &labs, &ips);
    a_pod_learns_the_path_mtu_to_another_node(&labs, ips[1], 1450);
}

/// Three nodes routed natively, node 0's uplink at MTU 1400.
#[test]
fn pods_on_different_nodes_reach_each_other_by_native_routing_with_their_own_addresses() {
    let u = Underlay::new();
    let (labs, ips, ips2) = cluster(&u, "none");
    pods_reach_each_other(&labs, &ips, &ips2);
    a_published_port_is_reached_from_other_nodes_by_hairpin_and_from_the_node(&labs, &ips, &ips2);
    a_pod_learns_the_path_mtu_to_another_node(&labs, ips[1], 1400);
}

/// How many nodes the datapath cases' clusters have: three, and two in the emulated
/// guests, where each agent start costs a minute and the host's run has the three.
fn nodes() -> u8 {
    if netpath_tests::in_guest() {
        2
    } else {
        3
    }
}

/// Three nodes ([`nodes`]) with `--tunnel tunnel`, FORWARD DROP everywhere; two pods on each
/// ("pod" and "pod2", containers 0 and 1), and on node 0 a third one ("big", container
/// 2) whose MTU, 1500, is more than the path to the other nodes carries: the VXLAN
/// overhead, or in native routing node 0's uplink, lowered to 1400 before its agent
/// starts. The nodes, and the addresses of each node's "pod" and "pod2".
fn cluster(u: &Underlay, tunnel: &str) -> (Vec<Lab>, Vec<Ipv4Addr>, Vec<Ipv4Addr>) {
    let mut labs: Vec<Lab> = (0..nodes()).map(|i| u.node(i, if i == 0 { 3 } else { 2 })).collect();
    if tunnel == "none" {
        labs[0].node.exec(&["ip", "link", "set", "uplink0", "mtu", "1400"]);
    }
    start_nodes(u, &mut labs, tunnel);
    let ips = labs.iter().map(|lab| lab.add_endpoint("pod", 0)).collect();
    let ips2 = labs.iter().map(|lab| lab.add_endpoint("pod2", 1)).collect();
    let big = labs[0].containers[2].path();
    labs[0].netpath_ok(&["endpoint", "add", "big", "--netns", big.to_str().unwrap(), "--mtu", "1500"]);
    // Every node has learned every other node's subnet from the store.
    for lab in &labs {
        wait_for_routes(lab, labs.len() - 1);
    }
    (labs, ips, ips2)
}

/// ICMP between every pair of pods on different nodes; TCP and UDP between two nodes.
fn pods_reach_each_other(labs: &[Lab], ips: &[Ipv4Addr], ips2: &[Ipv4Addr]) {
    let forwarded: Vec<u64> = labs.iter().map(|l| l.node.snmp("Ip", "ForwDatagrams")).collect();
    for (i, from) in labs.iter().enumerate() {
        for (j, to) in ips.iter().zip(ips2).enumerate().filter(|(j, _)| *j != i) {
            for (c, pod) in from.containers[..2].iter().enumerate() {
                for to in [*to.0, *to.1] {
                    let log = || from.agent_log();
                    assert!(pod.ping(to, 1), "node {i} pod {c} cannot ping {to} on node {j}\n{}", log());
                }
            }
        }
    }
    // TCP: 4 MiB each way between the first and the last node, and the server sees the
    // pod's own address.
    let last = labs.len() - 1;
    let (a, c) = (ips[0], ips[last]);
    let target = std::net::SocketAddrV4::new(c, 7000);
    let peer = netpath_tests::tcp_echo_once(
        &labs[last].containers[0],
        target,
        &labs[0].containers[0],
        target.into(),
        4 << 20,
    );
    assert_eq!(peer.ip(), std::net::IpAddr::V4(a), "the server saw a translated source");
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
    if !netpath_tests::on_the_host("a node leaving the store") {
        return;
    }
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
    if !netpath_tests::on_the_host("agents and the store going away") {
        return;
    }
    let mut u = Underlay::new();
    let (mut labs, ips) = pods(&u, 2, "vxlan");
    wait_for_routes(&labs[0], 1);
    let target = std::net::SocketAddrV4::new(ips[1], 7100);
    let mut conn =
        netpath_tests::EchoConn::open(&labs[1].containers[0], target, &labs[0].containers[0], target);
    conn.exchange("before");
    // kill -9 of both agents, one after the other, restarted: the pinned maps and links
    // carry the connection meanwhile, byte for byte.
    for (i, lab) in labs.iter_mut().enumerate() {
        lab.kill_agent();
        conn.exchange(&format!("agent {i} killed"));
        start(lab, &u, &format!("n{i}"));
        conn.exchange(&format!("agent {i} restarted"));
    }
    // etcd killed during traffic: a new connection every 50 ms, none may fail while the
    // store is gone, an agent restarts without it, and the store comes back.
    let echo = std::net::SocketAddrV4::new(ips[1], 7101);
    netpath_tests::echo_server(&labs[1].containers[0], echo);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let traffic = {
        let (stop, count) = (stop.clone(), count.clone());
        labs[0].containers[0].run(move || requests_until(echo, &stop, &count))
    };
    u.kill_etcd();
    let killed_at = count.load(std::sync::atomic::Ordering::Relaxed);
    conn.exchange("store down");
    labs[0].kill_agent();
    start(&mut labs[0], &u, "n0");
    conn.exchange("store down, agent restarted");
    // At least 20 new connections (a second) without the store, however fast the
    // restart was.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while count.load(std::sync::atomic::Ordering::Relaxed) < killed_at + 20 {
        assert!(std::time::Instant::now() < deadline, "the requests stalled without the store");
        std::thread::sleep(Duration::from_millis(20));
    }
    u.start_etcd();
    wait_for(&labs[0], "both ready", |l| l.len() == 2 && l.iter().all(|n| n["ready"] == true));
    conn.exchange("store back");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (done, failed) = traffic.join().unwrap();
    assert!(failed.is_empty(), "{} of {done} requests failed without the store: {failed:?}", failed.len());
    assert!(done >= 20, "only {done} requests while the store was away");
    assert_eq!(conn.sent(), 8 * 64 * 1024);
}

/// A new TCP connection to `to` every 50 ms, one request each, until `stop`; the count
/// (also kept in `count` as it goes) and the failures.
fn requests_until(
    to: std::net::SocketAddrV4,
    stop: &std::sync::atomic::AtomicBool,
    count: &std::sync::atomic::AtomicU32,
) -> (u32, Vec<String>) {
    use std::io::{Read as _, Write as _};
    let (mut done, mut failed) = (0, Vec::new());
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let r = std::net::TcpStream::connect_timeout(&to.into(), Duration::from_secs(3)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.write_all(b"ping")?;
            s.read_exact(&mut [0u8; 4])
        });
        if let Err(e) = r {
            failed.push(format!("request {done}: {e}"));
        }
        done += 1;
        count.store(done, std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
    }
    (done, failed)
}

fn trace_shows_the_tunnel_hops_with_the_other_node(labs: &[Lab], ips: &[Ipv4Addr]) {
    let host = ips[1].to_string();
    let args = ["--host", &host, "--proto", "icmp", "--count", "4", "--duration", "20"];
    let (t0, t1) = (start_trace(&labs[0], &args), start_trace(&labs[1], &args));
    assert!(labs[0].containers[0].ping(ips[1], 1), "{}", labs[0].agent_log());
    let (sent, received) = (events(t0), events(t1));
    let hops = |evs: &[Value]| {
        evs.iter().map(|e| (e["hop"].as_str().unwrap().to_string(), e["node"].clone())).collect::<Vec<_>>()
    };
    let (a, b) = (Value::from("10.99.0.10"), Value::from("10.99.0.11"));
    let hop = |h: &str, n: &Value| (h.to_string(), n.clone());
    // The request leaves node 0 into the overlay towards node 1; the reply comes back
    // out of it from node 1 and into the container.
    assert_eq!(
        hops(&sent),
        [
            hop("from-container", &Value::Null),
            hop("to-tunnel", &b),
            hop("from-tunnel", &b),
            hop("to-container", &Value::Null)
        ],
        "{sent:?}"
    );
    assert_eq!(
        hops(&received),
        [
            hop("from-tunnel", &a),
            hop("to-container", &Value::Null),
            hop("from-container", &Value::Null),
            hop("to-tunnel", &a)
        ],
        "{received:?}"
    );
    assert!(sent.iter().chain(&received).all(|e| e["drop"] == false), "{sent:?} {received:?}");
    assert_eq!(sent[1]["decision"], "to-other-node");
}

fn overlay_packets_claiming_another_nodes_pod_are_dropped(u: &Underlay, labs: &[Lab], ips: &[Ipv4Addr]) {
    // The switch's own namespace speaks VXLAN to node 1, claiming pod 0's address:
    // any host on the underlay can reach the port, only node 0 owns that subnet.
    let ns = &u.ns.name;
    let (pod0, pod1) = (ips[0].to_string(), ips[1].to_string());
    for cmd in [
        &["link", "add", "vx", "type", "vxlan", "id", "1", "remote", "10.99.0.11", "dstport", "4789"][..],
        &["addr", "add", &format!("{pod0}/32"), "dev", "vx"],
        &["link", "set", "vx", "up"],
        &["route", "add", &format!("{pod1}/32"), "dev", "vx"],
        &["neigh", "add", &pod1, "lladdr", "02:00:00:00:00:01", "dev", "vx"],
    ] {
        netpath_tests::sh(&[&["ip", "-n", ns][..], cmd].concat());
    }
    let before = labs[1].stats().reason("drop-spoofed-source");
    let out = u.ns.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "1", &pod1]);
    assert!(!out.status.success(), "a forged overlay packet was answered");
    let dropped = labs[1].stats().reason("drop-spoofed-source") - before;
    assert!(dropped >= 3, "{dropped} forged packets counted\n{}", labs[1].agent_log());
    // The real owner still gets through.
    assert!(labs[0].containers[0].ping(ips[1], 1), "{}", labs[1].agent_log());
}

#[test]
fn a_fourth_node_joins_and_every_node_reaches_it() {
    if !netpath_tests::on_the_host("a node joining the store") {
        return;
    }
    let u = Underlay::new();
    let (labs, ips) = pods(&u, 3, "vxlan");
    for lab in &labs {
        wait_for_routes(lab, 2);
    }
    let mut fourth = u.node(3, 1);
    // Watch node 0 while node 3 starts: when the cluster first lists it (its
    // registration), and when node 0's datapath first has its route.
    let (registered, routed) = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(300);
            let (mut registered, mut routed) = (None, None);
            while routed.is_none() || registered.is_none() {
                assert!(Instant::now() < deadline, "node 3 never appeared\n{}", labs[0].agent_log());
                // A store slow to answer (an emulated guest) is asked again.
                let listed = labs[0].netpath(&["node", "list", "-o", "json"]);
                if registered.is_none() && String::from_utf8_lossy(&listed.stdout).contains("\"n3\"") {
                    registered = Some(Instant::now());
                }
                if routed.is_none() && labs[0].map_len("NODE_ROUTES") == 3 {
                    routed = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (registered.unwrap(), routed.unwrap())
        });
        start(&mut fourth, &u, "n3");
        watcher.join().unwrap()
    });
    // Polled, so as fine as a `node list` and a map dump are quick (tens of ms here).
    let lag = routed.saturating_duration_since(registered);
    eprintln!("join: node 0 had node 3's route {} ms after the cluster first listed it", lag.as_millis());
    let ip = fourth.add_endpoint("pod", 0);
    for (i, lab) in labs.iter().enumerate() {
        wait_for_routes(lab, 3);
        assert!(lab.containers[0].ping(ip, 1), "node {i} cannot reach the new node\n{}", lab.agent_log());
        assert!(fourth.containers[0].ping(ips[i], 1), "the new node cannot reach node {i}");
    }
}

/// Node 1 publishes a port to its pod. A pod on node 0 reaches it through node 1's
/// address (masqueraded as node 0 on the way out); node 1's other pod, through its own
/// node's address (hairpin, its own address kept); and node 1's own processes, through
/// the node address and loopback (the node-local socket hooks, on kernels with netns
/// cookies: 5.14+, the single-node tests say so where they skip).
fn a_published_port_is_reached_from_other_nodes_by_hairpin_and_from_the_node(
    labs: &[Lab],
    ips: &[Ipv4Addr],
    ips2: &[Ipv4Addr],
) {
    labs[1].netpath_ok(&["port", "add", "8080", "pod:80"]);
    let bind = std::net::SocketAddrV4::new(ips[1], 80);
    let node1 = std::net::SocketAddr::from(([10, 99, 0, 11], 8080));
    let peer = netpath_tests::tcp_echo_once(&labs[1].containers[0], bind, &labs[0].containers[0], node1, 5);
    // The pod left its node masqueraded (the node's address is not a pod address) and
    // came in through node 1's published port.
    assert_eq!(peer.ip(), std::net::IpAddr::from([10, 99, 0, 10]));
    assert!(labs[1].stats().reason("dnat-new-flow") > 0, "{:?}", labs[1].stats().0);

    let peer = netpath_tests::tcp_echo_once(&labs[1].containers[0], bind, &labs[1].containers[1], node1, 5);
    assert_eq!(peer.ip(), std::net::IpAddr::from(ips2[1]), "hairpin in cluster mode");

    if netpath_tests::kernel_at_least(5, 14) {
        node_processes_reach_the_published_port(&labs[1], bind);
    }
    labs[1].netpath_ok(&["port", "del", "8080"]);
}

/// The node's own processes reach its published port 8080 (to `bind` in its pod 0)
/// through the node address and loopback.
fn node_processes_reach_the_published_port(lab: &Lab, bind: std::net::SocketAddrV4) {
    let before = lab.stats().reason("node-local-connect");
    for ip in ["10.99.0.11", "127.0.0.1"] {
        let listener =
            lab.containers[0].run(move || std::net::TcpListener::bind(bind)).join().unwrap().expect("bind");
        let echo = std::thread::spawn(move || {
            use std::io::{Read as _, Write as _};
            let (mut s, _) = listener.accept().unwrap();
            let mut line = [0u8; 5];
            s.read_exact(&mut line).unwrap();
            s.write_all(&line).unwrap();
        });
        let script = format!("exec 3<>/dev/tcp/{ip}/8080 && echo ping >&3 && head -c 5 <&3");
        let out = lab.node_process(&["timeout", "10", "bash", "-c", &script]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ping\n",
            "the node's process via {ip}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        echo.join().unwrap();
    }
    assert_eq!(lab.stats().reason("node-local-connect") - before, 2, "node-local in cluster mode");
}

/// Node 0's "big" pod has MTU 1500, more than the path to node 1 carries (`path`). A
/// datagram with DF set that does not fit gets "fragmentation needed" back, and the
/// socket learns the path MTU.
fn a_pod_learns_the_path_mtu_to_another_node(labs: &[Lab], to: Ipv4Addr, path: u32) {
    let sock = labs[1].containers[0].bind_udp((to, 7003));
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let learned = labs[0].containers[2]
        .run(move || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            s.connect((to, 7003)).unwrap();
            set_pmtu_discovery(&s);
            // 1500 bytes of IP: fits the pod's link, not the path.
            let big = [7u8; 1472];
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut mtu = ip_mtu(&s);
            while mtu == 1500 && Instant::now() < deadline {
                let _ = s.send(&big);
                std::thread::sleep(Duration::from_millis(100));
                mtu = ip_mtu(&s);
            }
            let refused = s.send(&big).map_err(|e| e.raw_os_error());
            // The error the ICMP left pending on the connected socket, if still there.
            let _ = s.take_error();
            let fits = vec![9u8; mtu as usize - 28];
            s.send(&fits).unwrap();
            (mtu, refused)
        })
        .join()
        .unwrap();
    assert_eq!(learned.0, path, "the socket never learned the path MTU\n{}", labs[0].agent_log());
    assert_eq!(learned.1, Err(Some(libc::EMSGSIZE)), "a too-big datagram was still sent");
    // A datagram that fits the learned MTU arrives whole.
    let mut buf = [0u8; 2048];
    let n = loop {
        let n = sock.recv(&mut buf).expect("the datagram that fits never arrived");
        if buf[0] == 9 {
            break n;
        }
    };
    assert_eq!(n, path as usize - 28);
    assert!(labs[0].stats().reason("drop-frag-needed") > 0, "{:?}", labs[0].stats().0);
}

fn set_pmtu_discovery(s: &std::net::UdpSocket) {
    use std::os::fd::AsRawFd as _;
    let on: libc::c_int = libc::IP_PMTUDISC_DO;
    // SAFETY: a valid socket and option buffer of the size given.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "IP_MTU_DISCOVER: {}", std::io::Error::last_os_error());
}

/// The path MTU the kernel holds for a connected socket's destination.
fn ip_mtu(s: &std::net::UdpSocket) -> u32 {
    use std::os::fd::AsRawFd as _;
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid socket and option buffer of the size given.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU,
            (&mut mtu as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "IP_MTU: {}", std::io::Error::last_os_error());
    mtu as u32
}
