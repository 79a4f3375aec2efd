//! `cargo xtask vm-test`: the integration tests on other kernels, each booted under qemu
//! with an initramfs carrying the test binaries, their tools and the kernel's modules.
mod initramfs;
mod kernel;
mod outcome;

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{step, workspace_root};

#[derive(Debug, clap::Args)]
pub struct VmArgs {
    /// 5.10, 6.1, 6.12 (Debian's cloud kernels) or the path of a bzImage; repeatable.
    #[arg(long = "kernel", default_values = ["6.1", "5.10"])]
    pub kernels: Vec<String>,
    /// Only tests whose name contains this.
    #[arg(long)]
    pub filter: Option<String>,
    /// A guest still running after this many seconds is killed and reported as hung.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
}

/// The integration test binaries (and netpath), built for the host and run as they are
/// in the guest with their libraries carried along.
fn build_payload(root: &Path) -> Result<initramfs::Payload> {
    crate::build_netpath()?;
    let out = Command::new("cargo")
        .current_dir(root)
        .args(["test", "-p", "netpath-tests", "--no-run", "--message-format=json"])
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let (mut tests, mut tools) = (Vec::new(), Vec::new());
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let Some(exe) = v["executable"].as_str() else { continue };
        match (v["profile"]["test"] == true, v["target"]["kind"][0].as_str()) {
            (true, Some("test")) => tests.push(PathBuf::from(exe)),
            (false, Some("bin")) => tools.push(PathBuf::from(exe)),
            _ => {}
        }
    }
    Ok(initramfs::Payload { netpath: root.join("target/debug/netpath"), tests, tools })
}

/// Boots the kernel with the initramfs; the serial console's text, and whether it hung.
fn boot(vmlinuz: &Path, initrd: &Path, timeout: Duration, log: &Path) -> Result<(String, bool)> {
    // KVM hangs on this machine kind (see shared/TOOLCHAIN.md); TCG boots in seconds.
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg", "-cpu", "max", "-m", "2G", "-smp", "2", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"]);
    run_guest(qemu, timeout, log).context("cannot start qemu-system-x86_64")
}

/// Runs a guest (any command whose stdout is its console) until it exits or `timeout`
/// passes, when it is killed and reported hung; the console text is also streamed to
/// `log`.
fn run_guest(mut guest: Command, timeout: Duration, log: &Path) -> Result<(String, bool)> {
    let mut child = guest.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    // Streamed to the log as it comes, so a long or hung run can be followed there.
    let mut file = std::fs::File::create(log)?;
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = std::io::Write::write_all(&mut file, &buf[..n]);
            all.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    let start = Instant::now();
    let mut hung = false;
    while child.try_wait()?.is_none() {
        if start.elapsed() > timeout {
            let _ = child.kill();
            hung = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.wait();
    let text = reader.join().unwrap_or_default();
    Ok((text, hung))
}

pub fn run(args: VmArgs) -> Result<()> {
    crate::preflight::check()?;
    crate::setup::run()?;
    crate::setup::vm_tools()?;
    let root = workspace_root();
    let payload = build_payload(&root)?;
    let cache = root.join("target/vm");
    let mut matrix = String::from(
        "| kernel | tc attach | passed | failed | skipped | result |\n|---|---|---|---|---|---|\n",
    );
    let mut all_ok = true;
    for spec in &args.kernels {
        let kernel = kernel::resolve(spec, &cache.join("kernels"))?;
        let dir = cache.join(format!("run-{}", spec.replace(['/', '.'], "_")));
        std::fs::create_dir_all(&dir)?;
        step(&format!("kernel {}: building the initramfs", kernel.label));
        let initrd = initramfs::build(&kernel, &payload, args.filter.as_deref(), &dir)?;
        step(&format!("kernel {}: booting under qemu (TCG)", kernel.label));
        let log = dir.join("console.log");
        let (text, hung) = boot(&kernel.vmlinuz, &initrd, Duration::from_secs(args.timeout), &log)?;
        let o = outcome::parse(&text);
        let verdict = o.verdict(hung.then_some(args.timeout));
        let ok = verdict == "ok";
        all_ok &= ok;
        println!(
            "kernel {}: {} passed, {} failed, {} skipped: {verdict}",
            kernel.label, o.passed, o.failed, o.skipped
        );
        for r in &o.skip_reasons {
            println!("    skipped: {r}");
        }
        matrix.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            kernel.label,
            o.tc_attach(),
            o.passed,
            o.failed,
            o.skipped,
            verdict.lines().next().unwrap_or_default()
        ));
    }
    std::fs::write(cache.join("matrix.md"), &matrix)?;
    step(&format!("compatibility matrix in {}", cache.join("matrix.md").display()));
    if !all_ok {
        bail!("some kernels failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_past_its_timeout_is_killed_and_reported_hung() {
        let log = std::env::temp_dir().join(format!("npvm-hung-{}.log", std::process::id()));
        let mut guest = Command::new("sh");
        // exec: the shell becomes the sleeper, so killing it closes the console.
        guest.args(["-c", "echo booting; exec sleep 30"]);
        let start = Instant::now();
        let (text, hung) = run_guest(guest, Duration::from_millis(500), &log).unwrap();
        assert!(hung, "not reported hung");
        assert!(start.elapsed() < Duration::from_secs(10), "waited for the guest instead of killing it");
        assert_eq!(text, "booting\n");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "booting\n", "console not streamed to the log");
        let _ = std::fs::remove_file(&log);
    }

    #[test]
    fn a_guest_that_powers_off_is_read_to_the_end() {
        let log = std::env::temp_dir().join(format!("npvm-done-{}.log", std::process::id()));
        let mut guest = Command::new("sh");
        guest.args(["-c", "echo NETPATH-VM-BEGIN; echo NETPATH-VM-END"]);
        let (text, hung) = run_guest(guest, Duration::from_secs(30), &log).unwrap();
        assert!(!hung);
        assert_eq!(text, "NETPATH-VM-BEGIN\nNETPATH-VM-END\n");
        let _ = std::fs::remove_file(&log);
    }
}
