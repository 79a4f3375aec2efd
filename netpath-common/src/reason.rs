//! What the datapath did with a packet. One code per outcome feeds the per-reason
//! counters (and later the trace stream); user space decodes it with [`Reason::name`].

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Delivered straight into a local container with `bpf_redirect_peer`.
    ForwardedToPeer = 0,
    /// ARP request from a container answered by the datapath (the gateway has no bridge).
    ArpReplied = 1,
    /// Not for a local container: handed to the node's stack unchanged.
    PassedToStack = 2,
    /// Source IPv4 is not the address of the endpoint behind this veth.
    DropSpoofedSource = 3,
    /// Header truncated or not parseable.
    DropMalformed = 4,
    /// The kernel refused the redirect (target veth gone or down).
    DropRedirectFailed = 5,
    /// A new flow to the outside got a source port from the NAT range (counted once per flow).
    SnatNewFlow = 6,
    /// A new connection to a published port was translated to its container (once per flow).
    DnatNewFlow = 7,
    /// A packet of a tracked flow was translated (either direction).
    NatTranslated = 8,
    /// No free source port in the NAT range for this destination.
    DropNatPortsExhausted = 9,
    /// The node has no route for the translated packet.
    DropFibFailed = 10,
    /// An IP fragment on a path that needs ports (NAT) cannot be translated.
    DropFragment = 11,
    /// A packet for the outside with a protocol netpath cannot translate (not TCP, UDP or
    /// ICMP echo): dropped rather than leaked with a pod source address.
    DropUnsupportedProtocol = 12,
    /// A conntrack entry was created (user space derives evictions from this).
    CtCreated = 13,
    /// Conntrack entries removed by netpath: by the agent's garbage collector after their
    /// timeout, or by the datapath when a new flow takes over a closed flow's tuple.
    /// created - collected - live = evicted by the LRU.
    CtCollected = 14,
    /// A process on the node connected or sent a datagram to a published port and was
    /// sent straight to the container by the socket hooks (no packet is counted: this
    /// counts sockets, once per published service each reached).
    NodeLocalConnect = 15,
    /// Translated by the uplink's XDP program, delivered by tc.
    XdpTranslated = 16,
    /// Addressed to the pod network but to no endpoint of this node (routed mode).
    DropNoEndpoint = 17,
    /// Trace events lost because the ring buffer was full (not a packet decision).
    TraceEventsLost = 18,
    /// A new flow's first packet, dropped because conntrack could not hold both entries
    /// of its pair (the new flow is refused rather than tracked by half).
    DropCtFull = 19,
    /// Sent to another node's pod through the overlay (VXLAN) or the node's routes.
    ToOtherNode = 20,
    /// For the cluster's pod network, but no node holds the subnet.
    DropNoNodeRoute = 21,
    /// Too big for the path to another node and not to be fragmented (DF): dropped, and
    /// the sender told the path's MTU (ICMP fragmentation needed, from its gateway).
    DropFragNeeded = 22,
    /// IPv6 neighbour solicitation from a container for its gateway (fe80::1) answered
    /// by the datapath with a neighbour advertisement (the IPv6 twin of arp-replied).
    NdAnswered = 23,
    /// An IPv6 packet to be translated (NAT66) whose transport header sits behind an
    /// extension header (hop-by-hop, routing, destination options): NAT66 does not walk
    /// them, so it never rewrites a field it misread. Fragments count as drop-fragment.
    DropExtensionHeader = 24,
    /// Forwarded out through the node's routes with the container's own address (on a
    /// node with a routed prefix: `--masquerade false` for IPv4, `--masquerade6 false`
    /// for IPv6), or into a container from the uplink the same way.
    Routed = 25,
    /// What a macvlan/ipvlan endpoint's container sent, its source checked (address,
    /// MAC, and for ARP the sender fields) and counted, left to the sub-interface's
    /// driver, which switches it to a sibling or sends it out of the parent device.
    PassedToParent = 26,
    /// An IPv6 packet too big for the path to another node: dropped, and the sender
    /// told the path's MTU (ICMPv6 packet too big, from its gateway fe80::1).
    DropPacketTooBig = 27,
}

impl Reason {
    /// The reason with code `code`, if any.
    pub fn from_code(code: u32) -> Option<Reason> {
        Self::ALL.get(code as usize).copied()
    }

    /// Number of reasons: the size of the per-reason counter array.
    pub const COUNT: u32 = 28;

    pub const ALL: [Reason; Self::COUNT as usize] = [
        Reason::ForwardedToPeer,
        Reason::ArpReplied,
        Reason::PassedToStack,
        Reason::DropSpoofedSource,
        Reason::DropMalformed,
        Reason::DropRedirectFailed,
        Reason::SnatNewFlow,
        Reason::DnatNewFlow,
        Reason::NatTranslated,
        Reason::DropNatPortsExhausted,
        Reason::DropFibFailed,
        Reason::DropFragment,
        Reason::DropUnsupportedProtocol,
        Reason::CtCreated,
        Reason::CtCollected,
        Reason::NodeLocalConnect,
        Reason::XdpTranslated,
        Reason::DropNoEndpoint,
        Reason::TraceEventsLost,
        Reason::DropCtFull,
        Reason::ToOtherNode,
        Reason::DropNoNodeRoute,
        Reason::DropFragNeeded,
        Reason::NdAnswered,
        Reason::DropExtensionHeader,
        Reason::Routed,
        Reason::PassedToParent,
        Reason::DropPacketTooBig,
    ];

    /// Stable name used by the CLI, metrics labels and docs.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::ForwardedToPeer => "forwarded-to-peer",
            Reason::ArpReplied => "arp-replied",
            Reason::PassedToStack => "passed-to-stack",
            Reason::DropSpoofedSource => "drop-spoofed-source",
            Reason::DropMalformed => "drop-malformed",
            Reason::DropRedirectFailed => "drop-redirect-failed",
            Reason::SnatNewFlow => "snat-new-flow",
            Reason::DnatNewFlow => "dnat-new-flow",
            Reason::NatTranslated => "nat-translated",
            Reason::DropNatPortsExhausted => "drop-nat-ports-exhausted",
            Reason::DropFibFailed => "drop-fib-failed",
            Reason::DropFragment => "drop-fragment",
            Reason::DropUnsupportedProtocol => "drop-unsupported-protocol",
            Reason::CtCreated => "ct-created",
            Reason::CtCollected => "ct-collected",
            Reason::NodeLocalConnect => "node-local-connect",
            Reason::XdpTranslated => "xdp-translated",
            Reason::DropNoEndpoint => "drop-no-endpoint",
            Reason::TraceEventsLost => "trace-events-lost",
            Reason::DropCtFull => "drop-ct-full",
            Reason::ToOtherNode => "to-other-node",
            Reason::DropNoNodeRoute => "drop-no-node-route",
            Reason::DropFragNeeded => "drop-frag-needed",
            Reason::NdAnswered => "nd-answered",
            Reason::DropExtensionHeader => "drop-extension-header",
            Reason::Routed => "routed",
            Reason::PassedToParent => "passed-to-parent",
            Reason::DropPacketTooBig => "drop-packet-too-big",
        }
    }

    pub const fn is_drop(self) -> bool {
        matches!(
            self,
            Reason::DropSpoofedSource
                | Reason::DropMalformed
                | Reason::DropRedirectFailed
                | Reason::DropNatPortsExhausted
                | Reason::DropFibFailed
                | Reason::DropFragment
                | Reason::DropNoNodeRoute
                | Reason::DropFragNeeded
                | Reason::DropPacketTooBig
                | Reason::DropUnsupportedProtocol
                | Reason::DropNoEndpoint
                | Reason::DropCtFull
                | Reason::DropExtensionHeader
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_exactly_the_reasons_named_drop() {
        for r in Reason::ALL {
            assert_eq!(r.is_drop(), r.name().starts_with("drop-"), "{}", r.name());
        }
    }

    #[test]
    fn reason_codes_index_the_counter_array() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as u32, i as u32, "{} out of order", r.name());
        }
        assert_eq!(core::mem::size_of::<Reason>(), 4);
    }

    #[test]
    fn codes_are_stable() {
        // Counters, traces and dashboards key on these numbers: append, never renumber.
        assert_eq!(Reason::TraceEventsLost as u32, 18);
        assert_eq!(Reason::DropCtFull as u32, 19);
        assert_eq!(Reason::from_code(19), Some(Reason::DropCtFull));
        assert_eq!(Reason::DropCtFull.name(), "drop-ct-full");
        assert_eq!(Reason::from_code(26), Some(Reason::PassedToParent));
        assert_eq!(Reason::PassedToParent.name(), "passed-to-parent");
        assert_eq!(Reason::from_code(27), Some(Reason::DropPacketTooBig));
    }
}
