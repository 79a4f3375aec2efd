//! The cross-node section's results: its table, its scale run, and its targets judged
//! (reported, not asserted: the figures of a shared 2-CPU machine are noisy).
use std::fmt::Write as _;

use serde::Serialize;

use super::{
    cluster::{CrossMeasurement, CrossPath},
    load::Test,
    markdown::judge,
    report::{pair_median, Stat},
    scale::ScalePoint,
    TESTS,
};

#[derive(Debug, Default, Serialize)]
pub struct CrossNode {
    pub measurements: Vec<CrossMeasurement>,
    pub scale: Vec<ScalePoint>,
}

/// The simulated-node count the convergence target is judged at.
const SCALE_TARGET_NODES: usize = 1_000;

impl CrossNode {
    fn find(&self, dp: CrossPath, test: Test) -> Option<&CrossMeasurement> {
        self.measurements.iter().find(|m| m.datapath == dp && m.test == test && !m.samples.is_empty())
    }

    /// The median of a/b, repetition by repetition.
    pub fn ratio(&self, a: CrossPath, b: CrossPath, test: Test) -> Option<f64> {
        let r = pair_median(&self.find(a, test)?.samples, &self.find(b, test)?.samples);
        r.is_finite().then_some(r)
    }

    pub fn markdown(&self, md: &mut String) {
        let _ = writeln!(md, "\n### Cross-node: a pod on node A to a pod on node B\n");
        let _ = writeln!(md, "Both nodes are namespaces of this one machine on a bridge acting as the switch: the client's and the server's kernel work share the CPU. The limit is the two node namespaces themselves, no pods. Kernel routing is pods behind veths routed by the nodes' kernels alone (no BPF, no iptables rule): native routing's layout, one veth pair more each way than the limit, with programs that cost nothing.\n");
        let _ = writeln!(md, "| test | netpath vxlan | netpath native | flannel vxlan | kernel routing | underlay limit | vxlan/flannel | native/limit | native/kernel routing | kernel routing/limit | vxlan/limit |");
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
        for test in TESTS {
            let cell = |dp| self.find(dp, test).map_or("-".into(), |m| Stat::of(&m.samples).show(test));
            let ratio = |a, b| self.ratio(a, b, test).map_or("-".into(), |r| format!("{r:.2}x"));
            let cells: Vec<String> = CrossPath::ALL.iter().map(|&dp| cell(dp)).collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                test.name(),
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                cells[4],
                ratio(CrossPath::NetpathVxlan, CrossPath::Flannel),
                ratio(CrossPath::NetpathNative, CrossPath::Limit),
                ratio(CrossPath::NetpathNative, CrossPath::KernelRouted),
                ratio(CrossPath::KernelRouted, CrossPath::Limit),
                ratio(CrossPath::NetpathVxlan, CrossPath::Limit),
            );
        }
        self.md_scale(md);
    }

    fn md_scale(&self, md: &mut String) {
        let _ = writeln!(md, "\n### Cross-node control plane: simulated nodes written into etcd at once\n");
        let _ = writeln!(md, "The clock starts at the first write (64 nodes per etcd transaction) and stops when the agent's NODE_ROUTES holds them all; VmHWM includes the agent's start (loading the datapath).\n");
        let _ = writeln!(md, "| nodes | write ms | until NODE_ROUTES holds all, ms | of which after the last write | us per node | agent RSS before → after (MiB) | VmHWM (MiB) |");
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        let mib = |k: u64| k as f64 / 1024.0;
        for p in &self.scale {
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.0} | {:.1} | {:.0} | {:.1} → {:.1} | {:.1} |",
                p.nodes,
                p.write_ms,
                p.converge_ms,
                p.converge_ms - p.write_ms,
                p.us_per_node(),
                mib(p.rss_before_kib),
                mib(p.rss_after_kib),
                mib(p.hwm_after_kib)
            );
        }
    }

    pub fn targets(&self) -> Vec<String> {
        let mut out = vec![
            judge(
                "cross-node TCP_RR netpath vxlan vs flannel",
                self.ratio(CrossPath::NetpathVxlan, CrossPath::Flannel, Test::TcpRr),
                1.3,
                "x",
            ),
            judge(
                "cross-node TCP_RR netpath native vs underlay limit",
                self.ratio(CrossPath::NetpathNative, CrossPath::Limit, Test::TcpRr),
                0.95,
                "x",
            ),
            judge(
                "cross-node TCP_STREAM netpath native vs underlay limit",
                self.ratio(CrossPath::NetpathNative, CrossPath::Limit, Test::TcpStream),
                0.9,
                "x",
            ),
        ];
        out.push(match self.scale.iter().find(|p| p.nodes == SCALE_TARGET_NODES) {
            Some(p) if p.converge_ms < 2000.0 => {
                format!("met: {} simulated nodes routed in {:.0} ms (goal < 2000 ms)", p.nodes, p.converge_ms)
            }
            Some(p) => {
                format!(
                    "SHORT: {} simulated nodes routed in {:.0} ms (goal < 2000 ms)",
                    p.nodes, p.converge_ms
                )
            }
            None => format!("not measured: {SCALE_TARGET_NODES} simulated nodes"),
        });
        if let Some(f) = flatness(&self.scale) {
            out.push(format!("per-node cost, largest run against the smallest: {f:.2}x (flat is about 1)"));
        }
        out
    }

    /// What produced no number: every cross-node test and every scale point.
    pub fn missing(&self) -> Vec<String> {
        let mut bad: Vec<String> = Vec::new();
        for dp in CrossPath::ALL {
            for test in TESTS {
                let ok = self.find(dp, test).is_some_and(|m| m.samples.iter().all(|s| s.rate > 0.0));
                if !ok {
                    bad.push(format!("cross-node {} {}", dp.name(), test.name()));
                }
            }
        }
        if self.scale.is_empty() || self.scale.iter().any(|p| p.converge_ms <= 0.0 || p.rss_after_kib == 0) {
            bad.push("cross-node control plane: simulated nodes".into());
        }
        bad
    }
}

/// The per-node convergence cost of the largest run over that of the smallest.
pub fn flatness(points: &[ScalePoint]) -> Option<f64> {
    let small = points.iter().min_by_key(|p| p.nodes)?;
    let large = points.iter().max_by_key(|p| p.nodes)?;
    (large.nodes > small.nodes).then(|| large.us_per_node() / small.us_per_node())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::load::Sample;

    fn samples(rates: &[f64]) -> Vec<Sample> {
        rates.iter().map(|&rate| Sample { rate, ..Default::default() }).collect()
    }

    #[test]
    fn ratios_are_medians_of_pairs_and_absent_when_unmeasured() {
        let m = |datapath, rates: &[f64]| CrossMeasurement {
            datapath,
            test: Test::TcpRr,
            samples: samples(rates),
        };
        let c = CrossNode {
            measurements: vec![
                m(CrossPath::NetpathVxlan, &[130.0, 260.0, 100.0]),
                m(CrossPath::Flannel, &[100.0, 100.0, 100.0]),
            ],
            scale: Vec::new(),
        };
        assert_eq!(c.ratio(CrossPath::NetpathVxlan, CrossPath::Flannel, Test::TcpRr), Some(1.3));
        assert_eq!(c.ratio(CrossPath::NetpathNative, CrossPath::Limit, Test::TcpRr), None);
        assert!(c.targets()[0].starts_with("met: cross-node TCP_RR netpath vxlan vs flannel 1.30x"));
        assert!(c.missing().contains(&"cross-node underlay limit TCP_STREAM".to_string()));
    }

    #[test]
    fn flatness_compares_per_node_costs() {
        let p = |nodes, converge_ms| ScalePoint { nodes, converge_ms, ..Default::default() };
        assert_eq!(flatness(&[p(100, 50.0), p(1000, 500.0)]), Some(1.0));
        assert_eq!(flatness(&[p(100, 50.0), p(1000, 1000.0)]), Some(2.0));
        assert_eq!(flatness(&[p(100, 50.0)]), None);
    }
}
