//! Control-plane scale with simulated nodes: node records written straight into etcd
//! (the agents' key layout and JSON, distinct subnets and underlay addresses, no
//! namespaces behind them), and the time until one real agent's NODE_ROUTES holds them
//! all, with its memory before and after.
//!
//! The records go through etcd's HTTP/JSON gateway (`/v3/kv/txn`) over a plain socket
//! in the underlay's namespace: Debian's etcd-server ships no etcdctl, and the gateway
//! needs no gRPC client (nor protoc) in xtask. 64 nodes per transaction (etcd allows 128
//! operations, two per node): one request per node would time etcd's fsync on this
//! shared disk, not the agent.
use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use aya::maps::{HashMap, Map, MapData};
use netpath_common::{maps, EndpointKey, NodeRoute};
use netpath_tests::{
    cluster::{Underlay, ETCD_PORT, UNDERLAY_IP},
    Netns,
};
use serde::Serialize;

pub const PREFIX: &str = "npxscale";
/// Wide enough for 4,095 simulated /24s beside the real node's, and apart from the
/// underlay's 10.99.0.0/24.
const CLUSTER: &str = "172.16.0.0/12";
const PER_TXN: usize = 64;

#[derive(Debug, Default, Serialize)]
pub struct ScalePoint {
    pub nodes: usize,
    /// Writing the records into etcd.
    pub write_ms: f64,
    /// From the first write until NODE_ROUTES held every simulated node.
    pub converge_ms: f64,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub hwm_after_kib: u64,
}

impl ScalePoint {
    pub fn us_per_node(&self) -> f64 {
        self.converge_ms * 1e3 / self.nodes as f64
    }
}

/// Simulated node `i` (from 0): its name, underlay address and pod subnet. The real
/// agent holds the cluster's first /24; node i gets the (i+1)th.
pub fn simulated(i: usize) -> (String, Ipv4Addr, String) {
    let k = i as u32 + 1;
    let subnet = Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 0)) + (k << 8));
    let address = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 0, 0)) + k);
    (format!("sim{i}"), address, format!("{subnet}/24"))
}

/// The two keys an agent writes when it joins: its record and its subnet's claim.
pub fn puts(i: usize) -> [(String, String); 2] {
    let (name, address, subnet) = simulated(i);
    let record = serde_json::json!({
        "name": name, "address": address, "pod_cidr": subnet, "tunnel": "vxlan",
    });
    let subnet_key = format!("/netpath/v1/subnets/{}", subnet.replace('/', "-"));
    [(format!("/netpath/v1/nodes/{name}"), record.to_string()), (subnet_key, name)]
}

pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (j, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if j <= chunk.len() { A[(n >> shift & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// The gateway's transaction body putting nodes `range`.
pub fn txn_body(range: std::ops::Range<usize>) -> String {
    let ops: Vec<serde_json::Value> = range
        .flat_map(puts)
        .map(|(k, v)| {
            serde_json::json!({"request_put": {"key": base64(k.as_bytes()), "value": base64(v.as_bytes())}})
        })
        .collect();
    serde_json::json!({ "success": ops }).to_string()
}

/// POSTs `body` to the gateway at `path`, from inside `ns`.
fn post(ns: &Netns, path: &'static str, body: String) -> Result<()> {
    let reply = ns
        .run(move || -> std::io::Result<String> {
            let mut s = TcpStream::connect(SocketAddrV4::new(UNDERLAY_IP, ETCD_PORT))?;
            write!(
                s,
                "POST {path} HTTP/1.1\r\nHost: {UNDERLAY_IP}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            let mut reply = String::new();
            s.read_to_string(&mut reply)?;
            Ok(reply)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the gateway request panicked"))??;
    if !reply.starts_with("HTTP/1.1 200") {
        bail!("etcd gateway {}: {}", path, reply.lines().last().unwrap_or_default());
    }
    Ok(())
}

/// The entries of the agent's NODE_ROUTES, read through its pin.
fn routes(bpffs_dir: &std::path::Path) -> Result<usize> {
    let map = Map::from_map_data(MapData::from_pin(bpffs_dir.join(maps::NODE_ROUTES))?)?;
    let routes: HashMap<_, EndpointKey, NodeRoute> = HashMap::try_from(map)?;
    Ok(routes.keys().filter_map(Result::ok).count())
}

/// VmRSS and VmHWM (KiB) from a /proc/PID/status text.
pub fn memory(status: &str) -> (u64, u64) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn agent_memory(pid: u32) -> (u64, u64) {
    memory(&std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default())
}

/// One real agent in a fresh cluster, then `n` simulated nodes at once.
pub fn run_one(n: usize) -> Result<ScalePoint> {
    let mut u = Underlay::switch(PREFIX);
    u.start_etcd();
    let mut lab = u.node(0, 0);
    let store = u.store();
    lab.start_agent_with(&[
        "--store",
        &store,
        "--node-name",
        "real",
        "--cluster-cidr",
        CLUSTER,
        "--tunnel",
        "vxlan",
    ]);
    let pid = lab.agent_pid().context("agent running")?;
    // Settled: joined, its (empty) routes written, before the clock starts.
    std::thread::sleep(Duration::from_millis(500));
    let (rss_before_kib, _) = agent_memory(pid);
    let start = Instant::now();
    for first in (0..n).step_by(PER_TXN) {
        post(&u.ns, "/v3/kv/txn", txn_body(first..(first + PER_TXN).min(n)))?;
    }
    let write_ms = start.elapsed().as_secs_f64() * 1e3;
    let deadline = start + Duration::from_secs(60);
    while routes(&lab.bpffs_dir)? < n {
        if Instant::now() > deadline {
            bail!("NODE_ROUTES never held {n} routes:\n{}", lab.agent_log());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let converge_ms = start.elapsed().as_secs_f64() * 1e3;
    let (rss_after_kib, hwm_after_kib) = agent_memory(pid);
    Ok(ScalePoint { nodes: n, write_ms, converge_ms, rss_before_kib, rss_after_kib, hwm_after_kib })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"/netpath/v1/nodes/sim0"), "L25ldHBhdGgvdjEvbm9kZXMvc2ltMA==");
    }

    #[test]
    fn simulated_nodes_are_distinct_and_written_as_agents_write_them() {
        let (name, addr, subnet) = simulated(0);
        assert_eq!(
            (name.as_str(), addr, subnet.as_str()),
            ("sim0", Ipv4Addr::new(10, 100, 0, 1), "172.16.1.0/24")
        );
        assert_eq!(simulated(4094).2, "172.31.255.0/24");
        let subnets: std::collections::HashSet<String> = (0..4095).map(|i| simulated(i).2).collect();
        assert_eq!(subnets.len(), 4095);
        let [(key, record), (claim, holder)] = puts(299);
        assert_eq!(key, "/netpath/v1/nodes/sim299");
        assert_eq!(claim, "/netpath/v1/subnets/172.17.44.0-24");
        assert_eq!(holder, "sim299");
        let v: serde_json::Value = serde_json::from_str(&record).unwrap();
        assert_eq!(v["pod_cidr"], "172.17.44.0/24");
        assert_eq!(v["address"], "10.100.1.44");
        assert_eq!(v["tunnel"], "vxlan");
        assert_eq!(txn_body(0..3).matches("request_put").count(), 6);
    }

    #[test]
    fn memory_is_read_from_proc_status() {
        let status = "Name:\tnetpath\nVmHWM:\t   20480 kB\nVmRSS:\t   18000 kB\n";
        assert_eq!(memory(status), (18000, 20480));
        assert_eq!(memory(""), (0, 0));
    }
}
