//! Hostile load: SYN floods of both families at once fill at most the conntrack tables
//! of new flows, which evict least recently used entries; established connections of
//! both families, assured in the other tables, keep working (with one table they did
//! not: the flood evicted them), and the counters show what happened.
//!
//! IPv4's flood comes from many spoofed sources at a published port. IPv6 has no
//! published ports and a container's spoofed source is dropped, so IPv6's comes from a
//! container's own address, every SYN a masqueraded (NAT66) flow of its own to a port
//! of the outside host that drops it: half-open for good, as IPv4's are.
//!
//! Deterministic: every SYN is sent (a full socket buffer is waited out, not skipped);
//! the established connections live in CONNTRACK and CONNTRACK6, which the floods never
//! reach, so the only bound is time (5 s per round trip while the floods run); the new
//! clients after the floods create their pairs in their CPU's share of the tables of new
//! flows, which nothing else writes to any more.
use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    os::fd::AsRawFd as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use netpath_tests::{echo_server, pkt, Lab, Netns, NODE_UPLINK_IP, OUTSIDE_IP};
use nix::{
    errno::Errno,
    sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrStorage},
};
use serde_json::Value;

/// The node's and the outside host's IPv6 addresses on the uplink.
const NODE_UPLINK_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 1);
const OUTSIDE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 2);
const POD_CIDR6: &str = "fd00:77::/64";
/// The first of the IPv4 flood's spoofed sources, 198.18.0.0/15 (the benchmarking range).
const SPOOFED: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The IPv6 flood's destination: an address of the outside host's own where nothing
/// listens (its kernel answers each SYN with a RST, counted: see [`flood6_arrived`];
/// ip6tables rules in the outside host would need modules the 5.10 guest lacks), and
/// its ports.
const FLOOD6_TARGET: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 3);
const FLOOD6_PORTS: std::ops::RangeInclusive<u16> = 20_000..=29_999;

/// SYNs per family: fewer in the emulated guests, where the same kernel paths run at a
/// fraction of the speed; either way many times what the tables of new flows hold.
fn syns() -> u32 {
    netpath_tests::rounds(20_000, 10_000) as u32
}

/// The smallest conntrack table this machine takes, at least 512 entries.
fn table() -> u64 {
    u64::from(netpath::datapath::layout::ct_min_entries().max(512))
}

/// A node whose uplink has IPv6 too, with a conntrack of `table` entries per family:
/// endpoint "a" in container 0 (its addresses returned), port 8080 published to a:80.
/// The node's own IPv6 forwarding refuses everything (only the datapath carries the
/// containers' IPv6); the outside host refuses what arrives masqueraded for
/// [`FLOOD6_TARGET`] (see [`flood6_arrived`]).
fn dual_stack_lab(table: u64) -> (Lab, Ipv4Addr, Ipv6Addr) {
    let mut lab = Lab::new(1);
    let (node6, outside6) = (format!("{NODE_UPLINK_IP6}/64"), format!("{OUTSIDE_IP6}/64"));
    let target = format!("{FLOOD6_TARGET}/64");
    let cmds: [(&Netns, &[&str]); 4] = [
        (&lab.node, &["ip", "-6", "addr", "add", &node6, "dev", "uplink0", "nodad"]),
        (&lab.outside, &["ip", "-6", "addr", "add", &outside6, "dev", "eth0", "nodad"]),
        (&lab.outside, &["ip", "-6", "addr", "add", &target, "dev", "eth0", "nodad"]),
        (&lab.node, &["ip6tables", "-P", "FORWARD", "DROP"]),
    ];
    for (ns, cmd) in cmds {
        let o = ns.exec(cmd);
        assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    lab.start_agent_with(&["--ct-max-entries", &table.to_string(), "--pod-cidr6", POD_CIDR6]);
    let a = lab.add_endpoint("a", 0);
    lab.netpath_ok(&["port", "add", "8080", "a:80"]);
    let a6 = lab.endpoint_ip6("a");
    (lab, a, a6)
}

/// The IPv6 flood's SYNs that reached the outside host masqueraded (the RSTs it
/// answered them with): each left the datapath with a new flow's pair of entries.
fn flood6_arrived(lab: &Lab) -> u64 {
    // Tcp: OutRsts in /proc/net/snmp: the outside host sends RSTs for nothing else.
    let text = String::from_utf8_lossy(&lab.outside.exec(&["cat", "/proc/net/snmp"]).stdout).into_owned();
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().expect("Tcp: names"), tcp.next().expect("Tcp: values"));
    let at = names.split_whitespace().position(|n| n == "OutRsts").expect("OutRsts");
    values.split_whitespace().nth(at).and_then(|v| v.parse().ok()).expect("OutRsts value")
}

fn connect(ns: &Netns, to: impl Into<SocketAddr>) -> TcpStream {
    let to = to.into();
    let s = ns
        .run(move || TcpStream::connect_timeout(&to, Duration::from_secs(3)))
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

/// The `i`-th SYN of a flood, from `src` to `dst`: an IP packet of their family, header
/// and all, as a raw socket sends it.
fn syn(src: SocketAddr, dst: SocketAddr, i: u32) -> Vec<u8> {
    let tcp = pkt::tcp_ts(src.port(), dst.port(), pkt::SYN, i.wrapping_mul(7919), None);
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => pkt::ipv4(s, d, pkt::TCP, 64, &[], &tcp),
        (IpAddr::V6(s), IpAddr::V6(d)) => pkt::ipv6_l4(s, d, pkt::TCP, 64, &tcp),
        _ => panic!("a SYN from {src} to {dst}"),
    }
}

/// A flood's source port for its `i`-th SYN.
fn flood_sport(i: u32) -> u16 {
    1024 + (i % 60_000) as u16
}

/// Sends `count` SYNs from `ns`, the `i`-th from and to the addresses `flow(i)` gives
/// (of one family), through a raw socket; returns how many were sent.
fn syn_flood(
    ns: &Netns,
    count: u32,
    flow: impl Fn(u32) -> (SocketAddr, SocketAddr) + Send + 'static,
) -> std::thread::JoinHandle<u32> {
    ns.run(move || {
        let family = if flow(0).1.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        let fd = socket::socket(family, SockType::Raw, SockFlag::empty(), SockProtocol::Raw)
            .unwrap_or_else(|e| panic!("raw socket ({family:?}): {e}"));
        let mut sent = 0;
        for i in 0..count {
            let (src, dst) = flow(i);
            let packet = syn(src, dst, i);
            // The packet carries its own header; the address only routes it.
            let to = SockaddrStorage::from(SocketAddr::new(dst.ip(), 0));
            loop {
                match socket::sendto(fd.as_raw_fd(), &packet, &to, MsgFlags::empty()) {
                    Ok(n) if n == packet.len() => break,
                    // A full socket buffer: let the node catch up, then send this one.
                    Ok(_) | Err(Errno::ENOBUFS | Errno::EAGAIN | Errno::EINTR) => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(e) => panic!("SYN {i} from {src} to {dst}: {e}"),
                }
            }
            sent += 1;
        }
        sent
    })
}

/// Is this `ct list` row one of a flood's entries (either direction)?
fn flood_row(r: &Value) -> bool {
    let src: IpAddr = r["src"].as_str().unwrap().parse().unwrap();
    let port = |k: &str| u16::try_from(r[k].as_u64().unwrap()).unwrap();
    match src {
        IpAddr::V4(s) => u32::from(s) >> 17 == u32::from(SPOOFED) >> 17,
        // From a to a flood port, or back from it.
        IpAddr::V6(_) => FLOOD6_PORTS.contains(&port("dport")) || FLOOD6_PORTS.contains(&port("sport")),
    }
}

#[test]
fn a_syn_flood_fills_at_most_conntrack_and_spares_established_connections() {
    let (table, syns) = (table(), syns());
    let (lab, a, a6) = dual_stack_lab(table);
    let c = &lab.containers[0];
    echo_server(c, (a, 80));
    echo_server(&lab.outside, (OUTSIDE_IP, 9200));
    echo_server(&lab.outside, (OUTSIDE_IP6, 9200));
    let published = SocketAddr::from((NODE_UPLINK_IP, 8080));
    let mut conns = [
        ("outside to published port", connect(&lab.outside, published)),
        ("container to outside", connect(c, (OUTSIDE_IP, 9200))),
        ("container to outside over IPv6 (NAT66)", connect(c, (OUTSIDE_IP6, 9200))),
    ];
    // One more of each family, idle while the floods last: with a single LRU table their
    // entries are certain to be evicted by the tens of thousands of newer ones.
    let mut idle = [
        ("idle connection", connect(c, (OUTSIDE_IP, 9200))),
        ("idle IPv6 connection", connect(c, (OUTSIDE_IP6, 9200))),
    ];
    for (what, s) in conns.iter_mut().chain(idle.iter_mut()) {
        round_trip(s, 1000, what);
    }
    let before_stats = lab.stats();
    let before = before_stats.0["conntrack"].clone();
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    // The established connections are assured flows: three of IPv4, two of IPv6 (NAT66).
    assert_eq!((n(&before, "entries"), n(&before, "entries6")), (6, 4), "{before}");

    let flood4 = syn_flood(&lab.outside, syns, move |i| {
        ((Ipv4Addr::from(u32::from(SPOOFED) + i), flood_sport(i)).into(), published)
    });
    let flood6 = syn_flood(c, syns, move |i| {
        let span = u32::from(FLOOD6_PORTS.end() - FLOOD6_PORTS.start()) + 1;
        let dport = FLOOD6_PORTS.start() + (i % span) as u16;
        ((a6, flood_sport(i)).into(), (FLOOD6_TARGET, dport).into())
    });
    let done = Arc::new(AtomicBool::new(false));
    let watch = {
        let done = done.clone();
        let mut conns = conns;
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !done.load(Ordering::Relaxed) || rounds < 10 {
                for (what, s) in conns.iter_mut() {
                    round_trip(s, 100, &format!("{what}, during the floods"));
                }
                rounds += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (conns, rounds)
        })
    };
    let sent = (flood4.join().unwrap(), flood6.join().unwrap());
    done.store(true, Ordering::Relaxed);
    let (mut conns, rounds) = watch.join().expect("an established connection failed during the floods");
    assert_eq!(sent, (syns, syns));
    for (what, s) in conns.iter_mut() {
        round_trip(s, 64 * 1024, &format!("{what}, after the floods"));
    }
    for (what, s) in idle.iter_mut() {
        round_trip(s, 64 * 1024, &format!("{what} during the floods, after them"));
    }
    // New clients get in too.
    round_trip(&mut connect(&lab.outside, published), 1000, "new connection after the floods");
    round_trip(&mut connect(c, (OUTSIDE_IP6, 9200)), 1000, "new IPv6 connection after the floods");

    let stats = lab.stats();
    let ct = stats.0["conntrack"].clone();
    let delta = |r: &str| stats.reason(r) - before_stats.reason(r);
    for six in ["", "6"] {
        let [entries, capacity, new_entries, new_capacity] =
            ["entries", "capacity", "new_entries", "new_capacity"].map(|k| n(&ct, &format!("{k}{six}")));
        assert_eq!(capacity, table, "capacity{six}: {ct}");
        assert!(entries <= capacity, "conntrack{six} grew past its size: {ct}");
        assert!(new_entries <= new_capacity, "the table of new flows{six} grew past its size: {ct}");
    }
    // The floods never got past the tables of new flows: half-open, never assured.
    let rows: Value = serde_json::from_str(&lab.netpath_ok(&["ct", "list", "-o", "json"])).unwrap();
    let flood: Vec<&Value> = rows["conntrack"].as_array().unwrap().iter().filter(|r| flood_row(r)).collect();
    let flood_assured: Vec<_> = flood.iter().filter(|r| r["assured"] == true).collect();
    assert!(flood_assured.is_empty(), "flood entries among the assured flows: {flood_assured:?}");
    // They are among the new flows instead, of both families: the check above saw them.
    let of_family =
        |v6: bool| flood.iter().filter(|r| r["src"].as_str().unwrap().contains(':') == v6).count();
    let (flood4_rows, flood6_rows) = (of_family(false), of_family(true));
    assert!(
        flood4_rows > 0 && flood6_rows > 0,
        "flood entries in ct list: {flood4_rows} IPv4, {flood6_rows} IPv6"
    );
    // Two entries for every new flow, and none for a refused one: the counters add up.
    // Since `before`, the published port's new flows are IPv4's flood and new client;
    // the masqueraded ones IPv6's, and any SYN-ACK the container sent again for a flood
    // flow already evicted (masqueraded as a new flow of its own).
    let created = n(&ct, "created") - n(&before, "created");
    let (flows4, masqueraded) = (delta("dnat-new-flow"), delta("snat-new-flow"));
    assert_eq!(
        created,
        2 * (flows4 + masqueraded),
        "entries created for {flows4} + {masqueraded} new flows: {ct}"
    );
    let flows6 = flood6_arrived(&lab);
    assert!(flows6 <= masqueraded, "{flows6} IPv6 SYNs arrived masqueraded, {masqueraded} new flows: {ct}");
    // Each flood overflowed its family's table of new flows (which holds new_capacity /
    // 2 flows; at least that many SYNs get through even when a backlog drops some), and
    // the evictions are counted.
    for (flows, six) in [(flows4, ""), (flows6, "6")] {
        let holds = n(&ct, &format!("new_capacity{six}")) / 2;
        assert!(
            flows > holds,
            "the flood did not fill the table of new flows{six} ({flows} new flows): {ct}"
        );
    }
    assert!(n(&ct, "evicted") > n(&before, "evicted"), "evictions not counted: {ct}");
    // IPv6's flood evicted too: it created more entries than its tables hold now plus
    // all that netpath removed (both families' removals counted against it).
    let collected = n(&ct, "collected") - n(&before, "collected");
    let live6 = n(&ct, "entries6") + n(&ct, "new_entries6");
    assert!(2 * flows6 > live6 + collected, "the IPv6 flood evicted nothing: {ct}");
    assert_eq!(
        n(&ct, "created"),
        n(&ct, "collected")
            + n(&ct, "evicted")
            + ["entries", "new_entries", "entries6", "new_entries6"].iter().map(|k| n(&ct, k)).sum::<u64>(),
        "{ct}"
    );
    eprintln!(
        "{syns} SYNs of each family; {flows4} new flows at the published port, {masqueraded} masqueraded ({flows6} IPv6 SYNs arrived), {} refused (drop-ct-full), {rounds} round trips during the floods; conntrack after: {ct}",
        delta("drop-ct-full")
    );
}
