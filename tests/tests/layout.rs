//! Pins of an old layout that the agent may replace are moved aside, not deleted, until
//! the new datapath has loaded: a load that fails puts them back.
use std::path::Path;

use netpath::datapath::layout;

fn map_show(pin: &Path) -> String {
    netpath_tests::sh(&["bpftool", "-j", "map", "show", "pinned", pin.to_str().unwrap()])
}

#[test]
fn old_counters_come_back_when_the_load_fails_and_go_when_it_succeeds() {
    /// Removes the test's bpffs directory, also when an assertion fails.
    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let guard =
        Dir(netpath_tests::bpffs_dir(&format!("{}layout{}", netpath_tests::TEST_PREFIX, std::process::id())));
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

    let plan = layout::check(&dir, 1024).unwrap();
    assert_eq!(plan.replace, std::slice::from_ref(&pin));
    assert!(plan.migrate.is_empty());
    let aside = layout::set_aside(&plan).unwrap();
    assert!(!pin.exists(), "the old pin is still in the way");
    // The load fails here: dropping the guard restores the very same map.
    drop(aside);
    assert_eq!(map_show(&pin), before);

    // A load that succeeds replaces it with a map of this build's layout.
    // (Loading attaches nothing: no namespace is touched.)
    drop(netpath::datapath::Datapath::load(&dir, 1024).expect("load"));
    let after: serde_json::Value = serde_json::from_str(&map_show(&pin)).unwrap();
    assert_eq!(after["bytes_value"], 32, "{after}");
}
