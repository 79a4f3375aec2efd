//! `cargo xtask bench`: netpath against Docker's bridge + iptables datapath and the
//! plain-veth limit, side by side in one run, with the same workload and method.
mod charts;
mod control;
pub mod ct;
mod load;
mod report;
mod world;

use std::{path::PathBuf, time::Duration};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

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
    /// this text (e.g. "SNAT) TCP_CRR"), printed and not written to --out: for chasing
    /// one figure. The cross-check, scaling and control-plane runs are skipped.
    #[arg(long)]
    pub only: Option<String>,
}

#[derive(Debug, Serialize)]
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

pub fn run(args: BenchArgs) -> Result<()> {
    crate::preflight::check()?;
    crate::setup::run()?;
    crate::setup::bench_tools()?;
    crate::build_netpath()?;
    netpath_tests::sweep("npbench");
    netpath_tests::sweep("npbase");
    netpath_tests::sweep("nplimit");
    netpath_tests::sweep("npbxdp");
    crate::interrupt_sweeps(&["npbench", "npbase", "nplimit", "npbxdp", "npcp"]);

    let (reps, secs) = if args.quick { (1, 0.5) } else { (3, 3.0) };
    let duration = Duration::from_secs_f64(secs);
    step("building the three worlds");
    let worlds = [World::netpath()?, World::iptables()?, World::limit()?, World::netpath_xdp()?];

    let mut results: Vec<Measurement> = Vec::new();
    let mut plan = Vec::new();
    for path in [PathKind::C2c, PathKind::Snat, PathKind::Dnat, PathKind::Loopback] {
        for test in TESTS {
            for placement in [Placement::SameCpu, Placement::SplitCpu] {
                if placement == Placement::SplitCpu && (args.quick || test == Test::TcpStream) {
                    continue;
                }
                for (wi, w) in worlds.iter().enumerate() {
                    let xdp_split = w.datapath == Datapath::NetpathXdp && placement == Placement::SplitCpu;
                    let label =
                        format!("{} {} {} {:?}", w.datapath.name(), path.name(), test.name(), placement);
                    let wanted = args.only.as_ref().is_none_or(|o| label.contains(o.as_str()));
                    if w.paths().contains(&path) && !xdp_split && wanted {
                        plan.push((wi, path, test, placement));
                    }
                }
            }
        }
    }
    let bar = ProgressBar::new((plan.len() * reps) as u64);
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}").expect("valid template"));
    for (wi, path, test, placement) in &plan {
        results.push(Measurement {
            datapath: worlds[*wi].datapath,
            path: *path,
            test: *test,
            placement: *placement,
            mappings: 0,
            samples: Vec::new(),
        });
    }
    // Repetitions outermost and datapaths adjacent: machine drift hits all of them alike.
    for _ in 0..reps {
        for (i, (wi, path, test, placement)) in plan.iter().enumerate() {
            let w = &worlds[*wi];
            bar.set_message(format!("{} {} {} {:?}", w.datapath.name(), path.name(), test.name(), placement));
            w.flush_conntrack();
            let e = w.endpoints(*path);
            let mut s = load::run(*test, e.server, e.listen, e.client, e.target, duration, *placement);
            if args.only.is_some() {
                println!("{}: {s:?}", bar.message());
                w.print_counters();
            }
            if s.rate.is_nan() || s.rate <= 0.0 {
                // A run that produced nothing at all (a lost first datagram, a server not
                // yet listening) is noise for a smoke run: once more, then it counts.
                w.flush_conntrack();
                s = load::run(*test, e.server, e.listen, e.client, e.target, duration, *placement);
            }
            results[i].samples.push(s);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    if args.only.is_some() {
        return Ok(());
    }

    step("cross-check: TCP_STREAM with iperf3");
    let mut iperf3 = Vec::new();
    for w in &worlds {
        let path = if w.datapath == Datapath::NetpathXdp { PathKind::Dnat } else { PathKind::C2c };
        w.flush_conntrack();
        let e = w.endpoints(path);
        let ours =
            load::run(Test::TcpStream, e.server, e.listen, e.client, e.target, duration, Placement::SameCpu)
                .rate;
        w.flush_conntrack();
        let theirs = load::iperf3_stream(e.server, e.listen, e.client, e.target, duration);
        iperf3.push(report::CrossCheck { datapath: w.datapath, path, ours_gbps: ours, iperf3_gbps: theirs });
    }

    step("cross-check: TCP_RR and UDP_RR with sockperf");
    let mut sockperf = Vec::new();
    for w in worlds.iter().filter(|w| w.datapath != Datapath::NetpathXdp) {
        for test in [Test::TcpRr, Test::UdpRr] {
            let e = w.endpoints(PathKind::C2c);
            // sockperf's server does not set SO_REUSEADDR: it cannot bind the service port
            // while earlier runs' connections sit in TIME_WAIT there, so it gets the next
            // one (container to container, no mapping involved).
            let next = |a: std::net::SocketAddrV4| std::net::SocketAddrV4::new(*a.ip(), a.port() + 1);
            w.flush_conntrack();
            let theirs =
                load::sockperf_rr(e.server, next(e.listen), e.client, next(e.target), duration, test);
            w.flush_conntrack();
            let ours = load::run(test, e.server, e.listen, e.client, e.target, duration, Placement::SameCpu);
            sockperf.push(report::RrCrossCheck {
                datapath: w.datapath,
                path: PathKind::C2c,
                test,
                ours,
                sockperf: theirs,
            });
        }
    }

    step("scaling: the DNAT path with many other published ports");
    let counts: &[u32] = if args.quick { &[0, 1_000] } else { &[0, 1_000, 10_000, 100_000] };
    let mut installed = 0u32;
    for &n in counts {
        for w in worlds.iter().filter(|w| matches!(w.datapath, Datapath::Netpath | Datapath::Iptables)) {
            add_mappings(w, n - installed)?;
        }
        installed = n;
        for test in [Test::TcpRr, Test::TcpCrr] {
            for w in worlds.iter().filter(|w| matches!(w.datapath, Datapath::Netpath | Datapath::Iptables)) {
                let mut m = Measurement {
                    datapath: w.datapath,
                    path: PathKind::Dnat,
                    test,
                    placement: Placement::SameCpu,
                    mappings: n,
                    samples: Vec::new(),
                };
                for _ in 0..reps {
                    w.flush_conntrack();
                    let e = w.endpoints(PathKind::Dnat);
                    m.samples.push(load::run(
                        test,
                        e.server,
                        e.listen,
                        e.client,
                        e.target,
                        duration,
                        Placement::SameCpu,
                    ));
                }
                results.push(m);
            }
        }
    }
    drop(worlds);

    step("control plane: endpoint add/del latency, agent memory");
    // A failure here must not lose the data-plane results above.
    let control = match std::panic::catch_unwind(|| control::run(args.quick)) {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            eprintln!("control-plane run failed: {e:#}");
            control::ControlPlane::default()
        }
        Err(_) => {
            eprintln!("control-plane run failed (see above)");
            control::ControlPlane::default()
        }
    };

    let report = report::Report::new(results, control, iperf3, sockperf, args.quick);
    report.write(&args.out)?;
    charts::draw(&report, &args.out)?;
    print!("{}", report.markdown());
    step(&format!("results in {}", args.out.display()));
    if let Some(missing) = report.missing() {
        anyhow::bail!("some measurements produced no number: {missing}");
    }
    Ok(())
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
        Datapath::Limit | Datapath::NetpathXdp => Ok(()),
    }
}
