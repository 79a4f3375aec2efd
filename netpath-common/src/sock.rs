//! State of the node-local socket hooks. A process on the node that sends to
//! NODE_IP:HOST_PORT (or 127.0.0.1:HOST_PORT) is sent to the container directly by
//! connect4/sendmsg4; recvmsg4 and getpeername4 must then show it the address it asked
//! for, not the container's, or an unconnected UDP client drops the reply as coming from
//! a stranger. The hooks remember, per socket, which container address stands for which
//! requested one. connect6/sendmsg6 do the same for [NODE_IP6]:HOST_PORT and
//! [::1]:HOST_PORT, remembered in their own table ([`SockRevKey6`] -> [`SockOrigin6`]).

use crate::Ip6;

/// A socket (its cookie) and the container address it was redirected to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SockRevKey {
    pub cookie: u64,
    pub ip: [u8; 4],
    /// Network byte order.
    pub port: [u8; 2],
    pub _pad: [u8; 2],
}

/// The address the process asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockOrigin {
    pub ip: [u8; 4],
    /// Network byte order.
    pub port: [u8; 2],
    pub _pad: [u8; 2],
}

/// [`SockRevKey`] for IPv6: a socket and the container IPv6 address it was redirected to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SockRevKey6 {
    pub cookie: u64,
    pub ip: Ip6,
    /// Network byte order.
    pub port: [u8; 2],
    pub _pad: [u8; 6],
}

/// [`SockOrigin`] for IPv6: the address the process asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockOrigin6 {
    pub ip: Ip6,
    /// Network byte order.
    pub port: [u8; 2],
    pub _pad: [u8; 2],
}

#[cfg(feature = "user")]
pod!(SockRevKey, SockOrigin, SockRevKey6, SockOrigin6);

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!((size_of::<SockRevKey>(), align_of::<SockRevKey>()), (16, 8));
        assert_eq!((size_of::<SockOrigin>(), align_of::<SockOrigin>()), (8, 1));
        assert_eq!((size_of::<SockRevKey6>(), align_of::<SockRevKey6>()), (32, 8));
        assert_eq!((size_of::<SockOrigin6>(), align_of::<SockOrigin6>()), (20, 4));
    }
}
