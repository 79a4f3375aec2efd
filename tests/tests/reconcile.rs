//! Reconciliation: drift between the state directory and the kernel is found and
//! repaired in both directions, on request (`netpath reconcile`) and at agent start;
//! what netpath does not own is left alone.
use netpath_tests::{sh, Lab};
use serde_json::Value;

/// `netpath reconcile [--dry-run] -o json`: (exit success, repairs).
fn reconcile(lab: &Lab, dry_run: bool) -> (bool, Vec<Value>) {
    let mut args = vec!["reconcile", "-o", "json"];
    if dry_run {
        args.push("--dry-run");
    }
    let out = lab.netpath(&args);
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("reconcile output: {e}: {out:?}\nagent log:\n{}", lab.agent_log()));
    (out.status.success(), json["repairs"].as_array().unwrap().clone())
}

/// Does any repair mention all of `words` in its subject and problem?
fn found(repairs: &[Value], words: &[&str]) -> bool {
    repairs.iter().any(|r| {
        let text = format!("{} {}", r["subject"], r["problem"]);
        words.iter().all(|w| text.contains(w))
    })
}

fn endpoint_field(lab: &Lab, name: &str, field: &str) -> Value {
    let list: Value = serde_json::from_str(&lab.netpath_ok(&["endpoint", "list", "-o", "json"])).unwrap();
    list["endpoints"].as_array().unwrap().iter().find(|e| e["name"] == name).unwrap()[field].clone()
}

fn bytes(v: &[u8]) -> Vec<String> {
    v.iter().map(u8::to_string).collect()
}

#[test]
fn drift_is_repaired_both_ways_on_request() {
    let mut lab = Lab::new(3);
    lab.start_agent();
    let a = lab.add_endpoint("a", 0);
    let b = lab.add_endpoint("b", 1);
    let c = lab.add_endpoint("c", 2);
    lab.netpath_ok(&["port", "add", "8080", "b:80"]);
    let (ok, none) = reconcile(&lab, false);
    assert!(ok && none.is_empty(), "drift right after set-up: {none:?}");

    let veth_a = endpoint_field(&lab, "a", "host_ifname");
    let veth_c = endpoint_field(&lab, "c", "host_ifname");
    let index_a = endpoint_field(&lab, "a", "host_ifindex");
    let (n, c1) = (lab.node.name.clone(), lab.containers[1].name.clone());
    // Missing things: a's veth pair, b's address in its container, c's node route, the
    // published port's map entry, b's map entry.
    sh(&["ip", "-n", &n, "link", "del", veth_a.as_str().unwrap()]);
    sh(&["ip", "-n", &c1, "addr", "flush", "dev", "eth0"]);
    sh(&["ip", "-n", &n, "route", "del", &format!("{c}/32")]);
    let ports = lab.bpffs_dir.join("PORT_MAPS");
    let ports = ports.to_str().unwrap();
    let port_key = bytes(&[0, 0, 0, 0, 0x1f, 0x90, 6, 0]);
    let port_key: Vec<&str> = port_key.iter().map(String::as_str).collect();
    sh(&[&["bpftool", "map", "delete", "pinned", ports, "key"], &port_key[..]].concat());
    let endpoints = lab.bpffs_dir.join("ENDPOINTS");
    let endpoints = endpoints.to_str().unwrap();
    let b_key = bytes(&b.octets());
    let b_key: Vec<&str> = b_key.iter().map(String::as_str).collect();
    sh(&[&["bpftool", "map", "delete", "pinned", endpoints, "key"], &b_key[..]].concat());
    // Things this agent owns but does not want: a veth it marked for an endpoint it does
    // not have, one with its temporary name but no mark (it died before marking), a port
    // entry no record owns. And what it does not own: a foreign veth, one with another
    // alias, one marked by another agent, one marked by a build before agent ids (this
    // agent's id was made on an earlier start, so that one is not its upgrade's either),
    // another agent's temporary one.
    let id = lab.agent_id();
    let mine_unmarked = format!("np-{}-0ff", &id[..8]);
    let ghost = format!("netpath:{id}:ghost");
    for (name, alias) in [
        ("npstray0", Some(ghost.as_str())),
        (mine_unmarked.as_str(), None),
        ("other0", None),
        ("np00000000fe", Some("someone-else")),
        ("npother1", Some("netpath:0123456789abcdef:ghost")),
        ("npold0", Some("netpath:ghost")),
        ("np-01234567-001", None),
    ] {
        sh(&[
            "ip",
            "-n",
            &n,
            "link",
            "add",
            name,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{}p", &name[..name.len().min(13)]),
        ]);
        if let Some(alias) = alias {
            sh(&["ip", "-n", &n, "link", "set", name, "alias", alias]);
        }
    }
    let stray_key = bytes(&[0, 0, 0, 0, 0x27, 0x0f, 6, 0]);
    let stray_value = bytes(&[10, 77, 0, 99, 0, 80, 0, 0]);
    let mut args = vec!["bpftool", "map", "update", "pinned", ports, "key"];
    args.extend(stray_key.iter().map(String::as_str));
    args.push("value");
    args.extend(stray_value.iter().map(String::as_str));
    sh(&args);
    assert!(!lab.containers[0].ping(b, 1), "a reaches b with a's veth deleted");

    // A dry run reports every drift and changes nothing.
    let (ok, drift) = reconcile(&lab, true);
    assert!(!ok, "a dry run with drift must exit non-zero");
    for words in [
        &["endpoint a", "host veth", "gone"][..],
        &["endpoint b", "address"],
        &["endpoint c", "node route"],
        &["port tcp/8080", "no entry"],
        &[&format!("endpoint at {b}"), "no entry"],
        &["link npstray0", "ghost"],
        &[&format!("link {mine_unmarked}"), "before it was marked"],
        &["port 9999", "no port record"],
    ] {
        assert!(found(&drift, words), "dry run did not report {words:?}: {drift:#?}");
    }
    for foreign in ["other0", "np00000000fe", "npother1", "npold0", "np-01234567-001"] {
        assert!(!found(&drift, &[foreign]), "{foreign} taken for this agent's: {drift:#?}");
    }
    assert!(lab.node_links().contains(&"npstray0".to_string()), "a dry run changed links");
    assert_eq!(lab.map_len("PORT_MAPS"), 1, "a dry run changed PORT_MAPS");

    let (ok, repairs) = reconcile(&lab, false);
    assert!(ok, "repairs failed: {repairs:#?}\n{}", lab.agent_log());
    assert_eq!(repairs.len(), drift.len(), "repairs differ from the dry run: {repairs:#?}");
    // Everything works again, from the new veth on.
    assert_ne!(endpoint_field(&lab, "a", "host_ifindex"), index_a, "a's new veth not recorded");
    assert!(lab.containers[0].ping(b, 2), "a cannot reach b after the repair\n{}", lab.agent_log());
    assert!(lab.containers[0].ping(c, 2), "a cannot reach c after the repair");
    assert!(lab.containers[2].ping(a, 2), "c cannot reach a after the repair");
    assert!(lab.node.ping(c, 1), "the node cannot reach c: its route is not back");
    let links = lab.node_links();
    assert!(
        links.iter().any(|l| l == veth_a.as_str().unwrap())
            && links.iter().any(|l| l == veth_c.as_str().unwrap())
    );
    for stray in ["npstray0", mine_unmarked.as_str()] {
        assert!(!links.iter().any(|l| l == stray), "{stray} left: {links:?}");
    }
    for foreign in ["other0", "np00000000fe", "npother1", "npold0", "np-01234567-001"] {
        assert!(links.iter().any(|l| l == foreign), "{foreign} was not netpath's to delete: {links:?}");
    }
    assert_eq!(lab.map_len("PORT_MAPS"), 1, "PORT_MAPS not back to the one published port");
    assert_eq!(lab.map_len("ENDPOINTS"), 3);
    let (ok, none) = reconcile(&lab, false);
    assert!(ok && none.is_empty(), "drift left after the repair: {none:#?}");

    // A detached program is drift too (the pinned links removed, as a fault would).
    lab.detach_programs();
    let (ok, repairs) = reconcile(&lab, false);
    assert!(ok, "{repairs:#?}");
    assert!(found(&repairs, &["endpoint a", "not attached"]), "{repairs:#?}");
    assert!(found(&repairs, &["uplink uplink0", "not attached"]), "{repairs:#?}");
    assert!(found(&repairs, &["node-local access", "not attached"]), "{repairs:#?}");
    assert!(lab.containers[0].ping(b, 2), "no forwarding after re-attaching");
}

#[test]
fn agent_start_repairs_what_changed_while_it_was_down() {
    let mut lab = Lab::new(3);
    lab.start_agent();
    lab.add_endpoint("a", 0);
    let b = lab.add_endpoint("b", 1);
    lab.add_endpoint("c", 2);
    lab.netpath_ok(&["port", "add", "8080", "c:80"]);
    let veth_a = endpoint_field(&lab, "a", "host_ifname");
    lab.kill_agent();
    // While no agent runs: a's veth pair is deleted; c's container goes away for good.
    sh(&["ip", "-n", &lab.node.name, "link", "del", veth_a.as_str().unwrap()]);
    let gone = lab.containers.pop().unwrap();
    drop(gone);
    lab.start_agent();
    // a is back: re-created, not forgotten.
    assert!(lab.containers[0].ping(b, 2), "a not re-created at start\n{}", lab.agent_log());
    assert!(lab.node_links().iter().any(|l| l == veth_a.as_str().unwrap()));
    // c is forgotten, with its published port and map entries.
    let list: Value = serde_json::from_str(&lab.netpath_ok(&["endpoint", "list", "-o", "json"])).unwrap();
    let names: Vec<&str> =
        list["endpoints"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(lab.netpath_ok(&["port", "list"]).lines().all(|l| !l.contains("8080")));
    assert_eq!(lab.map_len("PORT_MAPS"), 0);
    assert_eq!(lab.map_len("ENDPOINTS"), 2);
    assert!(lab.agent_log().contains("host veth"), "the repair is not in the agent's log");
    let (ok, none) = reconcile(&lab, true);
    assert!(ok && none.is_empty(), "drift left after start: {none:#?}");
}
