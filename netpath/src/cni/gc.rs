//! CNI 1.1's GC: the runtime names the attachments still valid; the endpoints the plugin
//! made for any other are taken away, ports and all.
//!
//! One agent serves one CNI network (the conflist `netpath cni conflist` prints names
//! this agent's socket), so GC of the network collects every endpoint of the agent that
//! the plugin made, whatever the network's name. Endpoints made otherwise (`netpath
//! endpoint add`: no owner) are never the runtime's to collect.
use super::{
    endpoint_name,
    spec::{code, Attachment, CniError, NetConf},
    unexpected, Call,
};
use crate::{
    api::{Reply, Request},
    state::EndpointRecord,
};

pub(super) fn gc(call: &Call, conf: &NetConf) -> Result<(), CniError> {
    let valid = conf.valid_attachments()?;
    let endpoints = match call.send(&Request::EndpointList) {
        Ok(Reply::Endpoints { endpoints }) => endpoints,
        Ok(other) => return Err(unexpected(other)),
        Err(e) if e.code == code::AGENT_REFUSED && e.msg.contains("unknown variant") => {
            // Between an install and the agent's restart.
            return Err(CniError::new(
                code::TRY_AGAIN_LATER,
                "the running agent is older than this plugin and cannot list its endpoints; \
                 restart it (systemctl restart netpath)",
            )
            .details(e.msg));
        }
        Err(e) => return Err(e),
    };
    // As many as can go (the spec asks GC to carry on past a failure), then the failures.
    let mut failed: Vec<(String, CniError)> = Vec::new();
    for rec in stale(&endpoints, &valid) {
        // With the owner, as DEL sends it: an endpoint re-made meanwhile for another
        // container of the same short ID stays.
        let del = Request::EndpointDel { name: rec.name.clone(), owner: rec.owner.clone(), no_wait: false };
        match call.send(&del) {
            Ok(Reply::Deleted { .. }) => {}
            Ok(other) => failed.push((rec.name.clone(), unexpected(other))),
            Err(e) => failed.push((rec.name.clone(), e)),
        }
    }
    let Some((_, first)) = failed.first() else { return Ok(()) };
    let reasons: Vec<String> = failed.iter().map(|(name, e)| format!("{name}: {}", e.msg)).collect();
    Err(CniError::new(
        first.code,
        format!("GC could not remove {} stale endpoint(s): {}", failed.len(), reasons.join("; ")),
    )
    .details(first.details.clone()))
}

/// The endpoints the plugin made (an owner, and the name the plugin gives that owner's
/// interface) for an attachment not in `valid`.
fn stale<'a>(endpoints: &'a [EndpointRecord], valid: &[Attachment]) -> Vec<&'a EndpointRecord> {
    endpoints
        .iter()
        .filter(|rec| {
            let Some(owner) = rec.owner.as_deref() else { return false };
            if rec.name != endpoint_name(owner, &rec.ifname) {
                return false;
            }
            // By name, not by the recorded interface: the name is what one attachment
            // has and no other can take.
            !valid.iter().any(|a| a.container_id == owner && endpoint_name(owner, &a.ifname) == rec.name)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, ifname: &str, owner: Option<&str>) -> EndpointRecord {
        EndpointRecord {
            name: name.into(),
            mode: Default::default(),
            device: Default::default(),
            netns: "/run/netns/c".into(),
            ifname: ifname.into(),
            ip: "10.77.0.2".parse().unwrap(),
            gateway: "10.77.0.1".parse().unwrap(),
            ip6: None,
            mac: "0a:58:0a:4d:00:02".into(),
            mtu: 1500,
            host_ifname: "np0".into(),
            host_ifindex: 1,
            host_mac: "0e:00:00:00:00:01".into(),
            owner: owner.map(str::to_string),
            parent: None,
            ipvlan_mode: None,
            prefix: None,
        }
    }

    fn attachment(id: &str, ifname: &str) -> Attachment {
        Attachment { container_id: id.into(), ifname: ifname.into() }
    }

    const A: &str = "aaaaaaaaaaaa0001";
    const B: &str = "bbbbbbbbbbbb0002";

    #[test]
    fn only_the_plugins_endpoints_of_attachments_no_longer_valid_are_stale() {
        let endpoints = [
            rec("cni-aaaaaaaaaaaa", "eth0", Some(A)),
            rec("cni-aaaaaaaaaaaa-net1", "net1", Some(A)),
            rec("cni-bbbbbbbbbbbb", "eth0", Some(B)),
            // Made on the command line: no owner.
            rec("web", "eth0", None),
            rec("cni-cccccccccccc", "eth0", None),
            // An owner, but not a name the plugin gives it.
            rec("other", "eth0", Some(A)),
        ];
        let names = |valid: &[Attachment]| -> Vec<String> {
            stale(&endpoints, valid).into_iter().map(|r| r.name.clone()).collect()
        };
        assert_eq!(names(&[attachment(A, "eth0")]), ["cni-aaaaaaaaaaaa-net1", "cni-bbbbbbbbbbbb"]);
        assert_eq!(names(&[attachment(A, "net1"), attachment(B, "eth0")]), ["cni-aaaaaaaaaaaa"]);
        assert_eq!(names(&[]), ["cni-aaaaaaaaaaaa", "cni-aaaaaaaaaaaa-net1", "cni-bbbbbbbbbbbb"]);
        // Another container of the same short ID does not keep A's endpoint.
        let twin = format!("{}ffff", &A[..12]);
        assert_eq!(
            names(&[attachment(&twin, "eth0"), attachment(A, "net1"), attachment(B, "eth0")]),
            ["cni-aaaaaaaaaaaa"]
        );
    }

    #[test]
    fn an_interface_name_the_plugin_rewrote_is_matched_by_its_rewrite() {
        let endpoints = [rec("cni-aaaaaaaaaaaa-e_1", "e@1", Some(A))];
        assert!(stale(&endpoints, &[attachment(A, "e@1")]).is_empty());
        assert_eq!(stale(&endpoints, &[attachment(A, "eth0")]).len(), 1);
    }
}
