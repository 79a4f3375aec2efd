//! What `bench --vm` carries over the guest's serial console, and the tables the host
//! makes of it: every title and every column marked EMULATED, with the machine it was
//! emulated on, because its rates are qemu's and only its ratios say something.
use std::fmt::Write as _;

use anyhow::{bail, Result};

use super::{
    emulated::GuestRun,
    load::{Placement, Test},
    report::Report,
    subif_report::{label, path_name, COLUMNS},
    world::{Datapath, PathKind},
};

/// A line of the results (a piece of their JSON follows).
pub const DATA: &str = "NETPATH-BENCH-DATA ";
/// The results' last line: their length and checksum follow.
pub const END: &str = "NETPATH-BENCH-END ";
/// Characters per data line: short enough that a console line is never wrapped.
const CHUNK: usize = 200;

/// FNV-1a: enough to tell that a line went missing or a kernel message landed inside one.
fn checksum(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// `json` (one line, as serde_json writes it) as the console lines [`collect`] reads.
pub fn emit(json: &str) -> String {
    let chars: Vec<char> = json.chars().collect();
    let mut out: String =
        chars.chunks(CHUNK).map(|c| format!("{DATA}{}\n", c.iter().collect::<String>())).collect();
    let _ = writeln!(out, "{END}{} {:016x}", json.len(), checksum(json));
    out
}

/// The JSON the guest emitted, from its whole console; an error when it printed none or
/// it did not arrive whole.
pub fn collect(console: &str) -> Result<String> {
    let mut json = String::new();
    for line in console.lines().map(|l| l.strip_suffix('\r').unwrap_or(l)) {
        if let Some((_, piece)) = line.split_once(DATA) {
            json.push_str(piece);
        } else if let Some((_, end)) = line.split_once(END) {
            let mut it = end.split_whitespace();
            let len: Option<usize> = it.next().and_then(|n| n.parse().ok());
            let sum = it.next().and_then(|s| u64::from_str_radix(s, 16).ok());
            if len != Some(json.len()) || sum != Some(checksum(&json)) {
                bail!("the guest's results arrived damaged ({} bytes, the guest sent {end})", json.len());
            }
            return Ok(json);
        }
    }
    bail!("the guest printed no results (no {} line)", END.trim())
}

/// What every table says it is.
pub fn title(guest: &GuestRun) -> String {
    format!("EMULATED (qemu TCG, {} vCPUs, kernel {})", guest.vcpus, guest.kernel)
}

/// A table's header and separator, every column marked EMULATED.
fn header(columns: &[String]) -> String {
    let cells: Vec<String> = columns.iter().map(|c| format!("EMULATED {c}")).collect();
    format!("| {} |\n|{}\n", cells.join(" | "), "---|".repeat(cells.len()))
}

/// The rows' paths and tests, in order.
fn rows() -> impl Iterator<Item = (PathKind, Test)> {
    [PathKind::C2c, PathKind::Snat].into_iter().flat_map(|p| super::TESTS.into_iter().map(move |t| (p, t)))
}

/// The ratios each row shows: every datapath against macvlan, and netpath's ipvlan mode
/// against the kernel's ipvlan.
fn ratio_pairs() -> Vec<(Datapath, Datapath)> {
    let against_macvlan = COLUMNS.into_iter().filter(|&dp| dp != Datapath::Macvlan);
    against_macvlan
        .map(|dp| (dp, Datapath::Macvlan))
        .chain([(Datapath::NetpathIpvlan, Datapath::Ipvlan)])
        .collect()
}

/// results.md of a `--vm` run: the ratios first (what the run is for), then the
/// figures behind them.
pub fn markdown(guest: &GuestRun, host_cpus: usize) -> String {
    let report = Report::new(
        guest.measurements.iter().map(copy).collect(),
        Default::default(),
        Vec::new(),
        Vec::new(),
        Default::default(),
        guest.quick,
    );
    let title = title(guest);
    let mut md = format!("## {title}: sub-interfaces against netpath's veth path\n\n");
    let _ = writeln!(
        md,
        "Measured in a guest under qemu's software emulation (TCG) on {host_cpus} host CPUs, {} x {} s \
         per figure, client and server on one vCPU. Every instruction is emulated: the rates are \
         not real hardware's, and only the ratios (repetition by repetition, medians) compare the \
         datapaths. macvlan is bridge mode; ipvlan's and netpath --mode ipvlan's L2 mode, ipvlan \
         (l3) routed by the outside host; container to outside is SNAT for netpath's routed path \
         and bridge+iptables, none for the sub-interfaces.\n",
        guest.repetitions, guest.seconds
    );
    let _ = writeln!(md, "### {title}: ratios\n");
    md_ratios(&report, &mut md);
    let _ =
        writeln!(md, "\n### {title}: rates (transactions/s or Gbit/s), median (min-max), p50/p99/p99.9 us\n");
    md_figures(&report, &mut md);
    md
}

fn md_ratios(report: &Report, md: &mut String) {
    let pairs = ratio_pairs();
    let names = pairs.iter().map(|&(a, b)| format!("{} / {}", label(a), label(b)));
    md.push_str(&header(&["path".into(), "test".into()].into_iter().chain(names).collect::<Vec<_>>()));
    for (path, test) in rows() {
        let cells: Vec<String> = pairs
            .iter()
            .map(|&(a, b)| report.pair_ratio(a, b, path, test).map_or("-".into(), |r| format!("{r:.2}x")))
            .collect();
        let _ = writeln!(md, "| {} | {} | {} |", path_name(path), test.name(), cells.join(" | "));
    }
}

fn md_figures(report: &Report, md: &mut String) {
    let names = COLUMNS.iter().map(|&dp| label(dp).to_string());
    md.push_str(&header(&["path".into(), "test".into()].into_iter().chain(names).collect::<Vec<_>>()));
    for (path, test) in rows() {
        let cells: Vec<String> = COLUMNS
            .iter()
            .map(|&dp| {
                let stat = report.stat(dp, path, test, Placement::SameCpu, 0);
                stat.map_or("-".into(), |s| s.show(test))
            })
            .collect();
        let _ = writeln!(md, "| {} | {} | {} |", path_name(path), test.name(), cells.join(" | "));
    }
}

/// A measurement again (the report owns its own).
fn copy(m: &super::Measurement) -> super::Measurement {
    super::Measurement {
        datapath: m.datapath,
        path: m.path,
        test: m.test,
        placement: m.placement,
        mappings: m.mappings,
        samples: m.samples.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{load::Sample, Measurement};

    fn run(measurements: Vec<Measurement>) -> GuestRun {
        GuestRun {
            kernel: "6.1.0-50-cloud-amd64".into(),
            vcpus: 2,
            quick: false,
            repetitions: 2,
            seconds: 3.0,
            measurements,
        }
    }

    fn measured(datapath: Datapath, rates: &[f64]) -> Measurement {
        let samples = rates.iter().map(|&rate| Sample {
            rate,
            p50_us: Some(100.0),
            p99_us: Some(300.0),
            p999_us: Some(900.0),
            ..Default::default()
        });
        Measurement {
            datapath,
            path: PathKind::C2c,
            test: Test::TcpRr,
            placement: Placement::SameCpu,
            mappings: 0,
            samples: samples.collect(),
        }
    }

    #[test]
    fn results_cross_the_console_whole_among_kernel_lines_and_carriage_returns() {
        let guest = run(vec![measured(Datapath::Ipvlan, &[4000.0, 4100.0])]);
        let json = serde_json::to_string(&guest).unwrap();
        let lines = emit(&json);
        assert!(lines.lines().count() > 2, "not cut into lines:\n{lines}");
        assert!(lines.lines().all(|l| l.len() <= CHUNK + DATA.len() + 4 || l.starts_with(END)));
        // The serial console ends lines with CR LF and has the kernel's and the bench's
        // lines around them.
        let console = format!(
            "[    1.2] ipvlan: loaded\r\n==> building\r\n{}NETPATH-VM-DONE bench 0\r\n",
            lines.replace('\n', "\r\n")
        );
        let back: GuestRun = serde_json::from_str(&collect(&console).unwrap()).unwrap();
        assert_eq!(back.kernel, "6.1.0-50-cloud-amd64");
        assert_eq!(back.measurements[0].datapath, Datapath::Ipvlan);
        assert_eq!(back.measurements[0].samples[1].rate, 4100.0);
    }

    #[test]
    fn damaged_or_missing_results_are_an_error_not_a_table() {
        let lines = emit(&serde_json::to_string(&run(Vec::new())).unwrap());
        // A kernel message inside a data line.
        let damaged = lines.replacen(DATA, &format!("{DATA}[ 9.9] oops "), 1);
        let err = collect(&damaged).unwrap_err().to_string();
        assert!(err.contains("arrived damaged"), "{err}");
        // A data line lost.
        let first = lines.lines().next().unwrap();
        let lost = lines.replacen(&format!("{first}\n"), "", 1);
        assert!(collect(&lost).unwrap_err().to_string().contains("arrived damaged"));
        // The bench died before printing them.
        let err = collect("==> building\nError: netpath agent --mode ipvlan\n").unwrap_err().to_string();
        assert!(err.contains("printed no results"), "{err}");
    }

    #[test]
    fn every_title_and_every_column_says_emulated_with_the_guest() {
        let md = markdown(
            &run(vec![
                measured(Datapath::Netpath, &[900.0, 1000.0]),
                measured(Datapath::Macvlan, &[1000.0, 1000.0]),
                measured(Datapath::Ipvlan, &[1000.0, 1250.0]),
                measured(Datapath::NetpathIpvlan, &[900.0, 1000.0]),
            ]),
            2,
        );
        let marking = "EMULATED (qemu TCG, 2 vCPUs, kernel 6.1.0-50-cloud-amd64)";
        let titles: Vec<&str> = md.lines().filter(|l| l.starts_with('#')).collect();
        assert_eq!(titles.len(), 3, "{md}");
        assert!(titles.iter().all(|t| t.contains(marking)), "{titles:?}");
        let headers: Vec<&str> = md.lines().filter(|l| l.starts_with("| EMULATED path")).collect();
        assert_eq!(headers.len(), 2, "{md}");
        for h in &headers {
            let cells: Vec<&str> = h.trim_matches('|').split(" | ").map(str::trim).collect();
            assert!(cells.iter().all(|c| c.starts_with("EMULATED ")), "{h}");
        }
        // Ratios repetition by repetition: 0.90 and 1.00, median 1.00; and netpath's
        // ipvlan mode against the kernel's ipvlan: 0.90 and 0.80.
        let row = md.lines().find(|l| l.starts_with("| container-to-container | TCP_RR | ")).unwrap();
        assert!(row.starts_with("| container-to-container | TCP_RR | 1.00x | "), "{row}");
        assert!(row.ends_with(" | 0.90x |"), "{row}");
        assert!(md.contains("not real hardware's"), "{md}");
    }
}
