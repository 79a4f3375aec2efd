//! Masquerade, published ports, hairpin and conntrack, proven with real traffic between
//! the lab's namespaces. The outside host knows no route to the pod CIDR, so only
//! translated traffic can get an answer; the node's FORWARD policy is DROP and it has
//! no NAT rule, so netfilter carries none of it.
use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use netpath_tests::{Lab, NODE_UPLINK_IP, OUTSIDE_IP};

const MIB: usize = 1 << 20;

fn lab_with_agent(args: &[&str]) -> Lab {
    let mut lab = Lab::new(2);
    let cmds: [&[&str]; 2] =
        [&["iptables", "-P", "FORWARD", "DROP"], &["iptables", "-t", "nat", "-F", "POSTROUTING"]];
    for cmd in cmds {
        let o = lab.node.exec(cmd);
        assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    lab.start_agent_with(args);
    lab
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// A TCP server in `ns` on `addr` that records the peer and echoes `len` bytes back.
fn echo_server(
    ns: &netpath_tests::Netns,
    addr: SocketAddrV4,
    len: usize,
) -> std::thread::JoinHandle<SocketAddr> {
    let listener = ns.run(move || TcpListener::bind(addr)).join().unwrap().expect("bind");
    std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        let mut buf = vec![0u8; len];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        peer
    })
}

/// Connects from `ns`, sends `len` patterned bytes, checks they come back intact.
fn echo_client(ns: &netpath_tests::Netns, to: SocketAddrV4, len: usize) -> std::io::Result<SocketAddr> {
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&to.into(), Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let data = pattern(len);
        let writer = {
            let mut w = s.try_clone()?;
            let data = data.clone();
            std::thread::spawn(move || w.write_all(&data))
        };
        let mut back = vec![0u8; len];
        s.read_exact(&mut back)?;
        writer.join().unwrap()?;
        if back != data {
            return Err(std::io::Error::other("echoed bytes differ"));
        }
        s.local_addr()
    })
    .join()
    .unwrap()
}

#[test]
fn container_reaches_the_outside_with_the_node_address() {
    let lab = lab_with_agent(&[]);
    lab.add_endpoint("a", 0);
    let before = lab.stats();

    let server = echo_server(&lab.outside, SocketAddrV4::new(OUTSIDE_IP, 9000), 4 * MIB);
    let local =
        echo_client(&lab.containers[0], SocketAddrV4::new(OUTSIDE_IP, 9000), 4 * MIB).expect("tcp via snat");
    let peer = server.join().unwrap();
    assert_eq!(peer.ip(), IpAddr::V4(NODE_UPLINK_IP), "outside saw a pod address");
    assert!((61000..=65535).contains(&peer.port()), "source port {} not from the NAT range", peer.port());
    assert_ne!(local.port(), 0);

    // UDP both ways.
    let s = lab.outside.bind_udp((OUTSIDE_IP, 9001));
    let udp = std::thread::spawn(move || {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = s.recv_from(&mut buf).unwrap();
        s.send_to(&buf[..n], from).unwrap();
        from
    });
    let got = lab.containers[0]
        .run(|| {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.send_to(b"over udp", (OUTSIDE_IP, 9001)).unwrap();
            let mut buf = [0u8; 64];
            let n = s.recv(&mut buf).unwrap();
            buf[..n].to_vec()
        })
        .join()
        .unwrap();
    assert_eq!(got, b"over udp");
    assert_eq!(udp.join().unwrap().ip(), IpAddr::V4(NODE_UPLINK_IP));

    // ICMP echo, identifier translated.
    assert!(lab.containers[0].ping(OUTSIDE_IP, 2), "ping to the outside failed\n{}", lab.agent_log());

    let after = lab.stats();
    assert!(after.reason("snat-new-flow") - before.reason("snat-new-flow") >= 3);
    // Both directions of the 4 MiB echo went through the translation (veth segments
    // are large, so count bytes, not packets).
    let translated = after.reason_bytes("nat-translated") - before.reason_bytes("nat-translated");
    assert!(translated >= 8 * MIB as u64, "only {translated} bytes translated");
    let ct: serde_json::Value = serde_json::from_str(&lab.netpath_ok(&["ct", "list", "-o", "json"])).unwrap();
    let rows = ct["conntrack"].as_array().unwrap();
    assert!(rows
        .iter()
        .any(|r| r["proto"] == "tcp" && r["rewrite"].as_str().unwrap().starts_with("snat 192.168.77.1:")));
    assert!(rows.iter().any(|r| r["proto"] == "udp"));
    assert!(rows.iter().any(|r| r["proto"] == "icmp"));
    // Filters: only UDP, only entries touching the outside host's port 9000.
    let udp: serde_json::Value =
        serde_json::from_str(&lab.netpath_ok(&["ct", "list", "--proto", "udp", "-o", "json"])).unwrap();
    let udp = udp["conntrack"].as_array().unwrap();
    assert!(!udp.is_empty() && udp.iter().all(|r| r["proto"] == "udp"), "{udp:?}");
    let tcp9000: serde_json::Value = serde_json::from_str(&lab.netpath_ok(&[
        "ct",
        "list",
        "--host",
        &OUTSIDE_IP.to_string(),
        "--port",
        "9000",
        "-o",
        "json",
    ]))
    .unwrap();
    let tcp9000 = tcp9000["conntrack"].as_array().unwrap();
    assert_eq!(tcp9000.len(), 2, "one TCP flow, two entries: {tcp9000:?}");
}

#[test]
fn published_port_reaches_the_container_with_the_client_address() {
    let lab = lab_with_agent(&[]);
    let a = lab.add_endpoint("web", 0);
    lab.netpath_ok(&["port", "add", "8080", "web:80"]);
    lab.netpath_ok(&["port", "add", "--proto", "udp", "5353", "web:53"]);

    let server = echo_server(&lab.containers[0], SocketAddrV4::new(a, 80), 3 * MIB);
    let local =
        echo_client(&lab.outside, SocketAddrV4::new(NODE_UPLINK_IP, 8080), 3 * MIB).expect("tcp via dnat");
    let peer = server.join().unwrap();
    assert_eq!(peer, local, "the container must see the client's real address and port");

    let s = lab.containers[0].bind_udp((a, 53));
    let udp = std::thread::spawn(move || {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = s.recv_from(&mut buf).unwrap();
        s.send_to(&buf[..n], from).unwrap();
        from
    });
    let (got, from) = lab
        .outside
        .run(|| {
            let s = UdpSocket::bind((OUTSIDE_IP, 0)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.send_to(b"query", (NODE_UPLINK_IP, 5353)).unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = s.recv_from(&mut buf).unwrap();
            (buf[..n].to_vec(), from)
        })
        .join()
        .unwrap();
    assert_eq!(got, b"query");
    assert_eq!(from, SocketAddr::from((NODE_UPLINK_IP, 5353)), "reply must come from the published port");
    assert_eq!(udp.join().unwrap().ip(), IpAddr::V4(OUTSIDE_IP));

    // A duplicate host port is refused, naming it.
    let o = lab.netpath(&["port", "add", "8080", "web:81"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("tcp/8080 is already published"));
    let list: serde_json::Value =
        serde_json::from_str(&lab.netpath_ok(&["port", "list", "-o", "json"])).unwrap();
    assert_eq!(list["ports"].as_array().unwrap().len(), 2);

    // Unpublished, the port is closed again.
    lab.netpath_ok(&["port", "del", "8080"]);
    assert!(echo_client(&lab.outside, SocketAddrV4::new(NODE_UPLINK_IP, 8080), 10).is_err());
}

#[test]
fn container_reaches_a_published_port_through_the_node_address() {
    let lab = lab_with_agent(&[]);
    let a = lab.add_endpoint("web", 0);
    let b = lab.add_endpoint("client", 1);
    lab.netpath_ok(&["port", "add", "8080", "web:80"]);
    let server = echo_server(&lab.containers[0], SocketAddrV4::new(a, 80), MIB);
    let local =
        echo_client(&lab.containers[1], SocketAddrV4::new(NODE_UPLINK_IP, 8080), MIB).expect("hairpin");
    assert_eq!(server.join().unwrap(), local);
    assert_eq!(local.ip(), IpAddr::V4(b));
}

#[test]
fn without_the_programs_neither_masquerade_nor_published_ports_work() {
    let mut lab = lab_with_agent(&[]);
    let a = lab.add_endpoint("web", 0);
    lab.netpath_ok(&["port", "add", "8080", "web:80"]);
    let listener = lab.containers[0].run(move || TcpListener::bind((a, 80))).join().unwrap().unwrap();
    listener.set_nonblocking(true).unwrap();
    lab.stop_agent();
    lab.detach_programs();
    assert!(echo_client(&lab.outside, SocketAddrV4::new(NODE_UPLINK_IP, 8080), 10).is_err());
    assert!(listener.accept().is_err(), "a connection reached the container without the datapath");
    let _server = echo_server(&lab.outside, SocketAddrV4::new(OUTSIDE_IP, 9000), 10);
    assert!(echo_client(&lab.containers[0], SocketAddrV4::new(OUTSIDE_IP, 9000), 10).is_err());
}

#[test]
fn conntrack_entries_are_collected_after_their_timeout() {
    let lab = lab_with_agent(&["--ct-udp-timeout", "1", "--ct-gc-interval", "1"]);
    lab.add_endpoint("a", 0);
    let before = lab.stats();
    // The flow stays alive (a datagram and its echo every 100 ms) while its entries are
    // looked for: with a 1 s timeout, `ct list` after a single exchange raced the
    // collector, and lost under software emulation (the CLI alone took over a second).
    let stop = Arc::new(AtomicBool::new(false));
    let s = lab.outside.bind_udp((OUTSIDE_IP, 9002));
    let echo = std::thread::spawn(move || {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 16];
        // Until the client has been quiet for 2 s.
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            s.send_to(&buf[..n], from).unwrap();
        }
    });
    let quiet = stop.clone();
    let client = lab.containers[0].run(move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut echoes = 0;
        while !quiet.load(Ordering::Relaxed) {
            s.send_to(b"x", (OUTSIDE_IP, 9002)).unwrap();
            echoes += usize::from(s.recv(&mut [0u8; 16]).is_ok());
            std::thread::sleep(Duration::from_millis(100));
        }
        echoes
    });
    let udp_entries = |lab: &Lab| {
        let ct: serde_json::Value =
            serde_json::from_str(&lab.netpath_ok(&["ct", "list", "-o", "json"])).unwrap();
        ct["conntrack"].as_array().unwrap().iter().filter(|r| r["proto"] == "udp").count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // One flow, two entries (for a moment, while the flow is assured and its entries
    // move from the table of new flows, a reader may count them in both tables).
    loop {
        let n = udp_entries(&lab);
        if n == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "one flow, two entries; the live flow has {n}");
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    assert!(client.join().unwrap() > 0, "no echo came back");
    echo.join().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while udp_entries(&lab) > 0 {
        assert!(std::time::Instant::now() < deadline, "entries never collected");
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = lab.stats();
    assert!(after.reason("ct-collected") - before.reason("ct-collected") >= 2);
    assert_eq!(after.0["conntrack"]["evicted"], 0, "{}", after.0["conntrack"]);
}

#[test]
fn a_full_conntrack_table_evicts_old_flows_and_says_so() {
    // The smallest table this machine takes (256 entries per possible CPU), and enough
    // flows to fill it and go on: every flow assured (two exchanges) moves its pair
    // to CONNTRACK, which then has to evict. Nothing expires during the test.
    let table = netpath::datapath::layout::ct_min_entries();
    let lab = lab_with_agent(&["--ct-max-entries", &table.to_string(), "--ct-udp-timeout", "3600"]);
    lab.add_endpoint("a", 0);
    let flows = table as usize / 2 + 40;
    let s = lab.outside.bind_udp((OUTSIDE_IP, 9003));
    let echo = std::thread::spawn(move || {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 16];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            s.send_to(&buf[..n], from).unwrap();
        }
    });
    let before = lab.stats();
    let (answered, last) = lab.containers[0]
        .run(move || {
            let mut answered = 0;
            let mut last = None;
            for i in 0..flows {
                // A new source port per flow, a new conntrack pair. Chosen, not left to
                // the kernel: an ephemeral port can come round again within a few
                // hundred sockets, and its flow is then the old one, still tracked. The
                // second datagram, after the answer, assures the flow.
                let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 20_000 + i as u16)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                let ok = [b"x", b"y"].iter().all(|d| {
                    s.send_to(*d, (OUTSIDE_IP, 9003)).unwrap();
                    s.recv(&mut [0u8; 16]).is_ok()
                });
                answered += ok as usize;
                last = Some(s.local_addr().unwrap().port());
            }
            (answered, last.unwrap())
        })
        .join()
        .unwrap();
    echo.join().unwrap();
    let after = lab.stats();
    let delta = |r: &str| after.reason(r) - before.reason(r);
    let refused = delta("drop-ct-full");
    // Every new flow either completed or was refused at its first packet, and counted.
    assert_eq!(
        answered as u64 + refused,
        flows as u64,
        "flows neither completed nor refused: {}",
        after.0["conntrack"]
    );
    // The table of new flows is never full here (a share of 256 per CPU, at most one
    // flow waiting at a time): nothing is refused, every flow completes.
    assert_eq!(refused, 0);
    let ct = &after.0["conntrack"];
    let n = |k: &str| ct[k].as_u64().unwrap_or_else(|| panic!("{k} in {ct}"));
    // Two entries per flow created, once; none collected (an hour's timeout).
    assert_eq!(delta("ct-created"), 2 * flows as u64, "{ct}");
    assert_eq!(n("collected"), 0, "{ct}");
    assert_eq!(n("capacity"), table as u64);
    assert!(n("entries") <= table as u64, "{ct}");
    // What was created and is gone was evicted, and says so: the counters add up.
    assert_eq!(n("created"), n("evicted") + n("entries") + n("new_entries"), "{ct}");
    assert!(n("evicted") >= 2 * flows as u64 - table as u64 - n("new_entries"), "{ct}");
    // The last flow's pair is whole, in one table.
    let rows: serde_json::Value =
        serde_json::from_str(&lab.netpath_ok(&["ct", "list", "--proto", "udp", "-o", "json"])).unwrap();
    let mine: Vec<_> = rows["conntrack"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["sport"] == last || r["rewrite"].as_str().unwrap().ends_with(&format!(":{last}")))
        .collect();
    assert_eq!(mine.len(), 2, "the last flow's pair: {mine:?}");
    assert_eq!(mine[0]["assured"], mine[1]["assured"], "the last flow's pair is split: {mine:?}");
}

#[test]
fn spoofed_mac_is_dropped_and_counted() {
    let lab = lab_with_agent(&[]);
    lab.add_endpoint("a", 0);
    let before = lab.stats();
    let c = &lab.containers[0];
    assert!(c.exec(&["ip", "link", "set", "eth0", "address", "0a:58:0a:4d:00:63"]).status.success());
    assert!(!c.ping(OUTSIDE_IP, 2));
    let after = lab.stats();
    assert!(after.reason("drop-spoofed-source") - before.reason("drop-spoofed-source") >= 2);
}

/// Sends one datagram from `ns` on a socket connected to `to` and returns the error its
/// receive ends with (an ICMP error reported to the socket, or the 3 s timeout).
fn udp_answer_error(ns: &netpath_tests::Netns, to: SocketAddrV4) -> std::io::Error {
    ns.run(move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        s.connect(to).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.send(b"anyone?").unwrap();
        s.recv(&mut [0u8; 16]).unwrap_err()
    })
    .join()
    .unwrap()
}

#[test]
fn port_unreachable_from_the_outside_reaches_the_container_socket() {
    let lab = lab_with_agent(&[]);
    lab.add_endpoint("a", 0);
    let err = udp_answer_error(&lab.containers[0], SocketAddrV4::new(OUTSIDE_IP, 9999));
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "got {err}");
}

#[test]
fn a_published_udp_port_without_listener_refuses_the_outside_client() {
    let lab = lab_with_agent(&[]);
    lab.add_endpoint("dns", 0);
    lab.netpath_ok(&["port", "add", "--proto", "udp", "5353", "dns:53"]);
    // The container's kernel answers with port unreachable, quoting the datagram as it
    // arrived (to the pod address); the client must get it about NODE:5353 to see it.
    let err = udp_answer_error(&lab.outside, SocketAddrV4::new(NODE_UPLINK_IP, 5353));
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "got {err}");
}

/// An ICMP "fragmentation needed" (next-hop MTU `mtu`) about the UDP datagram
/// `node:nport -> outside:dport`, as a router on the outside would send it.
fn frag_needed(nport: u16, dport: u16, mtu: u16) -> Vec<u8> {
    use netpath_tests::pkt;
    let quoted_len = 1400u16;
    let mut inner = vec![0x45, 0];
    inner.extend_from_slice(&quoted_len.to_be_bytes());
    inner.extend_from_slice(&[0, 1, 0x40, 0, 63, pkt::UDP, 0, 0]);
    inner.extend_from_slice(&NODE_UPLINK_IP.octets());
    inner.extend_from_slice(&OUTSIDE_IP.octets());
    let c = pkt::csum(&inner);
    inner[10..12].copy_from_slice(&c.to_be_bytes());
    inner.extend_from_slice(&nport.to_be_bytes());
    inner.extend_from_slice(&dport.to_be_bytes());
    inner.extend_from_slice(&(quoted_len - 20).to_be_bytes());
    inner.extend_from_slice(&[0, 0]);
    let mut icmp = vec![3, 4, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend(inner);
    let c = pkt::csum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    icmp
}

#[test]
fn fragmentation_needed_reaches_the_container_as_a_path_mtu_update() {
    let lab = lab_with_agent(&[]);
    lab.add_endpoint("a", 0);
    let s = lab.outside.bind_udp((OUTSIDE_IP, 9004));
    let server = std::thread::spawn(move || {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (_, from) = s.recv_from(&mut [0u8; 64]).unwrap();
        from
    });
    let client = lab.containers[0]
        .run(|| {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
            s.connect((OUTSIDE_IP, 9004)).unwrap();
            s.send(b"big data follows").unwrap();
            s
        })
        .join()
        .unwrap();
    let SocketAddr::V4(translated) = server.join().unwrap() else { panic!("not IPv4") };
    assert_eq!(*translated.ip(), NODE_UPLINK_IP);

    // The outside host plays the router that cannot forward 1400 bytes.
    let icmp = frag_needed(translated.port(), 9004, 1200);
    lab.outside
        .run(move || {
            // SAFETY: plain socket syscalls on a descriptor this closure owns and closes.
            unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
                assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
                let to = libc::sockaddr_in {
                    sin_family: libc::AF_INET as u16,
                    sin_port: 0,
                    sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(NODE_UPLINK_IP.octets()) },
                    sin_zero: [0; 8],
                };
                let n = libc::sendto(
                    fd,
                    icmp.as_ptr().cast(),
                    icmp.len(),
                    0,
                    (&to as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                );
                assert_eq!(n, icmp.len() as isize, "sendto: {}", std::io::Error::last_os_error());
                libc::close(fd);
            }
        })
        .join()
        .unwrap();

    // A poll, not a timing: the bound only decides how long a red run waits.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let route = String::from_utf8_lossy(
            &lab.containers[0].exec(&["ip", "route", "get", &OUTSIDE_IP.to_string()]).stdout,
        )
        .into_owned();
        if route.contains("mtu 1200") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no PMTU update in the container: {route}");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(client);
}

/// A bash /dev/tcp client run as a node process: sends a line, prints what comes back.
fn node_client(lab: &Lab, ip: &str, port: u16) -> std::process::Output {
    let script = format!("exec 3<>/dev/tcp/{ip}/{port} && echo ping >&3 && head -c 5 <&3");
    lab.node_process(&["timeout", "5", "bash", "-c", &script])
}

#[test]
fn node_processes_reach_published_ports_via_node_address_and_loopback() {
    // The hook acts only in the node's namespace, known by its cookie.
    if !netpath_tests::kernel_has(5, 14, "SO_NETNS_COOKIE") {
        return;
    }
    let lab = lab_with_agent(&[]);
    let a = lab.add_endpoint("web", 0);
    lab.netpath_ok(&["port", "add", "8080", "web:80"]);
    let listener = lab.containers[0].run(move || TcpListener::bind((a, 80))).join().unwrap().unwrap();
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut s, _) = listener.accept().unwrap();
            let mut line = [0u8; 5];
            s.read_exact(&mut line).unwrap();
            s.write_all(b"pong\n").unwrap();
        }
    });
    let before = lab.stats();
    for ip in [NODE_UPLINK_IP.to_string(), "127.0.0.1".to_string()] {
        let out = node_client(&lab, &ip, 8080);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "pong\n",
            "via {ip}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    server.join().unwrap();
    assert_eq!(lab.stats().reason("node-local-connect") - before.reason("node-local-connect"), 2);
    // Outside the lab's cgroup (any other process of the machine) the hook does nothing,
    let probe = ["timeout", "3", "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080"];
    assert!(!lab.node.exec(&probe).status.success(), "a process outside the lab's cgroup was redirected");
    // and inside it, only in the node's namespace.
    assert!(!lab.cgroup_process(&lab.outside, &probe).status.success(), "redirected in another namespace");
    assert_eq!(lab.stats().reason("node-local-connect") - before.reason("node-local-connect"), 2);
}

/// Docker's `-p 127.0.0.1:8081:80`: node processes reach it on loopback; nobody reaches
/// it on the node address, from outside or from the node.
#[test]
fn a_port_published_on_loopback_is_for_node_processes_only() {
    if !netpath_tests::kernel_has(5, 14, "SO_NETNS_COOKIE") {
        return;
    }
    let lab = lab_with_agent(&[]);
    let a = lab.add_endpoint("web", 0);
    lab.netpath_ok(&["port", "add", "8081", "web:80", "--host-ip", "127.0.0.1"]);
    let listener = lab.containers[0].run(move || TcpListener::bind((a, 80))).join().unwrap().unwrap();
    listener.set_nonblocking(true).unwrap();
    let out = node_client(&lab, "127.0.0.1", 8081);
    let mut accepted = None;
    for _ in 0..100 {
        if let Ok((mut s, _)) = listener.accept() {
            s.set_nonblocking(false).unwrap();
            let mut line = [0u8; 5];
            s.read_exact(&mut line).unwrap();
            accepted = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        accepted.is_some(),
        "127.0.0.1:8081 did not reach the container: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not on the node address: neither from the node nor from outside.
    assert!(!node_client(&lab, &NODE_UPLINK_IP.to_string(), 8081).status.success());
    let outside = lab
        .outside
        .run(|| TcpStream::connect_timeout(&(NODE_UPLINK_IP, 8081).into(), Duration::from_secs(2)));
    assert!(outside.join().unwrap().is_err(), "the outside reached a loopback-only port");
    assert!(listener.accept().is_err(), "a connection arrived that should not have");
    let list: serde_json::Value =
        serde_json::from_str(&lab.netpath_ok(&["port", "list", "-o", "json"])).unwrap();
    assert!(list["ports"].as_array().unwrap().iter().any(|p| p["host_ip"] == "127.0.0.1"), "{list}");
}

#[test]
fn node_udp_clients_reach_published_ports_and_see_the_address_they_asked_for() {
    if !netpath_tests::kernel_has(5, 14, "SO_NETNS_COOKIE") {
        return;
    }
    let lab = lab_with_agent(&[]);
    let a = lab.add_endpoint("dns", 0);
    lab.netpath_ok(&["port", "add", "--proto", "udp", "5353", "dns:53"]);
    let server = lab.containers[0].run(move || UdpSocket::bind((a, 53))).join().unwrap().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = server.recv_from(&mut buf) {
            let reply = [b"pong:", &buf[..n]].concat();
            let _ = server.send_to(&reply, from);
        }
    });
    let probe = netpath_tests::tool(env!("CARGO_BIN_EXE_udp-probe"));
    let probe = probe.to_str().unwrap();
    let before = lab.stats();
    for ip in [NODE_UPLINK_IP.to_string(), "127.0.0.1".to_string()] {
        let to = format!("{ip}:5353");
        // Unconnected: sendto() is redirected per datagram, and the reply must appear
        // to come from where the datagram went, or a resolver would discard it.
        let out = lab.node_process(&[probe, &to, "hi"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("from {to}: pong:hi\n"),
            "unconnected via {ip}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Connected: the peer the socket reports is the published address too.
        let out = lab.node_process(&[probe, &to, "hey", "--connect"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("peer {to}\nfrom {to}: pong:hey\n"),
            "connected via {ip}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // One redirection per socket, not per datagram, each remembered by socket.
    assert_eq!(lab.stats().reason("node-local-connect") - before.reason("node-local-connect"), 4);
    let rev: serde_json::Value =
        serde_json::from_str(&lab.netpath_ok(&["map", "dump", "NODE_LOCAL_REV", "-o", "json"])).unwrap();
    let rows = rev["entries"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{rev}");
    assert!(rows.iter().all(|r| r["container"] == format!("{a}:53")), "{rev}");
    assert!(rows.iter().any(|r| r["requested"] == "127.0.0.1:5353"), "{rev}");
    // Outside the lab's cgroup, and in another namespace, nothing is redirected.
    let to = format!("{NODE_UPLINK_IP}:5353");
    assert!(!lab.node.exec(&[probe, &to, "hi"]).status.success(), "redirected outside the cgroup");
    assert!(!lab.cgroup_process(&lab.outside, &[probe, "127.0.0.1:5353", "hi"]).status.success());
}

#[test]
fn xdp_fast_path_carries_published_ports_and_masquerade_replies() {
    let lab = lab_with_agent(&["--xdp"]);
    let a = lab.add_endpoint("web", 0);
    lab.netpath_ok(&["port", "add", "8080", "web:80"]);
    let before = lab.stats();
    let server = echo_server(&lab.containers[0], SocketAddrV4::new(a, 80), 2 * MIB);
    let local =
        echo_client(&lab.outside, SocketAddrV4::new(NODE_UPLINK_IP, 8080), 2 * MIB).expect("dnat via xdp");
    assert_eq!(server.join().unwrap(), local);
    let outside = echo_server(&lab.outside, SocketAddrV4::new(OUTSIDE_IP, 9000), 2 * MIB);
    echo_client(&lab.containers[0], SocketAddrV4::new(OUTSIDE_IP, 9000), 2 * MIB)
        .expect("snat replies via xdp");
    assert_eq!(outside.join().unwrap().ip(), IpAddr::V4(NODE_UPLINK_IP));
    let after = lab.stats();
    let xdp = after.reason_bytes("xdp-translated") - before.reason_bytes("xdp-translated");
    assert!(xdp >= 4 * MIB as u64, "only {xdp} bytes came through XDP");
    // The lab's uplink is a veth, where XDP costs the peer its GSO: the operator is told.
    assert!(lab.agent_log().contains("--xdp on a veth uplink turns off GSO"), "{}", lab.agent_log());
}

/// Docker's -p forms: a range, a free host port chosen by netpath, TCP and UDP on one
/// port; a range is published all or not at all.
#[test]
fn port_ranges_free_host_ports_and_both_protocols_on_one_port() {
    let lab = lab_with_agent(&[]);
    let a = lab.add_endpoint("web", 0);
    let out = lab.netpath_ok(&["port", "add", "8000-8002", "web:80-82"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    let list = |lab: &Lab| -> Vec<(String, u64, u64)> {
        let v: serde_json::Value =
            serde_json::from_str(&lab.netpath_ok(&["port", "list", "-o", "json"])).unwrap();
        v["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let proto = p["proto"].as_str().unwrap().to_string();
                (proto, p["host_port"].as_u64().unwrap(), p["container_port"].as_u64().unwrap())
            })
            .collect()
    };
    let tcp = |h, c| ("tcp".to_string(), h, c);
    assert_eq!(list(&lab), [tcp(8000, 80), tcp(8001, 81), tcp(8002, 82)]);
    netpath_tests::echo_server(&lab.containers[0], SocketAddrV4::new(a, 81));
    netpath_tests::tcp_echo_once_to(&lab.outside, SocketAddr::from((NODE_UPLINK_IP, 8001)));

    // All or none: 8002 is taken, so 8003 and 8004 are not published either.
    let o = lab.netpath(&["port", "add", "8002-8004", "web:90-92"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("8002"), "{o:?}");
    assert_eq!(list(&lab).len(), 3);
    let o = lab.netpath(&["port", "add", "8010-8012", "web:80-81"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("differ in length"), "{o:?}");

    // A host range for one container port: the first free port of the range, until
    // none is left (8021 is published already, 8022 held by a node socket).
    lab.netpath_ok(&["port", "add", "8021", "web:81"]);
    let _held = lab.node.run(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, 8022)).unwrap()).join().unwrap();
    let out = lab.netpath_ok(&["port", "add", "8020-8023", "web:82"]);
    assert!(out.contains("*:8020 -> web"), "{out}");
    let out = lab.netpath_ok(&["port", "add", "8020-8023", "web:82"]);
    assert!(out.contains("*:8023 -> web"), "{out}");
    netpath_tests::echo_server(&lab.containers[0], SocketAddrV4::new(a, 82));
    netpath_tests::tcp_echo_once_to(&lab.outside, SocketAddr::from((NODE_UPLINK_IP, 8023)));
    let o = lab.netpath(&["port", "add", "8020-8023", "web:82"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no free host port for tcp in 8020-8023"), "{o:?}");
    lab.netpath_ok(&["port", "del", "8020-8023"]);

    // No host port: netpath chooses one from 30000-32767 and says which.
    let out = lab.netpath_ok(&["port", "add", "web:80"]);
    let chosen: u16 =
        out.split(['*', ':']).nth(2).and_then(|p| p.split_whitespace().next()?.parse().ok()).unwrap();
    assert!((30000..=32767).contains(&chosen), "{out}");
    assert!(list(&lab).contains(&tcp(chosen as u64, 80)), "{out}");
    netpath_tests::echo_server(&lab.containers[0], SocketAddrV4::new(a, 80));
    netpath_tests::tcp_echo_once_to(&lab.outside, SocketAddr::from((NODE_UPLINK_IP, chosen)));

    // UDP beside TCP on the same host port; a range deleted leaves it.
    lab.netpath_ok(&["port", "add", "--proto", "udp", "8000", "web:80"]);
    lab.netpath_ok(&["port", "del", "8000-8002"]);
    assert_eq!(list(&lab), [tcp(chosen as u64, 80), ("udp".to_string(), 8000, 80)]);
}

/// A host port netpath chooses is none the node's own sockets hold, and none of its
/// ephemeral range: with the node's ephemeral range covering all of 30000-32767 but
/// 32767, a node service listening there leaves nothing to choose.
#[test]
fn a_chosen_host_port_is_not_one_a_node_socket_holds() {
    let lab = lab_with_agent(&[]);
    lab.add_endpoint("web", 0);
    let set = lab.node.exec(&["sysctl", "-w", "net.ipv4.ip_local_port_range=30000 32766"]);
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let service = lab.node.run(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, 32767)).unwrap()).join().unwrap();
    let o = lab.netpath(&["port", "add", "web:80"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no free host port for tcp in 30000-32767"), "{o:?}");
    drop(service);
    let out = lab.netpath_ok(&["port", "add", "web:80"]);
    assert!(out.contains("*:32767 -> web"), "{out}");
    // UDP has its own ports: a TCP listener does not hold them.
    let _tcp = lab.node.run(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, 32767)).unwrap()).join().unwrap();
    let out = lab.netpath_ok(&["port", "add", "--proto", "udp", "web:53"]);
    assert!(out.contains("udp *:32767 -> web"), "{out}");
}

/// The datapath's rare events reach the agent's log with the packet's tuple (aya-log),
/// at most one line per reason, CPU and second however many there are: with one NAT
/// source port, every new flow to the same destination after the first is refused.
#[test]
fn rare_datapath_events_are_logged_with_their_tuple_and_rate_limited() {
    let lab = lab_with_agent(&["--nat-ports", "61000-61000"]);
    let a = lab.add_endpoint("web", 0);
    let flows = 40u16;
    lab.containers[0]
        .run(move || {
            // The first flow takes the one port; the others find none. Kept open, so
            // each new socket is a new flow.
            let socks: Vec<_> =
                (0..=flows).map(|i| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 20_000 + i)).unwrap()).collect();
            for s in &socks {
                s.send_to(b"x", (OUTSIDE_IP, 9005)).unwrap();
            }
        })
        .join()
        .unwrap();
    let refused = |lab: &Lab| lab.stats().reason("drop-nat-ports-exhausted");
    let tuple = format!("proto 17 {a}:200");
    let lines = |log: &str| {
        log.lines().filter(|l| l.contains("no free NAT source port") && l.contains(&tuple)).count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while lines(&lab.agent_log()) == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = lab.agent_log();
    let logged = lines(&log);
    assert_eq!(refused(&lab), flows as u64, "{log}");
    assert!(logged >= 1, "no log line for the refused flows:\n{log}");
    assert!(log.contains(&format!("-> {OUTSIDE_IP}:9005")), "{log}");
    // A handful of CPUs, each logging at most once a second: never one line per packet.
    assert!(logged <= 4, "{logged} lines for {flows} refused flows:\n{log}");
}

/// Docker's `-p 192.168.77.10:8090:80`: a port published on a second address of the
/// uplink is reached there, from outside (the container sees the client) and from the
/// node, and not on the node address; an address the uplink lacks is refused.
#[test]
fn a_port_published_on_another_uplink_address_is_reached_there_only() {
    let lab = lab_with_agent(&[]);
    let a = lab.add_endpoint("web", 0);
    let second = Ipv4Addr::new(192, 168, 77, 10);
    let o = lab.netpath(&["port", "add", "8090", "web:80", "--host-ip", &second.to_string()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("192.168.77.10") && err.contains(&NODE_UPLINK_IP.to_string()),
        "{o:?}"
    );
    let add = lab.node.exec(&["ip", "addr", "add", "192.168.77.10/24", "dev", "uplink0"]);
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    // The agent hears of the address from the kernel.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !lab.netpath(&["port", "add", "8090", "web:80", "--host-ip", "192.168.77.10"]).status.success() {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never took 192.168.77.10\n{}",
            lab.agent_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let server = echo_server(&lab.containers[0], SocketAddrV4::new(a, 80), 1000);
    let client =
        echo_client(&lab.outside, SocketAddrV4::new(second, 8090), 1000).expect("outside via 192.168.77.10");
    assert_eq!(server.join().unwrap(), client, "the container saw another client address");
    let on_node_ip = lab
        .outside
        .run(|| TcpStream::connect_timeout(&(NODE_UPLINK_IP, 8090).into(), Duration::from_secs(2)));
    assert!(on_node_ip.join().unwrap().is_err(), "8090 answered on the node address too");
    if netpath_tests::kernel_has(5, 14, "SO_NETNS_COOKIE") {
        let server = echo_server(&lab.containers[0], SocketAddrV4::new(a, 80), 5);
        let out = node_client(&lab, "192.168.77.10", 8090);
        assert!(out.status.success(), "the node did not reach 192.168.77.10:8090: {out:?}");
        server.join().unwrap();
    }
    // Unpublished, the address is the node's own again.
    lab.netpath_ok(&["port", "del", "8090", "--host-ip", "192.168.77.10"]);
    let gone =
        lab.outside.run(move || TcpStream::connect_timeout(&(second, 8090).into(), Duration::from_secs(2)));
    assert!(gone.join().unwrap().is_err(), "192.168.77.10:8090 still answered");
}

/// Ten thousand mappings in one `port add` call: one state transaction and one map
/// batch. Every one is in the map, and connections through several of them reach the
/// container; several mappings in a row go in one call too, all or none; one `port del`
/// takes them all back.
#[test]
fn ten_thousand_ports_in_one_call_are_all_served_and_deleted_in_one_call() {
    let lab = lab_with_agent(&[]);
    let a = lab.add_endpoint("web", 0);
    let out = lab.netpath_ok(&["port", "add", "20000-29999", "web:40000-49999"]);
    assert_eq!(out.lines().count(), 10_000);
    assert_eq!(lab.map_len("PORT_MAPS"), 10_000);
    for (host, container) in [(20000, 40000), (24321, 44321), (29999, 49999)] {
        netpath_tests::echo_server(&lab.containers[0], SocketAddrV4::new(a, container));
        netpath_tests::tcp_echo_once_to(&lab.outside, SocketAddr::from((NODE_UPLINK_IP, host)));
    }

    // Several mappings in a row: one call, all or none (8080 is taken by the first).
    let out = lab.netpath_ok(&["port", "add", "8080", "web:80", "8443", "web:443", "web:81"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    let o = lab.netpath(&["port", "add", "9000", "web:90", "8080", "web:82"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("8080") && err.trim().lines().count() == 1, "{o:?}");
    let list: serde_json::Value =
        serde_json::from_str(&lab.netpath_ok(&["port", "list", "-o", "json"])).unwrap();
    let ports = list["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 10_003);
    assert!(!ports.iter().any(|p| p["host_port"] == 9000), "a refused batch left 9000 published");
    assert_eq!(lab.map_len("PORT_MAPS"), 10_003);

    lab.netpath_ok(&["port", "del", "20000-29999", "8080", "8443"]);
    assert_eq!(lab.map_len("PORT_MAPS"), 1);
    let left: serde_json::Value =
        serde_json::from_str(&lab.netpath_ok(&["port", "list", "-o", "json"])).unwrap();
    assert_eq!(left["ports"].as_array().unwrap().len(), 1, "{left}");
    let gone = lab.outside.run(|| {
        std::net::TcpStream::connect_timeout(
            &SocketAddr::from((NODE_UPLINK_IP, 24321)),
            Duration::from_secs(1),
        )
    });
    assert!(gone.join().unwrap().is_err(), "an unpublished port still reaches the container");
}

/// A published container answers other containers without the conntrack lookup while
/// no hairpin lives: the datapath counts each hairpin it opens, the agent's collection
/// passes say when none is left. Both halves must hold: a hairpin opened after passes
/// that found none is still translated (its count moved), and a live one stays
/// translated across passes (a pass sees its entries and clears nothing). Either half
/// missing, the server's replies reach the client with the server's own address: the
/// connect or the second exchange fails.
#[test]
fn a_hairpin_after_quiet_collection_passes_is_translated_and_stays_so_across_them() {
    let lab = lab_with_agent(&["--ct-gc-interval", "1"]);
    let web = lab.add_endpoint("web", 0);
    let client = lab.add_endpoint("client", 1);
    lab.netpath_ok(&["port", "add", "8080", "web:80"]);
    let (listen, target) = (SocketAddr::from((web, 80)), SocketAddr::from((NODE_UPLINK_IP, 8080)));
    let peer = lab.hairpin_across_passes(&lab.containers[0], listen, &lab.containers[1], target);
    assert_eq!(peer.ip(), IpAddr::V4(client), "the hairpin keeps the client's address");
}
