//! The guest's whole world in one initramfs: busybox, the tools the tests build their
//! labs with (and their libraries), the test binaries and netpath, the kernel modules
//! the tests need with their dependencies, and an /init that runs the tests and powers
//! off. Its serial output is what `run` parses.
use std::{
    collections::BTreeSet,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{anyhow, bail, Context as _, Result};

use super::kernel::Kernel;

/// Tools the tests run inside their labs.
const TOOLS: &[&str] =
    &["bash", "ip", "tc", "ping", "bpftool", "timeout", "sysctl", "iptables", "xtables-nft-multi"];

/// Modules the datapath and the labs need, loaded with their dependencies.
pub const MODULES: &[&str] = &[
    "veth",
    "bridge",
    "sch_ingress",
    "cls_bpf",
    "vxlan",
    "macvlan",
    "nf_tables",
    "nft_compat",
    "nft_chain_nat",
    "xt_addrtype",
    "xt_conntrack",
    "nf_nat",
    "nf_conntrack",
];

fn which(tool: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().map(|d| Path::new(d).join(tool)).find(|p| p.exists())
}

/// The shared libraries `bin` loads (from ldd), the loader included.
fn libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(bin).output().context("cannot run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')).map(PathBuf::from))
        .collect())
}

/// Copies `src` (following symlinks) to the same absolute path under `root`.
fn install(root: &Path, src: &Path) -> Result<()> {
    let dst = root.join(src.strip_prefix("/").unwrap_or(src));
    if dst.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dst.parent().expect("absolute path has a parent"))?;
    std::fs::copy(src, &dst).with_context(|| format!("copy {}", src.display()))?;
    Ok(())
}

fn install_with_libs(root: &Path, bin: &Path) -> Result<()> {
    install(root, bin)?;
    install_libs(root, bin)
}

fn install_libs(root: &Path, bin: &Path) -> Result<()> {
    for lib in libraries(bin)? {
        install(root, &lib)?;
    }
    Ok(())
}

/// Copies one of our own binaries to `dst` without its debug info: debug builds are
/// mostly DWARF, and the guest unpacks the initramfs into RAM.
fn install_stripped(bin: &Path, dst: &Path) -> Result<()> {
    let status = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(dst)
        .arg(bin)
        .status()
        .context("cannot run strip")?;
    if !status.success() {
        bail!("strip {} failed", bin.display());
    }
    Ok(())
}

/// Module files to load, dependencies first, as paths relative to lib/modules/<ver>.
fn module_order(modules: &Path) -> Result<Vec<String>> {
    if !modules.join("modules.dep").exists() {
        // The package ships no modules.dep (depmod runs at install): make it here.
        let version = modules.file_name().and_then(|v| v.to_str()).unwrap_or_default();
        let base =
            modules.ancestors().nth(3).ok_or_else(|| anyhow!("odd modules path {}", modules.display()))?;
        let status =
            Command::new("depmod").arg("-b").arg(base).arg(version).status().context("cannot run depmod")?;
        if !status.success() {
            bail!("depmod -b {} {version} failed", base.display());
        }
    }
    let dep = std::fs::read_to_string(modules.join("modules.dep")).context("modules.dep")?;
    let deps: Vec<(String, Vec<String>)> = dep
        .lines()
        .filter_map(|l| {
            let (m, d) = l.split_once(':')?;
            Some((m.to_string(), d.split_whitespace().map(str::to_string).collect()))
        })
        .collect();
    let name_of = |p: &str| {
        let f = p.rsplit('/').next().unwrap_or(p);
        f.split(".ko").next().unwrap_or(f).replace('-', "_")
    };
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(m: &str, deps: &[(String, Vec<String>)], order: &mut Vec<String>, seen: &mut BTreeSet<String>) {
        if !seen.insert(m.to_string()) {
            return;
        }
        if let Some((_, ds)) = deps.iter().find(|(k, _)| k == m) {
            for d in ds {
                visit(d, deps, order, seen);
            }
        }
        order.push(m.to_string());
    }
    for want in MODULES {
        // A module built into this kernel is simply not in modules.dep.
        if let Some((m, _)) = deps.iter().find(|(k, _)| name_of(k) == *want) {
            visit(&m.clone(), &deps, &mut order, &mut seen);
        }
    }
    Ok(order)
}

/// Copies a module, decompressed (busybox's insmod takes plain .ko files).
fn install_module(modules: &Path, rel: &str, root: &Path) -> Result<String> {
    let src = modules.join(rel);
    let plain = rel.trim_end_matches(".xz").trim_end_matches(".zst").trim_end_matches(".gz").to_string();
    let dst = root.join("lib/modules").join(&plain);
    std::fs::create_dir_all(dst.parent().expect("module path has a parent"))?;
    let bytes = match src.extension().and_then(|e| e.to_str()) {
        Some("xz") => Command::new("xz").arg("-dc").arg(&src).output()?.stdout,
        Some("zst") => Command::new("zstd").arg("-dc").arg(&src).output()?.stdout,
        Some("gz") => Command::new("gzip").arg("-dc").arg(&src).output()?.stdout,
        _ => std::fs::read(&src)?,
    };
    if bytes.is_empty() {
        bail!("could not decompress {}", src.display());
    }
    std::fs::write(&dst, bytes)?;
    Ok(plain)
}

pub struct Payload {
    pub netpath: PathBuf,
    pub tests: Vec<PathBuf>,
    /// The tests' helper programs (netpath-tests' src/bin), found through
    /// $NETPATH_TEST_TOOLS in the guest.
    pub tools: Vec<PathBuf>,
}

/// Builds `dir/initramfs.gz` for `kernel`; returns its path.
pub fn build(kernel: &Kernel, payload: &Payload, filter: Option<&str>, dir: &Path) -> Result<PathBuf> {
    let root = dir.join("root");
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "sbin", "proc", "sys", "dev", "run", "tmp", "tests", "etc", "var/run"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        bail!("/bin/busybox missing: install busybox-static");
    }
    std::fs::copy(busybox, root.join("bin/busybox"))?;
    for tool in TOOLS {
        if let Some(p) = which(tool) {
            install_with_libs(&root, &p)?;
        }
    }
    // iptables-nft loads its match and target extensions at run time.
    let xt = Path::new("/usr/lib/x86_64-linux-gnu/xtables");
    if xt.is_dir() {
        for e in std::fs::read_dir(xt)?.flatten() {
            install_with_libs(&root, &e.path())?;
        }
    }
    install_libs(&root, &payload.netpath)?;
    install_stripped(&payload.netpath, &root.join("bin/netpath"))?;
    for t in &payload.tests {
        install_libs(&root, t)?;
        let name = t.file_name().and_then(|n| n.to_str()).ok_or_else(|| anyhow!("bad test path"))?;
        // cargo names test binaries name-<hash>.
        let short = name.rsplit_once('-').map_or(name, |(n, _)| n);
        install_stripped(t, &root.join("tests").join(short))?;
    }
    std::fs::create_dir_all(root.join("test-tools"))?;
    for t in &payload.tools {
        install_libs(&root, t)?;
        let name = t.file_name().ok_or_else(|| anyhow!("bad tool path"))?;
        install_stripped(t, &root.join("test-tools").join(name))?;
    }
    let mut list = Vec::new();
    if let Some(modules) = &kernel.modules {
        for rel in module_order(modules)? {
            list.push(install_module(modules, &rel, &root)?);
        }
    }
    std::fs::write(root.join("modules.list"), list.join("\n"))?;
    let init = init_script(filter);
    let init_path = root.join("init");
    std::fs::write(&init_path, init)?;
    std::fs::set_permissions(&init_path, std::fs::Permissions::from_mode(0o755))?;
    let out = dir.join("initramfs.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
            root.display(),
            out.display()
        ))
        .status()?;
    if !status.success() {
        bail!("building the initramfs failed");
    }
    Ok(out)
}

/// The guest's /init: mounts, modules in dependency order, then each test binary under
/// a timeout, with markers the host parses, and power-off. `filter` is passed to every
/// binary, quoted (quotes in it are dropped: it cannot break out of the script).
fn init_script(filter: Option<&str>) -> String {
    let filter = filter.map(|f| format!("'{}'", f.replace('\'', ""))).unwrap_or_default();
    format!(
        r#"#!/bin/busybox sh
# Busybox fills in what the real tools (installed under /usr) do not provide.
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
mkdir -p /sys/fs/bpf /sys/fs/cgroup /sys/kernel/debug /run/netns
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t debugfs debugfs /sys/kernel/debug
for m in $(cat /modules.list); do insmod /lib/modules/$m 2>/dev/null; done
ip link set lo up
echo "NETPATH-VM-BEGIN $(uname -r)"
# Software emulation is slow: give the agent minutes, not seconds, to load the datapath
# (15-20 s per start on 5.10). The crash test walks one write step, before the rename
# (a half-built endpoint to clean up at start), instead of all six: the state store is
# plain file I/O, the same on every kernel, and the host run walks them all. The soak
# runs 20 s.
export NETPATH_BIN=/bin/netpath NETPATH_TEST_TOOLS=/test-tools RUST_BACKTRACE=0 TMPDIR=/tmp NETPATH_TEST_AGENT_TIMEOUT=600
export NETPATH_CRASH_STEPS=half-written NETPATH_SOAK_SECS=20
cd /tests
for t in *; do
  # A test binary that hangs must not take the others with it.
  # --nocapture: a test's "netpath-test-skipped" line must reach the console.
  timeout 600 ./$t --test-threads=2 --nocapture {filter}
  echo "NETPATH-VM-DONE $t $?"
done
echo NETPATH-VM-END
poweroff -f
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_load_after_their_dependencies_and_built_ins_are_skipped() {
        let dir = std::env::temp_dir().join(format!("npvm-mods-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("modules.dep"),
            "kernel/net/bridge/bridge.ko.xz: kernel/net/802/stp.ko.xz kernel/net/llc/llc.ko.xz\n\
             kernel/net/802/stp.ko.xz: kernel/net/llc/llc.ko.xz\n\
             kernel/net/llc/llc.ko.xz:\n\
             kernel/drivers/net/veth.ko.xz:\n\
             kernel/drivers/net/dummy.ko.xz:\n",
        )
        .unwrap();
        let order = module_order(&dir).unwrap();
        let at = |m: &str| {
            order.iter().position(|o| o.contains(m)).unwrap_or_else(|| panic!("{m} not in {order:?}"))
        };
        assert!(at("llc") < at("stp") && at("stp") < at("bridge"), "{order:?}");
        assert!(order.iter().any(|o| o.ends_with("veth.ko.xz")));
        // Only what the tests need (and its dependencies), nothing else the kernel has.
        assert!(!order.iter().any(|o| o.contains("dummy")), "{order:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_init_script_runs_every_binary_bounded_and_quotes_the_filter() {
        let init = init_script(Some("nat'; reboot; echo '"));
        for needed in [
            "mount -t bpf bpf /sys/fs/bpf",
            "mount -t cgroup2",
            "insmod /lib/modules/$m",
            "NETPATH_TEST_TOOLS=/test-tools",
            "NETPATH_CRASH_STEPS=half-written",
            "timeout 600 ./$t",
            "NETPATH-VM-BEGIN",
            "NETPATH-VM-DONE $t $?",
            "poweroff -f",
        ] {
            assert!(init.contains(needed), "{needed:?} missing from:\n{init}");
        }
        assert!(init.contains("'nat; reboot; echo '"), "filter not quoted as one word:\n{init}");
        assert!(!init_script(None).contains("''"));
    }
}
