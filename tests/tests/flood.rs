//! Hostile load: a SYN flood from many spoofed sources at a published port fills at
//! most the conntrack table of new flows, which evicts least recently used entries;
//! established connections, assured in the other table, keep working (with one table
//! they did not: the flood evicted them), and the counters show what happened.
//!
//! Deterministic: every SYN is sent (a full socket buffer is waited out, not skipped);
//! the established connections live in CONNTRACK, which the flood never reaches, so
//! the only bound is time (5 s per round trip while the flood runs); the new client
//! after the flood creates its pair in its CPU's share of the table of new flows, which
//! nothing else writes to any more.
use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use netpath_tests::{echo_server, pkt, Lab, Netns, NODE_UPLINK_IP, OUTSIDE_IP};

const SYNS: u32 = 20_000;

/// The smallest conntrack table this machine takes, at least 512 entries.
fn table() -> u64 {
    u64::from(netpath::datapath::layout::ct_min_entries().max(512))
}

fn connect(ns: &Netns, to: SocketAddrV4) -> TcpStream {
    let s = ns
        .run(move || TcpStream::connect_timeout(&to.into(), Duration::from_secs(3)))
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("connect to {to}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// One round trip of `n` numbered bytes; panics naming `what` when it fails.
fn round_trip(s: &mut TcpStream, n: usize, what: &str) {
    let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    s.write_all(&data).unwrap_or_else(|e| panic!("{what}: write: {e}"));
    let mut back = vec![0u8; n];
    s.read_exact(&mut back).unwrap_or_else(|e| panic!("{what}: read: {e}"));
    assert_eq!(back, data, "{what}: bytes differ");
}

/// Sends `count` SYNs to `to` from `ns`, each from its own spoofed source address
/// (198.18.0.0/15, the benchmarking range) and port, through a raw socket.
fn syn_flood(ns: &Netns, to: SocketAddrV4, count: u32) -> std::thread::JoinHandle<u32> {
    ns.run(move || {
        // SAFETY: plain socket calls on a descriptor this closure owns.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let dst = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from(*to.ip()).to_be() },
            sin_zero: [0; 8],
        };
        let mut sent = 0;
        for i in 0..count {
            let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 1)) + i);
            let syn = pkt::tcp_ts(1024 + (i % 60000) as u16, to.port(), pkt::SYN, i.wrapping_mul(7919), None);
            let packet = pkt::ipv4(src, *to.ip(), pkt::TCP, 64, &[], &syn);
            loop {
                // SAFETY: packet and dst are valid for the lengths given.
                let n = unsafe {
                    libc::sendto(
                        fd,
                        packet.as_ptr().cast(),
                        packet.len(),
                        0,
                        (&dst as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as u32,
                    )
                };
                if n == packet.len() as isize {
                    sent += 1;
                    break;
                }
                // A full socket buffer: let the node catch up, then send this one.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // SAFETY: fd is ours and closed once.
        unsafe { libc::close(fd) };
        sent
    })
}

#[test]
fn a_syn_flood_fills_at_most_conntrack_and_spares_established_connections() {
    let table = table();
    let (lab, ips) = Lab::setup(1)
        .agent(&["--ct-max-entries", &table.to_string()])
        .endpoints(&["a"])
        .port(&["8080", "a:80"])
        .build();
    let a = ips[0];
    echo_server(&lab.containers[0], SocketAddrV4::new(a, 80));
    echo_server(&lab.outside, SocketAddrV4::new(OUTSIDE_IP, 9200));
    let published = SocketAddrV4::new(NODE_UPLINK_IP, 8080);
    let mut conns = [
        ("outside to published port", connect(&lab.outside, published)),
        ("container to outside", connect(&lab.containers[0], SocketAddrV4::new(OUTSIDE_IP, 9200))),
    ];
    // One more, idle while the flood lasts: with a single LRU table its entries are
    // certain to be evicted by 40,000 newer ones.
    let mut idle = connect(&lab.containers[0], SocketAddrV4::new(OUTSIDE_IP, 9200));
    round_trip(&mut idle, 1000, "idle connection");
    for (what, s) in conns.iter_mut() {
        round_trip(s, 1000, what);
    }
    let before_stats = lab.stats();
    let before = before_stats.0["conntrack"].clone();

    let flood = syn_flood(&lab.outside, published, SYNS);
    let done = Arc::new(AtomicBool::new(false));
    let watch = {
        let done = done.clone();
        let mut conns = conns;
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !done.load(Ordering::Relaxed) || rounds < 10 {
                for (what, s) in conns.iter_mut() {
                    round_trip(s, 100, &format!("{what}, during the flood"));
                }
                rounds += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (conns, rounds)
        })
    };
    let sent = flood.join().unwrap();
    done.store(true, Ordering::Relaxed);
    let (mut conns, rounds) = watch.join().expect("an established connection failed during the flood");
    assert_eq!(sent, SYNS);
    for (what, s) in conns.iter_mut() {
        round_trip(s, 64 * 1024, &format!("{what}, after the flood"));
    }
    round_trip(&mut idle, 64 * 1024, "connection idle during the flood, after it");
    // A new client gets in too.
    round_trip(&mut connect(&lab.outside, published), 1000, "new connection after the flood");

    let stats = lab.stats();
    let ct = stats.0["conntrack"].clone();
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    let delta = |r: &str| stats.reason(r) - before_stats.reason(r);
    assert_eq!(n(&ct, "capacity"), table);
    assert!(n(&ct, "entries") <= table, "conntrack grew past its size: {ct}");
    assert!(
        n(&ct, "new_entries") <= n(&ct, "new_capacity"),
        "the table of new flows grew past its size: {ct}"
    );
    // The flood never got past the table of new flows: half-open, never assured.
    let rows: serde_json::Value =
        serde_json::from_str(&lab.netpath_ok(&["ct", "list", "-o", "json"])).unwrap();
    let flood_assured: Vec<_> = rows["conntrack"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["assured"] == true && r["src"].as_str().unwrap().starts_with("198.1"))
        .collect();
    assert!(flood_assured.is_empty(), "flood entries among the assured flows: {flood_assured:?}");
    // Two entries for every new flow, and none for a refused one: the counters add up.
    let created = n(&ct, "created") - n(&before, "created");
    let flows = delta("dnat-new-flow") + delta("snat-new-flow");
    assert_eq!(created, 2 * flows, "entries created for {flows} new flows: {ct}");
    // The flood overflowed the table of new flows (it holds new_capacity / 2 flows; at
    // least that many of the 20,000 SYNs reach the datapath even when the node's
    // backlog drops some), and the evictions are counted.
    assert!(flows > n(&ct, "new_capacity") / 2, "the flood did not fill the table ({flows} new flows): {ct}");
    assert!(n(&ct, "evicted") > n(&before, "evicted"), "evictions not counted: {ct}");
    assert_eq!(
        n(&ct, "created"),
        n(&ct, "collected") + n(&ct, "evicted") + n(&ct, "entries") + n(&ct, "new_entries"),
        "{ct}"
    );
    eprintln!(
        "{sent} SYNs, {flows} new flows, {} refused (drop-ct-full), {rounds} round trips during the flood; conntrack after: {ct}",
        delta("drop-ct-full")
    );
}
