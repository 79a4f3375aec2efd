//! `netpath apply -f` and `netpath export`: a node driven by a file, as an orchestrator
//! or a config-management tool drives it. Applied twice the file changes nothing the
//! second time; a file with an error changes nothing at all and names its line; drift
//! between the file and the node shows in --dry-run.
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use netpath_tests::{Lab, NODE_UPLINK_IP};

fn write(lab: &Lab, name: &str, text: &str) -> String {
    let path = lab.work_dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn declared(lab: &Lab, db_ns: usize, db_port: u16) -> String {
    format!(
        r#"# the node's containers
[[endpoints]]
name = "web"
netns = "{c0}"
ip = "10.77.0.10"

[[endpoints]]
name = "db"
netns = "{db}"

[[ports]]
host_port = 8080
endpoint = "web"
container_port = 80

[[ports]]
proto = "udp"
host_port = {db_port}
endpoint = "db"
"#,
        c0 = lab.containers[0].path().display(),
        db = lab.containers[db_ns].path().display(),
    )
}

fn refused(lab: &Lab, args: &[&str]) -> String {
    let o = lab.netpath(args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "{args:?} succeeded: {}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    err
}

#[test]
fn a_file_applied_twice_changes_nothing_the_second_time_and_a_bad_one_nothing_at_all() {
    let mut lab = Lab::new(3);
    lab.start_agent();
    let file = write(&lab, "node.toml", &declared(&lab, 1, 5432));
    let out = lab.netpath_ok(&["apply", "-f", &file]);
    for want in
        ["+ endpoint web", "+ endpoint db", "+ port tcp *:8080 -> web:80", "+ port udp *:5432 -> db:5432"]
    {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
    let web = Ipv4Addr::new(10, 77, 0, 10);
    netpath_tests::echo_server(&lab.containers[0], SocketAddrV4::new(web, 80));
    netpath_tests::tcp_echo_once_to(&lab.outside, SocketAddr::from((NODE_UPLINK_IP, 8080)));

    // Again: nothing to do, nothing changes.
    let (state, links) = (lab.state(), lab.node_links());
    let out = lab.netpath_ok(&["apply", "-f", &file]);
    assert!(out.contains("nothing to do") && !out.contains("+ ") && !out.contains("- "), "{out}");
    assert_eq!((lab.state(), lab.node_links()), (state.clone(), links.clone()));

    // What export prints is what apply takes, in both formats: nothing to do.
    for (fmt, name) in [("toml", "export.toml"), ("json", "export.json")] {
        let exported = write(&lab, name, &lab.netpath_ok(&["export", "-o", fmt]));
        let out = lab.netpath_ok(&["apply", "-f", &exported]);
        assert!(out.contains("nothing to do"), "{fmt}: {out}");
    }

    // Bad files: refused naming the line of the fault, and nothing at all changed,
    // although the same file also changes valid things (db's port).
    let good = declared(&lab, 1, 5433);
    let undeclared = good.clone() + "\n[[ports]]\nhost_port = 9090\nendpoint = \"nope\"\n";
    let line = undeclared.lines().count() - 2;
    let err = refused(&lab, &["apply", "-f", &write(&lab, "bad1.toml", &undeclared)]);
    assert!(err.contains(&format!("bad1.toml:{line}:")) && err.contains("\"nope\""), "{err}");
    let twice = good.replace("name = \"db\"", "name = \"web\"");
    let err = refused(&lab, &["apply", "-f", &write(&lab, "bad2.toml", &twice)]);
    assert!(err.contains("bad2.toml:7:") && err.contains("declared twice"), "{err}");
    let taken_ip = good.replace("name = \"db\"", "name = \"db\"\nip = \"10.77.0.10\"");
    let err = refused(&lab, &["apply", "-f", &write(&lab, "bad3.toml", &taken_ip)]);
    assert!(err.contains("bad3.toml:7:") && err.contains("10.77.0.10"), "{err}");
    let no_ns = good.replace(&lab.containers[1].path().display().to_string(), "/run/netns/no-such-ns");
    let err = refused(&lab, &["apply", "-f", &write(&lab, "bad4.toml", &no_ns)]);
    assert!(err.contains("bad4.toml:7:") && err.contains("/run/netns/no-such-ns"), "{err}");
    let json = "{\n  \"endpoints\": [\n    {\"name\": \"web\",\n     \"netns\": 7}\n  ]\n}\n";
    let err = refused(&lab, &["apply", "-f", &write(&lab, "bad5.json", json)]);
    assert!(err.contains("bad5.json:4:") && err.contains("invalid type"), "{err}");
    let err = refused(
        &lab,
        &["apply", "-f", &write(&lab, "bad6.toml", "[[endpoints]]\nname = \"x\"\nnetnz = 1\n")],
    );
    assert!(err.contains("bad6.toml:") && err.contains("netnz"), "{err}");
    assert_eq!((lab.state(), lab.node_links()), (state, links), "a refused file changed the node");

    // Drift: an endpoint added by hand, a port changed. --dry-run shows it and changes
    // nothing; apply puts the file's state back.
    lab.netpath_ok(&["endpoint", "add", "extra", "--netns", lab.containers[2].path().to_str().unwrap()]);
    lab.netpath_ok(&["port", "del", "8080"]);
    lab.netpath_ok(&["port", "add", "8080", "web:81"]);
    let drift = lab.state();
    let out = lab.netpath_ok(&["apply", "--dry-run", "-f", &file]);
    for want in ["- endpoint extra", "- port tcp *:8080 -> web:81", "+ port tcp *:8080 -> web:80", "dry run"]
    {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
    assert_eq!(lab.state(), drift, "--dry-run changed the node");
    lab.netpath_ok(&["apply", "-f", &file]);
    assert!(!lab.state().contains("\"extra\""), "{}", lab.state());
    netpath_tests::tcp_echo_once_to(&lab.outside, SocketAddr::from((NODE_UPLINK_IP, 8080)));

    // db moves to another namespace: replaced, keeping its address and its port.
    let before: serde_json::Value =
        serde_json::from_str(&lab.netpath_ok(&["endpoint", "list", "-o", "json"])).unwrap();
    let db_ip = |v: &serde_json::Value| {
        v["endpoints"].as_array().unwrap().iter().find(|e| e["name"] == "db").unwrap()["ip"].clone()
    };
    let moved = write(&lab, "moved.toml", &declared(&lab, 2, 5432));
    let out = lab.netpath_ok(&["apply", "-f", &moved]);
    assert!(out.contains("~ endpoint db") && !out.contains("port udp"), "{out}");
    let after: serde_json::Value =
        serde_json::from_str(&lab.netpath_ok(&["endpoint", "list", "-o", "json"])).unwrap();
    assert_eq!(db_ip(&before), db_ip(&after));
    let addr = lab.containers[2].exec(&["ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(String::from_utf8_lossy(&addr.stdout).contains(db_ip(&after).as_str().unwrap()), "{addr:?}");
    assert!(lab.netpath_ok(&["port", "list"]).contains("5432"));

    // A runtime's endpoint (added through the CNI path, with an owner) publishing 9443:
    // apply neither lists nor removes it, and a file that declares 9443 for one of its
    // own endpoints is refused on that line.
    let req = serde_json::json!({
        "op": "endpoint-add", "name": "cni-c", "netns": lab.containers[1].path(), "ifname": "eth1",
        "ip": null, "mac": null, "mtu": null, "owner": "4f1c0ffee",
        "ports": [{"proto": "tcp", "host_port": 9443, "host_ip": null, "endpoint": "cni-c", "container_port": 443}],
    });
    let reply = lab.request(&req);
    assert!(reply.contains("\"endpoint\""), "{reply}");
    let out = lab.netpath_ok(&["apply", "-f", &moved]);
    assert!(out.contains("nothing to do"), "{out}");
    assert!(lab.state().contains("cni-c"));
    let clash = declared(&lab, 2, 5432) + "\n[[ports]]\nhost_port = 9443\nendpoint = \"web\"\n";
    let line = clash.lines().count() - 2;
    let err = refused(&lab, &["apply", "-f", &write(&lab, "bad7.toml", &clash)]);
    assert!(err.contains(&format!("bad7.toml:{line}:")) && err.contains("9443"), "{err}");
    lab.stop_agent();
}

/// Three faults a first review found: an endpoint left to choose its address was built
/// before one naming the address it would take; a port for every address declared
/// beside the same port for one address passed the checks and failed half way; and a
/// failure half way said "nothing was changed".
#[test]
fn addresses_chosen_are_kept_overlapping_ports_are_refused_and_a_failure_half_way_is_undone() {
    let mut lab = Lab::new(3);
    lab.start_agent();
    let ns = |i: usize| lab.containers[i].path().display().to_string();
    // The first free address is 10.77.0.2 (.1 is the gateway): "a", first in the file
    // and free to choose, must not take it from "b".
    let two = format!(
        "[[endpoints]]\nname = \"a\"\nnetns = \"{}\"\n\n[[endpoints]]\nname = \"b\"\nnetns = \"{}\"\nip = \"10.77.0.2\"\n",
        ns(0),
        ns(1)
    );
    let out = lab.netpath_ok(&["apply", "-f", &write(&lab, "two.toml", &two)]);
    assert!(out.contains("2 change(s) applied"), "{out}");
    let list: serde_json::Value =
        serde_json::from_str(&lab.netpath_ok(&["endpoint", "list", "-o", "json"])).unwrap();
    let ip_of = |v: &serde_json::Value, n: &str| {
        v["endpoints"].as_array().unwrap().iter().find(|e| e["name"] == n).map(|e| e["ip"].clone())
    };
    assert_eq!(ip_of(&list, "b"), Some(serde_json::json!("10.77.0.2")), "{list}");
    assert!(ip_of(&list, "a").is_some_and(|ip| ip != "10.77.0.2"), "{list}");

    // 8080 for every address and 8080 on the node address claim the same packets.
    let overlap = format!(
        "{two}\n[[ports]]\nhost_port = 8080\nendpoint = \"a\"\n\n[[ports]]\nhost_ip = \"{NODE_UPLINK_IP}\"\nhost_port = 8080\nendpoint = \"b\"\n"
    );
    let line = overlap.lines().count() - 3;
    let (state, links) = (lab.state(), lab.node_links());
    let err = refused(&lab, &["apply", "-f", &write(&lab, "overlap.toml", &overlap)]);
    assert!(
        err.contains(&format!("overlap.toml:{line}:"))
            && err.contains("declared twice")
            && err.contains("*:8080"),
        "{err}"
    );
    assert_eq!((lab.state(), lab.node_links()), (state.clone(), links.clone()));

    // The kernel refuses what the checks allowed: "c" is to be eth1 in a namespace that
    // has an eth1 already. "a" goes first (the file drops it), then "c" fails: "a" comes
    // back, and the error says the node was put back, on c's line.
    let busy =
        lab.containers[2].exec(&["ip", "link", "add", "eth1", "type", "veth", "peer", "name", "eth1-peer"]);
    assert!(busy.status.success(), "{busy:?}");
    let failing = format!(
        "[[endpoints]]\nname = \"b\"\nnetns = \"{}\"\nip = \"10.77.0.2\"\n\n[[endpoints]]\nname = \"c\"\nnetns = \"{}\"\nifname = \"eth1\"\n",
        ns(1),
        ns(2)
    );
    let err = refused(&lab, &["apply", "-f", &write(&lab, "failing.toml", &failing)]);
    assert!(
        err.contains("failing.toml:6:")
            && err.contains("eth1")
            && err.contains("put the node back as it was"),
        "{err}"
    );
    assert!(!err.contains("nothing was changed"), "{err}");
    let after: serde_json::Value =
        serde_json::from_str(&lab.netpath_ok(&["endpoint", "list", "-o", "json"])).unwrap();
    assert_eq!(ip_of(&after, "a"), ip_of(&list, "a"), "a was not built again: {after}");
    assert_eq!(ip_of(&after, "c"), None, "{after}");
    let drift: serde_json::Value =
        serde_json::from_str(&lab.netpath_ok(&["reconcile", "--dry-run", "-o", "json"])).unwrap();
    assert_eq!(lab.node_links().len(), links.len(), "{drift}");
    lab.stop_agent();
}
