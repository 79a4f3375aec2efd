//! Pins of an old layout that the agent may replace are moved aside, not deleted, until
//! the new datapath has loaded: a load that fails puts them back.
use std::path::{Path, PathBuf};

use netpath::datapath::{family::Ipv6, layout, Datapath};
use netpath_common::{conntrack::TCP_ESTABLISHED, maps, Ip6, SockOrigin6, SockRevKey6};

fn map_show(pin: &Path) -> String {
    netpath_tests::sh(&["bpftool", "-j", "map", "show", "pinned", pin.to_str().unwrap()])
}

/// A bpffs directory of the test's own, removed also when an assertion fails.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let prefix = netpath_tests::TEST_PREFIX;
        Dir(netpath_tests::bpffs_dir(&format!("{prefix}{}{name}", std::process::id())))
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn old_counters_come_back_when_the_load_fails_and_go_when_it_succeeds() {
    let guard = Dir::new("layout");
    let dir = guard.0.clone();
    let pin = dir.join("REASON_STATS");
    let p = pin.to_str().unwrap();
    netpath_tests::sh(&[
        "bpftool",
        "map",
        "create",
        p,
        "type",
        "percpu_array",
        "key",
        "4",
        "value",
        "16",
        "entries",
        "3",
        "name",
        "REASON_STATS",
    ]);
    let before = map_show(&pin);

    let plan = layout::check(&dir, 1024, true).unwrap();
    assert_eq!(plan.replace, std::slice::from_ref(&pin));
    assert!(plan.migrate.is_empty());
    let aside = layout::set_aside(&plan).unwrap();
    assert!(!pin.exists(), "the old pin is still in the way");
    // The load fails here: dropping the guard restores the very same map.
    drop(aside);
    assert_eq!(map_show(&pin), before);

    // A load that succeeds replaces it with a map of this build's layout.
    // (Loading attaches nothing: no namespace is touched.)
    drop(Datapath::load(&dir, 1024).expect("load"));
    let after: serde_json::Value = serde_json::from_str(&map_show(&pin)).unwrap();
    assert_eq!(after["bytes_value"], 32, "{after}");
}

/// A node without IPv6 keeps its IPv6 tables as small as the machine allows; starting
/// it with IPv6 grows them to the conntrack size asked for, a migration like any other
/// resize: the flows and the node-local redirections they hold come along (the closed
/// flows' record is disposable and replaced), and back again when IPv6 is turned off.
#[test]
fn the_ipv6_tables_follow_ipv6_on_the_node_and_keep_their_flows() {
    let guard = Dir::new("layout6");
    let dir = guard.0.clone();
    let max_entries = |name: &str| -> u64 {
        let show: serde_json::Value = serde_json::from_str(&map_show(&dir.join(name))).unwrap();
        show["max_entries"].as_u64().unwrap()
    };
    let small = u64::from(layout::ct_min_entries());
    // Larger than the smallest table, and its new flows' share too, whatever the CPUs.
    let ct_entries = layout::ct_min_entries() * 8;
    let sized = |ipv6: bool| {
        let (ct, new) = (u64::from(ct_entries), u64::from(layout::new_flow_entries(ct_entries)));
        let (rev, closed) = (u64::from(maps::NODE_LOCAL_REV_ENTRIES), u64::from(maps::SNAT_CLOSED_ENTRIES));
        if ipv6 {
            [ct, new, rev, closed]
        } else {
            [small; 4]
        }
    };
    let tables = [maps::CONNTRACK6, maps::CONNTRACK6_NEW, maps::NODE_LOCAL_REV6, maps::SNAT_CLOSED6];

    drop(Datapath::load_with(&dir, ct_entries, false, None).expect("load without IPv6"));
    assert_eq!(tables.map(max_entries), sized(false));
    assert_eq!(max_entries(maps::CONNTRACK), u64::from(ct_entries), "IPv4's table is as asked");
    assert_eq!(layout::check(&dir, ct_entries, false).unwrap(), layout::Plan::default());

    // An assured flow and a new one in the small tables.
    let mut addr = [0xfd, 0, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let client = Ip6(addr);
    addr[15] = 1;
    let node = Ip6(addr);
    let server = Ip6([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    let now = netpath::datapath::monotonic_ns();
    let assured =
        netpath_tests::snat_pair(6, (client, 40000), (server, 443), (node, 61000), TCP_ESTABLISHED, now);
    let new = netpath_tests::snat_pair(17, (client, 40001), (server, 53), (node, 61001), 0, now);
    for (table, pair) in [(maps::CONNTRACK6, &assured), (maps::CONNTRACK6_NEW, &new)] {
        for (key, entry) in pair {
            netpath_tests::map_update(&dir.join(table), key, entry);
        }
    }
    // A node process's socket sent to a container by connect6.
    let rev = SockRevKey6 { cookie: 7, ip: client, port: 80u16.to_be_bytes(), _pad: [0; 6] };
    let origin = SockOrigin6 { ip: node, port: 8080u16.to_be_bytes(), _pad: [0; 2] };
    netpath_tests::map_update(&dir.join(maps::NODE_LOCAL_REV6), &rev, &origin);

    for ipv6 in [true, false] {
        let plan = layout::check(&dir, ct_entries, ipv6).unwrap();
        let pins = |names: &[&str]| names.iter().map(|n| dir.join(n)).collect::<Vec<_>>();
        assert_eq!(plan.migrate, pins(&tables[..3]), "IPv6 {ipv6}: the flow tables are migrated");
        assert_eq!(plan.replace, pins(&tables[3..]), "IPv6 {ipv6}: the closed flows' table is replaced");
        let mut dp = Datapath::load_with(&dir, ct_entries, ipv6, None).expect("load");
        assert_eq!(tables.map(max_entries), sized(ipv6), "IPv6 {ipv6}: sizes");
        for (key, entry) in &assured {
            assert_eq!(dp.conntrack_get::<Ipv6>(key).unwrap(), [Some(*entry), None], "IPv6 {ipv6}: assured");
        }
        for (key, entry) in &new {
            assert_eq!(dp.conntrack_get::<Ipv6>(key).unwrap(), [None, Some(*entry)], "IPv6 {ipv6}: new");
        }
        let redirects = netpath::datapath::Inspector::new(&dir).node_local_redirects6().unwrap();
        assert_eq!(redirects, [(rev, origin)], "IPv6 {ipv6}: node-local redirections");
        drop(dp);
        assert_eq!(layout::check(&dir, ct_entries, ipv6).unwrap(), layout::Plan::default());
    }
}
