//! IPv6's node-local socket hooks, `node_local`'s for IPv4 over again: a process on the
//! node reaching [NODE_IP6]:HOST_PORT or [::1]:HOST_PORT is sent straight to the
//! container behind a port published on IPv6 (`PORT_MAPS6`): connect6 for connected
//! sockets, sendmsg6 for each datagram of an unconnected UDP socket; recvmsg6 and
//! getpeername6 then show the process the address it asked for.
//!
//! ::1 takes a port published on ::1 alone (`--host-ip ::1`, for node processes only),
//! then one published on every address; the node's address, one published on it alone,
//! then one on every address. An IPv4-mapped address (::ffff:a.b.c.d) is neither, and is
//! left alone: IPv4's hooks do not see it either, since the kernel connects an IPv6
//! socket to it without running them.
//!
//! Only on a node with IPv6 (`NODE_F_IPV6`), and, as for IPv4, only for sockets of the
//! node's network namespace.
use aya_ebpf::{
    bindings::{bpf_sock_addr, BPF_NOEXIST},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use netpath_common::{conntrack::NODE_F_IPV6, CtKey6, Ip6, Reason, SockOrigin6, SockRevKey6};

use crate::{
    counters,
    maps::{NODE_CONFIG6, NODE_LOCAL_REV6},
    node_local::{in_node, socket_cookie, ALLOW},
    port_map,
};

/// ::1 as the context's four words (network byte order in memory).
const LOOPBACK: [u32; 4] = [0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])];

#[cgroup_sock_addr(connect6)]
pub fn node_connect6(ctx: SockAddrContext) -> i32 {
    redirect(&ctx);
    ALLOW
}

#[cgroup_sock_addr(sendmsg6)]
pub fn node_sendmsg6(ctx: SockAddrContext) -> i32 {
    redirect(&ctx);
    ALLOW
}

#[cgroup_sock_addr(recvmsg6)]
pub fn node_recvmsg6(ctx: SockAddrContext) -> i32 {
    reverse(&ctx);
    ALLOW
}

#[cgroup_sock_addr(getpeername6)]
pub fn node_getpeername6(ctx: SockAddrContext) -> i32 {
    reverse(&ctx);
    ALLOW
}

/// The socket belongs to the node's namespace, and the node has IPv6.
#[inline(always)]
fn in_node6(ctx: &SockAddrContext) -> bool {
    in_node(ctx).is_some_and(|cfg| cfg.flags & NODE_F_IPV6 != 0)
}

/// The address in the context (user_ip6) and its port.
///
/// Word by word and volatile: every kernel's verifier takes user_ip6 in 4-byte words
/// (wider or narrower accesses only under rules that differ between versions), and the
/// compiler must neither merge nor split them.
#[inline(always)]
fn read_addr(sa: *mut bpf_sock_addr) -> ([u32; 4], [u8; 2]) {
    // SAFETY: sock_addr is the kernel's context, valid for the program's run; user_ip6
    // and user_port are readable in every sock_addr hook.
    unsafe {
        let w = core::ptr::addr_of!((*sa).user_ip6) as *const u32;
        let ip = [
            core::ptr::read_volatile(w),
            core::ptr::read_volatile(w.add(1)),
            core::ptr::read_volatile(w.add(2)),
            core::ptr::read_volatile(w.add(3)),
        ];
        // user_port holds the port in network order in its low 16 bits.
        (ip, ((*sa).user_port as u16).to_ne_bytes())
    }
}

/// Writes an address and port into the context (see [`read_addr`]).
///
/// # Safety
/// Only in hooks where user_ip6 and user_port are writable: connect6, sendmsg6,
/// recvmsg6, getpeername6.
#[inline(always)]
unsafe fn write_addr(sa: *mut bpf_sock_addr, ip: Ip6, port: [u8; 2]) {
    let words = to_words(ip);
    // SAFETY: the caller's hook may write these fields.
    unsafe {
        let w = core::ptr::addr_of_mut!((*sa).user_ip6) as *mut u32;
        core::ptr::write_volatile(w, words[0]);
        core::ptr::write_volatile(w.add(1), words[1]);
        core::ptr::write_volatile(w.add(2), words[2]);
        core::ptr::write_volatile(w.add(3), words[3]);
        (*sa).user_port = u16::from_ne_bytes(port) as u32;
    }
}

#[inline(always)]
fn to_words(ip: Ip6) -> [u32; 4] {
    // SAFETY: same size, every bit pattern valid; the words keep the bytes' memory order.
    unsafe { core::mem::transmute::<Ip6, [u32; 4]>(ip) }
}

#[inline(always)]
fn from_words(w: [u32; 4]) -> Ip6 {
    // SAFETY: as in to_words.
    unsafe { core::mem::transmute::<[u32; 4], Ip6>(w) }
}

/// Word by word: comparing the bytes spills a register per byte.
#[inline(always)]
fn same(a: [u32; 4], b: [u32; 4]) -> bool {
    (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) == 0
}

/// Points the socket's destination at the container behind a port published on IPv6,
/// and remembers what the process asked for.
#[inline(always)]
fn redirect(ctx: &SockAddrContext) {
    if !in_node6(ctx) {
        return;
    }
    let sa = ctx.sock_addr;
    let (words, port) = read_addr(sa);
    // Loopback, or the node's address (none yet: all zero, never matched).
    let this_node = same(words, LOOPBACK)
        || NODE_CONFIG6.get(0).is_some_and(|c| {
            let node = to_words(Ip6(c.node_ip));
            !same(node, [0; 4]) && same(words, node)
        });
    if !this_node {
        return;
    }
    // SAFETY: readable in every sock_addr hook.
    let proto = unsafe { (*sa).protocol } as u8;
    let ip = from_words(words);
    // The exact address first (::1 alone, the node's address alone), then every address.
    let key = CtKey6 { dst: ip, dport: port, proto, ..Default::default() };
    let Some((tip, tport)) = port_map::mapping(&key) else { return };
    // SAFETY: connect6 and sendmsg6 may write the address.
    unsafe { write_addr(sa, tip, tport) };
    let rev = SockRevKey6 { cookie: socket_cookie(ctx), ip: tip, port: tport, _pad: [0; 6] };
    let origin = SockOrigin6 { ip, port, _pad: [0; 2] };
    // Counted once per socket and service, not per datagram.
    if NODE_LOCAL_REV6.insert(&rev, &origin, BPF_NOEXIST as u64).is_ok() {
        counters::count(Reason::NodeLocalConnect, 0);
    } else {
        // The other spelling (::1 or the node's address) of the same service: the
        // latest one wins.
        let _ = NODE_LOCAL_REV6.insert(&rev, &origin, 0);
    }
}

/// Shows the process the address it asked for in place of a container's.
#[inline(always)]
fn reverse(ctx: &SockAddrContext) {
    if !in_node6(ctx) {
        return;
    }
    let sa = ctx.sock_addr;
    let (words, port) = read_addr(sa);
    let rev = SockRevKey6 { cookie: socket_cookie(ctx), ip: from_words(words), port, _pad: [0; 6] };
    // SAFETY: copied out at once.
    let Some(origin) = (unsafe { NODE_LOCAL_REV6.get(&rev) }).copied() else { return };
    // SAFETY: recvmsg6 and getpeername6 may write the address.
    unsafe { write_addr(sa, origin.ip, origin.port) };
}
