//! `cargo xtask bench`: netpath against Docker's bridge + iptables datapath and the
//! plain-veth limit, side by side in one run, with the same workload and method.
mod charts;
mod cluster;
mod control;
mod cross_report;
pub mod ct;
mod emulated;
mod emulated_report;
mod flannel;
mod floor;
mod load;
mod markdown;
mod observe;
mod report;
mod routed;
mod scale;
mod subif;
mod subif_report;
mod world;

pub use floor::OBJECT_ENV as FLOOR_OBJECT_ENV;

use std::{path::PathBuf, time::Duration};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::step;
use load::{Placement, Sample, Test};
use world::{Datapath, PathKind, World};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// One short repetition of each test (a smoke run: every measurement must produce a
    /// number; no ratio is judged).
    #[arg(long)]
    pub quick: bool,
    /// Where to write results.json and results.md.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// Only the data-plane runs whose "datapath path test placement" label contains
    /// this text (e.g. "SNAT) TCP_CRR"), each printed with netpath's counters, and their
    /// tables written to --out: for chasing one figure. The cross-checks, scaling,
    /// observability and control-plane runs are skipped (their targets: "not measured").
    #[arg(long)]
    pub only: Option<String>,
    /// Only the cross-node section (five datapaths across two nodes, and the control
    /// plane with simulated nodes), written to --out like a full run.
    #[arg(long, conflicts_with = "only")]
    pub cross_node: bool,
    /// Only the single-node control plane (endpoint add/del, port adds from none to
    /// 10,000, a batch, restart and memory), written to --out like a full run.
    #[arg(long, conflicts_with_all = ["only", "cross_node"])]
    pub control_plane: bool,
    /// Only what netpath's instruments (--bpf-stats, trace) cost container to container,
    /// and its programs' run time per packet, written to --out like a full run.
    #[arg(long, conflicts_with_all = ["only", "cross_node", "control_plane"])]
    pub observe: bool,
    /// Only the sub-interface comparison (netpath's veth path, macvlan, ipvlan, netpath's
    /// macvlan and ipvlan modes, bridge+iptables, the limit), run in a guest of this
    /// Debian kernel (5.10, 6.1, 6.12) under qemu's software emulation, written to
    /// --out/vm-KERNEL: ratios only, the rates are not real hardware's.
    #[arg(long, value_name = "KERNEL", value_parser = emulated::kernel_arg,
          conflicts_with_all = ["only", "cross_node", "control_plane", "observe"])]
    pub vm: Option<String>,
    /// Set by `--vm` in the guest: the sub-interface comparison, its results printed to
    /// the console for the host.
    #[arg(long, hide = true)]
    pub in_guest: bool,
    /// Repetitions of each measurement (default 3, the smoke run's 1): more, for a
    /// figure at its target's edge, whose median then rests on more samples.
    #[arg(long, conflicts_with_all = ["vm", "control_plane"], value_parser = clap::value_parser!(u16).range(1..=50))]
    pub reps: Option<u16>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Measurement {
    pub datapath: Datapath,
    pub path: PathKind,
    pub test: Test,
    pub placement: Placement,
    /// Extra published ports installed (scaling run), else 0.
    pub mappings: u32,
    pub samples: Vec<Sample>,
}

const TESTS: [Test; 4] = [Test::TcpRr, Test::UdpRr, Test::TcpCrr, Test::TcpStream];

/// How often and how long each measurement runs.
#[derive(Clone, Copy)]
struct Pace {
    reps: usize,
    duration: Duration,
}

/// One data-plane measurement to make: a world (by index), a path, a test, a placement.
struct Planned {
    world: usize,
    path: PathKind,
    test: Test,
    placement: Placement,
}

impl Pace {
    /// One short repetition for a smoke run, else three of 3 s.
    fn of(quick: bool) -> Pace {
        let (reps, secs) = if quick { (1, 0.5) } else { (3, 3.0) };
        Pace { reps, duration: Duration::from_secs_f64(secs) }
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.in_guest {
        return emulated::in_guest(&args);
    }
    if let Some(kernel) = &args.vm {
        return emulated::run(kernel, &args);
    }
    prepare(!args.quick)?;
    let pace =
        Pace { reps: args.reps.map_or(Pace::of(args.quick).reps, usize::from), ..Pace::of(args.quick) };
    if args.cross_node {
        let cross = cross_node(args.quick, pace);
        let report =
            report::Report::new(Vec::new(), Default::default(), Vec::new(), Vec::new(), cross, args.quick);
        return finish(&report, &args, report.cross_node.missing());
    }
    if args.control_plane {
        let control = control_plane(args.quick);
        let report =
            report::Report::new(Vec::new(), control, Vec::new(), Vec::new(), Default::default(), args.quick);
        let missing = report.missing().into_iter().filter(|m| m.starts_with("control plane")).collect();
        return finish(&report, &args, missing);
    }
    if args.observe {
        step("observability: netpath's instruments, container to container");
        let mut w = World::netpath()?;
        let mut report = report::Report::new(
            Vec::new(),
            Default::default(),
            Vec::new(),
            Vec::new(),
            Default::default(),
            args.quick,
        );
        report.observability = observe::run(&mut w, pace);
        drop(w);
        let missing = report.observability.missing();
        return finish(&report, &args, missing);
    }
    step("building the single-node worlds");
    let mut worlds = vec![
        World::netpath()?,
        World::iptables()?,
        World::limit()?,
        World::netpath_xdp()?,
        World::floor()?,
        World::macvlan()?,
        World::netpath_macvlan()?,
    ];
    // Filters kept, next to the default's TCX links, where the kernel has those (6.6+;
    // elsewhere the default keeps filters too).
    if netpath_tests::kernel_at_least(6, 6) {
        worlds.push(World::netpath_clsact()?);
    }
    let skipped = match subif::ipvlan_worlds()? {
        Ok(ipvlan) => {
            worlds.extend(ipvlan);
            Vec::new()
        }
        Err(why) => vec![why],
    };

    let plan = data_plane_plan(&worlds, &args);
    let mut results = data_plane(&worlds, &plan, pace, args.only.is_some());
    if args.only.is_some() {
        // What was measured, as a full run's tables show it.
        let mut report = report::Report::new(
            results,
            Default::default(),
            Vec::new(),
            Vec::new(),
            Default::default(),
            args.quick,
        );
        report.skipped = skipped;
        return finish(&report, &args, Vec::new());
    }
    let iperf3 = iperf3_cross_check(&worlds, pace.duration);
    let sockperf = sockperf_cross_check(&worlds, pace.duration);
    step("observability: netpath's instruments, container to container");
    // An agent that fails to restart panics in the lab fixture: caught, so the figures
    // already measured are still written (the smoke check then names what is missing).
    let observability =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| observe::run(&mut worlds[0], pace)))
            .unwrap_or_default();
    results.extend(scaling(&worlds, args.quick, pace)?);
    drop(worlds);
    let control = control_plane(args.quick);
    let cross = cross_node(args.quick, pace);

    let mut report = report::Report::new(results, control, iperf3, sockperf, cross, args.quick);
    report.observability = observability;
    report.skipped = skipped;
    let missing = report.missing();
    finish(&report, &args, missing)
}

/// Writes and prints the report; fails the run if a measurement produced no number.
fn finish(report: &report::Report, args: &BenchArgs, missing: Vec<String>) -> Result<()> {
    report.write(&args.out)?;
    if !report.measurements.is_empty() {
        charts::draw(report, &args.out)?;
    }
    print!("{}", report.markdown());
    step(&format!("results in {}", args.out.display()));
    if !missing.is_empty() {
        anyhow::bail!("some measurements produced no number: {}", missing.join(", "));
    }
    Ok(())
}

/// The cross-node section: the five datapaths across two nodes, then the control plane
/// with simulated nodes. A failure to build a world or to converge is reported and
/// leaves its figures empty (the smoke check then says so): the rest stands.
fn cross_node(quick: bool, pace: Pace) -> cross_report::CrossNode {
    step("cross-node: building netpath vxlan, netpath native, flannel vxlan, kernel routing and the underlay limit");
    // The lab fixture panics on a failed step (an agent that does not start): caught, so
    // the single-node results already measured are still written.
    let build = |dp: cluster::CrossPath| {
        std::panic::catch_unwind(|| cluster::CrossWorld::build(dp))
            .unwrap_or_else(|_| Err(anyhow::anyhow!("building {} panicked (see above)", dp.name())))
    };
    let worlds: Result<Vec<_>> = cluster::CrossPath::ALL.into_iter().map(build).collect();
    let measurements = match worlds {
        Ok(worlds) => cluster::measure_all(&worlds, pace),
        Err(e) => {
            eprintln!("cross-node worlds failed: {e:#}");
            Vec::new()
        }
    };
    step("cross-node control plane: simulated nodes into etcd, until the agent routes them all");
    // Each point is a fresh etcd and agent, whose start is most of the smoke run's cost
    // on a loaded machine: the smoke run makes the one point the target is judged at.
    let counts: &[usize] = if quick { &[1_000] } else { &[100, 1_000, 4_000] };
    let scale = counts
        .iter()
        .filter_map(|&n| match std::panic::catch_unwind(|| scale::run_one(n)) {
            Ok(Ok(p)) => Some(p),
            Ok(Err(e)) => {
                eprintln!("simulated nodes ({n}) failed: {e:#}");
                None
            }
            Err(_) => None,
        })
        .collect();
    cross_report::CrossNode { measurements, scale }
}

/// The tools, the build (release but for the smoke run), and no leftovers of an
/// interrupted run (nor any after Ctrl-C).
fn prepare(release: bool) -> Result<()> {
    crate::preflight::check()?;
    crate::setup::run()?;
    crate::setup::bench_tools()?;
    crate::build_netpath_as(release)?;
    netpath_tests::sweep("npbench");
    netpath_tests::sweep("npbase");
    netpath_tests::sweep("nplimit");
    netpath_tests::sweep("npbxdp");
    netpath_tests::sweep("npfloor");
    netpath_tests::sweep("npbmv");
    netpath_tests::sweep("npbnmv");
    netpath_tests::sweep("npbtcx");
    for p in subif::IPVLAN_PREFIXES {
        netpath_tests::sweep(p);
    }
    for p in cluster::PREFIXES.iter().chain([&scale::PREFIX]) {
        netpath_tests::sweep(p);
    }
    crate::interrupt_sweeps(&[
        "npbench", "npbase", "nplimit", "npbxdp", "npfloor", "npbtcx", "npbmv", "npbnmv", "npbipv", "npbil3",
        "npbnip", "npcp", "npxvx", "npxnat", "npxfl", "npxlim", "npxscale",
    ]);
    Ok(())
}

/// What `--only` matches and the progress bar shows.
fn label(w: &World, path: PathKind, test: Test, placement: Placement) -> String {
    format!("{} {} {} {:?}", w.datapath.name(), path.name(), test.name(), placement)
}

/// One run of `test` on `path` in `w`, from an empty conntrack table.
fn measure(w: &World, path: PathKind, test: Test, placement: Placement, duration: Duration) -> Sample {
    w.flush_conntrack();
    let e = w.endpoints(path);
    load::run(test, e.server, e.listen, e.client, e.target, duration, placement)
}

/// Every path, test and placement each world has (split CPUs neither in a quick run,
/// nor for TCP_STREAM, nor through XDP, nor for the sub-interface worlds), narrowed by
/// `--only`. The quick run measures the sub-interface worlds' TCP_RR alone: it checks
/// that they carry packets, in two seconds rather than eight.
fn data_plane_plan(worlds: &[World], args: &BenchArgs) -> Vec<Planned> {
    let mut plan = Vec::new();
    for path in PathKind::ALL {
        for test in TESTS {
            for placement in [Placement::SameCpu, Placement::SplitCpu] {
                // (IPv6 on one CPU only: split CPUs measure the scheduler as much as the path.)
                let one_cpu = args.quick || test == Test::TcpStream || path.is_ipv6();
                if placement == Placement::SplitCpu && one_cpu {
                    continue;
                }
                for (world, w) in worlds.iter().enumerate() {
                    let split = placement == Placement::SplitCpu;
                    let xdp_split = w.datapath == Datapath::NetpathXdp && split;
                    let subif = w.datapath.is_subif();
                    let subif_skipped = subif && (split || (args.quick && test != Test::TcpRr));
                    let label = label(w, path, test, placement);
                    let wanted = args.only.as_ref().is_none_or(|o| label.contains(o.as_str()));
                    if w.paths().contains(&path) && !xdp_split && !subif_skipped && wanted {
                        plan.push(Planned { world, path, test, placement });
                    }
                }
            }
        }
    }
    plan
}

/// The planned measurements, `pace.reps` samples each. `only`: each sample is printed
/// with the datapath's counters.
fn data_plane(worlds: &[World], plan: &[Planned], pace: Pace, only: bool) -> Vec<Measurement> {
    let bar = ProgressBar::new((plan.len() * pace.reps) as u64);
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}").expect("valid template"));
    let mut results: Vec<Measurement> = plan
        .iter()
        .map(|p| Measurement {
            datapath: worlds[p.world].datapath,
            path: p.path,
            test: p.test,
            placement: p.placement,
            mappings: 0,
            samples: Vec::new(),
        })
        .collect();
    // Repetitions outermost and datapaths adjacent: machine drift hits all of them alike.
    for _ in 0..pace.reps {
        for (i, p) in plan.iter().enumerate() {
            let w = &worlds[p.world];
            bar.set_message(label(w, p.path, p.test, p.placement));
            let mut s = measure(w, p.path, p.test, p.placement, pace.duration);
            if only {
                let us = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
                println!(
                    "{}: {:.0}/s p50 {} p99 {} p99.9 {} us, {} errors",
                    bar.message(),
                    s.rate,
                    us(s.p50_us),
                    us(s.p99_us),
                    us(s.p999_us),
                    s.errors
                );
                w.print_counters();
            }
            if s.rate.is_nan() || s.rate <= 0.0 {
                // A run that produced nothing at all (a lost first datagram, a server not
                // yet listening) is noise for a smoke run: once more, then it counts.
                s = measure(w, p.path, p.test, p.placement, pace.duration);
            }
            results[i].samples.push(s);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    results
}

/// Our TCP_STREAM against iperf3's, one run each, on a path every world has.
fn iperf3_cross_check(worlds: &[World], duration: Duration) -> Vec<report::CrossCheck> {
    step("cross-check: TCP_STREAM with iperf3");
    let mut iperf3 = Vec::new();
    for w in worlds.iter().filter(|w| !w.datapath.is_subif()) {
        let path = if w.datapath == Datapath::NetpathXdp { PathKind::Dnat } else { PathKind::C2c };
        let ours = measure(w, path, Test::TcpStream, Placement::SameCpu, duration).rate;
        w.flush_conntrack();
        let e = w.endpoints(path);
        let theirs = load::iperf3_stream(e.server, e.listen, e.client, e.target, duration);
        iperf3.push(report::CrossCheck { datapath: w.datapath, path, ours_gbps: ours, iperf3_gbps: theirs });
    }
    iperf3
}

/// Our TCP_RR and UDP_RR against sockperf's ping-pong, container to container.
fn sockperf_cross_check(worlds: &[World], duration: Duration) -> Vec<report::RrCrossCheck> {
    step("cross-check: TCP_RR and UDP_RR with sockperf");
    let mut sockperf = Vec::new();
    for w in worlds.iter().filter(|w| w.datapath != Datapath::NetpathXdp && !w.datapath.is_subif()) {
        for test in [Test::TcpRr, Test::UdpRr] {
            let e = w.endpoints(PathKind::C2c);
            // sockperf's server does not set SO_REUSEADDR: it cannot bind the service port
            // while earlier runs' connections sit in TIME_WAIT there, so it gets the next
            // one (container to container, no mapping involved).
            let next = |a: std::net::SocketAddr| std::net::SocketAddr::new(a.ip(), a.port() + 1);
            w.flush_conntrack();
            let theirs =
                load::sockperf_rr(e.server, next(e.listen), e.client, next(e.target), duration, test);
            let ours = measure(w, PathKind::C2c, test, Placement::SameCpu, duration);
            sockperf.push(report::RrCrossCheck {
                datapath: w.datapath,
                path: PathKind::C2c,
                test,
                ours,
                sockperf: theirs,
            });
        }
    }
    sockperf
}

/// The DNAT path's TCP_RR and TCP_CRR with more and more other published ports, netpath
/// against iptables.
fn scaling(worlds: &[World], quick: bool, pace: Pace) -> Result<Vec<Measurement>> {
    step("scaling: the DNAT path with many other published ports");
    let counts: &[u32] = if quick { &[0, 1_000] } else { &[0, 1_000, 10_000, 100_000] };
    let scaled = || worlds.iter().filter(|w| matches!(w.datapath, Datapath::Netpath | Datapath::Iptables));
    let mut results = Vec::new();
    let mut installed = 0u32;
    for &n in counts {
        for w in scaled() {
            add_mappings(w, n - installed)?;
        }
        installed = n;
        for test in [Test::TcpRr, Test::TcpCrr] {
            for w in scaled() {
                let samples = (0..pace.reps)
                    .map(|_| measure(w, PathKind::Dnat, test, Placement::SameCpu, pace.duration))
                    .collect();
                results.push(Measurement {
                    datapath: w.datapath,
                    path: PathKind::Dnat,
                    test,
                    placement: Placement::SameCpu,
                    mappings: n,
                    samples,
                });
            }
        }
    }
    Ok(results)
}

/// Endpoint add/del latency and agent memory; a failure here must not lose the
/// data-plane results, so it leaves the figures empty (and the smoke check says so).
fn control_plane(quick: bool) -> control::ControlPlane {
    step("control plane: endpoint add/del latency, agent memory");
    match std::panic::catch_unwind(|| control::run(quick)) {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            eprintln!("control-plane run failed: {e:#}");
            control::ControlPlane::default()
        }
        Err(_) => {
            eprintln!("control-plane run failed (see above)");
            control::ControlPlane::default()
        }
    }
}

/// `n` more published ports: netpath's map, or Docker's DNAT rules (one per port, as
/// Docker adds them), loaded with iptables-restore.
fn add_mappings(w: &World, n: u32) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    match w.datapath {
        Datapath::Netpath => ct::add_port_maps(&w.lab.bpffs_dir, n, 10_000),
        Datapath::Iptables => {
            let mut rules = String::from("*nat\n");
            for i in 0..n {
                let port = 10_000 + (i % 50_000);
                let src = if i < 50_000 { "" } else { "-d 192.168.77.1/32 " };
                rules.push_str(&format!(
                    "-A DOCKER ! -i br0 {src}-p tcp -m tcp --dport {port} -j DNAT --to-destination 10.77.0.250:{port}\n"
                ));
            }
            rules.push_str("COMMIT\n");
            let file = std::env::temp_dir().join(format!("npbench-rules-{}", std::process::id()));
            std::fs::write(&file, rules)?;
            let r = world::in_ns(
                &w.lab.node,
                &["iptables-restore", "--noflush", file.to_str().expect("utf-8 temp path")],
            );
            let _ = std::fs::remove_file(&file);
            r
        }
        Datapath::Limit
        | Datapath::NetpathXdp
        | Datapath::Floor
        | Datapath::NetpathClsact
        | Datapath::Macvlan
        | Datapath::NetpathMacvlan
        | Datapath::Ipvlan
        | Datapath::IpvlanL3
        | Datapath::NetpathIpvlan => Ok(()),
    }
}
