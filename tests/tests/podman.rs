//! The CNI plugin's real client: Debian's podman (4.3, CNI backend) starting containers
//! on a netpath network, run inside the lab's node namespace, with its storage and
//! configuration in the lab's work directory. The image is built here from the static
//! busybox (no registry is reachable).
//!
//! Two facts of this machine kind shape the configuration: its cgroups are hybrid,
//! which crun refuses ("cgroups in hybrid mode not supported") and runc accepts; and
//! root lacks CAP_SYS_RESOURCE, so podman's default nofile limit (1048576) fails.
use std::{
    fs,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Command, Output},
    time::{Duration, Instant},
};

use netpath_tests::{in_netns, netpath_bin, sh, Lab, NODE_UPLINK_IP, OUTSIDE_IP};
use serde_json::Value;

const NET: &str = "npnet";
const IMAGE: &str = "localhost/netpath-busybox";

struct Podman {
    dir: PathBuf,
    node: PathBuf,
}

impl Podman {
    /// podman configured for the lab: a conflist from `netpath cni conflist`, the plugin
    /// as a link to the netpath binary, the busybox image imported.
    fn new(lab: &Lab) -> Podman {
        let dir = lab.work_dir.join("podman");
        for d in ["cni-bin", "cni-conf", "tmp", "rootfs/bin", "rootfs/www", "rootfs/tmp"] {
            fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::os::unix::fs::symlink(netpath_bin(), dir.join("cni-bin/netpath")).unwrap();
        let conflist = lab.netpath_ok(&["cni", "conflist", "--name", NET]);
        fs::write(dir.join(format!("cni-conf/{NET}.conflist")), conflist).unwrap();
        let d = dir.display().to_string();
        fs::write(
            dir.join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n\
                 [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{d}/cni-bin\"]\n\
                 network_config_dir = \"{d}/cni-conf\"\n\
                 [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
                 tmp_dir = \"{d}/tmp\"\n"
            ),
        )
        .unwrap();
        let busybox = dir.join("rootfs/bin/busybox");
        fs::copy("/bin/busybox", &busybox)
            .expect("/bin/busybox (Debian's busybox-static; `cargo xtask setup`)");
        for applet in ["sh", "httpd", "nc", "wget", "sleep", "cat", "echo", "ip", "ping"] {
            std::os::unix::fs::symlink("busybox", dir.join("rootfs/bin").join(applet)).unwrap();
        }
        fs::write(dir.join("rootfs/www/index.html"), "hello from podman\n").unwrap();
        sh(&["tar", "-C", &format!("{d}/rootfs"), "-cf", &format!("{d}/image.tar"), "."]);
        let p = Podman { dir, node: lab.node.path() };
        p.ok(&["import", &format!("{d}/image.tar"), IMAGE]);
        p
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let d = self.dir.display().to_string();
        let mut cmd = Command::new("podman");
        cmd.args([
            "--root",
            &format!("{d}/root"),
            "--runroot",
            &format!("{d}/runroot"),
            "--storage-driver",
            "vfs",
        ])
        .args(args)
        .env("CONTAINERS_CONF", self.dir.join("containers.conf"));
        in_netns(&mut cmd, &self.node);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("podman (Debian's podman; `cargo xtask setup` installs it)")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "podman {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// `podman run -d` of busybox on the netpath network; `extra` before the image.
    fn start(&self, name: &str, extra: &[&str], command: &[&str]) {
        let mut args = vec!["run", "-d", "--name", name, "--network", NET];
        args.extend(extra);
        args.push(IMAGE);
        args.extend(command);
        self.ok(&args);
    }

    fn web(&self, name: &str, extra: &[&str]) {
        self.start(name, extra, &["httpd", "-f", "-v", "-p", "80", "-h", "/www"]);
    }

    fn ip(&self, name: &str) -> Ipv4Addr {
        let format = format!("{{{{.NetworkSettings.Networks.{NET}.IPAddress}}}}");
        self.ok(&["inspect", name, "--format", &format]).parse().unwrap()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Before the lab's agent stops: podman's DEL goes through it.
        let _ = self.run(&["rm", "-a", "-f", "-t", "0"]);
    }
}

/// An HTTP GET of / at `addr` from namespace `ns`; the body, or None when nothing
/// answered.
fn http_get(ns: &netpath_tests::Netns, addr: SocketAddr) -> Option<String> {
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut reply = String::new();
        s.read_to_string(&mut reply).ok()?;
        Some(reply)
    })
    .join()
    .unwrap()
}

/// Does node:`port` serve the page to the outside host, within 5 s? `podman start`
/// returns once the container's process runs, a moment before httpd listens.
fn served(lab: &Lab, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if answered(lab, port) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Does node:`port` serve the page to the outside host now (one try)?
fn answered(lab: &Lab, port: u16) -> bool {
    http_get(&lab.outside, SocketAddr::from((NODE_UPLINK_IP, port)))
        .is_some_and(|r| r.contains("hello from podman"))
}

/// The node's links, addresses and routes, netpath's pins and its map entries (the
/// state files are checked through the agent's lists: an empty list may be a file).
fn kernel(lab: &Lab) -> impl PartialEq + std::fmt::Debug {
    let r = lab.residue();
    (r.namespaces, r.pins, r.entries)
}

fn endpoints(lab: &Lab) -> Vec<Value> {
    let list: Value = serde_json::from_str(&lab.netpath_ok(&["endpoint", "list", "-o", "json"])).unwrap();
    list["endpoints"].as_array().unwrap().clone()
}

fn ports(lab: &Lab) -> Vec<Value> {
    let list: Value = serde_json::from_str(&lab.netpath_ok(&["port", "list", "-o", "json"])).unwrap();
    list["ports"].as_array().unwrap().clone()
}

/// Waits (10 s at most) until the agent holds no endpoint and no port: podman tears a
/// killed container's network down from its cleanup process, after the kill returns.
fn nothing_left(lab: &Lab) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if endpoints(lab).is_empty() && ports(lab).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn podman_containers_are_published_reach_each_other_and_the_outside() {
    let mut lab = Lab::new(0);
    lab.start_agent();
    let podman = Podman::new(&lab);
    podman.web(
        "web",
        &["-p", "8080:80", "-p", "127.0.0.1:8085:80", "-p", "8090-8091:80-81", "-p", "8092:80/udp"],
    );
    assert!(served(&lab, 8080), "node:8080 does not reach the container; agent log:\n{}", lab.agent_log());
    // A range is a mapping per port; UDP beside TCP.
    assert!(served(&lab, 8090), "node:8090 (of -p 8090-8091:80-81)");
    let published: Vec<(String, u64)> = ports(&lab)
        .iter()
        .map(|p| (p["proto"].as_str().unwrap().to_string(), p["host_port"].as_u64().unwrap()))
        .collect();
    for want in [("tcp", 8091), ("udp", 8092)] {
        assert!(published.contains(&(want.0.to_string(), want.1)), "{want:?} not in {published:?}");
    }
    // `-p 127.0.0.1:...`: the node's processes only (5.14+: the hooks need the netns cookie).
    if netpath_tests::kernel_has(5, 14, "SO_NETNS_COOKIE") {
        let get = "exec 3<>/dev/tcp/127.0.0.1/8085 && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3";
        let page = lab.node_process(&["timeout", "5", "bash", "-c", get]);
        assert!(String::from_utf8_lossy(&page.stdout).contains("hello from podman"), "{page:?}");
        assert!(!answered(&lab, 8085), "a loopback-only port is reached from outside");
    }
    // The server saw the client's own address (no masquerade on the way in).
    let logs = podman.ok(&["logs", "web"]) + &String::from_utf8_lossy(&podman.run(&["logs", "web"]).stderr);
    assert!(logs.contains(&OUTSIDE_IP.to_string()), "httpd's log: {logs}");
    let rec = endpoints(&lab).into_iter().find(|e| e["ip"] == podman.ip("web").to_string()).unwrap();
    assert!(rec["owner"]
        .as_str()
        .unwrap()
        .starts_with(rec["name"].as_str().unwrap().trim_start_matches("cni-")));

    // A second container reaches the first by address, and the outside through SNAT.
    podman.start("client", &[], &["sleep", "600"]);
    let web = podman.ip("web");
    let page = podman.ok(&["exec", "client", "wget", "-q", "-O", "-", &format!("http://{web}/")]);
    assert!(page.contains("hello from podman"), "{page}");
    let listener = lab.outside.run(|| TcpListener::bind((OUTSIDE_IP, 9000)).unwrap()).join().unwrap();
    let seen = std::thread::spawn(move || listener.accept().map(|(_, peer)| peer.ip()));
    podman.ok(&["exec", "client", "sh", "-c", &format!("echo hi | nc {OUTSIDE_IP} 9000")]);
    assert_eq!(seen.join().unwrap().unwrap(), std::net::IpAddr::V4(NODE_UPLINK_IP), "not masqueraded");
}

#[test]
fn stop_start_restart_kill_and_rm_leave_nothing_behind() {
    let mut lab = Lab::new(0);
    lab.start_agent();
    let podman = Podman::new(&lab);
    let before = kernel(&lab);
    podman.web("web", &["-p", "8081:80"]);
    assert!(served(&lab, 8081));

    podman.ok(&["stop", "-t", "1", "web"]);
    assert!(nothing_left(&lab), "after stop: {:?} {:?}", endpoints(&lab), ports(&lab));
    assert_eq!(kernel(&lab), before, "podman stop left something");
    podman.ok(&["start", "web"]);
    assert!(served(&lab, 8081), "a started container has no network back");
    podman.ok(&["restart", "-t", "1", "web"]);
    assert!(served(&lab, 8081), "a restarted container has no network back");
    assert_eq!(endpoints(&lab).len(), 1);

    podman.ok(&["kill", "-s", "KILL", "web"]);
    assert!(nothing_left(&lab), "after kill: {:?} {:?}", endpoints(&lab), ports(&lab));
    assert!(!answered(&lab, 8081));
    podman.ok(&["start", "web"]);
    assert!(served(&lab, 8081));
    podman.ok(&["rm", "-f", "-t", "0", "web"]);
    assert!(nothing_left(&lab));
    assert_eq!(kernel(&lab), before, "podman rm left something");
}

#[test]
fn twenty_containers_started_and_removed_at_once_leave_nothing() {
    let mut lab = Lab::new(0);
    lab.start_agent();
    let podman = Podman::new(&lab);
    let before = kernel(&lab);
    let names: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    std::thread::scope(|s| {
        for (i, name) in names.iter().enumerate() {
            let (podman, port) = (&podman, format!("{}:80", 8100 + i));
            s.spawn(move || podman.web(name, &["-p", &port]));
        }
    });
    let ips: std::collections::HashSet<Ipv4Addr> = names.iter().map(|n| podman.ip(n)).collect();
    assert_eq!(ips.len(), 20, "addresses: {ips:?}");
    assert_eq!((endpoints(&lab).len(), ports(&lab).len()), (20, 20));
    for port in [8100, 8119] {
        assert!(served(&lab, port), "node:{port}");
    }
    std::thread::scope(|s| {
        for name in &names {
            let podman = &podman;
            s.spawn(move || podman.ok(&["rm", "-f", "-t", "0", name]));
        }
    });
    assert!(nothing_left(&lab), "{:?}", endpoints(&lab));
    assert_eq!(kernel(&lab), before);
}

#[test]
fn containers_keep_working_across_an_agent_restart_and_rm_cleans_up_after_it() {
    let mut lab = Lab::new(0);
    lab.start_agent();
    let podman = Podman::new(&lab);
    let links = lab.node_links();
    podman.web("web", &["-p", "8082:80"]);
    assert!(served(&lab, 8082));
    lab.stop_agent();
    assert!(served(&lab, 8082), "the datapath stopped with the agent");
    lab.start_agent();
    assert!(served(&lab, 8082));
    podman.ok(&["rm", "-f", "-t", "0", "web"]);
    assert!(nothing_left(&lab));
    assert_eq!(lab.node_links(), links);
}

#[test]
fn podman_publishes_on_both_families_on_a_dual_stack_node() {
    use std::net::{IpAddr, Ipv6Addr};
    let (node6, outside6) =
        ("fd00:99::1".parse::<Ipv6Addr>().unwrap(), "fd00:99::2".parse::<Ipv6Addr>().unwrap());
    let mut lab = Lab::new(0);
    for (ns, cmd) in [
        (&lab.node, ["ip", "-6", "addr", "add", "fd00:99::1/64", "dev", "uplink0", "nodad"]),
        (&lab.outside, ["ip", "-6", "addr", "add", "fd00:99::2/64", "dev", "eth0", "nodad"]),
    ] {
        assert!(ns.exec(&cmd).status.success(), "{cmd:?}");
    }
    lab.start_agent_with(&["--pod-cidr6", "fd00:77::/64"]);
    let podman = Podman::new(&lab);
    // Docker's -p: no host address publishes on both families, `[::]:` on IPv6 only.
    podman.web("web", &["-p", "8080:80", "-p", "[::]:8081:80"]);
    assert!(served(&lab, 8080), "node:8080 over IPv4; agent log:\n{}", lab.agent_log());
    let over6 = |port| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let page = http_get(&lab.outside, SocketAddr::new(IpAddr::V6(node6), port));
            if page.as_deref().is_some_and(|r| r.contains("hello from podman")) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert!(over6(8080), "[node6]:8080 does not reach the container; agent log:\n{}", lab.agent_log());
    assert!(over6(8081), "[node6]:8081 does not reach the container");
    assert!(!answered(&lab, 8081), "an IPv6-only port answers on IPv4");
    // The server saw the IPv6 client's own address.
    let logs = podman.ok(&["logs", "web"]) + &String::from_utf8_lossy(&podman.run(&["logs", "web"]).stderr);
    assert!(logs.contains(&outside6.to_string()), "httpd's log: {logs}");
    let published = ports(&lab);
    let p8081 = published.iter().find(|p| p["host_port"] == 8081).expect("8081 listed");
    assert_eq!(p8081["host_ip"], "::", "{published:?}");
    podman.ok(&["rm", "-f", "-t", "0", "web"]);
    assert!(nothing_left(&lab));
    let dump = lab.netpath_ok(&["map", "dump", "PORT_MAPS6", "-o", "json"]);
    assert!(!dump.contains("8080") && !dump.contains("8081"), "{dump}");
}
