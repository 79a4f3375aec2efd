//! IPv6 with an IPv6 pod CIDR (`--pod-cidr6`), with real packets: every endpoint gets
//! both families; its gateway fe80::1 is answered by the datapath's neighbour discovery;
//! container to container goes through the datapath (bpf_redirect_peer), never the
//! node's stack; a spoofed source is dropped and counted.
use std::{
    io::{Read as _, Write as _},
    net::{Ipv6Addr, SocketAddrV6, TcpListener, TcpStream},
    time::Duration,
};

use netpath_tests::{Lab, Netns};
use serde_json::Value;

const POD_CIDR6: &str = "fd00:77::/64";

fn ip6_of(lab: &Lab, name: &str) -> Ipv6Addr {
    lab.endpoint_ip6(name)
}

fn ping6(ns: &Netns, dst: Ipv6Addr, src: Option<Ipv6Addr>) -> bool {
    let (dst, src) = (dst.to_string(), src.map(|s| s.to_string()));
    let mut args = vec!["ping", "-6", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1"];
    if let Some(s) = &src {
        args.extend(["-I", s]);
    }
    args.push(&dst);
    ns.exec(&args).status.success()
}

fn out(ns: &Netns, args: &[&str]) -> String {
    String::from_utf8_lossy(&ns.exec(args).stdout).into_owned()
}

#[test]
fn ipv6_between_containers_goes_through_the_datapath_with_its_gateway_answered_there() {
    let (lab, _) = Lab::setup(2).agent(&["--pod-cidr6", POD_CIDR6]).endpoints(&["a", "b"]).build();
    let (a6, b6) = (ip6_of(&lab, "a"), ip6_of(&lab, "b"));
    assert_eq!((a6.to_string().as_str(), b6.to_string().as_str()), ("fd00:77::2", "fd00:77::3"));

    // The container: its address (a /128) and its EUI-64 link-local address, neither
    // tentative (no duplicate address detection), and the default route via fe80::1.
    let a = &lab.containers[0];
    let addrs = out(a, &["ip", "-6", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("fd00:77::2/128"), "{addrs}");
    assert!(addrs.contains("fe80::858:aff:fe4d:2/64"), "{addrs}");
    assert!(!addrs.contains("tentative"), "{addrs}");
    let routes = out(a, &["ip", "-6", "route", "show", "default"]);
    assert!(routes.contains("via fe80::1 dev eth0"), "{routes}");
    // The node routes to it through its host veth.
    let node_routes = out(&lab.node, &["ip", "-6", "route", "show", "fd00:77::2"]);
    assert!(node_routes.contains("fd00:77::2 dev np"), "{node_routes}");

    // The node's own IPv6 forwarding refuses everything: the datapath does not need it.
    assert!(lab.node.exec(&["ip6tables", "-P", "FORWARD", "DROP"]).status.success());
    let before = lab.stats();
    let forwarded = lab.node.snmp6("Ip6OutForwDatagrams");
    assert!(ping6(a, b6, None), "a cannot ping6 b\n{}", lab.agent_log());
    let after = lab.stats();
    // Exactly the three requests and replies delivered; sent, at least those (a
    // container's own IPv6 control traffic, MLD reports say, counts as sent too, checked
    // and handed to the stack).
    for (name, field) in [("b", "rx_packets"), ("a", "rx_packets")] {
        assert_eq!(after.endpoint(name, field) - before.endpoint(name, field), 3, "{name} {field}");
    }
    for name in ["a", "b"] {
        assert!(after.endpoint(name, "tx_packets") - before.endpoint(name, "tx_packets") >= 3, "{name} tx");
    }
    assert!(after.reason("forwarded-to-peer") - before.reason("forwarded-to-peer") >= 6);
    assert!(after.reason("nd-answered") >= 2, "both containers asked for fe80::1: {}", after.0);
    assert_eq!(lab.node.snmp6("Ip6OutForwDatagrams"), forwarded, "the node's stack forwarded IPv6");

    // TCP over IPv6: b sees a's own address.
    let listener = lab.containers[1]
        .run(move || TcpListener::bind(SocketAddrV6::new(b6, 7000, 0, 0)))
        .join()
        .unwrap()
        .unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        peer
    });
    let echoed = a
        .run(move || {
            let mut s = TcpStream::connect_timeout(
                &SocketAddrV6::new(b6, 7000, 0, 0).into(),
                Duration::from_secs(5),
            )?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"netpath")?;
            let mut back = [0u8; 7];
            s.read_exact(&mut back)?;
            Ok::<_, std::io::Error>(back)
        })
        .join()
        .unwrap()
        .expect("tcp over ipv6");
    assert_eq!(&echoed, b"netpath");
    assert_eq!(server.join().unwrap().ip(), std::net::IpAddr::V6(a6));

    // `endpoint del` takes b's IPv6 entries and route with it.
    lab.netpath_ok(&["endpoint", "del", "b"]);
    let six = lab.netpath_ok(&["map", "dump", "ENDPOINTS6", "-o", "json"]);
    let six: Value = serde_json::from_str(&six).unwrap();
    let left: Vec<&str> =
        six["entries"].as_array().unwrap().iter().map(|e| e["ip"].as_str().unwrap()).collect();
    assert_eq!(left.len(), 2, "a's address and link-local address only: {left:?}");
    assert!(left.contains(&"fd00:77::2") && !left.contains(&"fd00:77::3"), "{left:?}");
    assert!(out(&lab.node, &["ip", "-6", "route", "show", "fd00:77::3"]).trim().is_empty());
}

#[test]
fn a_spoofed_ipv6_source_is_dropped_and_counted() {
    let (lab, _) = Lab::setup(2).agent(&["--pod-cidr6", POD_CIDR6]).endpoints(&["a", "b"]).build();
    let b6 = ip6_of(&lab, "b");
    let a = &lab.containers[0];
    assert!(ping6(a, b6, None), "a cannot ping6 b\n{}", lab.agent_log());
    // An address a gives itself: its packets never reach b.
    let fake: Ipv6Addr = "fd00:77::99".parse().unwrap();
    assert!(a.exec(&["ip", "-6", "addr", "add", "fd00:77::99/128", "dev", "eth0", "nodad"]).status.success());
    let before = lab.stats().reason("drop-spoofed-source");
    assert!(!ping6(a, b6, Some(fake)), "a spoofed source got through");
    assert!(lab.stats().reason("drop-spoofed-source") - before >= 3);
}

#[test]
fn bad_ipv6_requests_get_one_clear_error_and_change_nothing() {
    let mut lab = Lab::new(2);
    // The agent refuses an IPv6 pod CIDR no container may use.
    for (cidr, says) in
        [("fe80::/64", "link-local"), ("fd00:77::/40", "/48 to /120"), ("10.0.0.0/24", "not an IPv6 CIDR")]
    {
        let o = lab.netpath(&["agent", "--pod-cidr6", cidr]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(cidr) && err.contains(says), "{cidr}: {err}");
    }
    lab.start_agent_with(&["--pod-cidr6", POD_CIDR6]);
    lab.add_endpoint("a", 0);
    let before = lab.residue();
    let path = lab.containers[1].path();
    let netns = path.to_str().unwrap();
    for (ip6, says) in [
        ("fd00:78::5", "outside the IPv6 pod CIDR fd00:77::/64"),
        ("fd00:77::1", "reserved"),
        ("fd00:77::2", "already used by endpoint a"),
    ] {
        let o = lab.netpath(&["endpoint", "add", "b", "--netns", netns, "--ip6", ip6]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(ip6) && err.contains(says), "{ip6}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert_eq!(lab.residue(), before, "a refused add left something behind");
    }
    // A link below 1280 bytes cannot carry IPv6 (Linux takes it off the link): refused
    // before anything is built, not half way.
    let o = lab.netpath(&["endpoint", "add", "b", "--netns", netns, "--mtu", "1279"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("MTU 1279") && err.contains("1280 or more"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert_eq!(lab.residue(), before, "a refused add left something behind");
    // So is a declared one, when the plan is made: a (kept as it is) stays.
    let file = lab.work_dir.join("small-mtu.toml");
    let a_ns = lab.containers[0].path().display().to_string();
    std::fs::write(
        &file,
        format!("[[endpoints]]\nname = \"a\"\nnetns = \"{a_ns}\"\n\n[[endpoints]]\nname = \"b\"\nnetns = \"{netns}\"\nmtu = 1279\n"),
    )
    .unwrap();
    let o = lab.netpath(&["apply", "-f", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("MTU 1279") && err.contains("`mtu`"), "{err}");
    assert_eq!(lab.residue(), before, "a refused apply left something behind");
    // A chosen address is taken as given.
    lab.netpath_ok(&["endpoint", "add", "b", "--netns", netns, "--ip6", "fd00:77::beef"]);
    assert_eq!(ip6_of(&lab, "b").to_string(), "fd00:77::beef");
    assert!(ping6(&lab.containers[1], ip6_of(&lab, "a"), None));
}

#[test]
fn ipv6_endpoints_survive_a_restart_and_pin_the_ipv6_pod_cidr() {
    let (mut lab, _) = Lab::setup(2).agent(&["--pod-cidr6", POD_CIDR6]).endpoints(&["a", "b"]).build();
    let b6 = ip6_of(&lab, "b");
    lab.stop_agent();
    // Without its IPv6 pod CIDR the agent would strand the endpoints' addresses.
    let err = lab.try_start_agent(&[]).unwrap_err();
    assert!(err.contains("outside --pod-cidr6 (off)"), "{err}");
    lab.start_agent_with(&["--pod-cidr6", POD_CIDR6]);
    assert!(ping6(&lab.containers[0], b6, None), "after the restart\n{}", lab.agent_log());
    // An agent without IPv6 refuses --ip6 with a way out.
    let (lab4, _) = Lab::setup(2).endpoints(&["a"]).build();
    let path = lab4.containers[1].path();
    let o = lab4.netpath(&["endpoint", "add", "b", "--netns", path.to_str().unwrap(), "--ip6", "fd00:77::5"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--pod-cidr6"), "{err}");
}

/// Bytes as bpftool takes them.
fn bytes(b: &[u8]) -> Vec<String> {
    b.iter().map(|x| x.to_string()).collect()
}

#[test]
fn reconcile_and_doctor_hold_the_ipv6_entries_to_the_state() {
    let (lab, _) = Lab::setup(2).agent(&["--pod-cidr6", POD_CIDR6]).endpoints(&["a", "b"]).build();
    let (a6, b6) = (ip6_of(&lab, "a"), ip6_of(&lab, "b"));
    let entry = |ip: &str| -> Option<Value> {
        let six: Value =
            serde_json::from_str(&lab.netpath_ok(&["map", "dump", "ENDPOINTS6", "-o", "json"])).unwrap();
        six["entries"].as_array().unwrap().iter().find(|e| e["ip"] == ip).cloned()
    };
    let slot4 = |ip: &str| -> u64 {
        let four: Value =
            serde_json::from_str(&lab.netpath_ok(&["map", "dump", "ENDPOINTS", "-o", "json"])).unwrap();
        four["entries"].as_array().unwrap().iter().find(|e| e["ip"] == ip).unwrap()["counter_slot"]
            .as_u64()
            .unwrap()
    };
    let b_ip = lab.netpath_ok(&["endpoint", "list", "-o", "json"]);
    let b_ip: Value = serde_json::from_str(&b_ip).unwrap();
    let b_ip = b_ip["endpoints"].as_array().unwrap().iter().find(|e| e["name"] == "b").unwrap()["ip"].clone();
    let b_ip = b_ip.as_str().unwrap().to_string();
    assert_eq!(
        entry(&b6.to_string()).unwrap()["counter_slot"].as_u64(),
        Some(slot4(&b_ip)),
        "b6 counts with b"
    );

    // b's IPv6 entry gone, and one for an address nobody has.
    let pin = lab.bpffs_dir.join("ENDPOINTS6");
    let pin = pin.to_str().unwrap();
    let key = bytes(&b6.octets());
    let mut args = vec!["bpftool", "map", "delete", "pinned", pin, "key"];
    args.extend(key.iter().map(String::as_str));
    netpath_tests::sh(&args);
    let stray: Ipv6Addr = "fd00:77::99".parse().unwrap();
    let a = entry(&a6.to_string()).unwrap();
    let mut value = (a["host_ifindex"].as_u64().unwrap() as u32).to_le_bytes().to_vec();
    value.extend_from_slice(&[0x0a, 0, 0, 0, 0, 0x99]);
    value.extend_from_slice(&[0x0e, 0, 0, 0, 0, 0x99]);
    value.extend_from_slice(&[0, 0, 1, 0]);
    let (key, value) = (bytes(&stray.octets()), bytes(&value));
    let mut args = vec!["bpftool", "map", "update", "pinned", pin, "key"];
    args.extend(key.iter().map(String::as_str));
    args.push("value");
    args.extend(value.iter().map(String::as_str));
    netpath_tests::sh(&args);
    assert!(!ping6(&lab.containers[0], b6, None), "a reaches b6 without its entry");

    // And b's address gone from its interface, and the node's IPv6 forwarding off.
    let b = &lab.containers[1];
    assert!(b.exec(&["ip", "-6", "addr", "del", &format!("{b6}/128"), "dev", "eth0"]).status.success());
    assert!(lab.node.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=0"]).status.success());
    assert!(lab.node.exec(&["ip", "-6", "route", "del", &format!("{b6}/128")]).status.success());
    let doctor = lab.netpath_in_node(&["doctor"]);
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(!doctor.status.success(), "{report}");
    assert!(report.contains(&format!("ENDPOINTS6 has no entry for {b6}")), "{report}");
    assert!(report.contains(&format!("ENDPOINTS6 has an entry for {stray}")), "{report}");
    assert!(report.contains(&format!("address {b6}/128")), "{report}");
    assert!(report.contains("net.ipv6.conf.all.forwarding = 0"), "{report}");
    // b has two drifts, its container side and the node's route to it: doctor lists
    // both, each a finding of its own, as reconcile does.
    let node_route = format!("node route {b6}/128 dev np");
    assert!(report.contains(&node_route), "{report}");
    let json = lab.netpath_in_node(&["doctor", "-o", "json"]);
    let json: Value = serde_json::from_slice(&json.stdout).unwrap();
    let b_findings: Vec<&Value> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == "endpoint b" && f["ok"] == false)
        .collect();
    assert_eq!(b_findings.len(), 2, "{json}");
    assert!(b_findings[0]["detail"].as_str().unwrap().contains(&format!("address {b6}/128")), "{json}");
    assert!(b_findings[1]["detail"].as_str().unwrap().contains(&node_route), "{json}");
    assert!(b_findings.iter().all(|f| f["fix"].as_str().unwrap().contains("netpath reconcile")), "{json}");
    let dry = lab.netpath(&["reconcile", "--dry-run"]);
    let dry = String::from_utf8_lossy(&dry.stdout);
    assert!(dry.contains(&node_route), "{dry}");
    assert!(lab.node.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]).status.success());

    lab.netpath_ok(&["reconcile"]);
    assert_eq!(
        entry(&b6.to_string()).unwrap()["counter_slot"].as_u64(),
        Some(slot4(&b_ip)),
        "written back, same slot"
    );
    assert!(entry(&stray.to_string()).is_none(), "the stray entry is gone");
    assert!(ping6(&lab.containers[0], b6, None), "after reconcile\n{}", lab.agent_log());
    assert!(
        out(&lab.node, &["ip", "-6", "route", "show", &format!("{b6}/128")]).contains("dev np"),
        "node route back"
    );
    let again = lab.netpath(&["reconcile", "--dry-run"]);
    assert!(again.status.success(), "drift left: {}", String::from_utf8_lossy(&again.stdout));

    // The container's IPv6 settings, each changed on its own inside a's namespace:
    // duplicate address detection back on, the kernel making its own addresses, IPv6
    // off (which takes a's addresses and route with it).
    let a = &lab.containers[0];
    let sysctl =
        |key: &str| out(a, &["sysctl", "-n", &format!("net.ipv6.conf.eth0.{key}")]).trim().to_string();
    for (key, bad, want) in
        [("accept_dad", "1", "0"), ("addr_gen_mode", "0", "1"), ("disable_ipv6", "1", "0")]
    {
        let name = format!("net.ipv6.conf.eth0.{key}");
        assert!(a.exec(&["sysctl", "-qw", &format!("{name}={bad}")]).status.success(), "{name}");
        assert_eq!(sysctl(key), bad);
        let says = format!("{name} = {want} (it is {bad})");
        let doctor = lab.netpath_in_node(&["doctor"]);
        let report = String::from_utf8_lossy(&doctor.stdout);
        assert!(!doctor.status.success() && report.contains(&says), "{key}: {report}");
        let dry = lab.netpath(&["reconcile", "--dry-run"]);
        let dry = String::from_utf8_lossy(&dry.stdout);
        assert!(dry.contains("endpoint a") && dry.contains(&says), "{key}: {dry}");
        assert_eq!(sysctl(key), bad, "a dry run changed {key}");

        lab.netpath_ok(&["reconcile"]);
        assert_eq!(sysctl(key), want, "{key} not repaired");
        let addrs = out(a, &["ip", "-6", "addr", "show", "dev", "eth0"]);
        assert!(addrs.contains(&format!("{a6}/128")) && !addrs.contains("tentative"), "{key}: {addrs}");
        assert!(ping6(a, b6, None), "{key}: after reconcile\n{}", lab.agent_log());
        let again = lab.netpath(&["reconcile", "--dry-run"]);
        assert!(again.status.success(), "{key}: drift left: {}", String::from_utf8_lossy(&again.stdout));
    }
}

/// The node's and the outside host's IPv6 addresses on the uplink.
const NODE_UPLINK_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 1);
const OUTSIDE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 2);

/// A lab whose uplink has IPv6 too, whose node forwards no IPv6 itself (ip6tables
/// FORWARD DROP, no NAT rule), with an agent started with `args` and endpoint "a".
fn lab_with_uplink6(args: &[&str]) -> Lab {
    lab_with_uplink6_of(args, &["a"])
}

/// [`lab_with_uplink6`] with the endpoints `names`.
fn lab_with_uplink6_of(args: &[&str], names: &[&str]) -> Lab {
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
    lab.start_agent_with(args);
    for (i, name) in names.iter().enumerate() {
        lab.add_endpoint(name, i);
    }
    lab
}

/// A TCP server on `addr` in `ns` that echoes one message and returns its peer.
fn echo_once(ns: &Netns, addr: SocketAddrV6) -> std::thread::JoinHandle<std::net::SocketAddr> {
    let listener = ns.run(move || TcpListener::bind(addr)).join().unwrap().expect("bind");
    std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        peer
    })
}

fn echo_from(ns: &Netns, to: SocketAddrV6) -> std::io::Result<()> {
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&to.into(), Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"hello")?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf)?;
        assert_eq!(&buf, b"hello");
        Ok(())
    })
    .join()
    .unwrap()
}

#[test]
fn ipv6_to_the_outside_is_masqueraded_to_the_node_address() {
    let lab = lab_with_uplink6(&["--pod-cidr6", POD_CIDR6]);
    let before = lab.node.snmp6("Ip6OutForwDatagrams");
    let server = echo_once(&lab.outside, SocketAddrV6::new(OUTSIDE_IP6, 9000, 0, 0));
    echo_from(&lab.containers[0], SocketAddrV6::new(OUTSIDE_IP6, 9000, 0, 0))
        .unwrap_or_else(|e| panic!("TCP to the outside over IPv6: {e}\n{}", lab.agent_log()));
    let peer = server.join().unwrap();
    assert_eq!(peer.ip(), std::net::IpAddr::V6(NODE_UPLINK_IP6), "the outside saw a pod address");
    assert!((61000..=65535).contains(&peer.port()), "source port {} not from the NAT range", peer.port());
    assert!(ping6(&lab.containers[0], OUTSIDE_IP6, None), "ping6 to the outside\n{}", lab.agent_log());
    // The datapath did it: the node's stack forwarded nothing (and its policy is DROP).
    assert_eq!(lab.node.snmp6("Ip6OutForwDatagrams"), before);
    let stats: Value = serde_json::from_str(&lab.netpath_ok(&["stats", "-o", "json"])).unwrap();
    let reasons = stats.to_string();
    assert!(reasons.contains("snat-new-flow"), "{reasons}");
    // ct list shows the flows, filtered by an IPv6 address.
    let a = ip6_of(&lab, "a").to_string();
    let ct = lab.netpath_ok(&["ct", "list", "--host", "fd00:99::2", "--proto", "tcp", "-o", "json"]);
    assert!(ct.contains(&a) && ct.contains("fd00:99::1"), "{ct}");
    // The uplink's address changes: new flows follow it.
    let moved = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 5);
    for cmd in [
        &["ip", "-6", "addr", "add", "fd00:99::5/64", "dev", "uplink0", "nodad"][..],
        &["ip", "-6", "addr", "del", "fd00:99::1/64", "dev", "uplink0"],
    ] {
        assert!(lab.node.exec(cmd).status.success(), "{cmd:?}");
    }
    // The agent follows the address change on its own time (seconds under emulation):
    // a poll, not a timing; the bound only decides how long a red run waits.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let cfg = lab.netpath_ok(&["map", "dump", "NODE_CONFIG6", "-o", "json"]);
        if cfg.contains(&format!("\"{moved}\"")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent kept the old address: {cfg}\n{}",
            lab.agent_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let server = echo_once(&lab.outside, SocketAddrV6::new(OUTSIDE_IP6, 9002, 0, 0));
    echo_from(&lab.containers[0], SocketAddrV6::new(OUTSIDE_IP6, 9002, 0, 0))
        .unwrap_or_else(|e| panic!("TCP after the uplink's address changed: {e}\n{}", lab.agent_log()));
    assert_eq!(server.join().unwrap().ip(), std::net::IpAddr::V6(moved), "the old address is gone");
}

#[test]
fn ipv6_on_a_routed_prefix_leaves_and_arrives_with_the_container_address() {
    let lab = lab_with_uplink6(&["--pod-cidr6", POD_CIDR6, "--masquerade6", "false"]);
    let a = ip6_of(&lab, "a");
    // Without a route back to the pod prefix, the outside cannot answer: nothing is
    // translated.
    let server = echo_once(&lab.outside, SocketAddrV6::new(OUTSIDE_IP6, 9001, 0, 0));
    assert!(echo_from(&lab.containers[0], SocketAddrV6::new(OUTSIDE_IP6, 9001, 0, 0)).is_err());
    let o = lab.outside.exec(&["ip", "-6", "route", "add", POD_CIDR6, "via", "fd00:99::1"]);
    assert!(o.status.success());
    echo_from(&lab.containers[0], SocketAddrV6::new(OUTSIDE_IP6, 9001, 0, 0))
        .unwrap_or_else(|e| panic!("TCP on a routed prefix: {e}\n{}", lab.agent_log()));
    assert_eq!(server.join().unwrap().ip(), std::net::IpAddr::V6(a), "the address was translated");
    // And the outside reaches the container by its address, past ip6tables' DROP.
    assert!(ping6(&lab.outside, a, None), "ping6 from the outside\n{}", lab.agent_log());
}

#[test]
fn icmpv6_errors_about_nat66_flows_reach_the_container_port_unreachable_and_path_mtu() {
    let lab = lab_with_uplink6(&["--pod-cidr6", POD_CIDR6]);
    // Nobody listens: the outside's kernel answers port unreachable to the node's
    // address; the container's socket must hear of it.
    let err = lab.containers[0]
        .run(|| {
            let s = std::net::UdpSocket::bind("[::]:0").unwrap();
            s.connect(SocketAddrV6::new(OUTSIDE_IP6, 9999, 0, 0)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            s.send(b"anyone?").unwrap();
            s.recv(&mut [0u8; 16]).unwrap_err()
        })
        .join()
        .unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "got {err}\n{}", lab.agent_log());

    // Path MTU: a router on the outside cannot forward what the node sent for the
    // container and says so (packet too big, MTU 1280) to the node's address.
    let s = lab.outside.run(|| std::net::UdpSocket::bind(SocketAddrV6::new(OUTSIDE_IP6, 9004, 0, 0))).join();
    let s = s.unwrap().unwrap();
    let server = std::thread::spawn(move || {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.recv_from(&mut [0u8; 64]).unwrap().1
    });
    let client = lab.containers[0]
        .run(|| {
            let s = std::net::UdpSocket::bind("[::]:0").unwrap();
            s.connect(SocketAddrV6::new(OUTSIDE_IP6, 9004, 0, 0)).unwrap();
            s.send(b"big data follows").unwrap();
            s
        })
        .join()
        .unwrap();
    let std::net::SocketAddr::V6(translated) = server.join().unwrap() else { panic!("not IPv6") };
    assert_eq!(*translated.ip(), NODE_UPLINK_IP6);
    // The quoted packet as the node sent it: fixed header and UDP header.
    let mut quoted = vec![0x60, 0, 0, 0, 0x05, 0x00, 17, 63];
    quoted.extend_from_slice(&NODE_UPLINK_IP6.octets());
    quoted.extend_from_slice(&OUTSIDE_IP6.octets());
    quoted.extend_from_slice(&translated.port().to_be_bytes());
    quoted.extend_from_slice(&9004u16.to_be_bytes());
    quoted.extend_from_slice(&[0x05, 0x00, 0, 0]);
    let mut ptb = vec![2, 0, 0, 0];
    ptb.extend_from_slice(&1280u32.to_be_bytes());
    ptb.extend(quoted);
    lab.outside
        .run(move || {
            // An ICMPv6 raw socket: the kernel fills in the checksum (RFC 3542).
            // SAFETY: plain socket syscalls on a descriptor this closure owns and closes.
            unsafe {
                let fd = libc::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6);
                assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
                let mut to: libc::sockaddr_in6 = std::mem::zeroed();
                to.sin6_family = libc::AF_INET6 as u16;
                to.sin6_addr.s6_addr = NODE_UPLINK_IP6.octets();
                let n = libc::sendto(
                    fd,
                    ptb.as_ptr().cast(),
                    ptb.len(),
                    0,
                    (&to as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as u32,
                );
                assert_eq!(n, ptb.len() as isize, "sendto: {}", std::io::Error::last_os_error());
                libc::close(fd);
            }
        })
        .join()
        .unwrap();
    // A poll, not a timing: the bound only decides how long a red run waits.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let route = out(&lab.containers[0], &["ip", "-6", "route", "get", &OUTSIDE_IP6.to_string()]);
        if route.contains("mtu 1280") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no PMTU update in the container: {route}");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(client);
}

#[test]
fn trace_shows_ipv6_hops_with_their_addresses() {
    use netpath_tests::trace::{events, start_trace};
    let lab = lab_with_uplink6(&["--pod-cidr6", POD_CIDR6]);
    let a = ip6_of(&lab, "a");
    // The gateway resolved first: its neighbour discovery would be traced too.
    assert!(ping6(&lab.containers[0], OUTSIDE_IP6, None));
    // The endpoint filter takes its IPv6 address too; ICMP takes ICMPv6.
    let t = start_trace(&lab, &["--endpoint", "a", "--proto", "icmp", "--count", "2", "--duration", "10"]);
    assert!(lab.containers[0]
        .exec(&["ping", "-6", "-n", "-c", "1", "-W", "2", &OUTSIDE_IP6.to_string()])
        .status
        .success());
    let evs = events(t);
    let hops: Vec<&str> = evs.iter().map(|e| e["hop"].as_str().unwrap()).collect();
    assert_eq!(hops, ["from-container", "uplink-out"], "{evs:?}");
    assert_eq!(evs[0]["src"], a.to_string());
    assert_eq!(evs[0]["src_endpoint"], "a");
    assert_eq!(evs[0]["dst"], OUTSIDE_IP6.to_string());
    assert_eq!(evs[0]["decision"], "snat-new-flow", "each ping is a flow of its own (its identifier)");
    // As it leaves: translated to the node's address.
    assert_eq!(evs[1]["src"], NODE_UPLINK_IP6.to_string());
    assert_eq!(evs[1]["proto"], "icmp");
    // A host filter in IPv6: the reply on the uplink, before and after translation.
    let t = start_trace(
        &lab,
        &["--host", &OUTSIDE_IP6.to_string(), "--proto", "tcp", "--count", "2", "--duration", "10"],
    );
    let server = echo_once(&lab.outside, SocketAddrV6::new(OUTSIDE_IP6, 9010, 0, 0));
    echo_from(&lab.containers[0], SocketAddrV6::new(OUTSIDE_IP6, 9010, 0, 0)).unwrap();
    server.join().unwrap();
    let evs = events(t);
    assert_eq!(evs[0]["hop"], "from-container", "{evs:?}");
    assert_eq!((&evs[0]["dport"], &evs[1]["dport"]), (&9010.into(), &9010.into()), "{evs:?}");
}

fn refused(r: std::io::Result<()>) -> bool {
    r.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
}

#[test]
fn a_port_is_published_on_both_families_or_one_and_ipv6_clients_keep_their_address() {
    use std::net::{IpAddr, SocketAddr};
    let lab = lab_with_uplink6(&["--pod-cidr6", POD_CIDR6]);
    let (node4, node6) = (IpAddr::V4(netpath_tests::NODE_UPLINK_IP), IpAddr::V6(NODE_UPLINK_IP6));
    // One dual-stack listener in the container: 5 connections below reach it.
    let server = netpath_tests::tcp_echo_peers(
        &lab.containers[0],
        SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 9000),
        5,
    );
    let forwarded = lab.node.snmp6("Ip6OutForwDatagrams");

    // Both families by default.
    lab.netpath_ok(&["port", "add", "8080", "a:9000"]);
    let dump = lab.netpath_ok(&["map", "dump", "PORT_MAPS6", "-o", "json"]);
    assert!(dump.contains(&ip6_of(&lab, "a").to_string()), "{dump}");
    for host in [node6, node4] {
        netpath_tests::tcp_echo_to(&lab.outside, SocketAddr::new(host, 8080))
            .unwrap_or_else(|e| panic!("published port 8080 on {host}: {e}\n{}", lab.agent_log()));
    }
    // One family with --host-ip: the other is refused by the node (RST), not dropped.
    lab.netpath_ok(&["port", "add", "8081", "a:9000", "--host-ip", &NODE_UPLINK_IP6.to_string()]);
    lab.netpath_ok(&[
        "port",
        "add",
        "8082",
        "a:9000",
        "--host-ip",
        &netpath_tests::NODE_UPLINK_IP.to_string(),
    ]);
    netpath_tests::tcp_echo_to(&lab.outside, SocketAddr::new(node6, 8081)).expect("8081 on IPv6");
    netpath_tests::tcp_echo_to(&lab.outside, SocketAddr::new(node4, 8082)).expect("8082 on IPv4");
    assert!(
        refused(netpath_tests::tcp_echo_to(&lab.outside, SocketAddr::new(node4, 8081))),
        "8081 is IPv6 only"
    );
    assert!(
        refused(netpath_tests::tcp_echo_to(&lab.outside, SocketAddr::new(node6, 8082))),
        "8082 is IPv4 only"
    );
    // `::` publishes on every IPv6 address of the node.
    lab.netpath_ok(&["port", "add", "8083", "a:9000", "--host-ip", "::"]);
    netpath_tests::tcp_echo_to(&lab.outside, SocketAddr::new(node6, 8083)).expect("8083 on IPv6");
    assert!(
        refused(netpath_tests::tcp_echo_to(&lab.outside, SocketAddr::new(node4, 8083))),
        "8083 is IPv6 only"
    );

    let peers = server.join().unwrap();
    let v6: Vec<_> = peers.iter().filter(|p| p.ip() == IpAddr::V6(OUTSIDE_IP6)).collect();
    assert_eq!(v6.len(), 3, "the IPv6 client's address reaches the container as it is: {peers:?}");
    // The datapath translated and delivered them: the node's stack forwarded no IPv6
    // (its FORWARD policy is DROP).
    assert_eq!(lab.node.snmp6("Ip6OutForwDatagrams"), forwarded);
    assert!(lab.stats().reason("dnat-new-flow") >= 5);
    let ct = lab.netpath_ok(&["ct", "list", "--host", &OUTSIDE_IP6.to_string(), "-o", "json"]);
    assert!(ct.contains(&ip6_of(&lab, "a").to_string()), "{ct}");

    // An IPv6 address that is not the node's: one clear error, nothing published.
    let before = lab.netpath_ok(&["port", "list", "-o", "json"]);
    let o = lab.netpath(&["port", "add", "8084", "a:9000", "--host-ip", "fd00:99::7"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("fd00:99::7"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(lab.netpath_ok(&["port", "list", "-o", "json"]), before);

    // Unpublished: the IPv6 entry goes with the IPv4 one.
    lab.netpath_ok(&["port", "del", "8080"]);
    assert!(
        refused(netpath_tests::tcp_echo_to(&lab.outside, SocketAddr::new(node6, 8080))),
        "8080 still published on IPv6"
    );
    let dump = lab.netpath_ok(&["map", "dump", "PORT_MAPS6", "-o", "json"]);
    assert!(!dump.contains("8080"), "{dump}");
}

#[test]
fn a_published_port_on_a_routed_prefix_answers_with_the_node_address() {
    use std::net::{IpAddr, SocketAddr};
    let lab = lab_with_uplink6(&["--pod-cidr6", POD_CIDR6, "--masquerade6", "false"]);
    let o = lab.outside.exec(&["ip", "-6", "route", "add", POD_CIDR6, "via", "fd00:99::1"]);
    assert!(o.status.success());
    let a = ip6_of(&lab, "a");
    let server = netpath_tests::tcp_echo_peers(
        &lab.containers[0],
        SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 9000),
        2,
    );
    lab.netpath_ok(&["port", "add", "8080", "a:9000"]);
    // To the node's address: the reply must leave translated back, or the client's
    // stack would not know it.
    netpath_tests::tcp_echo_to(&lab.outside, SocketAddr::new(IpAddr::V6(NODE_UPLINK_IP6), 8080))
        .unwrap_or_else(|e| panic!("published port on a routed prefix: {e}\n{}", lab.agent_log()));
    // To the container's own address: routed, both ways untranslated.
    netpath_tests::tcp_echo_to(&lab.outside, SocketAddr::new(IpAddr::V6(a), 9000))
        .expect("the container's own address");
    let peers = server.join().unwrap();
    assert!(peers.iter().all(|p| p.ip() == IpAddr::V6(OUTSIDE_IP6)), "{peers:?}");
    // What the published container opens itself still leaves with its own address.
    let server = echo_once(&lab.outside, SocketAddrV6::new(OUTSIDE_IP6, 9001, 0, 0));
    echo_from(&lab.containers[0], SocketAddrV6::new(OUTSIDE_IP6, 9001, 0, 0))
        .unwrap_or_else(|e| panic!("TCP out of a published container: {e}\n{}", lab.agent_log()));
    assert_eq!(server.join().unwrap().ip(), IpAddr::V6(a), "the routed prefix was masqueraded");
    assert!(ping6(&lab.outside, a, None), "ping6 from the outside\n{}", lab.agent_log());
}

#[test]
fn a_container_reaches_a_port_published_on_ipv6_through_the_node_address() {
    use std::net::{IpAddr, SocketAddr};
    let lab = lab_with_uplink6_of(&["--pod-cidr6", POD_CIDR6], &["a", "b"]);
    let server = netpath_tests::tcp_echo_peers(
        &lab.containers[1],
        SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 9000),
        2,
    );
    lab.netpath_ok(&["port", "add", "8080", "b:9000"]);
    let forwarded = lab.node.snmp6("Ip6OutForwDatagrams");
    let before = lab.stats();
    // Twice: the second connection's port may reuse the first's tuple in TIME_WAIT.
    for _ in 0..2 {
        netpath_tests::tcp_echo_to(&lab.containers[0], SocketAddr::new(IpAddr::V6(NODE_UPLINK_IP6), 8080))
            .unwrap_or_else(|e| panic!("a to [node]:8080 (hairpin): {e}\n{}", lab.agent_log()));
    }
    let peers = server.join().unwrap();
    assert!(peers.iter().all(|p| p.ip() == IpAddr::V6(ip6_of(&lab, "a"))), "a's address kept: {peers:?}");
    // The datapath did it: the node's stack forwarded nothing, the flows are DNAT ones.
    assert_eq!(lab.node.snmp6("Ip6OutForwDatagrams"), forwarded);
    assert_eq!(lab.stats().reason("dnat-new-flow") - before.reason("dnat-new-flow"), 2);
    // b still reaches a directly, and a port b does not publish is the node's.
    assert!(ping6(&lab.containers[1], ip6_of(&lab, "a"), None));
    assert!(refused(netpath_tests::tcp_echo_to(
        &lab.containers[0],
        SocketAddr::new(IpAddr::V6(NODE_UPLINK_IP6), 8081)
    )));
}

/// IPv6's half of nat.rs's hairpin test: a hairpin opened after collection passes that
/// found none is translated, and stays so across passes while it lives (its count
/// moved; the passes see its entries in CONNTRACK6). Either half missing, b's replies
/// reach a with b's own address.
#[test]
fn an_ipv6_hairpin_after_quiet_collection_passes_is_translated_and_stays_so_across_them() {
    use std::net::{IpAddr, SocketAddr};
    let lab = lab_with_uplink6_of(&["--pod-cidr6", POD_CIDR6, "--ct-gc-interval", "1"], &["a", "b"]);
    let b = ip6_of(&lab, "b");
    lab.netpath_ok(&["port", "add", "8080", "b:9000"]);
    let (listen, target) =
        (SocketAddr::new(IpAddr::V6(b), 9000), SocketAddr::new(IpAddr::V6(NODE_UPLINK_IP6), 8080));
    let peer = lab.hairpin_across_passes(&lab.containers[1], listen, &lab.containers[0], target);
    assert_eq!(peer.ip(), IpAddr::V6(ip6_of(&lab, "a")), "the hairpin keeps a's address");
    // The NAT66 stages that translated it, as `map dump` shows their program array.
    let progs6: Value =
        serde_json::from_str(&lab.netpath_ok(&["map", "dump", "PROGS6", "-o", "json"])).unwrap();
    let slots = progs6["entries"].as_array().unwrap();
    assert!(slots.len() == 6 && slots.iter().all(|r| r["id"].is_u64()), "{progs6}");
    let slot = netpath_common::maps::TAIL_CONTAINER_NAT6 as usize;
    assert_eq!(slots[slot]["program"], "container_nat6", "{progs6}");
    // Named in full where the kernel keeps 15 characters of the name.
    let slot = netpath_common::maps::TAIL_ICMP6_TO_CONTAINER as usize;
    assert_eq!(slots[slot]["program"], "icmp6_to_container", "{progs6}");
}
