//! Crash safety of the state database: the agent is killed (SIGKILL, as abruptly as a
//! power cut stops it) at every step of a state transaction, in the middle of each kind
//! of change, and of the migration from an older agent's JSON files. The restarted agent
//! finds either the old or the new state, never a mix, and makes the kernel match
//! whichever it finds.
use netpath::state::TX_STEPS;
use netpath_tests::Lab;
use serde_json::Value;

/// A change made through the CLI while the agent is set to die in a state write.
struct Change {
    /// What the transaction changes, as NETPATH_CRASH_AT names it.
    file: &'static str,
    args: &'static [&'static str],
}

fn endpoints(lab: &Lab) -> Vec<String> {
    let list: Value = serde_json::from_str(&lab.netpath_ok(&["endpoint", "list", "-o", "json"]))
        .expect("endpoint list: the state file must parse");
    list["endpoints"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()).collect()
}

fn ports(lab: &Lab) -> usize {
    let list: Value = serde_json::from_str(&lab.netpath_ok(&["port", "list", "-o", "json"]))
        .expect("port list: the state file must parse");
    list["ports"].as_array().unwrap().len()
}

/// Starts from endpoint a (container 0) with tcp/8080 published, container 1 free;
/// kills the agent at `step` of writing `change.file` while it carries out the change;
/// restarts it and returns the lab for the checks.
fn crash_during(change: &Change, step: &str) -> Lab {
    let (mut lab, _) = Lab::setup(2).endpoints(&["a"]).port(&["8080", "a:80"]).build();
    lab.stop_agent();
    lab.agent_env = vec![("NETPATH_CRASH_AT".into(), format!("{}:{step}", change.file))];
    lab.start_agent();
    let c1 = lab.containers[1].path();
    let args: Vec<&str> =
        change.args.iter().map(|a| if *a == "C1" { c1.to_str().unwrap() } else { *a }).collect();
    let out = lab.netpath(&args);
    assert!(!out.status.success(), "{args:?} at {step}: the agent did not die: {out:?}");
    lab.kill_agent();
    lab.agent_env.clear();
    lab.start_agent();
    // Whatever state it found, the kernel now matches it.
    let drift = lab.netpath(&["reconcile", "--dry-run"]);
    assert!(drift.status.success(), "{args:?} at {step}: drift after restart: {drift:?}");
    lab
}

/// The write steps to crash at: all of them, or the subset in NETPATH_CRASH_STEPS (the
/// VM runs, where every agent start costs seconds of verifier time under emulation).
fn steps() -> Vec<&'static str> {
    let Ok(only) = std::env::var("NETPATH_CRASH_STEPS") else { return TX_STEPS.to_vec() };
    let steps: Vec<&'static str> =
        TX_STEPS.iter().copied().filter(|s| only.split(',').any(|o| o == *s)).collect();
    assert!(!steps.is_empty(), "NETPATH_CRASH_STEPS={only} names none of {TX_STEPS:?}");
    eprintln!("crash steps: {steps:?} of {TX_STEPS:?}");
    steps
}

/// True when the crash came after the new state was in place.
fn committed(step: &str) -> bool {
    step == "committed"
}

#[test]
fn a_crash_while_adding_an_endpoint_keeps_old_or_new_state() {
    let change = Change { file: "endpoints", args: &["endpoint", "add", "b", "--netns", "C1"] };
    for step in steps() {
        let lab = crash_during(&change, step);
        if committed(step) {
            assert_eq!(endpoints(&lab), ["a", "b"], "at {step}");
            assert_eq!(lab.map_len("ENDPOINTS"), 2, "at {step}");
            let b: std::net::Ipv4Addr = "10.77.0.3".parse().unwrap();
            assert!(lab.containers[0].ping(b, 1), "at {step}: b unreachable\n{}", lab.agent_log());
        } else {
            assert_eq!(endpoints(&lab), ["a"], "at {step}");
            // The veth built before the crash is gone again, with its map entry.
            let np = lab.node_links().iter().filter(|l| l.starts_with("np")).count();
            assert_eq!(np, 1, "at {step}: {:?}", lab.node_links());
            assert_eq!(lab.map_len("ENDPOINTS"), 1, "at {step}");
            assert!(lab.containers[1].exec(&["ip", "link", "show", "eth0"]).stdout.is_empty(), "at {step}");
        }
    }
}

#[test]
fn a_crash_while_deleting_an_endpoint_keeps_old_or_new_state() {
    let change = Change { file: "endpoints", args: &["endpoint", "del", "a"] };
    for step in steps() {
        let lab = crash_during(&change, step);
        let np = lab.node_links().iter().filter(|l| l.starts_with("np")).count();
        if committed(step) {
            assert!(endpoints(&lab).is_empty(), "at {step}");
            assert_eq!((np, lab.map_len("ENDPOINTS"), lab.map_len("PORT_MAPS")), (0, 0, 0), "at {step}");
        } else {
            assert_eq!(endpoints(&lab), ["a"], "at {step}");
            assert_eq!((np, lab.map_len("ENDPOINTS")), (1, 1), "at {step}");
            assert!(lab.node.ping("10.77.0.2".parse().unwrap(), 1), "at {step}: a unreachable");
        }
    }
}

#[test]
fn a_crash_while_publishing_a_port_keeps_old_or_new_state() {
    let change = Change { file: "ports", args: &["port", "add", "9090", "a:90"] };
    for step in steps() {
        let lab = crash_during(&change, step);
        let want = if committed(step) { 2 } else { 1 };
        assert_eq!(ports(&lab), want, "at {step}");
        assert_eq!(lab.map_len("PORT_MAPS"), want, "at {step}");
    }
}

/// An older agent's JSON files, taken over by the first agent with the database: killed
/// at every step of the migration, the next start still finds the same endpoints and
/// ports, the kernel matches them, and the files are renamed once it is done.
#[test]
fn a_crash_while_migrating_the_json_files_keeps_the_state() {
    let (mut lab, _) = Lab::setup(1).endpoints(&["a"]).port(&["8080", "a:80"]).build();
    lab.stop_agent();
    // Turn the lab's state back into what an older agent left: the two JSON files.
    let state = lab.state_dir();
    let paths = netpath::paths::Paths {
        bpffs_dir: lab.bpffs_dir.clone(),
        run_dir: lab.work_dir.join("run"),
        state_dir: state.clone(),
    };
    let (eps, published) = netpath::state::read(&paths).unwrap();
    for f in ["state.db", "state.db-wal", "state.db-shm"] {
        let _ = std::fs::remove_file(state.join(f));
    }
    std::fs::write(paths.state_file(), serde_json::to_vec_pretty(&eps).unwrap()).unwrap();
    std::fs::write(paths.ports_file(), serde_json::to_vec_pretty(&published).unwrap()).unwrap();
    for step in steps() {
        lab.agent_env = vec![("NETPATH_CRASH_AT".into(), format!("migrate:{step}"))];
        assert!(lab.try_start_agent(&[]).is_err(), "at {step}: the agent did not die");
        lab.kill_agent();
        lab.agent_env.clear();
        lab.start_agent();
        assert_eq!(endpoints(&lab), ["a"], "at {step}");
        assert_eq!(ports(&lab), 1, "at {step}");
        assert!(!paths.state_file().exists() && !paths.ports_file().exists(), "at {step}: JSON files left");
        let drift = lab.netpath(&["reconcile", "--dry-run"]);
        assert!(drift.status.success(), "at {step}: drift after restart: {drift:?}");
        // The next step starts from the JSON files again.
        lab.stop_agent();
        for f in ["endpoints.json", "ports.json"] {
            std::fs::rename(state.join(format!("{f}.migrated")), state.join(f)).unwrap();
        }
        for f in ["state.db", "state.db-wal", "state.db-shm"] {
            let _ = std::fs::remove_file(state.join(f));
        }
    }
}
