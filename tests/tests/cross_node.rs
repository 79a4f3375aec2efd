//! Pods on different nodes reach each other through the cluster's datapath: the VXLAN
//! overlay and native routing in BPF, with their own addresses, past the nodes' stacks;
//! a node's routes follow the store; live connections ride out agent kills and the store
//! going away. The guests run it too (their initramfs carries etcd).
use std::time::Duration;

use netpath_tests::cluster::{node, pods, start, wait_for, wait_for_routes, Underlay};

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
    for (i, lab) in labs.iter_mut().enumerate() {
        lab.kill_agent();
        conn.exchange(&format!("agent {i} killed"));
        start(lab, &u, &format!("n{i}"));
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
