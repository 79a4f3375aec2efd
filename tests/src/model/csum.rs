//! The checksum arithmetic of the kernel helpers the programs call: RFC 1624 incremental
//! updates, down to which encoding of zero each helper writes (0x0000 or 0xffff), so the
//! model can predict checksum fields byte for byte, a bad checksum staying exactly as bad.

/// One's-complement 32-bit addition with end-around carry (the kernel's csum_add).
fn add32(a: u32, b: u32) -> u32 {
    let (s, carry) = a.overflowing_add(b);
    s.wrapping_add(carry as u32)
}

fn fold(s: u32) -> u16 {
    let s = (s & 0xffff) + (s >> 16);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// One's-complement 16-bit addition (the kernel's csum16_add): 0 only for 0 + 0.
fn add16(a: u16, b: u16) -> u16 {
    let r = a.wrapping_add(b);
    r.wrapping_add((r < b) as u16)
}

/// csum_replace4, behind `l3_csum_replace(.., 4)` and every `l4_csum_replace` on a socket
/// buffer without checksum offload (the test run's): HC' = ~(~HC + ~m + m') over 32 bits.
/// Its sum is never zero, so it writes 0x0000, never 0xffff.
pub fn replace4(sum: [u8; 2], from: [u8; 4], to: [u8; 4]) -> [u8; 2] {
    let s = add32(!(u16::from_be_bytes(sum) as u32), !u32::from_be_bytes(from));
    (!fold(add32(s, u32::from_be_bytes(to)))).to_be_bytes()
}

/// `l4_csum_replace(.., 2)`: the 2-byte value widened to 4 and replace4.
pub fn replace2_wide(sum: [u8; 2], from: [u8; 2], to: [u8; 2]) -> [u8; 2] {
    replace4(sum, [from[0], from[1], 0, 0], [to[0], to[1], 0, 0])
}

/// csum_replace2, behind `l3_csum_replace(.., 2)`: the same update in 16-bit arithmetic.
pub fn replace2(sum: [u8; 2], from: [u8; 2], to: [u8; 2]) -> [u8; 2] {
    let inner = add16(!u16::from_be_bytes(sum), !u16::from_be_bytes(from));
    (!add16(inner, u16::from_be_bytes(to))).to_be_bytes()
}

/// `bpf_csum_diff` of two 16-byte addresses (IPv6) fed to `l4_csum_replace(.., 0, diff,
/// ..)`: HC' = ~fold(diff + ~HC) over 32 bits, where the difference is the sum of the new
/// words and the complements of the old (whatever 32-bit form the kernel's csum_partial
/// leaves it in, the one's-complement value is the same). As [`replace4`], never 0xffff.
pub fn replace16(sum: [u8; 2], from: [u8; 16], to: [u8; 16]) -> [u8; 2] {
    let word = |a: &[u8; 16], i: usize| u32::from_be_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    let mut diff = 0;
    for i in (0..16).step_by(4) {
        diff = add32(add32(diff, !word(&from, i)), word(&to, i));
    }
    (!fold(add32(diff, !(u16::from_be_bytes(sum) as u32)))).to_be_bytes()
}

/// An incremental update of an L4 checksum, as the datapath asks a helper for it.
#[derive(Clone, Copy, Debug)]
pub enum Update {
    /// A 4-byte field (an IPv4 address in the pseudo-header): [`replace4`].
    Four([u8; 4], [u8; 4]),
    /// A 2-byte field (a port, an echo identifier): [`replace2_wide`].
    Two([u8; 2], [u8; 2]),
    /// An IPv6 address in the pseudo-header: [`replace16`].
    Diff([u8; 16], [u8; 16]),
}

impl Update {
    pub fn apply(self, sum: [u8; 2]) -> [u8; 2] {
        match self {
            Update::Four(from, to) => replace4(sum, from, to),
            Update::Two(from, to) => replace2_wide(sum, from, to),
            Update::Diff(from, to) => replace16(sum, from, to),
        }
    }
}

/// The XDP program's own update (no helper exists there): RFC 1624 eqn. 3 summed in 32
/// bits and folded, so it may write 0xffff.
pub fn xdp_update(sum: [u8; 2], from: [u8; 2], to: [u8; 2]) -> [u8; 2] {
    let s = (!u16::from_be_bytes(sum) as u32)
        + (!u16::from_be_bytes(from) as u32)
        + u16::from_be_bytes(to) as u32;
    (!fold(s)).to_be_bytes()
}

pub fn xdp_update4(sum: [u8; 2], from: [u8; 4], to: [u8; 4]) -> [u8; 2] {
    let c = xdp_update(sum, [from[0], from[1]], [to[0], to[1]]);
    xdp_update(c, [from[2], from[3]], [to[2], to[3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkt::csum;

    #[test]
    fn an_incremental_update_equals_a_recomputed_checksum() {
        let mut hdr = [0x45, 0, 0, 40, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 77, 0, 2, 192, 168, 77, 2];
        let c = csum(&hdr).to_be_bytes();
        hdr[10..12].copy_from_slice(&c);
        let new_src = [192, 168, 77, 1];
        let updated = replace4(c, [10, 77, 0, 2], new_src);
        hdr[12..16].copy_from_slice(&new_src);
        hdr[10..12].copy_from_slice(&updated);
        assert_eq!(csum(&hdr), 0);
        let ttl = replace2(updated, [64, 6], [63, 6]);
        hdr[8] = 63;
        hdr[10..12].copy_from_slice(&ttl);
        assert_eq!(csum(&hdr), 0);
        let x = xdp_update4(ttl, [192, 168, 77, 1], [10, 77, 0, 3]);
        hdr[12..16].copy_from_slice(&[10, 77, 0, 3]);
        hdr[10..12].copy_from_slice(&x);
        assert_eq!(csum(&hdr), 0);
    }

    #[test]
    fn an_ipv6_address_change_keeps_a_checksum_over_its_pseudo_header_right() {
        let (src, dst) = (
            [0xfd, 0, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4],
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xcc],
        );
        let new_src = [0x20, 1, 0xd, 0xb8, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let pseudo = |src: &[u8; 16], c: [u8; 2]| {
            let mut d = src.to_vec();
            d.extend_from_slice(&dst);
            d.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 17, 0x04, 0x57, 0, 53, 0, 8]);
            d.extend_from_slice(&c);
            csum(&d)
        };
        let c = pseudo(&src, [0, 0]).to_be_bytes();
        assert_eq!(pseudo(&src, c), 0);
        let updated = replace16(c, src, new_src);
        assert_eq!(pseudo(&new_src, updated), 0);
        assert_eq!(replace16(updated, new_src, src), c);
        // Four 4-byte replacements make the same change.
        let mut four = c;
        for i in (0..16).step_by(4) {
            let w = |a: &[u8; 16]| [a[i], a[i + 1], a[i + 2], a[i + 3]];
            four = replace4(four, w(&src), w(&new_src));
        }
        assert_eq!(four, updated);
    }

    #[test]
    fn a_wrong_checksum_stays_wrong_by_the_same_amount() {
        let bad = [0x12, 0x34];
        let a = replace4(bad, [1, 2, 3, 4], [5, 6, 7, 8]);
        let back = replace4(a, [5, 6, 7, 8], [1, 2, 3, 4]);
        assert_eq!(back, bad);
    }
}
