//! The container-to-container layout's floor: two containers behind veths as netpath
//! puts them, and on each host veth's tc ingress netpath's `layout_floor` (netpath-ebpf),
//! which reads the destination, looks it up in ENDPOINTS and redirects into the peer's
//! namespace: netpath's layout and its one unavoidable lookup, none of its other work.
//! The containers reach each other through a static gateway neighbour, so no ARP is
//! answered on the path. The object is netpath's own build (its build script's output),
//! loaded here with aya, its maps pinned in the lab's bpffs directory.
use std::{net::Ipv4Addr, path::PathBuf};

use anyhow::{anyhow, Context as _, Result};
use aya::{
    maps::HashMap,
    programs::{
        tc::{self, TcAttachOptions},
        LinkOrder, SchedClassifier, TcAttachType,
    },
    Ebpf, EbpfLoader,
};
use netpath_common::{contract::program::LAYOUT_FLOOR, maps::ENDPOINTS, EndpointInfo, EndpointKey};
use netpath_tests::Lab;

use super::world::ip;

/// The containers' addresses, and their gateway (answered by no one: a static neighbour).
pub const A: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 2);
pub const B: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 3);
const GATEWAY: &str = "169.254.1.1";

/// Where `cargo xtask bench` finds netpath's eBPF object (set when it builds netpath).
pub const OBJECT_ENV: &str = "NETPATH_EBPF_OBJECT";

/// Builds the layout in `lab` and attaches the floor program; the returned object holds
/// the program's links (dropping it detaches them).
pub fn build(lab: &Lab) -> Result<Ebpf> {
    let mut hosts = Vec::new();
    for (i, (c, addr)) in lab.containers.iter().zip([A, B]).enumerate() {
        let host = format!("fl{i}");
        ip(&lab.node, &["link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &c.name])?;
        ip(&lab.node, &["link", "set", &host, "up"])?;
        ip(c, &["addr", "add", &format!("{addr}/32"), "dev", "eth0"])?;
        ip(c, &["link", "set", "eth0", "up"])?;
        ip(c, &["link", "set", "lo", "up"])?;
        ip(c, &["route", "add", "default", "via", GATEWAY, "dev", "eth0", "onlink"])?;
        let mac = host_mac(lab, &host)?;
        ip(c, &["neigh", "add", GATEWAY, "lladdr", &mac, "dev", "eth0", "nud", "permanent"])?;
        hosts.push((host, addr));
    }
    let object = PathBuf::from(std::env::var(OBJECT_ENV).with_context(|| format!("{OBJECT_ENV} unset"))?);
    let pins = lab.bpffs_dir.join("floor");
    std::fs::create_dir_all(&pins).with_context(|| format!("creating {}", pins.display()))?;
    lab.node
        .run(move || attach(&object, &pins, &hosts))
        .join()
        .map_err(|_| anyhow!("the floor's loader panicked"))?
}

/// The MAC of the node's device `dev`, read in the node namespace.
fn host_mac(lab: &Lab, dev: &str) -> Result<String> {
    let out = lab.node.exec(&["ip", "-br", "link", "show", dev]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(2).map(str::to_string).ok_or_else(|| anyhow!("no MAC for {dev}: {text}"))
}

/// netpath's floor in netpath's own world: loaded beside the agent's programs and put in
/// front of each endpoint's host veth program (`endpoints`: host ifindex and IPv4
/// address), a TCX link ordered first (kernels 6.6+). While the returned object is held,
/// IPv4 between those endpoints takes the floor's work and never reaches netpath's
/// program (a redirect ends the device's TCX chain); what the floor does not redirect
/// (ARP, IPv6) goes on to netpath's. Dropping it detaches the floor. Netpath against its
/// floor in one world, minutes apart rather than worlds apart: the ratio carries none of
/// the spread between two worlds' runs.
pub fn in_front(lab: &Lab, endpoints: &[(u32, Ipv4Addr)]) -> Result<Ebpf> {
    let object = PathBuf::from(std::env::var(OBJECT_ENV).with_context(|| format!("{OBJECT_ENV} unset"))?);
    let pins = lab.bpffs_dir.join("floor-in-front");
    std::fs::create_dir_all(&pins).with_context(|| format!("creating {}", pins.display()))?;
    let endpoints = endpoints.to_vec();
    lab.node
        .run(move || {
            let hosts = endpoints
                .iter()
                .map(|(ifindex, addr)| Ok((if_name(*ifindex)?, *ifindex, *addr)))
                .collect::<Result<Vec<_>>>()?;
            let mut ebpf = load(&object, &pins, &hosts)?;
            let prog: &mut SchedClassifier = program(&mut ebpf)?;
            for (host, _, _) in &hosts {
                let first = TcAttachOptions::TcxOrder(LinkOrder::first());
                prog.attach_with_options(host, TcAttachType::Ingress, first)
                    .with_context(|| format!("attaching the floor in front of {host}'s program (TCX)"))?;
            }
            Ok(ebpf)
        })
        .join()
        .map_err(|_| anyhow!("the floor's loader panicked"))?
}

/// The name of the node's device `ifindex` (this thread in the node namespace).
fn if_name(ifindex: u32) -> Result<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf holds IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    anyhow::ensure!(!p.is_null(), "no device with ifindex {ifindex} in the node namespace");
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    Ok(unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

/// In the node namespace: loads the object, registers each container behind its host
/// veth, and attaches the floor to each host veth's ingress.
fn attach(object: &std::path::Path, pins: &std::path::Path, hosts: &[(String, Ipv4Addr)]) -> Result<Ebpf> {
    let hosts = hosts
        .iter()
        .map(|(host, addr)| {
            let c_name = std::ffi::CString::new(host.as_str())?;
            // SAFETY: a NUL-terminated name; if_nametoindex only reads it.
            let host_ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
            anyhow::ensure!(host_ifindex != 0, "no device {host} in the node namespace");
            Ok((host.clone(), host_ifindex, *addr))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut ebpf = load(object, pins, &hosts)?;
    let prog = program(&mut ebpf)?;
    for (host, _, _) in &hosts {
        // TCX where the kernel has it; before 6.6 aya attaches through clsact, which
        // the device must have first.
        if prog.attach(host, TcAttachType::Ingress).is_err() {
            let _ = tc::qdisc_add_clsact(host);
            prog.attach(host, TcAttachType::Ingress).with_context(|| format!("attaching to {host}"))?;
        }
    }
    Ok(ebpf)
}

/// Loads the object (maps of its own, pinned under `pins`), puts each container behind
/// its host veth (name, ifindex, address) into its ENDPOINTS, and verifies the floor.
fn load(object: &std::path::Path, pins: &std::path::Path, hosts: &[(String, u32, Ipv4Addr)]) -> Result<Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pins)
        .load_file(object)
        .with_context(|| format!("loading {}", object.display()))?;
    let mut endpoints: HashMap<_, EndpointKey, EndpointInfo> =
        HashMap::try_from(ebpf.map_mut(ENDPOINTS).ok_or_else(|| anyhow!("no {ENDPOINTS} map"))?)?;
    for (_, host_ifindex, addr) in hosts {
        endpoints.insert(
            EndpointKey::new(addr.octets()),
            EndpointInfo { host_ifindex: *host_ifindex, ..Default::default() },
            0,
        )?;
    }
    program(&mut ebpf)?.load().context("verifying layout_floor")?;
    Ok(ebpf)
}

fn program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier> {
    Ok(ebpf
        .program_mut(LAYOUT_FLOOR)
        .ok_or_else(|| anyhow!("no {LAYOUT_FLOOR} program in the object"))?
        .try_into()?)
}
