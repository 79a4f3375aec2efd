//! The world of cluster tests: an underlay (a namespace with a bridge, like a switch,
//! the way the nodes of a rack share a network), a real etcd on it, and nodes ([`Lab`]s
//! whose uplinks are ports of the switch).
use std::{
    fs,
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{in_netns, lab_id, sh, Lab, Netns, TEST_PREFIX};

/// The switch's name inside the underlay namespace.
pub const SWITCH: &str = "sw0";
/// The underlay's own address: etcd listens here, and it is the nodes' default gateway.
pub const UNDERLAY_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
pub const ETCD_PORT: u16 = 2379;

/// The etcd binary: $NETPATH_ETCD, else the one `cargo xtask setup` unpacked into
/// target/tools, else `etcd` on the PATH.
pub fn etcd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NETPATH_ETCD") {
        return p.into();
    }
    let unpacked = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/etcd/usr/bin/etcd");
    if unpacked.exists() {
        return unpacked;
    }
    "etcd".into()
}

pub struct Underlay {
    pub ns: Netns,
    pub work_dir: PathBuf,
    /// What the names of the underlay and of its nodes start with (see [`crate::sweep`]).
    pub prefix: String,
    etcd: Option<Child>,
}

impl Underlay {
    /// The switch, with etcd running on it.
    pub fn new() -> Self {
        let mut u = Self::switch(TEST_PREFIX);
        u.start_etcd();
        u
    }

    /// The switch alone, every name starting with `prefix` (the benchmark's baselines
    /// need no store, and its runs are swept apart from the tests').
    pub fn switch(prefix: &str) -> Self {
        let id = lab_id(prefix);
        let work_dir = std::env::temp_dir().join(format!("netpath-{id}"));
        fs::create_dir_all(&work_dir).unwrap();
        let ns = Netns::new(format!("{id}-ul"));
        sh(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", &ns.name, "link", "add", SWITCH, "type", "bridge"]);
        sh(&["ip", "-n", &ns.name, "addr", "add", &format!("{UNDERLAY_IP}/24"), "dev", SWITCH]);
        sh(&["ip", "-n", &ns.name, "link", "set", SWITCH, "up"]);
        Underlay { ns, work_dir, prefix: prefix.to_string(), etcd: None }
    }

    /// `--store` for the nodes' agents.
    pub fn store(&self) -> String {
        format!("etcd://{UNDERLAY_IP}:{ETCD_PORT}")
    }

    /// Node `i` (from 0): a lab with its uplink on the switch at 10.99.0.(10+i).
    pub fn node(&self, i: u8, containers: usize) -> Lab {
        Lab::on_underlay(self, Ipv4Addr::new(10, 99, 0, 10 + i), containers)
    }

    /// Starts etcd (again: its data directory survives a kill) and waits until it
    /// answers.
    pub fn start_etcd(&mut self) {
        assert!(self.etcd.is_none(), "etcd already running");
        let client = format!("http://{UNDERLAY_IP}:{ETCD_PORT}");
        let peer = "http://127.0.0.1:2380";
        let log = fs::File::options().create(true).append(true).open(self.work_dir.join("etcd.log")).unwrap();
        let mut cmd = Command::new(etcd_bin());
        cmd.arg("--name=netpath-test")
            .arg(format!("--data-dir={}", self.work_dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=netpath-test={peer}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        in_netns(&mut cmd, &self.ns.path());
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start {} ({e}): run `cargo xtask setup`", etcd_bin().display())
        });
        // etcd answers on its client port once it is the leader of its one-member cluster.
        let deadline = Instant::now() + patience();
        while !self.etcd_ready() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("etcd exited with {status}: {}", self.etcd_log());
            }
            assert!(Instant::now() < deadline, "etcd did not start: {}", self.etcd_log());
            std::thread::sleep(Duration::from_millis(50));
        }
        self.etcd = Some(child);
    }

    /// etcd answers its health check: it has a leader and serves requests. (It accepts
    /// connections before that; an agent asking then waits, and in an emulated guest
    /// longer than its store calls wait.)
    fn etcd_ready(&self) -> bool {
        use std::io::{Read as _, Write as _};
        let addr = SocketAddrV4::new(UNDERLAY_IP, ETCD_PORT);
        self.ns
            .run(move || {
                let Ok(mut s) = TcpStream::connect_timeout(&addr.into(), Duration::from_millis(200)) else {
                    return false;
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut answer = String::new();
                s.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_ok()
                    && s.read_to_string(&mut answer).is_ok()
                    && answer.contains("\"health\":\"true\"")
            })
            .join()
            .unwrap_or(false)
    }

    /// Kills etcd with SIGKILL, as a crash would.
    pub fn kill_etcd(&mut self) {
        if let Some(mut child) = self.etcd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn etcd_log(&self) -> String {
        fs::read_to_string(self.work_dir.join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Underlay {
    fn drop(&mut self) {
        self.kill_etcd();
        let _ = fs::remove_dir_all(&self.work_dir);
    }
}

impl Default for Underlay {
    fn default() -> Self {
        Self::new()
    }
}

/// The cluster CIDR of every test cluster.
pub const CLUSTER: &str = "10.244.0.0/16";

/// How long the cluster's waits wait at most (only a red run waits that long): 30 s, and
/// in the emulated guests, where etcd and the agents share one slow CPU, 2 minutes.
pub fn patience() -> Duration {
    Duration::from_secs(if crate::in_guest() { 120 } else { 30 })
}

/// The agent flags of node `name` in `u`'s cluster. A short lease, so tests see expiry
/// soon: 2 s, or $NETPATH_TEST_NODE_LEASE (the emulated guests, whose agents can be
/// starved of their one CPU for longer than that, use more).
pub fn agent_args(u: &Underlay, name: &str) -> Vec<String> {
    let lease = std::env::var("NETPATH_TEST_NODE_LEASE").unwrap_or_else(|_| "2".into());
    ["--store", &u.store(), "--node-name", name, "--cluster-cidr", CLUSTER, "--node-lease", &lease]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Starts `lab`'s agent as node `name`.
pub fn start(lab: &mut Lab, u: &Underlay, name: &str) {
    let args = agent_args(u, name);
    lab.start_agent_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// `netpath node list -o json` through `lab`'s agent: name -> node.
pub fn nodes(lab: &Lab) -> Vec<Value> {
    let out: Value = serde_json::from_str(&lab.netpath_ok(&["node", "list", "-o", "json"])).unwrap();
    out["nodes"].as_array().unwrap().clone()
}

/// The node `name` in `list`.
pub fn node<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter().find(|n| n["name"] == name).unwrap_or_else(|| panic!("no node {name} in {list:?}"))
}

/// Waits (at most [`patience`]) for `check` on the node list.
pub fn wait_for(lab: &Lab, what: &str, check: impl Fn(&[Value]) -> bool) {
    let deadline = Instant::now() + patience();
    loop {
        let list = nodes(lab);
        if check(&list) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {list:?}\n{}", lab.agent_log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `n` nodes with `--tunnel tunnel`, one pod each: the nodes and the pods' addresses.
pub fn pods(u: &Underlay, n: usize, tunnel: &str) -> (Vec<Lab>, Vec<std::net::Ipv4Addr>) {
    let mut labs: Vec<Lab> = (0..n as u8).map(|i| u.node(i, 1)).collect();
    start_nodes(u, &mut labs, tunnel);
    let ips = labs.iter().map(|lab| lab.add_endpoint("pod", 0)).collect();
    (labs, ips)
}

/// Starts node `i`'s agent as `n{i}` with `--tunnel tunnel`, and closes its firewall
/// (FORWARD DROP): only the datapath forwards.
pub fn start_nodes(u: &Underlay, labs: &mut [Lab], tunnel: &str) {
    for (i, lab) in labs.iter_mut().enumerate() {
        let mut args = agent_args(u, &format!("n{i}"));
        args.extend(["--tunnel".to_string(), tunnel.to_string()]);
        lab.start_agent_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
        lab.node.exec(&["iptables", "-P", "FORWARD", "DROP"]);
    }
}

/// Waits until `lab`'s NODE_ROUTES holds `n` routes.
pub fn wait_for_routes(lab: &Lab, n: usize) {
    let deadline = Instant::now() + patience();
    while lab.map_len("NODE_ROUTES") != n {
        assert!(Instant::now() < deadline, "NODE_ROUTES never held {n} routes\n{}", lab.agent_log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The IPv6 cluster CIDR of the IPv6 test clusters (`--cluster-cidr6`); each node gets
/// a /64 of it.
pub const CLUSTER6: &str = "fd00:244::/48";

/// Node `i`'s IPv6 underlay address (on its uplink, as [`Underlay::node`]'s IPv4 one).
pub fn underlay6(i: u8) -> std::net::Ipv6Addr {
    std::net::Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 0x10 + i as u16)
}

/// The agent flags of node `name` in `u`'s dual-stack cluster, `--tunnel tunnel`.
pub fn agent_args6(u: &Underlay, name: &str, tunnel: &str) -> Vec<String> {
    let mut args = agent_args(u, name);
    args.extend(["--cluster-cidr6", CLUSTER6, "--tunnel", tunnel].map(String::from));
    args
}

/// [`start_nodes`] for a dual-stack cluster: each node's uplink also gets its IPv6
/// underlay address ([`underlay6`], without duplicate address detection, so the agent
/// finds it usable at once), and both firewalls are closed (FORWARD DROP for IPv4 and
/// IPv6): only the datapath forwards.
pub fn start_nodes6(u: &Underlay, labs: &mut [Lab], tunnel: &str) {
    for (i, lab) in labs.iter_mut().enumerate() {
        let addr = format!("{}/64", underlay6(i as u8));
        lab.node.exec(&["ip", "-6", "addr", "add", &addr, "dev", "uplink0", "nodad"]);
        let args = agent_args6(u, &format!("n{i}"), tunnel);
        lab.start_agent_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
        lab.node.exec(&["iptables", "-P", "FORWARD", "DROP"]);
        lab.node.exec(&["ip6tables", "-P", "FORWARD", "DROP"]);
    }
}

/// Waits until `lab`'s NODE_ROUTES6 holds `n` routes.
pub fn wait_for_routes6(lab: &Lab, n: usize) {
    let deadline = Instant::now() + patience();
    while lab.map_len("NODE_ROUTES6") != n {
        assert!(Instant::now() < deadline, "NODE_ROUTES6 never held {n} routes\n{}", lab.agent_log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Just enough IPv4 prefix arithmetic for the checks above (the tests crate does not
/// depend on ipnet).
pub mod ipnet_lite {
    use std::net::Ipv4Addr;

    #[derive(Debug, Clone, Copy)]
    pub struct Net {
        pub addr: Ipv4Addr,
        pub len: u32,
    }

    impl std::str::FromStr for Net {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, String> {
            let (a, l) = s.split_once('/').ok_or(s.to_string())?;
            Ok(Net {
                addr: a.parse().map_err(|_| s.to_string())?,
                len: l.parse().map_err(|_| s.to_string())?,
            })
        }
    }

    impl Net {
        pub fn contains(&self, ip: Ipv4Addr) -> bool {
            let mask = u32::MAX.checked_shl(32 - self.len).unwrap_or(0);
            u32::from(ip) & mask == u32::from(self.addr) & mask
        }

        /// The first address: the pods' gateway.
        pub fn gateway(&self) -> Ipv4Addr {
            Ipv4Addr::from(u32::from(self.addr) + 1)
        }
    }
}
