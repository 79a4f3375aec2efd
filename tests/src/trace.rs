//! `netpath trace -o json` run against a lab, as an operator runs it.
use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use crate::Lab;

/// A running `netpath trace`.
pub struct Trace {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
    err: BufReader<std::process::ChildStderr>,
}

/// Starts `netpath trace ARGS -o json` and waits until it has armed the filter.
pub fn start_trace(lab: &Lab, args: &[&str]) -> Trace {
    start(lab, &[args, &["-o", "json"][..]].concat())
}

/// Starts `netpath trace ARGS` and waits until it has armed the filter.
pub fn start(lab: &Lab, args: &[&str]) -> Trace {
    let mut cmd = Command::new(crate::netpath_bin());
    cmd.arg("trace").args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    lab.env_for(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("tracing"), "trace did not start: {line}");
    let out = BufReader::new(child.stdout.take().unwrap());
    Trace { child, out, err }
}

/// Waits for the trace to stop; its events, and checks its summary line.
pub fn events(t: Trace) -> Vec<serde_json::Value> {
    lines(t).iter().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Waits for the trace to stop; its output lines, and checks its summary line.
pub fn lines(t: Trace) -> Vec<String> {
    let Trace { mut child, out, err } = t;
    let evs: Vec<String> = out.lines().map(Result::unwrap).collect();
    let summary: Vec<String> = err.lines().map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "trace failed: {summary:?}");
    assert!(summary.iter().any(|l| l.contains(" lost")), "no summary: {summary:?}");
    evs
}
