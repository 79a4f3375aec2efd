//! netpath's datapath: one entry file per attach point, one module per concern.
#![no_std]
#![no_main]
// core::intrinsics::atomic_xadd: the one atomic add (see hairpin.rs).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod arp;
mod conntrack;
mod container_nat6;
mod container_path6;
mod counters;
mod events;
mod family;
mod flow;
mod forward;
mod frag_needed;
mod from_container;
mod from_other_node6;
mod from_tunnel;
mod hairpin;
mod headers;
mod icmp6_error;
mod icmp_error;
mod layout_floor;
mod maps;
mod nat;
mod nd;
mod node_local;
mod node_local6;
mod packet;
mod packet_too_big;
mod port_map;
mod rare;
mod tc_entry;
mod to_other_node;
mod to_other_node6;
mod to_subif;
mod tunnel;
mod uplink_in;
mod uplink_in6;
mod uplink_xdp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never entered.
    loop {}
}

// GPL: bpf_redirect_peer, bpf_redirect_neigh and bpf_fib_lookup are GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
