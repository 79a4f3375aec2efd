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
    etcd: Option<Child>,
}

impl Underlay {
    /// The switch, with etcd running on it.
    pub fn new() -> Self {
        let id = lab_id(TEST_PREFIX);
        let work_dir = std::env::temp_dir().join(format!("netpath-{id}"));
        fs::create_dir_all(&work_dir).unwrap();
        let ns = Netns::new(format!("{id}-ul"));
        sh(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", &ns.name, "link", "add", SWITCH, "type", "bridge"]);
        sh(&["ip", "-n", &ns.name, "addr", "add", &format!("{UNDERLAY_IP}/24"), "dev", SWITCH]);
        sh(&["ip", "-n", &ns.name, "link", "set", SWITCH, "up"]);
        let mut u = Underlay { ns, work_dir, etcd: None };
        u.start_etcd();
        u
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
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.etcd_ready() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("etcd exited with {status}: {}", self.etcd_log());
            }
            assert!(Instant::now() < deadline, "etcd did not start: {}", self.etcd_log());
            std::thread::sleep(Duration::from_millis(50));
        }
        self.etcd = Some(child);
    }

    fn etcd_ready(&self) -> bool {
        let addr = SocketAddrV4::new(UNDERLAY_IP, ETCD_PORT);
        self.ns
            .run(move || TcpStream::connect_timeout(&addr.into(), Duration::from_millis(200)).is_ok())
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
