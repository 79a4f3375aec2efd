//! The run's Markdown summary: one table per question, medians (min-max), ratios
//! computed pair by pair, and the targets judged plainly.
use std::fmt::Write as _;

use super::{
    control::Latency,
    load::{Placement, Sample, Test},
    report::{Report, Stat},
    world::{Datapath, PathKind},
};

/// One sample as a table cell: rate and p50/p99/p99.9 round trip.
fn cell(s: &Sample) -> String {
    let us = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    format!("{:.0} {}/{}/{}us", s.rate, us(s.p50_us), us(s.p99_us), us(s.p999_us))
}

/// A figure against its goal (at least `goal`), or that it was not measured.
pub(super) fn judge(name: &str, value: Option<f64>, goal: f64, unit: &str) -> String {
    match value {
        Some(v) if v >= goal => format!("met: {name} {v:.2}{unit} (goal >= {goal}{unit})"),
        Some(v) => format!("SHORT: {name} {}{unit} (goal >= {goal}{unit})", against(v, goal)),
        None => format!("not measured: {name}"),
    }
}

/// A figure against its ceiling (at most `goal`).
pub(super) fn judge_at_most(name: &str, value: Option<f64>, goal: f64, unit: &str) -> String {
    match value {
        Some(v) if v <= goal => format!("met: {name} {v:.2}{unit} (goal <= {goal}{unit})"),
        Some(v) => format!("SHORT: {name} {}{unit} (goal <= {goal}{unit})", against(v, goal)),
        None => format!("not measured: {name}"),
    }
}

/// A figure that missed its goal, with two decimals or as many more as it takes not to
/// print the goal itself: "SHORT: 1.30x (goal >= 1.3x)" reads as a mistake.
fn against(v: f64, goal: f64) -> String {
    (2..=4)
        .map(|digits| format!("{v:.digits$}"))
        .find(|shown| shown.parse::<f64>() != Ok(goal))
        .unwrap_or_else(|| format!("{v}"))
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        // `--cross-node` runs that section alone.
        let single_node = !self.measurements.is_empty();
        if single_node {
            self.md_main_table(&mut md);
            self.md_floor(&mut md);
            self.md_subif(&mut md);
            self.md_xdp(&mut md);
            self.md_scaling(&mut md);
            self.md_iperf3(&mut md);
            self.md_sockperf(&mut md);
            self.observability.markdown(&mut md);
            self.md_control_plane(&mut md);
        } else {
            self.md_env(&mut md);
        }
        // `--control-plane` and `--observe` run their section alone.
        let control_only = !single_node && self.control.netpath_add.n > 0;
        let observe_only = !single_node && !self.observability.is_empty();
        if control_only {
            self.md_control_plane(&mut md);
        } else if observe_only {
            self.observability.markdown(&mut md);
            return md;
        } else {
            self.cross_node.markdown(&mut md);
        }
        let _ = writeln!(md, "\n### Against the targets\n");
        let targets = match (single_node, control_only) {
            (true, _) => self.targets(),
            (false, true) => self.control_plane_targets(),
            _ => Vec::new(),
        };
        let cross = if control_only { Vec::new() } else { self.cross_node.targets() };
        for line in targets.into_iter().chain(cross) {
            let _ = writeln!(md, "- {line}");
        }
        md
    }

    /// The environment alone (a cross-node-only or control-plane-only run).
    fn md_env(&self, md: &mut String) {
        let e = &self.env;
        let quick = if e.quick { ", quick run (one short repetition: not for conclusions)" } else { "" };
        let section = if self.control.netpath_add.n > 0 {
            "control plane"
        } else if !self.observability.is_empty() {
            "observability"
        } else {
            "cross-node"
        };
        let _ = writeln!(
            md,
            "## Benchmark: {section}\n\nKernel {}, {} ({} CPUs){quick}.",
            e.kernel, e.cpu, e.cpus
        );
    }

    /// The heading, the environment, and every path and test on every datapath.
    fn md_main_table(&self, md: &mut String) {
        let e = &self.env;
        let _ = writeln!(md, "## Benchmark: netpath vs bridge + iptables vs the plain-veth limit\n");
        let reps = match self.measurements.iter().map(|m| m.samples.len()).max().unwrap_or(0) {
            1 => "one repetition".to_string(),
            n => format!("{n} repetitions"),
        };
        let _ = writeln!(md, "Kernel {}, {} ({} CPUs){}. Client, server and their softirq work on one CPU unless marked split; medians of {reps} with (min-max). TCP_STREAM in Gbit/s, the rest in transactions/s; round-trip latency p50/p99/p99.9 in microseconds.\n",
            e.kernel, e.cpu, e.cpus, if e.quick { ", quick run (one short repetition: not for conclusions)" } else { "" });
        let _ = writeln!(
            md,
            "| path | test | netpath | bridge+iptables | limit | netpath/iptables | netpath/limit |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        for path in PathKind::ALL {
            for test in super::TESTS {
                for placement in [Placement::SameCpu, Placement::SplitCpu] {
                    if let Some(row) = self.md_main_row(path, test, placement) {
                        let _ = writeln!(md, "{row}");
                    }
                }
            }
        }
    }

    /// One row of the main table, if any datapath measured it. Only the limit has a
    /// loopback row, and it has no NAT paths: its column is empty on those.
    fn md_main_row(&self, path: PathKind, test: Test, placement: Placement) -> Option<String> {
        let cell = |dp| {
            let lookup = if dp == Datapath::Limit { path.on_the_limit() } else { path };
            if dp != Datapath::Limit && path == PathKind::Loopback {
                return "-".to_string();
            }
            self.stat(dp, lookup, test, placement, 0).map_or("-".into(), |s| s.show(test))
        };
        let row = [cell(Datapath::Netpath), cell(Datapath::Iptables), cell(Datapath::Limit)];
        // The limit has no NAT paths (its cell there is the container-to-container one):
        // a NAT row is empty when neither netpath nor iptables measured it (`--only`).
        let nat = path.is_nat();
        if row.iter().take(if nat { 2 } else { 3 }).all(|c| c == "-") {
            return None;
        }
        let ratio = |dp| {
            if placement == Placement::SplitCpu || path == PathKind::Loopback {
                return "-".to_string();
            }
            self.ratio(path, test, dp, 0).map_or("-".into(), |r| format!("{r:.2}x"))
        };
        let split = if placement == Placement::SplitCpu { " (split)" } else { "" };
        Some(format!(
            "| {} | {}{split} | {} | {} | {} | {} | {} |",
            path.name(),
            test.name(),
            row[0],
            row[1],
            if nat { "-".into() } else { row[2].clone() },
            ratio(Datapath::Iptables),
            if matches!(path, PathKind::C2c | PathKind::C2c6) { ratio(Datapath::Limit) } else { "-".into() }
        ))
    }

    /// Container to container against the layout's floor (netpath's layout with a
    /// program that only looks up the destination and redirects): floor/limit is what
    /// the layout costs, netpath/floor what netpath's own work costs.
    fn md_floor(&self, md: &mut String) {
        let rows: Vec<String> = super::TESTS
            .into_iter()
            .filter_map(|test| {
                let stat = |dp| self.stat(dp, PathKind::C2c, test, Placement::SameCpu, 0);
                let floor = stat(Datapath::Floor)?;
                let show = |s: Option<Stat>| s.map_or("-".into(), |s| s.show(test));
                let x = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.3}x"));
                let (np, cls, lim) = (Datapath::Netpath, Datapath::NetpathClsact, Datapath::Limit);
                Some(format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    test.name(),
                    show(stat(np)),
                    show(stat(cls)),
                    floor.show(test),
                    show(stat(lim)),
                    x(self.pair_ratio(Datapath::Floor, lim, PathKind::C2c, test)),
                    x(self.pair_ratio(np, Datapath::Floor, PathKind::C2c, test)),
                    x(self.pair_ratio(np, lim, PathKind::C2c, test)),
                    x(self.pair_ratio(cls, lim, PathKind::C2c, test)),
                    x(self.pair_p99_ratio(np, lim, PathKind::C2c, test)),
                    x(self.pair_p99_ratio(Datapath::Floor, lim, PathKind::C2c, test)),
                ))
            })
            .collect();
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(md, "\n### Container to container: netpath, its layout's floor, the limit\n");
        let _ = writeln!(md, "The floor is netpath's layout (host veth, tc ingress, `bpf_redirect_peer`) with a program that only reads the destination, looks it up in ENDPOINTS and redirects (`layout_floor`, in a TCX link). floor/limit is the layout's own cost, which no program on it removes; netpath/floor is netpath's own work. netpath is the default (`--endpoint-attach auto`: each endpoint made with a clsact filter and moved to a TCX link once the agent is idle, kernel 6.6+); netpath clsact keeps the filters (`--endpoint-attach clsact`): the hook's share. Ratios repetition by repetition, same CPU.\n");
        let _ = writeln!(md, "| test | netpath | netpath clsact | layout floor | limit | floor/limit | netpath/floor | netpath/limit | netpath clsact/limit | netpath p99/limit p99 | floor p99/limit p99 |");
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
        for row in rows {
            let _ = writeln!(md, "{row}");
        }
    }

    fn md_xdp(&self, md: &mut String) {
        let _ = writeln!(md, "\n### XDP fast path on the uplink (--xdp) against tc alone\n");
        let _ = writeln!(md, "| path | test | netpath (tc) | netpath+xdp | xdp/tc |\n|---|---|---|---|---|");
        for path in [PathKind::Snat, PathKind::Dnat] {
            for test in super::TESTS {
                let tc = self.stat(Datapath::Netpath, path, test, Placement::SameCpu, 0);
                let xdp = self.stat(Datapath::NetpathXdp, path, test, Placement::SameCpu, 0);
                let (Some(tc), Some(xdp)) = (tc, xdp) else { continue };
                let ratio = self
                    .pair_ratio(Datapath::NetpathXdp, Datapath::Netpath, path, test)
                    .map_or("-".into(), |r| format!("{r:.2}x"));
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {ratio} |",
                    path.name(),
                    test.name(),
                    tc.show(test),
                    xdp.show(test)
                );
            }
        }
    }

    fn md_scaling(&self, md: &mut String) {
        let _ = writeln!(md, "\n### Scaling: outside to mapped port with other published ports installed\n");
        let _ = writeln!(
            md,
            "| mappings | netpath TCP_CRR | iptables TCP_CRR | netpath TCP_RR | iptables TCP_RR |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|");
        let mut counts: Vec<u32> =
            self.measurements.iter().filter(|m| m.mappings > 0).map(|m| m.mappings).collect();
        counts.insert(0, 0);
        counts.dedup();
        for n in counts {
            let c = |dp, t| {
                self.stat(dp, PathKind::Dnat, t, Placement::SameCpu, n).map_or("-".into(), |s| s.show(t))
            };
            let _ = writeln!(
                md,
                "| {n} | {} | {} | {} | {} |",
                c(Datapath::Netpath, Test::TcpCrr),
                c(Datapath::Iptables, Test::TcpCrr),
                c(Datapath::Netpath, Test::TcpRr),
                c(Datapath::Iptables, Test::TcpRr)
            );
        }
    }

    fn md_iperf3(&self, md: &mut String) {
        let _ = writeln!(md, "\n### TCP_STREAM: our generator against iperf3 (Gbit/s, one run each)\n");
        let _ = writeln!(md, "| datapath | path | ours | iperf3 |\n|---|---|---|---|");
        for c in &self.iperf3 {
            let theirs = c.iperf3_gbps.map_or("not run".to_string(), |g| format!("{g:.2}"));
            let _ =
                writeln!(md, "| {} | {} | {:.2} | {theirs} |", c.datapath.name(), c.path.name(), c.ours_gbps);
        }
    }

    fn md_sockperf(&self, md: &mut String) {
        let _ = writeln!(
            md,
            "\n### TCP_RR and UDP_RR: our generator against sockperf ping-pong (one run each)\n"
        );
        let _ = writeln!(md, "| datapath | path | test | ours | sockperf |\n|---|---|---|---|---|");
        for c in &self.sockperf {
            let theirs = c.sockperf.as_ref().map_or("not run".to_string(), cell);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {theirs} |",
                c.datapath.name(),
                c.path.name(),
                c.test.name(),
                cell(&c.ours)
            );
        }
    }

    fn md_control_plane(&self, md: &mut String) {
        let cp = &self.control;
        let _ = writeln!(md, "\n### Control plane\n");
        let build = std::env::var("NETPATH_BIN").unwrap_or_default();
        let build = if build.contains("/release/") { "release" } else { "debug" };
        let _ = writeln!(md, "The agent and the CLI are the {build} build, each call a `netpath` process as a user or script runs it.\n");
        let _ = writeln!(md, "| operation | n | p50 ms | p99 ms |\n|---|---|---|---|");
        let mut row = |op: &str, l: &Latency| {
            let _ = writeln!(md, "| {op} | {} | {:.2} | {:.2} |", l.n, l.p50_ms, l.p99_ms);
        };
        row("netpath endpoint add", &cp.netpath_add);
        row("netpath endpoint del", &cp.netpath_del);
        row("netpath endpoint del --no-wait", &cp.netpath_del_no_wait);
        if let (Some(a), Some(d)) = (&cp.cni_bridge_add, &cp.cni_bridge_del) {
            row("CNI bridge ADD", a);
            row("CNI bridge DEL", d);
        }
        let shown = |steps: &[(String, f64)]| {
            steps.iter().map(|(n, ms)| format!("{n} {ms:.2}")).collect::<Vec<_>>().join(", ")
        };
        let _ = writeln!(
            md,
            "\nWhere an add goes (median ms per step, as the agent logs it): {}.\nWhere a delete goes: {}.",
            shown(&cp.add_steps),
            shown(&cp.del_steps)
        );
        let _ = writeln!(
            md,
            "\nAgent resident memory with {} endpoints: {:.1} MiB.",
            cp.rss_endpoints,
            cp.agent_rss_kib as f64 / 1024.0
        );
        let _ = writeln!(
            md,
            "\n| `port add` calls, one mapping each | total s | ms per call at that size |\n|---|---|---|"
        );
        for c in &cp.port_calls {
            let _ = writeln!(md, "| {} | {:.2} | {:.2} |", c.calls, c.total_s, c.per_call_ms);
        }
        let _ = writeln!(
            md,
            "\nOne `port add` call with {} mappings: {:.0} ms. With {} endpoints and {} published ports the \
             agent holds {:.1} MiB and restarts in {:.0} ms (until it answers).",
            cp.port_batch,
            cp.port_batch_ms,
            cp.rss_endpoints,
            cp.restart_ports,
            cp.restart_rss_kib as f64 / 1024.0,
            cp.restart_ms
        );
    }

    /// Each target of the suite, judged on this run's numbers.
    fn targets(&self) -> Vec<String> {
        // `--only` measures no control plane: nothing of it to judge.
        let control = if self.control.netpath_add.n > 0 { self.control_plane_targets() } else { Vec::new() };
        [self.data_plane_targets(), control].concat()
    }

    fn data_plane_targets(&self) -> Vec<String> {
        let mut out = Vec::new();
        // Container to container, both families alike (issue 19: IPv4's targets).
        for (path, base) in [(PathKind::C2c, "iptables"), (PathKind::C2c6, "ip6tables")] {
            let name = path.name();
            for t in [Test::TcpRr, Test::UdpRr] {
                let t_name = t.name();
                out.push(judge(
                    &format!("{name} {t_name} vs limit"),
                    self.ratio(path, t, Datapath::Limit, 0),
                    0.95,
                    "x",
                ));
                out.push(judge(
                    &format!("{name} {t_name} vs {base}"),
                    self.ratio(path, t, Datapath::Iptables, 0),
                    1.25,
                    "x",
                ));
                // The tail, against the limit's own: p99 over p99, repetition by repetition.
                out.push(judge_at_most(
                    &format!("{name} {t_name} p99 vs the limit's p99"),
                    self.p99_ratio(path, t, Datapath::Limit),
                    1.1,
                    "x",
                ));
            }
            let crr = self.ratio(path, Test::TcpCrr, Datapath::Limit, 0);
            out.push(judge(&format!("{name} TCP_CRR vs limit"), crr, 0.93, "x"));
        }
        // IPv6's published port (DNAT66 against Docker's ip6tables DNAT): IPv4's target.
        for (path, name) in
            [(PathKind::Dnat, "DNAT TCP_CRR vs iptables"), (PathKind::Dnat6, "DNAT66 TCP_CRR vs ip6tables")]
        {
            out.push(judge(name, self.ratio(path, Test::TcpCrr, Datapath::Iptables, 0), 1.5, "x"));
        }
        let max_n = self.measurements.iter().map(|m| m.mappings).max().unwrap_or(0);
        if max_n > 0 {
            let base = self
                .stat(Datapath::Netpath, PathKind::Dnat, Test::TcpCrr, Placement::SameCpu, 0)
                .map(|s| s.rate);
            let big = self
                .stat(Datapath::Netpath, PathKind::Dnat, Test::TcpCrr, Placement::SameCpu, max_n)
                .map(|s| s.rate);
            out.push(judge(
                &format!("DNAT TCP_CRR at {max_n} mappings vs 0"),
                big.zip(base).map(|(b, a)| b / a),
                0.95,
                "x",
            ));
        }
        // IPv6's masquerade (NAT66 against ip6tables MASQUERADE): IPv4's target.
        for (path, name) in
            [(PathKind::Snat, "SNAT TCP_CRR vs iptables"), (PathKind::Snat6, "SNAT66 TCP_CRR vs ip6tables")]
        {
            out.push(judge(
                &format!("{name} MASQUERADE"),
                self.ratio(path, Test::TcpCrr, Datapath::Iptables, 0),
                1.0,
                "x",
            ));
        }
        for path in [PathKind::C2c, PathKind::C2c6] {
            let stream = self.ratio(path, Test::TcpStream, Datapath::Limit, 0);
            out.push(judge(&format!("{} TCP_STREAM vs limit", path.name()), stream, 0.95, "x"));
        }
        out.extend(self.subif_targets());
        out
    }

    fn control_plane_targets(&self) -> Vec<String> {
        let mut out = Vec::new();
        let cp = &self.control;
        out.push(if cp.netpath_add.p50_ms < 10.0 {
            format!("met: endpoint add p50 {:.2} ms (goal < 10 ms)", cp.netpath_add.p50_ms)
        } else {
            format!("SHORT: endpoint add p50 {:.2} ms (goal < 10 ms)", cp.netpath_add.p50_ms)
        });
        for (what, l) in
            [("endpoint del", &cp.netpath_del), ("endpoint del --no-wait", &cp.netpath_del_no_wait)]
        {
            let verdict = if l.p50_ms < 20.0 { "met" } else { "SHORT" };
            out.push(format!("{verdict}: {what} p50 {:.2} ms (goal < 20 ms)", l.p50_ms));
        }
        if let Some(c) = &cp.cni_bridge_add {
            out.push(judge(
                "endpoint add speed vs CNI bridge ADD",
                Some(c.p50_ms / cp.netpath_add.p50_ms),
                10.0,
                "x",
            ));
        }
        if let (Some(first), Some(last)) = (cp.port_calls.first(), cp.port_calls.last()) {
            let r = last.per_call_ms / first.per_call_ms;
            out.push(format!(
                "{}: port add per call at {} ports {r:.2}x its cost at {} (goal <= 1.5x)",
                if r <= 1.5 { "met" } else { "SHORT" },
                last.calls,
                first.calls
            ));
        }
        out.push(format!(
            "{}: agent restart {:.0} ms with {} endpoints and {} ports (goal < 2000 ms)",
            if cp.restart_ms < 2000.0 { "met" } else { "SHORT" },
            cp.restart_ms,
            cp.rss_endpoints,
            cp.restart_ports
        ));
        let rss = cp.agent_rss_kib as f64 / 1024.0;
        out.push(format!(
            "{}: agent RSS {rss:.1} MiB at {} endpoints (goal < 30 MiB at 1000)",
            if rss < 30.0 { "met" } else { "SHORT" },
            cp.rss_endpoints
        ));
        out
    }
}

impl Stat {
    pub(super) fn show(&self, test: Test) -> String {
        let err = if self.errors > 0 { format!(" [{} errors]", self.errors) } else { String::new() };
        if test == Test::TcpStream {
            return format!("{:.2} ({:.2}-{:.2}){err}", self.rate, self.min, self.max);
        }
        format!(
            "{:.0} ({:.0}-{:.0}) {:.0}/{:.0}/{:.0}us{err}",
            self.rate, self.min, self.max, self.p50, self.p99, self.p999
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_a_hair_from_its_goal_is_not_printed_as_the_goal() {
        assert_eq!(judge("r", Some(1.2997), 1.3, "x"), "SHORT: r 1.2997x (goal >= 1.3x)");
        assert_eq!(judge("r", Some(1.304), 1.3, "x"), "met: r 1.30x (goal >= 1.3x)");
        assert_eq!(judge("r", Some(1.3), 1.3, "x"), "met: r 1.30x (goal >= 1.3x)");
        assert_eq!(judge_at_most("p", Some(1.1042), 1.1, "x"), "SHORT: p 1.104x (goal <= 1.1x)");
        assert_eq!(judge("r", Some(0.91), 0.95, "x"), "SHORT: r 0.91x (goal >= 0.95x)");
        assert_eq!(judge("r", None, 0.95, "x"), "not measured: r");
    }
}
