//! Packet-level tests of from_container (and to_subif) with BPF_PROG_TEST_RUN: crafted
//! packets in, the program's action and rewritten packet out. Each test runs in its own
//! namespace, where the loopback device (ifindex 1) plays the container's host veth,
//! and a veth with the index the agent would give one a macvlan/ipvlan endpoint's
//! sub-interface. The last test attaches a sub-interface's programs in real container
//! namespaces and sends real packets through them.
use std::net::Ipv4Addr;

use netpath::datapath::{program, Datapath, Inspector, PacketRun};
use netpath_common::{subif_ifindex, EndpointInfo, ENDPOINT_F_BRIDGED, ENDPOINT_F_SUBIF};
use netpath_tests::{
    model::{Model, World},
    pkt,
};

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
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// The datapath with endpoints a (behind lo) and b (behind an ifindex the redirect is
/// never executed to), each registered with `flags`.
fn world(flags: u16) -> World {
    World {
        endpoints: vec![
            (
                A_IP,
                EndpointInfo { host_ifindex: LO, mac: A_MAC, host_mac: A_HOST_MAC, flags, counter_slot: 0 },
            ),
            (
                B_IP,
                EndpointInfo { host_ifindex: 4242, mac: B_MAC, host_mac: B_HOST_MAC, flags, counter_slot: 0 },
            ),
        ],
        ..Default::default()
    }
}

/// The datapath, and the reference model of the same world, every output checked
/// against it.
struct Checked<'a> {
    dp: &'a mut Datapath,
    model: Model,
}

fn with_datapath_flags(flags: u16, check: impl FnOnce(&mut Checked) + Send + 'static) {
    netpath_tests::with_datapath(&[], move |dp| {
        for (ip, info) in world(flags).endpoints {
            dp.register(ip, info).unwrap();
        }
        check(&mut Checked { dp, model: Model::new(world(flags)) });
    })
}

fn with_datapath(check: impl FnOnce(&mut Checked) + Send + 'static) {
    with_datapath_flags(0, check)
}

fn arp(oper: u16, sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&[0xff; 6]);
    p.extend_from_slice(&sha);
    p.extend_from_slice(&0x0806u16.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0x08, 0, 6, 4]);
    p.extend_from_slice(&oper.to_be_bytes());
    p.extend_from_slice(&sha);
    p.extend_from_slice(&spa.octets());
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&tpa.octets());
    p
}

/// RFC 1071 checksum; 0 over a header that carries a correct checksum.
fn csum(data: &[u8]) -> u16 {
    let mut sum: u32 =
        data.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ethernet + IPv4 + ICMP echo request, with correct checksums.
fn icmp_echo(src_mac: [u8; 6], dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, ttl: u8) -> Vec<u8> {
    icmp_message(src_mac, dst_mac, src, dst, ttl, 8, b"netpath-payload!")
}

/// Ethernet + IPv4 (DF) + ICMP of type `kind` carrying `data`, with correct checksums.
fn icmp_message(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    kind: u8,
    data: &[u8],
) -> Vec<u8> {
    let mut icmp = vec![kind, 0, 0, 0, 0x12, 0x34, 0, 1];
    icmp.extend_from_slice(data);
    let c = csum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let total = (20 + icmp.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, ttl, 1, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut p = Vec::new();
    p.extend_from_slice(&dst_mac);
    p.extend_from_slice(&src_mac);
    p.extend_from_slice(&0x0800u16.to_be_bytes());
    p.extend(ip);
    p.extend(icmp);
    p
}

/// from_container on `packet` from a's veth; the model must agree on action and bytes.
fn run(c: &mut Checked, packet: &[u8]) -> PacketRun {
    run_at(c, packet, LO)
}

/// from_container on `packet` from the device at `ifindex`, checked against the model.
fn run_at(c: &mut Checked, packet: &[u8], ifindex: u32) -> PacketRun {
    let out = c.dp.test_run(program::FROM_CONTAINER, packet, ifindex).expect("BPF_PROG_TEST_RUN");
    c.model.from_container(packet, ifindex).assert_matches(out.action, &out.packet);
    out
}

#[test]
fn arp_request_for_the_gateway_is_answered_with_the_host_veth_mac() {
    with_datapath(|dp| {
        let out = run(dp, &arp(1, A_MAC, A_IP, GATEWAY));
        assert_eq!(out.action, TC_ACT_REDIRECT, "reply must go back out of the veth");
        let p = &out.packet;
        assert_eq!(&p[0..6], &A_MAC, "eth dst");
        assert_eq!(&p[6..12], &A_HOST_MAC, "eth src");
        assert_eq!(&p[20..22], &[0, 2], "ARP reply opcode");
        assert_eq!(&p[22..28], &A_HOST_MAC, "sender MAC");
        assert_eq!(&p[28..32], &GATEWAY.octets(), "sender IP");
        assert_eq!(&p[32..38], &A_MAC, "target MAC");
        assert_eq!(&p[38..42], &A_IP.octets(), "target IP");
    });
}

#[test]
fn address_probes_and_spoofed_arp_get_no_answer() {
    with_datapath(|dp| {
        // Duplicate address detection (sender 0.0.0.0) must see silence.
        let probe = arp(1, A_MAC, Ipv4Addr::UNSPECIFIED, A_IP);
        let out = run(dp, &probe);
        assert_eq!((out.action, out.packet), (TC_ACT_OK, probe));
        // a asking in b's name is dropped.
        assert_eq!(run(dp, &arp(1, A_MAC, B_IP, GATEWAY)).action, TC_ACT_SHOT);
        // Right address, wrong MAC: dropped too.
        assert_eq!(run(dp, &arp(1, [0x0a, 0, 0, 0, 0, 9], A_IP, GATEWAY)).action, TC_ACT_SHOT);
    });
}

#[test]
fn packet_to_a_local_container_is_rewritten_and_redirected() {
    with_datapath(|dp| {
        let out = run(dp, &icmp_echo(A_MAC, A_HOST_MAC, A_IP, B_IP, 64));
        assert_eq!(out.action, TC_ACT_REDIRECT);
        let p = &out.packet;
        assert_eq!(&p[0..6], &B_MAC, "delivered to b's MAC");
        assert_eq!(&p[6..12], &B_HOST_MAC, "from b's gateway MAC");
        assert_eq!(p[14 + 8], 63, "TTL decremented");
        assert_eq!(csum(&p[14..34]), 0, "IPv4 checksum still valid after the TTL rewrite");
        assert_eq!(&p[26..30], &A_IP.octets(), "source address untouched");
    });
}

#[test]
fn spoofed_and_truncated_packets_are_dropped() {
    with_datapath(|dp| {
        let spoofed = icmp_echo(A_MAC, A_HOST_MAC, Ipv4Addr::new(10, 77, 0, 99), B_IP, 64);
        assert_eq!(run(dp, &spoofed).action, TC_ACT_SHOT);
        // b's address arriving from a's veth (lo here, b lives behind 4242).
        let wrong_veth = icmp_echo(B_MAC, B_HOST_MAC, B_IP, A_IP, 64);
        assert_eq!(run(dp, &wrong_veth).action, TC_ACT_SHOT);
        // BPF_PROG_TEST_RUN itself refuses a truncated IPv4 header, so a cut ARP
        // stands in for the malformed case.
        let truncated = &arp(1, A_MAC, A_IP, GATEWAY)[..14 + 20];
        assert_eq!(run(dp, truncated).action, TC_ACT_SHOT);
    });
}

/// The source check reads the slot of SENDERS that the packet's ifindex names (one
/// array load), and ENDPOINTS only when that slot holds another device: here c, whose
/// device shares a's slot. What the slot vouches for is what ENDPOINTS holds, kept so by
/// the agent's writes (a slot filled after its entry, emptied before) and rebuilt by an
/// agent that takes over.
#[test]
fn the_source_check_reads_the_senders_slot_and_endpoints_where_a_device_has_none() {
    use netpath_common::maps::{ENDPOINTS, SENDER_SLOTS};
    const C_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 4);
    const C_MAC: [u8; 6] = [0x0a, 0x58, 10, 77, 0, 4];
    const C_HOST_MAC: [u8; 6] = [0x0e, 0, 0, 0, 0, 4];
    // A device whose ifindex falls in lo's slot.
    const COLLIDING: u32 = LO + SENDER_SLOTS;
    let index = COLLIDING.to_string();
    let prepare: &[&[&str]] =
        &[&["link", "add", "collide0", "index", &index, "type", "veth", "peer", "name", "collide1"]];
    netpath_tests::with_datapath_pins(prepare, |dp, pins| {
        for (ip, info) in world(0).endpoints {
            dp.register(ip, info).unwrap();
        }
        let c = EndpointInfo {
            host_ifindex: COLLIDING,
            mac: C_MAC,
            host_mac: C_HOST_MAC,
            flags: 0,
            counter_slot: 0,
        };
        dp.register(C_IP, c).unwrap();
        let action = |dp: &mut Datapath, packet: &[u8], ifindex: u32| {
            dp.test_run(program::FROM_CONTAINER, packet, ifindex).expect("BPF_PROG_TEST_RUN").action
        };
        let a_to_b = icmp_echo(A_MAC, A_HOST_MAC, A_IP, B_IP, 64);
        let c_to_b = icmp_echo(C_MAC, C_HOST_MAC, C_IP, B_IP, 64);
        assert_eq!(action(dp, &a_to_b, LO), TC_ACT_REDIRECT);
        assert_eq!(action(dp, &c_to_b, COLLIDING), TC_ACT_REDIRECT, "c, checked through ENDPOINTS");
        // a's slot does not speak for c's device: c cannot send as a.
        let c_as_a = icmp_echo(A_MAC, C_HOST_MAC, A_IP, B_IP, 64);
        assert_eq!(action(dp, &c_as_a, COLLIDING), TC_ACT_SHOT);
        assert_eq!(action(dp, &icmp_echo(C_MAC, A_HOST_MAC, C_IP, B_IP, 64), LO), TC_ACT_SHOT, "a as c");

        // With a's ENDPOINTS entry removed behind the agent's back, only a's slot
        // vouches for a: still forwarded, so the slot is what the check read.
        let endpoints = pins.join(ENDPOINTS);
        let delete = |ip: Ipv4Addr| {
            let o = ip.octets().map(|b| b.to_string());
            let mut args = vec!["bpftool", "map", "delete", "pinned", endpoints.to_str().unwrap(), "key"];
            args.extend(o.iter().map(String::as_str));
            netpath_tests::sh(&args);
        };
        delete(A_IP);
        assert_eq!(action(dp, &a_to_b, LO), TC_ACT_REDIRECT, "a's slot was not read");
        // c has no slot: without its entry it is refused.
        delete(C_IP);
        assert_eq!(action(dp, &c_to_b, COLLIDING), TC_ACT_SHOT);

        // An agent that takes over (a restart) starts with an empty SENDERS and fills it
        // from ENDPOINTS: a's slot again, from its entry.
        dp.register(A_IP, world(0).endpoints[0].1).unwrap();
        let mut next = Datapath::load(pins, 1024).expect("load the next agent's datapath");
        next.adopt_counter_slots().unwrap();
        next.set_endpoint_slot(true).unwrap();
        delete(A_IP);
        assert_eq!(action(&mut next, &a_to_b, LO), TC_ACT_REDIRECT, "the next agent did not fill a's slot");

        // a made again behind another device: its old device's slot goes first.
        let a = world(0).endpoints[0].1;
        next.register(A_IP, a).unwrap();
        next.register(A_IP, EndpointInfo { host_ifindex: COLLIDING, ..a }).unwrap();
        assert_eq!(action(&mut next, &a_to_b, LO), TC_ACT_SHOT, "a's old device still vouched for");
        assert_eq!(action(&mut next, &a_to_b, COLLIDING), TC_ACT_REDIRECT);
        // Removing the endpoint empties its slot before its entry: refused from then on.
        next.register(A_IP, a).unwrap();
        next.unregister(A_IP).unwrap();
        assert_eq!(action(&mut next, &a_to_b, LO), TC_ACT_SHOT, "a's slot outlived its entry");
    });
}

#[test]
fn other_destinations_and_expiring_ttl_go_to_the_stack_unchanged() {
    with_datapath(|dp| {
        let outside = icmp_echo(A_MAC, A_HOST_MAC, A_IP, Ipv4Addr::new(192, 168, 77, 2), 64);
        let out = run(dp, &outside);
        assert_eq!((out.action, out.packet), (TC_ACT_OK, outside));
        let expiring = icmp_echo(A_MAC, A_HOST_MAC, A_IP, B_IP, 1);
        let out = run(dp, &expiring);
        assert_eq!((out.action, out.packet), (TC_ACT_OK, expiring), "the stack must send time-exceeded");
    });
}

#[test]
fn bridged_endpoints_keep_l2_semantics() {
    with_datapath_flags(ENDPOINT_F_BRIDGED, |dp| {
        // The bridge answers for its gateway address, not the datapath.
        let request = arp(1, A_MAC, A_IP, GATEWAY);
        let out = run(dp, &request);
        assert_eq!((out.action, out.packet), (TC_ACT_OK, request));
        // A frame already addressed to b's MAC skips the bridge, byte for byte unchanged.
        let to_b = icmp_echo(A_MAC, B_MAC, A_IP, B_IP, 64);
        let out = run(dp, &to_b);
        assert_eq!((out.action, out.packet), (TC_ACT_REDIRECT, to_b));
        // Anything else (here: to the gateway's MAC) is the bridge's to forward.
        let via_gateway = icmp_echo(A_MAC, A_HOST_MAC, A_IP, B_IP, 64);
        let out = run(dp, &via_gateway);
        assert_eq!((out.action, out.packet), (TC_ACT_OK, via_gateway));
        // Source validation holds in bridge mode too.
        let spoofed = icmp_echo(A_MAC, B_MAC, Ipv4Addr::new(10, 77, 0, 99), B_IP, 64);
        assert_eq!(run(dp, &spoofed).action, TC_ACT_SHOT);
    });
}

/// Cluster mode's path to another node is a program of its own, tail-called through
/// the pinned CLUSTER_PROGS slot: empty (a single node, or an agent that has not filled
/// it), a packet for another node's pod is dropped; filled, it is handed to the overlay
/// with both pod addresses kept, or answered with "fragmentation needed" when it does
/// not fit the path.
#[test]
fn a_packet_for_another_nodes_pod_goes_through_the_tail_called_program() {
    const TUNNEL: u32 = 4343;
    netpath_tests::with_datapath(&[], |dp| {
        for (ip, info) in world(0).endpoints {
            dp.register(ip, info).unwrap();
        }
        dp.set_node_config(netpath_common::NodeConfig {
            node_ip: [192, 168, 77, 1],
            pod_net: [10, 77, 0, 0],
            pod_mask: [255, 255, 255, 0],
            nat_port_min: 61000,
            nat_port_max: 65535,
            cluster_net: [10, 77, 0, 0],
            cluster_mask: [255, 255, 0, 0],
            node_mask: [255, 255, 255, 0],
            tunnel_ifindex: TUNNEL,
            vni: 1,
            path_mtu: 1450,
            ..Default::default()
        })
        .unwrap();
        let route = netpath_common::NodeRoute { underlay: [192, 168, 77, 12], flags: 0 };
        dp.set_node_routes(&[(Ipv4Addr::new(10, 77, 1, 0), route)]).unwrap();
        let pod = Ipv4Addr::new(10, 77, 1, 5);
        let packet = icmp_echo(A_MAC, A_HOST_MAC, A_IP, pod, 64);
        let from_a = |dp: &mut Datapath| {
            dp.test_run(netpath::datapath::program::FROM_CONTAINER, &packet, LO).expect("BPF_PROG_TEST_RUN")
        };

        assert_eq!(from_a(dp).action, TC_ACT_SHOT, "no cluster program loaded: nowhere to go");
        dp.set_cluster_programs(true).unwrap();
        let out = from_a(dp);
        assert_eq!(out.action, TC_ACT_REDIRECT, "into the overlay");
        let ip = &out.packet[14..34];
        assert_eq!((&ip[12..16], &ip[16..20]), (&A_IP.octets()[..], &pod.octets()[..]), "no NAT");
        assert_eq!(ip[8], 63, "TTL: the pod's gateway routed it");
        assert_eq!(csum(ip), 0, "IP checksum after the TTL change");

        // Bigger than the path (1450) with DF: "fragmentation needed" back to a, from
        // its gateway, quoting the header and 8 bytes, byte for byte.
        let big = icmp_message(A_MAC, A_HOST_MAC, A_IP, pod, 64, 8, &[7; 1451 - 28]);
        let out = dp.test_run(netpath::datapath::program::FROM_CONTAINER, &big, LO).unwrap();
        assert_eq!(out.action, TC_ACT_REDIRECT, "back to a");
        let p = &out.packet;
        assert_eq!(p.len(), 14 + 20 + 8 + 28);
        assert_eq!((&p[0..6], &p[6..12]), (&A_MAC[..], &A_HOST_MAC[..]));
        assert_eq!(&p[14..18], &[0x45, 0xc0, 0, 56]);
        assert_eq!((p[22], p[23]), (64, 1), "TTL 64, ICMP");
        assert_eq!((&p[26..30], &p[30..34]), (&[10, 77, 0, 1][..], &A_IP.octets()[..]), "gateway to a");
        assert_eq!(csum(&p[14..34]), 0, "IP checksum");
        assert_eq!((&p[34..36], &p[40..42]), (&[3, 4][..], &1450u16.to_be_bytes()[..]), "frag needed, MTU");
        assert_eq!(csum(&p[34..]), 0, "ICMP checksum");
        assert_eq!(&p[42..], &big[14..14 + 28], "the quote: a's header and 8 bytes");
        // An ICMP error that does not fit gets no error back (RFC 1122): dropped.
        let error = icmp_message(A_MAC, A_HOST_MAC, A_IP, pod, 64, 3, &[7; 1451 - 28]);
        let out = dp.test_run(netpath::datapath::program::FROM_CONTAINER, &error, LO).unwrap();
        assert_eq!(out.action, TC_ACT_SHOT);

        dp.set_cluster_programs(false).unwrap();
        assert_eq!(from_a(dp).action, TC_ACT_SHOT, "slot emptied: dropped again");
    });
}

/// Per-endpoint counters live in the slot each endpoint's entry names: a's packet to b
/// counts as a's tx and b's rx, and nothing else; a slot given to a new endpoint starts
/// from zero; an entry an older build wrote (flags as a u32, no slot) gets a slot when
/// the agent takes over, and counts from then on.
#[test]
fn endpoint_counters_count_in_the_slots_the_entries_name() {
    netpath_tests::with_datapath_pins(&[], |dp, dir| {
        let c_ip = Ipv4Addr::new(10, 77, 0, 4);
        let c_mac = [0x0a, 0x58, 10, 77, 0, 4];
        // c as an older build left it: its entry's last 4 bytes are flags as a u32.
        let mut args = vec!["bpftool".to_string(), "map".into(), "update".into(), "pinned".into()];
        args.push(dir.join("ENDPOINTS").to_string_lossy().into_owned());
        args.push("key".into());
        args.extend(c_ip.octets().iter().map(|b| b.to_string()));
        args.push("value".into());
        let mut value = LO.to_ne_bytes().to_vec();
        value.extend_from_slice(&c_mac);
        value.extend_from_slice(&[0x0e, 0, 0, 0, 0, 4]);
        value.extend_from_slice(&0u32.to_ne_bytes());
        args.extend(value.iter().map(|b| b.to_string()));
        netpath_tests::sh(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(dp.adopt_counter_slots().unwrap(), 1, "c had no slot");

        for (ip, info) in world(0).endpoints {
            dp.register(ip, info).unwrap();
        }
        let inspector = netpath::datapath::Inspector::new(dir);
        let slot = |ip: Ipv4Addr| {
            inspector.endpoints().unwrap().into_iter().find(|e| e.0 == ip).unwrap().1.counter_slot
        };
        let count = |ip: Ipv4Addr| {
            let c = inspector.endpoint_counters().unwrap().into_iter().find(|c| c.ip == ip).unwrap();
            (c.tx_packets, c.tx_bytes, c.rx_packets, c.rx_bytes)
        };
        let slots = [slot(A_IP), slot(B_IP), slot(c_ip)];
        assert!(!slots.contains(&0) && slots[0] != slots[1] && slots[1] != slots[2] && slots[0] != slots[2]);

        let from_container = netpath::datapath::program::FROM_CONTAINER;
        let a_to_b = icmp_echo(A_MAC, A_HOST_MAC, A_IP, B_IP, 64);
        let len = a_to_b.len() as u64;
        for _ in 0..3 {
            assert_eq!(dp.test_run(from_container, &a_to_b, LO).unwrap().action, TC_ACT_REDIRECT);
        }
        assert_eq!(count(A_IP), (3, 3 * len, 0, 0), "a sent 3");
        assert_eq!(count(B_IP), (0, 0, 3, 3 * len), "b received 3");
        let c_to_a = icmp_echo(c_mac, [0x0e, 0, 0, 0, 0, 4], c_ip, A_IP, 64);
        assert_eq!(dp.test_run(from_container, &c_to_a, LO).unwrap().action, TC_ACT_REDIRECT);
        assert_eq!(count(c_ip), (1, len, 0, 0), "c, adopted, counts");
        assert_eq!(count(A_IP), (3, 3 * len, 1, len), "a received c's");

        // a leaves; its slot goes round to new endpoints last, and then starts from zero.
        dp.unregister(A_IP).unwrap();
        let d_ip = Ipv4Addr::new(10, 77, 0, 5);
        let d = EndpointInfo { host_ifindex: LO, mac: [0x0a, 0x58, 10, 77, 0, 5], ..Default::default() };
        loop {
            dp.register(d_ip, d).unwrap();
            if slot(d_ip) == slots[0] {
                break;
            }
            assert_ne!(slot(d_ip), 0);
            dp.unregister(d_ip).unwrap();
        }
        assert_eq!(count(d_ip), (0, 0, 0, 0), "d inherits nothing of a's");
    });
}

/// from_container is the endpoints' entry: it runs the container path through the
/// pinned slot, and drops everything when the slot is empty (no agent ever filled it).
#[test]
fn from_container_runs_the_container_path_through_its_slot() {
    with_datapath(|c| {
        let packet = icmp_echo(A_MAC, A_HOST_MAC, A_IP, B_IP, 64);
        let entry = netpath::datapath::program::FROM_CONTAINER;
        let path = netpath::datapath::program::CONTAINER_PATH;
        let through_entry = c.dp.test_run(entry, &packet, LO).unwrap();
        assert_eq!(through_entry.action, TC_ACT_REDIRECT, "to b");
        let direct = c.dp.test_run(path, &packet, LO).unwrap();
        assert_eq!((through_entry.action, &through_entry.packet), (direct.action, &direct.packet));
        c.dp.set_endpoint_slot(false).unwrap();
        assert_eq!(c.dp.test_run(entry, &packet, LO).unwrap().action, TC_ACT_SHOT, "an empty slot drops");
        c.dp.set_endpoint_slot(true).unwrap();
        assert_eq!(c.dp.test_run(entry, &packet, LO).unwrap().action, TC_ACT_REDIRECT, "refilled");
    });
}

/// What the entry's tail call costs per packet: the kernel's mean time per run of the
/// container path through from_container and on its own, on an established packet for
/// another local container, 2 million runs a round, 15 rounds interleaved. Prints
/// medians; asserts nothing (a measurement).
#[test]
#[ignore = "a measurement that asserts nothing; run it with --ignored"]
fn the_entrys_tail_call_costs_this_much_per_packet() {
    with_datapath(|c| {
        let packet = icmp_echo(A_MAC, A_HOST_MAC, A_IP, B_IP, 64);
        let (mut entry, mut direct) = (Vec::new(), Vec::new());
        for _ in 0..15 {
            for (prog, out) in [
                (netpath::datapath::program::FROM_CONTAINER, &mut entry),
                (netpath::datapath::program::CONTAINER_PATH, &mut direct),
            ] {
                out.push(c.dp.time_run(prog, &packet, LO, 2_000_000).unwrap().as_nanos() as u64);
            }
        }
        entry.sort();
        direct.sort();
        println!(
            "ns per run, median (min-max) of 15 rounds: through from_container {} ({}-{}), container_path alone {} ({}-{})",
            entry[7], entry[0], entry[14], direct[7], direct[0], direct[14]
        );
    });
}

/// v, a veth endpoint behind lo; the router on the LAN and a host there.
const V_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 4);
const V_MAC: [u8; 6] = [0x0a, 0x58, 10, 77, 0, 4];
const LAN_ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const LAN_ROUTER_MAC: [u8; 6] = [0x0e, 0, 0, 0, 0, 0xfe];
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
/// a's and b's sub-interfaces, with the indexes the agent gives them: a's is a real
/// device of the test's namespace (`sa`, made by [`with_subif`]), b's is never run at.
const A_SUBIF: u32 = subif_ifindex(A_IP.octets());
const B_SUBIF: u32 = subif_ifindex(B_IP.octets());

/// A macvlan/ipvlan node's endpoints: a and b are sub-interface endpoints; v, a veth
/// endpoint, is behind lo.
fn subif_world() -> World {
    let mut w = world(ENDPOINT_F_SUBIF);
    w.endpoints[0].1.host_ifindex = A_SUBIF;
    w.endpoints[1].1.host_ifindex = B_SUBIF;
    w.endpoints.push((
        V_IP,
        EndpointInfo {
            host_ifindex: LO,
            mac: V_MAC,
            host_mac: [0x0e, 0, 0, 0, 0, 4],
            flags: 0,
            counter_slot: 0,
        },
    ));
    w
}

/// What a test of sub-interface endpoints sees: counters as the CLI reads them.
struct Counted {
    inspector: Inspector,
}

impl Counted {
    fn reason(&self, r: netpath_common::Reason) -> u64 {
        let all = self.inspector.reason_counters().unwrap();
        all.iter().find(|c| c.reason == r.name()).unwrap().packets
    }

    /// (tx packets, tx bytes, rx packets, rx bytes) of the endpoint at `ip`.
    fn endpoint(&self, ip: Ipv4Addr) -> (u64, u64, u64, u64) {
        let all = self.inspector.endpoint_counters().unwrap();
        let c = all.into_iter().find(|c| c.ip == ip).unwrap();
        (c.tx_packets, c.tx_bytes, c.rx_packets, c.rx_bytes)
    }
}

/// The datapath with [`subif_world`] registered, checked against the model; a's
/// sub-interface (`sa`, at [`A_SUBIF`]: a test run needs a real device for its ifindex)
/// and a spare device (`hs`) besides lo.
fn with_subif(check: impl FnOnce(&mut Checked, &Counted) + Send + 'static) {
    let a_subif = A_SUBIF.to_string();
    netpath_tests::with_datapath_pins(
        &[
            &["link", "add", "sa", "index", &a_subif, "type", "veth", "peer", "name", "ca"],
            &["link", "add", "hs", "type", "veth", "peer", "name", "cs"],
        ],
        |dp, pins| {
            for (ip, info) in subif_world().endpoints {
                dp.register(ip, info).unwrap();
            }
            let counted = Counted { inspector: Inspector::new(pins) };
            check(&mut Checked { dp, model: Model::new(subif_world()) }, &counted);
        },
    )
}

/// from_container on `packet` from a's sub-interface.
fn from_a(c: &mut Checked, packet: &[u8]) -> PacketRun {
    run_at(c, packet, A_SUBIF)
}

/// to_subif on `packet` arriving at `ifindex`; the model must agree on action and bytes.
fn to_subif(c: &mut Checked, packet: &[u8], ifindex: u32) -> PacketRun {
    let out = c.dp.test_run(program::TO_SUBIF, packet, ifindex).expect("BPF_PROG_TEST_RUN");
    c.model.to_subif(packet, ifindex).assert_matches(out.action, &out.packet);
    out
}

fn udp(src_mac: [u8; 6], dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    pkt::eth(
        dst_mac,
        src_mac,
        pkt::ETH_IPV4,
        &pkt::ipv4(src, dst, pkt::UDP, 64, &[], &pkt::udp(4000, 53, b"q")),
    )
}

/// A sub-interface endpoint's own packets, to the LAN or to a sibling, leave as they
/// are (no redirect, no TTL or MAC rewrite: the driver switches them), counted as its
/// transmitted traffic and as passed-to-parent.
#[test]
fn a_subif_endpoints_own_packets_are_counted_and_left_to_the_driver_unchanged() {
    use netpath_common::Reason;
    with_subif(|c, counted| {
        let out_to_lan = udp(A_MAC, LAN_ROUTER_MAC, A_IP, OUTSIDE);
        let to_sibling = udp(A_MAC, B_MAC, A_IP, B_IP);
        for p in [&out_to_lan, &to_sibling] {
            let out = from_a(c, p);
            assert_eq!((out.action, &out.packet), (TC_ACT_OK, p), "unchanged, to the driver");
        }
        let bytes = (out_to_lan.len() + to_sibling.len()) as u64;
        assert_eq!(counted.endpoint(A_IP), (2, bytes, 0, 0), "a sent two");
        assert_eq!(counted.endpoint(B_IP), (0, 0, 0, 0), "b received nothing from the datapath");
        assert_eq!(counted.reason(Reason::PassedToParent), 2);
        assert_eq!(counted.reason(Reason::ForwardedToPeer), 0);
    });
}

/// Source validation holds at a sub-interface's egress: another address, an endpoint's
/// address from another interface, or the right address from another MAC is dropped.
#[test]
fn a_subif_endpoint_cannot_send_in_another_name() {
    use netpath_common::Reason;
    with_subif(|c, counted| {
        let not_an_endpoint = udp(A_MAC, LAN_ROUTER_MAC, Ipv4Addr::new(10, 77, 0, 99), OUTSIDE);
        // b's address and MAC, but from a's interface.
        let from_elsewhere = udp(B_MAC, LAN_ROUTER_MAC, B_IP, OUTSIDE);
        let other_mac = udp([0x0a, 0, 0, 0, 0, 9], LAN_ROUTER_MAC, A_IP, OUTSIDE);
        for p in [not_an_endpoint, from_elsewhere, other_mac] {
            assert_eq!(from_a(c, &p).action, TC_ACT_SHOT);
        }
        assert_eq!(counted.reason(Reason::DropSpoofedSource), 3);
        assert_eq!(counted.reason(Reason::PassedToParent), 0);
        assert_eq!(counted.endpoint(A_IP), (0, 0, 0, 0), "nothing counted as a's");
    });
}

/// A sub-interface endpoint sits on a real LAN: every ARP claiming its address, request,
/// reply or announcement, must come from its interface with its MAC in the frame and the
/// message, and goes out unanswered; a claim of its address from anywhere else is
/// dropped, also from a veth endpoint. Address probes claim nothing and pass.
#[test]
fn arp_claiming_a_subif_endpoints_address_is_checked_in_every_operation_and_never_answered() {
    use netpath_common::Reason;
    with_subif(|c, counted| {
        let request = arp(1, A_MAC, A_IP, GATEWAY);
        let mut reply = arp(2, A_MAC, A_IP, B_IP);
        reply[0..6].copy_from_slice(&B_MAC);
        let announcement = arp(1, A_MAC, A_IP, A_IP);
        for p in [&request, &reply, &announcement] {
            let out = from_a(c, p);
            assert_eq!((out.action, &out.packet), (TC_ACT_OK, p), "a's own ARP, unanswered and unchanged");
        }
        assert_eq!(counted.reason(Reason::PassedToParent), 3);

        let probe = arp(1, A_MAC, Ipv4Addr::UNSPECIFIED, A_IP);
        let out = from_a(c, &probe);
        assert_eq!((out.action, &out.packet), (TC_ACT_OK, &probe), "a probe passes");

        let mut frame_from_elsewhere = arp(2, A_MAC, A_IP, B_IP);
        frame_from_elsewhere[6..12].copy_from_slice(&[0x0a, 0, 0, 0, 0, 9]);
        for spoofed in [
            arp(2, A_MAC, B_IP, GATEWAY),              // a reply in b's name
            arp(1, A_MAC, B_IP, B_IP),                 // an announcement of b's address
            arp(2, [0x0a, 0, 0, 0, 0, 9], A_IP, B_IP), // a's address, another MAC
            frame_from_elsewhere,                      // a's MACs in the message only
        ] {
            assert_eq!(from_a(c, &spoofed).action, TC_ACT_SHOT, "{spoofed:02x?}");
        }
        // The veth endpoint, from its own veth, in a's name.
        assert_eq!(run(c, &arp(2, V_MAC, A_IP, B_IP)).action, TC_ACT_SHOT);
        assert_eq!(counted.reason(Reason::DropSpoofedSource), 5);
        assert_eq!(counted.reason(Reason::PassedToParent), 3, "no more");
        assert_eq!(counted.reason(Reason::ArpReplied), 0, "the datapath answers no sub-interface");
    });
}

/// From a sub-interface (known by its index) an ARP may claim only its endpoint's own
/// address: a reply or announcement in the LAN router's name, a host's, or a veth
/// endpoint's would poison the LAN's caches, and is dropped in every operation. From a
/// veth the same replies and announcements are the node stack's, as before.
#[test]
fn arp_from_a_subif_claiming_an_address_no_subif_endpoint_has_is_dropped() {
    use netpath_common::Reason;
    with_subif(|c, counted| {
        let claims = [
            arp(2, A_MAC, LAN_ROUTER, A_IP),       // a reply in the router's name
            arp(1, A_MAC, LAN_ROUTER, LAN_ROUTER), // the router's address announced
            arp(2, A_MAC, LAN_ROUTER, LAN_ROUTER), // ... in a gratuitous reply
            arp(2, A_MAC, OUTSIDE, LAN_ROUTER),    // a LAN host's
            arp(2, A_MAC, V_IP, LAN_ROUTER),       // a veth endpoint's
            arp(1, A_MAC, LAN_ROUTER, OUTSIDE),    // a request in the router's name
        ];
        for p in &claims {
            assert_eq!(from_a(c, p).action, TC_ACT_SHOT, "{p:02x?}");
        }
        assert_eq!(counted.reason(Reason::DropSpoofedSource), claims.len() as u64);
        assert_eq!(counted.reason(Reason::PassedToParent), 0);
        assert_eq!(counted.reason(Reason::PassedToStack), 0);

        let probe = arp(1, A_MAC, Ipv4Addr::UNSPECIFIED, LAN_ROUTER);
        let out = from_a(c, &probe);
        assert_eq!((out.action, &out.packet), (TC_ACT_OK, &probe), "a probe claims nothing");

        for p in [arp(2, V_MAC, LAN_ROUTER, V_IP), arp(1, V_MAC, LAN_ROUTER, LAN_ROUTER)] {
            let out = run(c, &p);
            assert_eq!((out.action, &out.packet), (TC_ACT_OK, &p), "from a veth, the stack's");
        }
        assert_eq!(counted.reason(Reason::PassedToStack), 3);
        assert_eq!(counted.reason(Reason::DropSpoofedSource), claims.len() as u64, "no more");
    });
}

/// Only IPv4, ARP (and IPv6, container_path6's) leave a sub-interface: a VLAN-tagged
/// frame would reach the parent switch's other VLANs, and no other type is checked, so
/// they are dropped there, uncounted as the endpoint's. From a veth they are the node
/// stack's, as before.
#[test]
fn only_ip_and_arp_leave_a_subif() {
    use netpath_common::Reason;
    with_subif(|c, counted| {
        let inner = pkt::ipv4(A_IP, OUTSIDE, pkt::UDP, 64, &[], &pkt::udp(4000, 53, b"q"));
        let tagged = |tpid: u16| {
            let mut tag = vec![0, 7];
            tag.extend_from_slice(&pkt::ETH_IPV4.to_be_bytes());
            tag.extend_from_slice(&inner);
            pkt::eth(LAN_ROUTER_MAC, A_MAC, tpid, &tag)
        };
        let frames = [
            tagged(pkt::ETH_VLAN),                                             // 802.1Q
            tagged(0x88a8),                                                    // 802.1ad (QinQ)
            pkt::eth([0x01, 0x80, 0xc2, 0, 0, 0x0e], A_MAC, 0x88cc, &[0; 32]), // LLDP
            pkt::eth(LAN_ROUTER_MAC, A_MAC, 46, &[0x42; 46]),                  // 802.3 length
        ];
        for p in &frames {
            assert_eq!(from_a(c, p).action, TC_ACT_SHOT, "{p:02x?}");
        }
        assert_eq!(counted.reason(Reason::DropUnsupportedProtocol), frames.len() as u64);
        assert_eq!(counted.reason(Reason::PassedToParent), 0);
        assert_eq!(counted.endpoint(A_IP), (0, 0, 0, 0), "nothing counted as a's");

        for p in &frames {
            let mut from_v = p.clone();
            from_v[6..12].copy_from_slice(&V_MAC);
            let out = run(c, &from_v);
            assert_eq!((out.action, &out.packet), (TC_ACT_OK, &from_v), "from a veth, the stack's");
        }
        assert_eq!(counted.reason(Reason::PassedToStack), frames.len() as u64);
        assert_eq!(counted.reason(Reason::DropUnsupportedProtocol), frames.len() as u64, "no more");
    });
}

/// to_subif observes what arrives at a sub-interface and passes it untouched; it counts
/// as received only what is for the sub-interface endpoint living on that interface.
#[test]
fn to_subif_counts_only_what_arrives_for_its_endpoint_on_its_interface() {
    use netpath_common::Reason;
    with_subif(|c, counted| {
        let spare = nix::net::if_::if_nametoindex("hs").unwrap();
        let for_a = udp(LAN_ROUTER_MAC, A_MAC, OUTSIDE, A_IP);
        let out = to_subif(c, &for_a, A_SUBIF);
        assert_eq!((out.action, &out.packet), (TC_ACT_OK, &for_a));
        assert_eq!(counted.endpoint(A_IP), (0, 0, 1, for_a.len() as u64), "a received it");
        assert_eq!(counted.reason(Reason::ForwardedToPeer), 1);

        let not_counted = [
            (udp(LAN_ROUTER_MAC, A_MAC, OUTSIDE, A_IP), spare), // a's, another interface
            (udp(LAN_ROUTER_MAC, B_MAC, OUTSIDE, B_IP), A_SUBIF), // b's, a's interface
            (udp(LAN_ROUTER_MAC, V_MAC, OUTSIDE, V_IP), A_SUBIF), // a veth endpoint's
            (udp(LAN_ROUTER_MAC, A_MAC, OUTSIDE, OUTSIDE), A_SUBIF), // no endpoint's
            (arp(2, LAN_ROUTER_MAC, OUTSIDE, A_IP), A_SUBIF),   // not IPv4
        ];
        for (p, ifindex) in &not_counted {
            let out = to_subif(c, p, *ifindex);
            assert_eq!((out.action, &out.packet), (TC_ACT_OK, p), "untouched");
        }
        assert_eq!(counted.endpoint(A_IP).2, 1, "a received one");
        assert_eq!(counted.endpoint(B_IP), (0, 0, 0, 0));
        assert_eq!(counted.endpoint(V_IP), (0, 0, 0, 0));
        assert_eq!(counted.reason(Reason::ForwardedToPeer), 1);
        assert_eq!(counted.reason(Reason::PassedToStack), not_counted.len() as u64);
    });
}

/// attach_subif in real container namespaces: from_container at each macvlan
/// sub-interface's egress, to_subif at its ingress, found by subif_filters, replaced
/// rather than doubled by a second call, gone after detach_subif; a ping between two
/// such containers goes through both (counted as each one's traffic). Errors name the
/// interface and the namespace. (The node's tc attach mode does not enter into it: the
/// sub-interfaces always get clsact filters.)
#[test]
fn subif_programs_attach_in_the_containers_namespace_and_see_its_traffic() {
    use netpath::datapath::subif_filters;
    use netpath_common::Reason;
    let parent: &[&[&str]] = &[
        &["link", "add", "up0", "type", "veth", "peer", "name", "up1"],
        &["link", "set", "up0", "up"],
        &["link", "set", "up1", "up"],
    ];
    netpath_tests::with_datapath_pins(parent, |dp, pins| {
        let counted = Counted { inspector: Inspector::new(pins) };
        // Two containers, each with eth0 a macvlan of up0 made in its namespace, with an
        // interface index of its own (as the agent picks them).
        let containers: Vec<_> = [(A_IP, A_MAC, A_SUBIF), (B_IP, B_MAC, B_SUBIF)]
            .into_iter()
            .map(|(ip, mac, index)| {
                let ns = netpath_tests::Netns::new(netpath_tests::lab_id(netpath_tests::TEST_PREFIX));
                let mac_s = mac.map(|b| format!("{b:02x}")).join(":");
                let index_s = index.to_string();
                netpath_tests::sh(&[
                    "ip", "link", "add", "link", "up0", "name", "eth0", "index", &index_s, "address", &mac_s,
                    "netns", &ns.name, "type", "macvlan", "mode", "bridge",
                ]);
                for args in [
                    &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"][..],
                    &["ip", "link", "set", "eth0", "up"],
                    &["ip", "link", "set", "lo", "up"],
                ] {
                    assert!(ns.exec(args).status.success(), "{args:?}");
                }
                let info =
                    EndpointInfo { host_ifindex: index, mac, flags: ENDPOINT_F_SUBIF, ..Default::default() };
                dp.register(ip, info).unwrap();
                let file = std::fs::File::open(ns.path()).unwrap();
                (ns, file, ip)
            })
            .collect();
        let filters = |ns: &netpath_tests::Netns, at: &str| {
            let out = ns.exec(&["tc", "filter", "show", "dev", "eth0", at]);
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        // Filters running `prog` in a listing (one line each names its program).
        let running = |listing: &str, prog: &str| listing.lines().filter(|l| l.contains(prog)).count();
        let (a, a_file, _) = &containers[0];

        for (_, file, _) in &containers {
            assert_eq!(subif_filters(file, "eth0").unwrap(), (false, false), "nothing attached yet");
            dp.attach_subif(file, "eth0").unwrap();
            assert_eq!(subif_filters(file, "eth0").unwrap(), (true, true));
        }
        let (egress, ingress) = (filters(a, "egress"), filters(a, "ingress"));
        assert_eq!(running(&egress, "from_container"), 1, "{egress}");
        assert_eq!(running(&ingress, "to_subif"), 1, "{ingress}");
        assert!(egress.contains("pref 2048") && ingress.contains("pref 2048"), "{egress}{ingress}");

        // Again: each filter replaced by one at the other priority, none doubled.
        dp.attach_subif(a_file, "eth0").unwrap();
        let (egress, ingress) = (filters(a, "egress"), filters(a, "ingress"));
        assert_eq!(running(&egress, "from_container"), 1, "{egress}");
        assert_eq!(running(&ingress, "to_subif"), 1, "{ingress}");
        assert!(egress.contains("pref 2049") && !egress.contains("pref 2048"), "{egress}");
        assert!(ingress.contains("pref 2049") && !ingress.contains("pref 2048"), "{ingress}");

        dp.detach_subif(a_file, "eth0").unwrap();
        assert_eq!(subif_filters(a_file, "eth0").unwrap(), (false, false), "detached");
        dp.attach_subif(a_file, "eth0").unwrap();
        assert_eq!(subif_filters(a_file, "eth0").unwrap(), (true, true), "attached again");

        // One echo each way: a's request leaves through from_container and reaches b
        // through to_subif, and b's reply the same way back.
        assert!(a.ping(B_IP, 1), "a pings b through the sub-interfaces' programs");
        assert_eq!(counted.endpoint(A_IP).0, 1, "a sent its request");
        assert_eq!(counted.endpoint(A_IP).2, 1, "a received b's reply");
        assert_eq!(counted.endpoint(B_IP).0, 1, "b sent its reply");
        assert_eq!(counted.endpoint(B_IP).2, 1, "b received a's request");
        // The echoes and the ARP exchange before them.
        assert!(counted.reason(Reason::PassedToParent) >= 4);
        assert_eq!(counted.reason(Reason::ForwardedToPeer), 2);
        assert_eq!(counted.reason(Reason::DropSpoofedSource), 0);

        let named = |err: String| {
            let ns = format!("network namespace {}", a.path().display());
            assert!(err.contains("nope0") && err.contains(&ns), "{err}");
        };
        named(dp.attach_subif(a_file, "nope0").unwrap_err().to_string());
        named(subif_filters(a_file, "nope0").unwrap_err().to_string());
        drop(containers);
    });
}
