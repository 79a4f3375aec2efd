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
const TOOLS: &[&str] = &[
    "bash",
    "ip",
    "tc",
    "ping",
    "bpftool",
    "timeout",
    "sysctl",
    "iptables",
    "ip6tables",
    "xtables-nft-multi",
];

/// Modules the datapath and the labs need, loaded with their dependencies.
pub const MODULES: &[&str] = &[
    "veth",
    "bridge",
    "sch_ingress",
    "cls_bpf",
    "vxlan",
    "macvlan",
    // netpath's `--mode ipvlan`: the guests are where its tests run (the host's kernel
    // may lack ipvlan); Debian builds it as a module.
    "ipvlan",
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

/// A module's name as the kernel knows it (`kernel/net/sched/sch_ingress.ko.xz` ->
/// `sch_ingress`; dashes in file names are underscores in module names).
fn module_name(path: &str) -> String {
    let f = path.rsplit('/').next().unwrap_or(path);
    f.split(".ko").next().unwrap_or(f).replace('-', "_")
}

/// How a module file is compressed, told by its first bytes rather than its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Xz,
    Zstd,
    Gzip,
}

impl Compression {
    fn of(head: &[u8]) -> Option<Self> {
        if head.starts_with(b"\x7fELF") {
            Some(Self::None)
        } else if head.starts_with(b"\xfd7zXZ\x00") {
            Some(Self::Xz)
        } else if head.starts_with(b"\x28\xb5\x2f\xfd") {
            Some(Self::Zstd)
        } else if head.starts_with(b"\x1f\x8b") {
            Some(Self::Gzip)
        } else {
            None
        }
    }

    /// The tool that decompresses it to stdout (`-dc`), and the package it comes in.
    fn tool(self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::None => None,
            Self::Xz => Some(("xz", "xz-utils")),
            Self::Zstd => Some(("zstd", "zstd")),
            Self::Gzip => Some(("gzip", "gzip")),
        }
    }
}

/// A module file's plain ELF bytes, whether it is stored plain or compressed with xz,
/// zstd or gzip (busybox's insmod takes plain files only).
fn decompress(src: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(src).with_context(|| format!("cannot read module {}", src.display()))?;
    let kind = Compression::of(&raw)
        .ok_or_else(|| anyhow!("module {}: neither an ELF file nor xz, zstd or gzip data", src.display()))?;
    let Some((tool, package)) = kind.tool() else { return Ok(raw) };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(src)
        .output()
        .with_context(|| format!("cannot run {tool} for module {} (install {package})", src.display()))?;
    if !out.status.success() {
        bail!("{tool} -dc {} failed: {}", src.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    if !out.stdout.starts_with(b"\x7fELF") {
        bail!("module {}: {tool} did not produce an ELF file", src.display());
    }
    Ok(out.stdout)
}

/// Every module file under `dir`, as paths relative to it.
fn module_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p);
            } else if p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| [".ko", ".ko.xz", ".ko.zst", ".ko.gz"].iter().any(|s| n.ends_with(s)))
            {
                found.push(p.strip_prefix(dir).expect("under dir").to_path_buf());
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Writes `modules/modules.dep` when the package did not ship one (Debian's kernel
/// packages leave it to depmod at install). depmod reads plain, xz and zstd modules
/// here, but Debian 12's kmod is built without zlib and silently leaves gzip'd modules
/// out of modules.dep: those are unpacked first (`modules` is our extracted copy of the
/// package). Any module left out is an error, not a guest that lacks it.
fn ensure_modules_dep(modules: &Path) -> Result<()> {
    if modules.join("modules.dep").exists() {
        return Ok(());
    }
    for rel in module_files(modules)? {
        let path = modules.join(&rel);
        if path.extension().is_some_and(|e| e == "gz") {
            let plain = decompress(&path)?;
            std::fs::write(path.with_extension(""), plain)?;
            std::fs::remove_file(&path)?;
        }
    }
    let version = modules
        .file_name()
        .and_then(|v| v.to_str())
        .ok_or_else(|| anyhow!("odd modules path {}", modules.display()))?;
    // depmod -b BASE looks in BASE/lib/modules/<version> (kmod up to 32) or in
    // BASE/usr/lib/modules/<version> (kmod built for merged /usr): offer it both.
    let modules = std::fs::canonicalize(modules)?;
    let base = modules.with_file_name(format!(".depmod-{version}"));
    let _ = std::fs::remove_dir_all(&base);
    for layout in ["lib/modules", "usr/lib/modules"] {
        std::fs::create_dir_all(base.join(layout))?;
        std::os::unix::fs::symlink(&modules, base.join(layout).join(version))?;
    }
    let out = Command::new("depmod")
        .arg("-b")
        .arg(&base)
        .arg(version)
        .output()
        .context("cannot run depmod (install kmod)");
    let _ = std::fs::remove_dir_all(&base);
    let out = out?;
    if !out.status.success() {
        bail!("depmod for {} failed: {}", modules.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let dep = std::fs::read_to_string(modules.join("modules.dep")).context("depmod wrote no modules.dep")?;
    let listed = dep.lines().filter(|l| l.contains(':')).count();
    let files = module_files(&modules)?.len();
    if listed != files {
        let _ = std::fs::remove_file(modules.join("modules.dep"));
        bail!(
            "depmod listed {listed} of the {files} modules in {}: it cannot read the others \
             (`kmod --version` shows which compressions it reads)",
            modules.display()
        );
    }
    Ok(())
}

/// Module files to load, dependencies first, as paths relative to lib/modules/<ver>.
/// Each of [`MODULES`] must be in the kernel's modules.dep or modules.builtin: one in
/// neither is an error naming it, before any guest boots.
/// `extra`: modules a guest needs beyond [`MODULES`] (the benchmark's iptables targets).
fn module_order(modules: &Path, extra: &[&str]) -> Result<Vec<String>> {
    ensure_modules_dep(modules)?;
    let dep = std::fs::read_to_string(modules.join("modules.dep")).context("modules.dep")?;
    let deps: Vec<(String, Vec<String>)> = dep
        .lines()
        .filter_map(|l| {
            let (m, d) = l.split_once(':')?;
            Some((m.to_string(), d.split_whitespace().map(str::to_string).collect()))
        })
        .collect();
    let builtin: BTreeSet<String> = std::fs::read_to_string(modules.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .map(module_name)
        .collect();
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
    let mut missing = Vec::new();
    for want in MODULES.iter().chain(extra) {
        if let Some((m, _)) = deps.iter().find(|(k, _)| module_name(k) == *want) {
            visit(&m.clone(), &deps, &mut order, &mut seen);
        } else if !builtin.contains(*want) {
            missing.push(*want);
        }
    }
    if !missing.is_empty() {
        bail!(
            "kernel modules {} are neither in {dir}/modules.dep nor in {dir}/modules.builtin: \
             this kernel cannot run the tests",
            missing.join(", "),
            dir = modules.display()
        );
    }
    Ok(order)
}

/// Copies a module, decompressed, to `root/lib/modules`; returns the line for the
/// guest's /modules.list: the module's name and its file there.
fn install_module(modules: &Path, rel: &str, root: &Path) -> Result<String> {
    let plain = rel.trim_end_matches(".xz").trim_end_matches(".zst").trim_end_matches(".gz").to_string();
    let dst = root.join("lib/modules").join(&plain);
    std::fs::create_dir_all(dst.parent().expect("module path has a parent"))?;
    let bytes = decompress(&modules.join(rel))
        .with_context(|| format!("module {} (listed in modules.dep)", module_name(rel)))?;
    std::fs::write(&dst, bytes)?;
    Ok(format!("{} {plain}", module_name(rel)))
}

pub struct Payload {
    pub netpath: PathBuf,
    pub tests: Vec<PathBuf>,
    /// The tests' helper programs (netpath-tests' src/bin), found through
    /// $NETPATH_TEST_TOOLS in the guest.
    pub tools: Vec<PathBuf>,
    /// The cross-node tests' store, installed as /usr/bin/etcd (the tests find it on
    /// the PATH); None for a guest that runs no test.
    pub etcd: Option<PathBuf>,
    /// Host programs of ours run as they are in the guest, installed as /bin/NAME with
    /// their libraries (the benchmark's xtask itself).
    pub programs: Vec<PathBuf>,
    /// Tools beyond [`TOOLS`] the guest runs, taken from the host when it has them.
    pub extra_tools: &'static [&'static str],
    /// Modules beyond [`MODULES`] the guest loads (checked as strictly).
    pub extra_modules: &'static [&'static str],
}

/// What the guest runs: which tests, how often, and for how long at most.
#[derive(Clone, Debug)]
pub struct GuestTests {
    /// Passed to every test binary (a substring of test names).
    pub filter: Option<String>,
    /// Run the ignored tests only (libtest's `--ignored`).
    pub ignored: bool,
    /// Seconds a test binary may run before it is killed.
    pub binary_timeout: u64,
    /// Runs of each binary, one after the other (a flakiness check: `--repeat 50`).
    pub repeat: u32,
    /// Test binaries this guest leaves to another (announced, never counted).
    pub elsewhere: Vec<String>,
    /// Variables exported to the tests (name, value), taken from the host's.
    pub env: Vec<(String, String)>,
}

/// Builds `dir/initramfs.gz` for `kernel` with `init` as its /init; returns its path.
pub fn build(kernel: &Kernel, payload: &Payload, init: &str, dir: &Path) -> Result<PathBuf> {
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
    for tool in TOOLS.iter().chain(payload.extra_tools) {
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
    std::fs::create_dir_all(root.join("usr/bin"))?;
    if let Some(etcd) = &payload.etcd {
        install_libs(&root, etcd)?;
        std::fs::copy(etcd, root.join("usr/bin/etcd")).context("copy etcd")?;
    }
    for bin in std::iter::once(&payload.netpath).chain(&payload.programs) {
        install_libs(&root, bin)?;
        let name = bin.file_name().ok_or_else(|| anyhow!("bad program path {}", bin.display()))?;
        install_stripped(bin, &root.join("bin").join(name))?;
    }
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
    let mut list = String::new();
    if let Some(modules) = &kernel.modules {
        let order = module_order(modules, payload.extra_modules);
        for rel in order.with_context(|| format!("kernel {}", kernel.label))? {
            list.push_str(&install_module(modules, &rel, &root)?);
            list.push('\n');
        }
    }
    std::fs::write(root.join("modules.list"), list)?;
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

/// The guest's /init: mounts; the modules in dependency order, each failure reported
/// (`NETPATH-VM-MODULE-FAILED name: error`); a preflight that builds, in a namespace of
/// its own, what the labs build (veth, bridge, vxlan, macvlan, ipvlan, clsact with a cls_bpf
/// filter, iptables' nat table), each failure reported (`NETPATH-VM-PREFLIGHT-FAILED
/// what: error`); and when anything failed, no test at all (`NETPATH-VM-NOT-RUN`):
/// a kernel that cannot build the labs is one loud error, not 64 failed tests.
/// Otherwise each test binary, `repeat` times, each run under `binary_timeout` seconds,
/// with markers the host parses, and power-off. `filter` and `env`'s values are
/// quoted (quotes in them are dropped: they cannot break out of the script).
pub(crate) fn init_script(tests: &GuestTests) -> String {
    [BOOT, PREFLIGHT, &test_runs(tests)].concat()
}

/// An /init that boots and checks the labs as [`init_script`]'s does, then runs one
/// `command` (a shell line) with the tests' environment, reported as `NETPATH-VM-DONE
/// name code`, and powers off. The kernel's console messages are silenced first: they
/// would land in the middle of what the command prints. Its output goes through a pipe,
/// so that it does not take the serial console for a terminal (no progress bars).
pub(crate) fn command_init(name: &str, command: &str) -> String {
    let run = format!(
        r#"echo 1 > /proc/sys/kernel/printk
export NETPATH_BIN=/bin/netpath RUST_BACKTRACE=1 TMPDIR=/tmp NETPATH_TEST_AGENT_TIMEOUT=600 NETPATH_TEST_GUEST=1
{{ ( {command} ); echo $? > /tmp/{name}.rc; }} 2>&1 | cat
echo "NETPATH-VM-DONE {name} $(cat /tmp/{name}.rc)"
echo NETPATH-VM-END
poweroff -f
"#
    );
    [BOOT, PREFLIGHT, &run].concat()
}

/// Mounts, then the modules in dependency order, each failure reported.
const BOOT: &str = r#"#!/bin/busybox sh
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
echo "NETPATH-VM-BEGIN $(uname -r)"
failed=
# One "name file" line per module, dependencies first. A module the kernel already
# loaded (as another's dependency) is no failure.
while read -r name file; do
  [ -n "$name" ] || continue
  [ -d /sys/module/$name ] && continue
  if ! err=$(insmod /lib/modules/$file 2>&1) && [ ! -d /sys/module/$name ]; then
    echo "NETPATH-VM-MODULE-FAILED $name: $err" | tr '\n' ' '; echo
    failed=1
  fi
done < /modules.list
"#;

/// Builds in a namespace of its own what the labs build; when anything (a module
/// included) failed, powers off before any test.
const PREFLIGHT: &str = r#"probe() {
  what=$1; shift
  if ! err=$("$@" 2>&1); then
    echo "NETPATH-VM-PREFLIGHT-FAILED $what: $err" | tr '\n' ' '; echo
    failed=1
  fi
}
# Debian's busybox shell runs its own applets before PATH (its ip has no netns, no
# veth): the preflight names the real tools, which the tests find on PATH.
real() {
  for d in /usr/sbin /usr/bin; do [ -x $d/$1 ] && { echo $d/$1; return; }; done
  echo "$1-is-missing"
}
IP=$(real ip) TC=$(real tc) IPT=$(real iptables)
ip link set lo up
$IP netns add npvmprobe
probe veth $IP -n npvmprobe link add npv0 type veth peer name npv1
probe bridge $IP -n npvmprobe link add npbr0 type bridge
probe vxlan $IP -n npvmprobe link add npvx0 type vxlan id 7 dstport 4789
probe macvlan $IP -n npvmprobe link add npmv0 link npv0 type macvlan
# On the pair's other end: a device is the port of one kind of sub-interface only.
probe ipvlan $IP -n npvmprobe link add npiv0 link npv1 type ipvlan mode l2
probe clsact $TC -n npvmprobe qdisc add dev npv0 clsact
probe cls_bpf $TC -n npvmprobe filter add dev npv0 ingress bpf bytecode '1,6 0 0 4294967295,'
probe iptables-nat $IP netns exec npvmprobe $IPT -t nat -S
$IP netns del npvmprobe
if [ -n "$failed" ]; then
  echo "NETPATH-VM-NOT-RUN: this kernel cannot build the test labs (see above); no test was run"
  poweroff -f
fi
echo NETPATH-VM-READY
"#;

/// Each test binary, `repeat` times, bounded, with the markers the host parses; then
/// power-off.
fn test_runs(tests: &GuestTests) -> String {
    let GuestTests { filter, ignored, binary_timeout, repeat, elsewhere, env } = tests;
    let elsewhere = elsewhere.iter().map(|b| format!(" {b} ")).collect::<String>();
    let quoted = |v: &str| format!("'{}'", v.replace('\'', ""));
    let filter = filter.as_deref().map(quoted).unwrap_or_default();
    let ignored = if *ignored { " --ignored" } else { "" };
    let env: String = env.iter().map(|(k, v)| format!("export {k}={}\n", quoted(v))).collect();
    format!(
        r#"# Software emulation is slow: give the agent minutes, not seconds, to load the datapath
# (15-20 s per start on 5.10). The crash test walks one write step, before the rename
# (a half-built endpoint to clean up at start), instead of all six: the state store is
# plain file I/O, the same on every kernel, and the host run walks them all. The soak
# runs 20 s, and its requests wait up to 20 s: with one vCPU, a guest's agent restart
# holds the CPU in the verifier for up to half a minute.
export NETPATH_BIN=/bin/netpath NETPATH_TEST_TOOLS=/test-tools RUST_BACKTRACE=0 TMPDIR=/tmp NETPATH_TEST_AGENT_TIMEOUT=600
export NETPATH_CRASH_STEPS=written NETPATH_SOAK_SECS=20 NETPATH_SOAK_WAIT_SECS=20
export NETPATH_TEST_NODE_LEASE=10 NETPATH_TEST_GUEST=1
{env}cd /tests
for t in *; do
  case " {elsewhere} " in
    *" $t "*) echo "NETPATH-VM-ELSEWHERE $t"; continue ;;
  esac
  for run in $(seq {repeat}); do
    # A test binary that hangs must not take the others with it.
    # --nocapture: a test's "netpath-test-skipped" line must reach the console.
    # --report-time (unstable, hence RUSTC_BOOTSTRAP): each test's time on the console,
    # where the CI budget goes.
    RUSTC_BOOTSTRAP=1 timeout {binary_timeout} ./$t --test-threads=2 --nocapture -Z unstable-options --report-time{ignored} {filter}
    echo "NETPATH-VM-DONE $t $?"
  done
done
echo NETPATH-VM-END
poweroff -f
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(what: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("npvm-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The smallest file depmod takes for a module: an ELF64 x86-64 relocatable object
    /// with a section-name table and nothing else.
    fn fake_module() -> Vec<u8> {
        let shstrtab = b"\0.shstrtab\0";
        let shoff = 64 + 16u64;
        let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec();
        for (v, n) in [(1u64, 2), (62, 2), (1, 4), (0, 8), (0, 8), (shoff, 8), (0, 4)] {
            elf.extend_from_slice(&v.to_le_bytes()[..n]);
        }
        // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
        for v in [64u16, 0, 0, 64, 2, 1] {
            elf.extend_from_slice(&v.to_le_bytes());
        }
        elf.extend_from_slice(shstrtab);
        elf.resize(shoff as usize + 64, 0);
        // .shstrtab: name 1, type STRTAB, at offset 64.
        for (v, n) in [(1u64, 4), (3, 4), (0, 8), (0, 8), (64, 8), (shstrtab.len() as u64, 8), (0, 4), (0, 4)]
        {
            elf.extend_from_slice(&v.to_le_bytes()[..n]);
        }
        elf.extend_from_slice(&1u64.to_le_bytes());
        elf.extend_from_slice(&0u64.to_le_bytes());
        elf
    }

    /// Writes `bytes` to `path`, compressed as its extension says (xz, zst, gz or none).
    fn write_compressed(path: &Path, bytes: &[u8]) {
        use std::io::Write as _;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let tool = match path.extension().and_then(|e| e.to_str()) {
            Some("xz") => "xz",
            Some("zst") => "zstd",
            Some("gz") => "gzip",
            _ => return std::fs::write(path, bytes).unwrap(),
        };
        let mut child = Command::new(tool)
            .arg("-c")
            .stdin(std::process::Stdio::piped())
            .stdout(std::fs::File::create(path).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        child.stdin.take().unwrap().write_all(bytes).unwrap();
        assert!(child.wait().unwrap().success());
    }

    /// modules.builtin naming every needed module except `except`.
    fn builtin_except(dir: &Path, except: &[&str]) {
        let lines: Vec<String> = MODULES
            .iter()
            .filter(|m| !except.contains(m))
            .map(|m| format!("kernel/net/x/{}.ko", m.replace('_', "-")))
            .collect();
        std::fs::write(dir.join("modules.builtin"), lines.join("\n")).unwrap();
    }

    #[test]
    fn modules_load_after_their_dependencies_and_built_ins_are_skipped() {
        let dir = scratch("order");
        std::fs::write(
            dir.join("modules.dep"),
            "kernel/net/bridge/bridge.ko.xz: kernel/net/802/stp.ko.xz kernel/net/llc/llc.ko.xz\n\
             kernel/net/802/stp.ko.xz: kernel/net/llc/llc.ko.xz\n\
             kernel/net/llc/llc.ko.xz:\n\
             kernel/drivers/net/veth.ko.xz:\n\
             kernel/drivers/net/dummy.ko.xz:\n\
             kernel/drivers/net/ipvlan/ipvtap.ko.xz: kernel/drivers/net/ipvlan/ipvlan.ko.xz kernel/drivers/net/tap.ko.xz\n\
             kernel/drivers/net/ipvlan/ipvlan.ko.xz:\n\
             kernel/drivers/net/tap.ko.xz:\n",
        )
        .unwrap();
        builtin_except(&dir, &["bridge", "veth", "ipvlan"]);
        let order = module_order(&dir, &[]).unwrap();
        let at = |m: &str| {
            order.iter().position(|o| o.contains(m)).unwrap_or_else(|| panic!("{m} not in {order:?}"))
        };
        assert!(at("llc") < at("stp") && at("stp") < at("bridge"), "{order:?}");
        assert!(order.iter().any(|o| o.ends_with("veth.ko.xz")));
        // ipvlan from its own directory, without ipvtap (which needs it, not the reverse).
        assert!(order.contains(&"kernel/drivers/net/ipvlan/ipvlan.ko.xz".to_string()), "{order:?}");
        // Only what the tests need (and its dependencies), nothing else the kernel has,
        // and nothing the kernel has built in.
        assert_eq!(order.len(), 5, "{order:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_module_in_neither_modules_dep_nor_modules_builtin_is_a_loud_error_naming_it() {
        let dir = scratch("missing");
        std::fs::write(dir.join("modules.dep"), "kernel/drivers/net/veth.ko.xz:\n").unwrap();
        builtin_except(&dir, &["veth", "vxlan", "macvlan", "ipvlan"]);
        let err = format!("{:#}", module_order(&dir, &[]).unwrap_err());
        assert!(err.contains("vxlan, macvlan, ipvlan"), "{err}");
        assert!(err.contains("modules.builtin") && err.contains("modules.dep"), "{err}");
        assert!(!err.contains("veth"), "{err}");
        // No modules.builtin at all: every module not in modules.dep is missing.
        std::fs::remove_file(dir.join("modules.builtin")).unwrap();
        let err = format!("{:#}", module_order(&dir, &[]).unwrap_err());
        assert!(err.contains("bridge") && err.contains("sch_ingress"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn modules_are_carried_plain_whatever_their_compression() {
        let elf = fake_module();
        let dir = scratch("compressed");
        let root = dir.join("initramfs");
        for (rel, name) in [
            ("kernel/drivers/net/veth.ko.xz", "veth"),
            ("kernel/net/sched/cls_bpf.ko.zst", "cls_bpf"),
            ("kernel/net/sched/sch_ingress.ko.gz", "sch_ingress"),
            ("kernel/drivers/net/mac-vlan.ko", "mac_vlan"),
        ] {
            write_compressed(&dir.join(rel), &elf);
            let line = install_module(&dir, rel, &root).unwrap();
            let plain = rel.rsplit_once(".ko").unwrap().0.to_string() + ".ko";
            assert_eq!(line, format!("{name} {plain}"));
            assert_eq!(std::fs::read(root.join("lib/modules").join(&plain)).unwrap(), elf, "{rel}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_module_that_does_not_decompress_is_an_error_naming_it() {
        let dir = scratch("corrupt");
        let rel = "kernel/drivers/net/veth.ko.xz";
        std::fs::create_dir_all(dir.join("kernel/drivers/net")).unwrap();
        // xz's magic, then garbage.
        std::fs::write(dir.join(rel), b"\xfd7zXZ\x00garbage").unwrap();
        let err = format!("{:#}", install_module(&dir, rel, &dir.join("initramfs")).unwrap_err());
        assert!(err.contains("module veth") && err.contains("xz -dc"), "{err}");
        // Neither ELF nor a compression we know.
        std::fs::write(dir.join(rel), b"PK\x03\x04zip").unwrap();
        let err = format!("{:#}", install_module(&dir, rel, &dir.join("initramfs")).unwrap_err());
        assert!(err.contains("neither an ELF file nor xz, zstd or gzip"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A Debian 13 package: merged /usr, no modules.dep (depmod runs at install), modules
    /// compressed; here with every compression, gzip included (which Debian 12's depmod
    /// cannot read: unpacked first).
    #[test]
    fn depmod_indexes_a_merged_usr_tree_of_every_compression() {
        let pkg = scratch("usrtree");
        let modules = pkg.join("usr/lib/modules/6.12.9+deb13-cloud-amd64");
        let elf = fake_module();
        for rel in [
            "kernel/drivers/net/veth.ko.xz",
            "kernel/net/bridge/bridge.ko.zst",
            "kernel/drivers/net/vxlan/vxlan.ko.gz",
            "kernel/drivers/net/macvlan.ko",
            "kernel/drivers/net/ipvlan/ipvlan.ko.xz",
        ] {
            write_compressed(&modules.join(rel), &elf);
        }
        builtin_except(&modules, &["veth", "bridge", "vxlan", "macvlan", "ipvlan"]);
        let order = module_order(&modules, &[]).unwrap();
        let dep = std::fs::read_to_string(modules.join("modules.dep")).unwrap();
        for m in ["veth.ko.xz:", "bridge.ko.zst:", "vxlan.ko:", "macvlan.ko:", "ipvlan/ipvlan.ko.xz:"] {
            assert!(dep.contains(m), "{m} not in modules.dep:\n{dep}");
        }
        assert_eq!(order.len(), 5, "{order:?}");
        assert!(!modules.with_file_name(".depmod-6.12.9+deb13-cloud-amd64").exists(), "staging left behind");
        let root = pkg.join("initramfs");
        for rel in &order {
            install_module(&modules, rel, &root).unwrap();
        }
        assert_eq!(std::fs::read(root.join("lib/modules/kernel/drivers/net/vxlan/vxlan.ko")).unwrap(), elf);
        assert_eq!(std::fs::read(root.join("lib/modules/kernel/drivers/net/ipvlan/ipvlan.ko")).unwrap(), elf);
        let _ = std::fs::remove_dir_all(&pkg);
    }

    #[test]
    fn compressions_are_told_by_their_magic() {
        assert_eq!(Compression::of(b"\x7fELF\x02"), Some(Compression::None));
        assert_eq!(Compression::of(b"\xfd7zXZ\x00\x00"), Some(Compression::Xz));
        assert_eq!(Compression::of(b"\x28\xb5\x2f\xfd\x24"), Some(Compression::Zstd));
        assert_eq!(Compression::of(b"\x1f\x8b\x08"), Some(Compression::Gzip));
        assert_eq!(Compression::of(b""), None);
    }

    #[test]
    fn the_init_script_loads_modules_loudly_probes_the_labs_and_runs_every_binary_bounded() {
        let init = init_script(&GuestTests { filter: Some("nat'; reboot; echo '".into()), ..one_run() });
        for needed in [
            "mount -t bpf bpf /sys/fs/bpf",
            "mount -t cgroup2",
            "insmod /lib/modules/$file 2>&1",
            "NETPATH-VM-MODULE-FAILED $name",
            "probe veth $IP -n npvmprobe link add",
            "probe cls_bpf $TC -n npvmprobe filter add",
            "probe ipvlan $IP -n npvmprobe link add npiv0 link npv1 type ipvlan mode l2",
            "NETPATH-VM-PREFLIGHT-FAILED $what",
            "NETPATH-VM-NOT-RUN",
            "NETPATH_TEST_TOOLS=/test-tools",
            "NETPATH_CRASH_STEPS=written",
            "NETPATH_SOAK_SECS=20",
            "NETPATH_SOAK_WAIT_SECS=20",
            "NETPATH_TEST_AGENT_TIMEOUT=",
            "timeout 1800 ./$t",
            "NETPATH-VM-BEGIN",
            "NETPATH-VM-DONE $t $?",
            "poweroff -f",
        ] {
            assert!(init.contains(needed), "{needed:?} missing from:\n{init}");
        }
        // A failed insmod is never silenced again.
        assert!(!init.contains("2>/dev/null"), "{init}");
        // The tests start only after the preflight.
        assert!(init.find("NETPATH-VM-NOT-RUN").unwrap() < init.find("cd /tests").unwrap());
        assert!(init.contains("'nat; reboot; echo '"), "filter not quoted as one word:\n{init}");
        assert!(!init_script(&one_run()).contains("''"));
        assert!(init.contains("for run in $(seq 1)"), "{init}");
        let again = init_script(&GuestTests { binary_timeout: 600, ..one_run() });
        assert!(again.contains("timeout 600 ./$t"), "{again}");
    }

    /// Runs the init script of `tests` under the host's sh in `dir`, with stand-ins on
    /// PATH for insmod (`insmod`: its body) and for ip, tc and the rest, the modules of
    /// `dir/modules.list`, and the test binaries in `dir/tests`. Returns the console.
    fn run_init(dir: &Path, tests: &GuestTests, insmod: &str) -> String {
        run_script(dir, &init_script(tests), insmod)
    }

    /// [`run_init`] for any script of ours.
    fn run_script(dir: &Path, script: &str, insmod: &str) -> String {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let stub = |name: &str, body: &str| {
            let p = bin.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        stub("insmod", insmod);
        for ok in ["ip", "tc", "mount", "mkdir", "uname"] {
            stub(ok, "true");
        }
        let script = script
            .replace("/bin/busybox --install -s /bin\n", "")
            // Never the host's console level, nor its /tmp.
            .replace("/tmp/", &format!("{}/", dir.display()))
            .replace("/proc/sys/kernel/printk", &dir.join("printk").display().to_string())
            .replace(
                "export PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                &format!("export PATH={}:$PATH", bin.display()),
            )
            .replace("/modules.list", &dir.join("modules.list").display().to_string())
            .replace("/lib/modules/$file", "$file")
            .replace("poweroff -f", "echo POWEROFF; exit 0")
            .replace("for d in /usr/sbin /usr/bin;", &format!("for d in {};", bin.display()))
            .replace("/sys/module/$name", &format!("{}/$name", dir.join("sys").display()))
            .replace("cd /tests", &format!("cd {}", dir.join("tests").display()));
        let out = Command::new("sh").arg("-c").arg(&script).current_dir(dir).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn one_run() -> GuestTests {
        GuestTests {
            filter: None,
            ignored: false,
            binary_timeout: 1800,
            repeat: 1,
            elsewhere: Vec::new(),
            env: Vec::new(),
        }
    }

    /// The script as busybox runs it: a module that fails to load is reported by name
    /// with insmod's error, one already loaded is not, and nothing past the preflight
    /// runs.
    #[test]
    fn a_module_that_fails_to_load_stops_the_guest_before_any_test_with_its_name() {
        let dir = scratch("init");
        std::fs::create_dir_all(dir.join("sys/llc")).unwrap();
        std::fs::write(
            dir.join("modules.list"),
            "llc kernel/net/llc/llc.ko\nveth kernel/drivers/net/veth.ko\n",
        )
        .unwrap();
        let console = run_init(
            &dir,
            &one_run(),
            "case $1 in *veth*) echo \"insmod: can't insert '$1': unknown symbol in module\" >&2; exit 1;; esac",
        );
        assert!(
            console.contains("NETPATH-VM-MODULE-FAILED veth: insmod: can't insert 'kernel/drivers/net/veth.ko': unknown symbol in module"),
            "{console}"
        );
        assert!(!console.contains("MODULE-FAILED llc"), "{console}");
        assert!(console.contains("NETPATH-VM-NOT-RUN"), "{console}");
        assert!(!console.contains("NETPATH-VM-READY") && !console.contains("NETPATH-VM-DONE"), "{console}");
        // The stand-ins, not busybox's applets, were asked (they succeed: no preflight
        // failure).
        assert!(!console.contains("PREFLIGHT-FAILED"), "{console}");
        let parsed = super::super::outcome::parse(&console);
        assert_eq!(parsed.module_failures.len(), 1, "{parsed:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `--ignored` reaches every binary with the filter, and the host's knobs the tests'
    /// environment, quoted.
    #[test]
    fn ignored_tests_run_with_the_filter_and_the_passed_environment() {
        let dir = scratch("ignored");
        std::fs::write(dir.join("modules.list"), "").unwrap();
        let tests = dir.join("tests");
        std::fs::create_dir_all(&tests).unwrap();
        let p = tests.join("fuzz");
        let body =
            "echo \"args: $*\"; echo \"sizes: $NETPATH_CT_PRESSURE_SIZES flows: $NETPATH_CT_PRESSURE_FLOWS\"";
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let guest = GuestTests {
            filter: Some("measure_fresh".into()),
            ignored: true,
            env: vec![
                ("NETPATH_CT_PRESSURE_SIZES".into(), "256,128".into()),
                ("NETPATH_CT_PRESSURE_FLOWS".into(), "50'; reboot; '".into()),
            ],
            ..one_run()
        };
        let console = run_init(&dir, &guest, "true");
        assert!(console.contains("args: --test-threads=2 --nocapture -Z unstable-options --report-time --ignored measure_fresh"), "{console}");
        assert!(console.contains("sizes: 256,128 flows: 50; reboot; "), "{console}");
        let plain = run_init(&dir, &GuestTests { filter: Some("measure_fresh".into()), ..one_run() }, "true");
        assert!(
            plain.contains(
                "args: --test-threads=2 --nocapture -Z unstable-options --report-time measure_fresh\n"
            ),
            "{plain}"
        );
        assert!(plain.contains("sizes:  flows: \n"), "{plain}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Every test binary runs `repeat` times and each run is counted; a binary left to
    /// another guest is announced and never run.
    #[test]
    fn each_binary_runs_repeat_times_except_those_left_to_another_guest() {
        let dir = scratch("repeat");
        std::fs::write(dir.join("modules.list"), "").unwrap();
        let tests = dir.join("tests");
        std::fs::create_dir_all(&tests).unwrap();
        for name in ["crash", "nat"] {
            let p = tests.join(name);
            let summary =
                "test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0s";
            std::fs::write(&p, format!("#!/bin/sh\necho {name} ran\necho '{summary}'\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let guest = GuestTests { repeat: 3, elsewhere: vec!["crash".into()], ..one_run() };
        let console = run_init(&dir, &guest, "true");
        assert_eq!(console.matches("nat ran").count(), 3, "{console}");
        assert!(!console.contains("crash ran"), "{console}");
        assert!(console.contains("NETPATH-VM-ELSEWHERE crash"), "{console}");
        let parsed = super::super::outcome::parse(&console);
        assert_eq!((parsed.passed, parsed.failed), (6, 0), "{parsed:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `bench --vm`'s guest: one command after the same boot and preflight, its output
    /// and exit code on the console, the kernel's console messages silenced first.
    #[test]
    fn a_command_guest_runs_its_command_once_and_reports_its_exit() {
        let dir = scratch("command");
        std::fs::write(dir.join("modules.list"), "").unwrap();
        let init = command_init("bench", "echo measuring; echo oops >&2; exit 3");
        assert!(init.contains("NETPATH-VM-READY") && init.contains("probe ipvlan"), "{init}");
        assert!(!init.contains("cd /tests"), "{init}");
        let console = run_script(&dir, &init, "true");
        assert!(console.contains("measuring\noops\n"), "stderr not on the console:\n{console}");
        assert!(console.contains("NETPATH-VM-DONE bench 3\nNETPATH-VM-END"), "{console}");
        assert_eq!(std::fs::read_to_string(dir.join("printk")).unwrap(), "1\n");
        let parsed = super::super::outcome::parse(&console);
        assert_eq!(parsed.binary_failures, ["bench (exit 3)"]);
        assert!(parsed.finished);
        let ok = run_script(&dir, &command_init("bench", "true"), "true");
        assert!(ok.contains("NETPATH-VM-DONE bench 0"), "{ok}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
