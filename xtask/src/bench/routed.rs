//! The kernel's own routing between pods on two nodes: each pod behind a veth, the
//! node forwarding to its subnet's neighbour node by a plain route, no BPF, no iptables
//! rule, no overlay. netpath's native routing has the same layout (a pod's veth on each
//! side, the underlay between), so this is what that layout costs with programs that
//! cost nothing: the ceiling of native routing against the underlay limit, which has no
//! pods and crosses one veth pair less each way.
use std::net::Ipv4Addr;

use anyhow::Result;
use netpath_tests::Lab;

use super::flannel::{ip, pod_side, subnet};

/// Builds node `i` of `nodes` (their underlay addresses, in order): its pod, the host
/// side as the pod's gateway, and a route to every other node's pod subnet.
pub fn build_node(lab: &Lab, i: usize, nodes: &[Ipv4Addr]) -> Result<()> {
    let (node, pod) = (&lab.node, &lab.containers[0]);
    super::world::in_ns(node, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    let gw = format!("10.244.{i}.1");
    ip(node, &["link", "add", "veth0", "type", "veth", "peer", "name", "eth0", "netns", &pod.name])?;
    ip(node, &["addr", "add", &format!("{gw}/24"), "dev", "veth0"])?;
    ip(node, &["link", "set", "veth0", "up"])?;
    pod_side(pod, i, &gw)?;
    for (j, addr) in nodes.iter().enumerate().filter(|(j, _)| *j != i) {
        ip(node, &["route", "add", &subnet(j), "via", &addr.to_string()])?;
    }
    Ok(())
}
