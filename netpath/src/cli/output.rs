//! Tables for people, JSON for programs, from the same data.
use serde_json::json;

use super::Format;
use crate::{
    datapath::{CtRow, CtSummary, EndpointCounters, ReasonCounter},
    state::{EndpointRecord, PortRecord},
};

pub fn endpoints(endpoints: &[EndpointRecord], format: Format) {
    if format == Format::Json {
        println!("{}", json!({ "endpoints": endpoints }));
        return;
    }
    println!("{:<20} {:<15} {:<17} {:<13} {:>5}  NETNS", "NAME", "IP", "MAC", "HOST-VETH", "MTU");
    for e in endpoints {
        println!(
            "{:<20} {:<15} {:<17} {:<13} {:>5}  {}",
            e.name,
            e.ip,
            e.mac,
            e.host_ifname,
            e.mtu,
            e.netns.display()
        );
    }
}

/// Reconciliation's findings: one line per drift, with what was done about it.
pub fn repairs(repairs: &[crate::api::Repair], dry_run: bool, format: Format) {
    if format == Format::Json {
        println!("{}", json!({ "dry_run": dry_run, "repairs": repairs }));
        return;
    }
    if repairs.is_empty() {
        println!("no drift: the kernel matches the state");
        return;
    }
    for r in repairs {
        let outcome = match (&r.failed, dry_run) {
            (Some(e), _) => format!("FAILED: {e}"),
            (None, true) => "would do".into(),
            (None, false) => "done".into(),
        };
        println!("{}: {} -> {} [{outcome}]", r.subject, r.problem, r.fix);
    }
}

pub fn stats(
    counters: &[EndpointCounters],
    reasons: &[ReasonCounter],
    ct: &CtSummary,
    names: &[EndpointRecord],
    format: Format,
) {
    let name_of = |c: &EndpointCounters| {
        names.iter().find(|n| n.ip == c.ip).map(|n| n.name.clone()).unwrap_or_else(|| "-".into())
    };
    if format == Format::Json {
        let eps: Vec<_> = counters
            .iter()
            .map(|c| {
                json!({
                    "name": name_of(c), "ip": c.ip,
                    "tx_packets": c.tx_packets, "tx_bytes": c.tx_bytes,
                    "rx_packets": c.rx_packets, "rx_bytes": c.rx_bytes,
                })
            })
            .collect();
        println!("{}", json!({ "endpoints": eps, "reasons": reasons, "conntrack": ct }));
        return;
    }
    println!(
        "{:<20} {:<15} {:>10} {:>12} {:>10} {:>12}",
        "ENDPOINT", "IP", "TX-PKTS", "TX-BYTES", "RX-PKTS", "RX-BYTES"
    );
    for c in counters {
        println!(
            "{:<20} {:<15} {:>10} {:>12} {:>10} {:>12}",
            name_of(c),
            c.ip,
            c.tx_packets,
            c.tx_bytes,
            c.rx_packets,
            c.rx_bytes
        );
    }
    println!();
    println!("{:<24} {:>12} {:>14}", "DATAPATH DECISION", "PACKETS", "BYTES");
    for r in reasons {
        println!("{:<24} {:>12} {:>14}", r.reason, r.packets, r.bytes);
    }
    println!();
    println!(
        "conntrack: {} of {} entries of assured flows, {} of {} of new flows; {} created, {} removed by netpath (timeout or reuse), {} evicted (table full)",
        ct.entries, ct.capacity, ct.new_entries, ct.new_capacity, ct.created, ct.collected, ct.evicted
    );
}

pub fn ports(ports: &[PortRecord], format: Format) {
    if format == Format::Json {
        println!("{}", json!({ "ports": ports }));
        return;
    }
    println!("{:<6} {:<22} {:<20} {:<21}", "PROTO", "HOST", "ENDPOINT", "CONTAINER");
    for p in ports {
        let host = format!("{}:{}", p.host_ip.map_or("*".to_string(), |a| a.to_string()), p.host_port);
        let target = format!("{}:{}", p.container_ip, p.container_port);
        println!("{:<6} {:<22} {:<20} {:<21}", p.proto, host, p.endpoint, target);
    }
}

pub fn conntrack(rows: &[CtRow], format: Format) {
    if format == Format::Json {
        println!("{}", json!({ "conntrack": rows }));
        return;
    }
    println!(
        "{:<5} {:<44} {:<27} {:<11} {:<7} {:>7} {:>8}",
        "PROTO", "TUPLE", "REWRITE", "STATE", "ASSURED", "AGE(s)", "PACKETS"
    );
    for r in rows {
        let tuple = format!("{}:{} -> {}:{}", r.src, r.sport, r.dst, r.dport);
        let assured = if r.assured { "yes" } else { "no" };
        println!(
            "{:<5} {:<44} {:<27} {:<11} {:<7} {:>7} {:>8}",
            r.proto, tuple, r.rewrite, r.state, assured, r.age_secs, r.packets
        );
    }
}
