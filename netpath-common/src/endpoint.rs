//! The endpoint maps: which container owns an address, and how to reach it.

/// Key of the endpoint maps: a container's IPv4 address in network byte order,
/// exactly as it sits in the IP header, so the datapath looks it up without swapping.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct EndpointKey {
    pub addr: [u8; 4],
}

impl EndpointKey {
    pub const fn new(addr: [u8; 4]) -> Self {
        Self { addr }
    }
}

/// Key of ENDPOINTS6: a container's IPv6 address as it sits in the IPv6 header. Each
/// IPv6 endpoint has two entries with the same value: its address, and the link-local
/// address its interface sends neighbour solicitations from.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Endpoint6Key {
    pub addr: [u8; 16],
}

impl Endpoint6Key {
    pub const fn new(addr: [u8; 16]) -> Self {
        Self { addr }
    }
}

/// Every endpoint's IPv6 gateway, fe80::1 as Docker and Cilium use: a link-local
/// address, the same behind every host veth, answered by the datapath's neighbour
/// discovery. Containers need no router advertisement to route through it.
pub const GATEWAY6: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// What the datapath needs to deliver a packet into a container and to answer for
/// its gateway.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EndpointInfo {
    /// ifindex of the host-side veth, in the node namespace: the target of
    /// `bpf_redirect_peer`, and the only interface this address may send from.
    pub host_ifindex: u32,
    /// MAC address of the container's interface (destination MAC on delivery).
    pub mac: [u8; 6],
    /// MAC address of the host-side veth: the container's gateway MAC, used as the
    /// source MAC on delivery and in the ARP replies for the gateway.
    pub host_mac: [u8; 6],
    /// `ENDPOINT_F_*` bits.
    pub flags: u16,
    /// The endpoint's index in ENDPOINT_STATS, chosen by the agent: a per-CPU array
    /// indexed from here costs the packet no hash lookup. 0 is no slot (an entry an
    /// older build wrote as a u32 of flags, read here as those flags and slot 0, until
    /// the agent gives it one); slot 0 of the array absorbs such counts unreported.
    pub counter_slot: u16,
}

impl EndpointInfo {
    /// The entry without its counter slot: what the agent's records determine (the slot
    /// is the datapath's bookkeeping, kept across rewrites of the entry).
    pub const fn without_slot(self) -> Self {
        Self { counter_slot: 0, ..self }
    }
}

/// The endpoint's host veth is a port of the node's bridge (bridge mode): the container
/// speaks L2 to its neighbours, so the datapath neither answers its ARP nor rewrites
/// MACs; it only short-cuts unicast already addressed to a local container's MAC.
pub const ENDPOINT_F_BRIDGED: u16 = 1;

/// A published port leads to this endpoint: its packets to local peers are checked
/// against conntrack, so replies to hairpinned connections get the node address back.
pub const ENDPOINT_F_PUBLISHED: u16 = 2;

/// The endpoint's host device is a netkit primary (`--device netkit`): from_container
/// runs for it inside netkit's transmit path, not at a tc ingress hook, where the kernel
/// refuses `bpf_redirect_peer` (skb_do_redirect drops a peer redirect that is not at
/// ingress). Its packets for local containers leave by `bpf_redirect` to the target's
/// host device instead, whose transmit hands them to the container's end.
pub const ENDPOINT_F_NETKIT: u16 = 4;

/// The endpoint's interface is a macvlan/ipvlan sub-interface of the node's uplink,
/// made inside the container's namespace (`--mode macvlan|ipvlan`): there is no host
/// device. `host_ifindex` is then that sub-interface's ifindex in the container's
/// namespace, which the agent chooses unique among its endpoints (the datapath tells
/// senders apart by it). from_container runs at the sub-interface's egress: it checks
/// and counts what the container sends and leaves it to the driver, which switches it
/// to a sibling or sends it out of the parent; to_subif, at its ingress, counts what
/// arrives. Nothing may redirect to such an endpoint (its ifindex is another
/// namespace's), so a node with these endpoints must route nothing to them itself: no
/// veth endpoints beside them, no routed prefix or published port on the uplink.
pub const ENDPOINT_F_SUBIF: u16 = 8;

/// The bit every macvlan/ipvlan endpoint's interface index has set (the agent chooses
/// them, [`subif_ifindex`]), and no device of the node's namespace: the kernel counts
/// each namespace's indexes from 1, and a node makes nowhere near 2^30 devices. So the
/// datapath knows from the ifindex alone, not from what the packet claims, that it runs
/// at a sub-interface, whose frames go out on the real LAN.
pub const SUBIF_IFINDEX_BASE: u32 = 0x4000_0000;

/// The index of the macvlan/ipvlan interface of the endpoint at `addr` (as it sits in
/// the IP header): [`SUBIF_IFINDEX_BASE`] with the address's low 24 bits, so unique
/// among endpoints of one subnet of /8 or longer, and the same each time the interface
/// is made again.
pub const fn subif_ifindex(addr: [u8; 4]) -> u32 {
    SUBIF_IFINDEX_BASE | (u32::from_be_bytes(addr) & 0x00ff_ffff)
}

/// When a rare event of one reason was last logged on a CPU, how many went unlogged
/// since, and the last one's detail (bpf_fib_lookup's code, for instance).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LogLimit {
    pub last_ns: u64,
    pub suppressed: u32,
    pub detail: u32,
}

/// Packet and byte counters, kept per CPU by the kernel and summed by user space.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TrafficCounters {
    /// Packets the container sent that the datapath handled.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Packets the datapath delivered into the container.
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

impl TrafficCounters {
    /// Sums per-CPU copies; wrapping because the kernel's counters wrap too.
    pub fn merge(&mut self, other: &Self) {
        self.tx_packets = self.tx_packets.wrapping_add(other.tx_packets);
        self.tx_bytes = self.tx_bytes.wrapping_add(other.tx_bytes);
        self.rx_packets = self.rx_packets.wrapping_add(other.rx_packets);
        self.rx_bytes = self.rx_bytes.wrapping_add(other.rx_bytes);
    }
}

/// SENDERS' value: the endpoint whose host device has the ifindex of this slot, with
/// its addresses. A copy of its ENDPOINTS entry, so that the source check of every
/// packet a container sends reads one array slot (indexed by the ifindex the packet came
/// in on) instead of hashing its source address: that second hash lookup, cold in
/// real traffic, was most of the container path's own cost per packet. An empty slot has
/// `info.host_ifindex` 0, which no device has; an IPv6 address not (or no longer) known
/// is all zeros, which the check never takes for a match.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SenderEntry {
    pub addr: [u8; 4],
    pub info: EndpointInfo,
    /// The endpoint's IPv6 address (ENDPOINTS6 has it with the same entry).
    pub addr6: [u8; 16],
    /// Its link-local address (likewise).
    pub link_local6: [u8; 16],
}

impl SenderEntry {
    /// The slot of the device with `ifindex`. Ifindexes are handed out in sequence, so
    /// the devices of endpoints alive at once rarely share a slot; one that does is
    /// checked through ENDPOINTS, as before.
    pub const fn slot(ifindex: u32) -> u32 {
        ifindex & (crate::maps::SENDER_SLOTS - 1)
    }
}

#[cfg(feature = "user")]
pod!(EndpointKey, Endpoint6Key, EndpointInfo, SenderEntry, TrafficCounters);

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn endpoint_key_layout_matches_ipv4_address() {
        assert_eq!(size_of::<EndpointKey>(), 4);
        assert_eq!(align_of::<EndpointKey>(), 1);
    }

    #[test]
    fn endpoint6_key_layout_matches_ipv6_address() {
        assert_eq!(size_of::<Endpoint6Key>(), 16);
        assert_eq!(align_of::<Endpoint6Key>(), 1);
    }

    #[test]
    fn endpoint_info_layout_has_no_padding() {
        assert_eq!(size_of::<EndpointInfo>(), 20);
        assert_eq!(align_of::<EndpointInfo>(), 4);
    }

    #[test]
    fn an_older_builds_u32_flags_read_as_the_same_flags_and_no_counter_slot() {
        // Earlier builds wrote `flags: u32` where `flags: u16, counter_slot: u16` sit now.
        let old_flags: u32 =
            (ENDPOINT_F_BRIDGED | ENDPOINT_F_PUBLISHED | ENDPOINT_F_NETKIT | ENDPOINT_F_SUBIF) as u32;
        let mut raw = [0u8; 20];
        raw[16..].copy_from_slice(&old_flags.to_ne_bytes());
        // SAFETY: EndpointInfo is repr(C) plain data of exactly these 20 bytes.
        let info: EndpointInfo = unsafe { core::ptr::read_unaligned(raw.as_ptr().cast()) };
        if cfg!(target_endian = "little") {
            assert_eq!(info.flags as u32, old_flags);
            assert_eq!(info.counter_slot, 0);
        }
    }

    #[test]
    fn a_subif_ifindex_is_in_the_subif_range_and_differs_by_address() {
        assert_eq!(subif_ifindex([10, 77, 0, 8]), 0x404d_0008);
        assert_ne!(subif_ifindex([10, 77, 0, 8]), subif_ifindex([10, 77, 1, 8]));
        assert_eq!(subif_ifindex([255, 255, 255, 255]) & SUBIF_IFINDEX_BASE, SUBIF_IFINDEX_BASE);
        // An ifindex is a positive int: the highest one made still is.
        assert!(subif_ifindex([255, 255, 255, 255]) <= i32::MAX as u32);
    }

    #[test]
    fn traffic_counters_layout_has_no_padding() {
        assert_eq!(size_of::<TrafficCounters>(), 32);
        assert_eq!(align_of::<TrafficCounters>(), 8);
    }

    #[test]
    fn counters_merge_wraps_instead_of_overflowing() {
        let mut a = TrafficCounters { tx_packets: u64::MAX, ..Default::default() };
        a.merge(&TrafficCounters { tx_packets: 2, rx_bytes: 5, ..Default::default() });
        assert_eq!(a.tx_packets, 1);
        assert_eq!(a.rx_bytes, 5);
    }
}
