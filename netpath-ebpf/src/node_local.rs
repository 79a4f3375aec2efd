//! cgroup socket hooks: a process on the node reaching NODE_IP:HOST_PORT or
//! 127.0.0.1:HOST_PORT is sent straight to the published container, as Docker users
//! expect, without any packet translation: connect4 for connected sockets (TCP, and
//! connected UDP), sendmsg4 for each datagram of an unconnected UDP socket. recvmsg4
//! and getpeername4 then show the process the address it asked for, not the
//! container's (an unconnected UDP client checks where the reply comes from).
//!
//! A port published on a loopback address only is reached this way alone.
//!
//! The hooks see every socket in their cgroup, so they act only inside the node's
//! network namespace (netns cookie). IPv6's hooks are `node_local6`.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use netpath_common::{conntrack::NODE_F_ADDRESS_PORTS, CtKey, Reason, SockOrigin, SockRevKey};

use crate::{
    counters,
    maps::{NODE_CONFIG, NODE_LOCAL_REV},
    port_map,
};

/// Let the call proceed (a cgroup sock_addr program must return 1 to allow).
pub(crate) const ALLOW: i32 = 1;

#[cgroup_sock_addr(connect4)]
pub fn node_connect4(ctx: SockAddrContext) -> i32 {
    redirect(&ctx);
    ALLOW
}

#[cgroup_sock_addr(sendmsg4)]
pub fn node_sendmsg4(ctx: SockAddrContext) -> i32 {
    redirect(&ctx);
    ALLOW
}

#[cgroup_sock_addr(recvmsg4)]
pub fn node_recvmsg4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx);
    ALLOW
}

#[cgroup_sock_addr(getpeername4)]
pub fn node_getpeername4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx);
    ALLOW
}

/// The socket belongs to the node's namespace (and NAT is configured).
#[inline(always)]
pub(crate) fn in_node(ctx: &SockAddrContext) -> Option<netpath_common::NodeConfig> {
    let cfg = NODE_CONFIG.get(0).copied()?;
    // SAFETY: the context pointer is the kernel's; the helper only reads it.
    let cookie = unsafe { bpf_get_netns_cookie(ctx.sock_addr as *mut _) };
    (cfg.netns_cookie != 0 && cookie == cfg.netns_cookie).then_some(cfg)
}

#[inline(always)]
pub(crate) fn socket_cookie(ctx: &SockAddrContext) -> u64 {
    // SAFETY: as above.
    unsafe { bpf_get_socket_cookie(ctx.sock_addr as *mut _) }
}

/// Points the socket's destination at the container behind a published port, and
/// remembers what the process asked for.
#[inline(always)]
fn redirect(ctx: &SockAddrContext) {
    let Some(cfg) = in_node(ctx) else { return };
    let sa = ctx.sock_addr;
    // SAFETY: sock_addr is valid for the program's run; these fields are readable.
    let (ip, port, proto) = unsafe { ((*sa).user_ip4, (*sa).user_port, (*sa).protocol) };
    let ip = ip.to_ne_bytes();
    // user_port holds the port in network order in its low 16 bits.
    let port = (port as u16).to_ne_bytes();
    let key = CtKey { dst: cfg.node_ip, dport: port, proto: proto as u8, ..Default::default() };
    // A port published on one address alone: on a loopback one (`--host-ip 127.0.0.1`,
    // docker's `-p 127.0.0.1:8080:80`) it is for node processes only (no packet from
    // outside or from a container is addressed to it, so only this hook finds it); on
    // another address of the uplink, for whoever connects to that address.
    let elsewhere = ip[0] == 127 || (ip != cfg.node_ip && cfg.flags & NODE_F_ADDRESS_PORTS != 0);
    let specific = if elsewhere { port_map::exact(&CtKey { dst: ip, ..key }) } else { None };
    // Loopback and the node address both mean "this node": its ports for any address.
    let this_node = ip == cfg.node_ip || ip[0] == 127;
    let Some((tip, tport)) = specific.or_else(|| if this_node { port_map::mapping(&key) } else { None })
    else {
        return;
    };
    // SAFETY: user_ip4/user_port are writable in connect4 and sendmsg4.
    unsafe {
        (*sa).user_ip4 = u32::from_ne_bytes(tip);
        (*sa).user_port = u16::from_ne_bytes(tport) as u32;
    }
    let rev = SockRevKey { cookie: socket_cookie(ctx), ip: tip, port: tport, _pad: [0; 2] };
    let origin = SockOrigin { ip, port, _pad: [0; 2] };
    // Counted once per socket and service, not per datagram.
    if NODE_LOCAL_REV.insert(&rev, &origin, BPF_NOEXIST as u64).is_ok() {
        counters::count(Reason::NodeLocalConnect, 0);
    } else {
        // The same container address may now stand for the other spelling (loopback
        // or node address) of the service: the latest one wins.
        let _ = NODE_LOCAL_REV.insert(&rev, &origin, 0);
    }
}

/// Shows the process the address it asked for in place of a container's.
#[inline(always)]
fn reverse(ctx: &SockAddrContext) {
    if in_node(ctx).is_none() {
        return;
    }
    let sa = ctx.sock_addr;
    // SAFETY: as in redirect; user_ip4/user_port are writable in recvmsg4 and getpeername4.
    let (ip, port) = unsafe { ((*sa).user_ip4, (*sa).user_port) };
    let rev = SockRevKey {
        cookie: socket_cookie(ctx),
        ip: ip.to_ne_bytes(),
        port: (port as u16).to_ne_bytes(),
        _pad: [0; 2],
    };
    // SAFETY: copied out at once.
    let Some(origin) = (unsafe { NODE_LOCAL_REV.get(&rev) }).copied() else { return };
    // SAFETY: as above.
    unsafe {
        (*sa).user_ip4 = u32::from_ne_bytes(origin.ip);
        (*sa).user_port = u16::from_ne_bytes(origin.port) as u32;
    }
}
