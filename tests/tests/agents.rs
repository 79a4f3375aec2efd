//! One agent per node: a second agent is refused before it touches anything, whichever
//! of the first one's directories or namespace it shares; an agent that ran earlier in
//! the same namespace keeps its links; and an agent started with `ip netns exec` (a
//! private mount namespace) pins where every other shell, and its own restart, find it.
use std::{
    net::SocketAddrV4,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use netpath_tests::{netpath_bin, EchoConn, Lab, Netns, NODE_UPLINK_IP, OUTSIDE_IP};
use serde_json::Value;

/// A netpath agent of the test's own, beside the lab's, with directories of its own
/// unless told to share the lab's. Killed and cleaned up on drop.
struct OtherAgent {
    child: Option<Child>,
    run_dir: PathBuf,
    state_dir: PathBuf,
    bpffs_dir: PathBuf,
    log: PathBuf,
}

/// Which of the lab's directories the other agent shares.
#[derive(Clone, Copy, Default)]
struct Share {
    run: bool,
    state: bool,
    bpffs: bool,
}

impl OtherAgent {
    fn new(lab: &Lab, share: Share) -> Self {
        let own = lab.work_dir.join("other");
        OtherAgent {
            child: None,
            run_dir: if share.run { lab.work_dir.join("run") } else { own.join("run") },
            state_dir: if share.state { lab.work_dir.join("state") } else { own.join("state") },
            bpffs_dir: if share.bpffs {
                lab.bpffs_dir.clone()
            } else {
                PathBuf::from(format!("{}-other", lab.bpffs_dir.display()))
            },
            log: lab.work_dir.join("other-agent.log"),
        }
    }

    fn command(&self, netns: &Path) -> Command {
        let mut cmd = Command::new(netpath_bin());
        cmd.env("NETPATH_RUN_DIR", &self.run_dir)
            .env("NETPATH_STATE_DIR", &self.state_dir)
            .env("NETPATH_BPFFS_DIR", &self.bpffs_dir)
            .stdin(Stdio::null());
        netpath_tests::in_netns(&mut cmd, netns);
        cmd
    }

    /// Starts it in `netns`: `Ok` once it listens, `Err(output)` when it exits first.
    fn start(&mut self, netns: &Path, cgroup: &Path, args: &[&str]) -> Result<(), String> {
        let log = std::fs::File::create(&self.log).unwrap();
        let mut child = self
            .command(netns)
            .arg("agent")
            .arg("--cgroup")
            .arg(cgroup)
            .args(["--metrics", "off"])
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let socket = self.run_dir.join("agent.sock");
        let deadline = Instant::now() + netpath_tests::agent_start_timeout();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // Its log: what it said on its way out.
                assert!(!status.success(), "the other agent exited 0");
                return Err(std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            // The lab's socket may be in a shared run directory: only a fresh one counts.
            if socket.exists()
                && std::fs::read_to_string(self.run_dir.join("agent.lock"))
                    .is_ok_and(|p| p.trim() == child.id().to_string())
            {
                self.child = Some(child);
                return Ok(());
            }
            assert!(Instant::now() < deadline, "the other agent neither exited nor took its locks in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn cli(&self, netns: &Path, args: &[&str]) -> Output {
        self.command(netns).args(args).output().unwrap()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }
}

impl Drop for OtherAgent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Only its own pins (unpinned, its links detach); a shared directory is the lab's.
        if self.bpffs_dir.to_string_lossy().ends_with("-other") {
            let _ = std::fs::remove_dir_all(&self.bpffs_dir);
        }
    }
}

#[test]
fn a_second_agent_sharing_a_directory_or_the_namespace_is_refused_and_changes_nothing() {
    let (lab, _) = Lab::setup(1).endpoints(&["a"]).port(&["8080", "a:80"]).build();
    let first = lab.agent_pid().unwrap().to_string();
    let elsewhere = Netns::new(format!("{}-elsewhere", lab.id));
    let cases: [(Share, &Path, &str); 4] = [
        // Issue 13, item 2: the same run directory, even from another namespace: the
        // second used to start, and remove the first one's socket when it exited.
        (Share { run: true, ..Share::default() }, &elsewhere.path(), "--run-dir"),
        (Share { state: true, ..Share::default() }, &elsewhere.path(), "--state-dir"),
        (Share { bpffs: true, ..Share::default() }, &elsewhere.path(), "--bpffs-dir"),
        // Issue 13, item 3: directories of its own, but the same node namespace: one
        // agent per node (it used to delete the first one's veths at start).
        (Share::default(), &lab.node.path(), "this network namespace"),
    ];
    for (share, netns, what) in cases {
        // What the second agent must not change: the first one's links, routes, maps,
        // state and socket.
        let before = lab.residue();
        let mut other = OtherAgent::new(&lab, share);
        let err = other.start(netns, &lab.cgroup, &[]).expect_err("a second agent started");
        assert!(err.contains(&format!("PID {first}")) && err.contains(what), "{what}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: not one line: {err}");
        assert_eq!(lab.residue(), before, "{what}: the refused agent changed something");
        // The first agent is still there and answers.
        lab.netpath_ok(&["port", "add", "8081", "a:81"]);
        lab.netpath_ok(&["port", "del", "8081"]);
    }
}

#[test]
fn an_agent_leaves_the_links_of_an_earlier_agent_in_its_namespace_alone() {
    let (mut lab, ips) = Lab::setup(2).endpoints(&["a", "b"]).build();
    let b = ips[1];
    lab.stop_agent();
    let links = lab.node_links();
    // Another agent, other directories, in the node the first one left. With the same
    // pod CIDR it is refused: the first agent's routes to its containers hold it.
    let mut other = OtherAgent::new(&lab, Share::default());
    let err =
        other.start(&lab.node.path(), &lab.cgroup, &[]).expect_err("started over another agent's pod CIDR");
    assert!(err.contains("10.77.0.0/24") && err.contains("overlaps"), "{err}");
    // With a pod CIDR of its own it starts, reconciles, and takes nothing of the first's.
    other.start(&lab.node.path(), &lab.cgroup, &["--pod-cidr", "10.78.0.0/24"]).unwrap();
    let out = other.cli(&lab.node.path(), &["reconcile", "--dry-run", "-o", "json"]);
    let drift: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{drift}");
    other.stop();
    let log = std::fs::read_to_string(&other.log).unwrap();
    assert!(!log.contains("drift"), "the second agent took the first one's links for its own:\n{log}");
    assert_eq!(lab.node_links(), links, "the first agent's links changed");
    // Its pins go, and its programs with them.
    drop(other);
    // The first agent's datapath kept forwarding, and it takes over again.
    assert!(lab.containers[0].ping(b, 1));
    lab.start_agent();
    let out = lab.netpath(&["reconcile", "--dry-run"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// `netpath ARGS` from a shell entered with `ip netns exec` (private mount namespace).
fn from_ip_netns_exec(lab: &Lab, args: &[&str]) -> Output {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.node.name]).arg(netpath_bin()).args(args);
    lab.env_for(&mut cmd);
    cmd.output().unwrap()
}

/// `netpath ARGS` from a shell entered with `nsenter --net` (the mounts of the host).
fn from_nsenter(lab: &Lab, args: &[&str]) -> Output {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", lab.node.path().display())).arg(netpath_bin()).args(args);
    lab.env_for(&mut cmd);
    cmd.output().unwrap()
}

/// Tuples of `ct list -o json`.
fn conntrack(out: &Output) -> Vec<String> {
    assert!(out.status.success(), "ct list: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["conntrack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{} {}:{} -> {}:{}", e["proto"], e["src"], e["sport"], e["dst"], e["dport"]))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[test]
fn an_agent_started_with_ip_netns_exec_pins_where_everyone_finds_them() {
    let mut lab = Lab::new(1);
    // Issue 13, item 4: `ip netns exec` remounts /sys: the agent used to mount a bpffs of
    // its own there, invisible to every other shell and gone with the agent.
    lab.start_agent_with_ip_netns_exec(&[]);
    let a = lab.add_endpoint("a", 0);
    lab.netpath_ok(&["port", "add", "8080", "a:7100"]);
    assert!(lab.bpffs_dir.join("CONNTRACK").exists(), "pins not in the host's bpffs:\n{}", lab.agent_log());
    let (c, o) = (&lab.containers, &lab.outside);
    let mut conns = [
        (
            "masqueraded",
            EchoConn::open(
                o,
                SocketAddrV4::new(OUTSIDE_IP, 7001),
                &c[0],
                SocketAddrV4::new(OUTSIDE_IP, 7001),
            ),
        ),
        (
            "published port",
            EchoConn::open(&c[0], SocketAddrV4::new(a, 7100), o, SocketAddrV4::new(NODE_UPLINK_IP, 8080)),
        ),
    ];
    for (what, conn) in conns.iter_mut() {
        conn.exchange(what);
    }
    // Every kind of shell on the node sees the same maps and state.
    let flows = conntrack(&lab.netpath(&["ct", "list", "-o", "json"]));
    assert!(flows.len() >= 4, "{flows:?}");
    assert_eq!(conntrack(&from_ip_netns_exec(&lab, &["ct", "list", "-o", "json"])), flows);
    assert_eq!(conntrack(&from_nsenter(&lab, &["ct", "list", "-o", "json"])), flows);
    for out in
        [from_ip_netns_exec(&lab, &["doctor", "-o", "json"]), from_nsenter(&lab, &["doctor", "-o", "json"])]
    {
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["healthy"], true, "{v}");
    }

    // kill -9, traffic on, restart the same way: nothing lost, conntrack kept.
    lab.kill_agent();
    for (what, conn) in conns.iter_mut() {
        conn.exchange(&format!("{what}, agent killed"));
    }
    assert_eq!(conntrack(&from_ip_netns_exec(&lab, &["ct", "list", "-o", "json"])), flows);
    lab.start_agent_with_ip_netns_exec(&[]);
    for (what, conn) in conns.iter_mut() {
        conn.exchange(&format!("{what}, agent restarted"));
    }
    let after = conntrack(&lab.netpath(&["ct", "list", "-o", "json"]));
    for f in &flows {
        assert!(after.contains(f), "{f} lost across the restart: {after:?}");
    }
    assert!(!lab.agent_log().contains("cannot open cgroup"), "{}", lab.agent_log());
    for (_, conn) in &conns {
        assert_eq!(conn.sent(), 3 * 64 * 1024);
    }
}
