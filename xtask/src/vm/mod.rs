//! `cargo xtask vm-test`: the integration tests on other kernels, each booted under qemu
//! with an initramfs carrying the test binaries, their tools and the kernel's modules.
pub(crate) mod initramfs;
pub(crate) mod kernel;
pub(crate) mod outcome;

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{step, workspace_root};

/// The kernels `vm-test` runs by default and `cargo xtask test` ends with: Debian 13's,
/// 12's and 11's cloud kernels (TCX from 6.6; 6.1 and 5.10 attach through clsact).
pub const DEFAULT_KERNELS: [&str; 3] = ["6.12", "6.1", "5.10"];

/// Test binaries whose subject is the agent's and the CLI's own behaviour in user space
/// (input validation, locks, the client socket, permissions, the state store's write
/// steps): the same on every kernel. The host runs them; the guests spend their time on
/// what the kernel does (links, programs, maps, packets), unless `--all-binaries`.
/// `cni` is the plugin's protocol over the agent's socket (the plumbing it asks for is
/// `endpoint`'s, which the guests run); `service` the install and the notify protocol;
/// `apply` the declared file's parsing and difference (its plumbing is `endpoint`'s too).
pub const KERNEL_INDEPENDENT: [&str; 7] =
    ["hostile", "isolation", "concurrency", "crash", "cni", "service", "apply"];

/// Test binaries only the host runs: the cluster's control plane (user space talking to
/// etcd, the same on every kernel), and podman driving the CNI plugin (podman, runc and
/// their libraries are not in the guests; the plumbing it asks for is `endpoint`'s).
pub const HOST_ONLY: [&str; 2] = ["cluster", "podman"];

/// Test binaries the first guest leaves to the others: the cross-node datapath, with
/// etcd carried in, on the clsact kernels (6.1, 5.10); the host runs it on TCX. The
/// guests run at once: the run takes as long as its longest guest.
pub const NOT_FIRST: [&str; 1] = ["cross_node"];

/// The tests' knobs a guest takes from the host's environment, when set there: the
/// conntrack pressure measurement's table sizes and flows per row.
pub const PASSED_ENV: [&str; 2] = ["NETPATH_CT_PRESSURE_SIZES", "NETPATH_CT_PRESSURE_FLOWS"];

#[derive(Debug, clap::Args)]
pub struct VmArgs {
    /// 5.10, 6.1, 6.12 (Debian's cloud kernels) or the path of a bzImage; repeatable.
    #[arg(long = "kernel", default_values = DEFAULT_KERNELS)]
    pub kernels: Vec<String>,
    /// Only tests whose name contains this.
    #[arg(long)]
    pub filter: Option<String>,
    /// Only this test binary (`restart`, `nat`, ...); repeatable. Default: all.
    #[arg(long = "binary")]
    pub binaries: Vec<String>,
    /// A guest still running after this many seconds is killed and reported as hung.
    /// The default (73 min) keeps a CI run (host part, some 14 min, then the guests)
    /// under its hard limit of 90 min even when a guest hangs.
    #[arg(long, default_value_t = 4400)]
    pub timeout: u64,
    /// A test binary still running after this many seconds is killed in the guest (and
    /// reported as failed), so that the others still run.
    #[arg(long, default_value_t = 1500)]
    pub binary_timeout: u64,
    /// Runs of each test binary in each guest, one after the other (a flakiness check:
    /// every run is counted, a single failure fails the kernel).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub repeat: u32,
    /// Run the kernel-independent test binaries (hostile, isolation, concurrency,
    /// crash) in every guest, not in the first kernel's only.
    #[arg(long)]
    pub all_binaries: bool,
    /// Run the tests marked #[ignore] instead (libtest's --ignored; with --filter, those
    /// it names), and show everything they print in this run's output as it comes, not
    /// only in the console log: the measurements are ignored tests that print a table.
    #[arg(long)]
    pub ignored: bool,
    /// How many guests run at once (default: all of them).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Virtual CPUs per guest (default: the host's CPUs shared out among the guests
    /// running at once, at least one).
    #[arg(long)]
    pub smp: Option<u32>,
    /// Memory per guest, MiB.
    #[arg(long, default_value_t = 2048)]
    pub memory: u32,
}

impl VmArgs {
    /// The defaults `cargo xtask test` runs with.
    pub fn all_kernels() -> Self {
        VmArgs {
            kernels: DEFAULT_KERNELS.iter().map(|k| k.to_string()).collect(),
            filter: None,
            binaries: Vec::new(),
            timeout: 4400,
            binary_timeout: 1500,
            repeat: 1,
            all_binaries: false,
            ignored: false,
            jobs: None,
            smp: None,
            memory: 2048,
        }
    }
}

/// The integration test binaries (and netpath), built for the host and run as they are
/// in the guest with their libraries carried along.
/// `only`: the test binaries to carry, by name (empty: all).
fn build_payload(root: &Path, only: &[String]) -> Result<initramfs::Payload> {
    crate::build_netpath()?;
    let out = Command::new("cargo")
        .current_dir(root)
        // The whole workspace's selection, as the host's test run builds it, so the
        // binaries are the ones already built rather than a second set (see
        // build_netpath); only netpath-tests' own are carried.
        .args(["test", "--no-run", "--message-format=json"])
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let manifest = root.join("tests/Cargo.toml").to_string_lossy().into_owned();
    let (mut tests, mut tools) = (Vec::new(), Vec::new());
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let Some(exe) = v["executable"].as_str() else { continue };
        if v["manifest_path"].as_str() != Some(&*manifest) {
            continue;
        }
        match (v["profile"]["test"] == true, v["target"]["kind"][0].as_str()) {
            (true, Some("test")) => {
                let name = v["target"]["name"].as_str().unwrap_or_default();
                if only.is_empty() || only.iter().any(|o| o == name) {
                    tests.push(PathBuf::from(exe));
                }
            }
            (false, Some("bin")) => tools.push(PathBuf::from(exe)),
            _ => {}
        }
    }
    if tests.len() < only.len() {
        bail!(
            "--binary {}: not every name is a test binary of netpath-tests (tests/tests/*.rs)",
            only.join(", ")
        );
    }
    let etcd = crate::setup::etcd_dir().join("usr/bin/etcd");
    if !etcd.exists() {
        bail!("{} missing: run `cargo xtask setup`", etcd.display());
    }
    Ok(initramfs::Payload {
        netpath: root.join("target/debug/netpath"),
        tests,
        tools,
        etcd: Some(etcd),
        programs: Vec::new(),
        extra_tools: &[],
        extra_modules: &[],
    })
}

/// The qemu command that boots `vmlinuz` with `initrd`; its stdout is the console.
pub(crate) fn qemu(vmlinuz: &Path, initrd: &Path, smp: u32, memory: u32) -> Command {
    // KVM hangs on this machine kind (see shared/TOOLCHAIN.md): software emulation.
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg", "-cpu", "max", "-nographic", "-no-reboot"])
        .args(["-m", &format!("{memory}M"), "-smp", &smp.to_string()])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"]);
    qemu
}

/// Runs a guest (any command whose stdout is its console) until it exits or `timeout`
/// passes, when it is killed and reported hung. The console text is streamed to `log`
/// and each line handed to `on_line` as it comes, so a long run can be followed.
pub(crate) fn run_guest(
    mut guest: Command,
    timeout: Duration,
    log: &Path,
    mut on_line: impl FnMut(&str) + Send + 'static,
) -> Result<(String, bool)> {
    // qemu's own complaints go next to the console (a pipe nobody reads could fill and
    // stall it).
    let stderr = std::fs::File::create(log.with_extension("stderr"))?;
    let mut child = guest.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr).spawn()?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut file = std::fs::File::create(log)?;
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut stdout = BufReader::new(stdout);
        let mut line = Vec::new();
        while stdout.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let _ = file.write_all(&line);
            on_line(String::from_utf8_lossy(&line).trim_end());
            all.append(&mut line);
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

/// One kernel's run: what to boot, and once done, what happened.
struct Guest {
    /// The kernel as asked for (`6.12`), for progress lines.
    spec: String,
    label: String,
    vmlinuz: PathBuf,
    initrd: PathBuf,
    log: PathBuf,
    result: Option<(outcome::Outcome, Option<u64>, Duration)>,
}

pub(crate) fn mmss(d: Duration) -> String {
    format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
}

/// Virtual CPUs for each of `running` guests at once on `host_cpus`. Under TCG each
/// vCPU is a host thread: more vCPUs than host cores only adds contention (a vCPU
/// waiting on one that the host has descheduled). Measured with the three kernels on
/// two cores (a ten-test slice): one vCPU each finished in 6m50s, two each in 8m42s.
pub(crate) fn vcpus(host_cpus: usize, running: usize) -> u32 {
    (host_cpus / running.max(1)).max(1) as u32
}

/// What a guest's console tells this run's output, line by line as it comes.
pub(crate) struct Progress {
    /// Everything the tests print, not only the markers (`--ignored`).
    tests_output: bool,
    /// Past the preflight: what the guest prints now comes from the tests.
    testing: bool,
}

impl Progress {
    pub(crate) fn new(tests_output: bool) -> Self {
        Progress { tests_output, testing: false }
    }

    pub(crate) fn line(&mut self, line: &str) -> Option<String> {
        let shown = marker(line).or_else(|| {
            let tests = self.tests_output && self.testing;
            (tests && !line.trim().is_empty() && !line.contains("NETPATH-VM-")).then(|| format!("| {line}"))
        });
        self.testing |= line.contains("NETPATH-VM-READY");
        shown
    }
}

/// What a marker line tells the run's output: a test binary's exit, and the guest's
/// module, preflight and ready markers (cut to 160 characters).
fn marker(line: &str) -> Option<String> {
    if let Some(rest) = line.split("NETPATH-VM-DONE ").nth(1) {
        let mut it = rest.split_whitespace();
        let (bin, code) = (it.next().unwrap_or("?"), it.next().unwrap_or("?"));
        let how = if code == "0" { "ok".to_string() } else { format!("exit {code}") };
        return Some(format!("{bin}: {how}"));
    }
    let markers = ["MODULE-FAILED", "PREFLIGHT-FAILED", "NOT-RUN", "READY"];
    if !markers.iter().any(|m| line.contains(&format!("NETPATH-VM-{m}"))) {
        return None;
    }
    let what = line.trim_start_matches("NETPATH-VM-");
    Some(what.char_indices().nth(160).map_or(what, |(i, _)| &what[..i]).to_string())
}

/// Boots every guest, `jobs` at a time, each in a thread of its own.
fn boot_all(guests: &mut [Guest], args: &VmArgs) -> Result<u32> {
    let jobs = args.jobs.unwrap_or(guests.len()).max(1);
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let smp = args.smp.unwrap_or_else(|| vcpus(host_cpus, jobs.min(guests.len())));
    let queue: Arc<Mutex<Vec<usize>>> = Arc::new(Mutex::new((0..guests.len()).rev().collect()));
    let started = Instant::now();
    let results: Vec<_> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs.min(guests.len()))
            .map(|_| {
                let queue = queue.clone();
                let guests = &*guests;
                scope.spawn(move || {
                    let mut done = Vec::new();
                    loop {
                        let Some(i) = queue.lock().expect("queue").pop() else { break };
                        let g = &guests[i];
                        step(&format!(
                            "kernel {}: booting under qemu (TCG, {} vCPUs, {} MiB); console in {}",
                            g.label,
                            smp,
                            args.memory,
                            g.log.display()
                        ));
                        let t0 = Instant::now();
                        let spec = g.spec.clone();
                        let mut progress = Progress::new(args.ignored);
                        let on_line = move |line: &str| {
                            if let Some(what) = progress.line(line) {
                                println!("    [{spec} {}] {what}", mmss(started.elapsed()));
                            }
                        };
                        let timeout = Duration::from_secs(args.timeout);
                        let r = run_guest(
                            qemu(&g.vmlinuz, &g.initrd, smp, args.memory),
                            timeout,
                            &g.log,
                            on_line,
                        )
                        .context("cannot start qemu-system-x86_64");
                        done.push((i, r, t0.elapsed()));
                    }
                    done
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("guest thread")).collect()
    });
    for (i, r, took) in results {
        let (text, hung) = r?;
        let hung_after = hung.then_some(args.timeout);
        guests[i].result = Some((outcome::parse(&text), hung_after, took));
    }
    Ok(smp)
}

pub fn run(args: VmArgs) -> Result<()> {
    crate::preflight::check()?;
    crate::setup::run()?;
    crate::setup::vm_tools()?;
    let root = workspace_root();
    let payload = build_payload(&root, &args.binaries)?;
    let cache = root.join("target/vm");
    let mut guests = prepare_guests(&args, &payload, &cache)?;
    let started = Instant::now();
    let smp = boot_all(&mut guests, &args)?;
    let wall = started.elapsed();
    let (matrix, all_ok) = summarize(&guests, &args, smp, wall);
    std::fs::write(cache.join("matrix.md"), &matrix)?;
    println!("\n{matrix}");
    step(&format!("compatibility matrix in {}", cache.join("matrix.md").display()));
    if !all_ok {
        bail!("some kernels failed");
    }
    Ok(())
}

/// Every kernel asked for (once each) fetched and its initramfs built, its modules
/// checked, before any guest boots: a kernel that lacks a module fails here, naming it.
fn prepare_guests(args: &VmArgs, payload: &initramfs::Payload, cache: &Path) -> Result<Vec<Guest>> {
    let mut specs: Vec<&String> = Vec::new();
    for k in &args.kernels {
        if !specs.contains(&k) {
            specs.push(k);
        }
    }
    let mut guests = Vec::new();
    for (i, spec) in specs.into_iter().enumerate() {
        let kernel = kernel::resolve(spec, &cache.join("kernels"))?;
        let dir = cache.join(format!("run-{}", spec.replace(['/', '.'], "_")));
        std::fs::create_dir_all(&dir)?;
        step(&format!("kernel {}: building the initramfs", kernel.label));
        if kernel.modules.is_none() {
            println!(
                "    {} comes without modules: the kernel must have built in what the labs need",
                kernel.label
            );
        }
        let tests = guest_tests(args, (i, args.kernels.len()), |k| std::env::var(k).ok());
        let initrd = initramfs::build(&kernel, payload, &initramfs::init_script(&tests), &dir)?;
        guests.push(Guest {
            spec: spec.clone(),
            label: kernel.label,
            vmlinuz: kernel.vmlinuz,
            initrd,
            log: dir.join("console.log"),
            result: None,
        });
    }
    Ok(guests)
}

/// What guest `position.0` of `position.1` runs: never the host-only binaries; unless
/// `--all-binaries`, not the kernel-independent ones, and [`NOT_FIRST`] in all but the
/// first when there are several. `host_env` reads the host's environment (for
/// [`PASSED_ENV`]).
fn guest_tests(
    args: &VmArgs,
    (index, of): (usize, usize),
    host_env: impl Fn(&str) -> Option<String>,
) -> initramfs::GuestTests {
    initramfs::GuestTests {
        filter: args.filter.clone(),
        ignored: args.ignored,
        binary_timeout: args.binary_timeout,
        repeat: args.repeat,
        elsewhere: HOST_ONLY
            .iter()
            .chain(if args.all_binaries { &[][..] } else { &KERNEL_INDEPENDENT[..] })
            .chain(if index == 0 && of > 1 && !args.all_binaries { &NOT_FIRST[..] } else { &[][..] })
            .map(|b| b.to_string())
            .collect(),
        env: PASSED_ENV.iter().filter_map(|k| Some((k.to_string(), host_env(k)?))).collect(),
    }
}

/// How much of a failed test's output the summary repeats.
const FAILURE_LINES: usize = 120;

/// Prints each guest's outcome; the compatibility matrix, and whether every kernel
/// passed.
fn summarize(guests: &[Guest], args: &VmArgs, smp: u32, wall: Duration) -> (String, bool) {
    let mut matrix = String::from(
        "| kernel | tc attach | passed | failed | skipped | time | result |\n|---|---|---|---|---|---|---|\n",
    );
    let mut all_ok = true;
    for g in guests {
        let (o, hung_after, took) = g.result.as_ref().expect("every guest ran");
        let verdict = o.verdict(*hung_after);
        all_ok &= verdict == "ok";
        println!(
            "kernel {}: {} passed, {} failed, {} skipped in {}: {verdict}",
            g.label,
            o.passed,
            o.failed,
            o.skipped,
            mmss(*took)
        );
        for r in &o.skip_reasons {
            println!("    skipped: {r}");
        }
        let slowest: Vec<String> = o.slowest(8).iter().map(|(t, ms)| format!("{t} {}s", ms / 1000)).collect();
        if !slowest.is_empty() {
            println!("    slowest: {}", slowest.join(", "));
        }
        for (test, printed) in o.failure_output.iter().filter(|(t, _)| o.failures.contains(t)) {
            // The panic message and the report a test attaches to it (an agent's log, a
            // hung thread's stacks), bounded: the rest is in the console.
            let lines: Vec<&str> = printed.lines().collect();
            println!("    ---- {test} ----");
            for l in lines.iter().take(FAILURE_LINES) {
                println!("    | {l}");
            }
            if lines.len() > FAILURE_LINES {
                println!("    | ... {} more lines in the console", lines.len() - FAILURE_LINES);
            }
        }
        if verdict != "ok" {
            println!("    console: {}", g.log.display());
        }
        matrix.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            g.label,
            o.tc_attach(),
            o.passed,
            o.failed,
            o.skipped,
            mmss(*took),
            verdict.lines().next().unwrap_or_default()
        ));
    }
    let jobs = args.jobs.unwrap_or(guests.len()).min(guests.len());
    matrix.push_str(&format!(
        "\n{} guests, {jobs} at a time, {smp} vCPUs and {} MiB each, on {} host CPUs: {} wall time\n",
        guests.len(),
        args.memory,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mmss(wall)
    ));
    (matrix, all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_share_the_host_cpus_out_one_vcpu_at_least() {
        assert_eq!(vcpus(2, 3), 1);
        assert_eq!(vcpus(2, 2), 1);
        assert_eq!(vcpus(2, 1), 2);
        assert_eq!(vcpus(8, 3), 2);
        assert_eq!(vcpus(1, 0), 1);
    }

    fn parse(args: &[&str]) -> VmArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            vm: VmArgs,
        }
        <Cli as clap::Parser>::try_parse_from([&["vm-test"], args].concat()).unwrap().vm
    }

    #[test]
    fn ignored_runs_the_ignored_tests_with_the_pressure_knobs_of_the_host() {
        let host = |k: &str| (k == "NETPATH_CT_PRESSURE_SIZES").then(|| "256,128".to_string());
        let args = parse(&["--kernel", "6.1", "--kernel", "5.10", "--filter", "measure_fresh", "--ignored"]);
        assert_eq!(args.kernels, ["6.1", "5.10"]);
        let tests = guest_tests(&args, (0, 2), host);
        assert!(tests.ignored);
        assert_eq!(tests.filter.as_deref(), Some("measure_fresh"));
        // Only what the host set is passed, and only the listed knobs.
        assert_eq!(tests.env, [("NETPATH_CT_PRESSURE_SIZES".to_string(), "256,128".to_string())]);
        let plain = guest_tests(&parse(&[]), (0, 3), |_| None);
        assert!(!plain.ignored && plain.env.is_empty() && plain.filter.is_none());
        assert_eq!(parse(&[]).kernels, DEFAULT_KERNELS);
        assert!(!VmArgs::all_kernels().ignored);
    }

    #[test]
    fn the_cross_node_tests_go_to_the_guests_after_the_first_or_to_a_lone_one() {
        let args = parse(&[]);
        let skipped = |i, of| guest_tests(&args, (i, of), |_| None).elsewhere;
        let independent =
            ["cluster", "podman", "hostile", "isolation", "concurrency", "crash", "cni", "service", "apply"];
        assert_eq!(skipped(0, 3), [&independent[..], &["cross_node"]].concat());
        assert_eq!(skipped(1, 3), independent);
        assert_eq!(skipped(0, 1), independent);
    }

    #[test]
    fn ignored_tests_output_is_shown_as_it_comes_and_otherwise_only_the_markers() {
        let console = [
            "NETPATH-VM-BEGIN 6.1.0-50-cloud-amd64",
            "some boot line",
            "NETPATH-VM-READY",
            "running 1 test",
            "| 256 | 256 | assured, 1 at a time | 50 | 0 | 0 (0 / 0) | 0 | 0 | 50 / 0 / 0 | 0 | 3.1 |",
            "",
            "NETPATH-VM-DONE fuzz 0",
            "NETPATH-VM-END",
        ];
        let shown = |tests_output| {
            let mut p = Progress::new(tests_output);
            console.iter().filter_map(|l| p.line(l)).collect::<Vec<_>>()
        };
        assert_eq!(shown(false), ["READY", "fuzz: ok"]);
        assert_eq!(
            shown(true),
            ["READY", "| running 1 test", &format!("| {}", console[4]), "fuzz: ok"],
            "the tests' lines, after the preflight, not the boot's"
        );
    }

    #[test]
    fn a_guest_past_its_timeout_is_killed_and_reported_hung() {
        let log = std::env::temp_dir().join(format!("npvm-hung-{}.log", std::process::id()));
        let mut guest = Command::new("sh");
        // exec: the shell becomes the sleeper, so killing it closes the console.
        guest.args(["-c", "echo booting; exec sleep 30"]);
        let start = Instant::now();
        let (text, hung) = run_guest(guest, Duration::from_millis(500), &log, |_| {}).unwrap();
        assert!(hung, "not reported hung");
        assert!(start.elapsed() < Duration::from_secs(10), "waited for the guest instead of killing it");
        assert_eq!(text, "booting\n");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "booting\n", "console not streamed to the log");
        let _ = std::fs::remove_file(&log);
        let _ = std::fs::remove_file(log.with_extension("stderr"));
    }

    #[test]
    fn a_guest_that_powers_off_is_read_to_the_end() {
        let log = std::env::temp_dir().join(format!("npvm-done-{}.log", std::process::id()));
        let mut guest = Command::new("sh");
        guest.args(["-c", "echo NETPATH-VM-BEGIN; echo qemu: warning >&2; echo NETPATH-VM-END"]);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let lines = seen.clone();
        let on_line = move |l: &str| lines.lock().unwrap().push(l.to_string());
        let (text, hung) = run_guest(guest, Duration::from_secs(30), &log, on_line).unwrap();
        assert!(!hung);
        assert_eq!(text, "NETPATH-VM-BEGIN\nNETPATH-VM-END\n");
        assert_eq!(
            *seen.lock().unwrap(),
            ["NETPATH-VM-BEGIN", "NETPATH-VM-END"],
            "lines not handed on as they came"
        );
        assert_eq!(std::fs::read_to_string(log.with_extension("stderr")).unwrap(), "qemu: warning\n");
        let _ = std::fs::remove_file(&log);
        let _ = std::fs::remove_file(log.with_extension("stderr"));
    }
}
