//! The load generator: netperf's TCP_RR, UDP_RR, TCP_CRR and TCP_STREAM semantics, run
//! as a client thread in one namespace against a server thread in another. Written
//! here because netperf is not packaged for this Debian release and neither iperf3 nor
//! sockperf does TCP_CRR; TCP_STREAM is checked against iperf3 where it is installed.
use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use netpath_tests::Netns;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Test {
    #[serde(rename = "TCP_RR")]
    TcpRr,
    #[serde(rename = "UDP_RR")]
    UdpRr,
    #[serde(rename = "TCP_CRR")]
    TcpCrr,
    #[serde(rename = "TCP_STREAM")]
    TcpStream,
}

impl Test {
    pub fn name(self) -> &'static str {
        match self {
            Test::TcpRr => "TCP_RR",
            Test::UdpRr => "UDP_RR",
            Test::TcpCrr => "TCP_CRR",
            Test::TcpStream => "TCP_STREAM",
        }
    }
}

/// One run's outcome. Rates are per second; latencies in microseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Transactions (RR, CRR) per second, or Gbit/s for TCP_STREAM.
    pub rate: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// The tail the users of low-latency clusters feel: one transaction in a thousand.
    pub p999_us: Option<f64>,
    /// Every transaction's round trip, binned (see [`Histogram`]); empty for TCP_STREAM.
    #[serde(default, skip_serializing_if = "Histogram::is_empty")]
    pub histogram: Histogram,
    /// Operations that failed (refused, timed out); a run with errors is reported as such.
    pub errors: u64,
}

/// Where client and server run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Placement {
    /// Both threads on CPU 0: the rate is the inverse of the whole path's CPU cost.
    SameCpu,
    /// Client on CPU 0, server on CPU 1: adds the cross-CPU wake-up.
    SplitCpu,
}

fn pin(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

fn percentile(sorted: &[u32], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some(sorted[i] as f64 / 1000.0)
}

/// Runs `test` for `duration` from `client_ns` to `target`, with the server in
/// `server_ns` listening on `listen`.
pub fn run(
    test: Test,
    server_ns: &Netns,
    listen: SocketAddr,
    client_ns: &Netns,
    target: SocketAddr,
    duration: Duration,
    placement: Placement,
) -> Sample {
    let stop = Arc::new(AtomicBool::new(false));
    let server_cpu = if placement == Placement::SameCpu { 0 } else { 1 };
    let (server, listener) = start_server(test, server_ns, listen, stop.clone(), server_cpu);
    let result = client_ns
        .run(move || {
            pin(0);
            match test {
                Test::TcpRr => tcp_rr(target, duration),
                Test::UdpRr => udp_rr(target, duration),
                Test::TcpCrr => tcp_crr(target, duration),
                Test::TcpStream => tcp_stream(target, duration),
            }
        })
        .join()
        .unwrap_or_default();
    stop.store(true, Ordering::SeqCst);
    // Wake an accept() that may still be waiting: shutting a listening socket down makes
    // it return (EINVAL) even when no connection can reach it (a datapath that drops).
    if let Some(l) = listener {
        // SAFETY: the listener is open (held here); shutdown only changes its state.
        unsafe { libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR) };
    }
    let _ = server.join();
    result
}

fn start_server(
    test: Test,
    ns: &Netns,
    listen: SocketAddr,
    stop: Arc<AtomicBool>,
    cpu: usize,
) -> (std::thread::JoinHandle<()>, Option<Arc<TcpListener>>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = ns.run(move || {
        pin(cpu);
        if test == Test::UdpRr {
            let s = UdpSocket::bind(listen).expect("bind udp server");
            s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            tx.send(None).unwrap();
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::SeqCst) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            }
            return;
        }
        let l = Arc::new(TcpListener::bind(listen).expect("bind tcp server"));
        tx.send(Some(l.clone())).unwrap();
        while !stop.load(Ordering::SeqCst) {
            let Ok((mut s, _)) = l.accept() else { continue };
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let _ = s.set_nodelay(true);
            match test {
                Test::TcpStream => {
                    let mut buf = vec![0u8; 1 << 16];
                    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                }
                // RR: echo single bytes until the client closes; CRR: one exchange.
                _ => {
                    let mut b = [0u8; 1];
                    while matches!(s.read(&mut b), Ok(1)) {
                        if s.write_all(&b).is_err() || test == Test::TcpCrr {
                            break;
                        }
                    }
                }
            }
        }
    });
    let listener = rx.recv_timeout(Duration::from_secs(5)).ok().flatten();
    (handle, listener)
}

/// One-byte request/response transactions for `duration`, each timed. A failed
/// exchange is counted; `fatal` ends the run at the first (a TCP stream cannot go on).
fn transactions(duration: Duration, fatal: bool, mut exchange: impl FnMut(&mut [u8; 1]) -> bool) -> Sample {
    let mut lat = Vec::with_capacity(1 << 20);
    let mut b = [1u8; 1];
    let mut errors = 0;
    let start = Instant::now();
    while start.elapsed() < duration {
        let t = Instant::now();
        if !exchange(&mut b) {
            errors += 1;
            if fatal {
                break;
            }
            continue;
        }
        lat.push(t.elapsed().as_nanos() as u32);
    }
    summarize(lat, start.elapsed(), errors)
}

fn tcp_rr(target: SocketAddr, duration: Duration) -> Sample {
    let Ok(mut s) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
        return Sample { errors: 1, ..Default::default() };
    };
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    transactions(duration, true, |b| s.write_all(b).is_ok() && s.read_exact(b).is_ok())
}

fn udp_rr(target: SocketAddr, duration: Duration) -> Sample {
    let any: SocketAddr = if target.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse().expect("an address");
    let s = UdpSocket::bind(any).expect("udp client");
    if s.connect(target).is_err() {
        return Sample { errors: 1, ..Default::default() };
    }
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    // A lost datagram: netperf would stall; count it and go on.
    transactions(duration, false, |b| s.send(b).is_ok() && s.recv(b).is_ok())
}

fn tcp_crr(target: SocketAddr, duration: Duration) -> Sample {
    let mut lat = Vec::with_capacity(1 << 18);
    let mut errors = 0;
    let mut b = [1u8; 1];
    let start = Instant::now();
    while start.elapsed() < duration {
        let t = Instant::now();
        let ok = (|| -> std::io::Result<()> {
            let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(1))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            // Close with RST, as no TIME_WAIT: 28k ephemeral ports would run out in
            // seconds at these rates otherwise.
            socket_linger_zero(&s);
            s.write_all(&b)?;
            s.read_exact(&mut b)?;
            let _ = s.shutdown(Shutdown::Both);
            Ok(())
        })();
        match ok {
            Ok(()) => lat.push(t.elapsed().as_nanos() as u32),
            Err(_) => errors += 1,
        }
    }
    summarize(lat, start.elapsed(), errors)
}

fn socket_linger_zero(s: &TcpStream) {
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: valid socket fd, option struct of the stated size.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(s),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as u32,
        );
    }
}

fn tcp_stream(target: SocketAddr, duration: Duration) -> Sample {
    let Ok(mut s) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
        return Sample { errors: 1, ..Default::default() };
    };
    let buf = vec![0x5au8; 1 << 16];
    let mut sent = 0u64;
    let start = Instant::now();
    while start.elapsed() < duration {
        match s.write(&buf) {
            Ok(n) => sent += n as u64,
            Err(_) => return Sample { errors: 1, ..Default::default() },
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Sample { rate: sent as f64 * 8.0 / secs / 1e9, ..Default::default() }
}

fn summarize(mut lat: Vec<u32>, elapsed: Duration, errors: u64) -> Sample {
    let rate = lat.len() as f64 / elapsed.as_secs_f64();
    lat.sort_unstable();
    Sample {
        rate,
        p50_us: percentile(&lat, 0.50),
        p99_us: percentile(&lat, 0.99),
        p999_us: percentile(&lat, 0.999),
        histogram: Histogram::of(&lat),
        errors,
    }
}

/// Round trips binned: 1 us wide up to 200 us, where nearly all of them fall, then
/// 10 us wide up to 2 ms, then one bin for the rest. Only non-empty bins are kept, as
/// `[lower bound in us, count]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Histogram(pub Vec<(u32, u64)>);

impl Histogram {
    const FINE_US: u32 = 200;
    const COARSE_US: u32 = 2_000;

    fn bin(us: u32) -> u32 {
        match us {
            u if u < Self::FINE_US => u,
            u if u < Self::COARSE_US => u - u % 10,
            _ => Self::COARSE_US,
        }
    }

    /// Bins `sorted_ns` (ascending, nanoseconds).
    fn of(sorted_ns: &[u32]) -> Histogram {
        let mut bins: Vec<(u32, u64)> = Vec::new();
        for ns in sorted_ns {
            let b = Self::bin(ns / 1000);
            match bins.last_mut() {
                Some((last, n)) if *last == b => *n += 1,
                _ => bins.push((b, 1)),
            }
        }
        Histogram(bins)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bins of several runs added up.
    pub fn merged<'a>(all: impl IntoIterator<Item = &'a Histogram>) -> Histogram {
        let mut sum = std::collections::BTreeMap::new();
        for h in all {
            for (b, n) in &h.0 {
                *sum.entry(*b).or_insert(0u64) += n;
            }
        }
        Histogram(sum.into_iter().collect())
    }
}

/// Runs an established tool's server in `server_ns` and its client in `client_ns`, both
/// pinned to CPU 0 as our generator's threads are; the client's output.
fn tool_run(
    server_ns: &Netns,
    server: &[&str],
    client_ns: &Netns,
    client: &[&str],
) -> Option<std::process::Output> {
    let mut server = std::process::Command::new("ip")
        .args(["netns", "exec", &server_ns.name, "taskset", "-c", "0"])
        .args(server)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(300));
    let out = client_ns.exec(&[&["taskset", "-c", "0"], client].concat());
    let _ = server.kill();
    let _ = server.wait();
    Some(out)
}

/// TCP_STREAM measured by iperf3 (Gbit/s received), to check our generator against an
/// established tool on a path both measure.
pub fn iperf3_stream(
    server_ns: &Netns,
    listen: SocketAddr,
    client_ns: &Netns,
    target: SocketAddr,
    duration: Duration,
) -> Option<f64> {
    let (ip, port) = (listen.ip().to_string(), listen.port().to_string());
    let (tip, tport) = (target.ip().to_string(), target.port().to_string());
    let secs = duration.as_secs().max(1).to_string();
    let out = tool_run(
        server_ns,
        &["iperf3", "-s", "-1", "-B", &ip, "-p", &port],
        client_ns,
        &["iperf3", "-c", &tip, "-p", &tport, "-t", &secs, "-J"],
    )?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["end"]["sum_received"]["bits_per_second"].as_f64().map(|b| b / 1e9)
}

/// TCP_RR or UDP_RR measured by sockperf's ping-pong mode, to check our generator
/// against an established tool. sockperf reports one-way latency (half the round
/// trip): doubled here to compare with our p50/p99.
pub fn sockperf_rr(
    server_ns: &Netns,
    listen: SocketAddr,
    client_ns: &Netns,
    target: SocketAddr,
    duration: Duration,
    test: Test,
) -> Option<Sample> {
    let tcp: &[&str] = if test == Test::TcpRr { &["--tcp"] } else { &[] };
    let (ip, port) = (listen.ip().to_string(), listen.port().to_string());
    let (tip, tport) = (target.ip().to_string(), target.port().to_string());
    let secs = duration.as_secs().max(1).to_string();
    let out = tool_run(
        server_ns,
        &[&["sockperf", "server", "-i", &ip, "-p", &port], tcp].concat(),
        client_ns,
        &[&["sockperf", "ping-pong", "-i", &tip, "-p", &tport, "-t", &secs], tcp].concat(),
    )?;
    parse_sockperf(&String::from_utf8_lossy(&out.stdout))
}

/// Transactions/s from the "[Valid Duration]" line, round-trip p50/p99 from the
/// one-way percentiles.
fn parse_sockperf(text: &str) -> Option<Sample> {
    let field = |line: &str, key: &str| -> Option<f64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.trim_start().split(|c: char| !(c.is_ascii_digit() || c == '.')).next()?.parse().ok()
    };
    let valid = text.lines().find(|l| l.contains("[Valid Duration]"))?;
    let (secs, received) = (field(valid, "RunTime=")?, field(valid, "ReceivedMessages=")?);
    let pct =
        |p: &str| text.lines().find(|l| l.contains(&format!("percentile {p} ="))).and_then(|l| field(l, "="));
    (secs > 0.0).then(|| Sample {
        rate: received / secs,
        p50_us: pct("50.000").map(|v| 2.0 * v),
        p99_us: pct("99.000").map(|v| 2.0 * v),
        p999_us: pct("99.900").map(|v| 2.0 * v),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that cannot reach its server (a datapath that drops, here no route)
    /// counts an error and the run ends: the server's accept() is woken without a
    /// connection.
    #[test]
    fn a_run_whose_client_cannot_connect_ends_with_an_error() {
        let name = format!("npload{}", std::process::id());
        // The namespace goes with the test even when the run hangs: the thread that
        // holds it would then never drop it.
        struct Gone(String);
        impl Drop for Gone {
            fn drop(&mut self) {
                let _ = std::process::Command::new("ip").args(["netns", "del", &self.0]).status();
            }
        }
        let _gone = Gone(name.clone());
        let ns = Netns::new(name);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let listen: SocketAddr = "127.0.0.1:5001".parse().unwrap();
            let nowhere: SocketAddr = "192.0.2.1:5001".parse().unwrap();
            let sample =
                run(Test::TcpRr, &ns, listen, &ns, nowhere, Duration::from_millis(100), Placement::SameCpu);
            let _ = tx.send(sample);
        });
        let sample = rx.recv_timeout(Duration::from_secs(20)).expect("the run hung");
        assert_eq!((sample.errors, sample.rate), (1, 0.0));
    }

    #[test]
    fn sockperf_summary_is_read_as_round_trips() {
        let text =
            "sockperf: [Valid Duration] RunTime=1.550 sec; SentMessages=113863; ReceivedMessages=113863
sockperf: \x1b[2;35m====> avg-latency=6.794 (std-dev=1.364)\x1b[0m
sockperf: ---> percentile 99.000 =    9.248
sockperf: ---> percentile 90.000 =    7.901
sockperf: ---> percentile 50.000 =    6.409
";
        let s = parse_sockperf(text).unwrap();
        assert!((s.rate - 113863.0 / 1.55).abs() < 1.0);
        assert_eq!(s.p50_us, Some(12.818));
        assert_eq!(s.p99_us, Some(18.496));
        assert!(parse_sockperf("sockperf: connection refused").is_none());
    }

    #[test]
    fn round_trips_are_binned_finely_where_they_fall_and_coarsely_in_the_tail() {
        let ns = [900, 1_100, 1_900, 150_000, 250_000, 255_000, 5_000_000];
        let h = Histogram::of(&ns);
        assert_eq!(h.0, vec![(0, 1), (1, 2), (150, 1), (250, 2), (2_000, 1)]);
        let twice = Histogram::merged([&h, &Histogram::of(&[1_500])]);
        assert_eq!(twice.0[1], (1, 3));
        let s = summarize(ns.to_vec(), Duration::from_secs(1), 0);
        assert_eq!(s.p999_us, Some(5_000.0));
        assert_eq!(s.p50_us, Some(150.0));
    }
}
