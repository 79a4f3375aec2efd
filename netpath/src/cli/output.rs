//! Tables for people, JSON for programs, from the same data.
use serde_json::json;

use super::Format;
use crate::{
    datapath::{EndpointCounters, ReasonCounter},
    state::EndpointRecord,
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

pub fn stats(
    counters: &[EndpointCounters],
    reasons: &[ReasonCounter],
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
        println!("{}", json!({ "endpoints": eps, "reasons": reasons }));
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
}
