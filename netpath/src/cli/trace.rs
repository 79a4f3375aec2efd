//! `netpath trace`: arms the datapath's in-kernel filter, prints matching events from
//! the ring buffer, disarms on exit. Works without the agent (pinned maps only).
use std::{
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context as _};
use aya::maps::{Array, Map, MapData, RingBuf};
use netpath_common::{maps, trace::hop_name, Reason, TraceEvent, TraceFilter};
use serde_json::json;

use super::Format;
use crate::{
    datapath::Inspector,
    paths::Paths,
    state::{EndpointRecord, Store},
};

#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// Only packets from or to this endpoint.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Only packets from or to this address.
    #[arg(long)]
    pub host: Option<Ipv4Addr>,
    /// Only packets from or to this port.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// Only this protocol.
    #[arg(long, value_enum)]
    pub proto: Option<TraceProto>,
    /// Only drops.
    #[arg(long)]
    pub drops: bool,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<u64>,
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum TraceProto {
    Tcp,
    Udp,
    Icmp,
}

fn open(paths: &Paths, name: &str) -> anyhow::Result<Map> {
    let path = paths.bpffs_dir.join(name);
    let data = MapData::from_pin(&path).map_err(|e| {
        anyhow!(
            "cannot open {} ({e}); is the agent running with --bpffs-dir {}?",
            path.display(),
            paths.bpffs_dir.display()
        )
    })?;
    Map::from_map_data(data).with_context(|| format!("map {name}"))
}

pub fn run(paths: &Paths, args: TraceArgs) -> anyhow::Result<()> {
    let endpoint = match &args.endpoint {
        None => [0; 4],
        Some(name) => Store::<EndpointRecord>::new(paths.state_file())
            .load()?
            .into_iter()
            .find(|e| &e.name == name)
            .map(|e| e.ip.octets())
            .ok_or_else(|| anyhow!("no endpoint {name}; see `netpath endpoint list`"))?,
    };
    let filter = TraceFilter {
        enabled: 1,
        drops_only: args.drops.into(),
        endpoint,
        host: args.host.map_or([0; 4], |h| h.octets()),
        port: args.port.map_or([0; 2], u16::to_be_bytes),
        proto: match args.proto {
            None => 0,
            Some(TraceProto::Tcp) => 6,
            Some(TraceProto::Udp) => 17,
            Some(TraceProto::Icmp) => 1,
        },
        _pad: 0,
    };
    let mut filters: Array<_, TraceFilter> = Array::try_from(open(paths, maps::TRACE_FILTER)?)?;
    let mut ring = RingBuf::try_from(open(paths, maps::EVENTS)?)?;
    let inspector = Inspector::new(&paths.bpffs_dir);
    let lost_before = lost(&inspector);
    let names = Store::<EndpointRecord>::new(paths.state_file()).load().unwrap_or_default();

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("cannot install the Ctrl-C handler")?;
    // Drain what an earlier trace left, so only this trace's packets are shown.
    while ring.next().is_some() {}
    filters.set(0, filter, 0).context("cannot arm the trace filter")?;
    eprintln!("tracing (Ctrl-C to stop)");

    let deadline = args.duration.map(|s| Instant::now() + Duration::from_secs(s));
    let mut seen = 0u64;
    while !stop.load(Ordering::SeqCst) && deadline.is_none_or(|d| Instant::now() < d) {
        let Some(item) = ring.next() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        if item.len() < std::mem::size_of::<TraceEvent>() {
            continue;
        }
        // SAFETY: the datapath writes whole TraceEvents; read unaligned from the ring.
        let ev: TraceEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
        drop(item);
        print_event(&ev, &names, args.output);
        seen += 1;
        if args.count.is_some_and(|c| seen >= c) {
            break;
        }
    }
    // An armed filter costs every packet a snapshot: disarm before anything else.
    filters.set(0, TraceFilter::default(), 0).context("cannot disarm the trace filter")?;
    let lost = lost(&inspector).saturating_sub(lost_before);
    eprintln!("{seen} events, {lost} lost (ring buffer full)");
    Ok(())
}

fn lost(inspector: &Inspector) -> u64 {
    inspector
        .reason_counters()
        .ok()
        .and_then(|r| r.into_iter().find(|c| c.reason == Reason::TraceEventsLost.name()))
        .map_or(0, |c| c.packets)
}

fn print_event(ev: &TraceEvent, names: &[EndpointRecord], format: Format) {
    let reason = Reason::from_code(ev.reason as u32);
    let reason_name = reason.map_or("unknown", |r| r.name());
    let proto = match ev.proto {
        6 => "tcp",
        17 => "udp",
        1 => "icmp",
        0 => "-",
        _ => "ip",
    };
    let (src, dst) = (Ipv4Addr::from(ev.src), Ipv4Addr::from(ev.dst));
    let (sport, dport) = (u16::from_be_bytes(ev.sport), u16::from_be_bytes(ev.dport));
    let name = |ip: Ipv4Addr| names.iter().find(|e| e.ip == ip).map(|e| e.name.as_str());
    if format == Format::Json {
        let line = json!({
            "ts_ns": ev.ts_ns, "hop": hop_name(ev.hop), "ifindex": ev.ifindex, "len": ev.len,
            "proto": proto, "src": src, "sport": sport, "dst": dst, "dport": dport,
            "src_endpoint": name(src), "dst_endpoint": name(dst),
            "decision": reason_name, "drop": reason.is_some_and(|r| r.is_drop()),
        });
        println!("{line}");
        return;
    }
    let secs = ev.ts_ns as f64 / 1e9;
    println!(
        "{secs:>14.6} {:<14} {:<4} {:>21} -> {:<21} {}",
        hop_name(ev.hop),
        proto,
        format!("{src}:{sport}"),
        format!("{dst}:{dport}"),
        reason_name
    );
}
