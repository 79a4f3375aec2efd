//! `cargo xtask bench --vm KERNEL`: the sub-interface comparison in a guest of one of
//! Debian's kernels, booted with vm-test's machinery, for the worlds the host's kernel
//! cannot build (ipvlan). The guest runs this same xtask binary (`bench --in-guest`),
//! which prints its results on the serial console between markers; the host writes
//! them to --out/vm-KERNEL, every table marked EMULATED: qemu's software emulation
//! says how the datapaths compare with each other, not what real hardware does.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use super::{
    data_plane,
    emulated_report::{collect, emit},
    load::Placement,
    subif::IpvlanMode,
    world::{PathKind, World},
    BenchArgs, Measurement, Pace, Planned, TESTS,
};
use crate::{
    step,
    vm::{self, initramfs, kernel, outcome},
};

/// What the guest measured and where: the host's tables are made from this alone.
#[derive(Debug, Serialize, Deserialize)]
pub struct GuestRun {
    /// The guest kernel's release (`uname -r`).
    pub kernel: String,
    pub vcpus: usize,
    pub quick: bool,
    pub repetitions: usize,
    pub seconds: f64,
    pub measurements: Vec<Measurement>,
}

/// Modules the guest loads beyond vm-test's: the Docker rules' MASQUERADE and DNAT
/// targets, and conntrack's netlink interface (bridge+iptables' flush between tests).
const GUEST_MODULES: &[&str] = &["xt_MASQUERADE", "xt_nat", "nf_conntrack_netlink"];

/// The guest's whole run is bounded: a full run takes some 17 minutes on 6.1 (2 vCPUs);
/// a guest still running at more than twice that is hung.
const GUEST_TIMEOUT: Duration = Duration::from_secs(45 * 60);

/// `--vm`'s value: one of the Debian kernels vm-test boots (a bare bzImage has no
/// modules, and the worlds need ipvlan's, macvlan's and netfilter's).
pub fn kernel_arg(s: &str) -> std::result::Result<String, String> {
    if vm::DEFAULT_KERNELS.contains(&s) {
        return Ok(s.to_string());
    }
    Err(format!(
        "give one of {} (Debian's cloud kernels, as vm-test boots them)",
        vm::DEFAULT_KERNELS.join(", ")
    ))
}

/// The host's side: builds, boots the guest, and writes what it measured.
pub fn run(spec: &str, args: &BenchArgs) -> Result<()> {
    crate::preflight::check()?;
    crate::setup::run()?;
    crate::setup::vm_tools()?;
    // Release unless a smoke run, as the host's bench (the agent's start is user space,
    // which emulation makes slow enough).
    crate::build_netpath_as(!args.quick)?;
    let root = crate::workspace_root();
    let cache = root.join("target/vm");
    let kernel = kernel::resolve(spec, &cache.join("kernels"))?;
    let dir = cache.join(format!("bench-{}", spec.replace('.', "_")));
    std::fs::create_dir_all(&dir)?;
    step(&format!("kernel {}: building the initramfs", kernel.label));
    let command = guest_command(args.quick);
    let initrd = initramfs::build(&kernel, &payload()?, &initramfs::command_init("bench", &command), &dir)?;
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let smp = vm::vcpus(host_cpus, 1);
    let log = dir.join("console.log");
    let text = boot(spec, &kernel, &initrd, smp, &log)?;
    let guest: GuestRun = serde_json::from_str(&collect(&text).with_context(|| console_hint(&log))?)
        .context("the guest's results are not the JSON this xtask writes")?;
    let out = args.out.join(format!("vm-{spec}"));
    write(&guest, host_cpus, &out)?;
    step(&format!("results in {}", out.display()));
    let missing = super::report::Report::new(
        guest.measurements,
        Default::default(),
        Vec::new(),
        Vec::new(),
        Default::default(),
        guest.quick,
    )
    .missing_measurements();
    if !missing.is_empty() {
        bail!("some measurements produced no number: {}", missing.join(", "));
    }
    Ok(())
}

fn console_hint(log: &Path) -> String {
    format!("the guest's console is in {}", log.display())
}

/// What the guest carries: netpath, and this very xtask binary (built for the host, run
/// as it is with its libraries, as the test binaries are); no tests, no etcd.
fn payload() -> Result<initramfs::Payload> {
    let netpath = std::env::var_os("NETPATH_BIN").context("the netpath build set no NETPATH_BIN")?;
    Ok(initramfs::Payload {
        netpath: PathBuf::from(netpath),
        tests: Vec::new(),
        tools: Vec::new(),
        etcd: None,
        programs: vec![std::env::current_exe().context("this xtask binary")?],
        extra_tools: &["conntrack"],
        extra_modules: GUEST_MODULES,
    })
}

/// The guest's command line.
fn guest_command(quick: bool) -> String {
    format!("/bin/xtask bench --in-guest{}", if quick { " --quick" } else { "" })
}

/// Boots the guest and follows it: its markers and what the bench prints (not the
/// results' data lines); fails when the guest could not run the bench to its end.
fn boot(spec: &str, kernel: &kernel::Kernel, initrd: &Path, smp: u32, log: &Path) -> Result<String> {
    step(&format!(
        "kernel {}: booting under qemu (TCG, {smp} vCPUs, 2048 MiB); console in {}",
        kernel.label,
        log.display()
    ));
    let started = Instant::now();
    let mut progress = vm::Progress::new(true);
    let tag = spec.to_string();
    let on_line = move |line: &str| {
        if emulated_data(line) {
            return;
        }
        if let Some(what) = progress.line(line) {
            println!("    [{tag} {}] {what}", vm::mmss(started.elapsed()));
        }
    };
    let (text, hung) =
        vm::run_guest(vm::qemu(&kernel.vmlinuz, initrd, smp, 2048), GUEST_TIMEOUT, log, on_line)
            .context("cannot start qemu-system-x86_64")?;
    let o = outcome::parse(&text);
    let trouble = if hung {
        Some(format!("HUNG after {} s (killed)", GUEST_TIMEOUT.as_secs()))
    } else if o.panic.is_some() || !o.module_failures.is_empty() || !o.preflight_failures.is_empty() {
        Some(o.verdict(None))
    } else if !o.binary_failures.is_empty() {
        Some(format!("the bench failed in the guest: {}", o.binary_failures.join(", ")))
    } else if !o.finished {
        Some("the guest did not finish".to_string())
    } else {
        None
    };
    if let Some(t) = trouble {
        bail!("kernel {}: {t}; {}", kernel.label, console_hint(log));
    }
    Ok(text)
}

/// A line of the results' data, which the run's output does not show.
fn emulated_data(line: &str) -> bool {
    line.contains(super::emulated_report::DATA) || line.contains(super::emulated_report::END)
}

/// results.json (the guest's run, marked) and results.md (the tables) in `out`.
fn write(guest: &GuestRun, host_cpus: usize, out: &Path) -> Result<()> {
    #[derive(Serialize)]
    struct Written<'a> {
        emulated: String,
        host_cpus: usize,
        #[serde(flatten)]
        guest: &'a GuestRun,
    }
    std::fs::create_dir_all(out)?;
    let emulated = super::emulated_report::title(guest);
    let json = serde_json::to_vec_pretty(&Written { emulated, host_cpus, guest })?;
    std::fs::write(out.join("results.json"), json)?;
    let md = super::emulated_report::markdown(guest, host_cpus);
    std::fs::write(out.join("results.md"), &md)?;
    print!("{md}");
    Ok(())
}

/// The guest's side: the sub-interface comparison's worlds, measured, and the results
/// printed for the host. Nothing to prepare: the guest is fresh, its tools carried in.
pub fn in_guest(args: &BenchArgs) -> Result<()> {
    let pace = guest_pace(args.quick);
    step("building the sub-interface comparison's worlds");
    let worlds = vec![
        World::netpath()?,
        World::netpath_macvlan()?,
        World::macvlan()?,
        World::netpath_ipvlan()?,
        World::ipvlan(IpvlanMode::L2)?,
        World::ipvlan(IpvlanMode::L3)?,
        World::iptables()?,
        World::limit()?,
    ];
    let plan = plan(&worlds);
    step(&format!("{} measurements, {} x {:?} each", plan.len(), pace.reps, pace.duration));
    let mut measurements = data_plane(&worlds, &plan, pace, false);
    drop(worlds);
    // The round-trip histograms would multiply what crosses the serial console for no
    // figure of the tables.
    for s in measurements.iter_mut().flat_map(|m| m.samples.iter_mut()) {
        s.histogram = Default::default();
    }
    let guest = GuestRun {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim().to_string(),
        vcpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        quick: args.quick,
        repetitions: pace.reps,
        seconds: pace.duration.as_secs_f64(),
        measurements,
    };
    print!("{}", emit(&serde_json::to_string(&guest)?));
    Ok(())
}

/// The host's pace, with five repetitions instead of three for a full run: emulated
/// runs spread more (a one-off run saw 30-50 % between runs of one figure), and the
/// 60 measurements of 3 s still take only 15 minutes.
fn guest_pace(quick: bool) -> Pace {
    let host = Pace::of(quick);
    Pace { reps: if quick { host.reps } else { 5 }, ..host }
}

/// Container to container and to the outside, every test, one CPU, in every world that
/// has the path (the limit has no outside).
fn plan(worlds: &[World]) -> Vec<Planned> {
    let mut plan = Vec::new();
    for path in [PathKind::C2c, PathKind::Snat] {
        for test in TESTS {
            for (world, w) in worlds.iter().enumerate() {
                if w.paths().contains(&path) {
                    plan.push(Planned { world, path, test, placement: Placement::SameCpu });
                }
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::BenchArgs;

    fn parse(args: &[&str]) -> std::result::Result<BenchArgs, String> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        <Cli as clap::Parser>::try_parse_from([&["bench"], args].concat())
            .map(|c| c.bench)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn vm_takes_the_debian_kernels_and_refuses_anything_else_in_one_line() {
        assert_eq!(parse(&["--vm", "6.1"]).unwrap().vm.as_deref(), Some("6.1"));
        assert_eq!(parse(&["--vm", "5.10", "--quick"]).unwrap().vm.as_deref(), Some("5.10"));
        assert!(parse(&[]).unwrap().vm.is_none());
        let err = parse(&["--vm", "4.19"]).unwrap_err();
        assert_eq!(
            err.lines().next().unwrap(),
            "error: invalid value '4.19' for '--vm <KERNEL>': give one of 6.12, 6.1, 5.10 \
             (Debian's cloud kernels, as vm-test boots them)"
        );
        assert!(parse(&["--vm", "/boot/vmlinuz"]).is_err(), "a bzImage has no modules");
        // One section at a time.
        assert!(parse(&["--vm", "6.1", "--cross-node"]).is_err());
        assert!(parse(&["--vm", "6.1", "--only", "macvlan"]).is_err());
    }

    #[test]
    fn the_guest_is_told_it_is_one_and_repeats_a_full_run_more_than_the_host() {
        assert_eq!(guest_command(true), "/bin/xtask bench --in-guest --quick");
        assert_eq!(guest_command(false), "/bin/xtask bench --in-guest");
        let args = parse(&["--in-guest"]).unwrap();
        assert!(args.in_guest && args.vm.is_none());
        let (full, quick) = (guest_pace(false), guest_pace(true));
        assert_eq!((full.reps, full.duration), (5, Duration::from_secs(3)));
        assert_eq!((quick.reps, quick.duration), (1, Duration::from_millis(500)));
    }
}
