//! The cross-node section: a pod on node A to a pod on node B through five datapaths,
//! each in an underlay of its own (a switch namespace, two node namespaces on it):
//! netpath's VXLAN overlay, netpath's native routing, flannel's kernel VXLAN path, the
//! kernel routing between pods with nothing else (native routing's layout at no cost),
//! and the limit (the two nodes talking over the switch, no pods, no overlay).
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use anyhow::{Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use netpath_tests::{
    cluster::{self, Underlay},
    Lab, Netns,
};
use serde::Serialize;

use super::{
    load::{self, Placement, Sample, Test},
    world::{in_ns, SERVICE_PORT},
    Pace, TESTS,
};

/// Name prefixes of the cross-node worlds (swept on start and on Ctrl-C).
pub const PREFIXES: [&str; 5] = ["npxvx", "npxnat", "npxfl", "npxlim", "npxkr"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum CrossPath {
    #[serde(rename = "netpath vxlan")]
    NetpathVxlan,
    #[serde(rename = "netpath native")]
    NetpathNative,
    #[serde(rename = "flannel vxlan")]
    Flannel,
    /// Pods behind veths, routed by the nodes' kernels: no BPF, no rules, no overlay.
    #[serde(rename = "kernel routing")]
    KernelRouted,
    /// The node namespaces themselves over the underlay: what any datapath adds to.
    #[serde(rename = "underlay limit")]
    Limit,
}

impl CrossPath {
    pub const ALL: [CrossPath; 5] = [
        CrossPath::NetpathVxlan,
        CrossPath::NetpathNative,
        CrossPath::Flannel,
        CrossPath::KernelRouted,
        CrossPath::Limit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CrossPath::NetpathVxlan => "netpath vxlan",
            CrossPath::NetpathNative => "netpath native",
            CrossPath::Flannel => "flannel vxlan",
            CrossPath::KernelRouted => "kernel routing",
            CrossPath::Limit => "underlay limit",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct CrossMeasurement {
    pub datapath: CrossPath,
    pub test: Test,
    pub samples: Vec<Sample>,
}

/// Two nodes on one switch; the server on node 1, the client on node 0. Nodes are
/// declared first: they go (agents stopped) before their underlay and its etcd.
pub struct CrossWorld {
    pub datapath: CrossPath,
    nodes: Vec<Lab>,
    _underlay: Underlay,
    server_ip: Ipv4Addr,
}

impl CrossWorld {
    pub fn build(datapath: CrossPath) -> Result<CrossWorld> {
        let (nodes, underlay, server_ip) = match datapath {
            CrossPath::NetpathVxlan => netpath(PREFIXES[0], "vxlan"),
            CrossPath::NetpathNative => netpath(PREFIXES[1], "none"),
            CrossPath::Flannel => by_hand(PREFIXES[2], super::flannel::build_node, "flannel's path")?,
            CrossPath::KernelRouted => {
                by_hand(PREFIXES[4], super::routed::build_node, "the kernel's routes")?
            }
            CrossPath::Limit => {
                let u = Underlay::switch(PREFIXES[3]);
                let nodes = vec![u.node(0, 0), u.node(1, 0)];
                (nodes, u, Ipv4Addr::new(10, 99, 0, 11))
            }
        };
        let w = CrossWorld { datapath, nodes, _underlay: underlay, server_ip };
        // As in the single-node worlds: TCP_CRR's clients may reuse TIME_WAIT ports.
        in_ns(w.client(), &["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"])?;
        Ok(w)
    }

    fn client(&self) -> &Netns {
        self.nodes[0].containers.first().unwrap_or(&self.nodes[0].node)
    }

    fn server(&self) -> &Netns {
        self.nodes[1].containers.first().unwrap_or(&self.nodes[1].node)
    }

    fn flush_conntrack(&self) {
        for lab in &self.nodes {
            match self.datapath {
                CrossPath::NetpathVxlan | CrossPath::NetpathNative => {
                    let _ = super::ct::flush(&lab.bpffs_dir);
                }
                CrossPath::Flannel | CrossPath::KernelRouted => {
                    let _ = lab.node.exec(&["conntrack", "-F"]);
                }
                CrossPath::Limit => {}
            }
        }
    }

    /// One run of `test` from node 0's pod to node 1's, from empty conntrack tables.
    pub fn measure(&self, test: Test, duration: Duration) -> Sample {
        self.flush_conntrack();
        let at = SocketAddrV4::new(self.server_ip, SERVICE_PORT);
        load::run(test, self.server(), at.into(), self.client(), at.into(), duration, Placement::SameCpu)
    }
}

/// Two netpath nodes with one pod each, `--tunnel tunnel`, each knowing the other.
fn netpath(prefix: &str, tunnel: &str) -> (Vec<Lab>, Underlay, Ipv4Addr) {
    let mut u = Underlay::switch(prefix);
    u.start_etcd();
    let (nodes, ips) = cluster::pods(&u, 2, tunnel);
    for lab in &nodes {
        cluster::wait_for_routes(lab, 1);
    }
    (nodes, u, ips[1])
}

/// Two nodes with a datapath built by hand (`build`: flannel's VXLAN path, or the
/// kernel's routes), one pod each.
fn by_hand(
    prefix: &str,
    build: fn(&Lab, usize, &[Ipv4Addr]) -> Result<()>,
    what: &str,
) -> Result<(Vec<Lab>, Underlay, Ipv4Addr)> {
    let u = Underlay::switch(prefix);
    let nodes = vec![u.node(0, 1), u.node(1, 1)];
    let addrs = [Ipv4Addr::new(10, 99, 0, 10), Ipv4Addr::new(10, 99, 0, 11)];
    for (i, lab) in nodes.iter().enumerate() {
        build(lab, i, &addrs).with_context(|| format!("building {what}"))?;
    }
    Ok((nodes, u, super::flannel::pod_ip(1)))
}

/// Every test on every cross-node datapath, `pace.reps` samples each; repetitions
/// outermost and datapaths adjacent, as the single-node run does.
pub fn measure_all(worlds: &[CrossWorld], pace: Pace) -> Vec<CrossMeasurement> {
    let mut results: Vec<CrossMeasurement> = TESTS
        .iter()
        .flat_map(|&test| worlds.iter().map(move |w| (test, w.datapath)))
        .map(|(test, datapath)| CrossMeasurement { datapath, test, samples: Vec::new() })
        .collect();
    let bar = ProgressBar::new((results.len() * pace.reps) as u64);
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}").expect("valid template"));
    for _ in 0..pace.reps {
        for m in results.iter_mut() {
            let w = worlds.iter().find(|w| w.datapath == m.datapath).expect("a world per datapath");
            bar.set_message(format!("cross-node {} {}", m.datapath.name(), m.test.name()));
            let mut s = w.measure(m.test, pace.duration);
            if s.rate.is_nan() || s.rate <= 0.0 {
                // As in the single-node run: a first lost datagram is noise, once more.
                s = w.measure(m.test, pace.duration);
            }
            m.samples.push(s);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    results
}
