//! Attaching programs so that they outlive the agent. TCX, XDP and cgroup attachments
//! are bpf_links pinned under `<bpffs-dir>/links/`: a stopped, killed or upgrading agent
//! leaves the datapath running, and the next one adopts each link, putting its own
//! instance of the program in place atomically (TCX, XDP) instead of detaching first.
//! clsact filters (kernels before 6.6) are not tied to a process at all; a restarted
//! agent replaces them.
use std::path::{Path, PathBuf};

use aya::{
    maps::{MapData, ProgramArray},
    programs::{
        links::{CgroupAttachMode, FdLink, LinkType, PinnedLink},
        tc, TcAttachType, XdpMode,
    },
};
use netpath_common::{contract::program::TO_OTHER_NODE, maps};
use tracing::{debug, warn};

use super::{
    netkit,
    programs::{AttachMode, FROM_CONTAINER, FROM_TUNNEL, NODE_SOCKET_HOOKS, UPLINK_IN, UPLINK_XDP},
    Datapath, DatapathError,
};
use crate::state::Device;

/// The two priorities a tc program's cls_bpf filter alternates between, so that a new
/// filter goes in while the old one still runs (see `attach_clsact`).
const TC_PRIORITIES: [u16; 2] = [0x1000, 0x1001];
/// The kernel's default priority, where builds before the two priorities put filters.
const LEGACY_PRIORITY: u16 = 0xc000;
/// Where from_container's filter sits on an endpoint's host veth (and both filters on a
/// macvlan/ipvlan endpoint's interface): ahead of the others (a lower number runs first),
/// so that during a swap the new one decides.
pub(super) const ENDPOINT_PRIORITIES: [u16; 2] = [0x0800, 0x0801];

fn attach_err<'a>(
    prog: &'static str,
    target: &'a str,
) -> impl Fn(aya::programs::ProgramError) -> DatapathError + 'a {
    move |source| DatapathError::Attach { prog, iface: target.into(), source: Box::new(source) }
}

/// A pinned link that is not the kind this program attaches with.
fn kind_err<'a>(
    prog: &'static str,
    target: &'a str,
    pin: &'a Path,
) -> impl Fn(aya::programs::links::LinkError) -> DatapathError + 'a {
    move |e| DatapathError::LinkKind { prog, iface: target.into(), pin: pin.into(), found: e.to_string() }
}

fn pin_err<'a>(
    prog: &'static str,
    target: &'a str,
    pin: &'a Path,
) -> impl Fn(aya::pin::PinError) -> DatapathError + 'a {
    move |e| DatapathError::LinkPin { prog, iface: target.into(), pin: pin.into(), source: Box::new(e) }
}

impl Datapath {
    fn pin(&mut self, name: String) -> PathBuf {
        let p = self.links_dir.join(name);
        self.touched.insert(p.clone());
        p
    }

    /// A tc program at `iface`'s ingress.
    fn attach_tc(&mut self, prog: &'static str, iface: &str, ifindex: u32) -> Result<(), DatapathError> {
        let pin = self.pin(format!("{prog}-{ifindex}"));
        if self.mode == AttachMode::Clsact {
            add_clsact(iface)?;
            return self.attach_clsact(prog, iface, TcAttachType::Ingress, TC_PRIORITIES, &[LEGACY_PRIORITY]);
        }
        if let Ok(old) = PinnedLink::from_pin(&pin) {
            let link = FdLink::from(old).try_into().map_err(kind_err(prog, iface, &pin))?;
            self.classifier(prog)?.attach_to_link(link).map_err(attach_err(prog, iface))?;
            debug!(prog, iface, "adopted pinned link");
            return Ok(());
        }
        let opts = tc::TcAttachOptions::TcxOrder(aya::programs::LinkOrder::default());
        let id = self
            .classifier(prog)?
            .attach_with_options(iface, TcAttachType::Ingress, opts)
            .map_err(attach_err(prog, iface))?;
        let link = self.classifier(prog)?.take_link(id).map_err(attach_err(prog, iface))?;
        let fd: FdLink = link.try_into().map_err(kind_err(prog, iface, &pin))?;
        fd.pin(&pin).map_err(pin_err(prog, iface, &pin))?;
        Ok(())
    }

    /// A cls_bpf filter at `iface`'s ingress or egress (`at`) that replaces an earlier
    /// agent's without a gap: filters live at one of two priorities; the new one goes in
    /// at the free one while the old one still runs, then the old one is deleted.
    /// (Deleting first, as before, left a moment in which published-port SYNs met the
    /// node's stack and were refused.)
    pub(super) fn attach_clsact(
        &mut self,
        prog: &'static str,
        iface: &str,
        at: TcAttachType,
        priorities: [u16; 2],
        legacy: &[u16],
    ) -> Result<(), DatapathError> {
        let handle = tc::TcHandle::new(0, 1);
        let mut placed = None;
        let mut last_err = None;
        for (i, priority) in priorities.into_iter().enumerate() {
            let opts = tc::TcAttachOptions::Netlink(tc::NlOptions { priority, handle, ..Default::default() });
            match self.classifier(prog)?.attach_with_options(iface, at, opts) {
                Ok(id) => {
                    // The filter must outlive this process; it goes with the interface.
                    std::mem::forget(self.classifier(prog)?.take_link(id).map_err(attach_err(prog, iface))?);
                    placed = Some(i);
                    break;
                }
                // Taken by the filter in service.
                Err(e) => last_err = Some(e),
            }
        }
        match placed {
            Some(i) => {
                Self::detach_filter(iface, at, priorities[1 - i], handle);
            }
            None => {
                // Both taken (an agent died mid-swap): the second is replaced while the
                // first serves.
                let err = last_err.map_or_else(|| "no priority free".to_string(), |e| e.to_string());
                if !Self::detach_filter(iface, at, priorities[1], handle) {
                    let source = std::io::Error::other(err);
                    return Err(DatapathError::Clsact { iface: iface.into(), source });
                }
                let opts = tc::TcAttachOptions::Netlink(tc::NlOptions {
                    priority: priorities[1],
                    handle,
                    ..Default::default()
                });
                let id = self
                    .classifier(prog)?
                    .attach_with_options(iface, at, opts)
                    .map_err(attach_err(prog, iface))?;
                std::mem::forget(self.classifier(prog)?.take_link(id).map_err(attach_err(prog, iface))?);
                Self::detach_filter(iface, at, priorities[0], handle);
            }
        }
        // Filters of earlier builds.
        for &priority in legacy {
            Self::detach_filter(iface, at, priority, handle);
        }
        Ok(())
    }

    /// Deletes the filter at `iface`'s ingress or egress (`at`) at `priority`/`handle`;
    /// false when there was none.
    pub(super) fn detach_filter(iface: &str, at: TcAttachType, priority: u16, handle: tc::TcHandle) -> bool {
        use aya::programs::links::Link as _;
        tc::SchedClassifierLink::attached(iface, at, priority, handle, None)
            .is_ok_and(|link| link.detach().is_ok())
    }

    /// Removes a tc program from an interface (which may already be gone).
    fn detach_tc(&mut self, prog: &'static str, iface: &str, ifindex: u32) {
        let pin = self.links_dir.join(format!("{prog}-{ifindex}"));
        self.touched.remove(&pin);
        if let Ok(link) = PinnedLink::from_pin(&pin) {
            // Unpinned and dropped, the link detaches.
            let _ = link.unpin();
        }
        if self.mode == AttachMode::Clsact {
            let _ = tc::qdisc_detach_program(iface, TcAttachType::Ingress, prog);
        }
    }

    /// Attaches from_container where a container's packets arrive: the ingress of its
    /// host-side veth, or the netkit link of its host-side netkit device.
    ///
    /// A veth gets a cls_bpf filter under clsact by default, TCX or not: a TCX link
    /// costs an RCU grace period when made, which the kernel waits for under the RTNL
    /// lock (about 13 ms here, most of an endpoint's cost), where a filter costs two
    /// netlink messages and goes with the veth. TCX's advantage for an agent, swapping
    /// the program in place when it restarts, the endpoint does not need:
    /// from_container only tail-calls the agent's container path through a pinned slot,
    /// and a new agent fills the slot instead. Its advantage per packet is the hook
    /// itself: the kernel runs a TCX program directly, a filter through the clsact
    /// qdisc's classifier chain (~0.1 us per hop here), which `--endpoint-attach tcx`
    /// buys with the grace period per add. Endpoints keep the attachment they were made
    /// with (see `adopt_endpoint`).
    pub fn attach_endpoint(
        &mut self,
        iface: &str,
        ifindex: u32,
        device: Device,
    ) -> Result<(), DatapathError> {
        match device {
            Device::Veth if self.endpoint_tcx => self.attach_tc(FROM_CONTAINER, iface, ifindex),
            Device::Veth => {
                add_clsact(iface)?;
                self.attach_clsact(FROM_CONTAINER, iface, TcAttachType::Ingress, ENDPOINT_PRIORITIES, &[])
            }
            Device::Netkit => self.attach_netkit(FROM_CONTAINER, iface, ifindex),
        }
    }

    /// Takes over an endpoint attached by an earlier agent. Its filter or TCX link
    /// already runs whatever fills the slot, which this agent did: nothing to do, unless
    /// the agent asked for endpoints to be attached again (the slot is not the one they
    /// were attached with), when the filter is replaced, together with the filters of
    /// earlier builds, and a TCX link gets this agent's from_container in place.
    /// Whether [`Datapath::adopt_endpoint`] has anything to do for this endpoint: not
    /// for a veth whose attachment already runs this slot (a restart's usual case,
    /// where the agent need not even look the veth up). A TCX link kept as it is stays
    /// pinned: updating it would wait for a grace period under RTNL, per endpoint.
    pub fn adopts_endpoint(&mut self, ifindex: u32, device: Device) -> bool {
        if device == Device::Netkit || self.reattach_endpoints {
            return true;
        }
        let tcx_pin = self.links_dir.join(format!("{FROM_CONTAINER}-{ifindex}"));
        if tcx_pin.exists() {
            self.touched.insert(tcx_pin);
        }
        false
    }

    pub fn adopt_endpoint(&mut self, iface: &str, ifindex: u32, device: Device) -> Result<(), DatapathError> {
        let tcx_pin = self.links_dir.join(format!("{FROM_CONTAINER}-{ifindex}"));
        match device {
            Device::Veth if tcx_pin.exists() && self.mode == AttachMode::Tcx => {
                self.attach_tc(FROM_CONTAINER, iface, ifindex)
            }
            Device::Veth if self.reattach_endpoints => {
                add_clsact(iface)?;
                self.attach_clsact(
                    FROM_CONTAINER,
                    iface,
                    TcAttachType::Ingress,
                    ENDPOINT_PRIORITIES,
                    &[TC_PRIORITIES[0], TC_PRIORITIES[1], LEGACY_PRIORITY],
                )
            }
            Device::Veth => Ok(()),
            Device::Netkit => self.attach_netkit(FROM_CONTAINER, iface, ifindex),
        }
    }

    /// Whether the veth endpoint with host device `ifindex` runs from_container in a TCX
    /// link (pinned by this agent or an earlier one) rather than a clsact filter.
    pub fn endpoint_in_tcx_link(&self, ifindex: u32) -> bool {
        endpoint_link_pin(&self.links_dir, ifindex).exists()
    }

    /// Moves a veth endpoint's from_container from its clsact filter to a TCX link (the
    /// cheaper hook per packet; `--endpoint-attach auto`). The link goes in first:
    /// while both are there the TCX program's verdict is final and the filter no longer
    /// runs, so no packet is seen twice or missed; then the filter is deleted. The link
    /// costs an RCU grace period under the RTNL lock (~13 ms), which is why the agent
    /// does this only when idle. False when there was nothing to do (not on a TCX
    /// kernel, or in a link already).
    pub fn promote_endpoint(&mut self, iface: &str, ifindex: u32) -> Result<bool, DatapathError> {
        if self.mode != AttachMode::Tcx || self.endpoint_in_tcx_link(ifindex) {
            return Ok(false);
        }
        self.attach_tc(FROM_CONTAINER, iface, ifindex)?;
        // The clsact qdisc stays: with no filter it costs the packet nothing (a TCX
        // verdict skips it), and taking it away could wait for RCU under RTNL again.
        for priority in ENDPOINT_PRIORITIES {
            Self::detach_filter(iface, TcAttachType::Ingress, priority, tc::TcHandle::new(0, 1));
        }
        Ok(true)
    }

    /// Attaches from_container afresh to an endpoint whose attachment is gone.
    pub fn reattach_endpoint(
        &mut self,
        iface: &str,
        ifindex: u32,
        device: Device,
    ) -> Result<(), DatapathError> {
        self.detach_endpoint(iface, ifindex)?;
        self.attach_endpoint(iface, ifindex, device)
    }

    /// `prog` as the peer program of the netkit primary `iface`, through a pinned netkit
    /// link under the same pin name a TCX link would have: a link pinned by an earlier
    /// agent gets this agent's program in place (BPF_LINK_UPDATE), as TCX links do.
    fn attach_netkit(&mut self, prog: &'static str, iface: &str, ifindex: u32) -> Result<(), DatapathError> {
        use std::os::fd::AsFd as _;
        let pin = self.pin(format!("{prog}-{ifindex}"));
        let err = |source| DatapathError::NetkitAttach { prog, iface: iface.into(), source };
        if let Ok(old) = PinnedLink::from_pin(&pin) {
            let kind = FdLink::from(old).info().and_then(|i| i.link_type());
            if !matches!(kind, Ok(LinkType::Netkit)) {
                let found = format!("{kind:?}");
                return Err(DatapathError::LinkKind { prog, iface: iface.into(), pin, found });
            }
            let link = netkit::open_pin(&pin).map_err(err)?;
            let prog_fd = self.classifier(prog)?.fd().map_err(attach_err(prog, iface))?.as_fd();
            netkit::replace_program(link.as_fd(), prog_fd).map_err(err)?;
            debug!(prog, iface, "adopted pinned netkit link");
            return Ok(());
        }
        let prog_fd = self.classifier(prog)?.fd().map_err(attach_err(prog, iface))?.as_fd();
        let link = netkit::attach_peer(prog_fd, ifindex).map_err(err)?;
        // Dropped unpinned, the link would detach: a failed pin leaves nothing attached.
        netkit::pin(link.as_fd(), &pin).map_err(err)?;
        Ok(())
    }

    /// Detaches from a container's veth or netkit device, which is about to go or has
    /// gone: its pinned link (netkit, or TCX of an earlier build) is unpinned; a filter
    /// goes with the veth, at no cost of its own.
    pub fn detach_endpoint(&mut self, _iface: &str, ifindex: u32) -> Result<(), DatapathError> {
        if let Some(pin) = self.release_endpoint_link(ifindex) {
            release_link(&pin);
        }
        Ok(())
    }

    /// An endpoint going with its veth: the pin of its TCX link (if it has one), for
    /// [`release_link`] once the veth is gone. A link released on a live device waits
    /// for an RCU grace period under RTNL; one whose device is gone has nothing left to
    /// detach. Until then the link stays (the endpoint's entries are already gone, so
    /// what the container sends is dropped); a pin left by an agent stopped in between
    /// is pruned at the next start.
    pub fn release_endpoint_link(&mut self, ifindex: u32) -> Option<PathBuf> {
        let pin = self.links_dir.join(format!("{FROM_CONTAINER}-{ifindex}"));
        self.touched.remove(&pin);
        pin.exists().then_some(pin)
    }

    /// Attaches uplink_in to the node's uplink.
    pub fn attach_uplink(&mut self, iface: &str, ifindex: u32) -> Result<(), DatapathError> {
        self.attach_tc(UPLINK_IN, iface, ifindex)
    }

    /// Attaches from_tunnel to the cluster's VXLAN device.
    pub fn attach_tunnel(&mut self, iface: &str, ifindex: u32) -> Result<(), DatapathError> {
        let prog = self.classifier(FROM_TUNNEL)?;
        if prog.fd().is_err() {
            prog.load()
                .map_err(|source| DatapathError::Verify { prog: FROM_TUNNEL, source: Box::new(source) })?;
        }
        self.attach_tc(FROM_TUNNEL, iface, ifindex)
    }

    /// Cluster mode on (`true`): loads to_other_node and puts it in from_container's
    /// tail-call slot; off: empties the slot, so no program of an earlier cluster agent
    /// stays referenced. Before any endpoint is attached: the new from_container finds
    /// the slot filled (and the old one, sharing the pinned array, keeps working).
    pub fn set_cluster_programs(&mut self, on: bool) -> Result<(), DatapathError> {
        let err = |source| DatapathError::Map { map: maps::CLUSTER_PROGS, source: Box::new(source) };
        if !on {
            let mut slots = self.cluster_progs()?;
            return match slots.clear_index(&maps::TAIL_TO_OTHER_NODE) {
                Err(aya::maps::MapError::SyscallError(e))
                    if e.io_error.kind() == std::io::ErrorKind::NotFound =>
                {
                    Ok(())
                }
                r => r.map_err(err),
            };
        }
        let prog = self.classifier(TO_OTHER_NODE)?;
        if prog.fd().is_err() {
            prog.load()
                .map_err(|source| DatapathError::Verify { prog: TO_OTHER_NODE, source: Box::new(source) })?;
        }
        let fd = prog
            .fd()
            .map_err(|source| DatapathError::Verify { prog: TO_OTHER_NODE, source: Box::new(source) })?
            .try_clone()
            .map_err(|source| DatapathError::Verify {
                prog: TO_OTHER_NODE,
                source: Box::new(source.into()),
            })?;
        self.cluster_progs()?.set(maps::TAIL_TO_OTHER_NODE, &fd, 0).map_err(err)
    }

    /// Cluster mode with an IPv6 cluster CIDR on (`true`): loads to_other_node6 and
    /// from_other_node6 and puts them in their slots of CLUSTER_PROGS6; off: empties
    /// them. Before any endpoint is attached and before uplink_in, as for IPv4.
    pub fn set_cluster_programs6(&mut self, on: bool) -> Result<(), DatapathError> {
        use netpath_common::contract::program::{FROM_OTHER_NODE6, TO_OTHER_NODE6};
        let slots =
            [(maps::TAIL_TO_OTHER_NODE6, TO_OTHER_NODE6), (maps::TAIL_FROM_OTHER_NODE6, FROM_OTHER_NODE6)];
        if on {
            for (slot, name) in slots {
                let prog = self.classifier(name)?;
                if prog.fd().is_err() {
                    prog.load()
                        .map_err(|source| DatapathError::Verify { prog: name, source: Box::new(source) })?;
                }
                self.fill_slot(maps::CLUSTER_PROGS6, slot, name)?;
            }
            return Ok(());
        }
        let err = |source| DatapathError::Map { map: maps::CLUSTER_PROGS6, source: Box::new(source) };
        let map =
            self.ebpf.map_mut(maps::CLUSTER_PROGS6).ok_or(DatapathError::MissingMap(maps::CLUSTER_PROGS6))?;
        let mut array = ProgramArray::try_from(map).map_err(err)?;
        for (slot, _) in slots {
            match array.clear_index(&slot) {
                Err(aya::maps::MapError::SyscallError(e))
                    if e.io_error.kind() == std::io::ErrorKind::NotFound => {}
                r => r.map_err(err)?,
            }
        }
        Ok(())
    }

    fn cluster_progs(&mut self) -> Result<ProgramArray<&mut MapData>, DatapathError> {
        let map =
            self.ebpf.map_mut(maps::CLUSTER_PROGS).ok_or(DatapathError::MissingMap(maps::CLUSTER_PROGS))?;
        ProgramArray::try_from(map)
            .map_err(|source| DatapathError::Map { map: maps::CLUSTER_PROGS, source: Box::new(source) })
    }

    /// Detaches uplink_in and the XDP fast path from an uplink (which may be gone).
    pub fn detach_uplink(&mut self, iface: &str, ifindex: u32) {
        self.detach_tc(UPLINK_IN, iface, ifindex);
        let pin = self.links_dir.join(format!("{UPLINK_XDP}-{ifindex}"));
        self.touched.remove(&pin);
        if let Ok(link) = PinnedLink::from_pin(&pin) {
            let _ = link.unpin();
        }
    }

    /// Attaches the XDP fast path to the uplink (native mode where the driver has it).
    pub fn attach_uplink_xdp(&mut self, iface: &str, ifindex: u32) -> Result<(), DatapathError> {
        let pin = self.pin(format!("{UPLINK_XDP}-{ifindex}"));
        if let Ok(old) = PinnedLink::from_pin(&pin) {
            let link = FdLink::from(old).try_into().map_err(kind_err(UPLINK_XDP, iface, &pin))?;
            self.xdp()?.attach_to_link(link).map_err(attach_err(UPLINK_XDP, iface))?;
            return Ok(());
        }
        let id = self.xdp()?.attach(iface, XdpMode::Default).map_err(attach_err(UPLINK_XDP, iface))?;
        let link = self.xdp()?.take_link(id).map_err(attach_err(UPLINK_XDP, iface))?;
        match FdLink::try_from(link) {
            Ok(fd) => {
                fd.pin(&pin).map_err(pin_err(UPLINK_XDP, iface, &pin))?;
            }
            // Kernels without XDP links attach through netlink: nothing to pin, and the
            // program stays on the interface after the agent.
            Err(link) => std::mem::forget(link),
        }
        Ok(())
    }

    /// Attaches the node-local socket hooks to a cgroup (v2) directory. aya attaches
    /// with a bpf_link where the kernel has them, which coexists with other programs
    /// there (and takes no ALLOW_MULTI flag: passing it fails with EINVAL). Cgroup links
    /// cannot swap their program in place, so a previous agent's hook stays attached
    /// until the new one is: for that moment both run, and the second finds nothing
    /// left to rewrite.
    pub fn attach_node_local(&mut self, cgroup: &Path) -> Result<(), DatapathError> {
        for prog in NODE_SOCKET_HOOKS {
            self.attach_socket_hook(prog, cgroup)?;
        }
        self.node_local = Some(cgroup.into());
        Ok(())
    }

    /// The cgroup of the node-local hooks, when one of their pinned links is gone
    /// (unpinned by someone: the hook detached with it).
    pub fn node_local_detached(&self) -> Option<&Path> {
        let cgroup = self.node_local.as_deref()?;
        NODE_SOCKET_HOOKS
            .iter()
            .map(|p| self.links_dir.join(p))
            .any(|pin| self.touched.contains(&pin) && !pin.exists())
            .then_some(cgroup)
    }

    fn attach_socket_hook(&mut self, prog: &'static str, cgroup: &Path) -> Result<(), DatapathError> {
        let pin = self.pin(prog.to_string());
        let target = cgroup.display().to_string();
        // The old link lives on while its descriptor is open, pin or no pin.
        let old = PinnedLink::from_pin(&pin).ok().map(|old| old.unpin());
        let dir = std::fs::File::open(cgroup)
            .map_err(|source| DatapathError::Cgroup { path: cgroup.into(), source })?;
        let id =
            self.sock_addr(prog)?.attach(dir, CgroupAttachMode::Single).map_err(attach_err(prog, &target))?;
        let link = self.sock_addr(prog)?.take_link(id).map_err(attach_err(prog, &target))?;
        match FdLink::try_from(link) {
            Ok(fd) => {
                fd.pin(&pin).map_err(pin_err(prog, &target, &pin))?;
            }
            Err(link) => {
                // No bpf_link on this kernel: nothing pinned, nothing to watch.
                self.touched.remove(&pin);
                std::mem::forget(link)
            }
        }
        drop(old);
        Ok(())
    }

    /// Attaches tc program `prog` ([`super::program`]) afresh to an interface whose
    /// attachment is gone (a pinned link someone detached, a filter someone deleted).
    pub fn reattach(&mut self, prog: &'static str, iface: &str, ifindex: u32) -> Result<(), DatapathError> {
        self.detach_tc(prog, iface, ifindex);
        self.attach_tc(prog, iface, ifindex)
    }

    /// Detaches every pinned link this agent did not attach or adopt since it started:
    /// endpoints that are gone, an uplink no longer used, XDP no longer wanted. Returns
    /// the pins it removed.
    pub fn prune_links(&mut self) -> Vec<PathBuf> {
        let mut pruned = Vec::new();
        let Ok(dir) = std::fs::read_dir(&self.links_dir) else { return pruned };
        for entry in dir.flatten() {
            let path = entry.path();
            if self.touched.contains(&path) {
                continue;
            }
            pruned.push(path.clone());
            match PinnedLink::from_pin(&path) {
                Ok(link) => {
                    let _ = link.unpin();
                }
                Err(e) => {
                    warn!(pin = %path.display(), "stale link pin: {e}");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        pruned
    }
}

/// Where from_container's link on the endpoint device `ifindex` is pinned (TCX for a
/// veth, netkit for a netkit device), under the links directory `links_dir`.
pub fn endpoint_link_pin(links_dir: &Path, ifindex: u32) -> PathBuf {
    links_dir.join(format!("{FROM_CONTAINER}-{ifindex}"))
}

/// Unpins a link; the last reference gone, the kernel detaches it.
pub fn release_link(pin: &Path) {
    if let Ok(link) = PinnedLink::from_pin(pin) {
        let _ = link.unpin();
    }
}

/// The programs that see what the container of a host device sends, by name: at its tc
/// ingress for a veth (filters, and on TCX kernels the links of earlier builds too), its
/// netkit peer programs for a netkit device.
pub async fn endpoint_programs(
    nl: &rtnetlink::Handle,
    iface: &str,
    index: u32,
    mode: AttachMode,
    device: Device,
) -> Option<Vec<String>> {
    match device {
        Device::Veth => {
            let mut progs = tc_programs(nl, iface, index, AttachMode::Clsact).await?;
            if mode == AttachMode::Tcx && !progs.iter().any(|p| p == FROM_CONTAINER) {
                progs.extend(tc_programs(nl, iface, index, AttachMode::Tcx).await?);
            }
            Some(progs)
        }
        Device::Netkit => netkit::peer_programs(index).ok(),
    }
}

/// A clsact qdisc on `iface`, there already or added.
pub(super) fn add_clsact(iface: &str) -> Result<(), DatapathError> {
    if let Err(e) = tc::qdisc_add_clsact(iface) {
        // EEXIST comes back as "File exists" or, with extended acks, as "Exclusivity
        // flag on, cannot modify": either way the qdisc is there.
        let msg = e.to_string();
        if !msg.contains("exists") && !msg.contains("Exclusivity flag on") {
            let source = std::io::Error::other(msg);
            return Err(DatapathError::Clsact { iface: iface.into(), source });
        }
    }
    Ok(())
}

/// Programs attached at an interface's tc ingress, by name: TCX links, or cls_bpf
/// filters under clsact (kernels before 6.6, or --tc-attach clsact). None when the
/// kernel cannot be asked.
pub async fn tc_programs(
    nl: &rtnetlink::Handle,
    iface: &str,
    index: u32,
    mode: AttachMode,
) -> Option<Vec<String>> {
    if mode == AttachMode::Clsact {
        return crate::plumbing::link::ingress_bpf_filters(nl, index).await.ok();
    }
    let (_, progs) = aya::programs::SchedClassifier::query_tcx(iface, TcAttachType::Ingress).ok()?;
    Some(progs.iter().filter_map(|p| p.name_as_str().map(str::to_string)).collect())
}
