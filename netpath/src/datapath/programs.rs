//! Loading, pinning and attaching. One loaded program per attach point serves every
//! interface of that kind.
use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use aya::{
    programs::{CgroupSockAddr, SchedClassifier, TestRun as _, TestRunOptions, Xdp},
    util::KernelVersion,
    Ebpf, EbpfLoader,
};
use tracing::info;

use super::DatapathError;

pub use netpath_common::contract::program;
pub(super) use netpath_common::contract::{
    program::{FROM_CONTAINER, FROM_TUNNEL, TO_SUBIF, UPLINK_IN, UPLINK_XDP},
    NODE_SOCKET_HOOKS,
};

/// How tc programs are attached on this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// bpf_link based tc (kernel >= 6.6): no qdisc, detached when the link is dropped.
    Tcx,
    /// cls_bpf under a clsact qdisc via netlink, for older kernels.
    Clsact,
}

impl AttachMode {
    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Tcx => "tcx",
            AttachMode::Clsact => "clsact",
        }
    }

    pub fn detect() -> Self {
        match KernelVersion::current() {
            Ok(v) if v >= KernelVersion::new(6, 6, 0) => AttachMode::Tcx,
            _ => AttachMode::Clsact,
        }
    }
}

/// How veth endpoints' from_container is attached (`--endpoint-attach`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointAttach {
    /// A clsact filter at the add (two netlink messages, no grace period), moved to a
    /// TCX link by the agent once it is idle, on kernels with TCX: the fast add and,
    /// from then on, the cheaper hook.
    Auto,
    /// A clsact filter, kept.
    Clsact,
    /// A TCX link at the add (Linux 6.6+): each add waits out an RCU grace period
    /// under the RTNL lock.
    Tcx,
}

impl EndpointAttach {
    pub fn name(self) -> &'static str {
        match self {
            EndpointAttach::Auto => "auto",
            EndpointAttach::Clsact => "clsact",
            EndpointAttach::Tcx => "tcx",
        }
    }
}

/// Outcome of one [`Datapath::test_run`].
#[derive(Debug)]
pub struct PacketRun {
    /// The tc action the program returned (TC_ACT_OK 0, TC_ACT_SHOT 2, TC_ACT_REDIRECT 7).
    pub action: u32,
    pub packet: Vec<u8>,
    pub duration: std::time::Duration,
}

pub struct Datapath {
    pub(super) ebpf: Ebpf,
    pub(super) mode: AttachMode,
    /// Where the program links are pinned: they outlive the agent (hitless restart).
    pub(super) links_dir: PathBuf,
    /// Link pins this agent attached or adopted; the others are stale (see prune_links).
    pub(super) touched: HashSet<PathBuf>,
    /// The cgroup the node-local socket hooks are attached to.
    pub(super) node_local: Option<PathBuf>,
    /// Old maps whose entries this load copied, until [`Datapath::finish_migration`].
    migration: Option<super::layout::Migration>,
    /// The endpoints' filters of earlier agents run another slot (or a program of a
    /// build before the slot), and are replaced (see `adopt_endpoint`).
    pub(super) reattach_endpoints: bool,
    /// New veth endpoints get a TCX link rather than a clsact filter (`--endpoint-attach tcx`).
    pub(super) endpoint_tcx: bool,
    /// The endpoints' counter slots, read from ENDPOINTS at first use.
    pub(super) counter_slots: Option<super::slots::CounterSlots>,
    /// What this agent has written into SENDERS (empty at load).
    pub(super) senders: super::senders::SenderSlots,
}

impl Datapath {
    /// Loads the embedded object. Maps are pinned by name under `pin_dir`; maps already
    /// pinned there are adopted, not recreated, so their contents survive a restart.
    /// `ct_entries` sizes a new conntrack table, the IPv6 ones included (as on a node with
    /// `--pod-cidr6`).
    pub fn load(pin_dir: &Path, ct_entries: u32) -> Result<Self, DatapathError> {
        Self::load_with(pin_dir, ct_entries, true, None)
    }

    /// [`Datapath::load`] for a node with IPv6 (`--pod-cidr6`) or without, whose IPv6
    /// tables are then as small as the machine allows, with the tc attach method forced
    /// (`None`: TCX where the kernel has it, clsact otherwise).
    pub fn load_with(
        pin_dir: &Path,
        ct_entries: u32,
        ipv6: bool,
        attach: Option<AttachMode>,
    ) -> Result<Self, DatapathError> {
        use netpath_common::contract::{Capacity, MAPS};
        let aside = super::layout::set_aside(&super::layout::check(pin_dir, ct_entries, ipv6)?)?;
        let object = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netpath"));
        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(pin_dir);
        // The object's own sizes are the fixed ones; the others are this node's.
        for m in MAPS.iter().filter(|m| !matches!(m.capacity, Capacity::Fixed(_))) {
            loader.map_max_entries(m.name, super::layout::entries(m.capacity, ct_entries, ipv6));
        }
        let ebpf = loader
            .load(object)
            .map_err(|source| DatapathError::Load { pin_dir: pin_dir.into(), source: Box::new(source) })?;
        let mode = attach.unwrap_or_else(AttachMode::detect);
        let links_dir = pin_dir.join("links");
        crate::paths::create_private_dir(&links_dir)
            .map_err(|source| DatapathError::PinDir { path: links_dir.clone(), source })?;
        let mut dp = Self {
            ebpf,
            mode,
            links_dir,
            touched: HashSet::new(),
            node_local: None,
            migration: None,
            reattach_endpoints: true,
            endpoint_tcx: false,
            counter_slots: None,
            senders: Default::default(),
        };
        // from_tunnel, to_other_node and uplink_xdp are verified when the node needs them
        // (`attach_tunnel`, `set_cluster_programs`, `xdp`): every other agent start
        // would pay for them, many seconds under emulation. to_subif is a few dozen
        // instructions: verified always, so that no mode of the node can find it broken.
        for name in [FROM_CONTAINER, program::CONTAINER_PATH, program::CONTAINER_PATH6, UPLINK_IN, TO_SUBIF] {
            dp_load(&mut dp, name)?;
        }
        for name in NODE_SOCKET_HOOKS {
            dp.sock_addr(name)?
                .load()
                .map_err(|source| DatapathError::Verify { prog: name, source: Box::new(source) })?;
        }
        dp.migration = Some(aside.commit(&mut dp.ebpf)?);
        info!(?mode, pin_dir = %pin_dir.display(), "datapath loaded");
        Ok(dp)
    }

    /// Puts the loaded tc program `prog` in slot `slot` of program array `map`.
    pub(super) fn fill_slot(
        &mut self,
        map: &'static str,
        slot: u32,
        prog: &'static str,
    ) -> Result<(), DatapathError> {
        let verify = |source| DatapathError::Verify { prog, source: Box::new(source) };
        let fd = self.classifier(prog)?.fd().map_err(verify)?.try_clone().map_err(|e| verify(e.into()))?;
        let array = self.ebpf.map_mut(map).ok_or(DatapathError::MissingMap(map))?;
        let map_err = |source| DatapathError::Map { map, source: Box::new(source) };
        aya::maps::ProgramArray::try_from(array).map_err(map_err)?.set(slot, &fd, 0).map_err(map_err)
    }

    /// The kernel's id of the endpoints' slot (ENDPOINT_PROGS): another id than the one
    /// an earlier agent's endpoints were attached with means their filters run another
    /// slot, a pin someone removed or a build before it.
    pub fn endpoint_slot_id(&self) -> Option<u32> {
        let map = self.ebpf.map(netpath_common::maps::ENDPOINT_PROGS)?;
        let aya::maps::Map::ProgramArray(data) = map else { return None };
        data.info().ok().map(|i| i.id())
    }

    /// Whether [`Datapath::adopt_endpoint`] attaches endpoints again (the default) or
    /// leaves their filters, which already run this slot.
    pub fn set_reattach_endpoints(&mut self, reattach: bool) {
        self.reattach_endpoints = reattach;
    }

    /// Whether new veth endpoints get a TCX link (true) or a clsact filter. Only where
    /// the node attaches with TCX at all (the caller has checked).
    pub fn set_endpoint_tcx(&mut self, tcx: bool) {
        self.endpoint_tcx = tcx && self.mode == AttachMode::Tcx;
    }

    /// Fills from_container's slot with this agent's container path, or empties it:
    /// every endpoint then drops what its container sends. The agent fills it when it
    /// takes over the endpoints (once the maps are migrated and the node's settings
    /// written: their filters run the new program from that moment).
    pub fn set_endpoint_slot(&mut self, filled: bool) -> Result<(), DatapathError> {
        use netpath_common::maps::{
            ENDPOINT_PROGS, ENDPOINT_PROGS6, TAIL_CONTAINER_PATH, TAIL_CONTAINER_PATH6,
        };
        if filled {
            // IPv6's slot first: from_container and container_path tail-call it, so from
            // the moment the new container_path runs, its IPv6 program is there.
            self.fill_slot(ENDPOINT_PROGS6, TAIL_CONTAINER_PATH6, program::CONTAINER_PATH6)?;
            return self.fill_slot(ENDPOINT_PROGS, TAIL_CONTAINER_PATH, program::CONTAINER_PATH);
        }
        // IPv6's first too: from_container reaches it without container_path.
        for (name, slot) in [(ENDPOINT_PROGS6, TAIL_CONTAINER_PATH6), (ENDPOINT_PROGS, TAIL_CONTAINER_PATH)] {
            let map = self.ebpf.map_mut(name).ok_or(DatapathError::MissingMap(name))?;
            let map_err = |source| DatapathError::Map { map: name, source: Box::new(source) };
            aya::maps::ProgramArray::try_from(map).map_err(map_err)?.clear_index(&slot).map_err(map_err)?;
        }
        Ok(())
    }

    /// Verifies IPv6's translation programs (uplink_in6 and the NAT66 stages) and puts
    /// them in PROGS6, where uplink_in and container_path6 tail-call them. Only a node
    /// with an IPv6 pod CIDR needs them (without, uplink_in's empty slot hands IPv6 to
    /// the stack as before, and container_path6 never masquerades); must run before
    /// uplink_in is attached and the endpoints' slot filled.
    pub fn load_ipv6_programs(&mut self) -> Result<(), DatapathError> {
        use netpath_common::maps::{
            PROGS6, TAIL_CONTAINER_NAT6, TAIL_CONTAINER_PAIR6, TAIL_CONTAINER_SNAT6,
            TAIL_ICMP6_FROM_CONTAINER, TAIL_ICMP6_TO_CONTAINER, TAIL_UPLINK_IN6,
        };
        for (slot, name) in [
            (TAIL_ICMP6_TO_CONTAINER, program::ICMP6_TO_CONTAINER),
            (TAIL_ICMP6_FROM_CONTAINER, program::ICMP6_FROM_CONTAINER),
            (TAIL_CONTAINER_PAIR6, program::CONTAINER_PAIR6),
            (TAIL_CONTAINER_SNAT6, program::CONTAINER_SNAT6),
            (TAIL_CONTAINER_NAT6, program::CONTAINER_NAT6),
            (TAIL_UPLINK_IN6, program::UPLINK_IN6),
        ] {
            dp_load(self, name)?;
            self.fill_slot(PROGS6, slot, name)?;
        }
        Ok(())
    }

    /// Runs tc program `prog` `repeat` times on `packet` in the kernel (one
    /// BPF_PROG_TEST_RUN); the kernel's mean time per run.
    pub fn time_run(
        &mut self,
        prog: &'static str,
        packet: &[u8],
        ifindex: u32,
        repeat: u32,
    ) -> Result<std::time::Duration, DatapathError> {
        let mut ctx = [0u8; 44];
        ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
        let opts = TestRunOptions { data_in: Some(packet), ctx_in: Some(&ctx), repeat, ..Default::default() };
        let res = self
            .classifier(prog)?
            .test_run(opts)
            .map_err(|source| DatapathError::Verify { prog, source: Box::new(source) })?;
        Ok(res.duration)
    }

    /// Program `name` of the object as its kind `P` (SchedClassifier, Xdp, ...).
    fn program_as<'a, P>(&'a mut self, name: &'static str) -> Result<&'a mut P, DatapathError>
    where
        &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    {
        self.ebpf
            .program_mut(name)
            .ok_or(DatapathError::MissingProgram(name))?
            .try_into()
            .map_err(|source| DatapathError::Verify { prog: name, source: Box::new(source) })
    }

    /// The uplink's XDP program, verified on first use: only `--xdp` agents pay for it.
    pub(super) fn xdp(&mut self) -> Result<&mut Xdp, DatapathError> {
        let prog: &mut Xdp = self.program_as(UPLINK_XDP)?;
        if prog.fd().is_err() {
            prog.load()
                .map_err(|source| DatapathError::Verify { prog: UPLINK_XDP, source: Box::new(source) })?;
        }
        Ok(prog)
    }

    /// Runs the uplink's XDP program once on `packet` (BPF_PROG_TEST_RUN); the returned
    /// packet starts with the metadata the program left (4 bytes when it translated).
    pub fn test_run_xdp(&mut self, packet: &[u8]) -> Result<PacketRun, DatapathError> {
        let mut out = vec![0u8; packet.len() + 256];
        let opts = TestRunOptions { data_in: Some(packet), data_out: Some(&mut out), ..Default::default() };
        let res = self
            .xdp()?
            .test_run(opts)
            .map_err(|source| DatapathError::Verify { prog: UPLINK_XDP, source: Box::new(source) })?;
        out.truncate(res.data_size_out as usize);
        Ok(PacketRun { action: res.return_value, packet: out, duration: res.duration })
    }

    pub(super) fn sock_addr(&mut self, name: &'static str) -> Result<&mut CgroupSockAddr, DatapathError> {
        self.program_as(name)
    }

    /// Kernel ids of the programs this agent loaded, by name.
    pub fn program_ids(&self) -> Vec<(&'static str, u32)> {
        let names = [
            FROM_CONTAINER,
            TO_SUBIF,
            UPLINK_IN,
            UPLINK_XDP,
            FROM_TUNNEL,
            program::TO_OTHER_NODE,
            program::TO_OTHER_NODE6,
            program::FROM_OTHER_NODE6,
            program::LOG_RARE,
        ]
        .into_iter()
        .chain(NODE_SOCKET_HOOKS);
        names
            .filter_map(|name| {
                let prog = self.ebpf.program(name)?;
                Some((name, prog.info().ok()?.id()))
            })
            .collect()
    }

    /// Once the new programs are attached everywhere (no old program writes the old
    /// maps any more): copies what the old programs added to migrated maps since the
    /// load, and releases the old maps.
    pub fn finish_migration(&mut self) -> Result<(), DatapathError> {
        match self.migration.take() {
            Some(m) => m.finish(&mut self.ebpf),
            None => Ok(()),
        }
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    pub(super) fn classifier(&mut self, name: &'static str) -> Result<&mut SchedClassifier, DatapathError> {
        self.program_as(name)
    }

    /// Runs program `prog` once on `packet` with BPF_PROG_TEST_RUN, as if it arrived on
    /// `ifindex` (a device in the caller's namespace), and returns the tc action and the
    /// packet as the program left it. Nothing is sent: the kernel only records a
    /// redirect. The basis of the packet-level tests and of per-packet cost figures.
    pub fn test_run(
        &mut self,
        prog: &'static str,
        packet: &[u8],
        ifindex: u32,
    ) -> Result<PacketRun, DatapathError> {
        // struct __sk_buff up to and including `ifindex` (offset 40): the kernel accepts
        // a shorter context and reads the rest as zero.
        let mut ctx = [0u8; 44];
        ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
        let mut out = vec![0u8; packet.len() + 128];
        let opts = TestRunOptions {
            data_in: Some(packet),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..Default::default()
        };
        let res = self
            .classifier(prog)?
            .test_run(opts)
            .map_err(|source| DatapathError::Verify { prog, source: Box::new(source) })?;
        out.truncate(res.data_size_out as usize);
        Ok(PacketRun { action: res.return_value, packet: out, duration: res.duration })
    }

    /// [`Datapath::test_run`] with the skb in CHECKSUM_COMPLETE, as a NIC that sums what
    /// it receives hands it over (BPF_F_TEST_SKB_CHECKSUM_COMPLETE, Linux 6.11): the
    /// kernel seeds skb->csum from the packet and fails the run with EBADMSG when the
    /// program leaves skb->csum disagreeing with the bytes it wrote, which on a real
    /// node is a "hw csum failure" and a software checksum of every such packet. EINVAL
    /// on older kernels. Raw BPF_PROG_TEST_RUN: aya sets no test-run flags but XDP's.
    pub fn test_run_checksum_complete(
        &mut self,
        prog: &'static str,
        packet: &[u8],
        ifindex: u32,
    ) -> std::io::Result<PacketRun> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        const BPF_F_TEST_SKB_CHECKSUM_COMPLETE: u32 = 1 << 2;
        let fd = self.classifier(prog).and_then(|p| {
            let fd = p.fd().map_err(|source| DatapathError::Verify { prog, source: Box::new(source) })?;
            Ok(fd.as_fd().as_raw_fd())
        });
        let fd = fd.map_err(std::io::Error::other)?;
        let mut ctx = [0u8; 44];
        ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
        let mut out = vec![0u8; packet.len() + 128];
        // SAFETY: an all-zero bpf_attr is the kernel's default for every field.
        let mut attr: aya_obj::generated::bpf_attr = unsafe { std::mem::zeroed() };
        // SAFETY: writing the union's test-run member, the one this command reads.
        let test = unsafe { &mut attr.test };
        test.prog_fd = fd as u32;
        test.data_in = packet.as_ptr() as u64;
        test.data_size_in = packet.len() as u32;
        test.data_out = out.as_mut_ptr() as u64;
        test.data_size_out = out.len() as u32;
        test.ctx_in = ctx.as_ptr() as u64;
        test.ctx_size_in = ctx.len() as u32;
        test.repeat = 1;
        test.flags = BPF_F_TEST_SKB_CHECKSUM_COMPLETE;
        // SAFETY: the buffers the attribute points to outlive the call and have the
        // sizes given; the kernel writes only into `out` and the attribute.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                aya_obj::generated::bpf_cmd::BPF_PROG_TEST_RUN as libc::c_long,
                &mut attr as *mut _,
                std::mem::size_of::<aya_obj::generated::bpf_attr>(),
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: as above; the kernel filled in the results.
        let test = unsafe { attr.test };
        out.truncate(test.data_size_out as usize);
        Ok(PacketRun {
            action: test.retval,
            packet: out,
            duration: std::time::Duration::from_nanos(test.duration as u64),
        })
    }
}

/// Verifies tc program `name` (once: a loaded program is left as it is).
fn dp_load(dp: &mut Datapath, name: &'static str) -> Result<(), DatapathError> {
    let prog = dp.classifier(name)?;
    if prog.fd().is_ok() {
        return Ok(());
    }
    prog.load().map_err(|source| DatapathError::Verify { prog: name, source: Box::new(source) })
}
