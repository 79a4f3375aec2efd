//! Reconciliation: the agent repairs the drift between the state directory and the
//! kernel (found by [`crate::drift`], which `doctor` shares) in both directions. What
//! is missing is re-created, what this agent owns but no longer wants is removed, and
//! what it does not own is left alone. Runs at agent start and on `netpath reconcile`.
use std::{collections::HashSet, net::IpAddr};

use aya::Pod;
use netpath_common::{PortKeyOf, PortTargetOf};
use tracing::warn;

use super::{Agent, AgentError};
use crate::{
    api::Repair,
    datapath::{
        entries,
        family::{Family, Ipv4, Ipv6},
        program,
    },
    drift::{self, Drift},
    plumbing::{link, netns},
    state::{EndpointRecord, Mode, PortRecord},
};

/// Endpoint checks in flight at once in a pass.
const CHECKS_AT_ONCE: usize = 32;

/// The repairs of one pass; in a dry run only what would be done.
struct Pass {
    dry_run: bool,
    repairs: Vec<Repair>,
}

impl Pass {
    /// Records drift; true when the caller should repair it (not a dry run).
    fn note(&mut self, drift: &Drift) -> bool {
        self.note_as(drift.subject(), drift.problem(), fix(drift))
    }

    fn note_as(&mut self, subject: String, problem: String, fix: &str) -> bool {
        self.repairs.push(Repair { subject, problem, fix: fix.into(), failed: None });
        !self.dry_run
    }

    /// Marks the last repair as failed.
    fn failed(&mut self, error: &AgentError) {
        if let Some(last) = self.repairs.last_mut() {
            last.failed = Some(error.to_string());
        }
    }

    /// A check of `subject` failed: the repair it was making fails, or, when it had
    /// found nothing yet (repairs still at `before`), the check itself is reported.
    fn check_failed(&mut self, before: usize, subject: &str, error: &AgentError) {
        if self.repairs.len() == before {
            self.note_as(subject.into(), "could not be checked".into(), "none");
        }
        self.failed(error);
    }
}

/// What the agent does about a drift.
fn fix(d: &Drift) -> &'static str {
    use Drift::*;
    match d {
        NamespaceGone { .. } => "forget the endpoint and its published ports",
        HostVethGone { .. } | PeerGone { .. } => "re-create the veth pair, addresses, routes, map entry",
        ForeignLink { .. } => "none: delete or rename that link, then run `netpath reconcile`",
        IndexChanged { .. } => "adopt the new index",
        ContainerSide { .. } => "configure the container side again",
        NotMarked { .. } => "mark it (alias)",
        HostDown { .. } => "set it up",
        NodeRouteMissing { .. } => "add it",
        NotOnBridge { .. } => "put it back on the bridge",
        ProgramDetached { .. } => "attach it",
        EndpointEntryMissing { .. } | EndpointEntryDiffers { .. } => "write it",
        PortEntryMissing { .. } | PortEntryDiffers { .. } => "write it",
        EndpointEntryStray { .. } | PortEntryStray { .. } => "remove it",
        StrayLink { .. } => "delete it",
        UplinkGone { .. } => "none here: bring back an interface of that name, the agent re-attaches to it",
    }
}

impl Agent {
    /// One reconciliation pass. Every drift found is in the result, with what was done
    /// about it (or, in a dry run, what would be); a repair that failed says why and the
    /// pass goes on with the rest.
    pub async fn reconcile(&mut self, dry_run: bool) -> Result<Vec<Repair>, AgentError> {
        let mut pass = Pass { dry_run, repairs: Vec::new() };
        self.endpoints_pass(&mut pass).await?;
        let found = pass.repairs.len();
        if let Err(e) = self.maps(&mut pass) {
            pass.check_failed(found, "datapath maps", &e);
        }
        let found = pass.repairs.len();
        if let Err(e) = self.stray_links(&mut pass).await {
            pass.check_failed(found, "node links", &e);
        }
        self.uplink(&mut pass).await;
        self.node_local(&mut pass);
        if !dry_run {
            for pin in self.datapath.prune_links() {
                let subject = pin.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned());
                pass.note_as(
                    format!("link pin {subject}"),
                    "attaches nothing netpath wants".into(),
                    "unpin it",
                );
            }
        }
        for r in &pass.repairs {
            match &r.failed {
                None => warn!(subject = %r.subject, fix = %r.fix, dry_run, "drift: {}", r.problem),
                Some(e) => {
                    warn!(subject = %r.subject, fix = %r.fix, "drift: {}; repair failed: {e}", r.problem)
                }
            }
        }
        Ok(pass.repairs)
    }

    /// Every endpoint checked and repaired; those whose container is gone are forgotten
    /// with their ports. The checks only read, and each waits mostly on the kernel (a
    /// thread entering the container's namespace, netlink round trips): they run
    /// [`CHECKS_AT_ONCE`] at a time, so a restart with a thousand endpoints takes a
    /// fraction of a thousand checks' time. The repairs then run one after the other.
    async fn endpoints_pass(&mut self, pass: &mut Pass) -> Result<(), AgentError> {
        use futures::StreamExt as _;
        let records = self.endpoints.all().to_vec();
        let routes = link::main_routes(&self.netlink).await?;
        let routes6 = link::host_routes6(&self.netlink).await?;
        let nodes: Vec<drift::Node<'_>> = records
            .iter()
            .map(|rec| drift::Node {
                netlink: &self.netlink,
                owner: self.owner(),
                attach: self.datapath.mode(),
                bridge: self.node.bridge.as_ref(),
                prefix: self.prefix(rec),
                pod_cidr6: self.pod_cidr6(),
                routes: Some(&routes),
                routes6: Some(&routes6),
            })
            .collect();
        let checks: Vec<_> = futures::stream::iter(records.iter().zip(&nodes))
            .map(|(rec, node)| drift::endpoint(node, rec))
            .buffered(CHECKS_AT_ONCE)
            .collect()
            .await;
        drop(nodes);
        let mut kept = Vec::new();
        let mut changed = false;
        for (mut rec, check) in records.into_iter().zip(checks) {
            let before = rec.clone();
            let found = pass.repairs.len();
            let outcome = match check {
                Ok(drifts) => self.endpoint(pass, &mut rec, drifts).await,
                Err(e) => Err(e.into()),
            };
            match outcome {
                Ok(true) => {
                    changed |= rec != before;
                    kept.push(rec);
                }
                Ok(false) if !pass.dry_run => {
                    changed = true;
                    self.forget(&rec).await;
                }
                Ok(false) => kept.push(rec),
                Err(e) => {
                    pass.check_failed(found, &format!("endpoint {}", before.name), &e);
                    kept.push(before);
                }
            }
        }
        if !pass.dry_run && changed {
            let names: HashSet<String> = kept.iter().map(|e| e.name.clone()).collect();
            self.endpoints.replace(kept)?;
            self.ports.retain_endpoints(|name| names.contains(name))?;
        }
        Ok(())
    }

    /// Who owns which links, as the drift checks need it.
    pub(super) fn owner(&self) -> drift::Owner<'_> {
        drift::Owner { id: &self.id, adopt_unidentified: self.adopt_unidentified }
    }

    /// Repairs what the check found of one endpoint; false when its container is gone
    /// for good.
    async fn endpoint(
        &mut self,
        pass: &mut Pass,
        rec: &mut EndpointRecord,
        drifts: Vec<Drift>,
    ) -> Result<bool, AgentError> {
        for d in drifts {
            if let Drift::ForeignLink { name, index, .. } = &d {
                pass.note(&d);
                pass.failed(&AgentError::ForeignLink { name: name.clone(), index: *index });
                continue;
            }
            if matches!(d, Drift::NamespaceGone { .. }) {
                pass.note(&d);
                return Ok(false);
            }
            if pass.note(&d) {
                if let Err(e) = self.repair_endpoint(&d, rec).await {
                    pass.failed(&e);
                }
            }
        }
        Ok(true)
    }

    async fn repair_endpoint(&mut self, d: &Drift, rec: &mut EndpointRecord) -> Result<(), AgentError> {
        match d {
            Drift::PeerGone { .. } if rec.mode.is_subif() => {
                let ns = netns::open(&rec.netns)?;
                self.plumb(&ns, rec).await?;
            }
            Drift::ProgramDetached { .. } if rec.mode.is_subif() => {
                self.datapath.attach_subif(&netns::open(&rec.netns)?, &rec.ifname)?
            }
            Drift::HostVethGone { .. } | Drift::PeerGone { .. } => {
                let ns = netns::open(&rec.netns)?;
                // The peer is not where it belongs: only a new pair puts it back.
                if let Some(old) = link::get(&self.netlink, &rec.host_ifname).await? {
                    link::delete(&self.netlink, old.index).await?;
                    self.datapath.detach_endpoint(&rec.host_ifname, old.index)?;
                }
                self.plumb(&ns, rec).await?;
            }
            Drift::IndexChanged { index, .. } => {
                let l = link::get(&self.netlink, &rec.host_ifname)
                    .await?
                    .ok_or_else(|| crate::plumbing::PlumbingError::LinkNotFound(rec.host_ifname.clone()))?;
                rec.host_ifindex = *index;
                rec.host_mac = crate::state::format_mac(&l.mac);
                self.datapath.attach_endpoint(&rec.host_ifname, rec.host_ifindex, rec.device)?;
            }
            Drift::ContainerSide { .. } => self.configure_container(&netns::open(&rec.netns)?, rec).await?,
            Drift::NotMarked { .. } => {
                link::set_owner(&self.netlink, rec.host_ifindex, &self.owner_mark(&rec.name), None).await?
            }
            Drift::HostDown { veth, .. } => link::set_up(&self.netlink, rec.host_ifindex, veth).await?,
            Drift::NodeRouteMissing { ip: IpAddr::V4(ip), .. } => {
                link::add_host_route(&self.netlink, *ip, rec.host_ifindex).await?
            }
            Drift::NodeRouteMissing { ip: IpAddr::V6(ip), .. } => {
                link::add_host_route6(&self.netlink, *ip, rec.host_ifindex).await?
            }
            Drift::NotOnBridge { .. } => {
                if let (Mode::Bridge, Some(bridge)) = (rec.mode, &self.node.bridge) {
                    link::set_controller(&self.netlink, rec.host_ifindex, bridge.index).await?;
                }
            }
            Drift::ProgramDetached { iface, .. } => {
                self.datapath.reattach_endpoint(iface, rec.host_ifindex, rec.device)?
            }
            _ => {}
        }
        Ok(())
    }

    /// Removes everything of an endpoint whose container is gone.
    async fn forget(&mut self, rec: &EndpointRecord) {
        let ports: Vec<PortRecord> = self.ports.of_endpoint(&rec.name).cloned().collect();
        for (key, _) in entries::ports::<Ipv4>(&ports) {
            let _ = self.datapath.remove_port(&key);
        }
        for (key, _) in entries::ports::<Ipv6>(&ports) {
            let _ = self.datapath.remove_port(&key);
        }
        if !rec.mode.is_subif() {
            let _ = self.datapath.detach_endpoint(&rec.host_ifname, rec.host_ifindex);
        }
        for (ip6, ..) in entries::endpoints6(std::slice::from_ref(rec), &[], &[]) {
            let _ = self.datapath.unregister6(ip6);
        }
        let _ = self.datapath.unregister(rec.ip);
        // A sub-interface died with its namespace (its index is no node's).
        if rec.mode.is_subif() {
            return;
        }
        // The veth died with the namespace, unless something still holds it.
        if let Ok(Some(l)) = link::get_by_index(&self.netlink, rec.host_ifindex).await {
            if l.name == rec.host_ifname {
                let _ = link::delete(&self.netlink, l.index).await;
            }
        }
    }

    /// ENDPOINTS(6) and PORT_MAPS(6) against the state: missing or different entries are
    /// written, entries no endpoint or port owns are removed (the maps are netpath's).
    fn maps(&mut self, pass: &mut Pass) -> Result<(), AgentError> {
        let want = entries::endpoints(self.endpoints.all(), self.ports.all());
        for d in drift::endpoint_entries(&want, &self.datapath.endpoint_entries()?) {
            if !pass.note(&d) {
                continue;
            }
            let result = match d {
                Drift::EndpointEntryMissing { ip: IpAddr::V4(ip) }
                | Drift::EndpointEntryDiffers { ip: IpAddr::V4(ip) } => {
                    let info = want.iter().find(|(w, _)| *w == ip).map(|(_, i)| *i).unwrap_or_default();
                    self.datapath.register(ip, info)
                }
                Drift::EndpointEntryStray { ip: IpAddr::V4(ip) } => self.datapath.unregister(ip),
                _ => Ok(()),
            };
            if let Err(e) = result {
                pass.failed(&e.into());
            }
        }
        // IPv6 after IPv4: an address's entry carries its IPv4 entry's counter slot.
        let want6 =
            entries::endpoints6(self.endpoints.all(), self.ports.all(), &self.datapath.endpoint_entries()?);
        let pairs: Vec<_> = want6.iter().map(|(ip6, _, info)| (*ip6, *info)).collect();
        for d in drift::endpoint_entries6(&pairs, &self.datapath.endpoint_entries6()?) {
            if !pass.note(&d) {
                continue;
            }
            let result = match d {
                Drift::EndpointEntryMissing { ip: IpAddr::V6(ip6) }
                | Drift::EndpointEntryDiffers { ip: IpAddr::V6(ip6) } => {
                    match want6.iter().find(|(w, ..)| *w == ip6) {
                        Some((_, owner, info)) => self.datapath.register6(ip6, *owner, *info),
                        None => Ok(()),
                    }
                }
                Drift::EndpointEntryStray { ip: IpAddr::V6(ip6) } => self.datapath.unregister6(ip6),
                _ => Ok(()),
            };
            if let Err(e) = result {
                pass.failed(&e.into());
            }
        }
        self.port_maps::<Ipv4>(pass)?;
        self.port_maps::<Ipv6>(pass)
    }

    /// Family `A`'s published-port table against the state.
    fn port_maps<A: Family>(&mut self, pass: &mut Pass) -> Result<(), AgentError>
    where
        PortKeyOf<A>: Pod,
        PortTargetOf<A>: Pod,
    {
        let want = labelled_ports::<A>(self.ports.all());
        let have = self.datapath.port_entries::<A>()?;
        // Labels repeat (a port published on two host addresses): a drift's entry is the
        // first of its label not yet as wanted.
        let mut have_by_key: std::collections::HashMap<_, _> = have.iter().copied().collect();
        for d in drift::port_entries(&want, &have) {
            if !pass.note(&d) {
                continue;
            }
            let result = match &d {
                Drift::PortEntryMissing { label, .. } | Drift::PortEntryDiffers { label, .. } => {
                    let wrong = |(l, k, t): &&(String, PortKeyOf<A>, PortTargetOf<A>)| {
                        l == label && have_by_key.get(k) != Some(t)
                    };
                    match want.iter().find(wrong) {
                        Some((_, key, target)) => {
                            have_by_key.insert(*key, *target);
                            self.datapath.set_port(*key, *target)
                        }
                        // Two records of one key (a state edited by hand): written already.
                        None => Ok(()),
                    }
                }
                Drift::PortEntryStray { proto, host, port, .. } => match A::of(*host) {
                    Some(host_ip) => {
                        let key = PortKeyOf { host_ip, port: port.to_be_bytes(), proto: *proto, _pad: 0 };
                        self.datapath.remove_port(&key)
                    }
                    None => Ok(()),
                },
                _ => Ok(()),
            };
            if let Err(e) = result {
                pass.failed(&e.into());
            }
        }
        Ok(())
    }

    /// Host veths this agent made that no endpoint wants.
    async fn stray_links(&mut self, pass: &mut Pass) -> Result<(), AgentError> {
        for (l, d) in drift::stray_links(&self.netlink, self.owner(), self.endpoints.all()).await? {
            if pass.note(&d) {
                self.datapath.detach_endpoint(&l.name, l.index)?;
                link::delete(&self.netlink, l.index).await?;
            }
        }
        Ok(())
    }

    /// uplink_in must be attached to the uplink, and the uplink must be there.
    async fn uplink(&mut self, pass: &mut Pass) {
        let Some(name) = self.node.uplink_name.clone() else { return };
        let link = self.node.uplink.clone();
        let Some(d) = drift::uplink(&self.netlink, &name, link.as_ref(), self.datapath.mode()).await else {
            return;
        };
        let repair = pass.note(&d);
        match (d, link) {
            (Drift::UplinkGone { name }, _) => pass.failed(&AgentError::NoUplink { name }),
            (_, Some(up)) if repair => {
                if let Err(e) = self.datapath.reattach(program::UPLINK_IN, &up.name, up.index) {
                    pass.failed(&e.into());
                }
            }
            _ => {}
        }
    }

    /// The node-local socket hooks, when one of their pinned links was removed.
    fn node_local(&mut self, pass: &mut Pass) {
        let Some(cgroup) = self.datapath.node_local_detached().map(std::path::Path::to_path_buf) else {
            return;
        };
        let problem = format!("the node-local socket hooks are not attached to {}", cgroup.display());
        if pass.note_as("node-local access".into(), problem, "attach them") {
            if let Err(e) = self.datapath.attach_node_local(&cgroup) {
                pass.failed(&e.into());
            }
        }
    }
}

/// Family `A`'s entries of the published ports `recs`, each with the label reconciliation
/// and `doctor` name it by (`tcp/8080`).
pub(super) fn labelled_ports<A: Family>(recs: &[PortRecord]) -> Vec<(String, PortKeyOf<A>, PortTargetOf<A>)> {
    recs.iter()
        .filter_map(|p| {
            let (key, target) = entries::port::<A>(p)?;
            Some((format!("{}/{}", p.proto, p.host_port), key, target))
        })
        .collect()
}
