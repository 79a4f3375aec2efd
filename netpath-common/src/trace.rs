//! Trace events from the datapath and the in-kernel filter that selects them.

/// Where in the datapath a packet was seen.
pub const HOP_FROM_CONTAINER: u8 = 1;
pub const HOP_UPLINK_IN: u8 = 2;
pub const HOP_UPLINK_XDP: u8 = 3;
/// Handed into a container (bpf_redirect_peer), as it leaves the datapath: after NAT.
pub const HOP_TO_CONTAINER: u8 = 4;
/// Sent out of a node device chosen by the FIB (the uplink), after NAT.
pub const HOP_UPLINK_OUT: u8 = 5;
/// Into the overlay, for another node (the event's ifindex is the VXLAN device).
pub const HOP_TO_TUNNEL: u8 = 6;
/// Out of the overlay, from another node.
pub const HOP_FROM_TUNNEL: u8 = 7;

pub fn hop_name(hop: u8) -> &'static str {
    match hop {
        HOP_FROM_CONTAINER => "from-container",
        HOP_UPLINK_IN => "uplink-in",
        HOP_UPLINK_XDP => "xdp",
        HOP_TO_CONTAINER => "to-container",
        HOP_UPLINK_OUT => "uplink-out",
        HOP_TO_TUNNEL => "to-tunnel",
        HOP_FROM_TUNNEL => "from-tunnel",
        _ => "unknown",
    }
}

/// One packet's passage through a hop: its tuple as it arrived, and what was decided.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TraceEvent {
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    pub ifindex: u32,
    pub len: u32,
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub proto: u8,
    pub hop: u8,
    /// [`crate::Reason`] code: the decision, or the named drop reason.
    pub reason: u8,
    /// [`FAMILY_IPV6`] when the packet is IPv6: its addresses are then `src6` and
    /// `dst6` (and `src`, `dst` zero); otherwise IPv4 (or not IP at all).
    pub family: u8,
    /// Tunnel hops: the underlay address of the other node (where `to-tunnel` sends
    /// the packet, where `from-tunnel`'s came from); zero elsewhere.
    pub node: [u8; 4],
    pub _pad2: [u8; 4],
    pub src6: [u8; 16],
    pub dst6: [u8; 16],
}

/// [`TraceEvent::family`] of an IPv6 packet.
pub const FAMILY_IPV6: u8 = 6;

/// A filter on ICMP (`--proto icmp`) takes ICMPv6 in IPv6 packets.
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// What `netpath trace` wants to see. All-zero fields match anything; `enabled` 0 makes
/// the datapath skip tracing after one array lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TraceFilter {
    pub enabled: u32,
    pub drops_only: u32,
    /// Either address of the packet must equal one of these when set.
    pub endpoint: [u8; 4],
    pub host: [u8; 4],
    /// Either port (network order) when set.
    pub port: [u8; 2],
    pub proto: u8,
    pub _pad: u8,
    /// The same for IPv6 packets: the endpoint's IPv6 address, the host's. An address
    /// filter of one family matches no packet of the other.
    pub endpoint6: [u8; 16],
    pub host6: [u8; 16],
}

impl TraceFilter {
    /// Does an event pass the filter? (Shared by the datapath and the tests.)
    #[inline(always)]
    pub fn matches(&self, e: &TraceEvent, is_drop: bool) -> bool {
        let v6 = e.family == FAMILY_IPV6;
        // An address filter (of either family, or both for an endpoint with two) holds
        // when it is unset, or when the packet's family has it and the packet carries it.
        let address = |want: [u8; 4], want6: &[u8; 16]| {
            let unset = want == [0; 4] && *want6 == [0; 16];
            unset
                || if v6 {
                    *want6 != [0; 16] && (e.src6 == *want6 || e.dst6 == *want6)
                } else {
                    want != [0; 4] && (e.src == want || e.dst == want)
                }
        };
        (self.drops_only == 0 || is_drop)
            && address(self.endpoint, &self.endpoint6)
            && address(self.host, &self.host6)
            && (self.port == [0; 2] || e.sport == self.port || e.dport == self.port)
            && (self.proto == 0 || e.proto == self.proto || (self.proto == ICMP && v6 && e.proto == ICMPV6))
    }
}

#[cfg(feature = "user")]
pod!(TraceEvent, TraceFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!((size_of::<TraceEvent>(), align_of::<TraceEvent>()), (72, 8));
        assert_eq!((size_of::<TraceFilter>(), align_of::<TraceFilter>()), (52, 4));
    }

    #[test]
    fn filter_matches_either_direction() {
        let e = TraceEvent {
            src: [10, 77, 0, 2],
            dst: [1, 1, 1, 1],
            sport: [0, 1],
            dport: [0, 80],
            proto: 6,
            ..Default::default()
        };
        let f = TraceFilter { enabled: 1, endpoint: [1, 1, 1, 1], port: [0, 80], ..Default::default() };
        assert!(f.matches(&e, false));
        assert!(!TraceFilter { proto: 17, ..f }.matches(&e, false));
        assert!(!TraceFilter { drops_only: 1, ..f }.matches(&e, false));
        assert!(TraceFilter { drops_only: 1, ..f }.matches(&e, true));
    }

    #[test]
    fn address_filters_hold_per_family() {
        let a6 = [0xfd, 0, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let v6 = TraceEvent { family: FAMILY_IPV6, src6: a6, dst6: [0x20; 16], ..Default::default() };
        let v4 = TraceEvent { src: [10, 77, 0, 2], dst: [1, 1, 1, 1], ..Default::default() };
        let both = TraceFilter { enabled: 1, endpoint: [10, 77, 0, 2], endpoint6: a6, ..Default::default() };
        assert!(both.matches(&v6, false) && both.matches(&v4, false));
        let only4 = TraceFilter { endpoint6: [0; 16], ..both };
        assert!(only4.matches(&v4, false) && !only4.matches(&v6, false));
        let only6 = TraceFilter { endpoint: [0; 4], ..both };
        assert!(!only6.matches(&v4, false) && only6.matches(&v6, false));
        let host6 = TraceFilter { enabled: 1, host6: [0x20; 16], ..Default::default() };
        assert!(host6.matches(&v6, false) && !host6.matches(&v4, false));
        assert!(TraceFilter { enabled: 1, ..Default::default() }.matches(&v6, false));
    }
}
