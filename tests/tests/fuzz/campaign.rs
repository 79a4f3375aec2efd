//! One fuzz campaign: the world installed in a fresh datapath and in the model, then
//! packets through the programs, each outcome compared.
use std::{collections::BTreeMap, path::Path, time::Instant};

use netpath::datapath::{
    family::{Entries, Family, Ipv4, Ipv6},
    program, Datapath, Inspector, PacketRun,
};
use netpath_common::{
    conntrack::{NatEntry, Tuple},
    ClosedFlow, Reason, ENDPOINT_F_PUBLISHED, ENDPOINT_F_SUBIF, SUBIF_IFINDEX_BASE,
};
use netpath_tests::model::{self, Addr, HeaderChecks, Model, Verdict, XDP_MARK, XDP_PASS};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};

use super::{
    mutate,
    world::{self, Hook, Mode4, Mode6, Node, Seed, MODES4, MODES6},
};

/// Inputs the fuzzer once found mismatching: (hook, packet in hex). Each is replayed by
/// `fuzz_regressions_stay_fixed` in a fresh datapath, in order.
pub const REGRESSIONS: &[(&str, &str)] = &[
    // A container's ICMP echo reply to the outside is masqueraded as a new flow; its
    // identifier was rewritten with the checksum updated from the tuple's source "port"
    // (0 for a reply) instead of the identifier it held: it left with a bad checksum.
    ("hc", "0e00000000040a580a4d000408004500001e12344000400114090a4d0004c0a84d0200028f8e000700016869"),
    // A container's SYN to NODE:7070, published to a container that is gone: the
    // hairpin created a conntrack pair, then the FIB dropped the packet. uplink_in
    // refuses such mappings without state; from_container now does the same.
    (
        "hc",
        "0e00000000040a580a4d000408004500002812344000400610a20a4d0004c0a84d010b041b9e00004a5e000000005002ffff623e0000",
    ),
    // ICMPv6 to the node's address too short to be anything (4 bytes): once parse6
    // refused it, uplink_in6 hands it to icmp6_to_container, which drops it as
    // malformed (as uplink_in does a truncated ICMP message); the model passed it to
    // the stack, as the node's own.
    (
        "uplink",
        "0e00000000fe0e00000000cc86dd6000000000203a4020010db80a4d000500000000000000cc20010db8007700000000000000000001810054e8ee",
    ),
    // A NAT66 flow, then a packet too big about it from a router on the way (the model
    // did not translate ICMPv6 errors): into the container, the quote speaking of the
    // container's address and port.
    (
        "hc",
        "0e00000000040a580a4d000486dd6000000000091140fd00007700000000000000000000000420010db80000000000000000000000cc045700350009574f78",
    ),
    (
        "uplink",
        "0e00000000fe0e00000000cc86dd6000000000393a4020010db80077000000000000000000fe20010db8007700000000000000000001020029ff00000500600000000009113f20010db800770000000000000000000120010db80000000000000000000000ccee48003500093ca878",
    ),
];

/// How the campaign labels ARP replies and announcements in the name of an address no
/// sub-interface endpoint has (see `Campaign::arp_in_anothers_name`).
const ANOTHERS_ARP: &str = "arp reply or announcement in another's name";

/// Conntrack is emptied (in the datapath and the model alike) past this many entries,
/// far below the table's 1024: an LRU table evicts before it is full, which the model
/// does not predict.
const CT_FLUSH_AT: usize = 128;
const CHECK_EVERY: u64 = 256;
/// Checkpoints per phase of the node's IPv6 ([`MODES6`]) and IPv4 ([`MODES4`]).
const CHECKS_PER_MODE6: u64 = 8;

fn hex(p: &[u8]) -> String {
    p.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

/// The fields of a conntrack entry the model predicts (not the timestamps).
fn ct_view<A: Copy>(e: &NatEntry<A>) -> (NatEntry<A>, u64, u64) {
    let mut v = *e;
    (v.created_ns, v.last_seen_ns) = (0, 0);
    (v, e.packets, e.bytes)
}

/// A family's tables of assured flows, of new flows, of closed masqueraded flows.
fn table_names<A: Family>() -> [&'static str; 3] {
    [A::ASSURED, A::NEW, A::CLOSED]
}

/// Is the frame IPv6 (by its ethertype)? The campaign tells each family's outcomes
/// apart.
fn is_ipv6(packet: &[u8]) -> bool {
    packet.get(12..14) == Some(&[0x86, 0xdd][..])
}

/// Is the frame an ICMP error (unreachable, time exceeded) in IPv4 without options, with
/// room for a quoted header and 8 bytes? Counted apart, as IPv6's are.
fn is_icmp4_error(packet: &[u8]) -> bool {
    packet.get(12..14) == Some(&[0x08, 0x00][..])
        && packet.len() >= 14 + 20 + 8 + 20 + 8
        && packet[14] == 0x45
        && packet[14 + 9] == 1
        && [3, 11].contains(&packet[34])
}

/// Is the frame an ICMPv6 error (unreachable, packet too big, time exceeded, parameter
/// problem) right after the fixed header, with room for a quoted fixed header and 8
/// bytes? What becomes of those is counted apart from IPv6's other outcomes.
fn is_icmp6_error(packet: &[u8]) -> bool {
    is_ipv6(packet)
        && packet.len() >= 14 + 40 + 8 + 40 + 8
        && packet[14 + 6] == 58
        && (1..=4).contains(&packet[54])
}

/// What this kernel's test runs refuse. Where a probe is not refused, it ran a program,
/// so the model runs it too (its counters must stay in step).
fn probe_header_checks(dp: &mut Datapath, model: &mut Model) -> HeaderChecks {
    let none = HeaderChecks { tc_eth: false, ipv4: false, ipv6: false, xdp_eth: false };
    let mut tc_refuses = |frame: &[u8]| {
        let refused = dp.test_run(program::UPLINK_IN, frame, 1).is_err();
        if !refused {
            model.header_checks = none;
            model.uplink_in(frame);
        }
        refused
    };
    let ethertype = |et: [u8; 2]| [&[0u8; 12][..], &et, &[0; 4]].concat();
    let mut checks = HeaderChecks {
        tc_eth: tc_refuses(&[0; 10]),
        ipv4: tc_refuses(&ethertype([0x08, 0x00])),
        ipv6: tc_refuses(&ethertype([0x86, 0xdd])),
        xdp_eth: true,
    };
    checks.xdp_eth = dp.test_run_xdp(&[0; 10]).is_err();
    println!("fuzz: what this kernel's test runs refuse: {checks:?}");
    checks
}

pub struct Campaign<'a> {
    dp: &'a mut Datapath,
    maps: Inspector,
    node: Node,
    model: Model,
    seeds: Vec<Seed>,
    rng: StdRng,
    seed: u64,
    /// Where this campaign is, for the mismatch report.
    at: u64,
    seed_name: &'static str,
    runs: u64,
    /// Runs per program and outcome, to show what the campaign reached.
    seen: BTreeMap<(&'static str, String), u64>,
    xdp_meta: bool,
    /// The uplink's packets run in CHECKSUM_COMPLETE (Linux 6.11's test-run flag), as a
    /// NIC that sums what it receives hands them over: every rewrite must keep skb->csum.
    csum_complete: bool,
    elapsed: std::time::Duration,
    /// Which phase of [`MODES6`] the node's IPv6 is in.
    mode6: usize,
    /// Which phase of [`MODES4`] the node's IPv4 is in.
    mode4: usize,
}

impl<'a> Campaign<'a> {
    pub fn new(dp: &'a mut Datapath, pins: &Path, seed: u64) -> Self {
        let node = Node::new();
        let world = node.world();
        for (ip, info) in &world.endpoints {
            dp.register(*ip, *info).unwrap();
        }
        for (ip6, owner) in &world.endpoints6 {
            let info = world.endpoints.iter().find(|(ip, _)| ip == owner).expect("an owner").1;
            dp.register6(*ip6, *owner, info).unwrap();
        }
        for (k, t) in &world.ports {
            dp.set_port(*k, *t).unwrap();
        }
        dp.set_node_config(world.config).unwrap();
        world::forward_ipv6();
        dp.load_ipv6_programs().unwrap();
        let world6 = node.world6(MODES6[0]);
        dp.set_node_config6(world6.config).unwrap();
        for (k, t) in &world6.ports {
            dp.set_port(*k, *t).unwrap();
        }
        let mut model = Model::new(world).with_ipv6(world6);
        model.header_checks = probe_header_checks(dp, &mut model);
        let csum_complete = netpath_tests::kernel_at_least(6, 11);
        println!("fuzz: the uplink's packets in CHECKSUM_COMPLETE, skb->csum checked: {csum_complete}");
        Self {
            dp,
            maps: Inspector::new(pins),
            seeds: node.seeds(),
            model,
            node,
            rng: StdRng::seed_from_u64(seed),
            seed,
            at: 0,
            seed_name: "-",
            runs: 0,
            seen: BTreeMap::new(),
            // Kernels before 5.13 hand back an XDP test run's packet without its metadata.
            xdp_meta: netpath_tests::kernel_at_least(5, 13),
            csum_complete,
            elapsed: Default::default(),
            mode6: 0,
            mode4: 0,
        }
    }

    /// The node's IPv6 and IPv4 settings move on to their next phases, in the datapath
    /// and the model alike (conntrack stays as it is).
    fn next_mode(&mut self) {
        self.mode6 = (self.mode6 + 1) % MODES6.len();
        let config = self.node.config6(MODES6[self.mode6]);
        self.dp.set_node_config6(config).unwrap();
        self.model.set_config6(config);
        self.mode4 = (self.mode4 + 1) % MODES4.len();
        let config = self.node.config(MODES4[self.mode4]);
        self.dp.set_node_config(config).unwrap();
        self.model.set_config(config);
    }

    fn mode6(&self) -> Mode6 {
        MODES6[self.mode6]
    }

    fn mode4(&self) -> Mode4 {
        MODES4[self.mode4]
    }

    pub fn run(&mut self, packets: u64) {
        let start = Instant::now();
        for i in 0..packets {
            self.at = i;
            let seed = self.rng.gen_range(0..self.seeds.len());
            let hook = self.seeds[seed].hook;
            self.seed_name = self.seeds[seed].name;
            let packet = match self.rng.gen_range(0..16) {
                0 => self.seeds[seed].packet.clone(),
                1 => mutate::garbage(&mut self.rng),
                _ => mutate::mutate(&mut self.rng, &self.node, &self.seeds[seed].packet),
            };
            // Now and then from another container's veth than the seed's.
            let any_veth = self.node.senders().choose(&mut self.rng).unwrap().ifindex;
            let veth = match hook {
                Hook::FromContainer(i) if self.rng.gen_ratio(9, 10) => i,
                _ => any_veth,
            };
            // The seed's program always; the others now and then (a packet may arrive
            // anywhere).
            let others = self.rng.gen_ratio(1, 4);
            if hook == Hook::Uplink || others {
                // XDP is optional (--xdp); with it, it sees a packet before tc does.
                if self.rng.gen_bool(0.5) {
                    self.xdp(&packet);
                }
                self.tc(program::UPLINK_IN, &packet, veth);
            }
            if matches!(hook, Hook::FromContainer(_)) || others {
                self.tc(program::FROM_CONTAINER, &packet, veth);
            }
            if matches!(hook, Hook::ToSubif(_)) || others {
                let at = match hook {
                    Hook::ToSubif(i) => i,
                    _ => veth,
                };
                self.tc(program::TO_SUBIF, &packet, at);
            }
            if i % CHECK_EVERY == CHECK_EVERY - 1 {
                self.checkpoint();
                if (i + 1) % (CHECK_EVERY * CHECKS_PER_MODE6) == 0 {
                    self.next_mode();
                }
            }
        }
        self.checkpoint();
        self.elapsed = start.elapsed();
    }

    /// Replays one regression input through its program(s).
    pub fn replay(&mut self, hook: &str, packet_hex: &str) {
        let packet = unhex(packet_hex);
        self.seed_name = "a regression case (replayed, not generated)";
        match hook {
            "uplink" => {
                self.xdp(&packet);
                self.tc(program::UPLINK_IN, &packet, 1);
            }
            veth => {
                let ifindex = super::world::ifindex(veth);
                self.tc(program::FROM_CONTAINER, &packet, ifindex);
            }
        }
    }

    fn fail(&self, what: &str, prog: &str, ifindex: u32, packet: &[u8], detail: String) -> ! {
        panic!(
            "fuzz mismatch ({what}) in {prog} on ifindex {ifindex}\n  seed: {:#x}, packet #{} from seed packet \
             \"{}\", IPv6 {:?}, IPv4 {:?} (reproduce: NETPATH_FUZZ_SEED={:#x} NETPATH_FUZZ_PACKETS={})\n  input:    \
             {}\n{detail}",
            self.seed,
            self.at,
            self.seed_name,
            self.mode6(),
            self.mode4(),
            self.seed,
            self.at + 1,
            hex(packet)
        )
    }

    /// Is the frame IPv6 from a container with published ports (its global address) to
    /// a local container's? From its veth, container_path6 hands such a packet to
    /// container_nat6 (a hairpinned connection's reply, or delivered as it is): its
    /// outcomes are counted apart.
    fn published_to_peer(&self, packet: &[u8]) -> bool {
        let (Some(src), Some(dst)) = (packet.get(22..38), packet.get(38..54)) else { return false };
        let eps = self.node.endpoints();
        eps.iter().any(|e| e.flags & ENDPOINT_F_PUBLISHED != 0 && e.ip6().octets() == src)
            && eps.iter().any(|e| e.ip6().octets() == dst)
    }

    /// Is the frame an ARP reply or announcement claiming an address, not 0.0.0.0, that
    /// is no sub-interface endpoint's? From a veth it is the stack's; from a
    /// sub-interface, where it would reach the LAN, a spoofed source (and only the
    /// check of the sub-interface's index drops it).
    fn arp_in_anothers_name(&self, packet: &[u8]) -> bool {
        let (Some(oper), Some(spa), Some(tpa)) = (packet.get(20..22), packet.get(28..32), packet.get(38..42))
        else {
            return false;
        };
        let subif_endpoints = self.node.endpoints().into_iter().filter(|e| e.flags & ENDPOINT_F_SUBIF != 0);
        let claims_subif = subif_endpoints.map(|e| e.ip.octets()).any(|ip| ip == spa);
        (oper != [0, 1] || spa == tpa) && spa != [0; 4] && !claims_subif
    }

    fn tc(&mut self, prog: &'static str, packet: &[u8], ifindex: u32) {
        let expected = match prog {
            program::FROM_CONTAINER => self.model.from_container(packet, ifindex),
            program::TO_SUBIF => self.model.to_subif(packet, ifindex),
            _ => self.model.uplink_in(packet),
        };
        let got = if self.csum_complete && prog == program::UPLINK_IN {
            match self.dp.test_run_checksum_complete(prog, packet, ifindex) {
                Err(e) if e.raw_os_error() == Some(libc::EBADMSG) => {
                    let detail =
                        format!("  model: {:?} ({:?})", expected.verdict, expected.reason.map(Reason::name));
                    self.fail("skb->csum left stale in CHECKSUM_COMPLETE", prog, ifindex, packet, detail)
                }
                got => got.map_err(|e| e.to_string()),
            }
        } else {
            self.dp.test_run(prog, packet, ifindex).map_err(|e| e.to_string())
        };
        self.runs += 1;
        // A published container's packets to a peer and ICMP errors of either family
        // apart; ARP and what is neither IP nor ARP too (runts count as IPv4).
        let kind = if is_ipv6(packet) && self.published_to_peer(packet) {
            "ipv6 published to a peer"
        } else if is_icmp6_error(packet) {
            "ipv6 icmp error"
        } else if is_ipv6(packet) {
            "ipv6"
        } else if is_icmp4_error(packet) {
            "ipv4 icmp error"
        } else {
            match packet.get(12..14) {
                Some([0x08, 0x06]) if self.arp_in_anothers_name(packet) => ANOTHERS_ARP,
                Some([0x08, 0x06]) => "arp",
                Some([0x08, 0x00]) | None => "ipv4",
                Some(_) => "other",
            }
        };
        let mode = if kind.starts_with("ipv6") {
            format!("{:?}", self.mode6())
        } else {
            format!("{:?}", self.mode4())
        };
        // from_container at a macvlan/ipvlan interface (known by its index, as the
        // program knows it): what may leave onto the LAN differs there.
        let subif = prog == program::FROM_CONTAINER && ifindex & SUBIF_IFINDEX_BASE != 0;
        let at = if subif { " at a sub-interface" } else { "" };
        let label = match expected.reason {
            Some(r) => format!("{:?} {}{at} ({kind}, {mode})", expected.verdict.action(), r.name()),
            None => "refused by the test run".into(),
        };
        *self.seen.entry((prog, label)).or_default() += 1;
        let show = |got: &PacketRun| {
            format!(
                "  model:    {:?} ({:?}) {}\n  program:  action {} {}",
                expected.verdict,
                expected.reason.map(Reason::name),
                hex(&expected.packet),
                got.action,
                hex(&got.packet)
            )
        };
        let got = match (expected.verdict, got) {
            (Verdict::Refused, Err(_)) => return,
            (Verdict::Refused, Ok(got)) => {
                self.fail("the test run took it", prog, ifindex, packet, show(&got))
            }
            (_, Err(e)) => self.fail("the test run refused it", prog, ifindex, packet, format!("  {e}")),
            (_, Ok(got)) => got,
        };
        if ![model::TC_ACT_OK, model::TC_ACT_SHOT, model::TC_ACT_REDIRECT].contains(&got.action) {
            self.fail("unexpected action code", prog, ifindex, packet, show(&got));
        }
        if Some(got.action) != expected.verdict.action() {
            self.fail("verdict", prog, ifindex, packet, show(&got));
        }
        if got.packet.len() != packet.len() {
            self.fail("length changed", prog, ifindex, packet, show(&got));
        }
        // A dropped packet's bytes go nowhere.
        if expected.verdict != Verdict::Drop && got.packet != expected.packet {
            self.fail("output bytes", prog, ifindex, packet, show(&got));
        }
    }

    fn xdp(&mut self, packet: &[u8]) {
        let expected = self.model.uplink_xdp(packet);
        let got = self.dp.test_run_xdp(packet);
        self.runs += 1;
        let refused = model::refused_by_xdp_test_run(packet, self.model.header_checks);
        let label = if refused {
            "refused by the test run"
        } else if expected.translated {
            "translated"
        } else {
            "untouched"
        };
        *self.seen.entry(("uplink_xdp", label.into())).or_default() += 1;
        let got = match (refused, got) {
            (true, Err(_)) => return,
            (true, Ok(_)) => self.fail("the test run took it", "uplink_xdp", 0, packet, String::new()),
            (false, Err(e)) => {
                self.fail("the test run refused it", "uplink_xdp", 0, packet, format!("  {e}"))
            }
            (false, Ok(got)) => got,
        };
        let want: Vec<u8> = match (expected.translated, self.xdp_meta) {
            (true, true) => XDP_MARK.iter().chain(&expected.packet).copied().collect(),
            _ => expected.packet.clone(),
        };
        if got.action != XDP_PASS || got.packet != want {
            let detail = format!(
                "  model:    translated {} {}\n  program:  action {} {}",
                expected.translated,
                hex(&want),
                got.action,
                hex(&got.packet)
            );
            self.fail("xdp", "uplink_xdp", 0, packet, detail);
        }
    }

    /// Compares everything the programs leave behind with the model: conntrack, closed
    /// flows, counters; checks the agent's maps are untouched and conntrack bounded.
    pub fn checkpoint(&mut self) {
        let world = self.model.world().clone();
        // The counter slots are the agent's choice, not the model's.
        let mut eps: Vec<_> =
            self.maps.endpoints().unwrap().into_iter().map(|(ip, e)| (ip, e.without_slot())).collect();
        eps.sort_by_key(|(ip, _)| *ip);
        let mut want_eps = world.endpoints.clone();
        want_eps.sort_by_key(|(ip, _)| *ip);
        assert_eq!(eps, want_eps, "the datapath changed ENDPOINTS");
        let mut eps6: Vec<_> =
            self.maps.endpoints6().unwrap().into_iter().map(|(ip, e)| (ip, e.without_slot())).collect();
        eps6.sort_by_key(|(ip, _)| *ip);
        let mut want_eps6: Vec<_> = world
            .endpoints6
            .iter()
            .map(|(ip6, owner)| (*ip6, world.endpoints.iter().find(|(ip, _)| ip == owner).unwrap().1))
            .collect();
        want_eps6.sort_by_key(|(ip, _)| *ip);
        assert_eq!(eps6, want_eps6, "the datapath changed ENDPOINTS6");
        let mut ports = self.maps.port_maps().unwrap();
        let mut want_ports = world.ports.clone();
        ports.sort_by_key(|(k, _)| (k.host_ip, k.port, k.proto));
        want_ports.sort_by_key(|(k, _)| (k.host_ip, k.port, k.proto));
        assert_eq!(ports, want_ports, "the datapath changed PORT_MAPS");
        let mut ports6 = self.maps.port_maps_of::<Ipv6>().unwrap();
        let mut want_ports6 = self.model.world6().ports.clone();
        ports6.sort_by_key(|(k, _)| (k.host_ip.0, k.port, k.proto));
        want_ports6.sort_by_key(|(k, _)| (k.host_ip.0, k.port, k.proto));
        assert_eq!(ports6, want_ports6, "the datapath changed PORT_MAPS6");

        let tables = self.dp.conntrack_tables::<Ipv4>().unwrap();
        let closed = self.maps.snat_closed::<Ipv4>().unwrap();
        self.compare_conntrack(table_names::<Ipv4>(), tables, closed);
        let tables = self.dp.conntrack_tables::<Ipv6>().unwrap();
        let closed = self.maps.snat_closed::<Ipv6>().unwrap();
        self.compare_conntrack(table_names::<Ipv6>(), tables, closed);

        for r in self.maps.reason_counters().unwrap() {
            let reason = Reason::ALL.iter().find(|x| x.name() == r.reason).unwrap();
            let (packets, bytes) = self.model.reasons[*reason as usize];
            assert_eq!(
                (r.packets, r.bytes),
                (packets, bytes),
                "counter {} (packets, bytes) differs from the model by packet #{} (seed {:#x})",
                r.reason,
                self.at,
                self.seed
            );
        }
        for c in self.maps.endpoint_counters().unwrap() {
            let m = self.model.endpoint_stats[&c.ip.octets()];
            assert_eq!(
                (c.tx_packets, c.tx_bytes, c.rx_packets, c.rx_bytes),
                (m.tx_packets, m.tx_bytes, m.rx_packets, m.rx_bytes),
                "endpoint counters of {} differ from the model by packet #{}",
                c.ip,
                self.at
            );
        }
        if self.model.ct.len() + self.model.ct6.len() > CT_FLUSH_AT {
            for (k, _) in self.dp.conntrack_entries::<Ipv4>().unwrap() {
                self.dp.remove_conntrack(&k).unwrap();
            }
            for (k, _) in self.dp.conntrack_entries::<Ipv6>().unwrap() {
                self.dp.remove_conntrack(&k).unwrap();
            }
            self.model.forget_conntrack();
        }
    }

    /// One family's conntrack tables (`names`: assured, new, closed) and closed-flow
    /// records, as read from the datapath, against the model's.
    fn compare_conntrack<A: Addr>(
        &self,
        names: [&str; 3],
        [assured, new]: [Entries<A>; 2],
        closed: Vec<(Tuple<A>, ClosedFlow)>,
    ) {
        let capacity = self.maps.describe(names[0]).unwrap().max_entries;
        assert!(
            assured.len() <= capacity as usize,
            "{} grew past its {capacity} entries: {}",
            names[0],
            assured.len()
        );
        let model = A::ct(&self.model);
        let ct: BTreeMap<String, _> = assured
            .iter()
            .map(|e| (e, true))
            .chain(new.iter().map(|e| (e, false)))
            .map(|((k, e), assured)| (format!("{k:?}"), (ct_view(e), assured)))
            .collect();
        let want: BTreeMap<String, _> = model
            .entries
            .iter()
            .map(|(k, e)| (format!("{k:?}"), (ct_view(e), model.assured.contains(k))))
            .collect();
        if ct != want {
            type Table<A> = BTreeMap<String, ((NatEntry<A>, u64, u64), bool)>;
            let only = |a: &Table<A>, b: &Table<A>| {
                a.iter()
                    .filter(|(k, v)| b.get(*k) != Some(v))
                    .map(|(k, v)| format!("    {k} {v:?}\n"))
                    .collect::<String>()
            };
            panic!(
                "conntrack differs from the model by packet #{} (seed {:#x}, IPv6 {:?}; true: in {}, false: in \
                 {}):\n  datapath only:\n{}  model only:\n{}",
                self.at,
                self.seed,
                self.mode6(),
                names[0],
                names[1],
                only(&ct, &want),
                only(&want, &ct)
            );
        }
        let closed: BTreeMap<String, (u32, Option<u32>)> = closed
            .iter()
            .map(|(k, c)| (format!("{k:?}"), (c.end_seq, (c.has_ts != 0).then_some(c.ts_val))))
            .collect();
        let want_closed: BTreeMap<String, _> =
            model.closed.iter().map(|(k, c)| (format!("{k:?}"), (c.end_seq, c.ts_val))).collect();
        assert_eq!(closed, want_closed, "{} differs from the model by packet #{}", names[2], self.at);
    }

    /// What the campaign ran and reached; fails if a path the seeds open was never taken.
    pub fn report(&self) {
        let secs = self.elapsed.as_secs_f64();
        println!(
            "fuzz: seed {:#x}: {} program runs in {secs:.1} s ({:.0} runs/s), no mismatch",
            self.seed,
            self.runs,
            self.runs as f64 / secs
        );
        for ((prog, outcome), n) in &self.seen {
            println!("  {prog:15} {outcome:40} {n}");
        }
        let reached = |name: &str| self.seen.keys().any(|(_, o)| o.split(' ').any(|w| w == name));
        // IPv6's outcomes, by program and phase; ICMPv6 errors' apart.
        let reached_as = |kind: &str, prog: &str, name: &str, mode: Mode6| {
            let label = format!("{name} ({kind}, {mode:?})");
            self.seen.keys().any(|(p, o)| *p == prog && o.ends_with(&label))
        };
        let reached6 = |prog: &str, name: &str, mode: Mode6| reached_as("ipv6", prog, name, mode);
        let (from, uplink) = (program::FROM_CONTAINER, program::UPLINK_IN);
        for (prog, must, mode) in [
            (from, "snat-new-flow", Mode6::Masquerade),
            (from, "nat-translated", Mode6::Masquerade),
            (from, "drop-nat-ports-exhausted", Mode6::Masquerade),
            (from, "drop-fib-failed", Mode6::Masquerade),
            (from, "drop-extension-header", Mode6::Masquerade),
            (from, "drop-fragment", Mode6::Masquerade),
            (from, "drop-unsupported-protocol", Mode6::Masquerade),
            (from, "drop-no-endpoint", Mode6::Masquerade),
            (from, "forwarded-to-peer", Mode6::Masquerade),
            (from, "nd-answered", Mode6::Masquerade),
            (from, "passed-to-stack", Mode6::NoAddress),
            (from, "routed", Mode6::Routed),
            (from, "drop-fib-failed", Mode6::Routed),
            (uplink, "nat-translated", Mode6::Masquerade),
            (uplink, "passed-to-stack", Mode6::Masquerade),
            (uplink, "routed", Mode6::Routed),
            // Ports published on IPv6, in either setting: new connections, their
            // packets, the containers' replies (a published container goes through
            // conntrack on a routed prefix too, and out untranslated on no flow).
            (uplink, "dnat-new-flow", Mode6::Masquerade),
            (uplink, "dnat-new-flow", Mode6::Routed),
            (uplink, "nat-translated", Mode6::Routed),
            (uplink, "passed-to-stack", Mode6::Routed),
            (from, "nat-translated", Mode6::Routed),
            // The hairpin: a container's new connection to a port published on the
            // node's address, into the port's container, in either setting.
            (from, "dnat-new-flow", Mode6::Masquerade),
            (from, "dnat-new-flow", Mode6::Routed),
        ] {
            assert!(
                reached6(prog, must, mode),
                "the campaign never reached {must} for IPv6 in {prog} ({mode:?}): too few packets, or a seed broke"
            );
        }
        // What a container with published ports sends to a local peer goes through
        // container_nat6 in every phase: the replies to hairpinned connections get the
        // node's address back, the rest is delivered as it is.
        for (must, mode) in [
            ("nat-translated", Mode6::Masquerade),
            ("nat-translated", Mode6::Routed),
            ("forwarded-to-peer", Mode6::Masquerade),
            ("forwarded-to-peer", Mode6::Routed),
            ("forwarded-to-peer", Mode6::NoAddress),
        ] {
            assert!(
                reached_as("ipv6 published to a peer", from, must, mode),
                "the campaign never reached {must} for IPv6 from a published container to a peer ({mode:?}): too \
                 few packets, or a seed broke"
            );
        }
        // ICMPv6 errors about tracked flows (NAT66, published ports), translated both
        // ways (routed out, or into the container, or to the stack when the hop limit is
        // spent), in either setting; about no flow, the node's going in, dropped going
        // out when masqueraded, routed as it is (a published container's) on a routed
        // prefix.
        for (prog, must, mode) in [
            (from, "nat-translated", Mode6::Masquerade),
            (from, "drop-unsupported-protocol", Mode6::Masquerade),
            (from, "drop-fib-failed", Mode6::Masquerade),
            (uplink, "nat-translated", Mode6::Masquerade),
            (uplink, "passed-to-stack", Mode6::Masquerade),
            (from, "routed", Mode6::Routed),
            (from, "nat-translated", Mode6::Routed),
            (uplink, "nat-translated", Mode6::Routed),
        ] {
            assert!(
                reached_as("ipv6 icmp error", prog, must, mode),
                "the campaign never reached {must} for an ICMPv6 error in {prog} ({mode:?}): too few packets, or a \
                 seed broke"
            );
        }
        // IPv4 on a routed prefix: out and in untranslated, ICMP errors about no flow
        // among them; published ports and their replies (the hairpin's too) still
        // translated; what cannot be routed as it is still the stack's or dropped.
        let reached4 = |kind: &str, prog: &str, name: &str, mode: Mode4| {
            let label = format!("{name} ({kind}, {mode:?})");
            self.seen.keys().any(|(p, o)| *p == prog && o.ends_with(&label))
        };
        for (kind, prog, must, mode) in [
            ("ipv4", from, "routed", Mode4::Routed),
            ("ipv4", from, "nat-translated", Mode4::Routed),
            ("ipv4", from, "dnat-new-flow", Mode4::Routed),
            ("ipv4", from, "passed-to-stack", Mode4::Routed),
            ("ipv4", from, "drop-fib-failed", Mode4::Routed),
            ("ipv4", from, "drop-malformed", Mode4::Routed),
            ("ipv4", from, "snat-new-flow", Mode4::Masquerade),
            ("ipv4", from, "drop-fragment", Mode4::Masquerade),
            ("ipv4", uplink, "routed", Mode4::Routed),
            ("ipv4", uplink, "passed-to-stack", Mode4::Routed),
            ("ipv4", uplink, "dnat-new-flow", Mode4::Routed),
            ("ipv4", uplink, "nat-translated", Mode4::Routed),
            ("ipv4", uplink, "passed-to-stack", Mode4::Masquerade),
            ("ipv4 icmp error", from, "routed", Mode4::Routed),
            ("ipv4 icmp error", from, "nat-translated", Mode4::Routed),
            ("ipv4 icmp error", from, "drop-unsupported-protocol", Mode4::Masquerade),
            ("ipv4 icmp error", uplink, "routed", Mode4::Routed),
            ("ipv4 icmp error", uplink, "nat-translated", Mode4::Masquerade),
        ] {
            assert!(
                reached4(kind, prog, must, mode),
                "the campaign never reached {must} for {kind} in {prog} ({mode:?}): too few packets, or a seed broke"
            );
        }
        for must in [
            "forwarded-to-peer",
            "arp-replied",
            "passed-to-stack",
            "drop-spoofed-source",
            "drop-malformed",
            "snat-new-flow",
            "dnat-new-flow",
            "nat-translated",
            "drop-nat-ports-exhausted",
            "drop-fib-failed",
            "drop-fragment",
            "drop-unsupported-protocol",
            "drop-no-endpoint",
            "translated",
        ] {
            assert!(reached(must), "the campaign never reached {must}: too few packets, or a seed broke");
        }
        // The macvlan/ipvlan container: its own packets and ARP left to the driver, and
        // what arrives at its sub-interface, for it (counted) or not.
        let sub = program::TO_SUBIF;
        for (prog, must) in [(from, "passed-to-parent"), (sub, "forwarded-to-peer"), (sub, "passed-to-stack")]
        {
            assert!(
                self.seen.keys().any(|(p, o)| *p == prog && o.split(' ').any(|w| w == must)),
                "the campaign never reached {must} in {prog}: too few packets, or a seed broke"
            );
        }
        // What may not leave a sub-interface onto the LAN: ARP in another's name, frames
        // neither IP nor ARP (VLAN-tagged); from a veth such frames stay the stack's.
        for (must, at, kind) in [
            ("drop-spoofed-source", " at a sub-interface", ANOTHERS_ARP),
            ("passed-to-stack", "", ANOTHERS_ARP),
            ("passed-to-parent", " at a sub-interface", "arp"),
            ("drop-unsupported-protocol", " at a sub-interface", "other"),
            ("passed-to-stack", "", "other"),
        ] {
            let label = format!(" {must}{at} ({kind}, ");
            assert!(
                self.seen.keys().any(|(p, o)| *p == from && o.contains(&label)),
                "the campaign never reached {must}{at} for {kind} in {from}: too few packets, or a seed broke"
            );
        }
    }
}
