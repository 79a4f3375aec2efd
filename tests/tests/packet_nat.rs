//! Packet-level tests of the NAT paths with BPF_PROG_TEST_RUN: byte-for-byte checks of
//! translated packets, and of everything that must pass untouched or be dropped with a
//! counted reason (truncated headers, IP options, fragments, non-IP, VLAN, bad checksums).
use std::net::Ipv4Addr;

use netpath::datapath::{
    family::{Ipv4, Ipv6},
    program, Datapath, Inspector, PacketRun,
};
use netpath_common::{CtKey, EndpointInfo, NodeConfig, PortKey, PortTarget, Reason};
use netpath_tests::{
    model::{Fib, Model, World},
    pkt::{self, View, ACK, SYN, TCP, UDP},
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
const LO: u32 = 1;

const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
const WEB: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const WEB_MAC: [u8; 6] = [0x0a, 0x58, 10, 77, 0, 2];
const WEB_HOST_MAC: [u8; 6] = [0x0e, 0, 0, 0, 0, 2];
const UPLINK_MAC: [u8; 6] = [0x0e, 0, 0, 0, 0, 0xfe];
const CLIENT_MAC: [u8; 6] = [0x0e, 0, 0, 0, 0, 0xcc];

/// A datapath whose node address is NODE, with container WEB behind lo (so its own
/// packets pass source validation in from_container) and tcp/8080, udp/5353 published
/// to WEB:80, WEB:53. The namespace has a veth with NODE/24, so the FIB can route
/// replies to CLIENT.
fn with_nat(check: impl FnOnce(&mut Datapath) + Send + 'static) {
    with_nat_pins(move |dp, _| check(dp))
}

/// [`with_nat`], also giving the pin directory (for the counters).
fn with_nat_pins(check: impl FnOnce(&mut Datapath, &std::path::Path) + Send + 'static) {
    let prepare: &[&[&str]] = &[
        &["link", "add", "up0", "type", "veth", "peer", "name", "up1"],
        &["addr", "add", "192.168.77.1/24", "dev", "up0"],
        &["link", "set", "up0", "up"],
        &["link", "set", "up1", "up"],
        &["link", "set", "lo", "up"],
    ];
    netpath_tests::with_datapath_pins(prepare, move |dp, pins| {
        let world = nat_world();
        for (ip, info) in world.endpoints {
            dp.register(ip, info).unwrap();
        }
        dp.set_node_config(world.config).unwrap();
        for (key, target) in world.ports {
            dp.set_port(key, target).unwrap();
        }
        check(dp, pins);
    })
}

/// What [`with_nat`] configures, for the reference model (which every packet below is
/// also checked against, except where the NAT range has more than one port).
fn nat_world() -> World {
    let port = |proto, port: u16, to: u16| {
        let key = PortKey { host_ip: [0; 4], port: port.to_be_bytes(), proto, _pad: 0 };
        (key, PortTarget { ip: WEB.octets(), port: to.to_be_bytes(), _pad: [0; 2] })
    };
    let up0 = std::ffi::CString::new("up0").unwrap();
    // SAFETY: a valid C string, only read.
    let up0 = unsafe { libc::if_nametoindex(up0.as_ptr()) };
    World {
        endpoints: vec![(
            WEB,
            EndpointInfo {
                host_ifindex: LO,
                mac: WEB_MAC,
                host_mac: WEB_HOST_MAC,
                flags: 2,
                counter_slot: 0,
            },
        )],
        endpoints6: Vec::new(),
        ports: vec![port(TCP, 8080, 80), port(UDP, 5353, 53)],
        config: dp_config(),
        fib: Fib {
            subnets: vec![(Ipv4Addr::new(192, 168, 77, 0), 24, up0)],
            not_forwarded: vec![NODE, Ipv4Addr::new(192, 168, 77, 255)],
        },
    }
}

/// The node settings of [`with_nat`]: a NAT range of one port.
fn dp_config() -> NodeConfig {
    NodeConfig {
        node_ip: NODE.octets(),
        pod_net: [10, 77, 0, 0],
        pod_mask: [255, 255, 255, 0],
        uplink_ifindex: 0,
        nat_port_min: 61000,
        nat_port_max: 61000,
        flags: 0,
        netns_cookie: 0,
        ..NodeConfig::default()
    }
}

/// uplink_in on `packet`; the model must agree on action and bytes.
fn uplink(dp: &mut Datapath, model: &mut Model, packet: &[u8]) -> PacketRun {
    let out = dp.test_run(program::UPLINK_IN, packet, LO).expect("test run uplink_in");
    model.uplink_in(packet).assert_matches(out.action, &out.packet);
    out
}

/// from_container on `packet` from WEB's veth; the model must agree.
fn from_web(dp: &mut Datapath, model: &mut Model, packet: &[u8]) -> PacketRun {
    let out = dp.test_run(program::FROM_CONTAINER, packet, LO).expect("test run from_container");
    model.from_container(packet, LO).assert_matches(out.action, &out.packet);
    out
}

fn syn_to(port: u16, options: &[u8]) -> Vec<u8> {
    pkt::eth(
        UPLINK_MAC,
        CLIENT_MAC,
        pkt::ETH_IPV4,
        &pkt::ipv4(CLIENT, NODE, TCP, 64, options, &pkt::tcp(40000, port, SYN, b"")),
    )
}

#[test]
fn published_port_is_translated_byte_for_byte() {
    with_nat(|dp| {
        let m = &mut Model::new(nat_world());
        let out = uplink(dp, m, &syn_to(8080, &[]));
        assert_eq!(out.action, TC_ACT_REDIRECT, "into the container");
        let v = View(&out.packet);
        assert_eq!((v.src(), v.sport()), (CLIENT, 40000), "client address kept");
        assert_eq!((v.dst(), v.dport()), (WEB, 80));
        assert_eq!((v.eth_dst(), v.eth_src()), (WEB_MAC, WEB_HOST_MAC));
        assert_eq!(v.ttl(), 63);
        assert!(v.ip_csum_ok() && v.l4_csum_ok(), "checksums broken by the rewrite");

        // The container's SYN-ACK leaves with the node address and the published port.
        let reply = pkt::eth(
            WEB_HOST_MAC,
            WEB_MAC,
            pkt::ETH_IPV4,
            &pkt::ipv4(WEB, CLIENT, TCP, 64, &[], &pkt::tcp(80, 40000, SYN | ACK, b"")),
        );
        let out = from_web(dp, m, &reply);
        assert_eq!(out.action, TC_ACT_REDIRECT, "routed out by the FIB");
        let v = View(&out.packet);
        assert_eq!((v.src(), v.sport()), (NODE, 8080));
        assert_eq!((v.dst(), v.dport()), (CLIENT, 40000));
        assert!(v.ip_csum_ok() && v.l4_csum_ok());
    });
}

#[test]
fn ip_options_are_skipped_not_misread() {
    with_nat(|dp| {
        let m = &mut Model::new(nat_world());
        // Four NOPs and an end-of-list: the TCP header starts 4 bytes later.
        let out = uplink(dp, m, &syn_to(8080, &[1, 1, 1, 0]));
        assert_eq!(out.action, TC_ACT_REDIRECT);
        let v = View(&out.packet);
        assert_eq!((v.dst(), v.dport(), v.sport()), (WEB, 80, 40000));
        assert!(v.ip_csum_ok() && v.l4_csum_ok());
    });
}

#[test]
fn what_netpath_does_not_translate_passes_untouched() {
    with_nat(|dp| {
        let m = &mut Model::new(nat_world());
        let unmapped = syn_to(9999, &[]);
        let mut fragment = syn_to(8080, &[]);
        fragment[14 + 6] |= 0x20; // more fragments
        let mut later_fragment = syn_to(8080, &[]);
        later_fragment[14 + 7] = 0x10; // offset 16 * 8 bytes
        let truncated = syn_to(8080, &[])[..14 + 20 + 10].to_vec();
        let arp = pkt::eth([0xff; 6], CLIENT_MAC, pkt::ETH_ARP, &[0; 28]);
        let mut vlan = pkt::eth(UPLINK_MAC, CLIENT_MAC, pkt::ETH_VLAN, &[0, 7, 0x08, 0]);
        vlan.extend_from_slice(&pkt::ipv4(CLIENT, NODE, TCP, 64, &[], &pkt::tcp(40000, 8080, SYN, b"")));
        let not_for_node = pkt::eth(
            UPLINK_MAC,
            CLIENT_MAC,
            pkt::ETH_IPV4,
            &pkt::ipv4(
                CLIENT,
                Ipv4Addr::new(192, 168, 77, 9),
                TCP,
                64,
                &[],
                &pkt::tcp(40000, 8080, SYN, b""),
            ),
        );
        for (what, p) in [
            ("unmapped port", unmapped),
            ("first fragment", fragment),
            ("later fragment", later_fragment),
            ("truncated TCP", truncated),
            ("ARP", arp),
            ("VLAN-tagged", vlan),
            ("other destination", not_for_node),
        ] {
            let out = uplink(dp, m, &p);
            assert_eq!((out.action, &out.packet), (TC_ACT_OK, &p), "{what} was not passed untouched");
        }
    });
}

#[test]
fn bad_checksums_stay_bad_and_zero_udp_checksums_stay_zero() {
    with_nat(|dp| {
        let m = &mut Model::new(nat_world());
        let mut bad = syn_to(8080, &[]);
        bad[14 + 20 + 16] ^= 0x55;
        let out = uplink(dp, m, &bad);
        assert_eq!(out.action, TC_ACT_REDIRECT);
        assert!(!View(&out.packet).l4_csum_ok(), "a corrupt segment must not be made valid by NAT");

        let mut udp = pkt::eth(
            UPLINK_MAC,
            CLIENT_MAC,
            pkt::ETH_IPV4,
            &pkt::ipv4(CLIENT, NODE, UDP, 64, &[], &pkt::udp(5000, 5353, b"q")),
        );
        udp[14 + 20 + 6..14 + 20 + 8].fill(0);
        let out = uplink(dp, m, &udp);
        assert_eq!(out.action, TC_ACT_REDIRECT);
        let v = View(&out.packet);
        assert_eq!((v.dst(), v.dport()), (WEB, 53));
        assert_eq!(v.udp_csum(), 0, "no checksum must stay no checksum");
    });
}

#[test]
fn masquerade_rewrites_source_and_refuses_when_ports_run_out() {
    with_nat(|dp| {
        let m = &mut Model::new(nat_world());
        let out_to = |sport: u16| {
            pkt::eth(
                WEB_HOST_MAC,
                WEB_MAC,
                pkt::ETH_IPV4,
                &pkt::ipv4(WEB, CLIENT, UDP, 64, &[], &pkt::udp(sport, 53, b"x")),
            )
        };
        let out = from_web(dp, m, &out_to(1111));
        assert_eq!(out.action, TC_ACT_REDIRECT);
        let v = View(&out.packet);
        assert_eq!((v.src(), v.sport()), (NODE, 61000), "the one port of the range");
        assert!(v.ip_csum_ok() && v.l4_csum_ok());
        // Its reply comes back to the container.
        let reply = pkt::eth(
            UPLINK_MAC,
            CLIENT_MAC,
            pkt::ETH_IPV4,
            &pkt::ipv4(CLIENT, NODE, UDP, 64, &[], &pkt::udp(53, 61000, b"y")),
        );
        let back = uplink(dp, m, &reply);
        assert_eq!(back.action, TC_ACT_REDIRECT);
        let v = View(&back.packet);
        assert_eq!((v.dst(), v.dport()), (WEB, 1111));
        assert!(v.l4_csum_ok());
        // A second flow to the same destination finds the range (one port) exhausted.
        assert_eq!(from_web(dp, m, &out_to(2222)).action, TC_ACT_SHOT);
        // ICMP echo: the identifier plays the port.
        let ping = pkt::eth(
            WEB_HOST_MAC,
            WEB_MAC,
            pkt::ETH_IPV4,
            &pkt::ipv4(WEB, CLIENT, pkt::ICMP, 64, &[], &pkt::icmp_echo(true, 77, b"ping")),
        );
        let out = from_web(dp, m, &ping);
        assert_eq!(out.action, TC_ACT_REDIRECT);
        let v = View(&out.packet);
        assert_eq!((v.src(), v.icmp_id()), (NODE, 61000));
        assert!(v.ip_csum_ok() && v.l4_csum_ok());
    });
}

const XDP_PASS: u32 = 2;
/// "npxd", the metadata mark of a packet uplink_xdp translated.
const XDP_MARK: [u8; 4] = 0x6e70_7864u32.to_ne_bytes();

#[test]
fn xdp_translates_published_port_traffic_and_marks_it_for_tc() {
    with_nat(|dp| {
        let m = &mut Model::new(nat_world());
        let syn = syn_to(8080, &[]);
        let out = dp.test_run_xdp(&syn).expect("test run uplink_xdp");
        assert_eq!(out.action, XDP_PASS);
        // Kernels before 5.13 return the packet without the metadata in front of it.
        let meta = out.packet.len() - syn.len();
        if meta > 0 {
            assert_eq!(out.packet[..4], XDP_MARK, "no metadata mark for tc");
        }
        let want = m.uplink_xdp(&syn);
        assert!(want.translated);
        assert_eq!(out.packet[meta..], want.packet[..], "bytes differ from the model's");
        let v = View(&out.packet[meta..]);
        assert_eq!((v.src(), v.sport()), (CLIENT, 40000));
        assert_eq!((v.dst(), v.dport()), (WEB, 80));
        assert_eq!(v.ttl(), 64, "tc decrements the TTL when it delivers");
        assert!(v.ip_csum_ok() && v.l4_csum_ok(), "XDP checksum update broken");

        // An unpublished port and a fragment pass untouched and unmarked.
        for p in [syn_to(9999, &[]), {
            let mut f = syn_to(8080, &[]);
            f[14 + 6] |= 0x20;
            f
        }] {
            let out = dp.test_run_xdp(&p).unwrap();
            assert_eq!((out.action, &out.packet), (XDP_PASS, &p));
        }
        // UDP without checksum keeps none.
        let mut udp = pkt::eth(
            UPLINK_MAC,
            CLIENT_MAC,
            pkt::ETH_IPV4,
            &pkt::ipv4(CLIENT, NODE, UDP, 64, &[], &pkt::udp(5000, 5353, b"q")),
        );
        udp[14 + 20 + 6..14 + 20 + 8].fill(0);
        let out = dp.test_run_xdp(&udp).unwrap();
        let meta = out.packet.len() - udp.len();
        let v = View(&out.packet[meta..]);
        assert_eq!((v.dst(), v.dport(), v.udp_csum()), (WEB, 53, 0));
        assert!(v.ip_csum_ok());
    });
}

#[test]
fn a_closed_connection_hands_its_nat_port_to_the_next() {
    with_nat(|dp| {
        let m = &mut Model::new(nat_world());
        let tcp = |sport: u16, flags: u8| {
            pkt::eth(
                WEB_HOST_MAC,
                WEB_MAC,
                pkt::ETH_IPV4,
                &pkt::ipv4(WEB, CLIENT, TCP, 64, &[], &pkt::tcp(sport, 80, flags, b"")),
            )
        };
        let first = from_web(dp, m, &tcp(1111, SYN));
        assert_eq!(View(&first.packet).sport(), 61000);
        // While the first connection lives, the one-port range is full.
        assert_eq!(from_web(dp, m, &tcp(2222, SYN)).action, TC_ACT_SHOT);
        // It closes (RST)...
        assert_eq!(from_web(dp, m, &tcp(1111, pkt::RST | ACK)).action, TC_ACT_REDIRECT);
        // ...and the next connection gets its port at once, not after the close timeout.
        let next = from_web(dp, m, &tcp(2222, SYN));
        assert_eq!(next.action, TC_ACT_REDIRECT);
        assert_eq!(View(&next.packet).sport(), 61000);
    });
}

/// `inner`'s port unreachable, sent by `from` to `to` (`to_mac` the next hop).
fn port_unreachable(
    from: Ipv4Addr,
    to: Ipv4Addr,
    inner: &[u8],
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
) -> Vec<u8> {
    pkt::eth(
        dst_mac,
        src_mac,
        pkt::ETH_IPV4,
        &pkt::ipv4(from, to, pkt::ICMP, 64, &[], &pkt::icmp_error(3, 3, inner)),
    )
}

#[test]
fn icmp_errors_about_translated_flows_are_translated_both_ways() {
    with_nat(|dp| {
        let m = &mut Model::new(nat_world());
        // A client's datagram to the published udp/5353 reaches WEB:53...
        let query = pkt::ipv4(CLIENT, NODE, UDP, 64, &[], &pkt::udp(40000, 5353, b"q"));
        let out = uplink(dp, m, &pkt::eth(UPLINK_MAC, CLIENT_MAC, pkt::ETH_IPV4, &query));
        assert_eq!(out.action, TC_ACT_REDIRECT);
        // ...where nothing listens: WEB's port unreachable quotes what WEB received.
        let received = out.packet[14..].to_vec();
        let out = from_web(dp, m, &port_unreachable(WEB, CLIENT, &received, WEB_HOST_MAC, WEB_MAC));
        assert_eq!(out.action, TC_ACT_REDIRECT, "routed out to the client");
        let v = View(&out.packet);
        assert_eq!((v.src(), v.dst()), (NODE, CLIENT), "the client hears from the node");
        let q = v.quoted();
        assert_eq!((q.src(), q.sport()), (CLIENT, 40000));
        assert_eq!((q.dst(), q.dport()), (NODE, 5353), "it quotes the datagram the client sent");
        assert!(v.ip_csum_ok() && v.l4_csum_ok() && q.ip_csum_ok(), "checksums broken by the rewrite");

        // WEB masquerades a datagram to the client's port 9...
        let out = from_web(
            dp,
            m,
            &pkt::eth(
                WEB_HOST_MAC,
                WEB_MAC,
                pkt::ETH_IPV4,
                &pkt::ipv4(WEB, CLIENT, UDP, 64, &[], &pkt::udp(1111, 9, b"x")),
            ),
        );
        let sent = out.packet[14..].to_vec();
        assert_eq!((View(&out.packet).src(), View(&out.packet).sport()), (NODE, 61000));
        // ...which is closed: the client's port unreachable reaches WEB about WEB's datagram.
        let out = uplink(dp, m, &port_unreachable(CLIENT, NODE, &sent, UPLINK_MAC, CLIENT_MAC));
        assert_eq!(out.action, TC_ACT_REDIRECT, "into the container");
        let v = View(&out.packet);
        assert_eq!((v.src(), v.dst()), (CLIENT, WEB));
        let q = v.quoted();
        assert_eq!((q.src(), q.sport(), q.dst(), q.dport()), (WEB, 1111, CLIENT, 9));
        assert!(v.ip_csum_ok() && v.l4_csum_ok() && q.ip_csum_ok());

        // The client answers WEB's flow and WEB has closed its socket meanwhile.
        let reply = pkt::ipv4(CLIENT, NODE, UDP, 64, &[], &pkt::udp(9, 61000, b"late"));
        let out = uplink(dp, m, &pkt::eth(UPLINK_MAC, CLIENT_MAC, pkt::ETH_IPV4, &reply));
        assert_eq!(out.action, TC_ACT_REDIRECT);
        let received = out.packet[14..].to_vec();
        let out = from_web(dp, m, &port_unreachable(WEB, CLIENT, &received, WEB_HOST_MAC, WEB_MAC));
        assert_eq!(out.action, TC_ACT_REDIRECT);
        let v = View(&out.packet);
        assert_eq!(v.src(), NODE);
        let q = v.quoted();
        assert_eq!((q.src(), q.sport(), q.dst(), q.dport()), (CLIENT, 9, NODE, 61000));
        assert!(v.ip_csum_ok() && v.l4_csum_ok() && q.ip_csum_ok());

        // An error quoting a flow netpath never translated would leak the pod address.
        let stray = pkt::ipv4(CLIENT, WEB, UDP, 64, &[], &pkt::udp(7, 7777, b"?"));
        let out = from_web(dp, m, &port_unreachable(WEB, CLIENT, &stray, WEB_HOST_MAC, WEB_MAC));
        assert_eq!(out.action, TC_ACT_SHOT, "untracked error left the node");
    });
}

/// A segment from WEB to CLIENT:80 with a timestamp option.
fn web_tcp(sport: u16, flags: u8, seq: u32, ts: Option<u32>) -> Vec<u8> {
    pkt::eth(
        WEB_HOST_MAC,
        WEB_MAC,
        pkt::ETH_IPV4,
        &pkt::ipv4(WEB, CLIENT, TCP, 64, &[], &pkt::tcp_ts(sport, 80, flags, seq, ts)),
    )
}

/// from_container without the model, for a NAT range of two ports: which one a new flow
/// gets depends on where the datapath's random search starts.
fn from_web_unchecked(dp: &mut Datapath, packet: &[u8]) -> PacketRun {
    dp.test_run(program::FROM_CONTAINER, packet, LO).expect("test run from_container")
}

#[test]
fn a_new_syn_gets_no_port_whose_server_would_refuse_it_from_time_wait() {
    with_nat(|dp| {
        let mut cfg = dp_config();
        cfg.nat_port_min = 61000;
        cfg.nat_port_max = 61001;
        dp.set_node_config(cfg).unwrap();
        let forget_flows = |dp: &mut Datapath| {
            for (k, _) in dp.conntrack_entries::<Ipv4>().unwrap() {
                dp.remove_conntrack(&k).unwrap();
            }
        };
        // A flow ends with the container's FIN; its server keeps the tuple in TIME_WAIT,
        // with the FIN's timestamp 6000 as the last it saw. netpath's conntrack entries
        // are collected long before the server forgets.
        let first = View(&from_web_unchecked(dp, &web_tcp(1111, SYN, 100, Some(5000))).packet).sport();
        assert_eq!(
            from_web_unchecked(dp, &web_tcp(1111, pkt::FIN | ACK, 101, Some(6000))).action,
            TC_ACT_REDIRECT
        );
        forget_flows(dp);
        // New connections whose SYNs carry older timestamps (per-connection random offsets
        // make that every other one) must get the other port, every time.
        for sport in 2000..2010 {
            let out = from_web_unchecked(dp, &web_tcp(sport, SYN, 100, Some(5500)));
            assert_eq!(out.action, TC_ACT_REDIRECT);
            assert_ne!(View(&out.packet).sport(), first, "port {first} reused under the server's TIME_WAIT");
            forget_flows(dp);
        }
        // A newer timestamp may have it; so may, without timestamps, a higher sequence.
        let busy = pkt::eth(
            WEB_HOST_MAC,
            WEB_MAC,
            pkt::ETH_IPV4,
            &pkt::ipv4(WEB, CLIENT, TCP, 64, &[], &pkt::tcp_ts(3000, 80, SYN, 1, None)),
        );
        let other = View(&from_web_unchecked(dp, &busy).packet).sport();
        assert_ne!(other, first, "the record still steers new flows away from {first}");
        let out = from_web_unchecked(dp, &web_tcp(3001, SYN, 100, Some(7000)));
        assert_eq!((out.action, View(&out.packet).sport()), (TC_ACT_REDIRECT, first));
    });
}

/// Where conntrack holds `key`: (in CONNTRACK, in CONNTRACK_NEW).
fn held(dp: &mut Datapath, key: &CtKey) -> (bool, bool) {
    let [assured, new] = dp.conntrack_get(key).unwrap();
    (assured.is_some(), new.is_some())
}

#[test]
fn a_new_flow_moves_to_the_assured_table_whole_and_half_a_pair_is_never_used() {
    with_nat_pins(|dp, pins| {
        let m = &mut Model::new(nat_world());
        let query = |sport: u16| {
            pkt::eth(
                WEB_HOST_MAC,
                WEB_MAC,
                pkt::ETH_IPV4,
                &pkt::ipv4(WEB, CLIENT, UDP, 64, &[], &pkt::udp(sport, 53, b"q")),
            )
        };
        let answer = pkt::eth(
            UPLINK_MAC,
            CLIENT_MAC,
            pkt::ETH_IPV4,
            &pkt::ipv4(CLIENT, NODE, UDP, 64, &[], &pkt::udp(53, 61000, b"a")),
        );
        let key = |src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16| CtKey {
            src: src.octets(),
            dst: dst.octets(),
            sport: sport.to_be_bytes(),
            dport: dport.to_be_bytes(),
            proto: UDP,
            _pad: [0; 3],
        };
        let (orig, reply) = (key(WEB, 1111, CLIENT, 53), key(CLIENT, 53, NODE, 61000));
        let live = |dp: &mut Datapath| {
            let [assured, new] = dp.conntrack_tables::<Ipv4>().unwrap();
            (assured.len(), new.len())
        };

        // A new flow's pair is created in the table of new flows, and stays there
        // through its first reply.
        assert_eq!(from_web(dp, m, &query(1111)).action, TC_ACT_REDIRECT);
        assert_eq!((held(dp, &orig), held(dp, &reply)), ((false, true), (false, true)));
        assert_eq!(uplink(dp, m, &answer).action, TC_ACT_REDIRECT);
        assert_eq!(live(dp), (0, 2));
        // The originator sends again: the flow is assured, and both entries move.
        assert_eq!(from_web(dp, m, &query(1111)).action, TC_ACT_REDIRECT);
        assert_eq!((held(dp, &orig), held(dp, &reply)), ((true, false), (true, false)));
        assert!(m.assured.contains(&orig) && m.assured.contains(&reply));
        assert_eq!(uplink(dp, m, &answer).action, TC_ACT_REDIRECT);

        // Another flow, to a server of its own port: its reply entry is evicted before
        // the reply (here removed, as the LRU would). Its original entry is half a pair;
        // the next packet that finds it removes it and starts the flow again, whole.
        let (orig2, reply2) = (key(WEB, 2222, CLIENT, 5300), key(CLIENT, 5300, NODE, 61000));
        let query2 = pkt::eth(
            WEB_HOST_MAC,
            WEB_MAC,
            pkt::ETH_IPV4,
            &pkt::ipv4(WEB, CLIENT, UDP, 64, &[], &pkt::udp(2222, 5300, b"q")),
        );
        assert_eq!(from_web(dp, m, &query2).action, TC_ACT_REDIRECT);
        assert!(dp.remove_conntrack(&reply2).unwrap());
        m.forget_entry(&reply2);
        let before = m.reasons[Reason::SnatNewFlow as usize].0;
        assert_eq!(from_web(dp, m, &query2).action, TC_ACT_REDIRECT);
        assert_eq!(m.reasons[Reason::SnatNewFlow as usize].0, before + 1, "not taken for a new flow");
        assert_eq!((held(dp, &orig2), held(dp, &reply2)), ((false, true), (false, true)));
        let answer2 = pkt::eth(
            UPLINK_MAC,
            CLIENT_MAC,
            pkt::ETH_IPV4,
            &pkt::ipv4(CLIENT, NODE, UDP, 64, &[], &pkt::udp(5300, 61000, b"a")),
        );
        assert_eq!(uplink(dp, m, &answer2).action, TC_ACT_REDIRECT);
        // The counters add up: three pairs created; of the second one, the entry the
        // test removed (an eviction) and the one the datapath removed as its half are
        // gone (neither was collected); the first and third pairs are live.
        let counters = Inspector::new(pins).reason_counters().unwrap();
        let count = |r: Reason| counters.iter().find(|c| c.reason == r.name()).unwrap().packets;
        assert_eq!(count(Reason::CtCreated), 6);
        assert_eq!(count(Reason::CtCollected), 0);
        assert_eq!(live(dp), (2, 2));
        for r in Reason::ALL {
            assert_eq!(count(r), m.reasons[r as usize].0, "{} differs from the model", r.name());
        }
    })
}

/// The agent's collection pass (`CtConfig::collect`) over crafted entries of both
/// families: a pair expires whole once idle past the timeout of its protocol and state,
/// counted from the last packet either way; half a pair expires alone; IPv6's tables,
/// new flows' included, are collected as IPv4's are, in the same pass.
#[test]
fn collection_expires_idle_pairs_whole_in_both_families() {
    use netpath_common::{conntrack::TCP_ESTABLISHED, maps, Ip6};
    netpath_tests::with_datapath_pins(&[], |dp, pins| {
        let ct = netpath::agent::CtConfig {
            max_entries: 1024,
            tcp_established: 3600,
            tcp_syn: 60,
            tcp_closing: 10,
            udp: 30,
            icmp: 30,
            gc_interval: 1,
        };
        let now = netpath::datapath::monotonic_ns();
        let idle = now - 60 * 1_000_000_000;
        let ip6 = |last: u16| {
            let mut a = [0xfd, 0, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            a[14..].copy_from_slice(&last.to_be_bytes());
            Ip6(a)
        };
        let (server, node) = (ip6(0x100), ip6(0x1));
        let pair6 = |proto: u8, sport: u16, state: u8, seen: u64| {
            netpath_tests::snat_pair(
                proto,
                (ip6(2), sport),
                (server, 53),
                (node, sport + 20_000),
                state,
                seen,
            )
        };
        const ICMPV6: u8 = 58;
        // Established by its first packet (a bare ACK) but never answered: a SYN's timeout.
        let mut unanswered = pair6(TCP, 1002, TCP_ESTABLISHED, idle);
        unanswered[1].1.packets = 0;
        let gone = [
            // Idle past the UDP timeout, in the assured table and in the new flows'.
            (maps::CONNTRACK6, pair6(UDP, 1000, 0, idle)),
            (maps::CONNTRACK6_NEW, pair6(ICMPV6, 1001, 0, idle)),
            (maps::CONNTRACK6_NEW, unanswered),
        ];
        let mut stays = vec![
            // Just used; idle, but within the established TCP timeout.
            (maps::CONNTRACK6, pair6(UDP, 2000, 0, now)),
            (maps::CONNTRACK6, pair6(TCP, 2001, TCP_ESTABLISHED, idle)),
        ];
        // Its reply came just now, its request long ago: the flow is alive.
        let mut answered = pair6(UDP, 2002, 0, idle);
        answered[1].1.last_seen_ns = now;
        stays.push((maps::CONNTRACK6, answered));
        // Half a pair (its reply entry evicted), idle: goes alone.
        let half = pair6(UDP, 3000, 0, idle)[0];
        // IPv4, idle: the same pass takes it.
        let pair4 = netpath_tests::snat_pair(
            UDP,
            (WEB.octets(), 1000),
            (CLIENT.octets(), 53),
            (NODE.octets(), 61000),
            0,
            idle,
        );
        for (table, pair) in gone.iter().chain(&stays) {
            for (key, entry) in pair {
                netpath_tests::map_update(&pins.join(table), key, entry);
            }
        }
        netpath_tests::map_update(&pins.join(maps::CONNTRACK6), &half.0, &half.1);
        for (key, entry) in &pair4 {
            netpath_tests::map_update(&pins.join(maps::CONNTRACK), key, entry);
        }

        assert_eq!(ct.collect(dp).unwrap(), 2 + 2 + 2 + 1 + 2, "entries removed");
        let left = |dp: &mut Datapath| {
            let [assured, new] = dp.conntrack_tables::<Ipv6>().unwrap();
            let mut keys: Vec<_> = assured.iter().map(|(k, _)| *k).collect();
            keys.sort_by_key(|k| (k.sport, k.dport));
            (keys, new.len())
        };
        let mut want: Vec<_> = stays.iter().flat_map(|(_, pair)| pair.map(|(k, _)| k)).collect();
        want.sort_by_key(|k| (k.sport, k.dport));
        assert_eq!(left(dp), (want, 0), "IPv6 entries left (assured, count of new)");
        assert!(dp.conntrack_entries::<Ipv4>().unwrap().is_empty(), "IPv4's idle pair");
        let counters = Inspector::new(pins).reason_counters().unwrap();
        let collected = counters.iter().find(|c| c.reason == Reason::CtCollected.name()).unwrap().packets;
        assert_eq!(collected, 9, "counted as collected");
        // A second pass finds nothing more to do.
        assert_eq!(ct.collect(dp).unwrap(), 0);
    })
}

/// A frame as the datapath hands it to the FIB or to WEB: `src` -> `dst` with `ttl`,
/// between `macs` (destination, source).
fn frame(macs: ([u8; 6], [u8; 6]), src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ttl: u8, l4: &[u8]) -> Vec<u8> {
    pkt::eth(macs.0, macs.1, pkt::ETH_IPV4, &pkt::ipv4(src, dst, proto, ttl, &[], l4))
}

#[test]
fn a_routed_prefix_is_forwarded_untranslated_both_ways_and_published_replies_stay_translated() {
    with_nat_pins(|dp, pins| {
        // `--masquerade false`.
        let config = NodeConfig { flags: netpath_common::conntrack::NODE_F_ROUTED, ..dp_config() };
        dp.set_node_config(config).unwrap();
        let m = &mut Model::new(World { config, ..nat_world() });
        let (from_web_macs, to_web_macs) = ((WEB_HOST_MAC, WEB_MAC), (WEB_MAC, WEB_HOST_MAC));
        let client_macs = (UPLINK_MAC, CLIENT_MAC);

        // Out: the container's own address, TTL - 1 (the header checksum with it), to
        // the FIB (the kernel resolves the neighbour), and no conntrack entry.
        let udp = pkt::udp(1111, 53, b"x");
        let out = from_web(dp, m, &frame(from_web_macs, WEB, CLIENT, UDP, 64, &udp));
        assert_eq!(out.action, TC_ACT_REDIRECT, "routed out by the FIB");
        assert_eq!(out.packet, frame(from_web_macs, WEB, CLIENT, UDP, 63, &udp), "translated");
        assert!(dp.conntrack_entries::<Ipv4>().unwrap().is_empty(), "a routed packet made state");
        // An ICMP error about a packet of no tracked flow goes out as it is too.
        let received = pkt::ipv4(CLIENT, WEB, UDP, 63, &[], &pkt::udp(53, 5001, b"?"));
        let error = pkt::icmp_error(3, 3, &received);
        let out = from_web(dp, m, &frame(from_web_macs, WEB, CLIENT, pkt::ICMP, 64, &error));
        assert_eq!(out.action, TC_ACT_REDIRECT, "an ICMP error about no flow was not routed");
        assert_eq!(out.packet, frame(from_web_macs, WEB, CLIENT, pkt::ICMP, 63, &error));

        // In: to the container's address, into it as its gateway, TTL - 1.
        let reply = pkt::udp(53, 1111, b"y");
        let back = uplink(dp, m, &frame(client_macs, CLIENT, WEB, UDP, 64, &reply));
        assert_eq!(back.action, TC_ACT_REDIRECT, "into the container");
        assert_eq!(back.packet, frame(to_web_macs, CLIENT, WEB, UDP, 63, &reply));
        // A pod address no container has is the stack's, untouched.
        let gone = frame(client_macs, CLIENT, Ipv4Addr::new(10, 77, 0, 99), UDP, 64, &reply);
        assert_eq!(uplink(dp, m, &gone).action, TC_ACT_OK);

        // A published port: translated in, and its reply translated back to the node's
        // address, on a routed prefix too.
        let syn = pkt::tcp(40000, 8080, SYN, b"");
        let into = uplink(dp, m, &frame(client_macs, CLIENT, NODE, TCP, 64, &syn));
        assert_eq!(into.action, TC_ACT_REDIRECT);
        let want = pkt::tcp(40000, 80, SYN, b"");
        assert_eq!(into.packet, frame(to_web_macs, CLIENT, WEB, TCP, 63, &want));
        let syn_ack = pkt::tcp(80, 40000, SYN | ACK, b"");
        let out = from_web(dp, m, &frame(from_web_macs, WEB, CLIENT, TCP, 64, &syn_ack));
        assert_eq!(out.action, TC_ACT_REDIRECT);
        let want = pkt::tcp(8080, 40000, SYN | ACK, b"");
        assert_eq!(
            out.packet,
            frame(from_web_macs, NODE, CLIENT, TCP, 63, &want),
            "the reply left untranslated"
        );

        let counters = Inspector::new(pins).reason_counters().unwrap();
        let count = |r: Reason| counters.iter().find(|c| c.reason == r.name()).unwrap().packets;
        assert_eq!(count(Reason::Routed), 3, "{counters:?}");
        assert_eq!(count(Reason::SnatNewFlow), 0, "{counters:?}");
    });
}

/// A TCP flow's first packet sets its entry's state as any later packet would, the same
/// in both families (packet_nat6 has the IPv6 half): a SYN opens (syn), a bare ACK (the
/// rest of a connection the table lost) is established, a RST or FIN is closing and is
/// collected soon. The reply direction starts in syn either way.
#[test]
fn a_tcp_flows_first_packet_sets_its_state() {
    use netpath_common::conntrack::{TCP_CLOSING, TCP_ESTABLISHED, TCP_SYN};
    with_nat(|dp| {
        let mut cfg = dp_config();
        cfg.nat_port_max = cfg.nat_port_min + 16;
        dp.set_node_config(cfg).unwrap();
        for (sport, flags, want) in [
            (5001, SYN, TCP_SYN),
            (5002, ACK, TCP_ESTABLISHED),
            (5003, pkt::RST, TCP_CLOSING),
            (5004, pkt::FIN | ACK, TCP_CLOSING),
        ] {
            assert_eq!(from_web_unchecked(dp, &web_tcp(sport, flags, 1, None)).action, TC_ACT_REDIRECT);
            let entries = dp.conntrack_entries::<Ipv4>().unwrap();
            let states = netpath_tests::tcp_states_of(&entries, sport);
            assert_eq!(states, (want, TCP_SYN), "first packet flags {flags:#x}: original, reply");
        }
    });
}
