//! Published ports (`PORT_MAPS`, `PORT_MAPS6`): which container a connection to the
//! node is for. One module every program that accepts connections for the node imports.
use netpath_common::conntrack::{PortKeyOf, Tuple};

use crate::family::Addr;

/// The container (address, port) behind the published port `key` is addressed to, as a
/// packet path needs it: a mapping whose container is gone counts as none, because it
/// must not create state (each retried SYN would leave a pair of entries until they
/// time out).
#[inline(always)]
pub fn target<A: Addr>(key: &Tuple<A>) -> Option<(A, [u8; 2])> {
    let (ip, port) = mapping(key)?;
    ip.is_endpoint().then_some((ip, port))
}

/// [`target`] for a mapping published on exactly `key`'s host address.
#[inline(always)]
pub fn exact_target<A: Addr>(key: &Tuple<A>) -> Option<(A, [u8; 2])> {
    let (ip, port) = exact(key)?;
    ip.is_endpoint().then_some((ip, port))
}

/// The mapping for exactly `key`'s host address (a loopback-only one, for instance).
#[inline(always)]
pub fn exact<A: Addr>(key: &Tuple<A>) -> Option<(A, [u8; 2])> {
    let pk = PortKeyOf { host_ip: key.dst, port: key.dport, proto: key.proto, _pad: 0 };
    // SAFETY: copied out at once.
    let target = unsafe { A::ports().get(&pk) }.copied()?;
    Some((target.ip, target.port))
}

/// The mapping for `key`: for the exact host address first, then one for any.
#[inline(always)]
pub fn mapping<A: Addr>(key: &Tuple<A>) -> Option<(A, [u8; 2])> {
    let mut pk = PortKeyOf { host_ip: key.dst, port: key.dport, proto: key.proto, _pad: 0 };
    // SAFETY: copied out at once.
    let target = unsafe { A::ports().get(&pk) }.copied().or_else(|| {
        pk.host_ip = A::default();
        // SAFETY: as above.
        unsafe { A::ports().get(&pk) }.copied()
    })?;
    Some((target.ip, target.port))
}
