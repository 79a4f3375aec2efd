//! Published ports (`PORT_MAPS`): which container a connection to the node is for. One
//! module every program that accepts connections for the node imports.
use netpath_common::{CtKey, EndpointKey, PortKey};

use crate::maps::{ENDPOINTS, PORT_MAPS};

/// The container (address, port) behind the published port `key` is addressed to, as a
/// packet path needs it: a mapping whose container is gone counts as none, because it
/// must not create state (each retried SYN would leave a pair of entries until they
/// time out).
#[inline(always)]
pub fn target(key: &CtKey) -> Option<([u8; 4], [u8; 2])> {
    let (ip, port) = mapping(key)?;
    // SAFETY: only checked for presence.
    unsafe { ENDPOINTS.get(EndpointKey::new(ip)) }?;
    Some((ip, port))
}

/// [`target`] for a mapping published on exactly `key`'s host address.
#[inline(always)]
pub fn exact_target(key: &CtKey) -> Option<([u8; 4], [u8; 2])> {
    let (ip, port) = exact(key)?;
    // SAFETY: only checked for presence.
    unsafe { ENDPOINTS.get(EndpointKey::new(ip)) }?;
    Some((ip, port))
}

/// The mapping for exactly `key`'s host address (a loopback-only one, for instance).
#[inline(always)]
pub fn exact(key: &CtKey) -> Option<([u8; 4], [u8; 2])> {
    let pk = PortKey { host_ip: key.dst, port: key.dport, proto: key.proto, _pad: 0 };
    // SAFETY: copied out at once.
    let target = unsafe { PORT_MAPS.get(pk) }.copied()?;
    Some((target.ip, target.port))
}

/// The mapping for `key`: for the exact host address first, then one for any.
#[inline(always)]
pub fn mapping(key: &CtKey) -> Option<([u8; 4], [u8; 2])> {
    let mut pk = PortKey { host_ip: key.dst, port: key.dport, proto: key.proto, _pad: 0 };
    // SAFETY: copied out at once.
    let target = unsafe { PORT_MAPS.get(pk) }.copied().or_else(|| {
        pk.host_ip = [0; 4];
        // SAFETY: as above.
        unsafe { PORT_MAPS.get(pk) }.copied()
    })?;
    Some((target.ip, target.port))
}
