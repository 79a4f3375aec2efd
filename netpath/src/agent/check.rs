//! One endpoint compared with the kernel, changing nothing: what a runtime's CNI CHECK
//! asks. The same drift checks as reconciliation, narrowed to the endpoint, its
//! datapath entry and the ports it should publish.
use aya::Pod;
use netpath_common::{PortKeyOf, PortTargetOf};

use super::{Agent, AgentError};
use crate::{
    api::{CheckExpect, PortSpec},
    datapath::{
        entries,
        family::{Family, Ipv4, Ipv6},
    },
    drift::{self, Drift},
    state::PortRecord,
};

impl Agent {
    /// Each difference as `subject: problem`; empty when the endpoint is as recorded,
    /// as `expect` says, and publishes exactly the ports of `ports`.
    pub async fn endpoint_check(
        &mut self,
        name: &str,
        ports: &[PortSpec],
        expect: &CheckExpect,
    ) -> Result<Vec<String>, AgentError> {
        let Some(rec) = self.endpoints.get(name).cloned() else {
            return Ok(vec![format!(
                "endpoint {name}: netpath has no such endpoint (the container's ADD was undone)"
            )]);
        };
        let mut differs = Vec::new();
        let mut compare = |what: &str, want: Option<String>, have: String| {
            if let Some(want) = want.filter(|w| *w != have) {
                differs.push(format!("endpoint {name}: {what} is {have}, the runtime's is {want}"));
            }
        };
        compare("owner", expect.owner.clone(), rec.owner.clone().unwrap_or_default());
        compare(
            "namespace",
            expect.netns.as_ref().map(|n| n.display().to_string()),
            rec.netns.display().to_string(),
        );
        compare("interface", expect.ifname.clone(), rec.ifname.clone());
        compare("address", expect.ip.map(|i| i.to_string()), rec.ip.to_string());
        compare("mac", expect.mac.clone(), rec.mac.clone());
        let node = drift::Node {
            netlink: &self.netlink,
            owner: self.owner(),
            attach: self.datapath.mode(),
            bridge: self.node.bridge.as_ref(),
            prefix: self.prefix(&rec),
            pod_cidr6: self.pod_cidr6(),
            routes: None,
            routes6: None,
        };
        let mut found = drift::endpoint(&node, &rec).await?;

        let want: Vec<_> = entries::endpoints(std::slice::from_ref(&rec), self.ports.all());
        let have: Vec<_> =
            self.datapath.endpoint_entries()?.into_iter().filter(|(ip, _)| *ip == rec.ip).collect();
        found.extend(drift::endpoint_entries(&want, &have));
        let want6: Vec<_> = entries::endpoints6(std::slice::from_ref(&rec), self.ports.all(), &have)
            .into_iter()
            .map(|(ip6, _, info)| (ip6, info))
            .collect();
        let have6: Vec<_> = self
            .datapath
            .endpoint_entries6()?
            .into_iter()
            .filter(|(ip6, _)| want6.iter().any(|(w, _)| w == ip6))
            .collect();
        found.extend(drift::endpoint_entries6(&want6, &have6));

        let mut missing = differs;
        for p in ports {
            if !self.ports.of_endpoint(name).any(|r| publishes(r, p)) {
                missing.push(format!(
                    "port {}/{}: not published to {}:{}",
                    p.proto,
                    p.host_port,
                    rec.ip,
                    p.container_port.unwrap_or(p.host_port)
                ));
            }
        }
        for r in self.ports.of_endpoint(name) {
            if !ports.iter().any(|p| publishes(r, p)) {
                missing.push(format!(
                    "port {}/{}: published to {}:{}, which the runtime did not ask for",
                    r.proto, r.host_port, r.container_ip, r.container_port
                ));
            }
        }
        // Other endpoints' entries are theirs: only this endpoint's missing or wrong ones.
        let mine: Vec<PortRecord> = self.ports.of_endpoint(name).cloned().collect();
        found.extend(self.port_drift::<Ipv4>(&mine)?);
        found.extend(self.port_drift::<Ipv6>(&mine)?);
        Ok(found.iter().map(|d| format!("{}: {}", d.subject(), d.problem())).chain(missing).collect())
    }

    /// The entries of `recs` that family `A`'s table lacks or holds otherwise.
    fn port_drift<A: Family>(&mut self, recs: &[PortRecord]) -> Result<Vec<Drift>, AgentError>
    where
        PortKeyOf<A>: Pod,
        PortTargetOf<A>: Pod,
    {
        let want = super::reconcile::labelled_ports::<A>(recs);
        let have = self.datapath.port_entries::<A>()?;
        Ok(drift::port_entries(&want, &have)
            .into_iter()
            .filter(|d| matches!(d, Drift::PortEntryMissing { .. } | Drift::PortEntryDiffers { .. }))
            .collect())
    }
}

/// Does the published port `r` carry out the mapping `p` asks for?
fn publishes(r: &PortRecord, p: &PortSpec) -> bool {
    r.proto == p.proto
        && r.host_port == p.host_port
        && r.host_ip == p.host_ip
        && r.container_port == p.container_port.unwrap_or(p.host_port)
}
