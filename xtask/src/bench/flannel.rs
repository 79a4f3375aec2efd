//! flannel's VXLAN backend, built by hand on two nodes the way flanneld and its CNI
//! bridge plugin build it: a kernel VXLAN device `flannel.1` (no learning; flanneld
//! writes the remote VTEP's neighbour and FDB entries), the pods' veths on a `cni0`
//! bridge, one onlink route per remote subnet via flannel.1, and flanneld's iptables
//! rules. The baseline netpath's cross-node datapath is compared with.
use std::net::Ipv4Addr;

use anyhow::{bail, Result};
use netpath_tests::{Lab, Netns};

/// flannel's defaults: VNI 1, the Linux VXLAN port, the MTU left under VXLAN's 50 bytes.
const VNI: &str = "1";
const PORT: &str = "8472";
const MTU: &str = "1450";
pub const CLUSTER: &str = "10.244.0.0/16";

/// Node `i`'s pod subnet, flannel style: 10.244.i.0/24.
pub fn subnet(i: usize) -> String {
    format!("10.244.{i}.0/24")
}

/// The address of node `i`'s one pod.
pub fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, i as u8, 2)
}

/// flannel.1's MAC on node `i`: fixed, so each node can name its peers' VTEPs (flanneld
/// publishes the generated one in its lease; the effect is the same).
fn vtep_mac(i: usize) -> String {
    format!("0a:f1:00:00:00:{:02x}", i + 1)
}

pub(super) fn ip(ns: &Netns, args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("ip").args(["-n", &ns.name]).args(args).output()?;
    if !out.status.success() {
        bail!("ip -n {} {}: {}", ns.name, args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Builds node `i` of `nodes` (their underlay addresses, in order): its VTEP, bridge,
/// pod, routes and rules.
pub fn build_node(lab: &Lab, i: usize, nodes: &[Ipv4Addr]) -> Result<()> {
    let node = &lab.node;
    super::world::in_ns(node, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    let local = nodes[i].to_string();
    let mac = vtep_mac(i);
    let vtep_ip = format!("10.244.{i}.0/32");
    #[rustfmt::skip]
    let vtep: [&[&str]; 3] = [
        &["link", "add", "flannel.1", "address", &mac, "type", "vxlan", "id", VNI, "local", &local,
          "dev", "uplink0", "dstport", PORT, "nolearning"],
        &["addr", "add", &vtep_ip, "dev", "flannel.1"],
        &["link", "set", "flannel.1", "mtu", MTU, "up"],
    ];
    for args in vtep {
        ip(node, args)?;
    }
    bridge_and_pod(lab, i)?;
    for (j, addr) in nodes.iter().enumerate().filter(|(j, _)| *j != i) {
        remote(node, j, *addr)?;
    }
    for rule in rules(&subnet(i)) {
        let mut args = vec!["iptables"];
        args.extend(rule.split_whitespace());
        super::world::in_ns(node, &args)?;
    }
    Ok(())
}

/// cni0 with the gateway address, and the pod on it (the CNI bridge plugin's work).
fn bridge_and_pod(lab: &Lab, i: usize) -> Result<()> {
    let (node, pod) = (&lab.node, &lab.containers[0]);
    let gw = format!("10.244.{i}.1");
    ip(node, &["link", "add", "cni0", "type", "bridge"])?;
    ip(node, &["addr", "add", &format!("{gw}/24"), "dev", "cni0"])?;
    ip(node, &["link", "set", "cni0", "mtu", MTU, "up"])?;
    ip(
        node,
        &["link", "add", "veth0", "mtu", MTU, "type", "veth", "peer", "name", "eth0", "netns", &pod.name],
    )?;
    ip(node, &["link", "set", "veth0", "master", "cni0", "up"])?;
    pod_side(pod, i, &gw)
}

/// Node `i`'s pod inside: its address on eth0, and the default route via `gw`.
pub(super) fn pod_side(pod: &Netns, i: usize, gw: &str) -> Result<()> {
    ip(pod, &["addr", "add", &format!("{}/24", pod_ip(i)), "dev", "eth0"])?;
    ip(pod, &["link", "set", "eth0", "up"])?;
    ip(pod, &["link", "set", "lo", "up"])?;
    ip(pod, &["route", "add", "default", "via", gw])
}

/// What flanneld writes for a remote node `j`: the VTEP's neighbour entry, its FDB
/// entry (the outer destination), and the route to its subnet via flannel.1.
fn remote(node: &Netns, j: usize, underlay: Ipv4Addr) -> Result<()> {
    let (mac, vtep) = (vtep_mac(j), format!("10.244.{j}.0"));
    ip(node, &["neigh", "replace", &vtep, "lladdr", &mac, "dev", "flannel.1", "nud", "permanent"])?;
    let fdb = [
        "bridge",
        "fdb",
        "replace",
        &mac,
        "dev",
        "flannel.1",
        "dst",
        &underlay.to_string(),
        "self",
        "permanent",
    ];
    super::world::in_ns(node, &fdb)?;
    ip(node, &["route", "add", &subnet(j), "via", &vtep, "dev", "flannel.1", "onlink"])
}

/// flanneld's iptables rules for a node with pod subnet `own`: FORWARD accepted for the
/// cluster CIDR (the node's own policy is DROP, as a Kubernetes node's often is), and
/// masquerading for traffic leaving the cluster, with RETURN for pod to pod.
pub fn rules(own: &str) -> Vec<String> {
    let c = CLUSTER;
    [
        "-P FORWARD DROP".to_string(),
        "-N FLANNEL-FWD".to_string(),
        "-A FORWARD -m comment --comment flanneld-forward -j FLANNEL-FWD".to_string(),
        format!("-A FLANNEL-FWD -s {c} -m comment --comment flanneld-forward -j ACCEPT"),
        format!("-A FLANNEL-FWD -d {c} -m comment --comment flanneld-forward -j ACCEPT"),
        "-t nat -N FLANNEL-POSTRTG".to_string(),
        "-t nat -A POSTROUTING -m comment --comment flanneld-masq -j FLANNEL-POSTRTG".to_string(),
        "-t nat -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -j RETURN".to_string(),
        format!("-t nat -A FLANNEL-POSTRTG -s {own} -d {c} -j RETURN"),
        format!("-t nat -A FLANNEL-POSTRTG -s {c} -d {own} -j RETURN"),
        format!("-t nat -A FLANNEL-POSTRTG ! -s {c} -d {own} -j RETURN"),
        format!("-t nat -A FLANNEL-POSTRTG -s {c} ! -d 224.0.0.0/4 -j MASQUERADE --random-fully"),
        format!("-t nat -A FLANNEL-POSTRTG ! -s {c} -d {c} -j MASQUERADE --random-fully"),
    ]
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_to_pod_returns_before_any_masquerade() {
        let r = rules(&subnet(1));
        let ret = r.iter().position(|l| l.contains("-s 10.244.1.0/24 -d 10.244.0.0/16 -j RETURN")).unwrap();
        let masq = r.iter().position(|l| l.contains("MASQUERADE")).unwrap();
        assert!(ret < masq, "{r:?}");
        assert!(r
            .iter()
            .any(|l| l == "-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment flanneld-forward -j ACCEPT"));
        assert_eq!(pod_ip(1), Ipv4Addr::new(10, 244, 1, 2));
        assert_ne!(vtep_mac(0), vtep_mac(1));
    }
}
