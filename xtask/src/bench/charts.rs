//! PNG charts of a run: rate and latency per path and datapath, and the scaling curve.
//! Text needs a font: DejaVu Sans from Debian's fonts-dejavu-core (installed by setup).
use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::{
    load::{Histogram, Placement, Test},
    report::Report,
    world::{Datapath, PathKind},
};

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const DATAPATHS: [(Datapath, RGBColor); 3] = [
    (Datapath::Netpath, RGBColor(31, 119, 180)),
    (Datapath::Iptables, RGBColor(214, 39, 40)),
    (Datapath::Limit, RGBColor(120, 120, 120)),
];

fn register_font() -> Result<()> {
    let bytes = std::fs::read(FONT).map_err(|e| anyhow!("{FONT}: {e}; install fonts-dejavu-core"))?;
    // The font registry wants 'static bytes; the process draws a few charts and exits.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{FONT} is not a usable font"))
}

pub fn draw(report: &Report, dir: &Path) -> Result<()> {
    register_font()?;
    rates(report, &dir.join("rates.png"))?;
    latency(report, &dir.join("latency.png"))?;
    scaling(report, &dir.join("scaling.png"))?;
    for (test, file) in [(Test::TcpRr, "histogram-tcp-rr.png"), (Test::UdpRr, "histogram-udp-rr.png")] {
        histogram(report, test, &dir.join(file))?;
    }
    Ok(())
}

/// Every round trip of a container-to-container RR test, all repetitions, per datapath:
/// the share of transactions in each microsecond up to the datapaths' p99.9, on a log
/// scale so the tail shows.
fn histogram(report: &Report, test: Test, file: &Path) -> Result<()> {
    let of = |dp: Datapath| {
        let m = report.measurement(dp, PathKind::C2c, test)?;
        let h = Histogram::merged(m.samples.iter().map(|s| &s.histogram));
        let total: u64 = h.0.iter().map(|(_, n)| n).sum();
        (total > 0).then(|| {
            h.0.iter().map(|(us, n)| (*us as f64, *n as f64 * 100.0 / total as f64)).collect::<Vec<_>>()
        })
    };
    type Series = (Datapath, RGBColor, Vec<(f64, f64)>);
    let series: Vec<Series> = DATAPATHS.iter().filter_map(|(dp, c)| Some((*dp, *c, of(*dp)?))).collect();
    let xmax = DATAPATHS
        .iter()
        .filter_map(|(dp, _)| report.stat(*dp, PathKind::C2c, test, Placement::SameCpu, 0))
        .map(|s| s.p999)
        .filter(|v| v.is_finite())
        .fold(10.0f64, f64::max)
        * 1.3;
    let root = BitMapBackend::new(file, (1000, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("container to container {}: round trips per microsecond (one CPU)", test.name()),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..xmax, (0.001f64..100f64).log_scale())?;
    chart.configure_mesh().x_desc("round trip, microseconds").y_desc("% of transactions").draw()?;
    for (dp, color, pts) in series {
        let pts: Vec<(f64, f64)> = pts.into_iter().filter(|(x, _)| *x <= xmax).collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(dp.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

/// Transactions/s per path and test, datapaths side by side.
fn rates(report: &Report, file: &Path) -> Result<()> {
    grouped_bars(
        file,
        "transactions/s (client and server on one CPU; higher is better)",
        "transactions/s",
        SeriesLabelPosition::MiddleRight,
        |dp, p, t| Some((report.median(dp, p, t, Placement::SameCpu, 0)?, None)),
    )
}

/// Round-trip latency per path and test: p50 as the bar, p99 as the whisker.
fn latency(report: &Report, file: &Path) -> Result<()> {
    grouped_bars(
        file,
        "round-trip latency in microseconds, p50 bar and p99 whisker (one CPU; lower is better)",
        "microseconds",
        SeriesLabelPosition::UpperLeft,
        |dp, p, t| report.latency(dp, p, t).map(|(p50, p99)| (p50, Some(p99))),
    )
}

/// Bars for every (path, test) group of the RR and CRR tests, one per datapath, with
/// an optional whisker above each. The limit exists only container to container.
fn grouped_bars(
    file: &Path,
    caption: &str,
    y_desc: &str,
    legend: SeriesLabelPosition,
    value: impl Fn(Datapath, PathKind, Test) -> Option<(f64, Option<f64>)>,
) -> Result<()> {
    let groups = bar_groups();
    let value = |dp: Datapath, p: PathKind, t: Test| {
        if dp == Datapath::Limit && p != PathKind::C2c {
            return None;
        }
        value(dp, p, t)
    };
    let max = groups
        .iter()
        .flat_map(|(p, t)| DATAPATHS.iter().filter_map(move |(dp, _)| value(*dp, *p, *t)))
        .map(|(v, top)| top.unwrap_or(v).max(v))
        .fold(1.0f64, f64::max);
    let root = BitMapBackend::new(file, (1400, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(60)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..groups.len() as f64, 0f64..max * 1.15)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        // Key points every half group; only the group centres get a name, so every group
        // is labelled, under its own bars.
        .x_labels(groups.len() * 2 + 1)
        .x_label_formatter(&|x| group_label(&groups, *x))
        .y_desc(y_desc)
        .draw()?;
    for (k, (dp, color)) in DATAPATHS.iter().enumerate() {
        let placed: Vec<(f64, f64, Option<f64>)> = groups
            .iter()
            .enumerate()
            .filter_map(|(i, (p, t))| {
                let (v, top) = value(*dp, *p, *t)?;
                Some((i as f64 + 0.1 + k as f64 * 0.27, v, top))
            })
            .collect();
        chart
            .draw_series(
                placed.iter().map(|(x0, v, _)| Rectangle::new([(*x0, 0.0), (x0 + 0.25, *v)], color.filled())),
            )?
            .label(dp.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        chart.draw_series(placed.iter().filter_map(|(x0, v, top)| {
            let mid = x0 + 0.125;
            top.map(|t| PathElement::new(vec![(mid, *v), (mid, t)], BLACK.stroke_width(2)))
        }))?;
    }
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The bar charts' groups: each path with each RR and CRR test.
fn bar_groups() -> Vec<(PathKind, Test)> {
    [PathKind::C2c, PathKind::Snat, PathKind::Dnat]
        .into_iter()
        .flat_map(|p| [Test::TcpRr, Test::UdpRr, Test::TcpCrr].map(|t| (p, t)))
        .collect()
}

/// The name at key point `x` of the groups' axis: a group's, at its centre, else none.
fn group_label(groups: &[(PathKind, Test)], x: f64) -> String {
    if (x - x.floor() - 0.5).abs() > 1e-6 {
        return String::new();
    }
    groups.get(x.floor() as usize).map_or(String::new(), |(p, t)| {
        let p = match p {
            PathKind::C2c => "c2c",
            PathKind::C2c6 => "c2c6",
            PathKind::Snat => "snat",
            PathKind::Snat6 => "snat6",
            PathKind::Dnat => "dnat",
            PathKind::Dnat6 => "dnat6",
            PathKind::Loopback => "lo",
        };
        format!("{p} {}", t.name())
    })
}

/// The DNAT path's TCP_CRR against the number of other published ports.
fn scaling(report: &Report, file: &Path) -> Result<()> {
    let counts = report.mapping_counts();
    let root = BitMapBackend::new(file, (900, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = counts
        .iter()
        .flat_map(|n| {
            [Datapath::Netpath, Datapath::Iptables]
                .map(|dp| report.median(dp, PathKind::Dnat, Test::TcpCrr, Placement::SameCpu, *n))
        })
        .flatten()
        .fold(1.0f64, f64::max);
    let xs = |n: u32| ((n as f64) + 1.0).log10();
    let xmax = counts.iter().map(|n| xs(*n)).fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption("outside to mapped port, TCP_CRR vs other published ports", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..xmax * 1.05, 0f64..max * 1.15)?;
    chart.configure_mesh().x_desc("published ports (log10(n+1))").y_desc("connections/s").draw()?;
    for (dp, color) in DATAPATHS.iter().take(2) {
        let pts: Vec<(f64, f64)> = counts
            .iter()
            .filter_map(|n| {
                Some((xs(*n), report.median(*dp, PathKind::Dnat, Test::TcpCrr, Placement::SameCpu, *n)?))
            })
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(3)))?
            .label(dp.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(3)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
