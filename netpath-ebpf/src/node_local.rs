//! cgroup connect4 hook: a process on the node connecting to NODE_IP:HOST_PORT or
//! 127.0.0.1:HOST_PORT is connected straight to the published container, as Docker users
//! expect, without any packet translation. The hook sees every socket in its cgroup, so
//! it acts only inside the node's network namespace (netns cookie).
use aya_ebpf::{
    helpers::generated::bpf_get_netns_cookie, macros::cgroup_sock_addr, programs::SockAddrContext,
};
use netpath_common::{CtKey, Reason};

use crate::{counters, from_container::published, maps::NODE_CONFIG};

/// Let connect() proceed (a cgroup sock_addr program must return 1 to allow).
const ALLOW: i32 = 1;

#[cgroup_sock_addr(connect4)]
pub fn node_connect4(ctx: SockAddrContext) -> i32 {
    let Some(cfg) = NODE_CONFIG.get(0).copied() else { return ALLOW };
    // SAFETY: the context pointer is the kernel's; the helper only reads it.
    if cfg.netns_cookie == 0 || unsafe { bpf_get_netns_cookie(ctx.sock_addr as *mut _) } != cfg.netns_cookie {
        return ALLOW;
    }
    let sa = ctx.sock_addr;
    // SAFETY: sock_addr is valid for the program's run; these fields are readable.
    let (ip, port, proto) = unsafe { ((*sa).user_ip4, (*sa).user_port, (*sa).protocol) };
    let ip = ip.to_ne_bytes();
    // Loopback and the node address both mean "this node".
    if ip != cfg.node_ip && ip[0] != 127 {
        return ALLOW;
    }
    let port = [(port & 0xff) as u8, ((port >> 8) & 0xff) as u8];
    let key = CtKey { dst: cfg.node_ip, dport: port, proto: proto as u8, ..Default::default() };
    if let Some((tip, tport)) = published(&key) {
        // SAFETY: user_ip4/user_port are writable in connect4; values in network order.
        unsafe {
            (*sa).user_ip4 = u32::from_ne_bytes(tip);
            (*sa).user_port = u16::from_ne_bytes(tport) as u32;
        }
        counters::count(Reason::NodeLocalConnect, 0);
    }
    ALLOW
}
