//! Refuse early, with the missing piece named, when this machine cannot run netpath.
use std::{path::Path, process::Command};

use anyhow::{bail, Result};

/// Root, the BPF syscall, BTF. The veth and tc checks need iproute2 and run after setup.
pub fn check() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("netpath builds network namespaces and loads eBPF programs: run this as root (e.g. sudo -E cargo xtask ...)");
    }
    if !Path::new("/proc/sys/kernel/unprivileged_bpf_disabled").exists() {
        bail!("this kernel has no BPF syscall (CONFIG_BPF_SYSCALL): netpath cannot run here");
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs.lines().any(|l| l.split_whitespace().last() == Some("bpf")) {
        bail!("this kernel has no BPF filesystem (bpffs): netpath cannot pin its maps");
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!("this kernel has no BTF (/sys/kernel/btf/vmlinux missing; CONFIG_DEBUG_INFO_BTF)");
    }
    Ok(())
}

/// Creates a veth pair and a clsact qdisc in a throw-away namespace: the real thing the
/// datapath needs, tried rather than guessed from config files.
pub fn check_net() -> Result<()> {
    let ns = format!("npprobe{}", std::process::id());
    let ip = |args: &[&str]| Command::new("ip").args(args).output();
    let out = ip(&["netns", "add", &ns])?;
    if !out.status.success() {
        bail!("cannot create a network namespace: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let veth = ip(&["-n", &ns, "link", "add", "p0", "type", "veth", "peer", "name", "p1"]);
    let clsact = Command::new("tc").args(["-n", &ns, "qdisc", "add", "dev", "p0", "clsact"]).output();
    let _ = ip(&["netns", "del", &ns]);
    let veth = veth?;
    if !veth.status.success() {
        bail!(
            "this kernel cannot create veth pairs (CONFIG_VETH): {}",
            String::from_utf8_lossy(&veth.stderr).trim()
        );
    }
    let clsact = clsact?;
    if !clsact.status.success() {
        bail!(
            "this kernel has no clsact qdisc (CONFIG_NET_SCH_INGRESS), needed to attach tc programs: {}",
            String::from_utf8_lossy(&clsact.stderr).trim()
        );
    }
    Ok(())
}
