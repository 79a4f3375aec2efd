//! Crafting packets for BPF_PROG_TEST_RUN tests, and checking the checksums of what
//! comes back. Plain byte building: the tests must not trust a parser netpath uses.
use std::net::Ipv4Addr;

pub const ETH_IPV4: u16 = 0x0800;
pub const ETH_ARP: u16 = 0x0806;
pub const ETH_VLAN: u16 = 0x8100;
pub const ETH_IPV6: u16 = 0x86dd;
pub const ICMPV6: u8 = 58;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const RST: u8 = 0x04;
pub const FIN: u8 = 0x01;

/// RFC 1071 one's-complement sum, folded and inverted; 0 over data carrying a correct
/// checksum.
pub fn csum(data: &[u8]) -> u16 {
    let mut sum: u32 =
        data.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    p.extend_from_slice(l4);
    p
}

/// An IPv6 header (its payload length from `payload`) and `payload`.
pub fn ipv6(src: std::net::Ipv6Addr, dst: std::net::Ipv6Addr, next: u8, hop: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, hop]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

/// An IPv6 packet carrying transport header and payload `l4` (TCP, UDP or ICMPv6) with
/// its checksum over the IPv6 pseudo-header computed in place.
pub fn ipv6_l4(src: std::net::Ipv6Addr, dst: std::net::Ipv6Addr, proto: u8, hop: u8, l4: &[u8]) -> Vec<u8> {
    let mut l4 = l4.to_vec();
    let at = match proto {
        TCP => 16,
        UDP => 6,
        ICMPV6 => 2,
        _ => return ipv6(src, dst, proto, hop, &l4),
    };
    l4[at..at + 2].fill(0);
    let mut data = src.octets().to_vec();
    data.extend_from_slice(&dst.octets());
    data.extend_from_slice(&(l4.len() as u32).to_be_bytes());
    data.extend_from_slice(&[0, 0, 0, proto]);
    data.extend_from_slice(&l4);
    let c = csum(&data);
    let c = if proto == UDP && c == 0 { 0xffff } else { c };
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    ipv6(src, dst, proto, hop, &l4)
}

/// An ICMPv6 message (`msg`: type, code, two checksum bytes, the rest) with its
/// checksum over the pseudo-header of `src` to `dst` computed in place.
pub fn icmp6(src: std::net::Ipv6Addr, dst: std::net::Ipv6Addr, msg: &[u8]) -> Vec<u8> {
    let mut m = msg.to_vec();
    m[2..4].fill(0);
    let mut data = src.octets().to_vec();
    data.extend_from_slice(&dst.octets());
    data.extend_from_slice(&(m.len() as u32).to_be_bytes());
    data.extend_from_slice(&[0, 0, 0, ICMPV6]);
    data.extend_from_slice(&m);
    let c = csum(&data);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&dst);
    p.extend_from_slice(&src);
    p.extend_from_slice(&ethertype.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// An IPv4 packet with `options` (a multiple of 4 bytes) and a correct header checksum;
/// the L4 checksum (TCP/UDP/ICMP) is computed over `l4` in place.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ttl: u8, options: &[u8], l4: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let mut l4 = l4.to_vec();
    match proto {
        TCP => {
            l4[16..18].fill(0);
            let c = csum(&pseudo(src, dst, proto, &l4));
            l4[16..18].copy_from_slice(&c.to_be_bytes());
        }
        UDP => {
            l4[6..8].fill(0);
            let c = csum(&pseudo(src, dst, proto, &l4));
            l4[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
        }
        ICMP => {
            l4[2..4].fill(0);
            let c = csum(&l4);
            l4[2..4].copy_from_slice(&c.to_be_bytes());
        }
        _ => {}
    }
    let hlen = 20 + options.len();
    let total = (hlen + l4.len()) as u16;
    let mut ip = vec![0x40 | (hlen / 4) as u8, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0x12, 0x34, 0x40, 0, ttl, proto, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(options);
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend(l4);
    ip
}

pub fn tcp(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

/// A TCP header with sequence number `seq` and a timestamp option (NOP, NOP, TS) when
/// `ts_val` is given, as Linux sends it.
pub fn tcp_ts(sport: u16, dport: u16, flags: u8, seq: u32, ts_val: Option<u32>) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    let doff: u8 = if ts_val.is_some() { 8 } else { 5 };
    t.extend_from_slice(&[doff << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
    if let Some(ts) = ts_val {
        t.extend_from_slice(&[1, 1, 8, 10]);
        t.extend_from_slice(&ts.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 0]);
    }
    t
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// ICMP echo request (`request`) or reply with identifier `id`.
pub fn icmp_echo(request: bool, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut i = vec![if request { 8 } else { 0 }, 0, 0, 0];
    i.extend_from_slice(&id.to_be_bytes());
    i.extend_from_slice(&[0, 1]);
    i.extend_from_slice(payload);
    i
}

/// An ICMP error (`ty`, `code`) quoting `quoted` (an IPv4 packet) as routers do: its
/// header and the first 8 bytes of its payload. Wrap it with [`ipv4`] and [`ICMP`].
pub fn icmp_error(ty: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let ihl = ((quoted[0] & 0x0f) as usize) * 4;
    let mut i = vec![ty, code, 0, 0, 0, 0, 0, 0];
    i.extend_from_slice(&quoted[..(ihl + 8).min(quoted.len())]);
    i
}

/// A parsed view of an Ethernet + IPv4 packet, for assertions.
pub struct View<'a>(pub &'a [u8]);

impl View<'_> {
    fn ihl(&self) -> usize {
        ((self.0[14] & 0x0f) as usize) * 4
    }
    fn l4(&self) -> &[u8] {
        &self.0[14 + self.ihl()..]
    }
    pub fn eth_dst(&self) -> [u8; 6] {
        self.0[0..6].try_into().unwrap()
    }
    pub fn eth_src(&self) -> [u8; 6] {
        self.0[6..12].try_into().unwrap()
    }
    pub fn ttl(&self) -> u8 {
        self.0[14 + 8]
    }
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(<[u8; 4]>::try_from(&self.0[26..30]).unwrap())
    }
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(<[u8; 4]>::try_from(&self.0[30..34]).unwrap())
    }
    pub fn sport(&self) -> u16 {
        u16::from_be_bytes([self.l4()[0], self.l4()[1]])
    }
    pub fn dport(&self) -> u16 {
        u16::from_be_bytes([self.l4()[2], self.l4()[3]])
    }
    /// ICMP echo identifier.
    pub fn icmp_id(&self) -> u16 {
        u16::from_be_bytes([self.l4()[4], self.l4()[5]])
    }
    pub fn ip_csum_ok(&self) -> bool {
        csum(&self.0[14..14 + self.ihl()]) == 0
    }
    /// The L4 checksum verifies (a zero UDP checksum counts as "none", i.e. fine).
    pub fn l4_csum_ok(&self) -> bool {
        let proto = self.0[14 + 9];
        let l4 = self.l4();
        match proto {
            TCP => csum(&pseudo(self.src(), self.dst(), proto, l4)) == 0,
            UDP => l4[6..8] == [0, 0] || csum(&pseudo(self.src(), self.dst(), proto, l4)) == 0,
            ICMP => csum(l4) == 0,
            _ => true,
        }
    }
    /// The IPv4 packet an ICMP error quotes, as an Ethernet-less view's bytes.
    pub fn quoted(&self) -> Quoted<'_> {
        Quoted(&self.l4()[8..])
    }
    pub fn udp_csum(&self) -> u16 {
        u16::from_be_bytes([self.l4()[6], self.l4()[7]])
    }
}

/// The packet quoted inside an ICMP error: an IPv4 header and 8 bytes of L4.
pub struct Quoted<'a>(pub &'a [u8]);

impl Quoted<'_> {
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(<[u8; 4]>::try_from(&self.0[12..16]).unwrap())
    }
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(<[u8; 4]>::try_from(&self.0[16..20]).unwrap())
    }
    pub fn sport(&self) -> u16 {
        u16::from_be_bytes([self.0[20], self.0[21]])
    }
    pub fn dport(&self) -> u16 {
        u16::from_be_bytes([self.0[22], self.0[23]])
    }
    pub fn ip_csum_ok(&self) -> bool {
        csum(&self.0[..20]) == 0
    }
}
