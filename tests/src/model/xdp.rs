//! uplink_xdp: published-port traffic and replies to it, translated before the skb
//! exists; everything else (ICMP, masquerade replies, the node's own traffic) is tc's.
use netpath_common::conntrack::{CT_F_DNAT, CT_F_SNAT};

use super::{
    csum,
    flow::{be16, parse, IP, TCP, UDP},
    refused_by_xdp_test_run, Model, XdpExpected,
};

impl Model {
    /// uplink_xdp on `packet`. It always passes the packet on.
    pub fn uplink_xdp(&mut self, packet: &[u8]) -> XdpExpected {
        let mut p = packet.to_vec();
        let translated =
            !refused_by_xdp_test_run(packet, self.header_checks) && self.xdp_translate(&mut p).is_some();
        XdpExpected { translated, packet: p }
    }

    fn xdp_translate(&mut self, p: &mut [u8]) -> Option<()> {
        if p.len() < 14 || be16(p, 12) != [0x08, 0x00] {
            return None;
        }
        let cfg = self.world.config;
        let flow = parse(p).ok()?;
        let proto = flow.key.proto;
        if cfg.node_ip == [0; 4] || flow.key.dst != cfg.node_ip || (proto != TCP && proto != UDP) {
            return None;
        }
        let len = p.len() as u32;
        let entry = match self.ct_lookup(&flow, len) {
            Some(e) => e,
            None => {
                let (ip, port) = self.published(&flow.key)?;
                self.endpoint(ip)?;
                self.create_dnat(&flow, ip, port, len, true).ok()?
            }
        };
        // Only entries that rewrite just the destination are XDP's.
        if entry.flags & CT_F_DNAT == 0 || entry.flags & CT_F_SNAT != 0 {
            return None;
        }
        let l4 = flow.l4;
        let csum_off = if proto == TCP { l4 + 16 } else { l4 + 6 };
        let ip_c = csum::xdp_update4(be16(p, IP + 10), flow.key.dst, entry.nat_dst);
        p[IP + 10..IP + 12].copy_from_slice(&ip_c);
        p[IP + 16..IP + 20].copy_from_slice(&entry.nat_dst);
        let mut c = be16(p, csum_off);
        // UDP without checksum keeps none; a real one never becomes "none".
        if !(proto == UDP && c == [0, 0]) {
            c = csum::xdp_update4(c, flow.key.dst, entry.nat_dst);
            c = csum::xdp_update(c, flow.key.dport, entry.nat_dport);
            if proto == UDP && c == [0, 0] {
                c = [0xff, 0xff];
            }
            p[csum_off..csum_off + 2].copy_from_slice(&c);
        }
        p[l4 + 2..l4 + 4].copy_from_slice(&entry.nat_dport);
        Some(())
    }
}
