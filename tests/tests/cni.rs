//! netpath as a CNI plugin, driven the way a runtime drives it: the netpath binary run
//! with the spec's environment and a network configuration on stdin, from the node's
//! namespace, against the lab's agent.
use std::{
    io::Write as _,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    process::{Command, Output, Stdio},
};

use netpath_tests::{in_netns, netpath_bin, tcp_echo_once, Lab, NODE_UPLINK_IP, OUTSIDE_IP};
use serde_json::{json, Value};

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const ID_A: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const ID_B: &str = "b0b0b0b0b0b0aaaa293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const ID_C: &str = "c0ffeec0ffee0718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

/// The network configuration a runtime passes: version, the lab's socket directory,
/// and whatever `extra` adds (dns, runtimeConfig, prevResult).
fn netconf(lab: &Lab, version: &str, extra: Value) -> Value {
    let mut conf = json!({
        "cniVersion": version,
        "name": "np",
        "type": "netpath",
        "runDir": lab.work_dir.join("run"),
    });
    for (k, v) in extra.as_object().unwrap() {
        conf[k] = v.clone();
    }
    conf
}

/// Runs the plugin: `command` for container `id` in namespace `netns`, interface eth0.
/// Returns the exit status's success and stdout as JSON (Null when empty).
fn cni(lab: &Lab, command: &str, id: &str, netns: Option<&str>, stdin: &str) -> (Output, Value) {
    cni_env(lab, &[("CNI_COMMAND", command), ("CNI_CONTAINERID", id), ("CNI_IFNAME", "eth0")], netns, stdin)
}

fn cni_env(lab: &Lab, env: &[(&str, &str)], netns: Option<&str>, stdin: &str) -> (Output, Value) {
    let mut cmd = Command::new(netpath_bin());
    cmd.env_clear().env("CNI_PATH", "/opt/cni/bin").envs(env.iter().copied());
    if let Some(ns) = netns {
        cmd.env("CNI_NETNS", ns);
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = in_netns(&mut cmd, &lab.node.path()).spawn().expect("run the plugin");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let value = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("plugin printed no JSON ({e}): {stdout}"))
    };
    (output, value)
}

fn ok(lab: &Lab, command: &str, id: &str, netns: &str, conf: &Value) -> Value {
    let (o, v) = cni(lab, command, id, Some(netns), &conf.to_string());
    assert!(
        o.status.success(),
        "CNI {command} failed: {v}\nstderr: {}\nagent log:\n{}",
        String::from_utf8_lossy(&o.stderr),
        lab.agent_log()
    );
    v
}

/// The spec's error object: non-zero exit, `code` and `msg` on stdout.
fn error(o: &Output, v: &Value, code: u64) -> String {
    assert!(!o.status.success(), "expected CNI error {code}, got success: {v}");
    assert_eq!(v["code"], code, "{v}");
    v["msg"].as_str().unwrap().to_string()
}

fn endpoints(lab: &Lab) -> Vec<Value> {
    let list: Value = serde_json::from_str(&lab.netpath_ok(&["endpoint", "list", "-o", "json"])).unwrap();
    list["endpoints"].as_array().unwrap().clone()
}

#[test]
fn add_gives_the_container_its_network_ports_and_the_spec_result() {
    let mut lab = Lab::new(2);
    lab.start_agent();
    let ns0 = lab.containers[0].path().display().to_string();
    let ns1 = lab.containers[1].path().display().to_string();
    let conf = netconf(
        &lab,
        "1.0.0",
        json!({
            "dns": {"nameservers": ["10.0.0.53"], "search": ["cluster.local"]},
            "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]},
        }),
    );
    let added = ok(&lab, "ADD", ID_A, &ns0, &conf);
    assert_eq!(added["cniVersion"], "1.0.0");
    let host = added["interfaces"][0]["name"].as_str().unwrap();
    assert!(lab.node_links().iter().any(|l| l == host), "{host} not on the node: {added}");
    assert_eq!(added["interfaces"][1]["name"], "eth0");
    assert_eq!(added["interfaces"][1]["sandbox"], ns0.as_str());
    let ip = &added["ips"][0];
    let address = ip["address"].as_str().unwrap();
    assert!(address.starts_with("10.77.0.") && address.ends_with("/32"), "{added}");
    assert_eq!((&ip["gateway"], &ip["interface"]), (&json!("10.77.0.1"), &json!(1)), "{added}");
    assert!(ip.get("version").is_none(), "1.0.0 has no version key: {added}");
    assert_eq!(added["routes"], json!([{"dst": "0.0.0.0/0", "gw": "10.77.0.1"}]));
    assert_eq!(added["dns"]["nameservers"], json!(["10.0.0.53"]));
    let a: Ipv4Addr = address.trim_end_matches("/32").parse().unwrap();
    let eth0 = out(&lab.containers[0].exec(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"]));
    assert!(eth0.contains(&format!("{a}/32")), "{eth0}");

    // The owner is the full ID; the name its short form.
    let rec =
        endpoints(&lab).into_iter().find(|e| e["owner"] == ID_A).expect("endpoint owned by the container");
    assert_eq!(rec["name"], "cni-a1b2c3d4e5f6");

    // Idempotent: the runtime may repeat an ADD.
    assert_eq!(ok(&lab, "ADD", ID_A, &ns0, &conf), added);

    // A 0.4.0 runtime gets its own result form.
    let added_b = ok(&lab, "ADD", ID_B, &ns1, &netconf(&lab, "0.4.0", json!({})));
    assert_eq!(added_b["ips"][0]["version"], "4", "{added_b}");
    let b: Ipv4Addr = added_b["ips"][0]["address"].as_str().unwrap().trim_end_matches("/32").parse().unwrap();
    assert!(lab.containers[0].ping(b, 2), "container A cannot reach B at {b}");

    // The published port: from outside, with the client's own address seen inside.
    let peer = tcp_echo_once(
        &lab.containers[0],
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80),
        &lab.outside,
        SocketAddr::from((NODE_UPLINK_IP, 8080)),
        4096,
    );
    assert_eq!(peer.ip(), std::net::IpAddr::V4(OUTSIDE_IP));
}

#[test]
fn check_names_the_drift_and_del_is_idempotent_and_takes_only_its_owners_endpoint() {
    let mut lab = Lab::new(2);
    lab.start_agent();
    let ns0 = lab.containers[0].path().display().to_string();
    let ns1 = lab.containers[1].path().display().to_string();
    let ports = json!({"portMappings": [{"hostPort": 8081, "containerPort": 81, "protocol": "udp"}]});
    let conf = netconf(&lab, "1.0.0", json!({ "runtimeConfig": ports }));
    let added = ok(&lab, "ADD", ID_A, &ns0, &conf);
    let check = netconf(&lab, "1.0.0", json!({ "runtimeConfig": ports, "prevResult": added }));
    assert_eq!(ok(&lab, "CHECK", ID_A, &ns0, &check), Value::Null);

    // What the runtime holds differs: another address in prevResult, a port it did not
    // ask for.
    let mut other = added.clone();
    other["ips"][0]["address"] = json!("10.77.0.200/32");
    let stale = netconf(&lab, "1.0.0", json!({ "runtimeConfig": ports, "prevResult": other }));
    let (o, v) = cni(&lab, "CHECK", ID_A, Some(&ns0), &stale.to_string());
    assert!(error(&o, &v, 101).contains("address is 10.77.0."), "{v}");
    lab.netpath_ok(&["port", "add", "8099", "cni-a1b2c3d4e5f6:80"]);
    let (o, v) = cni(&lab, "CHECK", ID_A, Some(&ns0), &check.to_string());
    assert!(error(&o, &v, 101).contains("port tcp/8099: published to"), "{v}");
    lab.netpath_ok(&["port", "del", "8099"]);

    // The published port removed behind the runtime's back.
    lab.netpath_ok(&["port", "del", "8081", "--proto", "udp"]);
    let (o, v) = cni(&lab, "CHECK", ID_A, Some(&ns0), &check.to_string());
    let msg = error(&o, &v, 101);
    assert!(msg.contains("port udp/8081: not published"), "{msg}");

    // The container's address removed.
    lab.containers[0].exec(&["ip", "addr", "flush", "dev", "eth0"]);
    let no_ports = netconf(&lab, "1.0.0", json!({ "prevResult": added }));
    let (o, v) = cni(&lab, "CHECK", ID_A, Some(&ns0), &no_ports.to_string());
    let msg = error(&o, &v, 101);
    assert!(msg.contains("endpoint cni-a1b2c3d4e5f6: missing in the container"), "{msg}");

    // Another container whose ID shares the short form: its ADD is refused, its DEL
    // leaves the first container's endpoint alone.
    let twin = format!("{}ffff", &ID_A[..12]);
    let links = lab.node_links();
    let (o, v) = cni(&lab, "ADD", &twin, Some(&ns1), &netconf(&lab, "1.0.0", json!({})).to_string());
    let msg = error(&o, &v, 100);
    assert!(msg.contains("cni-a1b2c3d4e5f6"), "{msg}");
    assert_eq!(lab.node_links(), links);
    ok(&lab, "DEL", &twin, &ns1, &netconf(&lab, "1.0.0", json!({})));
    assert_eq!(endpoints(&lab).len(), 1);

    // DEL, and DEL again: nothing left, both succeed.
    let host = added["interfaces"][0]["name"].as_str().unwrap().to_string();
    ok(&lab, "DEL", ID_A, &ns0, &conf);
    assert!(!lab.node_links().contains(&host), "{host} left behind");
    assert!(endpoints(&lab).is_empty());
    ok(&lab, "DEL", ID_A, &ns0, &conf);

    // The same container in a new sandbox (a DEL the agent missed): the old endpoint makes
    // way.
    let first = ok(&lab, "ADD", ID_A, &ns0, &conf);
    let again = ok(&lab, "ADD", ID_A, &ns1, &conf);
    assert_eq!(again["interfaces"][1]["sandbox"], ns1.as_str());
    assert!(out(&lab.containers[0].exec(&["ip", "-o", "link"])).lines().all(|l| !l.contains("eth0")));
    assert_eq!(endpoints(&lab).len(), 1, "{first} {again}");
    ok(&lab, "DEL", ID_A, &ns1, &conf);

    // DEL after the container's namespace is gone, and without CNI_NETNS.
    ok(&lab, "ADD", ID_B, &ns1, &conf);
    lab.containers.pop();
    let (o, v) = cni(&lab, "DEL", ID_B, None, &conf.to_string());
    assert!(o.status.success(), "{v}");
    assert!(endpoints(&lab).is_empty());
    assert!(out(&lab.node.exec(&["ip", "route"])).lines().all(|l| !l.contains("dev np")));
}

#[test]
fn errors_are_the_specs_objects_and_a_failed_add_leaves_nothing() {
    let mut lab = Lab::new(2);
    lab.start_agent();
    let ns0 = lab.containers[0].path().display().to_string();

    let (o, v) = cni(&lab, "VERSION", ID_A, None, r#"{"cniVersion":"1.0.0"}"#);
    assert!(o.status.success());
    assert_eq!(v["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));
    let (_, v) = cni(&lab, "VERSION", ID_A, None, r#"{"cniVersion":"1.1.0"}"#);
    assert_eq!(v["cniVersion"], "1.1.0");
    // Asked in a version it does not speak, it answers in one it does.
    let (_, v) = cni(&lab, "VERSION", ID_A, None, r#"{"cniVersion":"0.3.1"}"#);
    assert_eq!(v["cniVersion"], "1.0.0");
    // A command it does not know is named, before anything else is looked at.
    let (o, v) =
        cni_env(&lab, &[("CNI_COMMAND", "FROB")], None, &netconf(&lab, "1.0.0", json!({})).to_string());
    let msg = error(&o, &v, 4);
    assert!(msg.contains("\"FROB\"") && msg.contains("STATUS, GC"), "{v}");

    let (o, v) = cni(&lab, "ADD", ID_A, Some(&ns0), &netconf(&lab, "0.2.0", json!({})).to_string());
    assert!(error(&o, &v, 1).contains("\"0.2.0\""));
    let (o, v) = cni(&lab, "ADD", ID_A, Some(&ns0), "{not json");
    error(&o, &v, 6);
    let conf = netconf(&lab, "1.0.0", json!({}));
    let (o, v) =
        cni_env(&lab, &[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")], Some(&ns0), &conf.to_string());
    assert!(error(&o, &v, 4).contains("CNI_CONTAINERID"));
    let (o, v) = cni_env(
        &lab,
        &[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "a/b"), ("CNI_IFNAME", "eth0")],
        Some(&ns0),
        &conf.to_string(),
    );
    assert!(error(&o, &v, 4).contains("\"a/b\""));

    // Refused before anything is made, or undone after: nothing is left either way.
    let before = lab.residue();
    let sctp = netconf(
        &lab,
        "1.0.0",
        json!({"runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "sctp"}]}}),
    );
    let (o, v) = cni(&lab, "ADD", ID_A, Some(&ns0), &sctp.to_string());
    assert!(error(&o, &v, 2).contains("\"sctp\""));
    assert_eq!(lab.residue(), before);
    // A host port another endpoint holds: the endpoint made for it is taken away again.
    lab.add_endpoint("holder", 1);
    let clash = netconf(
        &lab,
        "1.0.0",
        json!({"runtimeConfig": {"portMappings": [{"hostPort": 9090, "containerPort": 80}]}}),
    );
    lab.netpath_ok(&["port", "add", "9090", "holder:80"]);
    let before = lab.residue();
    let (o, v) = cni(&lab, "ADD", ID_A, Some(&ns0), &clash.to_string());
    assert!(error(&o, &v, 100).contains("9090"), "{v}");
    assert_eq!(lab.residue(), before);
    // Two mappings of one request that clash with each other.
    let twice = netconf(
        &lab,
        "1.0.0",
        json!({"runtimeConfig": {"portMappings": [{"hostPort": 9091, "containerPort": 80}, {"hostPort": 9091, "containerPort": 81}]}}),
    );
    let (o, v) = cni(&lab, "ADD", ID_A, Some(&ns0), &twice.to_string());
    assert!(error(&o, &v, 100).contains("9091"), "{v}");
    assert_eq!(lab.residue(), before);
    let (o, v) = cni(&lab, "ADD", ID_A, Some("/proc/1/ns/nope"), &conf.to_string());
    error(&o, &v, 100);
    assert_eq!(lab.residue(), before);

    // No agent: try again later, naming the socket.
    lab.stop_agent();
    let (o, v) = cni(&lab, "ADD", ID_A, Some(&ns0), &conf.to_string());
    let msg = error(&o, &v, 11);
    assert!(msg.contains(&lab.work_dir.join("run/agent.sock").display().to_string()), "{msg}");
}

#[test]
fn conflist_is_printed_for_the_running_agent_only() {
    let mut lab = Lab::new(0);
    let o = lab.netpath(&["cni", "conflist"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no agent is listening"));
    lab.start_agent();
    let list: Value =
        serde_json::from_str(&lab.netpath_ok(&["cni", "conflist", "--name", "podnet"])).unwrap();
    assert_eq!(list["name"], "podnet");
    assert_eq!(list["cniVersion"], "1.0.0");
    let plugin = &list["plugins"][0];
    assert_eq!(plugin["type"], "netpath");
    assert_eq!(plugin["runDir"], lab.work_dir.join("run").display().to_string());
    assert_eq!(plugin["capabilities"], json!({"portMappings": true, "ips": true, "mac": true}));
    let o = lab.netpath(&["cni", "conflist", "--name", "bad name"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("\"bad name\" is not a network name"));
}

/// Runs a command that names no container (STATUS, GC): the netconf is all it gets.
fn cni_netconf_only(lab: &Lab, command: &str, conf: &Value) -> (Output, Value) {
    cni_env(lab, &[("CNI_COMMAND", command)], None, &conf.to_string())
}

#[test]
fn status_is_ready_with_a_usable_agent_and_not_available_without_one() {
    let mut lab = Lab::new(0);
    lab.start_agent();
    let conf = netconf(&lab, "1.1.0", json!({}));
    let (o, v) = cni_netconf_only(&lab, "STATUS", &conf);
    assert!(o.status.success(), "STATUS failed: {v}\nagent log:\n{}", lab.agent_log());
    assert!(o.stdout.is_empty(), "STATUS printed {}", out(&o));

    // A runDir where no agent runs.
    let elsewhere = lab.work_dir.join("no-agent");
    let mut other = conf.clone();
    other["runDir"] = json!(elsewhere);
    let (o, v) = cni_netconf_only(&lab, "STATUS", &other);
    let msg = error(&o, &v, 50);
    assert!(msg.contains(&elsewhere.join("agent.sock").display().to_string()), "{msg}");
    assert!(msg.contains("start `netpath agent --run-dir"), "{msg}");
    assert_eq!(v["cniVersion"], "1.1.0", "{v}");

    // An agent that answers but is older than the plugin: ADD would refuse it, so it is
    // not available either, and says why.
    let fake = FakeAgent::old(&lab.work_dir.join("old-agent"));
    other["runDir"] = json!(fake.dir);
    let (o, v) = cni_netconf_only(&lab, "STATUS", &other);
    assert!(error(&o, &v, 50).contains("older than this plugin"), "{v}");

    // The lab's own agent stopped.
    lab.stop_agent();
    let (o, v) = cni_netconf_only(&lab, "STATUS", &conf);
    let msg = error(&o, &v, 50);
    assert!(msg.contains(&lab.work_dir.join("run/agent.sock").display().to_string()), "{msg}");
}

/// A socket that answers every request with the Status of an agent from before pod_cidr.
struct FakeAgent {
    dir: std::path::PathBuf,
}

impl FakeAgent {
    fn old(dir: &std::path::Path) -> FakeAgent {
        use std::io::{BufRead as _, BufReader};
        std::fs::create_dir_all(dir).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(dir.join("agent.sock")).unwrap();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().map_while(Result::ok) {
                let mut line = String::new();
                let _ = BufReader::new(&stream).read_line(&mut line);
                let reply = json!({"result": "status", "pid": 4242, "agent_id": "0123456789abcdef",
                    "uplink": null, "uplink_up": true, "node_ip": null, "endpoints": 0, "ports": 0,
                    "trace": null});
                let _ = writeln!(stream, "{reply}");
            }
        });
        FakeAgent { dir: dir.to_path_buf() }
    }
}

#[test]
fn add_in_cni_1_1_answers_in_1_1() {
    let mut lab = Lab::new(1);
    lab.start_agent();
    let ns0 = lab.containers[0].path().display().to_string();
    let added = ok(&lab, "ADD", ID_A, &ns0, &netconf(&lab, "1.1.0", json!({})));
    assert_eq!(added["cniVersion"], "1.1.0");
    assert!(added["ips"][0].get("version").is_none(), "{added}");
    assert!(added["ips"][0]["address"].as_str().unwrap().starts_with("10.77.0."), "{added}");
    ok(&lab, "DEL", ID_A, &ns0, &netconf(&lab, "1.1.0", json!({})));
    assert!(endpoints(&lab).is_empty());
}

fn names(lab: &Lab) -> Vec<String> {
    let mut names: Vec<String> =
        endpoints(lab).iter().map(|e| e["name"].as_str().unwrap().to_string()).collect();
    names.sort();
    names
}

fn host_ports(lab: &Lab) -> Vec<u64> {
    let list: Value = serde_json::from_str(&lab.netpath_ok(&["port", "list", "-o", "json"])).unwrap();
    let mut ports: Vec<u64> =
        list["ports"].as_array().unwrap().iter().map(|p| p["host_port"].as_u64().unwrap()).collect();
    ports.sort();
    ports
}

#[test]
fn gc_takes_the_endpoints_of_attachments_no_longer_valid_and_never_the_clis() {
    let mut lab = Lab::new(4);
    lab.start_agent();
    let ns: Vec<String> = lab.containers.iter().map(|c| c.path().display().to_string()).collect();
    let with_port = |port: u16| {
        netconf(
            &lab,
            "1.1.0",
            json!({"runtimeConfig": {"portMappings": [{"hostPort": port, "containerPort": 80}]}}),
        )
    };
    ok(&lab, "ADD", ID_A, &ns[0], &with_port(8080));
    let added_b = ok(&lab, "ADD", ID_B, &ns[1], &with_port(8081));
    ok(&lab, "ADD", ID_C, &ns[2], &netconf(&lab, "1.1.0", json!({})));
    lab.add_endpoint("web", 3);
    lab.netpath_ok(&["port", "add", "8090", "web:80"]);
    assert_eq!(host_ports(&lab), [8080, 8081, 8090]);
    let veth_b = added_b["interfaces"][0]["name"].as_str().unwrap().to_string();

    let gc = |key: &str, valid: Value| {
        let conf = netconf(&lab, "1.1.0", json!({ key: valid }));
        let (o, v) = cni_netconf_only(&lab, "GC", &conf);
        assert!(o.status.success(), "GC failed: {v}\nagent log:\n{}", lab.agent_log());
        assert!(o.stdout.is_empty(), "GC printed {}", out(&o));
    };
    let valid = json!([{"containerID": ID_A, "ifname": "eth0"}, {"containerID": ID_C, "ifname": "eth0"}]);
    gc("cni.dev/valid-attachments", valid.clone());
    assert_eq!(names(&lab), ["cni-a1b2c3d4e5f6", "cni-c0ffeec0ffee", "web"]);
    assert!(!lab.node_links().contains(&veth_b), "{veth_b} left behind");
    assert_eq!(host_ports(&lab), [8080, 8090]);
    assert!(lab.containers[1].exec(&["ip", "link", "show", "eth0"]).stdout.is_empty());

    // Nothing stale any more: a no-op.
    let before = lab.residue();
    gc("cni.dev/valid-attachments", valid);
    assert_eq!(lab.residue(), before);

    // No attachment valid (under the key's other name): every CNI endpoint goes, the
    // CLI's stays with its port.
    gc("cni.dev/attachments", json!([]));
    assert_eq!(names(&lab), ["web"]);
    assert_eq!(host_ports(&lab), [8090]);

    // A list it cannot read changes nothing.
    ok(&lab, "ADD", ID_A, &ns[0], &netconf(&lab, "1.1.0", json!({})));
    let before = lab.residue();
    let bad = netconf(&lab, "1.1.0", json!({"cni.dev/valid-attachments": [{"containerID": ID_A}]}));
    let (o, v) = cni_netconf_only(&lab, "GC", &bad);
    assert!(error(&o, &v, 6).contains("ifname"), "{v}");
    let (o, v) = cni_netconf_only(&lab, "GC", &netconf(&lab, "1.1.0", json!({})));
    assert!(error(&o, &v, 7).contains("cni.dev/valid-attachments"), "{v}");
    assert_eq!(lab.residue(), before);

    // No agent: try again later.
    lab.stop_agent();
    let (o, v) =
        cni_netconf_only(&lab, "GC", &netconf(&lab, "1.1.0", json!({"cni.dev/valid-attachments": []})));
    assert!(error(&o, &v, 11).contains("agent.sock"), "{v}");
}

/// An agent with an IPv6 pod CIDR: ADD reports both addresses and both default routes,
/// in each result form, and the container has the IPv6 address it was told.
#[test]
fn add_reports_the_ipv6_address_of_a_dual_stack_agent() {
    let mut lab = Lab::new(2);
    lab.start_agent_with(&["--pod-cidr6", "fd00:77::/64"]);
    let ns0 = lab.containers[0].path().display().to_string();
    let added = ok(&lab, "ADD", ID_A, &ns0, &netconf(&lab, "1.0.0", json!({})));
    assert_eq!(
        added["ips"][1],
        json!({"address": "fd00:77::2/128", "gateway": "fe80::1", "interface": 1}),
        "{added}"
    );
    assert_eq!(added["routes"][1], json!({"dst": "::/0", "gw": "fe80::1"}), "{added}");
    let eth0 = out(&lab.containers[0].exec(&["ip", "-6", "-o", "addr", "show", "dev", "eth0"]));
    assert!(eth0.contains("fd00:77::2/128"), "{eth0}");
    let ns1 = lab.containers[1].path().display().to_string();
    let added_b = ok(&lab, "ADD", ID_B, &ns1, &netconf(&lab, "0.4.0", json!({})));
    assert_eq!(added_b["ips"][1]["version"], "6", "{added_b}");
}
