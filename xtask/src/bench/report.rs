//! The results: every sample and the environment as JSON, and the statistics the
//! summary and the charts read (medians, min-max, ratios computed pair by pair).
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::{
    control::ControlPlane,
    load::{Placement, Sample, Test},
    world::{Datapath, PathKind},
    Measurement,
};

#[derive(Serialize)]
pub struct Env {
    pub kernel: String,
    pub cpu: String,
    pub cpus: usize,
    pub quick: bool,
    /// The first line each tool prints about its version.
    pub tools: std::collections::BTreeMap<&'static str, String>,
}

fn tool_versions() -> std::collections::BTreeMap<&'static str, String> {
    let probes: [(&str, &[&str]); 4] = [
        ("iperf3", &["iperf3", "--version"]),
        ("sockperf", &["sockperf", "--version"]),
        ("iptables", &["iptables", "--version"]),
        ("cni-bridge", &["/usr/lib/cni/bridge", "--version"]),
    ];
    probes
        .into_iter()
        .filter_map(|(name, cmd)| {
            let out = std::process::Command::new(cmd[0]).args(&cmd[1..]).output().ok()?;
            let text = [out.stdout, out.stderr].concat();
            let line =
                String::from_utf8_lossy(&text).lines().find(|l| !l.trim().is_empty())?.trim().to_string();
            Some((name, line))
        })
        .collect()
}

/// Our TCP_STREAM against iperf3's on the same path, one run each.
#[derive(Serialize)]
pub struct CrossCheck {
    pub datapath: Datapath,
    pub path: PathKind,
    pub ours_gbps: f64,
    pub iperf3_gbps: Option<f64>,
}

/// Our TCP_RR/UDP_RR against sockperf's ping-pong on the same path, one run each.
#[derive(Serialize)]
pub struct RrCrossCheck {
    pub datapath: Datapath,
    pub path: PathKind,
    pub test: Test,
    pub ours: Sample,
    pub sockperf: Option<Sample>,
}

#[derive(Serialize)]
pub struct Report {
    pub env: Env,
    pub measurements: Vec<Measurement>,
    pub control: ControlPlane,
    pub iperf3: Vec<CrossCheck>,
    pub sockperf: Vec<RrCrossCheck>,
    pub cross_node: super::cross_report::CrossNode,
    /// What trace and --bpf-stats cost, and the programs' run time per packet.
    pub observability: super::observe::Observability,
    /// Worlds this run could not build on this machine, each with why (the ipvlan
    /// worlds on a kernel without ipvlan): stated in the tables, never measured.
    pub skipped: Vec<String>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

impl Report {
    pub fn new(
        measurements: Vec<Measurement>,
        control: ControlPlane,
        iperf3: Vec<CrossCheck>,
        sockperf: Vec<RrCrossCheck>,
        cross_node: super::cross_report::CrossNode,
        quick: bool,
    ) -> Self {
        let kernel =
            std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_default();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Report {
            env: Env { kernel, cpu, cpus, quick, tools: tool_versions() },
            measurements,
            control,
            iperf3,
            sockperf,
            cross_node,
            observability: Default::default(),
            skipped: Vec::new(),
        }
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("results.json"), serde_json::to_vec_pretty(self)?)?;
        std::fs::write(dir.join("results.md"), self.markdown())?;
        Ok(())
    }

    fn find(
        &self,
        dp: Datapath,
        path: PathKind,
        test: Test,
        placement: Placement,
        mappings: u32,
    ) -> Option<&Measurement> {
        self.measurements.iter().find(|m| {
            m.datapath == dp
                && m.path == path
                && m.test == test
                && m.placement == placement
                && m.mappings == mappings
        })
    }

    /// One measurement, same CPU, no extra mappings, if it was made.
    pub fn measurement(&self, dp: Datapath, path: PathKind, test: Test) -> Option<&Measurement> {
        self.find(dp, path, test, Placement::SameCpu, 0)
    }

    /// The median rate of one measurement, if it was made.
    pub fn median(
        &self,
        dp: Datapath,
        path: PathKind,
        test: Test,
        placement: Placement,
        mappings: u32,
    ) -> Option<f64> {
        self.stat(dp, path, test, placement, mappings).map(|s| s.rate).filter(|r| r.is_finite())
    }

    /// Median p50 and p99 latency (microseconds), one CPU, no extra mappings.
    pub fn latency(&self, dp: Datapath, path: PathKind, test: Test) -> Option<(f64, f64)> {
        let s = self.stat(dp, path, test, Placement::SameCpu, 0)?;
        (s.p50.is_finite() && s.p99.is_finite()).then_some((s.p50, s.p99))
    }

    /// The port-mapping counts of the scaling run, 0 first.
    pub fn mapping_counts(&self) -> Vec<u32> {
        let mut counts: Vec<u32> = self.measurements.iter().map(|m| m.mappings).collect();
        counts.push(0);
        counts.sort_unstable();
        counts.dedup();
        counts
    }

    /// Median rate, and median p50/p99 latency.
    pub(super) fn stat(
        &self,
        dp: Datapath,
        path: PathKind,
        test: Test,
        placement: Placement,
        mappings: u32,
    ) -> Option<Stat> {
        self.find(dp, path, test, placement, mappings).map(|m| Stat::of(&m.samples))
    }

    /// The median of a/b computed repetition by repetition, same path, same CPU.
    pub(super) fn pair_ratio(&self, a: Datapath, b: Datapath, path: PathKind, test: Test) -> Option<f64> {
        let a = self.find(a, path, test, Placement::SameCpu, 0)?;
        let b = self.find(b, path, test, Placement::SameCpu, 0)?;
        let mut r: Vec<f64> = a.samples.iter().zip(&b.samples).map(|(x, y)| x.rate / y.rate).collect();
        Some(median(&mut r))
    }

    /// The median of netpath/other computed repetition by repetition.
    pub(super) fn ratio(&self, path: PathKind, test: Test, other: Datapath, mappings: u32) -> Option<f64> {
        let a = self.find(Datapath::Netpath, path, test, Placement::SameCpu, mappings)?;
        let path = if other == Datapath::Limit { path.on_the_limit() } else { path };
        let b = self.find(other, path, test, Placement::SameCpu, mappings)?;
        let mut r: Vec<f64> = a.samples.iter().zip(&b.samples).map(|(x, y)| x.rate / y.rate).collect();
        Some(median(&mut r))
    }

    /// netpath's p99 over `other`'s, the median of the repetitions' ratios.
    pub(super) fn p99_ratio(&self, path: PathKind, test: Test, other: Datapath) -> Option<f64> {
        self.pair_p99_ratio(Datapath::Netpath, other, path, test)
    }

    /// `a`'s p99 over `b`'s, the median of the repetitions' ratios.
    pub(super) fn pair_p99_ratio(&self, a: Datapath, b: Datapath, path: PathKind, test: Test) -> Option<f64> {
        let a = self.find(a, path, test, Placement::SameCpu, 0)?;
        let b = self.find(b, path, test, Placement::SameCpu, 0)?;
        let mut r: Vec<f64> =
            a.samples.iter().zip(&b.samples).filter_map(|(x, y)| Some(x.p99_us? / y.p99_us?)).collect();
        let m = median(&mut r);
        m.is_finite().then_some(m)
    }

    /// Data-plane measurements that produced no number.
    pub fn missing_measurements(&self) -> Vec<String> {
        self.measurements
            .iter()
            .filter(|m| m.samples.is_empty() || m.samples.iter().any(|s| s.rate.is_nan() || s.rate <= 0.0))
            .map(|m| format!("{} {} {}", m.datapath.name(), m.path.name(), m.test.name()))
            .collect()
    }

    /// Measurements that produced no number (the smoke check of `--quick`).
    pub fn missing(&self) -> Vec<String> {
        let mut bad = self.missing_measurements();
        let cp = &self.control;
        if cp.netpath_add.n == 0 || cp.netpath_del_no_wait.n == 0 {
            bad.push("control plane: endpoint add/del".into());
        }
        if cp.agent_rss_kib == 0 {
            bad.push("control plane: agent memory".into());
        }
        if cp.port_calls.is_empty() || cp.port_batch_ms == 0.0 {
            bad.push("control plane: port adds".into());
        }
        if cp.restart_ms == 0.0 {
            bad.push("control plane: agent restart".into());
        }
        bad.extend(self.cross_node.missing());
        if !self.measurements.is_empty() {
            bad.extend(self.observability.missing());
        }
        bad
    }
}

/// One measurement's medians across its repetitions.
pub(super) struct Stat {
    pub rate: f64,
    pub min: f64,
    pub max: f64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub errors: u64,
}

impl Stat {
    pub(super) fn of(samples: &[Sample]) -> Stat {
        let mut rates: Vec<f64> = samples.iter().map(|s| s.rate).collect();
        let (min, max) = rates.iter().fold((f64::MAX, f64::MIN), |(a, b), r| (a.min(*r), b.max(*r)));
        let mut p50: Vec<f64> = samples.iter().filter_map(|s| s.p50_us).collect();
        let mut p99: Vec<f64> = samples.iter().filter_map(|s| s.p99_us).collect();
        let mut p999: Vec<f64> = samples.iter().filter_map(|s| s.p999_us).collect();
        let errors = samples.iter().map(|s| s.errors).sum();
        Stat {
            rate: median(&mut rates),
            min,
            max,
            p50: median(&mut p50),
            p99: median(&mut p99),
            p999: median(&mut p999),
            errors,
        }
    }
}

/// The median of a/b computed repetition by repetition (drift hits both alike).
pub(super) fn pair_median(a: &[Sample], b: &[Sample]) -> f64 {
    let mut r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x.rate / y.rate).collect();
    median(&mut r)
}
