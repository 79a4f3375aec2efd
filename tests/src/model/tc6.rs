//! from_container for IPv6 (container_path6): the gateway's neighbour discovery, source
//! validation, and delivery to local containers; everything else is the stack's.
use netpath_common::{conntrack::NODE_F_IPV6, EndpointInfo, Reason, ENDPOINT_F_BRIDGED, GATEWAY6};

use super::{
    flow::be16,
    tc::{Step, PASS},
    Model, Verdict,
};

const IP6: usize = 14;
const L4: usize = IP6 + 40;
const SRC: usize = IP6 + 8;
const DST: usize = IP6 + 24;
const HOP_LIMIT: usize = IP6 + 7;
const ICMPV6: u8 = 58;

fn addr(p: &[u8], at: usize) -> [u8; 16] {
    p[at..at + 16].try_into().expect("16 bytes")
}

fn link_local(a: &[u8; 16]) -> bool {
    a[0] == 0xfe && a[1] & 0xc0 == 0x80
}

/// The ICMPv6 checksum of the `len` bytes at L4, with its pseudo-header.
fn icmp6_checksum(p: &[u8], len: usize) -> [u8; 2] {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for c in bytes.chunks(2) {
            sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
        }
    };
    add(&p[SRC..SRC + 32]);
    add(&(len as u32).to_be_bytes());
    add(&[0, 0, 0, ICMPV6]);
    let mut msg = p[L4..L4 + len].to_vec();
    msg[2..4].copy_from_slice(&[0, 0]);
    add(&msg);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    (!(sum as u16)).to_be_bytes()
}

impl Model {
    fn endpoint6(&self, ip: [u8; 16]) -> Option<([u8; 4], EndpointInfo)> {
        let owner = *self.endpoints6.get(&ip)?;
        Some((owner, self.endpoint(owner)?))
    }

    /// The endpoint owning IPv6 address `ip`, if it lives behind `ifindex`.
    fn sender6(&self, ip: [u8; 16], ifindex: u32) -> Option<([u8; 4], EndpointInfo)> {
        self.endpoint6(ip).filter(|(_, e)| e.host_ifindex == ifindex)
    }

    pub(super) fn container6_step(&mut self, p: &mut [u8], ifindex: u32) -> Step {
        // A node without an IPv6 pod CIDR leaves its containers' IPv6 to the stack.
        if self.world.config.flags & NODE_F_IPV6 == 0 {
            return Ok(PASS);
        }
        let len = p.len() as u32;
        if p.len() < L4 || p[IP6] >> 4 != 6 {
            return Err(Reason::DropMalformed);
        }
        let (src, dst) = (addr(p, SRC), addr(p, DST));
        if p[IP6 + 6] == ICMPV6 {
            if let Some(done) = self.neighbour_solicitation(p, ifindex)? {
                return Ok(done);
            }
        }
        // Address configuration (DAD, MLD) speaks from ::; nothing else may.
        if src == [0; 16] {
            return if p[IP6 + 6] == ICMPV6 { Ok(PASS) } else { Err(Reason::DropSpoofedSource) };
        }
        let (owner, sender) = self.sender6(src, ifindex).ok_or(Reason::DropSpoofedSource)?;
        if p[6..12] != sender.mac {
            return Err(Reason::DropSpoofedSource);
        }
        self.endpoint_tx(owner, len);
        // Multicast and link-local traffic is the link's, never routed.
        if sender.flags & ENDPOINT_F_BRIDGED != 0 || dst[0] == 0xff || link_local(&src) || link_local(&dst) {
            return Ok(PASS);
        }
        let Some((peer_owner, peer)) = self.endpoint6(dst) else { return Ok(PASS) };
        if p[HOP_LIMIT] <= 1 {
            return Ok(PASS);
        }
        p[HOP_LIMIT] -= 1;
        Ok(self.deliver_to_peer(p, peer_owner, &peer, true))
    }

    /// A solicitation for the gateway answered with an advertisement of the host veth's
    /// MAC; None when the packet is not one (an ordinary packet then).
    fn neighbour_solicitation(
        &mut self,
        p: &mut [u8],
        ifindex: u32,
    ) -> Result<Option<(Verdict, Reason)>, Reason> {
        if p.len() < L4 + 24 || p[L4] != 135 || p[L4 + 1] != 0 || addr(p, L4 + 8) != GATEWAY6 {
            return Ok(None);
        }
        let src = addr(p, SRC);
        // Duplicate address detection must see silence.
        if src == [0; 16] {
            return Ok(Some(PASS));
        }
        if p[HOP_LIMIT] != 255 {
            return Err(Reason::DropMalformed);
        }
        let (_, sender) = self.sender6(src, ifindex).ok_or(Reason::DropSpoofedSource)?;
        if p[6..12] != sender.mac {
            return Err(Reason::DropSpoofedSource);
        }
        if sender.flags & ENDPOINT_F_BRIDGED != 0 {
            return Ok(Some(PASS));
        }
        let msg_len = match be16(p, IP6 + 4) {
            // A multicast solicitation without the option is not answered (RFC 4861
            // 4.3: it must carry one; 7.2.4: the answer must carry the target's).
            [0, 24] if p[DST] == 0xff => return Ok(Some(PASS)),
            [0, 24] => 24,
            [0, 32] => 32,
            _ => return Ok(Some(PASS)),
        };
        if msg_len == 32 {
            let opt = L4 + 24;
            if p.len() < opt + 8 {
                return Err(Reason::DropMalformed);
            }
            if p[opt] != 1 || p[opt + 1] != 1 {
                return Ok(Some(PASS));
            }
            if p[opt + 2..opt + 8] != sender.mac {
                return Err(Reason::DropSpoofedSource);
            }
            p[opt] = 2;
            p[opt + 2..opt + 8].copy_from_slice(&sender.host_mac);
        }
        p[0..6].copy_from_slice(&sender.mac);
        p[6..12].copy_from_slice(&sender.host_mac);
        p[DST..DST + 16].copy_from_slice(&src);
        p[SRC..SRC + 16].copy_from_slice(&GATEWAY6);
        p[L4] = 136;
        p[L4 + 4..L4 + 8].copy_from_slice(&[0xe0, 0, 0, 0]);
        let check = icmp6_checksum(p, msg_len);
        p[L4 + 2..L4 + 4].copy_from_slice(&check);
        Ok(Some((Verdict::Out(ifindex), Reason::NdAnswered)))
    }
}
