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
    /// Median milliseconds per step of the default mode's adds and deletes, as the
    /// agent logs them, in the order the steps run.
    pub add_steps: Vec<(String, f64)>,
    pub del_steps: Vec<(String, f64)>,
    /// `endpoint del --no-wait`: answered before the pair is gone.
    pub netpath_del_no_wait: Latency,
    pub cni_bridge_add: Option<Latency>,
    pub cni_bridge_del: Option<Latency>,
    pub rss_endpoints: usize,
    pub agent_rss_kib: u64,
    /// `port add` one mapping per call, on one endpoint, from none to many.
    pub port_calls: Vec<PortCalls>,
    /// One `port add` call with this many mappings, and its time.
    pub port_batch: usize,
    pub port_batch_ms: f64,
    /// With `rss_endpoints` endpoints and `restart_ports` published ports: the agent's
    /// memory, and how long a restart takes until it answers (datapath adopted, drift
    /// checked).
    pub restart_ports: usize,
    pub restart_rss_kib: u64,
    pub restart_ms: f64,
}

/// The port adds that took the node's published ports to `calls`.
#[derive(Debug, Default, Serialize)]
pub struct PortCalls {
    pub calls: usize,
    /// All `calls` calls, one after the other.
    pub total_s: f64,
    /// The mean of the last hundred calls before `calls`: the cost of one more port at
    /// that size.
    pub per_call_ms: f64,
}

const CNI_BRIDGE: &str = "/usr/lib/cni/bridge";

pub fn run(quick: bool) -> Result<ControlPlane> {
    let n = if quick { 20 } else { 200 };
    let mut cp = ControlPlane::default();

    let mut lab = Lab::with_prefix("npcp", n);
    (_, cp.netpath_del_no_wait) = add_del(&mut lab, n, &["--no-wait"]);
    lab.stop_agent();
    let _ = std::fs::remove_dir_all(&lab.bpffs_dir);
    (cp.netpath_add, cp.netpath_del) = add_del(&mut lab, n, &[]);
    let log = lab.agent_log();
    cp.add_steps = steps(&log, "endpoint added");
    cp.del_steps = steps(&log, "endpoint deleted");

    if Path::new(CNI_BRIDGE).exists() {
        let (a, d) = cni(&lab, n)?;
        cp.cni_bridge_add = Some(a);
        cp.cni_bridge_del = Some(d);
    }
    ports(&lab, quick, &mut cp);
    drop(lab);

    // Memory with many endpoints attached.
    let m = if quick { 50 } else { 1000 };
    let mut lab = Lab::with_prefix("npcp", m);
    // A /24 holds 253 containers; this run needs a thousand.
    lab.start_agent_with(&["--pod-cidr", "10.64.0.0/20"]);
    for i in 0..m {
        lab.add_endpoint(&format!("ep{i}"), i);
    }
    cp.agent_rss_kib = rss_kib(lab.agent_pid().expect("agent running"))?;
    cp.rss_endpoints = m;

    // The same node with ten thousand published ports, restarted.
    let ports = if quick { 1000 } else { 10_000 };
    lab.netpath_ok(&["port", "add", &format!("40000-{}", 40000 + ports - 1), &format!("ep0:1-{ports}")]);
    cp.restart_ports = ports;
    cp.restart_rss_kib = rss_kib(lab.agent_pid().expect("agent running"))?;
    lab.stop_agent();
    let t = Instant::now();
    lab.start_agent_with(&["--pod-cidr", "10.64.0.0/20"]);
    cp.restart_ms = t.elapsed().as_secs_f64() * 1e3;
    let log = lab.agent_log();
    let lines: Vec<&str> = log.lines().collect();
    for line in &lines[lines.len().saturating_sub(12)..] {
        eprintln!("restart: {line}");
    }
    Ok(cp)
}

/// The median of each step over the agent's log lines `what` (`steps=check:0.10,...`).
fn steps(log: &str, what: &str) -> Vec<(String, f64)> {
    let mut order: Vec<String> = Vec::new();
    let mut times: std::collections::HashMap<String, Vec<f64>> = Default::default();
    for line in log.lines().filter(|l| l.contains(what)) {
        let Some(list) = line.split("steps=").nth(1) else { continue };
        for step in list.split_whitespace().next().unwrap_or("").split(',') {
            let Some((name, ms)) = step.split_once(':') else { continue };
            let Ok(ms) = ms.parse::<f64>() else { continue };
            if !order.iter().any(|o| o == name) {
                order.push(name.to_string());
            }
            times.entry(name.to_string()).or_default().push(ms);
        }
    }
    order
        .into_iter()
        .map(|name| {
            let mut v = times.remove(&name).unwrap_or_default();
            v.sort_by(f64::total_cmp);
            let median = v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
            (name, median)
        })
        .collect()
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0))
}

/// `port add` one mapping per call up to 10,000 (1,000 quick), timing every call, then
/// the same number in one call. The agent of `lab` runs, with endpoint ep0.
fn ports(lab: &Lab, quick: bool, cp: &mut ControlPlane) {
    let n = if quick { 1000 } else { 10_000 };
    lab.netpath_ok(&[
        "endpoint",
        "add",
        "ep0",
        "--netns",
        lab.containers[0].path().to_str().expect("utf-8 path"),
    ]);
    let mut ms = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        lab.netpath_ok(&["port", "add", &(20_000 + i).to_string(), "ep0:80"]);
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        let calls = i + 1;
        if [100, 1000, 10_000].contains(&calls) {
            let last = &ms[calls - 100..calls];
            cp.port_calls.push(PortCalls {
                calls,
                total_s: ms.iter().sum::<f64>() / 1e3,
                per_call_ms: last.iter().sum::<f64>() / last.len() as f64,
            });
        }
    }
    lab.netpath_ok(&["port", "del", &format!("20000-{}", 20_000 + n - 1)]);
    let t = Instant::now();
    lab.netpath_ok(&[
        "port",
        "add",
        &format!("20000-{}", 20_000 + n - 1),
        &format!("ep0:20000-{}", 20_000 + n - 1),
    ]);
    cp.port_batch_ms = t.elapsed().as_secs_f64() * 1e3;
    cp.port_batch = n;
    lab.netpath_ok(&["endpoint", "del", "ep0"]);
}

/// Starts the agent, adds an endpoint in each namespace, deletes them all (`del_args`
/// added to each delete); the latencies of both, as the CLI sees them.
fn add_del(lab: &mut Lab, n: usize, del_args: &[&str]) -> (Latency, Latency) {
    lab.start_agent();
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
        let name = format!("ep{i}");
        lab.netpath_ok(&[&["endpoint", "del", name.as_str()][..], del_args].concat());
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
