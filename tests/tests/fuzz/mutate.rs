//! Mutations of valid packets: blind ones (bit flips, byte sets, truncation, garbage)
//! and field-aware ones that aim at what the datapath parses (IHL, lengths, protocol,
//! fragment bits, ports, addresses, checksums, TCP data offset and flags, ICMP types).
use rand::{rngs::StdRng, seq::SliceRandom, Rng};

use netpath_tests::pkt::csum;

use super::world::{Node, NAT_PORT, PORT_BOTH, PORT_OTHER6, PORT_V4_ONLY};

const IP: usize = 14;

fn l4(p: &[u8]) -> usize {
    IP + ((p.get(IP).copied().unwrap_or(0x45) & 0x0f) as usize) * 4
}

fn set(p: &mut [u8], off: usize, bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        if let Some(x) = p.get_mut(off + i) {
            *x = *b;
        }
    }
}

/// Recomputes the IPv4 header checksum, so a mutation behind it is not hidden by a
/// checksum nobody checks.
fn fix_ip_csum(p: &mut [u8]) {
    let hl = l4(p);
    if p.len() >= hl && hl >= IP + 20 {
        p[IP + 10..IP + 12].fill(0);
        let c = csum(&p[IP..hl]);
        p[IP + 10..IP + 12].copy_from_slice(&c.to_be_bytes());
    }
}

const PORTS: [u16; 16] = [
    0,
    1,
    22,
    53,
    80,
    5353,
    6666,
    7070,
    8080,
    9090,
    PORT_BOTH,
    PORT_OTHER6,
    PORT_V4_ONLY,
    40000,
    NAT_PORT,
    65535,
];

/// One mutation of `p`.
fn mutate_once(rng: &mut StdRng, node: &Node, p: &mut Vec<u8>) {
    let len = p.len().max(1);
    let l4 = l4(p);
    match rng.gen_range(0..20) {
        0 | 1 => {
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..len);
                if let Some(b) = p.get_mut(i) {
                    *b ^= 1 << rng.gen_range(0..8);
                }
            }
        }
        2 => {
            // A byte of a header set to a telling value.
            let i = rng.gen_range(0..len.min(80));
            let v = *[0u8, 1, 2, 4, 5, 6, 8, 0x0f, 0x10, 0x11, 0x45, 0x80, 0xff].choose(rng).unwrap();
            set(p, i, &[v]);
        }
        3 => p.truncate(rng.gen_range(0..=p.len())),
        4 => {
            let v = rng.gen_range(0..16u8);
            set(p, IP, &[0x40 | v]);
        }
        5 => {
            let total: u16 = match rng.gen_range(0..3) {
                0 => rng.gen(),
                1 => (p.len().saturating_sub(IP)) as u16 + rng.gen_range(0..4),
                _ => rng.gen_range(0..40),
            };
            set(p, IP + 2, &total.to_be_bytes());
        }
        6 => set(p, IP + 9, &[*[1u8, 6, 17, 0, 47, 255].choose(rng).unwrap()]),
        7 => {
            let frags =
                *[[0x20u8, 0], [0, 1], [0x40, 0], [0x80, 0], [0x1f, 0xff], [0, 0]].choose(rng).unwrap();
            set(p, IP + 6, &frags);
        }
        8 => {
            let port = *PORTS.choose(rng).unwrap();
            set(p, l4 + 2 * rng.gen_range(0..2), &port.to_be_bytes());
        }
        9 => {
            let a = *node.addresses().choose(rng).unwrap();
            set(p, IP + 12 + 4 * rng.gen_range(0..2), &a.octets());
        }
        10 => {
            let m = *node.macs().choose(rng).unwrap();
            set(p, 6 * rng.gen_range(0..2), &m);
        }
        11 => {
            // A checksum (IP, TCP, UDP, ICMP) zeroed, broken or all ones.
            let off = *[IP + 10, l4 + 16, l4 + 6, l4 + 2].choose(rng).unwrap();
            let v: [u8; 2] = *[[0, 0], [0xff, 0xff], rng.gen()].choose(rng).unwrap();
            set(p, off, &v);
        }
        12 => set(p, l4 + 12, &[rng.gen_range(0..16u8) << 4]),
        13 => set(p, l4 + 13, &[rng.gen()]),
        14 => set(p, IP + 8, &[*[0u8, 1, 2, 64, 255].choose(rng).unwrap()]),
        15 => {
            // ICMP type and code, or the quoted header's fields in an error.
            let ty = *[0u8, 3, 8, 11, 5, 255].choose(rng).unwrap();
            set(p, l4, &[ty, rng.gen_range(0..5)]);
        }
        16 => {
            let et: u16 = *[0x0800u16, 0x0806, 0x86dd, 0x8100, 0].choose(rng).unwrap();
            set(p, 12, &et.to_be_bytes());
        }
        17 => {
            let extra = rng.gen_range(1..64);
            p.extend((0..extra).map(|_| rng.gen::<u8>()));
        }
        18 => {
            // Inside an ICMP error: the quoted header's IHL, protocol, addresses, ports.
            let inner = l4 + 8;
            match rng.gen_range(0..4) {
                0 => set(p, inner, &[0x40 | rng.gen_range(0..16u8)]),
                1 => set(p, inner + 9, &[*[1u8, 6, 17, 47].choose(rng).unwrap()]),
                2 => set(
                    p,
                    inner + 12 + 4 * rng.gen_range(0..2),
                    &node.addresses().choose(rng).unwrap().octets(),
                ),
                _ => set(p, inner + 20 + 2 * rng.gen_range(0..3), &PORTS.choose(rng).unwrap().to_be_bytes()),
            }
        }
        _ => {
            // Garbage behind a plausible Ethernet header.
            let n = rng.gen_range(0..100);
            p.truncate(14.min(p.len()));
            p.extend((0..n).map(|_| rng.gen::<u8>()));
        }
    }
}

/// One mutation of an IPv6 packet's fields: the version, next header, hop limit and
/// payload length, an address, an ICMPv6 type, an option; what NAT66 reads and rewrites
/// behind the fixed header: ports (an echo's identifier), checksums, TCP flags and data
/// offset; in an ICMPv6 error, the quoted packet's.
fn mutate6_once(rng: &mut StdRng, node: &Node, p: &mut Vec<u8>) {
    const L4: usize = IP + 40;
    match rng.gen_range(0..13) {
        12 => {
            // Inside an ICMPv6 error: the quoted header's next header or addresses, its
            // ports (an echo's type or identifier).
            const INNER: usize = L4 + 8;
            match rng.gen_range(0..4) {
                0 => set(p, INNER + 6, &[*[6u8, 17, 58, 0, 44, 47].choose(rng).unwrap()]),
                1 => set(
                    p,
                    INNER + 8 + 16 * rng.gen_range(0..2),
                    &node.addresses6().choose(rng).unwrap().octets(),
                ),
                2 => set(p, INNER + 40 + 2 * rng.gen_range(0..3), &PORTS.choose(rng).unwrap().to_be_bytes()),
                _ => set(p, INNER + 40, &[*[1u8, 128, 129, 135].choose(rng).unwrap()]),
            }
        }
        8 => {
            let port = *PORTS.choose(rng).unwrap();
            set(p, L4 + 2 * rng.gen_range(0..3), &port.to_be_bytes());
        }
        9 => {
            // A checksum (TCP, UDP, ICMPv6) zeroed, broken or all ones.
            let off = *[L4 + 16, L4 + 6, L4 + 2].choose(rng).unwrap();
            let v: [u8; 2] = *[[0, 0], [0xff, 0xff], rng.gen()].choose(rng).unwrap();
            set(p, off, &v);
        }
        10 => set(p, L4 + 13, &[*[0u8, 0x01, 0x02, 0x04, 0x10, 0x11, 0x12, 0x14, 0xff].choose(rng).unwrap()]),
        11 => set(p, L4 + 12, &[rng.gen_range(0..16u8) << 4]),
        0 => set(p, IP, &[rng.gen_range(0..16u8) << 4]),
        1 => set(p, IP + 6, &[*[0u8, 6, 17, 43, 44, 58, 59, 60, 255].choose(rng).unwrap()]),
        2 => set(p, IP + 7, &[*[0u8, 1, 2, 64, 254, 255].choose(rng).unwrap()]),
        3 => {
            let len: u16 = match rng.gen_range(0..3) {
                0 => rng.gen(),
                1 => (p.len().saturating_sub(L4)) as u16,
                _ => *[0u16, 8, 24, 32, 40].choose(rng).unwrap(),
            };
            set(p, IP + 4, &len.to_be_bytes());
        }
        4 => {
            let a = *node.addresses6().choose(rng).unwrap();
            set(p, IP + 8 + 16 * rng.gen_range(0..2), &a.octets());
        }
        5 => set(p, L4, &[*[1u8, 2, 3, 4, 128, 129, 133, 134, 135, 136, 137].choose(rng).unwrap()]),
        6 => {
            // The solicitation's target, or its option's type, length or address.
            match rng.gen_range(0..3) {
                0 => set(p, L4 + 8, &node.addresses6().choose(rng).unwrap().octets()),
                1 => set(p, L4 + 24, &[rng.gen_range(0..4u8), rng.gen_range(0..3u8)]),
                _ => set(p, L4 + 26, node.macs().choose(rng).unwrap()),
            }
        }
        _ => p.truncate(rng.gen_range(IP..=p.len().max(IP))),
    }
}

/// A mutant of `seed`: one to three mutations, the IPv4 checksum fixed half the time.
pub fn mutate(rng: &mut StdRng, node: &Node, seed: &[u8]) -> Vec<u8> {
    let mut p = seed.to_vec();
    for _ in 0..rng.gen_range(1..=3) {
        if p.get(12..14) == Some(&[0x86, 0xdd][..]) && rng.gen_bool(0.6) {
            mutate6_once(rng, node, &mut p);
        } else {
            mutate_once(rng, node, &mut p);
        }
    }
    if rng.gen_bool(0.5) {
        fix_ip_csum(&mut p);
    }
    p
}

/// Random bytes of random length (short ones included).
pub fn garbage(rng: &mut StdRng) -> Vec<u8> {
    let n = rng.gen_range(0..128);
    (0..n).map(|_| rng.gen()).collect()
}
