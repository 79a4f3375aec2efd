//! Installs what building and testing netpath needs, checking before installing so a
//! second run does nothing. Versions follow shared/TOOLCHAIN.md.
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};

use crate::step;

/// LLVM 22 for bpf-linker (same major as rustc's LLVM), and the tools tests use.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "iproute2",
    // The tests' tools for building the world around netpath: ping, bpftool (to corrupt
    // a map entry), iptables (FORWARD policy DROP in the node namespace).
    "iputils-ping",
    "bpftool",
    "iptables",
    // Kernel modules as Debian packages them (xz, zstd, gzip) and depmod: the VM
    // runner's unit tests read them, also in `cargo xtask test --host-only`.
    "xz-utils",
    "zstd",
    "gzip",
    "kmod",
    // etcd-client compiles etcd's protobuf definitions at build time, which import
    // protobuf's well-known types (google/protobuf/*.proto, in libprotobuf-dev: only a
    // recommendation of protobuf-compiler, which this install leaves out).
    "protobuf-compiler",
    "libprotobuf-dev",
    // The real client of the CNI plugin: podman (its CNI backend), with runc (crun
    // refuses this machine kind's hybrid cgroups), and a static busybox to build the
    // tests' local image from (no registry is reachable).
    "podman",
    "runc",
    "busybox-static",
];
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> Result<()> {
    apt()?;
    etcd()?;
    rust_src()?;
    bpf_linker()?;
    crate::preflight::check_net()?;
    step("setup complete");
    Ok(())
}

/// What only the benchmark needs: conntrack (flushing netfilter's table between tests),
/// the CNI reference plugins (the control-plane comparison), iperf3 (cross-check), a
/// font for the charts.
pub fn bench_tools() -> Result<()> {
    install_missing(
        &["conntrack", "containernetworking-plugins", "iperf3", "sockperf", "fonts-dejavu-core"],
        "benchmark tools",
    )
}

/// What booting other kernels needs: qemu, a static busybox for the guest's userland,
/// cpio for the initramfs, xz, zstd and gzip for compressed kernel modules, depmod (kmod)
/// for the modules.dep that kernel packages leave to their install.
pub fn vm_tools() -> Result<()> {
    install_missing(
        &["qemu-system-x86", "busybox-static", "cpio", "xz-utils", "zstd", "gzip", "kmod"],
        "VM tools",
    )
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn run_visible(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn apt() -> Result<()> {
    install_missing(APT_PACKAGES, "apt packages")
}

fn install_missing(packages: &[&str], what: &str) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        step(&format!("{what}: all present"));
        return Ok(());
    }
    step(&format!("{what}: installing {}", missing.join(" ")));
    run_visible(Command::new("apt-get").args(["update", "-q"]), "apt-get update")?;
    run_visible(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install",
    )
}

/// Where `etcd` for the cluster tests, the demo and the benchmark is unpacked.
pub fn etcd_dir() -> std::path::PathBuf {
    crate::workspace_root().join("target/tools/etcd")
}

/// etcd from Debian's etcd-server package, unpacked into target/tools rather than
/// installed: installing it would start a machine-wide etcd service on the host's
/// network, which netpath's tests never touch. The labs start their own, inside their
/// namespaces.
fn etcd() -> Result<()> {
    let dir = etcd_dir();
    if dir.join("usr/bin/etcd").exists() {
        step("etcd: present in target/tools/etcd");
        return Ok(());
    }
    step("etcd: unpacking Debian's etcd-server into target/tools/etcd");
    let download = dir.with_extension("download");
    std::fs::create_dir_all(&download)?;
    let fetch =
        || Command::new("apt-get").args(["download", "-q", "etcd-server"]).current_dir(&download).status();
    if !fetch().is_ok_and(|s| s.success()) {
        // A fresh machine's package lists may not be there yet.
        run_visible(Command::new("apt-get").args(["update", "-q"]), "apt-get update")?;
        run_visible(
            Command::new("apt-get").args(["download", "-q", "etcd-server"]).current_dir(&download),
            "apt-get download etcd-server",
        )?;
    }
    let deb = std::fs::read_dir(&download)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download etcd-server left no .deb")?;
    let unpacked = dir.with_extension("unpacking");
    let _ = std::fs::remove_dir_all(&unpacked);
    run_visible(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked), "dpkg-deb -x etcd-server")?;
    std::fs::rename(&unpacked, &dir)?;
    std::fs::remove_dir_all(&download)?;
    Ok(())
}

fn rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .context("cannot run rustup")?;
    if !out.status.success() {
        step("rust nightly: installing toolchain with rust-src");
        return run_visible(
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]),
            "rustup toolchain install nightly",
        );
    }
    if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.starts_with("rust-src")) {
        step("rust-src for nightly: present");
        return Ok(());
    }
    step("rust-src for nightly: installing");
    run_visible(
        Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
        "rustup component add rust-src",
    )
}

fn bpf_linker() -> Result<()> {
    let current = Command::new("bpf-linker").arg("--version").stderr(Stdio::null()).output();
    if let Ok(out) = &current {
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains(BPF_LINKER_VERSION) {
            step(&format!("bpf-linker {BPF_LINKER_VERSION}: present"));
            return Ok(());
        }
    }
    step(&format!("bpf-linker {BPF_LINKER_VERSION}: building against LLVM 22 (takes a minute or two)"));
    // bpf-linker 0.13 defaults to LLVM 23 and finds LLVM through the first llvm-config
    // on PATH (Debian's is LLVM 14): pin both.
    run_visible(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--locked", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX),
        "cargo install bpf-linker",
    )
}
