//! Every developer workflow of netpath as a plain Rust command:
//! `cargo xtask test` (install what is missing, then run every test) and
//! `cargo xtask demo` (a throw-away lab showing the datapath at work).
mod bench;
mod demo;
mod install;
mod preflight;
mod setup;
mod test;
mod vm;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "netpath developer workflows")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the toolchain and tools netpath needs (idempotent).
    Setup,
    /// Install what is missing, build, and run every test (unit and integration, as root).
    Test {
        /// Only run tests whose name contains this (on the host kernel only).
        filter: Option<String>,
        /// Skip the runs on other kernels (Debian's 6.12, 6.1 and 5.10 under qemu).
        #[arg(long)]
        host_only: bool,
    },
    /// Build netpath and show it forwarding between two containers in a throw-away lab.
    Demo,
    /// Benchmark netpath against bridge + iptables and the plain-veth limit.
    Bench(bench::BenchArgs),
    /// Run the integration tests on other kernels under qemu.
    VmTest(vm::VmArgs),
    /// Install netpath on this machine: the binary, the CNI plugin, a systemd unit, a
    /// default config, completions and the man page (or --uninstall them).
    Install(install::InstallArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup => preflight::check().and_then(|()| setup::run()),
        Cmd::Test { filter, host_only } => test::run(filter.as_deref(), host_only),
        Cmd::Demo => demo::run(),
        Cmd::Bench(args) => bench::run(args),
        Cmd::VmTest(args) => vm::run(args),
        Cmd::Install(args) => install::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask has a parent").to_path_buf()
}

/// Builds the netpath binary (the eBPF object with it) and points the lab fixture at it.
fn build_netpath() -> anyhow::Result<()> {
    build_netpath_as(false)
}

/// [`build_netpath`], the release build when `release` (what a node runs: the
/// benchmark's control-plane figures are a user's).
fn build_netpath_as(release: bool) -> anyhow::Result<()> {
    let root = workspace_root();
    step(if release { "building netpath (release)" } else { "building netpath" });
    // `--bin`, not `-p`: features are unified over the same packages as the workspace's
    // own build, so this reuses that build instead of making a second netpath library
    // (and, through it, a second copy of every test binary: gigabytes, and minutes).
    // JSON messages on stdout (diagnostics still rendered on stderr): the build script's
    // output directory holds the eBPF object the benchmark's layout floor loads.
    let mut cmd = std::process::Command::new("cargo");
    cmd.current_dir(&root).args(["build", "--bin", "netpath", "--message-format=json-render-diagnostics"]);
    if release {
        cmd.arg("--release");
    }
    let out = cmd.stderr(std::process::Stdio::inherit()).output()?;
    if !out.status.success() {
        anyhow::bail!("build failed");
    }
    let profile = if release { "release" } else { "debug" };
    std::env::set_var("NETPATH_BIN", root.join("target").join(profile).join("netpath"));
    if let Some(dir) = build_script_out_dir(&String::from_utf8_lossy(&out.stdout), "netpath") {
        std::env::set_var(bench::FLOOR_OBJECT_ENV, std::path::Path::new(&dir).join("netpath"));
    }
    Ok(())
}

/// The OUT_DIR of package `name`'s build script, from cargo's JSON messages.
fn build_script_out_dir(messages: &str, name: &str) -> Option<String> {
    messages.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).find_map(|m| {
        let id = m["package_id"].as_str()?;
        // "path+file:///…/netpath#0.1.0" (or the older "netpath 0.1.0 (path+file:///…)").
        let ours = id.split('#').next().is_some_and(|p| p.ends_with(&format!("/{name}")))
            || id.starts_with(&format!("{name} "));
        (m["reason"] == "build-script-executed" && ours).then(|| m["out_dir"].as_str().map(String::from))?
    })
}

/// On Ctrl-C, removes the labs named with these prefixes, then exits.
fn interrupt_sweeps(prefixes: &'static [&'static str]) {
    let _ = ctrlc::set_handler(move || {
        eprintln!("\ninterrupted: removing the labs");
        for p in prefixes {
            netpath_tests::sweep(p);
        }
        std::process::exit(130);
    });
}

fn step(msg: &str) {
    println!("==> {msg}");
}
