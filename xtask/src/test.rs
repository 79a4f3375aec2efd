//! `cargo xtask test`: setup, build, then every test of the workspace, unit and
//! integration, the benchmark's smoke run, and the integration suite again on Debian's
//! 6.12, 6.1 and 5.10 kernels under qemu, booted in parallel (`--host-only` skips those).
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::{step, workspace_root};

pub fn run(filter: Option<&str>, host_only: bool) -> Result<()> {
    crate::preflight::check()?;
    crate::setup::run()?;
    let root = workspace_root();

    step("building netpath (the eBPF object is built by netpath's build.rs)");
    let status = Command::new("cargo")
        .current_dir(&root)
        .args(["build", "--all-targets"])
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("build failed");
    }

    step("lint: cargo fmt --check, cargo clippy -D warnings");
    let fmt = Command::new("cargo").current_dir(&root).args(["fmt", "--all", "--", "--check"]).status()?;
    if !fmt.success() {
        bail!("code is not formatted: run `cargo fmt --all`");
    }
    let clippy = Command::new("cargo")
        .current_dir(&root)
        .args(["clippy", "--all-targets", "--", "-D", "warnings"])
        .status()?;
    if !clippy.success() {
        bail!("clippy found problems (see above)");
    }

    let swept = netpath_tests::sweep(netpath_tests::TEST_PREFIX);
    if swept > 0 {
        step(&format!("removed {swept} leftovers of an interrupted test run"));
    }

    let bin = root.join("target/debug/netpath");
    let nextest =
        Command::new("cargo").args(["nextest", "--version"]).output().is_ok_and(|o| o.status.success());
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&root).env("NETPATH_BIN", &bin);
    if nextest {
        step("running every test (cargo nextest)");
        // A failing test must not hide the others' results.
        cmd.args(["nextest", "run", "--no-fail-fast"]);
        if let Some(f) = filter {
            cmd.arg(f);
        }
    } else {
        step("running every test (cargo test; cargo-nextest not found)");
        cmd.args(["test", "--no-fail-fast"]);
        if let Some(f) = filter {
            cmd.arg("--").arg(f);
        }
    }
    let status = cmd.status().context("cannot run the test runner")?;
    if !status.success() {
        bail!("tests failed");
    }
    if filter.is_none() {
        // The benchmark's smoke run: every measurement must produce a number (no ratio
        // is judged here; these machines are noisy).
        step("benchmark smoke run (cargo xtask bench --quick)");
        crate::bench::run(crate::bench::BenchArgs {
            quick: true,
            out: root.join("target/bench-smoke"),
            only: None,
            cross_node: false,
            control_plane: false,
            observe: false,
            vm: None,
            in_guest: false,
            reps: None,
        })?;
        if !host_only {
            // The same integration suite on the kernels users run (TCX only from 6.6,
            // older verifiers, missing helpers), the three guests at once.
            step("the integration suite on Debian's 6.12, 6.1 and 5.10 kernels, in parallel (cargo xtask vm-test)");
            crate::vm::run(crate::vm::VmArgs::all_kernels())?;
        }
    }
    Ok(())
}
