//! What netpath's instruments cost, and what its programs cost per packet: the
//! container-to-container RR tests with nothing on, with `--bpf-stats`, with a trace of
//! another flow running (every packet pays the filter), and with a trace of this very
//! flow (every packet is snapshotted and sent to user space), as Cilium measures the
//! tax of Hubble. The agent restarts (hitlessly) into and out of `--bpf-stats`: the
//! kernel's run-time accounting is machine-wide while any process holds it on, so it
//! must not run under the other measurements. From the `--bpf-stats` runs, each
//! program's run time per packet, on the NAT paths too.
use std::{
    collections::BTreeMap,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde::Serialize;

use super::{
    load::{Placement, Sample, Test},
    measure,
    world::{PathKind, World},
    Pace,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Mode {
    #[serde(rename = "off")]
    Off,
    #[serde(rename = "bpf-stats")]
    BpfStats,
    #[serde(rename = "trace of another flow")]
    TraceOther,
    #[serde(rename = "trace of this flow")]
    TraceThis,
    /// netpath's floor in front of its program in the same world (bench::floor::in_front).
    #[serde(rename = "floor in netpath's place")]
    Floor,
}

impl Mode {
    pub const ALL: [Mode; 5] = [Mode::Off, Mode::Floor, Mode::BpfStats, Mode::TraceOther, Mode::TraceThis];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::BpfStats => "--bpf-stats",
            Mode::TraceOther => "trace, another flow",
            Mode::TraceThis => "trace, this flow",
            Mode::Floor => "floor in its place",
        }
    }

    /// `netpath trace` filters: one no packet of the lab matches, and the server's
    /// endpoint, which every packet of the container-to-container tests matches.
    fn trace_args(self) -> Option<&'static [&'static str]> {
        match self {
            Mode::TraceOther => Some(&["--host", "192.0.2.1"]),
            Mode::TraceThis => Some(&["--endpoint", "b"]),
            Mode::Off | Mode::BpfStats | Mode::Floor => None,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Run {
    pub mode: Mode,
    pub test: Test,
    pub samples: Vec<Sample>,
}

/// One program's runs and time during one `--bpf-stats` run.
#[derive(Clone, Debug, Serialize)]
pub struct ProgramCost {
    pub path: PathKind,
    pub test: Test,
    pub program: String,
    /// Runs during the run, and the run's transactions (rate x duration).
    pub runs: u64,
    pub transactions: f64,
    pub ns_per_run: f64,
    /// The run's own transaction rate, for the share of a round trip.
    pub rate: f64,
}

/// One loaded program of the lab's datapath as the kernel reports it: the instructions
/// the verifier processed (its work, over every path), and the program's size.
#[derive(Clone, Debug, Serialize)]
pub struct ProgramSize {
    pub program: String,
    pub verified_insns: u64,
    pub xlated_bytes: u64,
    pub jited_bytes: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Observability {
    pub runs: Vec<Run>,
    pub programs: Vec<ProgramCost>,
    pub sizes: Vec<ProgramSize>,
}

const TESTS: [Test; 2] = [Test::TcpRr, Test::UdpRr];
/// Where each program's cost per packet is read: every path, the RR test that sends one
/// packet each way per transaction.
const COSTED: [(PathKind, Test); 6] = [
    (PathKind::C2c, Test::TcpRr),
    (PathKind::C2c, Test::UdpRr),
    (PathKind::C2c6, Test::TcpRr),
    (PathKind::C2c6, Test::UdpRr),
    (PathKind::Snat, Test::TcpRr),
    (PathKind::Dnat, Test::TcpRr),
];

/// Runs the section on netpath's world `w`, whose agent it restarts (and leaves as it
/// found it: no `--bpf-stats`).
pub fn run(w: &mut World, pace: Pace) -> Observability {
    let mut out = Observability {
        runs: Mode::ALL
            .iter()
            .flat_map(|m| TESTS.map(|t| Run { mode: *m, test: t, samples: Vec::new() }))
            .collect(),
        programs: Vec::new(),
        sizes: program_sizes(w),
    };
    let push = |out: &mut Observability, mode, test, s| {
        if let Some(r) = out.runs.iter_mut().find(|r| r.mode == mode && r.test == test) {
            r.samples.push(s);
        }
    };
    let in_front = floor_endpoints(w);
    // Repetitions outermost: drift hits every mode alike.
    for _ in 0..pace.reps {
        for test in TESTS {
            for mode in [Mode::Off, Mode::Floor, Mode::TraceOther, Mode::TraceThis] {
                let floor = match (mode, &in_front) {
                    (Mode::Floor, Some(endpoints)) => match super::floor::in_front(&w.lab, endpoints) {
                        Ok(floor) => Some(floor),
                        Err(e) => {
                            eprintln!("observability: no floor in netpath's place: {e:#}");
                            continue;
                        }
                    },
                    (Mode::Floor, None) => continue,
                    _ => None,
                };
                let trace = mode.trace_args().map(|args| Trace::start(w, args));
                let s = measure(w, PathKind::C2c, test, Placement::SameCpu, pace.duration);
                drop(floor);
                let traced = trace.map(Trace::stop);
                if mode == Mode::TraceThis && traced == Some(0) {
                    eprintln!("observability: the trace of the measured flow printed nothing");
                }
                push(&mut out, mode, test, s);
            }
        }
        restart(w, &["--bpf-stats"]);
        for (path, test) in COSTED {
            let before = program_counters(w);
            let s = measure(w, path, test, Placement::SameCpu, pace.duration);
            let after = program_counters(w);
            let transactions = s.rate * pace.duration.as_secs_f64();
            for (program, (runs, secs)) in &after {
                let (runs0, secs0) = before.get(program).copied().unwrap_or_default();
                let runs = runs.saturating_sub(runs0);
                // A program a stray packet ran (an ARP refresh) is not on the path.
                if (runs as f64) < transactions / 100.0 {
                    continue;
                }
                out.programs.push(ProgramCost {
                    path,
                    test,
                    program: program.clone(),
                    runs,
                    transactions,
                    ns_per_run: (secs - secs0) * 1e9 / runs as f64,
                    rate: s.rate,
                });
            }
            if path == PathKind::C2c {
                push(&mut out, Mode::BpfStats, test, s);
            }
        }
        restart(w, &[]);
    }
    out
}

/// The container-to-container endpoints' host ifindexes and IPv4 addresses, for the
/// floor in netpath's place; None before TCX (6.6), where it cannot be put in front.
fn floor_endpoints(w: &World) -> Option<Vec<(u32, std::net::Ipv4Addr)>> {
    if !netpath_tests::kernel_at_least(6, 6) {
        return None;
    }
    let list: serde_json::Value =
        serde_json::from_str(&w.lab.netpath_ok(&["endpoint", "list", "-o", "json"])).ok()?;
    list["endpoints"]
        .as_array()?
        .iter()
        .map(|e| Some((e["host_ifindex"].as_u64()? as u32, e["ip"].as_str()?.parse().ok()?)))
        .collect()
}

/// The lab's programs as the kernel reports them: those using a map pinned in the
/// lab's directory (other labs' programs have the same names).
fn program_sizes(w: &World) -> Vec<ProgramSize> {
    let pins = std::fs::read_dir(&w.lab.bpffs_dir).map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>());
    let ours: Vec<u32> = pins
        .unwrap_or_default()
        .iter()
        .filter_map(|p| aya::maps::MapInfo::from_pin(p).ok())
        .map(|m| m.id())
        .collect();
    let mut sizes: Vec<ProgramSize> = aya::programs::loaded_programs()
        .flatten()
        .filter(|p| p.map_ids().ok().flatten().is_some_and(|ids| ids.iter().any(|i| ours.contains(i))))
        .filter_map(|p| {
            Some(ProgramSize {
                program: p.name_as_str()?.to_string(),
                verified_insns: p.verified_instruction_count().unwrap_or(0).into(),
                xlated_bytes: p.size_translated().unwrap_or(0).into(),
                jited_bytes: p.size_jitted().into(),
            })
        })
        .collect();
    sizes.sort_by(|a, b| a.program.cmp(&b.program));
    // Every endpoint's from_container is one more instance of the same program.
    sizes.dedup_by(|a, b| a.program == b.program);
    sizes
}

/// The agent stopped and started again with the world's own arguments and `args` (a
/// hitless restart).
fn restart(w: &mut World, args: &[&str]) {
    let own = w.agent_args.clone();
    let all: Vec<&str> = own.iter().map(String::as_str).chain(args.iter().copied()).collect();
    w.lab.stop_agent();
    w.lab.start_agent_with(&all);
}

/// Each program's runs and run time so far, from the agent's metrics.
fn program_counters(w: &World) -> BTreeMap<String, (u64, f64)> {
    let text = w.lab.metrics().unwrap_or_default();
    let mut out: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    for line in text.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else { continue };
        let program = |prefix: &str| {
            name.strip_prefix(prefix)?.strip_prefix("{program=\"")?.strip_suffix("\"}").map(str::to_string)
        };
        if let Some(p) = program("netpath_program_runs_total") {
            out.entry(p).or_default().0 = value.parse().unwrap_or(0);
        } else if let Some(p) = program("netpath_program_run_seconds_total") {
            out.entry(p).or_default().1 = value.parse().unwrap_or(0.0);
        }
    }
    out
}

/// A `netpath trace` running until [`Trace::stop`], its output into a file, so that a
/// trace of this flow shows it saw the flow.
struct Trace {
    child: Option<Child>,
    out: std::path::PathBuf,
}

impl Trace {
    fn start(w: &World, args: &[&str]) -> Trace {
        let out = std::env::temp_dir().join(format!("npbench-trace-{}", std::process::id()));
        let mut cmd = Command::new(netpath_tests::netpath_bin());
        cmd.args(["trace", "-o", "json"]).args(args).stdin(Stdio::null());
        if let Ok(f) = std::fs::File::create(&out) {
            cmd.stdout(f);
        }
        w.lab.env_for(&mut cmd);
        let child = cmd.spawn().ok();
        // The filter is in place once the agent has the request: give it that long.
        std::thread::sleep(Duration::from_millis(300));
        Trace { child, out }
    }

    /// Stops the trace; the bytes it wrote.
    fn stop(mut self) -> u64 {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let _ = c.wait();
        }
        let n = std::fs::metadata(&self.out).map_or(0, |m| m.len());
        let _ = std::fs::remove_file(&self.out);
        n
    }
}

impl Observability {
    pub fn is_empty(&self) -> bool {
        self.runs.iter().all(|r| r.samples.is_empty())
    }

    fn run(&self, mode: Mode, test: Test) -> Option<&Run> {
        self.runs.iter().find(|r| r.mode == mode && r.test == test && !r.samples.is_empty())
    }

    /// What produced no number (the smoke check).
    pub fn missing(&self) -> Vec<String> {
        let mut bad: Vec<String> = self
            .runs
            .iter()
            .filter(|r| r.mode != Mode::Floor || netpath_tests::kernel_at_least(6, 6))
            .filter(|r| r.samples.is_empty() || r.samples.iter().any(|s| s.rate.is_nan() || s.rate <= 0.0))
            .map(|r| format!("observability {} {}", r.mode.name(), r.test.name()))
            .collect();
        if !self.programs.iter().any(|p| p.path == PathKind::C2c && p.ns_per_run > 0.0) {
            bad.push("observability: program run time (--bpf-stats)".into());
        }
        bad
    }

    pub fn markdown(&self, md: &mut String) {
        use std::fmt::Write as _;

        use super::report::{pair_median, Stat};
        if self.is_empty() {
            return;
        }
        let _ = writeln!(md, "\n### What netpath's instruments cost: container to container\n");
        let _ = writeln!(md, "netpath alone; with its layout's floor in front of its program in the same world (the floor's work instead of netpath's, interleaved with the other modes: netpath/floor without the spread between two worlds); with `--bpf-stats` (the kernel's run-time accounting), with a `netpath trace` of another flow running (every packet pays the filter), and with a trace of this flow (every packet snapshotted and sent). Rate (min-max) and p50/p99/p99.9 round trip in microseconds; ratios pair by pair against off (netpath/floor: off against the floor).\n");
        let _ = writeln!(md, "| test | off | floor in its place | --bpf-stats | trace, another flow | trace, this flow | netpath/floor | stats/off | other/off | this/off |");
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
        for test in TESTS {
            let cell = |m| self.run(m, test).map_or("-".into(), |r| Stat::of(&r.samples).show(test));
            let ratio = |m| {
                let (a, b) = (self.run(m, test)?, self.run(Mode::Off, test)?);
                let r = pair_median(&a.samples, &b.samples);
                r.is_finite().then(|| format!("{r:.2}x"))
            };
            let r = |m| ratio(m).unwrap_or_else(|| "-".into());
            let own = {
                let pair = self.run(Mode::Off, test).zip(self.run(Mode::Floor, test));
                let r = pair.map_or(f64::NAN, |(a, b)| pair_median(&a.samples, &b.samples));
                if r.is_finite() {
                    format!("{r:.3}x")
                } else {
                    "-".into()
                }
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {own} | {} | {} | {} |",
                test.name(),
                cell(Mode::Off),
                cell(Mode::Floor),
                cell(Mode::BpfStats),
                cell(Mode::TraceOther),
                cell(Mode::TraceThis),
                r(Mode::BpfStats),
                r(Mode::TraceOther),
                r(Mode::TraceThis)
            );
        }
        if !self.sizes.is_empty() {
            let _ = writeln!(md, "\n### The programs as the kernel holds them\n");
            let _ = writeln!(md, "Instructions the verifier processed (its work over every path, not what a packet runs), and the program's size translated and JIT-compiled. Each path of the datapath is a program of its own, reached by tail call.\n");
            let _ = writeln!(md, "| program | verified instructions | xlated bytes | jited bytes |");
            let _ = writeln!(md, "|---|---|---|---|");
            for p in &self.sizes {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} |",
                    p.program, p.verified_insns, p.xlated_bytes, p.jited_bytes
                );
            }
        }
        if self.programs.is_empty() {
            return;
        }
        let _ = writeln!(md, "\n### What netpath's programs cost per packet (--bpf-stats)\n");
        let _ = writeln!(md, "The kernel's own accounting of each program's runs during a run (a tail-called program's time is its caller's). Runs per transaction, median ns per run, and the programs' share of a round trip (runs x ns over the round trip at the run's rate).\n");
        let _ = writeln!(
            md,
            "| path | test | program | runs per transaction | ns per run | share of the round trip |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|");
        let mut keys: Vec<(PathKind, Test, &str)> =
            self.programs.iter().map(|p| (p.path, p.test, p.program.as_str())).collect();
        keys.dedup();
        let mut seen = Vec::new();
        for k in keys {
            if seen.contains(&k) {
                continue;
            }
            seen.push(k);
            let of: Vec<&ProgramCost> =
                self.programs.iter().filter(|p| (p.path, p.test, p.program.as_str()) == k).collect();
            let med = |f: &dyn Fn(&ProgramCost) -> f64| {
                let mut v: Vec<f64> = of.iter().map(|p| f(p)).filter(|v| v.is_finite()).collect();
                v.sort_by(f64::total_cmp);
                v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
            };
            let per_txn = med(&|p| p.runs as f64 / p.transactions);
            let ns = med(&|p| p.ns_per_run);
            let share = med(&|p| p.runs as f64 / p.transactions * p.ns_per_run * p.rate / 1e9 * 100.0);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {per_txn:.2} | {ns:.0} | {share:.2}% |",
                k.0.name(),
                k.1.name(),
                k.2
            );
        }
    }
}
