//! Tables for people, JSON for programs, from the same data. Every table is built by
//! [`Table`]: columns line up under their headers whatever the values' widths.
use std::net::SocketAddr;

use comfy_table::{presets::NOTHING, CellAlignment};
use serde_json::json;

use super::Format;
use crate::{
    datapath::{
        entries,
        family::{Family, Ipv4, Ipv6},
        CtRow, CtSummary, EndpointCounters, ReasonCounter,
    },
    state::{format_host_port, EndpointRecord, PortRecord},
};

/// Colour (ANSI escapes) only for a terminal, and never with NO_COLOR set
/// (https://no-color.org).
pub fn colour(stream: &impl std::io::IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A borderless table: two spaces between columns, numbers right-aligned.
pub struct Table(comfy_table::Table);

impl Table {
    /// `header`: column names; a name starting with '>' is a right-aligned column.
    pub fn new(header: &[&str]) -> Self {
        let mut t = comfy_table::Table::new();
        t.load_style(NOTHING);
        t.set_header(header.iter().map(|h| h.trim_start_matches('>')));
        for (i, h) in header.iter().enumerate() {
            if let Some(col) = t.column_mut(i) {
                col.set_padding((0, 2));
                if h.starts_with('>') {
                    col.set_cell_alignment(CellAlignment::Right);
                }
            }
        }
        Table(t)
    }

    pub fn row(&mut self, cells: Vec<String>) -> &mut Self {
        self.0.add_row(cells);
        self
    }

    /// The table's lines, without trailing blanks.
    pub fn lines(&self) -> Vec<String> {
        self.0.lines().map(|l| l.trim_end().to_string()).collect()
    }

    pub fn print(&self) {
        for l in self.lines() {
            println!("{l}");
        }
    }
}

pub fn endpoints(endpoints: &[EndpointRecord], format: Format) {
    if format == Format::Json {
        println!("{}", json!({ "endpoints": endpoints }));
        return;
    }
    // An IPv6 column only on a node that has IPv6 endpoints.
    let v6 = endpoints.iter().any(|e| e.ip6.is_some());
    let mut t = if v6 {
        Table::new(&["NAME", "IP", "IPV6", "MAC", "HOST-VETH", ">MTU", "NETNS"])
    } else {
        Table::new(&["NAME", "IP", "MAC", "HOST-VETH", ">MTU", "NETNS"])
    };
    for e in endpoints {
        let mut row = vec![e.name.clone(), e.ip.to_string()];
        if v6 {
            row.push(e.ip6.map_or("-".to_string(), |ip| ip.to_string()));
        }
        // A macvlan/ipvlan endpoint has no host side: its parent stands there.
        let host = match &e.parent {
            Some(parent) => format!("({} of {parent})", e.mode),
            None => e.host_ifname.clone(),
        };
        row.extend([e.mac.clone(), host, e.mtu.to_string(), e.netns.display().to_string()]);
        t.row(row);
    }
    t.print();
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
    let mut t = Table::new(&["ENDPOINT", "IP", ">TX-PKTS", ">TX-BYTES", ">RX-PKTS", ">RX-BYTES"]);
    for c in counters {
        t.row(vec![
            name_of(c),
            c.ip.to_string(),
            c.tx_packets.to_string(),
            c.tx_bytes.to_string(),
            c.rx_packets.to_string(),
            c.rx_bytes.to_string(),
        ]);
    }
    t.print();
    println!();
    let mut t = Table::new(&["DATAPATH DECISION", ">PACKETS", ">BYTES"]);
    for r in reasons {
        t.row(vec![r.reason.to_string(), r.packets.to_string(), r.bytes.to_string()]);
    }
    t.print();
    println!();
    println!(
        "conntrack: {} of {} entries of assured flows, {} of {} of new flows; {} created, {} removed by netpath (timeout or reuse), {} evicted (table full)",
        ct.entries, ct.capacity, ct.new_entries, ct.new_capacity, ct.created, ct.collected, ct.evicted
    );
    println!(
        "conntrack, IPv6: {} of {} entries of assured flows, {} of {} of new flows (created, removed and evicted above count both families)",
        ct.entries6, ct.capacity6, ct.new_entries6, ct.new_capacity6
    );
}

pub fn ports(ports: &[PortRecord], format: Format) {
    if format == Format::Json {
        println!("{}", json!({ "ports": ports }));
        return;
    }
    let mut t = Table::new(&["PROTO", "HOST", "ENDPOINT", "CONTAINER"]);
    for p in ports {
        let host = format_host_port(p.host_ip, p.host_port);
        t.row(vec![p.proto.to_string(), host, p.endpoint.clone(), container(p)]);
    }
    t.print();
}

/// Where a published port leads on each family it is published on: `10.77.0.2:80`,
/// `[fd00:77::2]:80`, or both (`10.77.0.2:80, [fd00:77::2]:80`).
pub fn container(p: &PortRecord) -> String {
    let at = |ip: std::net::IpAddr| SocketAddr::new(ip, p.container_port).to_string();
    let v4 = entries::port::<Ipv4>(p).map(|(_, t)| at(t.ip.ip()));
    let v6 = entries::port::<Ipv6>(p).map(|(_, t)| at(t.ip.ip()));
    v4.into_iter().chain(v6).collect::<Vec<_>>().join(", ")
}

pub fn nodes(nodes: &[crate::cluster::NodeStatus], format: Format) {
    if format == Format::Json {
        println!("{}", json!({ "nodes": nodes }));
        return;
    }
    let mut t = Table::new(&["NAME", "ADDRESS", "POD CIDR", "POD CIDR6", "READY", "TUNNEL"]);
    for n in nodes {
        let ready = if n.ready { "yes" } else { "no" };
        t.row(vec![
            n.name.clone(),
            n.address.to_string(),
            n.pod_cidr.to_string(),
            n.pod_cidr6.map_or("-".to_string(), |c| c.to_string()),
            ready.into(),
            n.tunnel.to_string(),
        ]);
    }
    t.print();
}

pub fn conntrack(rows: &[CtRow], format: Format) {
    if format == Format::Json {
        println!("{}", json!({ "conntrack": rows }));
        return;
    }
    let mut t = Table::new(&["PROTO", "TUPLE", "REWRITE", "STATE", "ASSURED", ">AGE(s)", ">PACKETS"]);
    for r in rows {
        let (src, dst) = (SocketAddr::new(r.src, r.sport), SocketAddr::new(r.dst, r.dport));
        let tuple = format!("{src} -> {dst}");
        let assured = if r.assured { "yes" } else { "no" };
        t.row(vec![
            r.proto.to_string(),
            tuple,
            r.rewrite.to_string(),
            r.state.to_string(),
            assured.into(),
            r.age_secs.to_string(),
            r.packets.to_string(),
        ]);
    }
    t.print();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_under_their_headers() {
        let mut t = Table::new(&["PROTO", "HOST", ">PACKETS"]);
        t.row(vec!["tcp".into(), "*:8080".into(), "7".into()]);
        t.row(vec!["udp".into(), "192.168.77.1:53".into(), "123456".into()]);
        let lines = t.lines();
        let host_col = lines[0].find("HOST").unwrap();
        assert!(lines.iter().skip(1).all(|l| l[host_col..].starts_with(['*', '1'])), "{lines:#?}");
        // Right-aligned: the numbers end where the header ends.
        let end = lines[0].len();
        assert!(lines.iter().all(|l| l.len() == end), "{lines:#?}");
        assert!(!lines.iter().any(|l| l.contains('\x1b')), "escape codes in a table");
    }
}
