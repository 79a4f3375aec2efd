//! NAT66 and routed IPv6 with BPF_PROG_TEST_RUN, byte for byte: what a container sends
//! to the outside through container_path6 and the NAT66 programs it tail-calls, and the
//! replies through uplink_in (uplink_in6). The expected packets are built from scratch
//! with every checksum computed anew, so an incremental update that is off by a bit, a
//! port or an address left untranslated, or a hop limit not decremented fails them.
//! Each test runs in its own namespace, where the loopback device (ifindex 1) plays the
//! container's host veth and a veth with the node's IPv6 address the uplink.
use std::net::{Ipv4Addr, Ipv6Addr};

use netpath::datapath::{program, Datapath, Inspector, PacketRun};
use netpath_common::{
    conntrack::{NODE6_F_MASQUERADE, NODE_F_IPV6},
    EndpointInfo, Ip6, NodeConfig, NodeConfig6, PortKey6, PortTarget6, Reason, ENDPOINT_F_PUBLISHED,
};
use netpath_tests::pkt::{self, ACK, ICMPV6, SYN, TCP, UDP};

const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
const TC_ACT_OK: u32 = 0;
const LO: u32 = 1;

const A_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const A6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2);
const A_MAC: [u8; 6] = [0x0a, 0x58, 10, 77, 0, 2];
const A_HOST_MAC: [u8; 6] = [0x0e, 0, 0, 0, 0, 2];
const NODE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 1);
const OUTSIDE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 2);
const UPLINK_MAC: [u8; 6] = [0x0e, 0, 0, 0, 0, 0xfe];
const OUTSIDE_MAC: [u8; 6] = [0x0e, 0, 0, 0, 0, 0xcc];
/// The NAT range: one port, so the translation is known.
const NAT_PORT: u16 = 61000;

/// A datapath with endpoint a (behind lo, dual-stack) on a node whose uplink up0 has
/// NODE6/64, masquerading IPv6 (`masquerade`) or routing it.
fn with_nat6(masquerade: bool, check: impl FnOnce(&mut Datapath, &std::path::Path) + Send + 'static) {
    let prepare: &[&[&str]] = &[
        &["link", "add", "up0", "type", "veth", "peer", "name", "up1"],
        &["-6", "addr", "add", "fd00:99::1/64", "dev", "up0", "nodad"],
        &["link", "set", "up0", "up"],
        &["link", "set", "up1", "up"],
        &["link", "set", "lo", "up"],
    ];
    netpath_tests::with_datapath_pins(prepare, move |dp, pins| {
        // bpf_fib_lookup routes IPv6 only for a namespace that forwards it (the agent
        // turns it on with --pod-cidr6).
        std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1").unwrap();
        let info =
            EndpointInfo { host_ifindex: LO, mac: A_MAC, host_mac: A_HOST_MAC, flags: 0, counter_slot: 0 };
        dp.register(A_IP, info).unwrap();
        dp.register6(A6, A_IP, info).unwrap();
        dp.set_node_config(NodeConfig {
            flags: NODE_F_IPV6,
            nat_port_min: NAT_PORT,
            nat_port_max: NAT_PORT,
            ..Default::default()
        })
        .unwrap();
        dp.set_node_config6(NodeConfig6 {
            node_ip: NODE6.octets(),
            pod_net: Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0).octets(),
            pod_prefix: 64,
            flags: if masquerade { NODE6_F_MASQUERADE } else { 0 },
            ..Default::default()
        })
        .unwrap();
        dp.load_ipv6_programs().unwrap();
        check(dp, pins);
    })
}

fn from_a(dp: &mut Datapath, packet: &[u8]) -> PacketRun {
    dp.test_run(program::FROM_CONTAINER, packet, LO).expect("test run from_container")
}

fn from_uplink(dp: &mut Datapath, packet: &[u8]) -> PacketRun {
    dp.test_run(program::UPLINK_IN, packet, LO).expect("test run uplink_in")
}

/// What a leaves with: Ethernet to its gateway, IPv6 `src` -> `dst`.
fn sent(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, hop: u8, l4: &[u8]) -> Vec<u8> {
    pkt::eth(A_HOST_MAC, A_MAC, pkt::ETH_IPV6, &pkt::ipv6_l4(src, dst, proto, hop, l4))
}

/// What arrives on the uplink from the outside host.
fn arriving(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, hop: u8, l4: &[u8]) -> Vec<u8> {
    pkt::eth(UPLINK_MAC, OUTSIDE_MAC, pkt::ETH_IPV6, &pkt::ipv6_l4(src, dst, proto, hop, l4))
}

/// The packet as the datapath must deliver it into a: its MACs, the rest as given.
fn delivered(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, hop: u8, l4: &[u8]) -> Vec<u8> {
    pkt::eth(A_MAC, A_HOST_MAC, pkt::ETH_IPV6, &pkt::ipv6_l4(src, dst, proto, hop, l4))
}

fn count(pins: &std::path::Path, r: Reason) -> u64 {
    let counters = Inspector::new(pins).reason_counters().unwrap();
    counters.iter().find(|c| c.reason == r.name()).unwrap().packets
}

fn echo(request: bool, id: u16) -> Vec<u8> {
    let mut m = vec![if request { 128 } else { 129 }, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0, 1, b'p', b'i', b'n', b'g']);
    m
}

#[test]
fn tcp_is_masqueraded_out_and_its_replies_translated_back_byte_for_byte() {
    with_nat6(true, |dp, pins| {
        let syn = pkt::tcp(40000, 80, SYN, b"");
        let out = from_a(dp, &sent(A6, OUTSIDE6, TCP, 64, &syn));
        assert_eq!(out.action, TC_ACT_REDIRECT, "out through the uplink");
        // No neighbour resolved for the outside host yet: the kernel resolves it
        // (bpf_redirect_neigh) and writes the MACs then; the program leaves them.
        let want = sent(NODE6, OUTSIDE6, TCP, 63, &pkt::tcp(NAT_PORT, 80, SYN, b""));
        assert_eq!(out.packet, want, "translated SYN");
        let synack = pkt::tcp(80, NAT_PORT, SYN | ACK, b"");
        let back = from_uplink(dp, &arriving(OUTSIDE6, NODE6, TCP, 64, &synack));
        assert_eq!(back.action, TC_ACT_REDIRECT, "into a");
        assert_eq!(back.packet, delivered(OUTSIDE6, A6, TCP, 63, &pkt::tcp(80, 40000, SYN | ACK, b"")));
        // The flow's next packets use the same entry, and the handshake's last ACK
        // assures it.
        let data = pkt::tcp(40000, 80, ACK, b"hello");
        let out = from_a(dp, &sent(A6, OUTSIDE6, TCP, 64, &data));
        assert_eq!(out.packet, sent(NODE6, OUTSIDE6, TCP, 63, &pkt::tcp(NAT_PORT, 80, ACK, b"hello")));
        assert_eq!(count(pins, Reason::SnatNewFlow), 1);
        assert_eq!(count(pins, Reason::NatTranslated), 2);
        assert_eq!(count(pins, Reason::CtCreated), 2);
        // Another source port to the same server needs another NAT port: the range has
        // one, taken.
        let other = from_a(dp, &sent(A6, OUTSIDE6, TCP, 64, &pkt::tcp(40001, 80, SYN, b"")));
        assert_eq!(other.action, TC_ACT_SHOT);
        assert_eq!(count(pins, Reason::DropNatPortsExhausted), 1);
    })
}

#[test]
fn udp_and_icmpv6_echo_are_masqueraded_both_ways() {
    with_nat6(true, |dp, _| {
        let out = from_a(dp, &sent(A6, OUTSIDE6, UDP, 64, &pkt::udp(5000, 53, b"query")));
        assert_eq!(out.action, TC_ACT_REDIRECT);
        assert_eq!(out.packet, sent(NODE6, OUTSIDE6, UDP, 63, &pkt::udp(NAT_PORT, 53, b"query")));
        let back = from_uplink(dp, &arriving(OUTSIDE6, NODE6, UDP, 64, &pkt::udp(53, NAT_PORT, b"answer")));
        assert_eq!(back.packet, delivered(OUTSIDE6, A6, UDP, 63, &pkt::udp(53, 5000, b"answer")));
        // Echo: the identifier is the flow's port, and ICMPv6's checksum covers the
        // pseudo-header (unlike ICMP's).
        let out = from_a(dp, &sent(A6, OUTSIDE6, ICMPV6, 64, &echo(true, 7)));
        assert_eq!(out.action, TC_ACT_REDIRECT);
        assert_eq!(out.packet, sent(NODE6, OUTSIDE6, ICMPV6, 63, &echo(true, NAT_PORT)));
        let back = from_uplink(dp, &arriving(OUTSIDE6, NODE6, ICMPV6, 64, &echo(false, NAT_PORT)));
        assert_eq!(back.action, TC_ACT_REDIRECT);
        assert_eq!(back.packet, delivered(OUTSIDE6, A6, ICMPV6, 63, &echo(false, 7)));
    })
}

#[test]
fn what_nat66_cannot_translate_is_dropped_with_its_reason_and_the_rest_is_the_stacks() {
    with_nat6(true, |dp, pins| {
        // A hop-by-hop header before the TCP header: never walked, so never misread.
        let mut hbh = vec![TCP, 0, 1, 4, 0, 0, 0, 0];
        hbh.extend_from_slice(&pkt::tcp(40000, 80, SYN, b""));
        let p = pkt::eth(A_HOST_MAC, A_MAC, pkt::ETH_IPV6, &pkt::ipv6(A6, OUTSIDE6, 0, 64, &hbh));
        assert_eq!(from_a(dp, &p).action, TC_ACT_SHOT);
        assert_eq!(count(pins, Reason::DropExtensionHeader), 1);
        // A fragment.
        let mut frag = vec![UDP, 0, 0, 1, 0, 0, 0, 9];
        frag.extend_from_slice(&pkt::udp(5000, 53, b"x"));
        let p = pkt::eth(A_HOST_MAC, A_MAC, pkt::ETH_IPV6, &pkt::ipv6(A6, OUTSIDE6, 44, 64, &frag));
        assert_eq!(from_a(dp, &p).action, TC_ACT_SHOT);
        assert_eq!(count(pins, Reason::DropFragment), 1);
        // An address of the pod prefix that is no endpoint reaches no one.
        let ghost = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 9);
        assert_eq!(from_a(dp, &sent(A6, ghost, UDP, 64, &pkt::udp(1, 2, b""))).action, TC_ACT_SHOT);
        assert_eq!(count(pins, Reason::DropNoEndpoint), 1);
        // UDP with a zero checksum, invalid in IPv6 (RFC 8200 8.1): no flow is made of
        // it, and no zero is "translated" into a wrong checksum.
        let mut p = sent(A6, OUTSIDE6, UDP, 64, &pkt::udp(5000, 53, b"q"));
        let csum = 14 + 40 + 6;
        p[csum..csum + 2].copy_from_slice(&[0, 0]);
        assert_eq!(from_a(dp, &p).action, TC_ACT_SHOT);
        assert_eq!(count(pins, Reason::DropMalformed), 1);
        assert_eq!(count(pins, Reason::CtCreated), 0);
        // The node's own address is the node's services': untranslated, to the stack.
        let p = sent(A6, NODE6, TCP, 64, &pkt::tcp(40000, 22, SYN, b""));
        let out = from_a(dp, &p);
        assert_eq!((out.action, &out.packet), (TC_ACT_OK, &p));
        // On the uplink, traffic for the node that no flow of a container's owns.
        let p = arriving(OUTSIDE6, NODE6, TCP, 64, &pkt::tcp(80, 22, SYN, b""));
        let back = from_uplink(dp, &p);
        assert_eq!((back.action, &back.packet), (TC_ACT_OK, &p));
        assert_eq!(count(pins, Reason::SnatNewFlow), 0);
    })
}

#[test]
fn on_a_routed_prefix_ipv6_is_forwarded_both_ways_untranslated() {
    with_nat6(false, |dp, pins| {
        let l4 = pkt::tcp(40000, 80, SYN, b"");
        let out = from_a(dp, &sent(A6, OUTSIDE6, TCP, 64, &l4));
        assert_eq!(out.action, TC_ACT_REDIRECT);
        assert_eq!(out.packet, sent(A6, OUTSIDE6, TCP, 63, &l4), "only the hop limit changes");
        let l4 = pkt::tcp(80, 40000, SYN | ACK, b"");
        let back = from_uplink(dp, &arriving(OUTSIDE6, A6, TCP, 64, &l4));
        assert_eq!(back.action, TC_ACT_REDIRECT);
        assert_eq!(back.packet, delivered(OUTSIDE6, A6, TCP, 63, &l4));
        assert_eq!(count(pins, Reason::Routed), 2);
        assert_eq!(count(pins, Reason::SnatNewFlow), 0);
    })
}

/// Publishes `host`:8080/tcp (`host` None: every IPv6 address of the node) on a's
/// port 80, with a's entries flagged as publishing, as the agent writes them.
fn publish6(dp: &mut Datapath, host: Option<Ipv6Addr>) {
    let key = PortKey6 {
        host_ip: Ip6(host.unwrap_or(Ipv6Addr::UNSPECIFIED).octets()),
        port: 8080u16.to_be_bytes(),
        proto: TCP,
        _pad: 0,
    };
    let target = PortTarget6 { ip: Ip6(A6.octets()), port: 80u16.to_be_bytes(), _pad: [0; 2] };
    dp.set_ports(&[(key, target)]).unwrap();
    let info = EndpointInfo {
        host_ifindex: LO,
        mac: A_MAC,
        host_mac: A_HOST_MAC,
        flags: ENDPOINT_F_PUBLISHED,
        counter_slot: 0,
    };
    dp.register(A_IP, info).unwrap();
    dp.register6(A6, A_IP, info).unwrap();
}

/// A connection to the published port and its reply, byte for byte; the reply must
/// leave with the node's address and port whatever the masquerade setting.
fn published_port_round_trip(dp: &mut Datapath, pins: &std::path::Path) {
    let syn = pkt::tcp(40000, 8080, SYN, b"");
    let inn = from_uplink(dp, &arriving(OUTSIDE6, NODE6, TCP, 64, &syn));
    assert_eq!(inn.action, TC_ACT_REDIRECT, "into a");
    assert_eq!(inn.packet, delivered(OUTSIDE6, A6, TCP, 63, &pkt::tcp(40000, 80, SYN, b"")));
    assert_eq!(count(pins, Reason::DnatNewFlow), 1);
    let synack = pkt::tcp(80, 40000, SYN | ACK, b"");
    let out = from_a(dp, &sent(A6, OUTSIDE6, TCP, 64, &synack));
    assert_eq!(out.action, TC_ACT_REDIRECT, "out through the uplink");
    assert_eq!(out.packet, sent(NODE6, OUTSIDE6, TCP, 63, &pkt::tcp(8080, 40000, SYN | ACK, b"")));
    let ack = pkt::tcp(40000, 8080, ACK, b"hi");
    let inn = from_uplink(dp, &arriving(OUTSIDE6, NODE6, TCP, 64, &ack));
    assert_eq!(inn.packet, delivered(OUTSIDE6, A6, TCP, 63, &pkt::tcp(40000, 80, ACK, b"hi")));
    assert_eq!(count(pins, Reason::DnatNewFlow), 1, "one flow");
}

#[test]
fn a_port_published_on_ipv6_is_translated_both_ways_byte_for_byte() {
    with_nat6(true, |dp, pins| {
        // Not published yet: the node's, untouched.
        let syn = arriving(OUTSIDE6, NODE6, TCP, 64, &pkt::tcp(40000, 8080, SYN, b""));
        let run = from_uplink(dp, &syn);
        assert_eq!((run.action, &run.packet), (TC_ACT_OK, &syn));
        publish6(dp, None);
        published_port_round_trip(dp, pins);
        // Another port: the node's.
        let other = arriving(OUTSIDE6, NODE6, TCP, 64, &pkt::tcp(40001, 8081, SYN, b""));
        let run = from_uplink(dp, &other);
        assert_eq!((run.action, &run.packet), (TC_ACT_OK, &other));
    })
}

#[test]
fn a_port_published_on_the_node_ipv6_address_alone_works_on_a_routed_prefix_too() {
    with_nat6(false, |dp, pins| {
        publish6(dp, Some(NODE6));
        published_port_round_trip(dp, pins);
        // What the publishing container opens itself is routed with its own address.
        let l4 = pkt::tcp(40002, 443, SYN, b"");
        let out = from_a(dp, &sent(A6, OUTSIDE6, TCP, 64, &l4));
        assert_eq!(out.action, TC_ACT_REDIRECT);
        assert_eq!(out.packet, sent(A6, OUTSIDE6, TCP, 63, &l4), "only the hop limit changes");
        assert_eq!(count(pins, Reason::SnatNewFlow), 0);
        assert!(count(pins, Reason::Routed) >= 1);
    })
}

#[test]
fn a_published_ipv6_port_whose_container_is_gone_creates_nothing() {
    with_nat6(true, |dp, pins| {
        publish6(dp, None);
        dp.unregister6(A6).unwrap();
        let syn = arriving(OUTSIDE6, NODE6, TCP, 64, &pkt::tcp(40000, 8080, SYN, b""));
        let run = from_uplink(dp, &syn);
        assert_eq!((run.action, &run.packet), (TC_ACT_OK, &syn), "the node's, as no mapping");
        assert_eq!(count(pins, Reason::DnatNewFlow), 0);
        assert_eq!(count(pins, Reason::CtCreated), 0);
    })
}

const B_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
const B6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 3);
const B_MAC: [u8; 6] = [0x0a, 0x58, 10, 77, 0, 3];
const B_HOST_MAC: [u8; 6] = [0x0e, 0, 0, 0, 0, 3];

#[test]
fn a_container_reaches_an_ipv6_published_port_through_the_node_address_hairpin() {
    with_nat6(true, |dp, pins| {
        // b behind up1 (its host veth, as far as the programs know), publishing.
        let up1 = nix::net::if_::if_nametoindex("up1").unwrap();
        let b = EndpointInfo {
            host_ifindex: up1,
            mac: B_MAC,
            host_mac: B_HOST_MAC,
            flags: ENDPOINT_F_PUBLISHED,
            counter_slot: 0,
        };
        dp.register(B_IP, b).unwrap();
        dp.register6(B6, B_IP, b).unwrap();
        let key = PortKey6 { host_ip: Ip6::default(), port: 8080u16.to_be_bytes(), proto: TCP, _pad: 0 };
        let target = PortTarget6 { ip: Ip6(B6.octets()), port: 80u16.to_be_bytes(), _pad: [0; 2] };
        dp.set_ports(&[(key, target)]).unwrap();

        // a's SYN to NODE6:8080 goes into b, a's own address kept.
        let out = from_a(dp, &sent(A6, NODE6, TCP, 64, &pkt::tcp(40000, 8080, SYN, b"")));
        assert_eq!(out.action, TC_ACT_REDIRECT, "into b");
        let to_b = pkt::eth(
            B_MAC,
            B_HOST_MAC,
            pkt::ETH_IPV6,
            &pkt::ipv6_l4(A6, B6, TCP, 63, &pkt::tcp(40000, 80, SYN, b"")),
        );
        assert_eq!(out.packet, to_b);
        assert_eq!(count(pins, Reason::DnatNewFlow), 1);
        // b's SYN-ACK goes back into a from NODE6:8080.
        let reply = pkt::eth(
            B_HOST_MAC,
            B_MAC,
            pkt::ETH_IPV6,
            &pkt::ipv6_l4(B6, A6, TCP, 64, &pkt::tcp(80, 40000, SYN | ACK, b"")),
        );
        let back = dp.test_run(program::FROM_CONTAINER, &reply, up1).expect("test run from b");
        assert_eq!(back.action, TC_ACT_REDIRECT, "into a");
        assert_eq!(back.packet, delivered(NODE6, A6, TCP, 63, &pkt::tcp(8080, 40000, SYN | ACK, b"")));
        // a's ACK: the same flow.
        let out = from_a(dp, &sent(A6, NODE6, TCP, 64, &pkt::tcp(40000, 8080, ACK, b"x")));
        assert_eq!(
            out.packet,
            pkt::eth(
                B_MAC,
                B_HOST_MAC,
                pkt::ETH_IPV6,
                &pkt::ipv6_l4(A6, B6, TCP, 63, &pkt::tcp(40000, 80, ACK, b"x"))
            )
        );
        assert_eq!(count(pins, Reason::DnatNewFlow), 1);
        assert_eq!(count(pins, Reason::NatTranslated), 2);

        // b's own packets to a that are no reply: delivered as they are.
        let l4 = pkt::tcp(5000, 6000, SYN, b"");
        let plain = pkt::eth(B_HOST_MAC, B_MAC, pkt::ETH_IPV6, &pkt::ipv6_l4(B6, A6, TCP, 64, &l4));
        let run = dp.test_run(program::FROM_CONTAINER, &plain, up1).unwrap();
        assert_eq!((run.action, run.packet), (TC_ACT_REDIRECT, delivered(B6, A6, TCP, 63, &l4)));
        // An ACK (no connection's first packet) to the node's port, and a port nobody
        // published: the node's.
        for l4 in [pkt::tcp(40001, 8080, ACK, b""), pkt::tcp(40001, 8081, SYN, b"")] {
            let p = sent(A6, NODE6, TCP, 64, &l4);
            let run = from_a(dp, &p);
            assert_eq!((run.action, &run.packet), (TC_ACT_OK, &p));
        }
        assert_eq!(count(pins, Reason::DnatNewFlow), 1);
    })
}

/// An ICMPv6 error (`ty`, `code`, the 4 bytes after the checksum) quoting `quoted`.
fn icmp6_error(ty: u8, code: u8, rest: [u8; 4], quoted: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(quoted);
    m
}

/// `quoted` (an IPv6 packet) with its source (`src`) or destination address and port
/// replaced, its own checksum left as it was: what a translated error quotes.
fn requoted(quoted: &[u8], src_side: bool, addr: Ipv6Addr, port: u16) -> Vec<u8> {
    let mut q = quoted.to_vec();
    let (a, p) = if src_side { (8, 40) } else { (24, 42) };
    q[a..a + 16].copy_from_slice(&addr.octets());
    q[p..p + 2].copy_from_slice(&port.to_be_bytes());
    q
}

#[test]
fn icmpv6_errors_about_nat66_flows_are_translated_both_ways() {
    with_nat6(true, |dp, pins| {
        let out = from_a(dp, &sent(A6, OUTSIDE6, UDP, 64, &pkt::udp(5000, 53, b"query")));
        assert_eq!(out.action, TC_ACT_REDIRECT);
        // A router on the way cannot forward it: packet too big, MTU 1280, to the node,
        // quoting the packet as the node sent it.
        let quoted = pkt::ipv6_l4(NODE6, OUTSIDE6, UDP, 63, &pkt::udp(NAT_PORT, 53, b"query"));
        let mtu = 1280u32.to_be_bytes();
        let ptb = arriving(OUTSIDE6, NODE6, ICMPV6, 64, &icmp6_error(2, 0, mtu, &quoted));
        let back = from_uplink(dp, &ptb);
        assert_eq!(back.action, TC_ACT_REDIRECT, "into a");
        let want = icmp6_error(2, 0, mtu, &requoted(&quoted, true, A6, 5000));
        assert_eq!(back.packet, delivered(OUTSIDE6, A6, ICMPV6, 63, &want), "packet too big, translated");
        // The server's answer arrives; a's socket is gone and a says port unreachable,
        // quoting the answer as it received it.
        let answer = pkt::ipv6_l4(OUTSIDE6, A6, UDP, 63, &pkt::udp(53, 5000, b"answer"));
        let unreach = sent(A6, OUTSIDE6, ICMPV6, 64, &icmp6_error(1, 4, [0; 4], &answer));
        let out = from_a(dp, &unreach);
        assert_eq!(out.action, TC_ACT_REDIRECT, "out through the uplink");
        let want = icmp6_error(1, 4, [0; 4], &requoted(&answer, false, NODE6, NAT_PORT));
        assert_eq!(out.packet, sent(NODE6, OUTSIDE6, ICMPV6, 63, &want), "port unreachable, translated");
        assert_eq!(count(pins, Reason::NatTranslated), 2);
        // An error about no NAT66 flow: the node's, going in; dropped going out (it would
        // leave with a pod address).
        let stranger = pkt::ipv6_l4(NODE6, OUTSIDE6, UDP, 63, &pkt::udp(NAT_PORT + 1, 53, b"query"));
        let p = arriving(OUTSIDE6, NODE6, ICMPV6, 64, &icmp6_error(2, 0, mtu, &stranger));
        let back = from_uplink(dp, &p);
        assert_eq!((back.action, &back.packet), (TC_ACT_OK, &p));
        let stranger = pkt::ipv6_l4(OUTSIDE6, A6, UDP, 63, &pkt::udp(53, 5001, b"answer"));
        let out = from_a(dp, &sent(A6, OUTSIDE6, ICMPV6, 64, &icmp6_error(1, 4, [0; 4], &stranger)));
        assert_eq!(out.action, TC_ACT_SHOT);
        assert_eq!(count(pins, Reason::DropUnsupportedProtocol), 1);
    })
}

/// packet_nat's `a_tcp_flows_first_packet_sets_its_state` for IPv6, whose pair is made
/// in a program of its own: the same states.
#[test]
fn a_tcp_flows_first_packet_sets_its_state_as_over_ipv4() {
    use netpath::datapath::family::Ipv6;
    use netpath_common::conntrack::{TCP_CLOSING, TCP_ESTABLISHED, TCP_SYN};
    with_nat6(true, |dp, _| {
        let flows = [(5001, SYN, TCP_SYN), (5002, pkt::ACK, TCP_ESTABLISHED), (5003, pkt::RST, TCP_CLOSING)];
        for (sport, flags, want) in flows {
            // One NAT port: each flow goes to another server.
            let server = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, sport);
            let out = from_a(dp, &sent(A6, server, TCP, 64, &pkt::tcp(sport, 80, flags, b"")));
            assert_eq!(out.action, TC_ACT_REDIRECT);
            let entries = dp.conntrack_entries::<Ipv6>().unwrap();
            let states = netpath_tests::tcp_states_of(&entries, sport);
            assert_eq!(states, (want, TCP_SYN), "first packet flags {flags:#x}: original, reply");
        }
    })
}
