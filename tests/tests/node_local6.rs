//! Node processes reaching ports published on IPv6, with real sockets in the lab's
//! namespaces: the cgroup hooks connect6/sendmsg6 send a socket of the node's namespace
//! that asks for [NODE_IP6]:PORT or [::1]:PORT straight to the container, and
//! recvmsg6/getpeername6 show it the address it asked for. The node forwards no IPv6
//! itself (ip6tables FORWARD DROP, no NAT rule) and nothing on it listens on the
//! published ports: only the hooks can make these connections succeed. Each test also
//! runs its client where the hooks must not act (outside the lab's cgroup, in another
//! namespace) and sees it fail there.
use std::{
    io::{Read as _, Write as _},
    net::{Ipv6Addr, SocketAddr, TcpListener, UdpSocket},
    process::Output,
};

use netpath_tests::{Lab, Netns};
use serde_json::Value;

const POD_CIDR6: &str = "fd00:77::/64";
const NODE_IP6: &str = "fd00:99::1";

/// A lab whose uplink has IPv6 (the node fd00:99::1, the outside fd00:99::2), whose node
/// forwards no IPv6 itself, with an agent on `--pod-cidr6` and endpoint "a"; `None` on
/// kernels without SO_NETNS_COOKIE, where the hooks cannot tell the node's namespace and
/// do nothing.
fn lab() -> Option<Lab> {
    if !netpath_tests::kernel_has(5, 14, "SO_NETNS_COOKIE") {
        return None;
    }
    let mut lab = Lab::new(1);
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
    lab.start_agent_with(&["--pod-cidr6", POD_CIDR6]);
    lab.add_endpoint("a", 0);
    Some(lab)
}

/// A dual-stack TCP server on [::]:`port` in the container: answers each connection
/// with `pong:` and what it read, then closes.
fn tcp_server(lab: &Lab, port: u16) {
    let addr = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
    let listener = lab.containers[0].run(move || TcpListener::bind(addr)).join().unwrap().expect("bind");
    std::thread::spawn(move || {
        while let Ok((mut s, _)) = listener.accept() {
            let mut msg = Vec::new();
            let _ = s.read_to_end(&mut msg);
            let _ = s.write_all(&[b"pong:", &msg[..]].concat());
        }
    });
}

/// A UDP server on [::]:`port` in the container that answers `pong:` and the datagram.
fn udp_server(lab: &Lab, port: u16) {
    let addr = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
    let server = lab.containers[0].run(move || UdpSocket::bind(addr)).join().unwrap().expect("bind");
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = server.recv_from(&mut buf) {
            let _ = server.send_to(&[b"pong:", &buf[..n]].concat(), from);
        }
    });
}

fn tcp_probe() -> String {
    netpath_tests::tool(env!("CARGO_BIN_EXE_tcp-probe")).to_str().unwrap().to_string()
}

fn udp_probe() -> String {
    netpath_tests::tool(env!("CARGO_BIN_EXE_udp-probe")).to_str().unwrap().to_string()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn redirects(lab: &Lab) -> u64 {
    lab.stats().reason("node-local-connect")
}

/// NODE_LOCAL_REV6's rows (`container`, `requested`).
fn rev6(lab: &Lab) -> Vec<Value> {
    let v: Value =
        serde_json::from_str(&lab.netpath_ok(&["map", "dump", "NODE_LOCAL_REV6", "-o", "json"])).unwrap();
    v["entries"].as_array().unwrap().clone()
}

#[test]
fn node_processes_reach_a_port_published_on_both_families_via_the_ipv6_node_address_and_loopback() {
    let Some(lab) = lab() else { return };
    let a6 = lab.endpoint_ip6("a");
    tcp_server(&lab, 80);
    lab.netpath_ok(&["port", "add", "8080", "a:80"]);
    let probe = tcp_probe();
    let before = redirects(&lab);
    for to in [format!("[{NODE_IP6}]:8080"), "[::1]:8080".to_string()] {
        let out = lab.node_process(&[&probe, &to, "hi"]);
        // getpeername: the address asked for, not the container's.
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("peer {to}\nreply pong:hi\n"),
            "via {to}: {}\n{}",
            text(&out),
            lab.agent_log()
        );
    }
    assert_eq!(redirects(&lab) - before, 2);
    let rows = rev6(&lab);
    assert!(rows.iter().all(|r| r["container"] == format!("[{a6}]:80")), "{rows:?}");
    for to in [format!("[{NODE_IP6}]:8080"), "[::1]:8080".to_string()] {
        assert!(rows.iter().any(|r| r["requested"] == to), "{to} not remembered: {rows:?}");
    }
    // Outside the lab's cgroup (any other process of the machine) the hooks do nothing,
    let loopback = ["timeout", "5", &probe, "[::1]:8080", "hi"];
    assert!(!lab.node.exec(&loopback).status.success(), "redirected outside the lab's cgroup");
    // and inside it, only in the node's namespace.
    assert!(!lab.cgroup_process(&lab.outside, &loopback).status.success(), "redirected in another namespace");
    // An IPv4-mapped address is IPv4's business: an IPv6 socket connects to it without
    // IPv4's hooks, and IPv6's leave it, so nothing takes 127.0.0.1:8080 on the node.
    let mapped = lab.node_process(&["timeout", "5", &probe, "[::ffff:127.0.0.1]:8080", "hi"]);
    assert!(!mapped.status.success(), "an IPv4-mapped address was redirected: {}", text(&mapped));
    assert_eq!(redirects(&lab) - before, 2);
}

/// `--host-ip ::1`, docker's `-p [::1]:8085:80`: node processes reach it on IPv6
/// loopback; nobody reaches it on the node's addresses, from the node or from outside.
#[test]
fn a_port_published_on_ipv6_loopback_is_for_node_processes_only() {
    let Some(lab) = lab() else { return };
    tcp_server(&lab, 80);
    lab.netpath_ok(&["port", "add", "8085", "a:80", "--host-ip", "::1"]);
    let probe = tcp_probe();
    let out = lab.node_process(&[&probe, "[::1]:8085", "hi"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "peer [::1]:8085\nreply pong:hi\n",
        "[::1]:8085 did not reach the container: {}\n{}",
        text(&out),
        lab.agent_log()
    );
    // Not on the node's IPv6 address, nor on IPv4 loopback or address: from the node,
    for to in [format!("[{NODE_IP6}]:8085"), "127.0.0.1:8085".to_string()] {
        let out = lab.node_process(&["timeout", "5", &probe, &to, "hi"]);
        assert!(!out.status.success(), "{to} reached a port published on ::1: {}", text(&out));
    }
    let node4 = format!("{}:8085", netpath_tests::NODE_UPLINK_IP);
    assert!(!lab.node_process(&["timeout", "5", &probe, &node4, "hi"]).status.success());
    // nor from outside.
    for to in [format!("[{NODE_IP6}]:8085"), node4] {
        let out = lab.outside.exec(&["timeout", "5", &probe, &to, "hi"]);
        assert!(!out.status.success(), "the outside reached a loopback-only port on {to}: {}", text(&out));
    }
    let list: Value = serde_json::from_str(&lab.netpath_ok(&["port", "list", "-o", "json"])).unwrap();
    assert!(list["ports"].as_array().unwrap().iter().any(|p| p["host_ip"] == "::1"), "{list}");
    let ports: Value =
        serde_json::from_str(&lab.netpath_ok(&["map", "dump", "PORT_MAPS6", "-o", "json"])).unwrap();
    let rows = ports["entries"].as_array().unwrap();
    assert!(rows.len() == 1 && rows[0]["host_ip"] == "::1", "{ports}");
    assert_eq!(lab.map_len("PORT_MAPS"), 0, "an IPv6 loopback port is IPv6 only");
}

#[test]
fn node_udp_clients_reach_ipv6_published_ports_and_see_the_address_they_asked_for() {
    let Some(lab) = lab() else { return };
    let a6 = lab.endpoint_ip6("a");
    udp_server(&lab, 53);
    lab.netpath_ok(&["port", "add", "--proto", "udp", "5353", "a:53"]);
    let probe = udp_probe();
    let before = redirects(&lab);
    for to in [format!("[{NODE_IP6}]:5353"), "[::1]:5353".to_string()] {
        // Unconnected: sendto() is redirected per datagram, and the reply must appear
        // to come from where the datagram went (recvmsg6), or a resolver would drop it.
        let out = lab.node_process(&[&probe, &to, "hi"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("from {to}: pong:hi\n"),
            "unconnected via {to}: {}\n{}",
            text(&out),
            lab.agent_log()
        );
        // Connected: the peer the socket reports is the published address too.
        let out = lab.node_process(&[&probe, &to, "hey", "--connect"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("peer {to}\nfrom {to}: pong:hey\n"),
            "connected via {to}: {}",
            text(&out)
        );
    }
    // One redirection per socket, not per datagram, each remembered by socket.
    assert_eq!(redirects(&lab) - before, 4);
    let rows = rev6(&lab);
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(rows.iter().all(|r| r["container"] == format!("[{a6}]:53")), "{rows:?}");
    assert!(rows.iter().any(|r| r["requested"] == "[::1]:5353"), "{rows:?}");
    // Outside the lab's cgroup, and in another namespace, nothing is redirected.
    let to = format!("[{NODE_IP6}]:5353");
    assert!(!lab.node.exec(&[&probe, &to, "hi"]).status.success(), "redirected outside the cgroup");
    assert!(!lab.cgroup_process(&lab.outside, &[&probe, "[::1]:5353", "hi"]).status.success());
}
