//! Fresh flows through full conntrack tables, with BPF_PROG_TEST_RUN: is a new flow's
//! pair of entries whole when its reply comes, and after it is assured?
//!
//! Each flow is a masqueraded UDP exchange from container c to its own server tuple
//! (address and port), so every flow has its own pair; requests run on one CPU and
//! replies on another (the affinity of the calling thread is where a test run runs),
//! as a container's packets and the uplink's are handled on different CPUs. Between
//! a request and its reply the harness looks both entries up from user space, which
//! leaves the LRU's reference bits alone.
use std::{
    net::Ipv4Addr,
    sync::{mpsc, Mutex},
    time::Instant,
};

use netpath::datapath::{layout, program, Datapath, Inspector};
use netpath_common::{CtKey, Reason};
use netpath_tests::pkt::{self, UDP};

use super::world::{Ep, Node, CLIENT_MAC, NAT_PORT, NODE, UPLINK_MAC};

const TC_ACT_REDIRECT: u32 = 7;
const SPORT: u16 = 40000;

/// Flow `i`'s server: one of 240 addresses of the uplink's subnet, and a port.
fn server(i: u32) -> (Ipv4Addr, u16) {
    (Ipv4Addr::new(192, 168, 77, 10 + (i % 240) as u8), 1024 + ((i / 240) % 60000) as u16)
}

fn request(c: &Ep, i: u32) -> Vec<u8> {
    let (dst, dport) = server(i);
    pkt::eth(
        c.host_mac,
        c.mac,
        pkt::ETH_IPV4,
        &pkt::ipv4(c.ip, dst, UDP, 64, &[], &pkt::udp(SPORT, dport, b"q")),
    )
}

fn reply(i: u32) -> Vec<u8> {
    let (src, sport) = server(i);
    pkt::eth(
        UPLINK_MAC,
        CLIENT_MAC,
        pkt::ETH_IPV4,
        &pkt::ipv4(src, NODE, UDP, 64, &[], &pkt::udp(sport, NAT_PORT, b"r")),
    )
}

/// The flow's two keys: the container's direction, and the server's as it arrives.
fn keys(c: &Ep, i: u32) -> (CtKey, CtKey) {
    let (dst, dport) = server(i);
    let orig = CtKey {
        src: c.ip.octets(),
        dst: dst.octets(),
        sport: SPORT.to_be_bytes(),
        dport: dport.to_be_bytes(),
        proto: UDP,
        _pad: [0; 3],
    };
    let reply = CtKey {
        src: dst.octets(),
        dst: NODE.octets(),
        sport: dport.to_be_bytes(),
        dport: NAT_PORT.to_be_bytes(),
        proto: UDP,
        _pad: [0; 3],
    };
    (orig, reply)
}

pub fn on_cpu(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).expect("cpu index");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("sched_setaffinity");
}

/// Where a flow's entries are: (orig, reply), each 0 gone, 1 in CONNTRACK, 2 in
/// CONNTRACK_NEW.
fn place(dp: &mut Datapath, c: &Ep, i: u32) -> (u8, u8) {
    let (o, r) = keys(c, i);
    let at = |found: [Option<_>; 2]| match found {
        [Some(_), _] => 1,
        [None, Some(_)] => 2,
        [None, None] => 0,
    };
    (at(dp.conntrack_get(&o).unwrap()), at(dp.conntrack_get(&r).unwrap()))
}

#[derive(Default, Debug)]
pub struct Tally {
    pub flows: u64,
    /// The first packet was dropped (no pair created).
    pub refused: u64,
    /// Before the reply: both entries there, one only, none.
    pub whole: u64,
    pub orig_only: u64,
    pub reply_only: u64,
    pub gone: u64,
    pub reply_lost: u64,
    /// After the second request (assurance): both in CONNTRACK, both still in
    /// CONNTRACK_NEW, anything else.
    pub assured: u64,
    pub still_new: u64,
    pub split: u64,
    pub reply2_lost: u64,
    /// The flows whose (first) reply was not translated.
    pub lost: Vec<u32>,
}

impl Tally {
    pub fn half(&self) -> u64 {
        self.orig_only + self.reply_only
    }
}

/// A batch of packets for one program, run by the worker pinned to a CPU; the answer
/// is whether each was redirected.
struct Job {
    prog: &'static str,
    ifindex: u32,
    packets: Vec<Vec<u8>>,
    done: mpsc::Sender<Vec<bool>>,
}

pub struct Pressure<'a> {
    dp: &'a Mutex<&'a mut Datapath>,
    c: Ep,
    next: u32,
    /// One worker thread per CPU used, pinned once: moving a thread between CPUs can
    /// take seconds on a loaded machine.
    workers: [mpsc::Sender<Job>; 2],
    /// Each phase on a CPU drawn at random (seeded xorshift), as the scheduler may
    /// place the sender and the softirqs; else requests on one CPU, replies on another.
    pub shuffle: Option<u64>,
}

#[derive(Clone, Copy)]
enum Side {
    Requests,
    Replies,
}

/// Runs `body` with a [`Pressure`] on `dp`: the world installed, a worker on each of
/// the first two CPUs (the same one twice on a single CPU).
pub fn with_pressure(dp: &mut Datapath, body: impl FnOnce(&mut Pressure)) {
    let node = Node::new();
    let world = node.world();
    for (ip, info) in &world.endpoints {
        dp.register(*ip, *info).unwrap();
    }
    dp.set_node_config(world.config).unwrap();
    let online = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dp = Mutex::new(dp);
    std::thread::scope(|scope| {
        let workers = [0, if online > 1 { 1 } else { 0 }].map(|cpu| {
            let (tx, rx) = mpsc::channel::<Job>();
            let dp = &dp;
            // Spawned from the test's namespace thread: the worker is in that namespace too.
            scope.spawn(move || {
                on_cpu(cpu);
                for job in rx {
                    let mut dp = dp.lock().unwrap();
                    let out = job
                        .packets
                        .iter()
                        .map(|p| {
                            dp.test_run(job.prog, p, job.ifindex).expect("test run").action == TC_ACT_REDIRECT
                        })
                        .collect();
                    let _ = job.done.send(out);
                }
            });
            tx
        });
        let mut p = Pressure { dp: &dp, c: node.c, next: 0, workers, shuffle: None };
        body(&mut p);
    });
}

impl Pressure<'_> {
    /// Runs `packets` through `prog` on the CPU of `side`.
    fn phase(&mut self, side: Side, prog: &'static str, ifindex: u32, packets: Vec<Vec<u8>>) -> Vec<bool> {
        let w = match self.shuffle.as_mut() {
            Some(x) => {
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
                (*x & 1) as usize
            }
            None => side as usize,
        };
        let (done, result) = mpsc::channel();
        self.workers[w].send(Job { prog, ifindex, packets, done }).unwrap();
        result.recv().expect("worker gone")
    }

    fn send(&mut self, flows: &[u32]) -> Vec<bool> {
        let packets = flows.iter().map(|&i| request(&self.c, i)).collect();
        self.phase(Side::Requests, program::FROM_CONTAINER, self.c.ifindex, packets)
    }

    fn answer(&mut self, flows: &[u32]) -> Vec<bool> {
        let packets = flows.iter().map(|&i| reply(i)).collect();
        self.phase(Side::Replies, program::UPLINK_IN, 1, packets)
    }

    fn place(&self, i: u32) -> (u8, u8) {
        place(&mut self.dp.lock().unwrap(), &self.c, i)
    }

    fn take(&mut self, n: u32) -> Vec<u32> {
        let first = self.next;
        self.next += n;
        (first..first + n).collect()
    }

    /// `n` flows, `burst` at a time: requests, replies, requests again (which assure
    /// them), replies: what fills CONNTRACK.
    pub fn assured_flows(&mut self, n: u32, burst: u32, t: &mut Tally) {
        let mut done = 0;
        while done < n {
            let k = burst.min(n - done);
            let sent = self.first_exchange(k, t);
            self.send(&sent);
            for &i in &sent {
                match self.place(i) {
                    (1, 1) => t.assured += 1,
                    (2, 2) => t.still_new += 1,
                    _ => t.split += 1,
                }
            }
            t.reply2_lost += self.answer(&sent).iter().filter(|ok| !**ok).count() as u64;
            done += k;
        }
    }

    /// `n` flows that are never assured (a request and its reply, as a DNS lookup),
    /// `burst` requests before their replies: what fills CONNTRACK_NEW.
    pub fn one_shot_flows(&mut self, n: u32, burst: u32, t: &mut Tally) {
        let mut done = 0;
        while done < n {
            let k = burst.min(n - done);
            self.first_exchange(k, t);
            done += k;
        }
    }

    /// `k` new flows' requests, where their pairs are before the replies, and the
    /// replies; returns the flows whose request was not refused.
    fn first_exchange(&mut self, k: u32, t: &mut Tally) -> Vec<u32> {
        let flows = self.take(k);
        t.flows += k as u64;
        let ok = self.send(&flows);
        let sent: Vec<u32> = flows.iter().zip(ok).filter(|(_, ok)| *ok).map(|(i, _)| *i).collect();
        t.refused += k as u64 - sent.len() as u64;
        for &i in &sent {
            self.classify(i, t);
        }
        let answered = self.answer(&sent);
        self.note_lost(&sent, &answered, t);
        sent
    }

    fn note_lost(&self, sent: &[u32], answered: &[bool], t: &mut Tally) {
        for (&i, _) in sent.iter().zip(answered).filter(|(_, ok)| !**ok) {
            t.reply_lost += 1;
            t.lost.push(i);
        }
    }

    /// The originator of each of `flows` sends again; returns how many packets were
    /// translated and how many of their pairs are whole afterwards.
    pub fn send_again(&mut self, flows: &[u32]) -> (usize, usize) {
        let (mut translated, mut whole) = (0, 0);
        // One at a time: in a full share, each new pair evicts older entries.
        for &i in flows {
            translated += self.send(&[i])[0] as usize;
            whole += matches!(self.place(i), (o, r) if o == r && o != 0) as usize;
        }
        (translated, whole)
    }

    fn classify(&self, i: u32, t: &mut Tally) {
        match self.place(i) {
            (0, 0) => t.gone += 1,
            (_, 0) => t.orig_only += 1,
            (0, _) => t.reply_only += 1,
            _ => t.whole += 1,
        }
    }
}

fn env_u32(name: &str) -> Option<u32> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v}: not a number")))
}

fn sizes() -> Vec<u32> {
    let list = std::env::var("NETPATH_CT_PRESSURE_SIZES")
        .unwrap_or_else(|_| "32,64,128,256,512,1024,4096,16384,65536,262144".into());
    list.split(',').map(|s| s.trim().parse().unwrap_or_else(|_| panic!("size {s:?}"))).collect()
}

/// What the datapath promises a new flow, at the smallest table the agent takes (256
/// entries per possible CPU), through BPF_PROG_TEST_RUN with requests and replies on
/// different CPUs:
/// - a flow is assured whole, or stays whole in the table of new flows, whatever
///   CONNTRACK evicts to make room (on 6.1, up to a third of the pairs were split);
/// - a CPU's share of the table of new flows evicts nothing until it is full: a new
///   flow's pair is there when its reply comes;
/// - past that (a flood), every new flow completes, or is refused and counted
///   (`drop-ct-full`), or is evicted; what an eviction leaves of a pair is never used:
///   the flow's next packet starts it again, whole;
/// - two entries created per new flow, and created = collected + evicted + live.
#[test]
fn new_flows_are_whole_or_refused_under_pressure() {
    let size = layout::ct_min_entries();
    // Assured flows, 16 at a time, on CPUs drawn at random, through a full CONNTRACK.
    netpath_tests::with_datapath_sized(super::world::PREPARE, size, move |dp, pins| {
        let mut t = Tally::default();
        with_pressure(dp, |p| {
            p.shuffle = Some(0x9e37_79b9_7f4a_7c15);
            p.assured_flows(2 * size, 16, &mut t);
        });
        let ctx = format!("{t:?}");
        assert_eq!((t.refused, t.half(), t.gone, t.reply_lost), (0, 0, 0, 0), "before the reply: {ctx}");
        assert_eq!((t.split, t.reply2_lost), (0, 0), "after assurance: {ctx}");
        assert_eq!(t.assured + t.still_new, t.flows, "{ctx}");
        check_counters(pins, t.flows);
    });
    // Flows never assured, in the table of new flows: all on one CPU, 64 waiting at a
    // time, first until that CPU's share is full, then four times past it.
    netpath_tests::with_datapath_sized(super::world::PREPARE, size, move |dp, pins| {
        let cpus = layout::possible_cpus();
        let share = layout::new_flow_entries(size) / cpus;
        let (mut room, mut flood) = (Tally::default(), Tally::default());
        let mut again = (0, 0);
        let mut refused_again = 0;
        with_pressure(dp, |p| {
            p.one_shot_flows(share / 2, 64, &mut room);
            p.one_shot_flows(4 * share, 64, &mut flood);
            let lost = std::mem::take(&mut flood.lost);
            let before = Inspector::new(pins).reason_counters().unwrap();
            again = p.send_again(&lost);
            let after = Inspector::new(pins).reason_counters().unwrap();
            refused_again = count(&after, Reason::DropCtFull) - count(&before, Reason::DropCtFull);
            flood.lost = lost;
        });
        let ctx = format!("room: {room:?}\nflood: {flood:?}");
        // Room in the share: nothing evicted, every reply translated.
        assert_eq!(
            (room.refused, room.half(), room.gone, room.reply_lost),
            (0, 0, 0, 0),
            "while the share had room: {ctx}"
        );
        // Past it: a reply is lost only with its pair evicted (gone, or the reply entry
        // gone first), and the originator's next packet starts the flow again, whole
        // (or is refused, counted).
        assert_eq!(flood.reply_lost, flood.gone + flood.orig_only, "{ctx}");
        let (translated, whole) = again;
        assert_eq!(translated as u64 + refused_again, flood.reply_lost, "sent again: {again:?}, {ctx}");
        assert_eq!(whole, translated, "pairs after sending again: {again:?}, {ctx}");
        let counters = Inspector::new(pins).reason_counters().unwrap();
        assert_eq!(count(&counters, Reason::DropCtFull), flood.refused + refused_again, "{ctx}");
        check_counters(pins, room.flows + flood.flows - flood.refused + translated as u64);
    });
}

fn count(counters: &[netpath::datapath::ReasonCounter], r: Reason) -> u64 {
    counters.iter().find(|c| c.reason == r.name()).map_or(0, |c| c.packets)
}

/// Two entries created per new flow (`flows` of them), and every one of them is live,
/// collected or evicted.
fn check_counters(pins: &std::path::Path, flows: u64) {
    let inspector = Inspector::new(pins);
    let reasons = inspector.reason_counters().unwrap();
    let ct = inspector.conntrack_summary(&reasons).unwrap();
    assert_eq!(count(&reasons, Reason::SnatNewFlow), flows, "{ct:?}");
    assert_eq!(ct.created, 2 * flows, "{ct:?}");
    assert_eq!(ct.created, ct.collected + ct.evicted + ct.entries + ct.new_entries, "{ct:?}");
    assert!(ct.entries <= u64::from(ct.capacity) && ct.new_entries <= u64::from(ct.new_capacity), "{ct:?}");
}

/// How often a fresh pair is half gone by its reply, per table size; prints a table.
/// A measurement, not a check (it asserts nothing, and takes minutes): run it with
/// `cargo test -p netpath-tests --test fuzz measure_fresh -- --ignored --nocapture`
/// (sizes in `NETPATH_CT_PRESSURE_SIZES`, flows per row in `NETPATH_CT_PRESSURE_FLOWS`).
#[test]
#[ignore = "a measurement that asserts nothing; run it with --ignored"]
fn measure_fresh_pairs_under_pressure() {
    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    println!("kernel {}, possible CPUs {}", netpath_tests::sh(&["uname", "-r"]).trim(), cpus.trim());
    println!("| CONNTRACK | CONNTRACK_NEW | workload | flows | refused | half by reply (orig only / reply only) | gone by reply | replies lost | assured whole / left new / split | second replies lost | s |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for size in sizes() {
        netpath_tests::with_datapath_sized(super::world::PREPARE, size, move |dp, _| {
            let new = netpath::datapath::layout::new_flow_entries(size);
            with_pressure(dp, |p| {
                let measured = env_u32("NETPATH_CT_PRESSURE_FLOWS").unwrap_or(2000);
                let row = |name: &str, t: &Tally, secs: f64| {
                    println!(
                    "| {size} | {new} | {name} | {} | {} | {} ({} / {}) | {} | {} | {} / {} / {} | {} | {secs:.1} |",
                    t.flows, t.refused, t.half(), t.orig_only, t.reply_only, t.gone, t.reply_lost,
                    t.assured, t.still_new, t.split, t.reply2_lost
                )
                };
                // Assured flows through a full CONNTRACK: fill it, then measure.
                for (burst, shuffle) in [(1, None), (16, None), (16, Some(0x9e37_79b9_7f4a_7c15))] {
                    p.shuffle = shuffle;
                    let start = Instant::now();
                    // The warm-up that fills the table goes 64 at a time: handing every packet to
                    // a worker costs milliseconds on a loaded machine.
                    p.assured_flows(size / 2 + 64, 64, &mut Tally::default());
                    let mut t = Tally::default();
                    p.assured_flows(measured, burst, &mut t);
                    let cpus = if shuffle.is_some() { ", random CPUs" } else { "" };
                    row(&format!("assured, {burst} at a time{cpus}"), &t, start.elapsed().as_secs_f64());
                }
                // Flows never assured through a full CONNTRACK_NEW: fill it, then measure.
                for (burst, shuffle) in [(1, None), (16, Some(7)), (64, None)] {
                    p.shuffle = shuffle;
                    let start = Instant::now();
                    p.one_shot_flows(new / 2 + 64, 64, &mut Tally::default());
                    let mut t = Tally::default();
                    p.one_shot_flows(measured, burst, &mut t);
                    let cpus = if shuffle.is_some() { ", random CPUs" } else { "" };
                    row(
                        &format!("never assured, {burst} in flight{cpus}"),
                        &t,
                        start.elapsed().as_secs_f64(),
                    );
                }
            });
        });
    }
}
