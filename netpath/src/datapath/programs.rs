//! Loading, pinning and attaching. One loaded program serves every container veth.
use std::{collections::HashMap, net::Ipv4Addr, path::Path};

use aya::{
    maps::{HashMap as BpfHashMap, MapData, PerCpuHashMap, PerCpuValues},
    programs::{tc, SchedClassifier, TcAttachType, TestRun as _, TestRunOptions},
    util::KernelVersion,
    Ebpf, EbpfLoader,
};
use netpath_common::{maps, EndpointInfo, EndpointKey, TrafficCounters};
use tracing::info;

use super::DatapathError;

const FROM_CONTAINER: &str = "from_container";

/// How tc programs are attached on this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// bpf_link based tc (kernel >= 6.6): no qdisc, detached when the link is dropped.
    Tcx,
    /// cls_bpf under a clsact qdisc via netlink, for older kernels.
    Clsact,
}

impl AttachMode {
    pub fn detect() -> Self {
        match KernelVersion::current() {
            Ok(v) if v >= KernelVersion::new(6, 6, 0) => AttachMode::Tcx,
            _ => AttachMode::Clsact,
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
    ebpf: Ebpf,
    mode: AttachMode,
    /// host ifindex -> link of from_container on that veth.
    links: HashMap<u32, aya::programs::tc::SchedClassifierLinkId>,
}

impl Datapath {
    /// Loads the embedded object. Maps are pinned by name under `pin_dir`; maps already
    /// pinned there are adopted, not recreated, so their contents survive a restart.
    pub fn load(pin_dir: &Path) -> Result<Self, DatapathError> {
        let object = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netpath"));
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .load(object)
            .map_err(|source| DatapathError::Load { pin_dir: pin_dir.into(), source: Box::new(source) })?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut(FROM_CONTAINER)
            .ok_or(DatapathError::MissingProgram(FROM_CONTAINER))?
            .try_into()
            .map_err(|source| DatapathError::Verify { prog: FROM_CONTAINER, source: Box::new(source) })?;
        prog.load()
            .map_err(|source| DatapathError::Verify { prog: FROM_CONTAINER, source: Box::new(source) })?;
        let mode = AttachMode::detect();
        info!(?mode, pin_dir = %pin_dir.display(), "datapath loaded");
        Ok(Self { ebpf, mode, links: HashMap::new() })
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    fn classifier(&mut self) -> Result<&mut SchedClassifier, DatapathError> {
        self.ebpf
            .program_mut(FROM_CONTAINER)
            .ok_or(DatapathError::MissingProgram(FROM_CONTAINER))?
            .try_into()
            .map_err(|source| DatapathError::Verify { prog: FROM_CONTAINER, source: Box::new(source) })
    }

    /// Attaches from_container to the ingress of a container's host-side veth.
    pub fn attach(&mut self, iface: &str, ifindex: u32) -> Result<(), DatapathError> {
        if self.links.contains_key(&ifindex) {
            return Ok(());
        }
        if self.mode == AttachMode::Clsact {
            if let Err(e) = tc::qdisc_add_clsact(iface) {
                let io = std::io::Error::other(e.to_string());
                if !e.to_string().contains("exists") {
                    return Err(DatapathError::Clsact { iface: iface.into(), source: io });
                }
            }
        }
        let iface_owned = iface.to_string();
        let id = self.classifier()?.attach(iface, TcAttachType::Ingress).map_err(|source| {
            DatapathError::Attach { prog: FROM_CONTAINER, iface: iface_owned, source: Box::new(source) }
        })?;
        self.links.insert(ifindex, id);
        Ok(())
    }

    /// Detaches from a veth; nothing to do when it was not attached.
    pub fn detach(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        let Some(id) = self.links.remove(&ifindex) else { return Ok(()) };
        // A veth already deleted took its attachment with it: detaching then fails
        // harmlessly, and there is nothing left to clean.
        let _ = self.classifier()?.detach(id);
        Ok(())
    }

    /// Runs from_container once on `packet` with BPF_PROG_TEST_RUN, as if it arrived on
    /// `ifindex` (a device in the caller's namespace), and returns the tc action and the
    /// packet as the program left it. Nothing is sent: the kernel only records a
    /// redirect. The basis of the packet-level tests and of per-packet cost figures.
    pub fn test_run(&mut self, packet: &[u8], ifindex: u32) -> Result<PacketRun, DatapathError> {
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
            .classifier()?
            .test_run(opts)
            .map_err(|source| DatapathError::Verify { prog: FROM_CONTAINER, source: Box::new(source) })?;
        out.truncate(res.data_size_out as usize);
        Ok(PacketRun { action: res.return_value, packet: out, duration: res.duration })
    }

    fn endpoints(&mut self) -> Result<BpfHashMap<&mut MapData, EndpointKey, EndpointInfo>, DatapathError> {
        let map = self.ebpf.map_mut(maps::ENDPOINTS).ok_or(DatapathError::MissingMap(maps::ENDPOINTS))?;
        BpfHashMap::try_from(map)
            .map_err(|source| DatapathError::Map { map: maps::ENDPOINTS, source: Box::new(source) })
    }

    fn endpoint_stats(
        &mut self,
    ) -> Result<PerCpuHashMap<&mut MapData, EndpointKey, TrafficCounters>, DatapathError> {
        let map =
            self.ebpf.map_mut(maps::ENDPOINT_STATS).ok_or(DatapathError::MissingMap(maps::ENDPOINT_STATS))?;
        PerCpuHashMap::try_from(map)
            .map_err(|source| DatapathError::Map { map: maps::ENDPOINT_STATS, source: Box::new(source) })
    }

    /// Makes `ip` a local endpoint. The counters entry is created first, so the datapath
    /// never sees an endpoint without one (it does not insert from the packet path).
    pub fn register(&mut self, ip: Ipv4Addr, info: EndpointInfo) -> Result<(), DatapathError> {
        let key = EndpointKey::new(ip.octets());
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| DatapathError::Cpus(format!("{what}: {e}")))?;
        let zero = PerCpuValues::try_from(vec![TrafficCounters::default(); cpus])
            .map_err(|e| DatapathError::Cpus(e.to_string()))?;
        self.endpoint_stats()?
            .insert(key, zero, 0)
            .map_err(|source| DatapathError::Map { map: maps::ENDPOINT_STATS, source: Box::new(source) })?;
        if let Err(source) = self.endpoints()?.insert(key, info, 0) {
            let _ = self.endpoint_stats()?.remove(&key);
            return Err(DatapathError::Map { map: maps::ENDPOINTS, source: Box::new(source) });
        }
        Ok(())
    }

    /// Removes `ip` from the maps; absent entries are fine.
    pub fn unregister(&mut self, ip: Ipv4Addr) -> Result<(), DatapathError> {
        let key = EndpointKey::new(ip.octets());
        let _ = self.endpoints()?.remove(&key);
        let _ = self.endpoint_stats()?.remove(&key);
        Ok(())
    }
}
