//! Concurrent CLI calls: the agent serialises them, so parallel adds never hand out one
//! address twice, never lose an update of the state file, and a contested host port
//! goes to exactly one caller.
use std::collections::HashSet;

use netpath_tests::Lab;
use serde_json::Value;

const N: usize = 12;

#[test]
fn parallel_cli_calls_neither_lose_updates_nor_double_allocate() {
    let mut lab = Lab::new(N);
    lab.start_agent();
    let lab = &lab;
    // Every container added at once, each by its own CLI process.
    let outs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                s.spawn(move || {
                    let ns = lab.containers[i].path();
                    lab.netpath(&["endpoint", "add", &format!("c{i}"), "--netns", ns.to_str().unwrap()])
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, o) in outs.iter().enumerate() {
        assert!(o.status.success(), "c{i}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let list: Value = serde_json::from_str(&lab.netpath_ok(&["endpoint", "list", "-o", "json"])).unwrap();
    let eps = list["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), N, "{list}");
    let ips: HashSet<&str> = eps.iter().map(|e| e["ip"].as_str().unwrap()).collect();
    assert_eq!(ips.len(), N, "an address was handed out twice: {list}");
    // The state file, read back by a restarted agent, has every one of them.
    let state: Value = serde_json::from_str(&std::fs::read_to_string(lab.state_file()).unwrap()).unwrap();
    assert_eq!(state.as_array().map(Vec::len), Some(N), "{state}");

    // One host port wanted by every container at once: exactly one gets it.
    let outs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|i| s.spawn(move || lab.netpath(&["port", "add", "8080", &format!("c{i}:80")])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let won: Vec<usize> = (0..N).filter(|i| outs[*i].status.success()).collect();
    assert_eq!(won.len(), 1, "host port 8080 given to {won:?}");
    for o in outs.iter().filter(|o| !o.status.success()) {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("8080") && err.lines().count() == 1, "{err}");
    }
    let ports: Value = serde_json::from_str(&lab.netpath_ok(&["port", "list", "-o", "json"])).unwrap();
    assert_eq!(ports["ports"].as_array().unwrap().len(), 1, "{ports}");
}

#[test]
fn a_client_that_sends_nothing_does_not_stall_the_agent() {
    let mut lab = Lab::new(1);
    lab.start_agent();
    // Connected, silent, never closing: served one at a time, it would block everyone.
    let stuck = std::os::unix::net::UnixStream::connect(lab.work_dir.join("run/agent.sock")).unwrap();
    let ns = lab.containers[0].path();
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["60"]).arg(netpath_tests::netpath_bin()).args(["endpoint", "add", "a", "--netns"]).arg(&ns);
    lab.env_for(&mut cmd);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "stalled behind a silent client: {}", String::from_utf8_lossy(&out.stderr));
    drop(stuck);
}
