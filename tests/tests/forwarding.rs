//! Container-to-container forwarding through the eBPF datapath, proven with real packets.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use netpath_tests::Lab;

#[test]
fn ping_between_containers_is_redirected_to_the_peer() {
    let (lab, ips) = Lab::setup(2).endpoints(&["a", "b"]).build();
    let (a, b) = (ips[0], ips[1]);
    let before = lab.stats();
    let forwarded_by_node = lab.node.snmp("Ip", "ForwDatagrams");

    assert!(lab.containers[0].ping(b, 3), "a cannot ping b\n{}", lab.agent_log());

    let after = lab.stats();
    // Exactly the three echo requests and three replies, each counted once on each side.
    for (name, field) in [("a", "tx_packets"), ("b", "rx_packets"), ("b", "tx_packets"), ("a", "rx_packets")]
    {
        assert_eq!(after.endpoint(name, field) - before.endpoint(name, field), 3, "{name} {field}");
    }
    assert!(after.reason("forwarded-to-peer") - before.reason("forwarded-to-peer") >= 6);
    // The node's IP stack routed none of them: the datapath delivered them directly.
    assert_eq!(lab.node.snmp("Ip", "ForwDatagrams"), forwarded_by_node, "node stack forwarded packets");
    assert!(lab.containers[1].ping(a, 1));
}

#[test]
fn tcp_and_udp_flow_between_containers() {
    let (lab, ips) = Lab::setup(2).endpoints(&["a", "b"]).build();
    let (a, b) = (ips[0], ips[1]);
    let before = lab.stats();

    // TCP: 256 KiB echoed back by b.
    let listener =
        lab.containers[1].run(move || TcpListener::bind(SocketAddrV4::new(b, 7000))).join().unwrap().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        peer
    });
    let client = lab.containers[0].run(move || {
        let mut s = TcpStream::connect_timeout(&SocketAddrV4::new(b, 7000).into(), Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let data: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
        s.write_all(&data)?;
        let mut back = vec![0u8; data.len()];
        s.read_exact(&mut back)?;
        Ok::<bool, std::io::Error>(back == data)
    });
    assert!(client.join().unwrap().expect("tcp client"), "echoed bytes differ");
    let peer = server.join().unwrap();
    assert_eq!(peer.ip(), std::net::IpAddr::V4(a), "b saw a's real address");

    // UDP: one datagram each way.
    let s = lab.containers[1].bind_udp(SocketAddrV4::new(b, 7001));
    let server = std::thread::spawn(move || {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = s.recv_from(&mut buf).unwrap();
        s.send_to(&buf[..n], from).unwrap();
    });
    let got = lab.containers[0]
        .run(move || {
            let s = UdpSocket::bind(SocketAddrV4::new(a, 0)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.send_to(b"netpath", SocketAddrV4::new(b, 7001)).unwrap();
            let mut buf = [0u8; 64];
            let n = s.recv(&mut buf).unwrap();
            buf[..n].to_vec()
        })
        .join()
        .unwrap();
    server.join().unwrap();
    assert_eq!(got, b"netpath");

    let after = lab.stats();
    let sent = after.endpoint("a", "tx_bytes") - before.endpoint("a", "tx_bytes");
    assert!(sent >= 256 * 1024, "a's tx counter saw only {sent} bytes");
    let received = after.endpoint("a", "rx_bytes") - before.endpoint("a", "rx_bytes");
    assert!(received >= 256 * 1024, "a's rx counter saw only {received} bytes");
}

#[test]
fn without_the_program_traffic_leaves_the_ebpf_path() {
    let mut lab = Lab::new(2);
    lab.start_agent();
    lab.add_endpoint("a", 0);
    let b = lab.add_endpoint("b", 1);
    assert!(lab.containers[0].ping(b, 1));

    // A stopped agent leaves the datapath running (pinned links)...
    lab.stop_agent();
    assert!(lab.containers[0].ping(b, 1), "datapath went away with the agent");
    // ...so take the programs away as a fault would; maps stay pinned and readable.
    lab.detach_programs();
    let before = lab.stats();
    let forwarded_by_node = lab.node.snmp("Ip", "ForwDatagrams");
    let answered = lab.containers[0].ping(b, 2);
    let after = lab.stats();
    assert_eq!(after.endpoint("a", "tx_packets"), before.endpoint("a", "tx_packets"));
    assert_eq!(after.endpoint("b", "rx_packets"), before.endpoint("b", "rx_packets"));
    assert_eq!(after.reason("forwarded-to-peer"), before.reason("forwarded-to-peer"));
    // Without the program, a's cached gateway MAC may still lead its packets into the
    // node's stack, which routes them; then they are the stack's, not the datapath's.
    if answered {
        assert!(lab.node.snmp("Ip", "ForwDatagrams") >= forwarded_by_node + 4);
    }

    // A restarted agent adopts the endpoints from its state and the path comes back.
    lab.start_agent();
    assert!(lab.containers[0].ping(b, 2), "no traffic after agent restart\n{}", lab.agent_log());
}

#[test]
fn corrupted_endpoint_entry_breaks_delivery() {
    let mut lab = Lab::new(2);
    lab.start_agent();
    let a = lab.add_endpoint("a", 0);
    let b = lab.add_endpoint("b", 1);
    assert!(lab.containers[0].ping(b, 1));
    // Point b's entry at a's veth with bpftool (the test's tool, not the product's):
    // delivery now depends on the map, so the ping must fail.
    let map = lab.bpffs_dir.join("ENDPOINTS");
    let key: Vec<String> = b.octets().iter().map(|o| o.to_string()).collect();
    let a_key: Vec<String> = a.octets().iter().map(|o| o.to_string()).collect();
    let a_entry = netpath_tests::sh(
        &[
            &["bpftool", "-j", "map", "lookup", "pinned", map.to_str().unwrap(), "key"],
            &a_key.iter().map(String::as_str).collect::<Vec<_>>()[..],
        ]
        .concat(),
    );
    let a_value: serde_json::Value = serde_json::from_str(&a_entry).unwrap();
    let value: Vec<String> = a_value["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| u8::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap().to_string())
        .collect();
    let mut args = vec!["bpftool", "map", "update", "pinned", map.to_str().unwrap(), "key"];
    args.extend(key.iter().map(String::as_str));
    args.push("value");
    args.extend(value.iter().map(String::as_str));
    netpath_tests::sh(&args);
    assert!(!lab.containers[0].ping(b, 2), "b reachable with its map entry corrupted");
}

#[test]
fn spoofed_source_address_is_dropped_and_counted() {
    let mut lab = Lab::new(2);
    lab.start_agent();
    lab.add_endpoint("a", 0);
    let b = lab.add_endpoint("b", 1);
    let before = lab.stats();
    // a claims an address that is not its own (b's neighbour in the pod CIDR).
    let c0 = &lab.containers[0];
    assert!(c0.exec(&["ip", "addr", "add", "10.77.0.200/32", "dev", "eth0"]).status.success());
    assert!(!c0
        .exec(&["ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", "-I", "10.77.0.200", &b.to_string()])
        .status
        .success());
    let after = lab.stats();
    assert!(after.reason("drop-spoofed-source") - before.reason("drop-spoofed-source") >= 2);
    assert_eq!(after.endpoint("b", "rx_packets"), before.endpoint("b", "rx_packets"));
}

#[test]
fn clsact_attachment_for_older_kernels_forwards_the_same() {
    let mut lab = Lab::new(2);
    lab.start_agent_with(&["--tc-attach", "clsact"]);
    lab.add_endpoint("a", 0);
    let b = lab.add_endpoint("b", 1);
    let list: serde_json::Value =
        serde_json::from_str(&lab.netpath_ok(&["endpoint", "list", "-o", "json"])).unwrap();
    let veth = list["endpoints"][0]["host_ifname"].as_str().unwrap().to_string();
    // Attached as a cls_bpf filter under clsact, not as a TCX link.
    let filters = lab.node.exec(&["tc", "filter", "show", "dev", &veth, "ingress"]);
    assert!(String::from_utf8_lossy(&filters.stdout).contains("from_container"), "{filters:?}");
    let before = lab.stats();
    assert!(lab.containers[0].ping(b, 2));
    assert_eq!(lab.stats().endpoint("b", "rx_packets") - before.endpoint("b", "rx_packets"), 2);
    let up = lab.node.exec(&["tc", "filter", "show", "dev", "uplink0", "ingress"]);
    assert!(String::from_utf8_lossy(&up.stdout).contains("uplink_in"), "{up:?}");
    // A restarted agent finds the clsact qdiscs and its filters there: it replaces the
    // filters rather than failing or stacking a second copy.
    lab.stop_agent();
    lab.start_agent_with(&["--tc-attach", "clsact"]);
    let filters = lab.node.exec(&["tc", "filter", "show", "dev", &veth, "ingress"]);
    let copies =
        String::from_utf8_lossy(&filters.stdout).lines().filter(|l| l.contains("from_container")).count();
    assert_eq!(copies, 1, "{filters:?}");
    assert!(lab.containers[0].ping(b, 1));
}
