//! The endpoint lifecycle as a container sees it: the seed's manual steps, done by the
//! agent through rtnetlink, atomically and idempotently.
use netpath_tests::Lab;

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn container_gets_eth0_address_and_default_route() {
    let mut lab = Lab::new(1);
    lab.start_agent();
    let ip = lab.add_endpoint("web", 0);
    let c = &lab.containers[0];
    let addrs = out(&c.exec(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"]));
    assert!(addrs.contains(&format!("{ip}/32")), "{addrs}");
    let routes = out(&c.exec(&["ip", "route"]));
    assert!(routes.contains("default via 10.77.0.1 dev eth0"), "{routes}");
    let lo = out(&c.exec(&["ip", "-o", "link", "show", "lo"]));
    assert!(lo.contains("UP"), "{lo}");
    // The gateway answers ARP without any bridge on the node.
    assert!(!lab.node_links().iter().any(|l| l.contains("br") || l == "docker0"));
    c.exec(&["ping", "-c", "1", "-W", "1", "10.77.0.1"]);
    let neigh = out(&c.exec(&["ip", "neigh", "show", "10.77.0.1"]));
    assert!(neigh.contains("lladdr"), "gateway not resolved: {neigh}");
}

#[test]
fn add_is_idempotent_and_del_removes_everything() {
    let mut lab = Lab::new(1);
    lab.start_agent();
    let links_before = lab.node_links();
    let ip = lab.add_endpoint("web", 0);
    let links_with = lab.node_links();
    assert_eq!(links_with.len(), links_before.len() + 1);
    let again = lab.add_endpoint("web", 0);
    assert_eq!(ip, again);
    assert_eq!(lab.node_links(), links_with, "second add changed the node");

    lab.netpath_ok(&["endpoint", "del", "web"]);
    assert_eq!(lab.node_links(), links_before);
    assert!(!lab.stats().has_endpoint("web"));
    let eth0 = lab.containers[0].exec(&["ip", "link", "show", "eth0"]);
    assert!(!eth0.status.success(), "eth0 left in the container");
    assert!(!std::fs::read_to_string(lab.state_file()).unwrap().contains("web"));
    // Deleting what is not there succeeds.
    lab.netpath_ok(&["endpoint", "del", "web"]);
}

#[test]
fn failed_adds_leave_nothing_behind_and_name_the_bad_value() {
    let mut lab = Lab::new(2);
    lab.start_agent();
    let ip = lab.add_endpoint("web", 0);
    let links = lab.node_links();
    let state = std::fs::read_to_string(lab.state_file()).unwrap();
    let c1 = lab.containers[1].path();
    let c1 = c1.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["endpoint", "add", "db", "--netns", "/run/netns/no-such-ns"], "/run/netns/no-such-ns"),
        (&["endpoint", "add", "db", "--netns", "/etc/hostname"], "/etc/hostname"),
        (&["endpoint", "add", "db", "--netns", c1, "--ip", &ip.to_string()], &ip.to_string()),
        (&["endpoint", "add", "db", "--netns", c1, "--ip", "172.17.0.2"], "172.17.0.2"),
        (&["endpoint", "add", "db", "--netns", c1, "--mtu", "20"], "20"),
    ];
    for (args, value) in cases {
        let o = lab.netpath(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
        assert!(err.contains(value), "{args:?}: error does not name {value}: {err}");
        assert_eq!(lab.node_links(), links, "{args:?} left a link");
        assert_eq!(std::fs::read_to_string(lab.state_file()).unwrap(), state, "{args:?} changed state");
    }
    // eth0 already taken inside the container: the veth creation is refused whole.
    assert!(lab.containers[1]
        .exec(&["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "x0"])
        .status
        .success());
    let o = lab.netpath(&["endpoint", "add", "db", "--netns", c1]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("eth0"));
    assert_eq!(lab.node_links(), links);
    assert!(!lab.stats().has_endpoint("db"));
}

#[test]
fn cli_without_agent_says_so() {
    let lab = Lab::new(1);
    let p = lab.containers[0].path();
    let o = lab.netpath(&["endpoint", "add", "web", "--netns", p.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no agent is listening"));
}
