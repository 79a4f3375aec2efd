//! `netpath trace`: has the agent arm the datapath's in-kernel filter, prints matching
//! events from the ring buffer; the agent disarms it when this process's connection
//! ends. One trace at a time per node: the agent refuses a second.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _};
use aya::maps::{Map, MapData, RingBuf};
use netpath_common::{maps, trace::hop_name, Reason, TraceEvent};
use serde_json::json;

use super::{client, Format};
use crate::{
    api::{Reply, Request, TraceSpec},
    datapath::Inspector,
    paths::Paths,
    state::EndpointRecord,
};

#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// Only packets from or to this endpoint.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Only packets from or to this address (IPv4 or IPv6).
    #[arg(long)]
    pub host: Option<std::net::IpAddr>,
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
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
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
    let spec = TraceSpec {
        endpoint: args.endpoint.clone(),
        host: args.host,
        port: args.port,
        proto: args.proto.map(|p| match p {
            TraceProto::Tcp => 6,
            TraceProto::Udp => 17,
            TraceProto::Icmp => 1,
        }),
        drops_only: args.drops,
    };
    let mut ring = RingBuf::try_from(open(paths, maps::EVENTS)?)?;
    let inspector = Inspector::new(&paths.bpffs_dir);
    let lost_before = lost(&inspector);
    let names = crate::state::read(paths).map(|(e, _)| e).unwrap_or_default();

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("cannot install the Ctrl-C handler")?;
    // Drain what an earlier trace left, so only this trace's packets are shown.
    while ring.next().is_some() {}
    // The agent arms the filter for as long as this connection is open, and disarms it
    // when it closes, however this process ends.
    let (reply, session) = client::call_keep(paths, &Request::TraceStart(spec))?;
    let Reply::TraceStarted { .. } = reply else {
        return client::unexpected(reply);
    };
    session.set_nonblocking(true).context("trace session socket")?;
    eprintln!("tracing (Ctrl-C to stop)");

    // A deadline beyond what an Instant can hold is no deadline.
    let deadline = args.duration.and_then(|s| Instant::now().checked_add(Duration::from_secs(s)));
    let mut seen = 0u64;
    let mut agent_gone = false;
    while !stop.load(Ordering::SeqCst) && deadline.is_none_or(|d| Instant::now() < d) {
        let Some(item) = ring.next() else {
            if session_closed(&session) {
                agent_gone = true;
                break;
            }
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
    // Closing the session disarms the filter (an armed one costs every packet a snapshot).
    drop(session);
    let lost = lost(&inspector).saturating_sub(lost_before);
    eprintln!("{seen} events, {lost} lost (ring buffer full)");
    if agent_gone {
        bail!("the agent stopped; the trace ended with it");
    }
    Ok(())
}

/// Has the agent closed the trace's connection (it stopped)?
fn session_closed(session: &std::os::unix::net::UnixStream) -> bool {
    use std::io::Read as _;
    let mut buf = [0u8; 1];
    match (&*session).read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
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
    let v6 = ev.family == netpath_common::trace::FAMILY_IPV6;
    let proto = match ev.proto {
        6 => "tcp",
        17 => "udp",
        1 => "icmp",
        58 if v6 => "icmp",
        0 => "-",
        _ => "ip",
    };
    let (src, dst): (IpAddr, IpAddr) = if v6 {
        (Ipv6Addr::from(ev.src6).into(), Ipv6Addr::from(ev.dst6).into())
    } else {
        (Ipv4Addr::from(ev.src).into(), Ipv4Addr::from(ev.dst).into())
    };
    let (sport, dport) = (u16::from_be_bytes(ev.sport), u16::from_be_bytes(ev.dport));
    let name = |ip: IpAddr| {
        names
            .iter()
            .find(|e| IpAddr::V4(e.ip) == ip || e.ip6.map(IpAddr::V6) == Some(ip))
            .map(|e| e.name.as_str())
    };
    let node = (ev.node != [0; 4]).then(|| Ipv4Addr::from(ev.node));
    if format == Format::Json {
        let line = json!({
            "ts_ns": ev.ts_ns, "hop": hop_name(ev.hop), "ifindex": ev.ifindex, "len": ev.len,
            "proto": proto, "src": src, "sport": sport, "dst": dst, "dport": dport,
            "src_endpoint": name(src), "dst_endpoint": name(dst),
            "decision": reason_name, "drop": reason.is_some_and(|r| r.is_drop()), "node": node,
        });
        println!("{line}");
        return;
    }
    let secs = ev.ts_ns as f64 / 1e9;
    let via = node.map(|n| format!(" node {n}")).unwrap_or_default();
    println!(
        "{secs:>14.6} {:<14} {:<4} {:>21} -> {:<21} {reason_name}{via}",
        hop_name(ev.hop),
        proto,
        std::net::SocketAddr::new(src, sport).to_string(),
        std::net::SocketAddr::new(dst, dport).to_string(),
    );
}
