//! IPv6 through from_container with BPF_PROG_TEST_RUN (container_path6, tail-called by
//! the container path for every IPv6 packet): the gateway's neighbour discovery, source
//! validation, delivery to a local container, and what stays the stack's. Every output
//! is also checked against the reference model. Each test runs in its own namespace,
//! where the loopback device (ifindex 1) plays endpoint a's host veth.
use std::net::{Ipv4Addr, Ipv6Addr};

use netpath::datapath::{program, Datapath, PacketRun};
use netpath_common::{conntrack::NODE_F_IPV6, EndpointInfo, GATEWAY6};
use netpath_tests::model::{Model, World};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
const LO: u32 = 1;

const A_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const A_MAC: [u8; 6] = [0x0a, 0x58, 10, 77, 0, 2];
const A_HOST_MAC: [u8; 6] = [0x0e, 0, 0, 0, 0, 2];
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
const B_MAC: [u8; 6] = [0x0a, 0x58, 10, 77, 0, 3];
const B_HOST_MAC: [u8; 6] = [0x0e, 0, 0, 0, 0, 3];

const A6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2);
const B6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 3);
/// The link-local addresses the kernel derives from the containers' MACs (EUI-64).
const A_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x0858, 0x0aff, 0xfe4d, 2);
const B_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x0858, 0x0aff, 0xfe4d, 3);
const OUTSIDE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

const ICMPV6: u8 = 58;
const UDP: u8 = 17;
const HOP_BY_HOP: u8 = 0;

fn info(host_ifindex: u32, mac: [u8; 6], host_mac: [u8; 6]) -> EndpointInfo {
    EndpointInfo { host_ifindex, mac, host_mac, flags: 0, counter_slot: 0 }
}

/// a behind lo, b behind an ifindex the redirect is never executed to; both dual-stack,
/// on a node with an IPv6 pod CIDR.
fn world() -> World {
    World {
        endpoints: vec![(A_IP, info(LO, A_MAC, A_HOST_MAC)), (B_IP, info(4242, B_MAC, B_HOST_MAC))],
        endpoints6: vec![(A6, A_IP), (A_LL, A_IP), (B6, B_IP), (B_LL, B_IP)],
        config: netpath_common::NodeConfig { flags: NODE_F_IPV6, ..Default::default() },
        ..Default::default()
    }
}

struct Checked<'a> {
    dp: &'a mut Datapath,
    model: Model,
}

fn with_datapath(check: impl FnOnce(&mut Checked, &std::path::Path) + Send + 'static) {
    netpath_tests::with_datapath_pins(&[], move |dp, dir| {
        let w = world();
        for (ip, info) in &w.endpoints {
            dp.register(*ip, *info).unwrap();
        }
        for (ip6, owner) in &w.endpoints6 {
            let info = w.endpoints.iter().find(|(ip, _)| ip == owner).unwrap().1;
            dp.register6(*ip6, *owner, info).unwrap();
        }
        dp.set_node_config(w.config).unwrap();
        check(&mut Checked { dp, model: Model::new(w) }, dir);
    })
}

/// from_container on `packet` from a's veth; the model must agree on action and bytes.
fn run(c: &mut Checked, packet: &[u8]) -> PacketRun {
    let out = c.dp.test_run(program::FROM_CONTAINER, packet, LO).expect("BPF_PROG_TEST_RUN");
    c.model.from_container(packet, LO).assert_matches(out.action, &out.packet);
    out
}

/// Ethernet + IPv6 header + `payload` (next header `next`).
fn ipv6(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next: u8,
    hop: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&dst_mac);
    p.extend_from_slice(&src_mac);
    p.extend_from_slice(&0x86ddu16.to_be_bytes());
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, hop]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

/// The ICMPv6 checksum over the pseudo-header and the message at offset 54 (0 when the
/// message carries a correct one).
fn icmp6_sum(p: &[u8]) -> u16 {
    let len = u16::from_be_bytes([p[18], p[19]]) as usize;
    let mut data = p[22..54].to_vec();
    data.extend_from_slice(&(len as u32).to_be_bytes());
    data.extend_from_slice(&[0, 0, 0, ICMPV6]);
    data.extend_from_slice(&p[54..54 + len]);
    let mut sum: u32 =
        data.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A neighbour solicitation for fe80::1 from `src` (to its solicited-node group), with
/// a source link-layer address option naming `slla` if given; checksum correct.
fn solicitation(eth_src: [u8; 6], src: Ipv6Addr, slla: Option<[u8; 6]>, hop: u8) -> Vec<u8> {
    solicitation_to(eth_src, src, Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 1), slla, hop)
}

/// The same, sent to `dst` (fe80::1 itself: a unicast one, as reachability checks are).
fn solicitation_to(
    eth_src: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    slla: Option<[u8; 6]>,
    hop: u8,
) -> Vec<u8> {
    let mut msg = vec![135, 0, 0, 0, 0, 0, 0, 0];
    msg.extend_from_slice(&GATEWAY6);
    if let Some(mac) = slla {
        msg.extend_from_slice(&[1, 1]);
        msg.extend_from_slice(&mac);
    }
    let eth_dst = if dst.octets()[0] == 0xff { [0x33, 0x33, 0xff, 0, 0, 1] } else { A_HOST_MAC };
    let mut p = ipv6(eth_src, eth_dst, src, dst, ICMPV6, hop, &msg);
    let c = icmp6_sum(&p);
    p[56..58].copy_from_slice(&c.to_be_bytes());
    assert_eq!(icmp6_sum(&p), 0);
    p
}

fn udp6(src_mac: [u8; 6], dst_mac: [u8; 6], src: Ipv6Addr, dst: Ipv6Addr, hop: u8) -> Vec<u8> {
    let mut udp = vec![0x30, 0x39, 0x13, 0x89, 0, 24, 0, 0];
    udp.extend_from_slice(b"netpath-payload!");
    ipv6(src_mac, dst_mac, src, dst, UDP, hop, &udp)
}

#[test]
fn a_solicitation_for_the_gateway_is_answered_with_the_host_veth_mac() {
    with_datapath(|c, _| {
        let gateway = Ipv6Addr::from(GATEWAY6);
        let group = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 1);
        for (src, dst, slla) in [(A_LL, group, Some(A_MAC)), (A_LL, gateway, None), (A6, group, Some(A_MAC))]
        {
            let out = run(c, &solicitation_to(A_MAC, src, dst, slla, 255));
            assert_eq!(out.action, TC_ACT_REDIRECT, "the advertisement goes back out of the veth");
            let p = &out.packet;
            assert_eq!((&p[0..6], &p[6..12]), (&A_MAC[..], &A_HOST_MAC[..]), "eth dst, src");
            assert_eq!(&p[22..38], &GATEWAY6, "from the gateway");
            assert_eq!(&p[38..54], &src.octets(), "to the solicitor");
            assert_eq!(p[21], 255, "hop limit");
            assert_eq!((p[54], p[55]), (136, 0), "neighbour advertisement");
            assert_eq!(&p[58..62], &[0xe0, 0, 0, 0], "router, solicited, override");
            assert_eq!(&p[62..78], &GATEWAY6, "target");
            match slla {
                Some(_) => assert_eq!(&p[78..86], &[2, 1, 0x0e, 0, 0, 0, 0, 2], "target link-layer address"),
                None => assert_eq!(p.len(), 78, "unicast, no option asked: none given"),
            }
            assert_eq!(icmp6_sum(p), 0, "ICMPv6 checksum of the advertisement");
        }
        // A multicast solicitation must name its sender's link-layer address (RFC 4861
        // 4.3): one without is left to the stack, unanswered.
        let bare = solicitation(A_MAC, A_LL, None, 255);
        let out = run(c, &bare);
        assert_eq!((out.action, out.packet), (TC_ACT_OK, bare));
    });
}

#[test]
fn address_probes_and_spoofed_solicitations_get_no_answer() {
    with_datapath(|c, _| {
        // Duplicate address detection (from ::) must see silence.
        let probe = solicitation(A_MAC, Ipv6Addr::UNSPECIFIED, None, 255);
        let out = run(c, &probe);
        assert_eq!((out.action, out.packet), (TC_ACT_OK, probe));
        // a asking in b's name, with a's MAC in the frame, with a MAC not its own, or
        // naming another link-layer address in its option: dropped.
        assert_eq!(run(c, &solicitation(A_MAC, B_LL, Some(A_MAC), 255)).action, TC_ACT_SHOT);
        assert_eq!(run(c, &solicitation([0x0a, 0, 0, 0, 0, 9], A_LL, None, 255)).action, TC_ACT_SHOT);
        assert_eq!(run(c, &solicitation(A_MAC, A_LL, Some([0x0a, 0, 0, 0, 0, 9]), 255)).action, TC_ACT_SHOT);
        // A solicitation that crossed a router (hop limit below 255) is invalid.
        assert_eq!(run(c, &solicitation(A_MAC, A_LL, Some(A_MAC), 64)).action, TC_ACT_SHOT);
    });
}

#[test]
fn an_ipv6_packet_to_a_local_container_is_rewritten_and_redirected() {
    with_datapath(|c, _| {
        let sent = udp6(A_MAC, A_HOST_MAC, A6, B6, 64);
        let out = run(c, &sent);
        assert_eq!(out.action, TC_ACT_REDIRECT);
        let p = &out.packet;
        assert_eq!((&p[0..6], &p[6..12]), (&B_MAC[..], &B_HOST_MAC[..]), "to b's MAC from b's gateway");
        assert_eq!(p[21], 63, "hop limit decremented");
        assert_eq!(&p[12..21], &sent[12..21], "the rest of the header untouched");
        assert_eq!(&p[22..], &sent[22..], "addresses and payload untouched");

        // Extension headers are carried, never parsed: a hop-by-hop header (PadN) in
        // front of UDP arrives byte for byte.
        let mut hbh = vec![UDP, 0, 1, 4, 0, 0, 0, 0];
        hbh.extend_from_slice(&udp6(A_MAC, A_HOST_MAC, A6, B6, 64)[54..]);
        let sent = ipv6(A_MAC, A_HOST_MAC, A6, B6, HOP_BY_HOP, 64, &hbh);
        let out = run(c, &sent);
        assert_eq!(out.action, TC_ACT_REDIRECT);
        assert_eq!(&out.packet[54..], &sent[54..], "extension header and payload untouched");
    });
}

#[test]
fn spoofed_ipv6_is_dropped_and_what_is_not_a_local_containers_goes_to_the_stack() {
    with_datapath(|c, _| {
        let spoofed = [
            udp6(A_MAC, A_HOST_MAC, Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0x99), B6, 64),
            // b's address to all nodes (whose echo replies would go to b), and b's
            // link-local address to a's gateway's: multicast and link-local are checked too.
            ipv6(
                A_MAC,
                [0x33, 0x33, 0, 0, 0, 1],
                B6,
                "ff02::1".parse().unwrap(),
                ICMPV6,
                64,
                &[128, 0, 0, 0, 0, 1, 0, 1],
            ),
            udp6(A_MAC, A_HOST_MAC, B_LL, "fe80::1:2".parse().unwrap(), 64),
            // Only ICMPv6 may come from :: (address configuration).
            udp6(A_MAC, A_HOST_MAC, Ipv6Addr::UNSPECIFIED, B6, 64),
            // b's address from a's veth (lo here, b lives behind 4242).
            udp6(B_MAC, B_HOST_MAC, B6, A6, 64),
            // a's address, another MAC.
            udp6([0x0a, 0, 0, 0, 0, 9], A_HOST_MAC, A6, B6, 64),
        ];
        for p in spoofed {
            assert_eq!(run(c, &p).action, TC_ACT_SHOT);
        }
        let to_stack = [
            // Link-local traffic is never routed, not even to another container's.
            udp6(A_MAC, A_HOST_MAC, A_LL, B_LL, 64),
            udp6(A_MAC, A_HOST_MAC, A6, B_LL, 64),
            // A router solicitation, multicast.
            ipv6(
                A_MAC,
                [0x33, 0x33, 0, 0, 0, 2],
                A_LL,
                "ff02::2".parse().unwrap(),
                ICMPV6,
                255,
                &[133, 0, 0, 0, 0, 0, 0, 0],
            ),
            // The outside: the stack's until NAT66.
            udp6(A_MAC, A_HOST_MAC, A6, OUTSIDE6, 64),
            // About to expire: the stack sends the time-exceeded.
            udp6(A_MAC, A_HOST_MAC, A6, B6, 1),
        ];
        for p in to_stack {
            let out = run(c, &p);
            assert_eq!((out.action, &out.packet), (TC_ACT_OK, &p));
        }
        // Not IPv6 after all (version 4 in an IPv6 frame): malformed.
        let mut bad = udp6(A_MAC, A_HOST_MAC, A6, B6, 64);
        bad[14] = 0x40;
        assert_eq!(run(c, &bad).action, TC_ACT_SHOT);
    });
}

/// The IPv6 source check reads the device's SENDERS slot too (the endpoint's address
/// and its link-local one, for its packets and its neighbour solicitations), and
/// ENDPOINTS6 only for what the slot does not hold; an agent that takes over fills the
/// slot's IPv6 addresses from ENDPOINTS6.
#[test]
fn the_ipv6_source_check_reads_the_senders_slot() {
    with_datapath(|c, pins| {
        let endpoints6 = pins.join(netpath_common::maps::ENDPOINTS6);
        let delete = |ip: Ipv6Addr| {
            let o = ip.octets().map(|b| b.to_string());
            let mut args = vec!["bpftool", "map", "delete", "pinned", endpoints6.to_str().unwrap(), "key"];
            args.extend(o.iter().map(String::as_str));
            netpath_tests::sh(&args);
        };
        let action = |dp: &mut Datapath, p: &[u8]| {
            dp.test_run(program::FROM_CONTAINER, p, LO).expect("BPF_PROG_TEST_RUN").action
        };
        let a_to_b = udp6(A_MAC, A_HOST_MAC, A6, B6, 64);
        let asks_gateway = solicitation(A_MAC, A_LL, Some(A_MAC), 255);
        let a = info(LO, A_MAC, A_HOST_MAC);
        // Only the slot vouches for a once its ENDPOINTS6 entries are gone behind the
        // agent's back: still forwarded and answered, so the slot is what was read.
        delete(A6);
        delete(A_LL);
        assert_eq!(action(c.dp, &a_to_b), TC_ACT_REDIRECT, "a's address: the slot was not read");
        assert_eq!(
            action(c.dp, &asks_gateway),
            TC_ACT_REDIRECT,
            "a's link-local address: the slot was not read"
        );

        // Removing an address takes it out of the slot before its entry goes.
        c.dp.register6(A6, A_IP, a).unwrap();
        c.dp.register6(A_LL, A_IP, a).unwrap();
        c.dp.unregister6(A6).unwrap();
        assert_eq!(action(c.dp, &a_to_b), TC_ACT_SHOT, "a's removed address still vouched for");
        assert_eq!(action(c.dp, &asks_gateway), TC_ACT_REDIRECT, "the link-local address stays");

        // The IPv4 entry rewritten under other info (a port published to a): the IPv6
        // address, added under the old info, leaves the slot until register6 adds it
        // under the new (the slot must answer what ENDPOINTS6 would).
        let published = EndpointInfo { flags: netpath_common::ENDPOINT_F_PUBLISHED, ..a };
        c.dp.register6(A6, A_IP, a).unwrap();
        c.dp.register(A_IP, published).unwrap();
        delete(A6);
        assert_eq!(action(c.dp, &a_to_b), TC_ACT_SHOT, "a's IPv6 address kept in the slot under old info");
        c.dp.register6(A6, A_IP, published).unwrap();
        delete(A6);
        assert_eq!(action(c.dp, &a_to_b), TC_ACT_REDIRECT, "a's IPv6 address not added under the new info");
        c.dp.register(A_IP, a).unwrap();

        // The next agent (a restart) fills the slot from ENDPOINTS6.
        c.dp.register6(A6, A_IP, a).unwrap();
        let mut next = Datapath::load(pins, 1024).expect("load the next agent's datapath");
        next.adopt_counter_slots().unwrap();
        next.set_endpoint_slot(true).unwrap();
        delete(A6);
        assert_eq!(
            action(&mut next, &a_to_b),
            TC_ACT_REDIRECT,
            "the next agent did not fill a's IPv6 address"
        );
    });
}

/// An endpoint's IPv6 traffic counts in its one counter slot, next to its IPv4 traffic.
#[test]
fn ipv6_counts_in_the_endpoints_own_counters() {
    with_datapath(|c, dir| {
        let inspector = netpath::datapath::Inspector::new(dir);
        let count = |ip: Ipv4Addr| {
            let e = inspector.endpoint_counters().unwrap().into_iter().find(|e| e.ip == ip).unwrap();
            (e.tx_packets, e.rx_packets)
        };
        let six = inspector.endpoints6().unwrap();
        let v4 = inspector.endpoints().unwrap();
        for (ip6, owner) in world().endpoints6 {
            let slot6 = six.iter().find(|(a, _)| *a == ip6).unwrap().1.counter_slot;
            let slot4 = v4.iter().find(|(a, _)| *a == owner).unwrap().1.counter_slot;
            assert_eq!(slot6, slot4, "{ip6} counts with {owner}");
        }
        for _ in 0..2 {
            assert_eq!(run(c, &udp6(A_MAC, A_HOST_MAC, A6, B6, 64)).action, TC_ACT_REDIRECT);
        }
        assert_eq!((count(A_IP), count(B_IP)), ((2, 0), (0, 2)));
        c.dp.unregister6(B6).unwrap();
        // (The model's world keeps b6: run the program alone.)
        let out = c.dp.test_run(program::FROM_CONTAINER, &udp6(A_MAC, A_HOST_MAC, A6, B6, 64), LO).unwrap();
        assert_eq!(out.action, TC_ACT_OK, "b's IPv6 address gone: no longer a local container");
    });
}

/// The container path hands IPv6 to its own program through its pinned slot
/// (ENDPOINT_PROGS6): an empty one drops IPv6, and only IPv6.
#[test]
fn ipv6_runs_its_own_program_through_the_endpoints_slot() {
    with_datapath(|c, dir| {
        let packet = udp6(A_MAC, A_HOST_MAC, A6, B6, 64);
        let through = c.dp.test_run(program::FROM_CONTAINER, &packet, LO).unwrap();
        let direct = c.dp.test_run(program::CONTAINER_PATH6, &packet, LO).unwrap();
        assert_eq!((through.action, &through.packet), (direct.action, &direct.packet));
        assert_eq!(through.action, TC_ACT_REDIRECT);
        // The IPv6 slot emptied (bpftool, the test's tool): IPv6 drops, IPv4 still flows.
        let pin = dir.join("ENDPOINT_PROGS6");
        netpath_tests::sh(&[
            "bpftool",
            "map",
            "delete",
            "pinned",
            pin.to_str().unwrap(),
            "key",
            "0",
            "0",
            "0",
            "0",
        ]);
        assert_eq!(c.dp.test_run(program::FROM_CONTAINER, &packet, LO).unwrap().action, TC_ACT_SHOT);
        let v4 = ipv4_udp(A_MAC, A_HOST_MAC, A_IP, B_IP);
        assert_eq!(c.dp.test_run(program::FROM_CONTAINER, &v4, LO).unwrap().action, TC_ACT_REDIRECT);
        c.dp.set_endpoint_slot(true).unwrap();
        assert_eq!(c.dp.test_run(program::FROM_CONTAINER, &packet, LO).unwrap().action, TC_ACT_REDIRECT);
    });
}

/// Ethernet + IPv4 + UDP (checksum 0: none), header checksum correct.
fn ipv4_udp(src_mac: [u8; 6], dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&dst_mac);
    p.extend_from_slice(&src_mac);
    p.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 28, 0, 1, 0x40, 0, 64, UDP, 0, 0];
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let mut sum: u32 = ip.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]) as u32).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p.extend(ip);
    p.extend_from_slice(&[0x30, 0x39, 0x13, 0x89, 0, 8, 0, 0]);
    p
}

/// On a node without an IPv6 pod CIDR, containers' IPv6 is the stack's, untouched and
/// unchecked, as it was before IPv6 support (bridged containers may speak it among
/// themselves).
#[test]
fn without_an_ipv6_pod_cidr_ipv6_is_the_stacks() {
    with_datapath(|c, _| {
        c.dp.set_node_config(netpath_common::NodeConfig::default()).unwrap();
        for p in [udp6(A_MAC, A_HOST_MAC, A6, B6, 64), solicitation(A_MAC, A_LL, Some(A_MAC), 255)] {
            let out = c.dp.test_run(program::FROM_CONTAINER, &p, LO).unwrap();
            assert_eq!((out.action, out.packet), (TC_ACT_OK, p));
        }
    });
}

/// Cluster mode, IPv6: a packet for another node's pod that is bigger than the path to
/// it (`path_mtu` 1450: the overlay's) is answered, byte for byte, with ICMPv6 packet too
/// big from a's gateway, quoting the packet as sent; one that fits goes into the
/// overlay; an ICMPv6 error that does not fit gets no error back.
#[test]
fn a_packet_too_big_for_the_path_to_another_node_gets_packet_too_big_back() {
    with_datapath(|c, _| {
        let dp = &mut *c.dp;
        dp.set_node_config(netpath_common::NodeConfig {
            flags: NODE_F_IPV6,
            tunnel_ifindex: 4343,
            vni: 1,
            path_mtu: 1450,
            ..Default::default()
        })
        .unwrap();
        dp.set_node_config6(netpath_common::NodeConfig6 {
            pod_net: Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0).octets(),
            pod_prefix: 64,
            cluster_net: Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0).octets(),
            cluster_prefix: 48,
            node_prefix: 64,
            ..Default::default()
        })
        .unwrap();
        let route = netpath_common::NodeRoute { underlay: [192, 168, 77, 12], flags: 0 };
        dp.set_node_routes6(&[(Ipv6Addr::new(0xfd00, 0x77, 0, 1, 0, 0, 0, 0), route)]).unwrap();
        dp.set_cluster_programs6(true).unwrap();
        let pod = Ipv6Addr::new(0xfd00, 0x77, 0, 1, 0, 0, 0, 5);
        let sized = |ip_len: usize, next: u8, first: u8| {
            let mut l4 = vec![first; ip_len - 40];
            if next == UDP {
                l4[..4].copy_from_slice(&[0x30, 0x39, 0x13, 0x89]);
            }
            ipv6(A_MAC, A_HOST_MAC, A6, pod, next, 64, &l4)
        };
        let from_a = |dp: &mut Datapath, p: &[u8]| dp.test_run(program::FROM_CONTAINER, p, LO).unwrap();

        let fits = sized(1450, UDP, 0);
        let out = from_a(dp, &fits);
        assert_eq!(out.action, TC_ACT_REDIRECT, "into the overlay");
        assert_eq!(out.packet.len(), fits.len());
        assert_eq!(out.packet[21], 63, "hop limit: the pod's gateway routed it");

        let big = sized(1451, UDP, 0);
        let out = from_a(dp, &big);
        assert_eq!(out.action, TC_ACT_REDIRECT, "back to a");
        let p = &out.packet;
        assert_eq!(p.len(), 14 + 40 + 8 + 472, "IPv6, ICMPv6 and a quote of 472 bytes");
        assert_eq!((&p[0..6], &p[6..12], &p[12..14]), (&A_MAC[..], &A_HOST_MAC[..], &[0x86, 0xdd][..]));
        assert_eq!(&p[14..22], &[0x60, 0, 0, 0, 0x01, 0xe0, ICMPV6, 64], "version, length 480, ICMPv6");
        assert_eq!((&p[22..38], &p[38..54]), (&GATEWAY6[..], &A6.octets()[..]), "from fe80::1 to a");
        assert_eq!(&p[54..56], &[2, 0], "packet too big");
        assert_eq!(&p[58..62], &1450u32.to_be_bytes(), "the path's MTU");
        assert_eq!(icmp6_sum(p), 0, "ICMPv6 checksum");
        assert_eq!(&p[62..], &big[14..14 + 472], "the quote: the packet as a sent it");

        // An ICMPv6 error (destination unreachable) too big: dropped, not answered.
        let error = sized(1451, ICMPV6, 1);
        assert_eq!(from_a(dp, &error).action, TC_ACT_SHOT);
        // An echo request is no error: answered.
        let echo = sized(1451, ICMPV6, 128);
        assert_eq!(from_a(dp, &echo).action, TC_ACT_REDIRECT);
    });
}
