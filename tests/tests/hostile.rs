//! Hostile input: every verb and config key fed what a careless operator or an attacker
//! would give it. Each case must be refused with one line naming the bad value, a
//! non-zero exit (never a panic), and nothing left behind: no link, address or route in
//! the node or a container, no state, lock file, pin or map entry changed.
//!
//! The cases come first as a table (README, "Hostile input", lists them); the behaviours
//! that need more than one command (a second trace, a lost uplink, ...) follow as tests
//! of their own.
use std::{
    net::Ipv4Addr,
    process::{Command, Output},
    time::{Duration, Instant},
};

use netpath_tests::{netpath_bin, Lab, Netns, NODE_UPLINK_IP, OUTSIDE_IP};

/// One refusal. In `args`, `{c0}`/`{c1}` stand for the containers' netns files, `{node}`
/// for the node's, `{agent_pid}` for the agent's PID, `{a_ip}` for endpoint a's
/// address, `{cgroup}` for the lab's cgroup, `{file}` for a config file holding `file`.
struct Case {
    args: &'static [&'static str],
    file: Option<&'static str>,
    /// Words the one error line must hold (the bad value, and what is wrong).
    want: &'static [&'static str],
}

const fn case(args: &'static [&'static str], want: &'static [&'static str]) -> Case {
    Case { args, file: None, want }
}

const fn config(file: &'static str, want: &'static [&'static str]) -> Case {
    Case { args: &["agent", "--config", "{file}"], file: Some(file), want }
}

/// Starting the agent wrongly; run while no agent runs (another would be refused first).
const AGENT_CASES: &[Case] = &[
    // Issue 13, item 12: special ranges named, not a raw netlink EINVAL.
    case(&["agent", "--pod-cidr", "224.0.0.0/24"], &["224.0.0.0/24", "multicast"]),
    case(&["agent", "--pod-cidr", "127.0.0.0/24"], &["127.0.0.0/24", "loopback"]),
    case(&["agent", "--pod-cidr", "169.254.10.0/24"], &["169.254.10.0/24", "link-local"]),
    case(&["agent", "--pod-cidr", "0.0.0.0/0"], &["0.0.0.0/0", "this network"]),
    case(&["agent", "--pod-cidr", "250.1.0.0/16"], &["250.1.0.0/16", "reserved"]),
    case(&["agent", "--pod-cidr", "10.0.0.0/31"], &["10.0.0.0/31", "/30 or larger"]),
    case(&["agent", "--pod-cidr", "banana"], &["banana", "CIDR"]),
    case(&["agent", "--pod-cidr", "192.168.77.0/24"], &["192.168.77.0/24", "overlaps", "uplink0"]),
    // Issue 13, item 9: a missing uplink leaves no gateway address on lo.
    case(&["agent", "--uplink", "NOPE"], &["NOPE", "does not exist"]),
    case(&["agent", "--uplink", "a/b"], &["a/b", "interface name"]),
    case(&["agent", "--uplink", "much-too-long-for-ifnamsiz"], &["much-too-long-for-ifnamsiz"]),
    case(&["agent", "--bridge", "br 0"], &["br 0", "interface name"]),
    case(&["agent", "--nat-ports", "70000-80000"], &["70000-80000", "port range"]),
    case(&["agent", "--nat-ports", "5000-10"], &["5000-10", "port range"]),
    case(&["agent", "--nat-ports", "0-10"], &["0-10", "port range"]),
    case(&["agent", "--nat-ports", "32768-40000"], &["32768-40000", "ephemeral"]),
    // Issue 13, item 8: every number checked before anything changes.
    case(&["agent", "--ct-max-entries", "0"], &["--ct-max-entries", "0"]),
    case(&["agent", "--ct-max-entries", "4294967295"], &["--ct-max-entries", "4294967295"]),
    case(&["agent", "--ct-max-entries", "-1"], &["-1"]),
    // Issue 23: below 256 entries per CPU the kernel's LRU evicts flows being set up.
    case(&["agent", "--ct-max-entries", "100"], &["100", "minimum of", "per CPU"]),
    case(&["agent", "--ct-tcp-timeout", "0"], &["--ct-tcp-timeout", "\"0\""]),
    case(&["agent", "--ct-udp-timeout", "18446744073709551615"], &["18446744073709551615", "timeout"]),
    case(&["agent", "--ct-gc-interval", "0"], &["--ct-gc-interval", "0"]),
    case(&["agent", "--ct-icmp-timeout", "soon"], &["soon"]),
    case(&["agent", "--metrics", "nowhere"], &["nowhere", "address:port"]),
    case(&["agent", "--metrics", "127.0.0.1:{busy_port}"], &["cannot listen", "127.0.0.1:"]),
    case(&["agent", "--cgroup", "/nonexistent/cgroup"], &["/nonexistent/cgroup", "cgroup"]),
    case(&["agent", "--mode", "overlay"], &["overlay"]),
    case(&["agent", "--tc-attach", "iptables"], &["iptables"]),
    case(&["agent", "--bpffs-dir", "/tmp/np-not-bpffs-{id}"], &["not on a BPF filesystem"]),
    case(&["agent", "--config", "/nonexistent/agent.toml"], &["/nonexistent/agent.toml", "cannot read"]),
    config("ct-max-entries = 0\n", &["`ct-max-entries`", "0"]),
    config("podcidr = \"10.1.0.0/24\"\n", &["unknown key `podcidr`"]),
    config("pod-cidr = \"224.0.0.0/24\"\n", &["`pod-cidr`", "multicast"]),
    config("xdp = 1\n", &["`xdp` must be true or false"]),
    config("nat-ports = [1, 2]\n", &["`nat-ports` must be a string or a number"]),
    config("pod-cidr = \n", &["line 1"]),
    config("node-gc-after = \"10x\"\n", &["`node-gc-after`", "\"10x\" is not a duration"]),
    case(&["agent", "--node-gc-after", "soon"], &["--node-gc-after", "\"soon\" is not a duration"]),
];

/// Every other verb, against a running agent with endpoints a (container 0) and b
/// (container 1) and tcp/8081 published for b.
const CLI_CASES: &[Case] = &[
    case(&["endpoint", "add"], &["<NAME>", "required"]),
    case(&["endpoint", "add", "x"], &["--netns"]),
    case(&["endpoint", "add", "x", "--netns", "/run/netns/no-such-ns"], &["/run/netns/no-such-ns"]),
    case(
        &["endpoint", "add", "x", "--netns", "/proc/version"],
        &["/proc/version", "not a network namespace"],
    ),
    case(&["endpoint", "add", "x", "--netns", "{c1}", "--pid", "1"], &["--pid", "cannot be used"]),
    case(&["endpoint", "add", "x", "--pid", "0"], &["/proc/0/ns/net"]),
    case(&["endpoint", "add", "x", "--pid", "4294967295"], &["/proc/4294967295/ns/net"]),
    case(&["endpoint", "add", "x", "--pid", "-1"], &["-1"]),
    case(&["endpoint", "add", "x", "--pid", "abc"], &["abc"]),
    // Issue 13, item 1: the node's own namespace, by path or by a process in it.
    case(&["endpoint", "add", "x", "--netns", "{node}"], &["{node}", "agent's own network namespace"]),
    case(&["endpoint", "add", "x", "--pid", "{agent_pid}"], &["/proc/{agent_pid}/ns/net", "agent's own"]),
    case(&["endpoint", "add", "we b", "--netns", "{c1}"], &["\"we b\"", "endpoint name"]),
    case(&["endpoint", "add", "", "--netns", "{c1}"], &["\"\"", "endpoint name"]),
    case(&["endpoint", "add", "a:b", "--netns", "{c1}"], &["\"a:b\"", "endpoint name"]),
    case(
        &[
            "endpoint",
            "add",
            "x123456789x123456789x123456789x123456789x123456789x123456789xxxxx",
            "--netns",
            "{c1}",
        ],
        &["x123456789x123456789", "1-64 characters"],
    ),
    case(&["endpoint", "add", "x", "--netns", "{c1}", "--ip", "10.77.0.1"], &["10.77.0.1", "reserved"]),
    case(&["endpoint", "add", "x", "--netns", "{c1}", "--ip", "10.77.0.0"], &["10.77.0.0", "reserved"]),
    case(&["endpoint", "add", "x", "--netns", "{c1}", "--ip", "10.77.0.255"], &["10.77.0.255", "reserved"]),
    case(
        &["endpoint", "add", "x", "--netns", "{c1}", "--ip", "172.17.0.2"],
        &["172.17.0.2", "outside the pod CIDR"],
    ),
    case(
        &["endpoint", "add", "x", "--netns", "{c1}", "--ip", "{a_ip}"],
        &["{a_ip}", "already used by endpoint a"],
    ),
    case(&["endpoint", "add", "x", "--netns", "{c1}", "--ip", "999.1.1.1"], &["999.1.1.1"]),
    case(
        &["endpoint", "add", "x", "--netns", "{c1}", "--mac", "ff:ff:ff:ff:ff:ff"],
        &["ff:ff:ff:ff:ff:ff", "unicast"],
    ),
    case(&["endpoint", "add", "x", "--netns", "{c1}", "--mac", "00:00:00:00:00:00"], &["00:00:00:00:00:00"]),
    case(&["endpoint", "add", "x", "--netns", "{c1}", "--mac", "zz:zz"], &["zz:zz", "MAC"]),
    case(&["endpoint", "add", "x", "--netns", "{c1}", "--mtu", "20"], &["20", "MTU"]),
    case(&["endpoint", "add", "x", "--netns", "{c1}", "--mtu", "70000"], &["70000", "MTU"]),
    case(&["endpoint", "add", "x", "--netns", "{c1}", "--mtu", "-5"], &["-5"]),
    case(&["endpoint", "add", "x", "--netns", "{c1}", "--ifname", ""], &["\"\"", "interface name"]),
    case(
        &["endpoint", "add", "x", "--netns", "{c1}", "--ifname", "eth0-much-too-long"],
        &["eth0-much-too-long"],
    ),
    case(&["endpoint", "add", "x", "--netns", "{c1}", "--ifname", "eth/0"], &["eth/0", "interface name"]),
    case(&["endpoint", "add", "a", "--netns", "{c1}"], &["endpoint a already exists"]),
    case(&["endpoint", "del", "a b"], &["\"a b\"", "endpoint name"]),
    case(&["endpoint", "list", "-o", "yaml"], &["yaml"]),
    // Issue 13, item 11: an empty endpoint name is named as such.
    case(&["port", "add", "8080", ""], &["\"\"", "endpoint name"]),
    case(&["port", "add", "8080", ":80"], &["\"\"", "endpoint name"]),
    case(&["port", "add", "8080", "nope"], &["no endpoint \"nope\""]),
    case(&["port", "add", "0", "a"], &["0"]),
    case(&["port", "add", "65536", "a"], &["65536"]),
    case(&["port", "add", "8080", "a:0"], &["\"0\"", "not a port"]),
    case(&["port", "add", "8080", "a:99999"], &["\"99999\"", "not a port"]),
    case(&["port", "add", "8080", "a:http"], &["\"http\"", "not a port"]),
    case(&["port", "add", "--proto", "sctp", "8080", "a"], &["sctp"]),
    // Issue 13, item 13: a host port masquerade may hand out.
    case(&["port", "add", "62000", "a"], &["62000", "--nat-ports"]),
    case(&["port", "add", "8080", "a", "--host-ip", "192.0.2.1"], &["192.0.2.1", "neither the node's"]),
    case(&["port", "add", "8080", "a", "--host-ip", "node"], &["node"]),
    case(&["port", "add", "8081", "a:80"], &["8081", "already published for b"]),
    case(&["port", "del", "0"], &["0"]),
    case(&["ct", "list", "--proto", "sctp"], &["sctp"]),
    case(&["ct", "list", "--port", "70000"], &["70000"]),
    case(&["ct", "list", "--host", "10.77.0"], &["10.77.0"]),
    case(&["map", "dump", "NOPE"], &["no map \"NOPE\""]),
    case(&["map", "dump", "EVENTS"], &["EVENTS", "netpath trace"]),
    case(&["trace", "--count", "0"], &["0"]),
    case(&["trace", "--duration", "0"], &["0"]),
    case(&["trace", "--port", "0"], &["0"]),
    case(&["trace", "--endpoint", "nope", "--count", "1"], &["no endpoint \"nope\""]),
    case(&["trace", "--host", "300.1.1.1"], &["300.1.1.1"]),
    case(&["stats", "-o", "yaml"], &["yaml"]),
    case(&["doctor", "-o", "xml"], &["xml"]),
    case(&["reconcile", "--dry-run=maybe"], &["maybe"]),
    case(&["completions", "nosh"], &["nosh"]),
    case(&["frobnicate"], &["frobnicate"]),
];

/// Runs `args` in the node namespace (an operator's shell on the node); an agent start
/// that wrongly succeeds is stopped after 20 s (and fails the case).
fn run(lab: &Lab, args: &[String]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.arg("20").arg(netpath_bin()).args(args).stdin(std::process::Stdio::null());
    lab.env_for(&mut cmd);
    netpath_tests::in_netns(&mut cmd, &lab.node.path()).output().expect("run netpath")
}

/// Checks every case: exit, one line, the words, no residue. Returns how many ran.
fn refuse_all(lab: &Lab, cases: &[Case], subst: &dyn Fn(&str) -> String) -> usize {
    let file = lab.work_dir.join("case.toml");
    // Every case must leave the node as it found it, so one look before them all is
    // the reference for each (a look is a dozen commands: taken once, not per case).
    let before = lab.residue();
    for c in cases {
        if let Some(body) = c.file {
            std::fs::write(&file, body).unwrap();
        }
        let args: Vec<String> = c
            .args
            .iter()
            .map(|a| if *a == "{file}" { file.display().to_string() } else { subst(a) })
            .collect();
        let out = run(lab, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code();
        assert!(
            !matches!(code, Some(0) | Some(101) | Some(124) | None),
            "{args:?}: exit {code:?} (0: accepted, 101: panic, 124: the agent ran):\n{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: not one line:\n{err}");
        for w in c.want {
            let w = subst(w);
            assert!(err.contains(&w), "{args:?}: the error does not say {w:?}: {err}");
        }
        assert_eq!(lab.residue(), before, "{args:?} left something behind ({err})");
    }
    cases.len()
}

#[test]
fn hostile_input_is_refused_in_one_line_and_leaves_nothing_behind() {
    let mut lab = Lab::new(2);
    // A port someone else holds, for --metrics.
    let busy = lab.node.run(|| std::net::TcpListener::bind("127.0.0.1:0")).join().unwrap().unwrap();
    let busy_port = busy.local_addr().unwrap().port().to_string();
    let id = lab.id.clone();
    // The table's cases are 'static; so is what is added to them.
    let cgroup: &'static str = Box::leak(lab.cgroup.display().to_string().into_boxed_str());
    let agent_subst = |a: &str| a.replace("{busy_port}", &busy_port).replace("{id}", &id);
    let mut n = 0;
    for c in AGENT_CASES {
        // Were the start to go through, it would harm nothing: the lab's own cgroup, no
        // metrics port.
        let mut args: Vec<&str> = c.args.to_vec();
        for (flag, value) in [("--cgroup", cgroup), ("--metrics", "off")] {
            if !args.contains(&flag) {
                args.extend([flag, value]);
            }
        }
        let args: &'static [&'static str] = Box::leak(args.into_boxed_slice());
        n += refuse_all(&lab, &[Case { args, file: c.file, want: c.want }], &agent_subst);
    }
    assert!(!lab.bpffs_dir.exists(), "a refused start left pins");
    assert!(
        !lab.work_dir.join("run").exists() && !lab.work_dir.join("state").exists(),
        "a refused start left directories"
    );
    drop(busy);

    lab.start_agent();
    let a_ip = lab.add_endpoint("a", 0);
    lab.add_endpoint("b", 1);
    lab.netpath_ok(&["port", "add", "8081", "b:80"]);
    // The endpoints' move to TCX links is the agent's own work, not residue.
    lab.wait_for_tcx_links();
    let (c0, c1, node) = (
        lab.containers[0].path().display().to_string(),
        lab.containers[1].path().display().to_string(),
        lab.node.path().display().to_string(),
    );
    let agent_pid = lab.agent_pid().unwrap().to_string();
    let subst = |a: &str| {
        a.replace("{c0}", &c0)
            .replace("{c1}", &c1)
            .replace("{node}", &node)
            .replace("{agent_pid}", &agent_pid)
            .replace("{a_ip}", &a_ip.to_string())
    };
    n += refuse_all(&lab, CLI_CASES, &subst);
    assert!(n >= 60, "only {n} cases");
    // The node kept its default route through all of it (item 1 took it away).
    let routes = lab.node.exec(&["ip", "route", "show", "default"]);
    assert!(String::from_utf8_lossy(&routes.stdout).contains(&OUTSIDE_IP.to_string()));
    // And the agent still works: a reaches the outside through masquerade.
    assert!(lab.containers[0].ping(OUTSIDE_IP, 1), "{}", lab.agent_log());
}

/// `netpath trace ...` as a child process (killed on drop).
struct TraceProc(std::process::Child);

impl Drop for TraceProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_trace(lab: &Lab, args: &[&str]) -> TraceProc {
    let mut cmd = Command::new(netpath_bin());
    cmd.arg("trace").args(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    lab.env_for(&mut cmd);
    TraceProc(cmd.spawn().unwrap())
}

/// Is the datapath's trace filter armed? (bpftool reads the pinned map.)
fn filter_armed(lab: &Lab) -> bool {
    let pin = lab.bpffs_dir.join("TRACE_FILTER");
    let out = netpath_tests::sh(&["bpftool", "-j", "map", "dump", "pinned", pin.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // The first byte of the value is `enabled`.
    let first = &v[0]["value"];
    let byte = first.get("enabled").cloned().unwrap_or_else(|| first[0].clone());
    byte.as_u64()
        .or_else(|| byte.as_str().and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()))
        != Some(0)
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_second_trace_is_refused_and_a_killed_trace_disarms_its_filter() {
    let (lab, _) = Lab::setup(2).endpoints(&["a", "b"]).build();
    assert!(!filter_armed(&lab));
    let mut first = spawn_trace(&lab, &["--endpoint", "a", "--port", "80"]);
    wait_for("the first trace to arm", || filter_armed(&lab));
    // Issue 13, item 6: the second one used to take the first one's filter silently.
    let out = lab.netpath(&["trace", "--endpoint", "b", "--count", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second trace ran: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let pid = first.0.id().to_string();
    for w in ["already running", pid.as_str(), "endpoint a", "port 80"] {
        assert!(err.contains(w), "the refusal does not name {w:?}: {err}");
    }
    // However the first ends, its filter goes: a trace killed with SIGKILL left it armed
    // (every packet paying a snapshot) when the CLI disarmed it itself.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    wait_for("the killed trace's filter to be disarmed", || !filter_armed(&lab));
    drop(first);
    // Issue 13, item 7: a duration past what a clock can hold is no deadline, not a panic.
    let b = lab.netpath_ok(&["endpoint", "list", "-o", "json"]);
    let b: serde_json::Value = serde_json::from_str(&b).unwrap();
    let b_ip: Ipv4Addr = b["endpoints"][1]["ip"].as_str().unwrap().parse().unwrap();
    let pinger = {
        let c0 = lab.containers[0].name.clone();
        std::thread::spawn(move || {
            Command::new("ip")
                .args(["netns", "exec", &c0, "ping", "-c", "20", "-i", "0.2", &b_ip.to_string()])
                .output()
        })
    };
    let out = lab.netpath(&["trace", "--duration", "18446744073709551615", "--count", "1", "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    pinger.join().unwrap().unwrap();
    assert!(!filter_armed(&lab), "the filter stayed armed after the trace");
}

#[test]
fn sigterm_says_the_datapath_keeps_forwarding_and_it_does() {
    let (mut lab, ips) = Lab::setup(2).endpoints(&["a", "b"]).build();
    let b = ips[1];
    lab.stop_agent();
    let log = lab.agent_log();
    // Issue 13, item 10: the log said the programs detach with the agent; they do not.
    assert!(!log.contains("detach with the agent"), "{log}");
    assert!(log.contains("keeps forwarding"), "{log}");
    assert!(lab.containers[0].ping(b, 1), "no forwarding after SIGTERM");
    // Issue 13, item 15: the log is a file, not a terminal: no colour codes in it.
    assert!(!log.contains('\x1b'), "escape codes in the log file:\n{log:?}");
}

/// The uplink's world as the lab builds it: uplink0 in the node, eth0 at the outside.
fn make_uplink(lab: &Lab) {
    let (n, o) = (lab.node.name.as_str(), lab.outside.name.as_str());
    netpath_tests::sh(&[
        "ip", "-n", n, "link", "add", "uplink0", "type", "veth", "peer", "name", "eth0", "netns", o,
    ]);
    netpath_tests::sh(&["ip", "-n", n, "addr", "add", &format!("{NODE_UPLINK_IP}/24"), "dev", "uplink0"]);
    netpath_tests::sh(&["ip", "-n", o, "addr", "add", &format!("{OUTSIDE_IP}/24"), "dev", "eth0"]);
    netpath_tests::sh(&["ip", "-n", n, "link", "set", "uplink0", "up"]);
    netpath_tests::sh(&["ip", "-n", o, "link", "set", "eth0", "up"]);
    netpath_tests::sh(&["ip", "-n", n, "route", "add", "default", "via", &OUTSIDE_IP.to_string()]);
}

fn metric(lab: &Lab, name: &str) -> Option<u64> {
    netpath_tests::metric_value(&lab.metrics()?, name)
}

fn tcp_echo_ok(from: &Netns, to: std::net::SocketAddrV4) -> bool {
    use std::io::{Read as _, Write as _};
    from.run(move || {
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&to.into(), Duration::from_secs(2)) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 5];
        s.write_all(b"hello").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"hello"
    })
    .join()
    .unwrap()
}

#[test]
fn a_lost_uplink_is_reported_and_taken_back_when_it_returns() {
    let mut lab = Lab::new(2);
    lab.start_agent_with(&["--uplink", "uplink0"]);
    let a = lab.add_endpoint("a", 0);
    netpath_tests::echo_server(&lab.outside, std::net::SocketAddrV4::new(OUTSIDE_IP, 7000));
    netpath_tests::echo_server(&lab.containers[0], std::net::SocketAddrV4::new(a, 80));
    lab.netpath_ok(&["port", "add", "8080", "a:80"]);
    assert!(tcp_echo_ok(&lab.containers[0], std::net::SocketAddrV4::new(OUTSIDE_IP, 7000)));
    assert_eq!(metric(&lab, "netpath_uplink_up"), Some(1));

    // Issue 13, item 14: gone while the agent runs.
    netpath_tests::sh(&["ip", "-n", &lab.node.name, "link", "del", "uplink0"]);
    wait_for("the metrics to see the uplink gone", || metric(&lab, "netpath_uplink_up") == Some(0));
    let out = lab.netpath(&["endpoint", "add", "b", "--netns", lab.containers[1].path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("warning") && err.contains("uplink0 is gone"), "no warning: {err}");
    let out = lab.netpath(&["port", "add", "8081", "b:80"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("uplink0 is gone"));
    let out = lab.netpath(&["reconcile"]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && text.contains("uplink uplink0") && text.contains("is gone"), "{text}");
    assert!(!text.contains("No such device"), "a raw ENODEV: {text}");
    let doctor = lab.netpath_in_node(&["doctor", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let uplink = v["findings"].as_array().unwrap().iter().find(|f| f["check"] == "uplink").unwrap().clone();
    assert_eq!(uplink["ok"], false, "{v}");
    assert!(uplink["detail"].as_str().unwrap().contains("uplink0 is gone"), "{v}");
    assert!(lab.agent_log().contains("the uplink is gone"), "{}", lab.agent_log());

    // Back, with a new index: the agent re-attaches by itself.
    make_uplink(&lab);
    wait_for("the metrics to see the uplink back", || metric(&lab, "netpath_uplink_up") == Some(1));
    assert!(
        tcp_echo_ok(&lab.containers[0], std::net::SocketAddrV4::new(OUTSIDE_IP, 7000)),
        "no masquerade after the uplink came back\n{}",
        lab.agent_log()
    );
    assert!(
        tcp_echo_ok(&lab.outside, std::net::SocketAddrV4::new(NODE_UPLINK_IP, 8080)),
        "no published port"
    );
    let out = lab.netpath(&["reconcile", "--dry-run"]);
    assert!(
        out.status.success(),
        "drift after the uplink came back: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn listings_line_up_under_their_headers() {
    let mut lab = Lab::new(2);
    lab.start_agent();
    lab.add_endpoint("a", 0);
    lab.add_endpoint("a-much-longer-endpoint-name", 1);
    lab.netpath_ok(&["port", "add", "8080", "a:80"]);
    lab.netpath_ok(&[
        "port",
        "add",
        "--proto",
        "udp",
        "53",
        "a-much-longer-endpoint-name",
        "--host-ip",
        &NODE_UPLINK_IP.to_string(),
    ]);
    // Issue 13, item 15: `tcp *:8080` used to sit under `PROTO  HOST` askew. Every
    // left-aligned column's values start where its header does.
    for (args, columns) in [
        (&["port", "list"][..], &["PROTO", "HOST", "ENDPOINT", "CONTAINER"][..]),
        (&["endpoint", "list"], &["NAME", "IP", "MAC", "HOST-VETH", "NETNS"]),
        (&["map", "list"], &["NAME", "KIND"]),
    ] {
        let text = lab.netpath_ok(args);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() > 2, "{text}");
        for col in columns {
            let at = lines[0].find(&format!("{col} ")).or_else(|| lines[0].rfind(col)).unwrap();
            for l in &lines[1..] {
                let b = l.as_bytes();
                let starts_here = b.len() > at && b[at] != b' ' && (at == 0 || b[at - 1] == b' ');
                assert!(starts_here, "{args:?}: column {col} (at {at}) askew in {l:?}:\n{text}");
            }
        }
    }
    let stats = lab.netpath_ok(&["stats"]);
    let block: Vec<&str> = stats
        .lines()
        .skip_while(|l| !l.starts_with("DATAPATH DECISION"))
        .take_while(|l| !l.is_empty())
        .collect();
    let width = block[0].len();
    // The longest reason name (drop-unsupported-protocol) used to push its numbers out.
    assert!(block.iter().all(|l| l.len() == width), "stats columns do not line up:\n{}", block.join("\n"));
}
