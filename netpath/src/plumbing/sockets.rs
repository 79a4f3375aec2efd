//! Which ports the node's own sockets hold, from /proc/net (the reading process's
//! namespace: the agent runs in the node's). A port netpath chooses to publish must not
//! shadow a service of the node, as docker's proxy would find by failing to bind it.
use std::collections::HashSet;

use crate::state::Proto;

/// Ports of `proto` that a socket of this namespace listens on (TCP) or is bound to
/// (UDP), IPv4 and IPv6; empty when /proc/net cannot be read.
pub fn bound_ports(proto: Proto) -> HashSet<u16> {
    let (files, listening_only) = match proto {
        Proto::Tcp => (["/proc/net/tcp", "/proc/net/tcp6"], true),
        Proto::Udp => (["/proc/net/udp", "/proc/net/udp6"], false),
    };
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| parse(&text, listening_only))
        .collect()
}

/// The local ports of a /proc/net/{tcp,udp}[6] table (`listening_only`: state 0A).
fn parse(text: &str, listening_only: bool) -> Vec<u16> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            if listening_only && state != "0A" {
                return None;
            }
            u16::from_str_radix(local.rsplit(':').next()?, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_listening_and_bound_ports() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                   0: 00000000:7531 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1684 1\n\
                   1: 0100007F:8AE6 0100007F:7531 01 00000000:00000000 00:00000000 00000000     0        0 1685 1\n\
                   2: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 0:0 00:0 0 0 0 1 1\n";
        assert_eq!(parse(tcp, true), [30001, 80]);
        assert_eq!(parse(tcp, false), [30001, 35558, 80]);
        // This process's own listener shows up.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(bound_ports(Proto::Tcp).contains(&l.local_addr().unwrap().port()));
    }
}
