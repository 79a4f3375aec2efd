//! The sub-interface comparison's table and target: netpath's routed veth path,
//! netpath's `--mode macvlan` and the kernel's macvlan, next to bridge+iptables and the
//! limit, container to container and container to outside.
use std::fmt::Write as _;

use super::{
    load::{Placement, Test},
    markdown::judge,
    report::Report,
    world::{Datapath, PathKind},
};

/// The columns, in order; the limit only container to container. The ipvlan ones only
/// when measured (never on a kernel without ipvlan).
pub(super) const COLUMNS: [Datapath; 8] = [
    Datapath::Netpath,
    Datapath::NetpathMacvlan,
    Datapath::Macvlan,
    Datapath::NetpathIpvlan,
    Datapath::Ipvlan,
    Datapath::IpvlanL3,
    Datapath::Iptables,
    Datapath::Limit,
];

/// A datapath as the sub-interface tables name it.
pub(super) fn label(dp: Datapath) -> &'static str {
    match dp {
        Datapath::Netpath => "netpath (routed veth)",
        Datapath::NetpathMacvlan => "netpath --mode macvlan",
        Datapath::NetpathIpvlan => "netpath --mode ipvlan (l2)",
        Datapath::Ipvlan => "ipvlan (l2)",
        Datapath::IpvlanL3 => "ipvlan (l3)",
        dp => dp.name(),
    }
}

fn is_ipvlan(dp: Datapath) -> bool {
    matches!(dp, Datapath::Ipvlan | Datapath::IpvlanL3 | Datapath::NetpathIpvlan)
}

/// The row's name: what translates on the way out, where something does.
pub(super) fn path_name(path: PathKind) -> &'static str {
    match path {
        PathKind::Snat => "container-to-outside (netpath, iptables: SNAT; macvlan, ipvlan: none)",
        p => p.name(),
    }
}

impl Report {
    /// The table, when a sub-interface world was measured, and the worlds skipped.
    pub(super) fn md_subif(&self, md: &mut String) {
        let columns = self.subif_columns();
        let pairs = self.subif_pairs(&columns);
        let rows: Vec<String> = [PathKind::C2c, PathKind::Snat]
            .into_iter()
            .flat_map(|path| super::TESTS.into_iter().map(move |test| (path, test)))
            .filter_map(|(path, test)| self.subif_row(&columns, &pairs, path, test))
            .collect();
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(
            md,
            "\n### Sub-interfaces: netpath's routed veth path, netpath --mode macvlan, macvlan\n"
        );
        let _ = writeln!(md, "macvlan: each container's eth0 a macvlan (bridge mode) of the node's uplink, on the uplink's network with an address of its own (192.168.77.130-131/24), nothing else; netpath --mode macvlan: the same layout and addresses with netpath's programs on the containers' interfaces (ipvlan alike, where measured). Neither translates: container to outside reaches the outside host with the container's own address, where netpath's routed path and bridge+iptables masquerade. One CPU; medians (min-max); ratios repetition by repetition.\n");
        let names: Vec<&str> = columns.iter().map(|&dp| label(dp)).collect();
        let ratios: Vec<String> = pairs.iter().map(|&(a, b)| format!("{}/{}", a.name(), b.name())).collect();
        let _ = writeln!(md, "| path | test | {} | {} |", names.join(" | "), ratios.join(" | "));
        let _ = writeln!(md, "|---|---|{}", "---|".repeat(names.len() + ratios.len()));
        for row in rows {
            let _ = writeln!(md, "{row}");
        }
        for s in &self.skipped {
            let _ = writeln!(md, "\nNot measured: {s}");
        }
    }

    /// The table's datapaths: all but ipvlan's unless this run measured one of them.
    fn subif_columns(&self) -> Vec<Datapath> {
        let ipvlan = self.measurements.iter().any(|m| is_ipvlan(m.datapath));
        COLUMNS.into_iter().filter(|&dp| ipvlan || !is_ipvlan(dp)).collect()
    }

    /// The ratios the table shows: netpath's paths against the kernel's device they
    /// compete with.
    fn subif_pairs(&self, columns: &[Datapath]) -> Vec<(Datapath, Datapath)> {
        let all = [
            (Datapath::Netpath, Datapath::Macvlan),
            (Datapath::NetpathMacvlan, Datapath::Macvlan),
            (Datapath::Ipvlan, Datapath::Macvlan),
            (Datapath::NetpathIpvlan, Datapath::Ipvlan),
        ];
        all.into_iter().filter(|(a, _)| columns.contains(a)).collect()
    }

    /// One path and test, if a sub-interface world measured it.
    fn subif_row(
        &self,
        columns: &[Datapath],
        pairs: &[(Datapath, Datapath)],
        path: PathKind,
        test: Test,
    ) -> Option<String> {
        let stat = |dp| self.stat(dp, path, test, Placement::SameCpu, 0);
        if !columns.iter().any(|&dp| dp.is_subif() && stat(dp).is_some()) {
            return None;
        }
        let cells: Vec<String> = columns
            .iter()
            .map(|&dp| match dp {
                Datapath::Limit if path != PathKind::C2c => "-".to_string(),
                dp => stat(dp).map_or("-".into(), |s| s.show(test)),
            })
            .collect();
        let x = |&(a, b): &(Datapath, Datapath)| {
            self.pair_ratio(a, b, path, test).map_or("-".into(), |r| format!("{r:.2}x"))
        };
        let ratios: Vec<String> = pairs.iter().map(x).collect();
        Some(format!(
            "| {} | {} | {} | {} |",
            path_name(path),
            test.name(),
            cells.join(" | "),
            ratios.join(" | ")
        ))
    }

    /// The seed's target: netpath's routed veth path within 5% of macvlan, container to
    /// container TCP_RR.
    pub(super) fn subif_targets(&self) -> Vec<String> {
        vec![judge(
            "container-to-container TCP_RR netpath (routed veth) vs macvlan",
            self.pair_ratio(Datapath::Netpath, Datapath::Macvlan, PathKind::C2c, Test::TcpRr),
            0.95,
            "x",
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{load::Sample, Measurement};

    fn measured(datapath: Datapath, path: PathKind, rates: &[f64]) -> Measurement {
        let samples = rates.iter().map(|&rate| Sample {
            rate,
            p50_us: Some(20.0),
            p99_us: Some(40.0),
            p999_us: Some(60.0),
            ..Default::default()
        });
        Measurement {
            datapath,
            path,
            test: Test::TcpRr,
            placement: Placement::SameCpu,
            mappings: 0,
            samples: samples.collect(),
        }
    }

    fn report(measurements: Vec<Measurement>) -> Report {
        Report::new(measurements, Default::default(), Vec::new(), Vec::new(), Default::default(), false)
    }

    #[test]
    fn netpath_is_judged_against_macvlan_repetition_by_repetition() {
        // Repetition by repetition: 0.90 and 0.96 (median 0.96); medians over all
        // repetitions would say 93/100.
        let r = report(vec![
            measured(Datapath::Netpath, PathKind::C2c, &[90.0, 96.0]),
            measured(Datapath::Macvlan, PathKind::C2c, &[100.0, 100.0]),
        ]);
        assert_eq!(
            r.subif_targets(),
            ["met: container-to-container TCP_RR netpath (routed veth) vs macvlan 0.96x (goal >= 0.95x)"]
        );
        let short = report(vec![
            measured(Datapath::Netpath, PathKind::C2c, &[90.0]),
            measured(Datapath::Macvlan, PathKind::C2c, &[100.0]),
        ]);
        assert!(short.subif_targets()[0].starts_with("SHORT: "), "{:?}", short.subif_targets());
        assert!(report(Vec::new()).subif_targets()[0].starts_with("not measured: "));
    }

    #[test]
    fn the_table_shows_each_datapath_in_its_column_and_says_what_translates() {
        let r = report(vec![
            measured(Datapath::Netpath, PathKind::C2c, &[90.0]),
            measured(Datapath::Macvlan, PathKind::C2c, &[100.0]),
            measured(Datapath::NetpathMacvlan, PathKind::Snat, &[50.0]),
            measured(Datapath::Macvlan, PathKind::Snat, &[100.0]),
            measured(Datapath::Limit, PathKind::C2c, &[120.0]),
        ]);
        let mut md = String::new();
        r.md_subif(&mut md);
        let row = |start: &str| md.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("{md}"));
        assert_eq!(
            row("| container-to-container | TCP_RR"),
            "| container-to-container | TCP_RR | 90 (90-90) 20/40/60us | - | 100 (100-100) 20/40/60us | - \
             | 120 (120-120) 20/40/60us | 0.90x | - |"
        );
        // The limit has no path to the outside: its cell stays empty there.
        assert_eq!(
            row("| container-to-outside (netpath, iptables: SNAT; macvlan, ipvlan: none) | TCP_RR"),
            "| container-to-outside (netpath, iptables: SNAT; macvlan, ipvlan: none) | TCP_RR | - \
             | 50 (50-50) 20/40/60us | 100 (100-100) 20/40/60us | - | - | - | 0.50x |"
        );
        // Nothing of it measured: no table.
        let mut none = String::new();
        report(vec![measured(Datapath::Netpath, PathKind::C2c, &[90.0])]).md_subif(&mut none);
        assert!(none.is_empty(), "{none}");
    }
}
