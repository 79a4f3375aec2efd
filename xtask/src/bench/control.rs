//! The control plane: how long attaching and detaching a container takes with netpath
//! and with the CNI reference bridge plugin, and the agent's memory with many endpoints.
use std::{
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Result};
use netpath_tests::Lab;
use serde::Serialize;

#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub n: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

fn latency(mut ms: Vec<f64>) -> Latency {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms.get(((ms.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN);
    Latency { n: ms.len(), p50_ms: at(0.5), p99_ms: at(0.99) }
}

#[derive(Debug, Default, Serialize)]
pub struct ControlPlane {
    pub netpath_add: Latency,
    pub netpath_del: Latency,
    /// The same with the programs attached through netlink clsact instead of TCX links.
    pub netpath_clsact_add: Latency,
    pub netpath_clsact_del: Latency,
    pub cni_bridge_add: Option<Latency>,
    pub cni_bridge_del: Option<Latency>,
    pub rss_endpoints: usize,
    pub agent_rss_kib: u64,
}

const CNI_BRIDGE: &str = "/usr/lib/cni/bridge";

pub fn run(quick: bool) -> Result<ControlPlane> {
    let n = if quick { 20 } else { 200 };
    let mut cp = ControlPlane::default();

    let mut lab = Lab::with_prefix("npcp", n);
    (cp.netpath_clsact_add, cp.netpath_clsact_del) = add_del(&mut lab, n, &["--tc-attach", "clsact"]);
    lab.stop_agent();
    let _ = std::fs::remove_dir_all(&lab.bpffs_dir);
    (cp.netpath_add, cp.netpath_del) = add_del(&mut lab, n, &[]);

    if Path::new(CNI_BRIDGE).exists() {
        let (a, d) = cni(&lab, n)?;
        cp.cni_bridge_add = Some(a);
        cp.cni_bridge_del = Some(d);
    }
    drop(lab);

    // Memory with many endpoints attached.
    let m = if quick { 50 } else { 1000 };
    let mut lab = Lab::with_prefix("npcp", m);
    // A /24 holds 253 containers; this run needs a thousand.
    lab.start_agent_with(&["--pod-cidr", "10.64.0.0/20"]);
    for i in 0..m {
        lab.add_endpoint(&format!("ep{i}"), i);
    }
    let pid = lab.agent_pid().expect("agent running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    cp.agent_rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    cp.rss_endpoints = m;
    Ok(cp)
}

/// Starts the agent with `args`, adds an endpoint in each namespace, deletes them all;
/// the latencies of both, as the CLI sees them.
fn add_del(lab: &mut Lab, n: usize, args: &[&str]) -> (Latency, Latency) {
    lab.start_agent_with(args);
    let (mut add, mut del) = (Vec::new(), Vec::new());
    for i in 0..n {
        let path = lab.containers[i].path();
        let t = Instant::now();
        lab.netpath_ok(&[
            "endpoint",
            "add",
            &format!("ep{i}"),
            "--netns",
            path.to_str().expect("utf-8 path"),
        ]);
        add.push(t.elapsed().as_secs_f64() * 1e3);
    }
    for i in 0..n {
        let t = Instant::now();
        lab.netpath_ok(&["endpoint", "del", &format!("ep{i}")]);
        del.push(t.elapsed().as_secs_f64() * 1e3);
    }
    (latency(add), latency(del))
}

/// ADD then DEL for each namespace with the CNI bridge plugin (host-local IPAM), run in
/// the node namespace exactly as a container runtime invokes it.
fn cni(lab: &Lab, n: usize) -> Result<(Latency, Latency)> {
    let data_dir = lab.work_dir.join("cni-ipam");
    let config = serde_json::json!({
        "cniVersion": "1.0.0", "name": "npbench", "type": "bridge", "bridge": "cni0",
        "isGateway": true, "ipMasq": true,
        "ipam": { "type": "host-local", "subnet": "10.66.0.0/16", "dataDir": data_dir },
    })
    .to_string();
    let node = lab.node.path();
    let call = |cmd: &str, i: usize| -> Result<f64> {
        let t = Instant::now();
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", node.display()))
            .arg(CNI_BRIDGE)
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", format!("npbench{i}"))
            .env("CNI_NETNS", lab.containers[i].path())
            .env("CNI_IFNAME", "eth1")
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().expect("piped stdin").write_all(config.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("CNI bridge {cmd} failed: {}", String::from_utf8_lossy(&out.stdout));
        }
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    let add: Vec<f64> = (0..n).map(|i| call("ADD", i)).collect::<Result<_>>()?;
    let del: Vec<f64> = (0..n).map(|i| call("DEL", i)).collect::<Result<_>>()?;
    Ok((latency(add), latency(del)))
}
