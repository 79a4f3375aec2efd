//! Reconciliation: the desired state (the state directory) against the kernel (links,
//! addresses, routes, map entries, attachments), drift repaired in both directions.
//! What is missing is re-created, what netpath owns but no longer wants is removed, and
//! what it does not own is left alone. Runs at agent start and on `netpath reconcile`.
use std::{collections::HashSet, net::Ipv4Addr};

use tracing::warn;

use super::{ports, Agent, AgentError};
use crate::{
    api::Repair,
    datapath::{program, tc_programs},
    plumbing::{link, netns, PlumbingError},
    state::{AgentId, EndpointRecord, Mode},
};

/// The repairs of one pass; in a dry run only what would be done.
struct Pass {
    dry_run: bool,
    repairs: Vec<Repair>,
}

impl Pass {
    /// Records drift; true when the caller should repair it (not a dry run).
    fn drift(&mut self, subject: &str, problem: String, fix: &str) -> bool {
        self.repairs.push(Repair { subject: subject.into(), problem, fix: fix.into(), failed: None });
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
            self.repairs.push(Repair {
                subject: subject.into(),
                problem: "could not be checked".into(),
                fix: "none".into(),
                failed: None,
            });
        }
        self.failed(error);
    }
}

/// Did this agent (`id`) make this veth, although its state may not name it? Host veths
/// carry the owner alias with the agent's id; a veth not yet marked has the temporary
/// name with the agent's id in it (the agent died between creating and marking it).
/// Links marked by a build from before agent ids (`netpath:<endpoint>`), or unmarked
/// with that build's name pattern (`np` + 10 hex digits), count as this agent's only on
/// the start that made its id (`adopt_unidentified`: the upgrade).
pub(super) fn owned_by(l: &link::Link, id: &AgentId, adopt_unidentified: bool) -> bool {
    if !l.is_veth {
        return false;
    }
    match l.owner() {
        Some(o) => match &o.agent {
            Some(agent) => agent == id.as_str(),
            None => adopt_unidentified,
        },
        None if l.alias.is_some() => false,
        None => {
            let old_pattern = l.name.len() == 12
                && l.name.starts_with("np")
                && l.name[2..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            id.made_temporary(&l.name) || (adopt_unidentified && old_pattern)
        }
    }
}

/// Is the namespace really gone (rather than, say, unreadable)?
fn netns_gone(e: &PlumbingError) -> bool {
    match e {
        PlumbingError::NetnsOpen { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        PlumbingError::NotNetns { .. } => true,
        _ => false,
    }
}

impl Agent {
    /// One reconciliation pass. Every drift found is in the result, with what was done
    /// about it (or, in a dry run, what would be); a repair that failed says why and the
    /// pass goes on with the rest.
    pub async fn reconcile(&mut self, dry_run: bool) -> Result<Vec<Repair>, AgentError> {
        let mut pass = Pass { dry_run, repairs: Vec::new() };
        let mut kept = Vec::new();
        let mut changed = false;
        for mut rec in self.endpoints.all().to_vec() {
            let before = rec.clone();
            let found = pass.repairs.len();
            match self.endpoint(&mut pass, &mut rec).await {
                Ok(true) => {
                    changed |= rec != before;
                    kept.push(rec);
                }
                Ok(false) => {
                    changed = true;
                    if !dry_run {
                        self.forget(&rec).await;
                    } else {
                        kept.push(rec);
                    }
                }
                Err(e) => {
                    pass.check_failed(found, &format!("endpoint {}", before.name), &e);
                    kept.push(before);
                }
            }
        }
        if !dry_run && changed {
            let names: HashSet<String> = kept.iter().map(|e| e.name.clone()).collect();
            self.endpoints.replace(kept)?;
            self.ports.retain_endpoints(|name| names.contains(name))?;
        }
        let found = pass.repairs.len();
        if let Err(e) = self.maps(&mut pass) {
            pass.check_failed(found, "datapath maps", &e);
        }
        let found = pass.repairs.len();
        if let Err(e) = self.stray_links(&mut pass).await {
            pass.check_failed(found, "node links", &e);
        }
        let found = pass.repairs.len();
        if let Err(e) = self.uplink(&mut pass).await {
            pass.check_failed(found, "uplink", &e);
        }
        if let Some(cgroup) = self.datapath.node_local_detached().map(std::path::Path::to_path_buf) {
            let problem = format!("the node-local socket hooks are not attached to {}", cgroup.display());
            if pass.drift("node-local access", problem, "attach them") {
                if let Err(e) = self.datapath.attach_node_local(&cgroup) {
                    pass.failed(&e.into());
                }
            }
        }
        if !dry_run {
            for pin in self.datapath.prune_links() {
                let subject = pin.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned());
                pass.drift(
                    &format!("link pin {subject}"),
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

    /// Checks and repairs one endpoint; false when its container is gone for good.
    async fn endpoint(&mut self, pass: &mut Pass, rec: &mut EndpointRecord) -> Result<bool, AgentError> {
        let subject = format!("endpoint {}", rec.name);
        let ns = match netns::open(&rec.netns) {
            Ok(ns) => ns,
            Err(e) if netns_gone(&e) => {
                pass.drift(
                    &subject,
                    format!("its namespace {} is gone", rec.netns.display()),
                    "forget the endpoint and its published ports",
                );
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        };
        let host = link::get(&self.netlink, &rec.host_ifname).await?;
        let host = match host {
            None => {
                let problem = format!("host veth {} is gone", rec.host_ifname);
                if pass.drift(&subject, problem, "re-create the veth pair, addresses, routes, map entry") {
                    self.plumb(&ns, rec).await?;
                }
                return Ok(true);
            }
            Some(l) if l.index != rec.host_ifindex && !self.marked_for(&l, &rec.name) => {
                let error = AgentError::ForeignLink { name: l.name.clone(), index: l.index };
                pass.drift(
                    &subject,
                    error.to_string(),
                    "none: delete or rename that link, then run `netpath reconcile`",
                );
                pass.failed(&error);
                return Ok(true);
            }
            Some(l) => l,
        };
        if host.index != rec.host_ifindex {
            let problem =
                format!("host veth {} has index {}, state says {}", host.name, host.index, rec.host_ifindex);
            if pass.drift(&subject, problem, "adopt the new index") {
                rec.host_ifindex = host.index;
                rec.host_mac = crate::state::format_mac(&host.mac);
                self.datapath.attach_endpoint(&rec.host_ifname, rec.host_ifindex)?;
            }
        }
        let (ifname, ip, prefix) = (rec.ifname.clone(), rec.ip, self.prefix(rec));
        let missing =
            netns::run_in(&ns, &rec.netns, move |h| link::container_drift(h, ifname, ip, prefix)).await?;
        if missing.iter().any(|m| m.starts_with("interface")) {
            // The peer is not where it belongs: only a new pair puts it back.
            let problem = format!("interface {} is missing in {}", rec.ifname, rec.netns.display());
            if pass.drift(&subject, problem, "re-create the veth pair, addresses, routes, map entry") {
                link::delete(&self.netlink, host.index).await?;
                self.datapath.detach_endpoint(&rec.host_ifname, host.index)?;
                self.plumb(&ns, rec).await?;
            }
            return Ok(true);
        }
        if !missing.is_empty() {
            let problem = format!("missing in the container: {}", missing.join(", "));
            if pass.drift(&subject, problem, "configure the container side again") {
                self.configure_container(&ns, rec).await?;
            }
        }
        if host.owner() != Some(self.owner(&rec.name)) {
            let problem = format!("host veth {} is not marked as this agent's", host.name);
            if pass.drift(&subject, problem, "mark it (alias)") {
                link::set_owner(&self.netlink, host.index, &self.owner(&rec.name), None).await?;
            }
        }
        if !host.up && pass.drift(&subject, format!("host veth {} is down", host.name), "set it up") {
            link::set_up(&self.netlink, host.index, &host.name).await?;
        }
        match (rec.mode, &self.node.bridge) {
            (Mode::Routed, _) if !link::has_host_route(&self.netlink, rec.ip, host.index).await? => {
                let problem = format!("node route {}/32 dev {} is missing", rec.ip, host.name);
                if pass.drift(&subject, problem, "add it") {
                    link::add_host_route(&self.netlink, rec.ip, host.index).await?;
                }
            }
            (Mode::Bridge, Some(bridge)) if host.controller != Some(bridge.index) => {
                let problem = format!("host veth {} is not a port of {}", host.name, bridge.name);
                if pass.drift(&subject, problem, "put it back on the bridge") {
                    link::set_controller(&self.netlink, host.index, bridge.index).await?;
                }
            }
            _ => {}
        }
        let attached = tc_programs(&self.netlink, &host.name, host.index, self.datapath.mode()).await;
        if !attached.is_some_and(|p| p.iter().any(|p| p == program::FROM_CONTAINER)) {
            let problem = format!("{} is not attached to {}", program::FROM_CONTAINER, host.name);
            if pass.drift(&subject, problem, "attach it") {
                self.datapath.reattach(program::FROM_CONTAINER, &host.name, host.index)?;
            }
        }
        Ok(true)
    }

    /// Removes everything of an endpoint whose container is gone.
    async fn forget(&mut self, rec: &EndpointRecord) {
        let keys: Vec<_> = self.ports.of_endpoint(&rec.name).map(|p| ports::entry(p).0).collect();
        for key in keys {
            let _ = self.datapath.remove_port(&key);
        }
        let _ = self.datapath.detach_endpoint(&rec.host_ifname, rec.host_ifindex);
        let _ = self.datapath.unregister(rec.ip);
        // The veth died with the namespace, unless something still holds it.
        if let Ok(Some(l)) = link::get_by_index(&self.netlink, rec.host_ifindex).await {
            if l.name == rec.host_ifname {
                let _ = link::delete(&self.netlink, l.index).await;
            }
        }
    }

    /// ENDPOINTS and PORT_MAPS against the state: missing or different entries are
    /// written, entries no endpoint or port owns are removed (both maps are netpath's).
    fn maps(&mut self, pass: &mut Pass) -> Result<(), AgentError> {
        let mut want = Vec::new();
        for rec in self.endpoints.all() {
            want.push((rec.ip, self.endpoint_info(rec)?));
        }
        let have = self.datapath.endpoint_entries()?;
        for (ip, info) in &want {
            let found = have.iter().find(|(i, _)| i == ip).map(|(_, v)| v);
            if found != Some(info) {
                let problem = match found {
                    None => format!("ENDPOINTS has no entry for {ip}"),
                    Some(_) => format!("ENDPOINTS entry for {ip} differs from the state"),
                };
                if pass.drift(&format!("endpoint at {ip}"), problem, "write it") {
                    if let Err(e) = self.datapath.register(*ip, *info) {
                        pass.failed(&e.into());
                    }
                }
            }
        }
        for (ip, _) in have.iter().filter(|(ip, _)| !want.iter().any(|(w, _)| w == ip)) {
            let problem = format!("ENDPOINTS has an entry for {ip} that no endpoint owns");
            if pass.drift(&format!("address {ip}"), problem, "remove it") {
                self.datapath.unregister(*ip)?;
            }
        }
        let want: Vec<_> = self.ports.all().iter().map(|p| (p.clone(), ports::entry(p))).collect();
        let have = self.datapath.port_entries()?;
        for (p, (key, target)) in &want {
            let subject = format!("port {}/{}", p.proto, p.host_port);
            match have.iter().find(|(k, _)| k == key) {
                Some((_, t)) if t == target => {}
                found => {
                    let problem = if found.is_some() {
                        "PORT_MAPS entry differs from the state".to_string()
                    } else {
                        "PORT_MAPS has no entry for it".to_string()
                    };
                    if pass.drift(&subject, problem, "write it") {
                        if let Err(e) = self.datapath.set_port(*key, *target) {
                            pass.failed(&e.into());
                        }
                    }
                }
            }
        }
        for (key, target) in have.iter().filter(|(k, _)| !want.iter().any(|(_, (w, _))| w == k)) {
            let port = u16::from_be_bytes(key.port);
            let to = format!("{}:{}", Ipv4Addr::from(target.ip), u16::from_be_bytes(target.port));
            let problem = format!("PORT_MAPS publishes port {port} (to {to}) that no port record owns");
            if pass.drift(&format!("port {port}"), problem, "remove it") {
                self.datapath.remove_port(key)?;
            }
        }
        Ok(())
    }

    /// Host veths netpath created that no endpoint wants: left by an agent killed
    /// between creating a veth and saving its state, or by a delete cut short.
    async fn stray_links(&mut self, pass: &mut Pass) -> Result<(), AgentError> {
        for l in link::list(&self.netlink).await? {
            let wanted =
                self.endpoints.all().iter().any(|e| e.host_ifname == l.name && e.host_ifindex == l.index);
            if wanted || !owned_by(&l, &self.id, self.adopt_unidentified) {
                continue;
            }
            let problem = match l.owner() {
                Some(owner) => {
                    format!("created for endpoint {}, which the state does not have", owner.endpoint)
                }
                None => "created by this agent, which died before it was marked".into(),
            };
            if pass.drift(&format!("link {}", l.name), problem, "delete it") {
                self.datapath.detach_endpoint(&l.name, l.index)?;
                link::delete(&self.netlink, l.index).await?;
            }
        }
        Ok(())
    }

    /// uplink_in must be attached to the uplink, and the uplink must be there.
    async fn uplink(&mut self, pass: &mut Pass) -> Result<(), AgentError> {
        let Some(up) = self.node.uplink.clone() else {
            if let Some(name) = self.node.uplink_name.clone() {
                pass.drift(
                    &format!("uplink {name}"),
                    "is gone: masquerade and published ports are down".into(),
                    "none here: bring back an interface of that name, the agent re-attaches to it",
                );
                pass.failed(&AgentError::NoUplink { name });
            }
            return Ok(());
        };
        let attached = tc_programs(&self.netlink, &up.name, up.index, self.datapath.mode()).await;
        if !attached.is_some_and(|p| p.iter().any(|p| p == program::UPLINK_IN)) {
            let problem = format!("{} is not attached to {}", program::UPLINK_IN, up.name);
            if pass.drift(&format!("uplink {}", up.name), problem, "attach it") {
                self.datapath.reattach(program::UPLINK_IN, &up.name, up.index)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_agents_links_are_its_own() {
        let me = AgentId::generate();
        let other = AgentId::generate();
        let veth = |name: &str, alias: Option<String>| link::Link {
            name: name.into(),
            alias,
            is_veth: true,
            ..Default::default()
        };
        let mark = |id: &AgentId| Some(link::Owner::new(id.as_str(), "web").alias());
        assert!(owned_by(&veth("anything", mark(&me)), &me, false));
        assert!(!owned_by(&veth("anything", mark(&other)), &me, false), "another agent's");
        assert!(owned_by(&veth(&me.temporary_ifname(7), None), &me, false), "not yet marked");
        assert!(!owned_by(&veth(&other.temporary_ifname(7), None), &me, true));
        // A build before agent ids: adopted only on the upgrade start.
        assert!(owned_by(&veth("np0123456789", Some("netpath:web".into())), &me, true));
        assert!(!owned_by(&veth("np0123456789", Some("netpath:web".into())), &me, false));
        assert!(owned_by(&veth("np0123456789", None), &me, true));
        assert!(!owned_by(&veth("np0123456789", None), &me, false));
        assert!(!owned_by(&veth("np0123456789", Some("someone else's".into())), &me, true));
        assert!(!owned_by(&veth("np012345678z", None), &me, true));
        assert!(!owned_by(&veth("eth0", None), &me, true));
        assert!(!owned_by(&link::Link { is_veth: false, ..veth("np0123456789", None) }, &me, true));
    }
}
