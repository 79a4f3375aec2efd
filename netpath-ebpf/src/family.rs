//! What conntrack and NAT do differently for IPv4 and IPv6: their tables, where the
//! addresses sit, how an address change enters the checksums, how the masquerade port
//! search is called, how the FIB is asked. Everything else (state, pairs, timeouts,
//! port choice) is one generic implementation over the address type.
use aya_ebpf::{
    bindings::{BPF_F_PSEUDO_HDR, BPF_F_RECOMPUTE_CSUM},
    helpers::generated::bpf_csum_diff,
    maps::{HashMap, LruHashMap},
    programs::TcContext,
};
use netpath_common::{
    conntrack::{NatEntry, PortKeyOf, PortTargetOf, Tuple},
    ClosedFlow, CtKey6, Endpoint6Key, EndpointKey, Ip6, Reason,
};

use crate::{
    conntrack::{snat6_pick_port, snat_pick_port},
    headers::{
        icmp, ipv6, IPPROTO_ICMP, IPV4_CSUM_OFF, IPV4_DST_OFF, IPV4_SRC_OFF, IPV4_TOT_LEN_OFF, IP_OFF,
    },
    maps::{
        CONNTRACK, CONNTRACK6, CONNTRACK6_NEW, CONNTRACK_NEW, CT6_SCRATCH, ENDPOINTS, ENDPOINTS6, PORT_MAPS,
        PORT_MAPS6, SNAT_CLOSED, SNAT_CLOSED6,
    },
    packet::OrMalformed,
};

pub type Table<A> = LruHashMap<Tuple<A>, NatEntry<A>>;

/// CT6_SCRATCH's slots: the flow's key, the masquerade source, the candidate tuple,
/// the port found.
pub const SCRATCH_FLOW: u32 = 0;
pub const SCRATCH_SOURCE: u32 = 1;
pub const SCRATCH_CANDIDATE: u32 = 2;
/// The port container_snat6 found, for container_pair6 (in the slot's sport).
pub const SCRATCH_PORT: u32 = 3;

/// An address family, as its address type: `[u8; 4]` or [`Ip6`].
pub trait Addr: Copy + PartialEq + Default + 'static {
    /// Where the source and destination addresses are in the packet.
    const SRC_OFF: usize;
    const DST_OFF: usize;
    /// The ICMP of the family (its echo identifier is the tuple's "port").
    const ICMP: u8;
    const ECHO_REQUEST: u8;
    const ECHO_REPLY: u8;
    /// AF_INET or AF_INET6, for bpf_fib_lookup.
    const AF: u8;

    /// Assured flows, new flows, closed masqueraded flows (see `conntrack`).
    fn assured() -> &'static Table<Self>;
    fn new_flows() -> &'static Table<Self>;
    fn closed() -> &'static LruHashMap<Tuple<Self>, ClosedFlow>;
    /// Published ports of the family (`PORT_MAPS`, `PORT_MAPS6`).
    fn ports() -> &'static HashMap<PortKeyOf<Self>, PortTargetOf<Self>>;
    /// Is `self` a local endpoint's address?
    fn is_endpoint(self) -> bool;

    /// Writes `new` over the address `old` at `off`, with the checksums that cover it:
    /// the L4 checksum at `l4_csum_off` when `pseudo` (its pseudo-header holds the
    /// addresses), and IPv4's header checksum.
    fn rewrite(
        ctx: &TcContext,
        off: usize,
        old: Self,
        new: Self,
        l4_csum_off: usize,
        l4_flags: u64,
        pseudo: bool,
    ) -> Result<(), Reason>;

    /// The masquerade port search for `key`'s flow from `nat_src` (see
    /// [`snat_pick_port`]); which try found a port, from 1, or 0.
    fn pick_port(key: &Tuple<Self>, nat_src: Self, range: u64, syn_seq: u64, syn_ts: u64) -> u32;

    /// Where the IP packet ends, from its header's length field.
    fn ip_end(ctx: &TcContext) -> Option<usize>;

    /// The address as bpf_fib_lookup's four words.
    fn fib_words(self) -> [u32; 4];
}

impl Addr for [u8; 4] {
    const SRC_OFF: usize = IPV4_SRC_OFF;
    const DST_OFF: usize = IPV4_DST_OFF;
    const ICMP: u8 = IPPROTO_ICMP;
    const ECHO_REQUEST: u8 = icmp::ECHO_REQUEST;
    const ECHO_REPLY: u8 = icmp::ECHO_REPLY;
    const AF: u8 = 2;

    fn assured() -> &'static Table<Self> {
        &CONNTRACK
    }
    fn new_flows() -> &'static Table<Self> {
        &CONNTRACK_NEW
    }
    fn closed() -> &'static LruHashMap<Tuple<Self>, ClosedFlow> {
        &SNAT_CLOSED
    }
    fn ports() -> &'static HashMap<PortKeyOf<Self>, PortTargetOf<Self>> {
        &PORT_MAPS
    }
    #[inline(always)]
    fn is_endpoint(self) -> bool {
        // SAFETY: only checked for presence.
        unsafe { ENDPOINTS.get(EndpointKey::new(self)) }.is_some()
    }

    #[inline(always)]
    fn rewrite(
        ctx: &TcContext,
        off: usize,
        old: Self,
        new: Self,
        l4_csum_off: usize,
        l4_flags: u64,
        pseudo: bool,
    ) -> Result<(), Reason> {
        let (o, n) = (u32::from_ne_bytes(old) as u64, u32::from_ne_bytes(new) as u64);
        if pseudo {
            ctx.l4_csum_replace(l4_csum_off, o, n, l4_flags | 4).or_malformed()?;
        }
        ctx.l3_csum_replace(IPV4_CSUM_OFF, o, n, 4).or_malformed()?;
        ctx.store(off, &new, 0).or_malformed()
    }

    #[inline(always)]
    fn pick_port(key: &Tuple<Self>, nat_src: Self, range: u64, syn_seq: u64, syn_ts: u64) -> u32 {
        let [lo, hi] = key.to_words();
        snat_pick_port(lo, hi, range, syn_seq, u32::from_ne_bytes(nat_src) as u64 | syn_ts << 32)
    }

    #[inline(always)]
    fn ip_end(ctx: &TcContext) -> Option<usize> {
        Some(IP_OFF + u16::from_be_bytes(ctx.load::<[u8; 2]>(IPV4_TOT_LEN_OFF).ok()?) as usize)
    }

    #[inline(always)]
    fn fib_words(self) -> [u32; 4] {
        [u32::from_ne_bytes(self), 0, 0, 0]
    }
}

impl Addr for Ip6 {
    const SRC_OFF: usize = IP_OFF + ipv6::SRC;
    const DST_OFF: usize = IP_OFF + ipv6::DST;
    const ICMP: u8 = ipv6::IPPROTO_ICMPV6;
    const ECHO_REQUEST: u8 = 128;
    const ECHO_REPLY: u8 = 129;
    const AF: u8 = 10;

    fn assured() -> &'static Table<Self> {
        &CONNTRACK6
    }
    fn new_flows() -> &'static Table<Self> {
        &CONNTRACK6_NEW
    }
    fn closed() -> &'static LruHashMap<Tuple<Self>, ClosedFlow> {
        &SNAT_CLOSED6
    }
    fn ports() -> &'static HashMap<PortKeyOf<Self>, PortTargetOf<Self>> {
        &PORT_MAPS6
    }
    #[inline(always)]
    fn is_endpoint(self) -> bool {
        // SAFETY: only checked for presence.
        unsafe { ENDPOINTS6.get(Endpoint6Key::new(self.0)) }.is_some()
    }

    /// IPv6 has no header checksum, and every L4 checksum (ICMPv6's too) covers the
    /// pseudo-header: the 16-byte change enters it as one difference.
    #[inline(always)]
    fn rewrite(
        ctx: &TcContext,
        off: usize,
        old: Self,
        new: Self,
        l4_csum_off: usize,
        l4_flags: u64,
        _pseudo: bool,
    ) -> Result<(), Reason> {
        // SAFETY: two 16-byte buffers on the stack, sizes given; the helper only reads them.
        let diff = unsafe { bpf_csum_diff(old.0.as_ptr() as *mut _, 16, new.0.as_ptr() as *mut _, 16, 0) };
        if diff < 0 {
            return Err(Reason::DropMalformed);
        }
        ctx.l4_csum_replace(l4_csum_off, 0, diff as u64, l4_flags | BPF_F_PSEUDO_HDR as u64)
            .or_malformed()?;
        // In CHECKSUM_COMPLETE (a NIC's skb) the helper above moved skb->csum by the
        // pseudo-header's change, as IPv4 needs it (its header checksum absorbs the
        // address); IPv6 has none, so the address itself must move skb->csum back, or the
        // receiver finds the sum wrong ("hw csum failure", software checksum). Every
        // kernel does that for a store that recomputes; 6.16's BPF_F_IPV6 is the same fix
        // inside the helper.
        ctx.store(off, &new, BPF_F_RECOMPUTE_CSUM as u64).or_malformed()
    }

    #[inline(always)]
    fn pick_port(key: &Tuple<Self>, nat_src: Self, range: u64, syn_seq: u64, syn_ts: u64) -> u32 {
        // The search is a BPF function of its own, which takes scalars only (5.10): the
        // key and the source go through this CPU's scratch slots.
        let (Some(k), Some(s)) =
            (CT6_SCRATCH.get_ptr_mut(SCRATCH_FLOW), CT6_SCRATCH.get_ptr_mut(SCRATCH_SOURCE))
        else {
            return 0;
        };
        // SAFETY: this CPU's slots, no other writer during the program's run; the source
        // rides in its slot's src.
        unsafe {
            *k = *key;
            *s = CtKey6 { src: nat_src, ..CtKey6::default() };
        }
        snat6_pick_port(range, syn_seq, syn_ts)
    }

    #[inline(always)]
    fn ip_end(ctx: &TcContext) -> Option<usize> {
        let payload = u16::from_be_bytes(ctx.load::<[u8; 2]>(IP_OFF + ipv6::PAYLOAD_LEN).ok()?) as usize;
        Some(IP_OFF + ipv6::LEN + payload)
    }

    #[inline(always)]
    fn fib_words(self) -> [u32; 4] {
        // SAFETY: same size, every bit pattern valid; the words keep the bytes' memory
        // order, which is what the helper reads (network order). Byte by byte, the
        // assembly spills a register per byte.
        unsafe { core::mem::transmute::<[u8; 16], [u32; 4]>(self.0) }
    }
}
