//! netpath installed as a service: `cargo xtask install` into a staging directory, the
//! unit checked by systemd's own verifier, and the installed agent run the way systemd
//! runs a Type=notify unit (its ExecStart, $NOTIFY_SOCKET), then uninstalled.
use std::{
    fs,
    os::unix::net::{UnixDatagram, UnixStream},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use netpath_tests::{agent_start_timeout, in_netns, netpath_bin, Lab};

fn xtask_install(destdir: &Path, extra: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let bin = netpath_bin();
    // The test's build, not a release build; an uninstall needs no binary.
    let binary =
        if extra.contains(&"--uninstall") { vec![] } else { vec!["--binary", bin.to_str().unwrap()] };
    let out = Command::new("cargo")
        .current_dir(root)
        .args(["xtask", "install", "--destdir", destdir.to_str().unwrap()])
        .args(binary)
        .args(extra)
        .output()
        .expect("cargo xtask install");
    assert!(out.status.success(), "cargo xtask install {extra:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The installed agent, killed when the test ends however it ends (a failed assertion
/// must not leave it running).
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What systemd would tell the service manager's socket: the next datagram, or None
/// when none came within `wait`.
fn next_notification(sock: &UnixDatagram, wait: Duration) -> Option<String> {
    sock.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).trim_end().to_string())
}

#[test]
fn install_verify_run_as_a_notify_service_and_uninstall() {
    let mut lab = Lab::new(0);
    let dest = lab.work_dir.join("root");
    xtask_install(&dest, &[]);
    let staged = |p: &str| dest.join(p.trim_start_matches('/'));
    let bin = staged("/usr/local/bin/netpath");
    assert!(bin.exists());
    for dir in ["/opt/cni/bin", "/usr/lib/cni"] {
        let link = fs::read_link(staged(&format!("{dir}/netpath"))).unwrap();
        assert_eq!(link, PathBuf::from("/usr/local/bin/netpath"), "the CNI plugin in {dir}");
    }
    for f in [
        "/usr/local/share/man/man1/netpath.1",
        "/usr/local/share/bash-completion/completions/netpath",
        "/usr/local/share/zsh/site-functions/_netpath",
        "/usr/local/share/fish/vendor_completions.d/netpath.fish",
    ] {
        assert!(fs::metadata(staged(f)).is_ok_and(|m| m.len() > 100), "{f}");
    }
    let unit = fs::read_to_string(staged("/etc/systemd/system/netpath.service")).unwrap();
    assert!(unit.contains("\nType=notify\n"), "{unit}");
    let exec = "ExecStart=/usr/local/bin/netpath agent --config /etc/netpath/agent.toml";
    assert!(unit.lines().any(|l| l == exec), "{unit}");

    // systemd's verifier, on the unit as it would run the staged binary.
    let checked = lab.work_dir.join("netpath.service");
    fs::write(&checked, unit.replace("/usr/local/bin/netpath", bin.to_str().unwrap())).unwrap();
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let v = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&checked).output().unwrap();
        assert!(
            v.status.success() && v.stderr.is_empty(),
            "systemd-analyze verify: {}",
            String::from_utf8_lossy(&v.stderr)
        );
    }

    // Run as systemd runs a Type=notify service: its ExecStart with $NOTIFY_SOCKET. The
    // agent is ready when it says so, and not before: its socket takes a connection at once.
    let notify_path = lab.work_dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let config = staged("/etc/netpath/agent.toml");
    let mut cmd = Command::new(&bin);
    cmd.args(["agent", "--config", config.to_str().unwrap(), "--cgroup", lab.cgroup.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(fs::File::create(lab.work_dir.join("service.log")).unwrap())
        .stderr(fs::File::create(lab.work_dir.join("service.err")).unwrap());
    lab.env_for(&mut cmd);
    let mut agent = Running(in_netns(&mut cmd, &lab.node.path()).spawn().unwrap());
    let deadline = Instant::now() + agent_start_timeout();
    let ready = next_notification(&notify, deadline - Instant::now());
    let log = || fs::read_to_string(lab.work_dir.join("service.err")).unwrap_or_default();
    assert_eq!(ready.as_deref(), Some("READY=1"), "no readiness; agent log:\n{}", log());
    assert!(
        UnixStream::connect(lab.work_dir.join("run/agent.sock")).is_ok(),
        "ready, but the socket refuses"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(next_notification(&notify, Duration::from_secs(30)).as_deref(), Some("STOPPING=1"));
    assert!(agent.0.wait().unwrap().success(), "{}", log());
    lab.stop_agent();

    // Uninstall: exactly what the install put there. A plugin of another vendor stays,
    // and so does a config the admin changed.
    fs::write(staged("/opt/cni/bin/bridge"), "another plugin").unwrap();
    fs::write(&config, "pod-cidr = \"10.99.0.0/24\"\n").unwrap();
    // Without the binary it was installed with (gone first, as a package manager may).
    fs::remove_file(&bin).unwrap();
    xtask_install(&dest, &["--uninstall"]);
    let mut left: Vec<String> = Vec::new();
    let mut dirs = vec![dest.clone()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else {
                left.push(e.path().strip_prefix(&dest).unwrap().display().to_string());
            }
        }
    }
    left.sort();
    assert_eq!(left, ["etc/netpath/agent.toml", "opt/cni/bin/bridge"]);
}
