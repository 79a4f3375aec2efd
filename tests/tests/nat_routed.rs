//! IPv4 on a routed prefix (`netpath agent --masquerade false`): containers reach the
//! outside with their own addresses and the outside reaches them by those, forwarded by
//! the datapath both ways; published ports still answer with the node's address. The
//! node's FORWARD policy is DROP and its nat table is empty, so netfilter carries none
//! of it.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddrV4},
    process::Command,
};

use netpath_tests::{Lab, NODE_UPLINK_IP, OUTSIDE_IP};

const POD_CIDR: &str = "10.77.0.0/24";

/// A lab whose node forwards nothing itself, with an agent started with `args` and
/// endpoint "a".
fn lab_with(args: &[&str]) -> (Lab, Ipv4Addr) {
    let mut lab = Lab::new(1);
    for cmd in [&["iptables", "-P", "FORWARD", "DROP"][..], &["iptables", "-t", "nat", "-F"]] {
        let o = lab.node.exec(cmd);
        assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    lab.start_agent_with(args);
    let a = lab.add_endpoint("a", 0);
    (lab, a)
}

/// The outside host learns the pod CIDR's route: through the node.
fn route_back(lab: &Lab) {
    let o = lab.outside.exec(&["ip", "route", "add", POD_CIDR, "via", &NODE_UPLINK_IP.to_string()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn ipv4_on_a_routed_prefix_leaves_and_arrives_with_the_container_address() {
    let (lab, a) = lab_with(&["--masquerade", "false"]);
    let cfg = lab.netpath_ok(&["map", "dump", "NODE_CONFIG", "-o", "json"]);
    assert!(cfg.contains("\"masquerade\":false"), "{cfg}");
    let before = lab.stats();
    let forwarded = lab.node.snmp("Ip", "ForwDatagrams");
    // Without a route back to the pod CIDR the outside cannot answer: nothing is
    // translated.
    let server = netpath_tests::tcp_echo_peers(&lab.outside, SocketAddrV4::new(OUTSIDE_IP, 9000), 1);
    assert!(
        netpath_tests::tcp_echo_to(&lab.containers[0], SocketAddrV4::new(OUTSIDE_IP, 9000)).is_err(),
        "answered untranslated?"
    );
    route_back(&lab);
    netpath_tests::tcp_echo_to(&lab.containers[0], SocketAddrV4::new(OUTSIDE_IP, 9000))
        .unwrap_or_else(|e| panic!("TCP on a routed prefix: {e}\n{}", lab.agent_log()));
    assert_eq!(server.join().unwrap()[0].ip(), IpAddr::V4(a), "the outside saw another address");
    // The outside reaches the container by its address (ICMP, and TCP to its port).
    assert!(lab.outside.ping(a, 2), "ping from the outside\n{}", lab.agent_log());
    let server =
        netpath_tests::tcp_echo_peers(&lab.containers[0], SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 9001), 1);
    netpath_tests::tcp_echo_to(&lab.outside, SocketAddrV4::new(a, 9001))
        .unwrap_or_else(|e| panic!("TCP from the outside to {a}: {e}\n{}", lab.agent_log()));
    assert_eq!(server.join().unwrap()[0].ip(), IpAddr::V4(OUTSIDE_IP));
    // The datapath did it, untranslated: the node's stack forwarded nothing (its policy
    // is DROP), no flow was masqueraded.
    assert_eq!(lab.node.snmp("Ip", "ForwDatagrams"), forwarded, "the node's stack forwarded");
    let after = lab.stats();
    assert!(after.reason("routed") - before.reason("routed") >= 8, "too few routed packets");
    assert_eq!(after.reason("snat-new-flow"), before.reason("snat-new-flow"), "masqueraded");
}

#[test]
fn a_published_port_on_a_routed_prefix_answers_with_the_node_address() {
    let (lab, a) = lab_with(&["--masquerade", "false"]);
    route_back(&lab);
    let server =
        netpath_tests::tcp_echo_peers(&lab.containers[0], SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 9000), 2);
    lab.netpath_ok(&["port", "add", "8080", "a:9000"]);
    // To the node's address: the reply must leave translated back, or the client's
    // stack would not know it.
    netpath_tests::tcp_echo_to(&lab.outside, SocketAddrV4::new(NODE_UPLINK_IP, 8080))
        .unwrap_or_else(|e| panic!("published port on a routed prefix: {e}\n{}", lab.agent_log()));
    // To the container's own address: routed, both ways untranslated.
    netpath_tests::tcp_echo_to(&lab.outside, SocketAddrV4::new(a, 9000))
        .expect("the container's own address");
    let peers = server.join().unwrap();
    assert!(peers.iter().all(|p| p.ip() == IpAddr::V4(OUTSIDE_IP)), "{peers:?}");
    // What the published container opens itself leaves with its own address.
    let server = netpath_tests::tcp_echo_peers(&lab.outside, SocketAddrV4::new(OUTSIDE_IP, 9001), 1);
    netpath_tests::tcp_echo_to(&lab.containers[0], SocketAddrV4::new(OUTSIDE_IP, 9001))
        .unwrap_or_else(|e| panic!("TCP out of a published container: {e}\n{}", lab.agent_log()));
    assert_eq!(server.join().unwrap()[0].ip(), IpAddr::V4(a), "the routed prefix was masqueraded");
}

#[test]
fn masquerading_stays_the_default() {
    let (lab, _) = lab_with(&[]);
    let cfg = lab.netpath_ok(&["map", "dump", "NODE_CONFIG", "-o", "json"]);
    assert!(cfg.contains("\"masquerade\":true"), "{cfg}");
    route_back(&lab);
    let server = netpath_tests::tcp_echo_peers(&lab.outside, SocketAddrV4::new(OUTSIDE_IP, 9000), 1);
    netpath_tests::tcp_echo_to(&lab.containers[0], SocketAddrV4::new(OUTSIDE_IP, 9000))
        .unwrap_or_else(|e| panic!("TCP masqueraded: {e}\n{}", lab.agent_log()));
    assert_eq!(server.join().unwrap()[0].ip(), IpAddr::V4(NODE_UPLINK_IP), "not masqueraded");
}

#[test]
fn a_bad_masquerade_value_is_one_clear_error_and_changes_nothing() {
    let lab = Lab::new(0);
    let file = lab.work_dir.join("agent.toml");
    std::fs::write(&file, "masquerade = \"maybe\"\n").unwrap();
    let before = lab.residue();
    let file_arg = file.display().to_string();
    for (args, want) in [
        (&["agent", "--masquerade", "maybe", "--metrics", "off"][..], &["maybe", "--masquerade"][..]),
        (&["agent", "--config", &file_arg, "--metrics", "off"], &["`masquerade`", "maybe"]),
    ] {
        let mut cmd = Command::new("timeout");
        cmd.arg("20").arg(netpath_tests::netpath_bin()).args(args).stdin(std::process::Stdio::null());
        lab.env_for(&mut cmd);
        let out = netpath_tests::in_netns(&mut cmd, &lab.node.path()).output().expect("run netpath");
        let err = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code();
        assert!(!matches!(code, Some(0) | Some(101) | Some(124) | None), "{args:?}: exit {code:?}\n{err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: not one line:\n{err}");
        for w in want {
            assert!(err.contains(w), "{args:?}: the error does not say {w:?}: {err}");
        }
        assert_eq!(lab.residue(), before, "{args:?} left something behind");
    }
    assert!(!lab.bpffs_dir.exists(), "a refused start left pins");
}
