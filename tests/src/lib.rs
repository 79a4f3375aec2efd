//! The namespace lab every integration test builds its world with.
//!
//! A [`Lab`] is a "node" namespace (where the agent runs) with an uplink to an "outside"
//! host namespace, plus container namespaces. Names carry the test process's PID and a
//! counter so tests run in parallel without clashing; everything (namespaces, pins,
//! state, the agent process) is removed on drop, which also runs on panic. The root
//! namespace is never touched: the agent is started inside the node namespace.
use std::{
    fs,
    net::Ipv4Addr,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod cluster;
#[cfg(feature = "datapath")]
pub mod model;
pub mod pkt;
pub mod trace;

/// Prefix of every namespace and bpffs directory the tests create; `cargo xtask test`
/// sweeps leftovers of an interrupted run by it.
pub const TEST_PREFIX: &str = "npt";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// How long a test waits for an agent to start: 60 s, or NETPATH_TEST_AGENT_TIMEOUT
/// (the VM runs raise it: under emulation, with guests sharing the host's CPUs, the
/// verifier alone can take most of a minute). Only a hang waits that long.
pub fn agent_start_timeout() -> Duration {
    let secs = std::env::var("NETPATH_TEST_AGENT_TIMEOUT").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    Duration::from_secs(secs)
}

/// A fresh name for one of this process's labs: `<prefix><pid>x<n>` (see [`sweep`]).
pub fn lab_id(prefix: &str) -> String {
    format!("{prefix}{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The netpath binary under test: $NETPATH_BIN (set by `cargo xtask test`), else the
/// workspace's debug build.
pub fn netpath_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NETPATH_BIN") {
        return p.into();
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/netpath");
    assert!(p.exists(), "{} missing: run `cargo build -p netpath` or `cargo xtask test`", p.display());
    p
}

/// A helper program of this crate (src/bin), given as `env!("CARGO_BIN_EXE_<name>")`:
/// in the VM runs, where cargo's build path does not exist, the copy in
/// $NETPATH_TEST_TOOLS.
pub fn tool(built: &str) -> PathBuf {
    match std::env::var_os("NETPATH_TEST_TOOLS") {
        Some(dir) => Path::new(&dir).join(Path::new(built).file_name().expect("a file name")),
        None => built.into(),
    }
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "integration tests build network namespaces and need root: run `cargo xtask test` as root"
    );
}

/// A copy of an executable that any user may run, wherever the original lives: root's
/// checkout is often under /root (mode 700), where another user cannot even reach the
/// binary. The copy is in a 0755 directory of its own under /tmp (world-traversable),
/// removed on drop.
pub struct SharedCopy {
    dir: PathBuf,
    pub path: PathBuf,
}

impl SharedCopy {
    pub fn of(bin: &Path) -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = Path::new("/tmp").join(format!(
            "netpath-{TEST_PREFIX}{}x{}-bin",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        for a in dir.ancestors().skip(1) {
            let mode =
                fs::metadata(a).unwrap_or_else(|e| panic!("{}: {e}", a.display())).permissions().mode();
            assert!(
                mode & 0o001 != 0,
                "{} is not world-traversable: no place for a shared copy",
                a.display()
            );
        }
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join(bin.file_name().expect("a file name"));
        fs::copy(bin, &path).unwrap_or_else(|e| panic!("copy {}: {e}", bin.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        SharedCopy { dir, path }
    }
}

impl Drop for SharedCopy {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Makes `cmd` run in the network namespace at `netns`, and only there: its mounts stay
/// the caller's (unlike `ip netns exec`).
pub fn in_netns<'a>(cmd: &'a mut Command, netns: &Path) -> &'a mut Command {
    let ns = fs::File::open(netns).unwrap_or_else(|e| panic!("{}: {e}", netns.display()));
    // SAFETY: setns is async-signal-safe; runs in the forked child before exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
        })
    }
}

/// Runs a command that builds the test world; panics with its stderr when it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A directory of the tests' own on the host's bpffs, mounting one at /sys/fs/bpf as the
/// agent does when a fresh machine has none yet (tests may run before any agent).
#[cfg(feature = "datapath")]
pub fn bpffs_dir(name: &str) -> PathBuf {
    netpath::plumbing::bpffs::ensure(Path::new(&format!("/sys/fs/bpf/{name}"))).expect("bpffs directory")
}

#[cfg(feature = "datapath")]
/// Writes `key -> value` into the map pinned at `pin` (bpftool), laid out as netpath's
/// types are: an entry crafted by the test rather than made by traffic.
pub fn map_update<K: bytemuck::Pod, V: bytemuck::Pod>(pin: &Path, key: &K, value: &V) {
    let mut args: Vec<String> = ["bpftool", "map", "update", "pinned"].map(String::from).into();
    args.push(pin.to_string_lossy().into_owned());
    args.push("key".into());
    args.extend(bytemuck::bytes_of(key).iter().map(u8::to_string));
    args.push("value".into());
    args.extend(bytemuck::bytes_of(value).iter().map(u8::to_string));
    sh(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

#[cfg(feature = "datapath")]
/// A masqueraded flow's two conntrack entries as the datapath creates them, of either
/// family (`A`: the address): `client` (a container's address and port) to `server`, its
/// source rewritten to `node`; the reply entry keyed by the translated tuple reversed,
/// rewriting the destination back. Both in `tcp_state`, last seen at `last_seen_ns`;
/// the reply entry has seen a packet when the state is established.
pub fn snat_pair<A: Copy + Default>(
    proto: u8,
    client: (A, u16),
    server: (A, u16),
    node: (A, u16),
    tcp_state: u8,
    last_seen_ns: u64,
) -> [(netpath_common::conntrack::Tuple<A>, netpath_common::conntrack::NatEntry<A>); 2] {
    use netpath_common::conntrack::{NatEntry, Tuple, CT_F_DNAT, CT_F_REPLY, CT_F_SNAT};
    let seen = NatEntry { tcp_state, created_ns: last_seen_ns, last_seen_ns, ..Default::default() };
    let key = Tuple {
        src: client.0,
        dst: server.0,
        sport: client.1.to_be_bytes(),
        dport: server.1.to_be_bytes(),
        proto,
        _pad: [0; 3],
    };
    let orig = NatEntry {
        nat_src: node.0,
        nat_sport: node.1.to_be_bytes(),
        flags: CT_F_SNAT,
        packets: 1,
        bytes: 60,
        ..seen
    };
    // An established flow has been answered (the collector times an unanswered one out
    // as a SYN).
    let answered = tcp_state == netpath_common::conntrack::TCP_ESTABLISHED;
    let reply = NatEntry {
        nat_dst: client.0,
        nat_dport: client.1.to_be_bytes(),
        flags: CT_F_DNAT | CT_F_REPLY,
        packets: u64::from(answered),
        bytes: if answered { 60 } else { 0 },
        ..seen
    };
    [(key, orig), (key.partner(&orig), reply)]
}

#[cfg(feature = "datapath")]
/// The TCP states (original direction, reply direction) of the masqueraded flow whose
/// client port is `sport`, among `entries` (a family's conntrack tables).
pub fn tcp_states_of<A: std::fmt::Debug>(
    entries: &[(netpath_common::conntrack::Tuple<A>, netpath_common::conntrack::NatEntry<A>)],
    sport: u16,
) -> (u8, u8) {
    use netpath_common::conntrack::CT_F_REPLY;
    let state = |reply: bool| {
        let (_, e) = entries
            .iter()
            .find(|(k, e)| {
                let port = if reply { e.nat_dport } else { k.sport };
                (e.flags & CT_F_REPLY != 0) == reply && port == sport.to_be_bytes()
            })
            .unwrap_or_else(|| panic!("no entry for port {sport}: {entries:?}"));
        e.tcp_state
    };
    (state(false), state(true))
}

#[cfg(feature = "datapath")]
/// Loads netpath's datapath inside a fresh namespace (pins in a bpffs directory of its
/// own), runs `prepare` there first (`ip` commands that build the namespace's devices
/// and routes, without the leading `ip`), then `check` with the loaded datapath.
/// Everything is removed afterwards, also when `check` panics (the panic is re-raised).
pub fn with_datapath(
    prepare: &[&[&str]],
    check: impl FnOnce(&mut netpath::datapath::Datapath) + Send + 'static,
) {
    with_datapath_pins(prepare, move |dp, _| check(dp))
}

#[cfg(feature = "datapath")]
/// [`with_datapath`], also giving `check` the pin directory, for reading the maps the
/// way the CLI does (`netpath::datapath::Inspector`).
pub fn with_datapath_pins(
    prepare: &[&[&str]],
    check: impl FnOnce(&mut netpath::datapath::Datapath, &Path) + Send + 'static,
) {
    with_datapath_sized(prepare, 1024, check)
}

#[cfg(feature = "datapath")]
/// [`with_datapath_pins`] with a conntrack table of `ct_entries` (as `--ct-max-entries`).
pub fn with_datapath_sized(
    prepare: &[&[&str]],
    ct_entries: u32,
    check: impl FnOnce(&mut netpath::datapath::Datapath, &Path) + Send + 'static,
) {
    require_root();
    let ns =
        Netns::new(format!("{TEST_PREFIX}{}p{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    for args in prepare {
        let mut full = vec!["ip", "-n", ns.name.as_str()];
        full.extend_from_slice(args);
        sh(&full);
    }
    let pins = bpffs_dir(&ns.name);
    let dir = pins.clone();
    let result = ns
        .run(move || {
            // As the agent does on a node: bpf_fib_lookup refuses to route for a
            // namespace that does not forward.
            fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("enable forwarding in the test namespace");
            let mut dp = netpath::datapath::Datapath::load(&dir, ct_entries).expect("load datapath");
            // As the agent does once it takes over the endpoints.
            dp.set_endpoint_slot(true).expect("fill the endpoints' slot");
            check(&mut dp, &dir);
        })
        .join();
    let _ = fs::remove_dir_all(&pins);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Removes what labs named with `prefix` left behind when their process was killed
/// before Drop could run: namespaces, bpffs pins, work directories. Names carry the
/// creating process's PID (`<prefix><pid>x<n>`); a lab whose process still runs (a test
/// run in another checkout) is left alone, so parallel runs never sweep each other.
pub fn sweep(prefix: &str) -> usize {
    let mut removed = 0;
    let entries = |dir: &str| -> Vec<PathBuf> {
        fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default()
    };
    let ours =
        |p: &Path, prefix: &str| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| leftover(n, prefix));
    for p in entries("/run/netns").into_iter().filter(|p| ours(p, prefix)) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        kill_inside(&name);
        if Command::new("ip").args(["netns", "del", &name]).status().is_ok_and(|s| s.success()) {
            removed += 1;
        }
    }
    for p in entries("/sys/fs/bpf").into_iter().filter(|p| ours(p, prefix)) {
        removed += usize::from(fs::remove_dir_all(&p).is_ok());
    }
    let cgroups = cgroup2_root();
    for p in entries(cgroups.to_str().unwrap()).into_iter().filter(|p| ours(p, prefix)) {
        removed += usize::from(fs::remove_dir(&p).is_ok());
    }
    let tmp = std::env::temp_dir();
    for p in entries(tmp.to_str().unwrap()).into_iter().filter(|p| ours(p, &format!("netpath-{prefix}"))) {
        removed += usize::from(fs::remove_dir_all(&p).is_ok());
    }
    removed
}

/// Kills what still runs in the lab namespace `name` (an agent, etcd): after Ctrl-C
/// nothing else stops them, and deleting the namespace's name would leave them running
/// in it, unreachable.
fn kill_inside(name: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() else { return };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
        if pid as u32 != std::process::id() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Is `name` one of `prefix`'s labs whose creating process is gone (or this process)?
fn leftover(name: &str, prefix: &str) -> bool {
    let Some(rest) = name.strip_prefix(prefix) else { return false };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    match digits.parse::<u32>() {
        Ok(pid) => pid == std::process::id() || !Path::new(&format!("/proc/{pid}")).exists(),
        // Not a lab name of ours (no PID after the prefix): leave it.
        Err(_) => false,
    }
}

/// Whether the running kernel is at least `major.minor`. When it is not, prints the
/// line the VM runner counts as an explicit skip (`netpath-test-skipped: kernel lacks
/// WHAT`), so a test that cannot run there is never taken for a pass.
pub fn kernel_has(major: u32, minor: u32, what: &str) -> bool {
    if kernel_at_least(major, minor) {
        return true;
    }
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("netpath-test-skipped: kernel lacks {what} ({major}.{minor}+, running {})", release.trim());
    false
}

/// Whether the tests run in an emulated guest of the VM runs ($NETPATH_TEST_GUEST), where
/// every agent start and netlink round trip costs tens of times what it costs on the
/// host.
pub fn in_guest() -> bool {
    std::env::var_os("NETPATH_TEST_GUEST").is_some()
}

/// `host` repetitions on the host, `guest` in an emulated guest: for tests whose rounds
/// all exercise the same kernel paths, where the guest's minutes buy nothing past the
/// first few (the host runs them all).
pub fn rounds(host: usize, guest: usize) -> usize {
    if in_guest() {
        guest
    } else {
        host
    }
}

/// False in the emulated guests ($NETPATH_TEST_GUEST), after the runner's skip line:
/// for tests whose subject (`what`) is the agents' user space and the control plane,
/// the same on every kernel, which the host run covers; the guests' minutes go to
/// what the kernel does.
pub fn on_the_host(what: &str) -> bool {
    if !in_guest() {
        return true;
    }
    println!("netpath-test-skipped: {what} is user space, run on the host");
    false
}

/// Whether the running kernel has netkit devices (6.7+, CONFIG_NETKIT). When it has
/// not, prints the runner's skip line as [`kernel_has`] does. Told by the kernel's own
/// symbols (the driver's transmit function), not by netpath's probe: a wrong probe in
/// the product then fails the netkit tests instead of skipping them.
pub fn kernel_has_netkit() -> bool {
    if netkit_in_kernel() {
        return true;
    }
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "netpath-test-skipped: kernel lacks netkit devices (6.7+ with CONFIG_NETKIT, running {})",
        release.trim()
    );
    false
}

/// Whether the running kernel makes ipvlan links (CONFIG_IPVLAN, built in or a module it
/// loads on demand). When it does not, prints the runner's skip line as [`kernel_has`]
/// does, with the kernel's own refusal. Told by what the kernel does, an ipvlan link
/// made in a scratch namespace, not by netpath's code: a wrong check in the product then
/// fails the ipvlan tests instead of skipping them. Probed once per test process.
pub fn kernel_has_ipvlan() -> bool {
    static PROBED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let Err(why) = PROBED.get_or_init(|| kernel_makes_link(&["ipvlan", "mode", "l2"])) else {
        return true;
    };
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("netpath-test-skipped: kernel lacks ipvlan ({why}; running {})", release.trim());
    false
}

/// Makes a link of `kind` (`ip link add ... type KIND...`) on a veth in a namespace of its
/// own, which it then removes (with the links): Ok when the kernel made it, else what
/// `ip` said. The parent is a veth because every kernel the tests run on has veth (the
/// VM runner's preflight checks it), where dummy may be a module the guests lack.
fn kernel_makes_link(kind: &[&str]) -> Result<(), String> {
    require_root();
    let ns = Netns::new(format!("{}-probe", lab_id(TEST_PREFIX)));
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(["-n", &ns.name]).args(args).output();
        match out {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!(
                "ip link add type {}: {}",
                kind.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("cannot run ip: {e}")),
        }
    };
    ip(&["link", "add", "probe0", "type", "veth", "peer", "name", "probe1"])?;
    ip(&[&["link", "add", "sub0", "link", "probe0", "type"], kind].concat())
}

/// Does the kernel have the netkit driver, built in or as a loaded module? (A module
/// not yet loaded counts as absent; Debian's 6.12 builds it in.)
pub fn netkit_in_kernel() -> bool {
    use std::io::BufRead as _;
    let Ok(f) = fs::File::open("/proc/kallsyms") else { return false };
    std::io::BufReader::new(f).lines().map_while(Result::ok).any(|l| {
        let mut f = l.split_whitespace();
        let (_, _, name) = (f.next(), f.next(), f.next());
        name == Some("netkit_xmit")
    })
}

/// Is the running kernel at least `major.minor`?
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = release.trim().split(['.', '-']).filter_map(|p| p.parse::<u32>().ok());
    (it.next().unwrap_or(0), it.next().unwrap_or(0)) >= (major, minor)
}

/// Each thread of process `pid`: its name, state, where it waits in the kernel and its
/// kernel stack, as /proc shows them to root.
pub fn threads_of(pid: u32) -> String {
    let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
    let mut out = String::new();
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten().map(|e| e.path());
    for task in tasks {
        let stat = read(&task.join("stat"));
        // The state follows the parenthesised name, which may itself hold spaces.
        let state = stat.rsplit(") ").next().and_then(|r| r.split(' ').next()).unwrap_or("?");
        out.push_str(&format!(
            "  {} {} state {state} wchan {}\n",
            task.file_name().unwrap_or_default().to_string_lossy(),
            read(&task.join("comm")).trim(),
            read(&task.join("wchan")).trim()
        ));
        for frame in read(&task.join("stack")).lines().take(12) {
            out.push_str(&format!("      {frame}\n"));
        }
    }
    out
}

/// The cgroup v2 mount (the unified hierarchy on hybrid systems).
pub fn cgroup2_root() -> PathBuf {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
        })
        .expect("no cgroup v2 mount on this machine")
}

/// One TCP exchange: a server bound to `bind` in `server` echoes what a client in
/// `client` sends to `connect` (`len` patterned bytes); asserts the echo came back
/// whole, and returns the client's address as the server saw it.
pub fn tcp_echo_once(
    server: &Netns,
    bind: impl Into<std::net::SocketAddr>,
    client: &Netns,
    connect: std::net::SocketAddr,
    len: usize,
) -> std::net::SocketAddr {
    use std::io::{Read as _, Write as _};
    let bind: std::net::SocketAddr = bind.into();
    let listener = server.run(move || std::net::TcpListener::bind(bind)).join().unwrap().expect("bind");
    let echo = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        let mut buf = vec![0u8; len];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        peer
    });
    let echoed = client
        .run(move || {
            let mut s = std::net::TcpStream::connect_timeout(&connect, Duration::from_secs(5)).unwrap();
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            s.write_all(&data).unwrap();
            let mut back = vec![0u8; len];
            s.read_exact(&mut back).unwrap();
            back == data
        })
        .join()
        .unwrap();
    assert!(echoed, "the echo of {len} bytes through {connect} came back corrupted");
    echo.join().unwrap()
}

/// A TCP echo server on `addr` in `ns`, one thread per connection, for as long as the
/// test runs.
pub fn echo_server(ns: &Netns, addr: impl Into<std::net::SocketAddr>) {
    use std::io::{Read as _, Write as _};
    let addr: std::net::SocketAddr = addr.into();
    let listener = ns.run(move || std::net::TcpListener::bind(addr)).join().unwrap().expect("bind");
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// One exchange with an echo service at `connect`, from namespace `client`: fails the
/// test unless the bytes come back.
pub fn tcp_echo_once_to(client: &Netns, connect: std::net::SocketAddr) {
    use std::io::{Read as _, Write as _};
    let echoed = client
        .run(move || {
            let mut s = std::net::TcpStream::connect_timeout(&connect, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connect {connect}: {e}"));
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"netpath").unwrap();
            let mut back = [0u8; 7];
            s.read_exact(&mut back).is_ok() && &back == b"netpath"
        })
        .join()
        .unwrap();
    assert!(echoed, "no echo through {connect}");
}

/// A TCP server on `addr` in `ns` that echoes one 5-byte message per connection, `n`
/// connections; joined, the peers it saw.
pub fn tcp_echo_peers(
    ns: &Netns,
    addr: impl Into<std::net::SocketAddr>,
    n: usize,
) -> std::thread::JoinHandle<Vec<std::net::SocketAddr>> {
    use std::io::{Read as _, Write as _};
    let addr: std::net::SocketAddr = addr.into();
    let listener = ns.run(move || std::net::TcpListener::bind(addr)).join().unwrap().expect("bind");
    std::thread::spawn(move || {
        (0..n)
            .map(|_| {
                let (mut s, peer) = listener.accept().unwrap();
                let mut buf = [0u8; 5];
                s.read_exact(&mut buf).unwrap();
                s.write_all(&buf).unwrap();
                peer
            })
            .collect()
    })
}

/// One 5-byte echo over TCP from `client` to `to` ([`tcp_echo_peers`]'s server); the
/// error when it fails (a test may expect a refusal).
pub fn tcp_echo_to(client: &Netns, to: impl Into<std::net::SocketAddr>) -> std::io::Result<()> {
    use std::io::{Read as _, Write as _};
    let to: std::net::SocketAddr = to.into();
    client
        .run(move || {
            let mut s = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"hello")?;
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf)?;
            if &buf != b"hello" {
                return Err(std::io::Error::other("echoed bytes differ"));
            }
            Ok(())
        })
        .join()
        .unwrap()
}

/// A long-lived echo connection from `client` to `target` (served in `server` on
/// `listen`, one connection), checked byte for byte at every exchange.
pub struct EchoConn {
    stream: std::net::TcpStream,
    sent: u64,
}

impl EchoConn {
    pub fn open(
        server: &Netns,
        listen: impl Into<std::net::SocketAddr>,
        client: &Netns,
        target: impl Into<std::net::SocketAddr>,
    ) -> Self {
        use std::io::{Read as _, Write as _};
        let (listen, target): (std::net::SocketAddr, std::net::SocketAddr) = (listen.into(), target.into());
        let listener = server.run(move || std::net::TcpListener::bind(listen)).join().unwrap().expect("bind");
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let stream = client
            .run(move || std::net::TcpStream::connect_timeout(&target, Duration::from_secs(3)))
            .join()
            .unwrap()
            .expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        EchoConn { stream, sent: 0 }
    }

    /// Sends a numbered 64 KiB chunk and checks the echo, byte for byte.
    pub fn exchange(&mut self, what: &str) {
        use std::io::{Read as _, Write as _};
        let chunk: Vec<u8> = (0..64 * 1024).map(|i| ((self.sent + i) % 253) as u8).collect();
        self.stream.write_all(&chunk).unwrap_or_else(|e| panic!("{what}: write: {e}"));
        let mut back = vec![0u8; chunk.len()];
        self.stream.read_exact(&mut back).unwrap_or_else(|e| panic!("{what}: read: {e}"));
        assert_eq!(back, chunk, "{what}: bytes differ");
        self.sent += chunk.len() as u64;
    }

    /// Bytes echoed so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }
}

/// A network namespace owned by a test, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: String) -> Self {
        sh(&["ip", "netns", "add", &name]);
        Netns { name }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs a command inside this namespace: its network namespace is entered between
    /// fork and exec. Not `ip netns exec`, which also makes a mount namespace and mounts
    /// a sysfs for every command: two execs and the mounts cost a third of a second per
    /// command under software emulation, and the tests run thousands. What differs is
    /// /sys/class/net, which still shows the caller's namespace: see
    /// [`Netns::exec_with_sysfs`].
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(args[0]);
        cmd.args(&args[1..]);
        in_netns(&mut cmd, &self.path())
            .output()
            .unwrap_or_else(|e| panic!("in netns {}: {args:?}: {e}", self.name))
    }

    /// [`Netns::exec`] through `ip netns exec`, for the rare command that reads
    /// /sys/class/net.
    pub fn exec_with_sysfs(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {} {args:?}: {e}", self.name))
    }

    /// Runs `work` on a thread that has entered this namespace: sockets it creates live
    /// in the namespace, so tests can drive TCP/UDP without external tools.
    pub fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let ns = fs::File::open(self.path()).expect("open netns");
        std::thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            work()
        })
    }

    /// A UDP socket bound to `addr` in this namespace, ready before the call returns: a
    /// server thread that binds by itself races the client's first datagram.
    pub fn bind_udp(&self, addr: impl std::net::ToSocketAddrs + Send + 'static) -> std::net::UdpSocket {
        self.run(move || std::net::UdpSocket::bind(addr)).join().unwrap().expect("bind udp")
    }

    /// `ping -c count` from this namespace; true when every echo was answered.
    pub fn ping(&self, dst: Ipv4Addr, count: u32) -> bool {
        let out = self.exec(&[
            "ping",
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "1",
            &dst.to_string(),
        ]);
        out.status.success()
    }

    /// A /proc/net/snmp6 counter of this namespace (e.g. "Ip6OutForwDatagrams").
    pub fn snmp6(&self, field: &str) -> u64 {
        let out = self.exec(&["cat", "/proc/net/snmp6"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.split_whitespace().next() == Some(field)).expect("snmp6 field");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// A /proc/net/snmp counter of this namespace (e.g. "Ip", "ForwDatagrams").
    pub fn snmp(&self, group: &str, field: &str) -> u64 {
        let out = self.exec(&["cat", "/proc/net/snmp"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines().filter(|l| l.starts_with(&format!("{group}:")));
        let (names, values) = (lines.next().expect("snmp header"), lines.next().expect("snmp values"));
        let i = names.split_whitespace().position(|n| n == field).expect("snmp field");
        values.split_whitespace().nth(i).unwrap().parse().unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// The value of the metrics sample whose name and labels start with `prefix`.
pub fn metric_value(text: &str, prefix: &str) -> Option<u64> {
    text.lines().find(|l| l.starts_with(prefix))?.rsplit(' ').next()?.parse().ok()
}

/// Node + outside host + containers, and netpath's directories for this lab alone.
pub struct Lab {
    pub id: String,
    /// A cgroup (v2) of this lab's own: the agent's socket hooks attach here, never to
    /// the machine's root cgroup.
    pub cgroup: PathBuf,
    pub node: Netns,
    pub outside: Netns,
    pub containers: Vec<Netns>,
    pub bpffs_dir: PathBuf,
    pub work_dir: PathBuf,
    /// Extra environment for the agent processes this lab starts.
    pub agent_env: Vec<(String, String)>,
    agent: Option<Child>,
}

/// Node side of the uplink, and the outside host's address on it.
pub const NODE_UPLINK_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);

impl Lab {
    pub fn new(containers: usize) -> Self {
        Self::with_prefix(TEST_PREFIX, containers)
    }

    /// A lab whose every name starts with `prefix` (see [`sweep`]).
    pub fn with_prefix(prefix: &str, containers: usize) -> Self {
        let lab = Self::bare(prefix, containers);
        // The uplink: created inside the node namespace, peer moved to the outside host.
        let (n, o) = (lab.node.name.clone(), lab.outside.name.clone());
        sh(&["ip", "-n", &n, "link", "add", "uplink0", "type", "veth", "peer", "name", "eth0", "netns", &o]);
        sh(&["ip", "-n", &n, "addr", "add", &format!("{NODE_UPLINK_IP}/24"), "dev", "uplink0"]);
        sh(&["ip", "-n", &o, "addr", "add", &format!("{OUTSIDE_IP}/24"), "dev", "eth0"]);
        sh(&["ip", "-n", &o, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", &n, "link", "set", "uplink0", "up"]);
        sh(&["ip", "-n", &o, "link", "set", "eth0", "up"]);
        sh(&["ip", "-n", &n, "route", "add", "default", "via", &OUTSIDE_IP.to_string()]);
        lab
    }

    /// A node of a cluster: its uplink is a port of the underlay's switch, with address
    /// `address`/24 and the default route through the underlay's own address.
    pub fn on_underlay(underlay: &cluster::Underlay, address: Ipv4Addr, containers: usize) -> Self {
        let lab = Self::bare(&underlay.prefix, containers);
        let (n, u) = (lab.node.name.clone(), underlay.ns.name.clone());
        let port = format!("p{}", lab.id.rsplit('x').next().unwrap_or("0"));
        sh(&["ip", "-n", &n, "link", "add", "uplink0", "type", "veth", "peer", "name", &port, "netns", &u]);
        sh(&["ip", "-n", &u, "link", "set", &port, "master", cluster::SWITCH, "up"]);
        sh(&["ip", "-n", &n, "addr", "add", &format!("{address}/24"), "dev", "uplink0"]);
        sh(&["ip", "-n", &n, "link", "set", "uplink0", "up"]);
        sh(&["ip", "-n", &n, "route", "add", "default", "via", &cluster::UNDERLAY_IP.to_string()]);
        lab
    }

    /// Namespaces, cgroup and work directory; no uplink yet.
    fn bare(prefix: &str, containers: usize) -> Self {
        require_root();
        let id = lab_id(prefix);
        let work_dir = std::env::temp_dir().join(format!("netpath-{id}"));
        fs::create_dir_all(&work_dir).unwrap();
        let node = Netns::new(format!("{id}-node"));
        let outside = Netns::new(format!("{id}-out"));
        let cgroup = cgroup2_root().join(&id);
        fs::create_dir_all(&cgroup).unwrap_or_else(|e| panic!("create cgroup {}: {e}", cgroup.display()));
        let mut lab = Lab {
            cgroup,
            bpffs_dir: PathBuf::from(format!("/sys/fs/bpf/{id}")),
            containers: Vec::new(),
            node,
            outside,
            work_dir,
            agent_env: Vec::new(),
            agent: None,
            id,
        };
        for i in 0..containers {
            lab.containers.push(Netns::new(format!("{}-c{i}", lab.id)));
        }
        sh(&["ip", "-n", &lab.node.name, "link", "set", "lo", "up"]);
        lab
    }

    /// Points a netpath command at this lab's pins, socket and state.
    pub fn env_for(&self, cmd: &mut Command) {
        self.env(cmd)
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env("NETPATH_BPFFS_DIR", &self.bpffs_dir)
            .env("NETPATH_RUN_DIR", self.work_dir.join("run"))
            .env("NETPATH_STATE_DIR", self.work_dir.join("state"));
    }

    /// The agent's state directory (the database, the agent's id).
    pub fn state_dir(&self) -> PathBuf {
        self.work_dir.join("state")
    }

    /// What the node's state holds, as the CLI shows it: the endpoint and port lists.
    /// One request line to the agent, as the CNI plugin sends it; the reply line.
    pub fn request(&self, req: &serde_json::Value) -> String {
        use std::io::{BufRead as _, Write as _};
        let mut s = std::os::unix::net::UnixStream::connect(self.work_dir.join("run/agent.sock")).unwrap();
        s.write_all(format!("{req}\n").as_bytes()).unwrap();
        let mut line = String::new();
        std::io::BufReader::new(s).read_line(&mut line).unwrap();
        line
    }

    pub fn state(&self) -> String {
        self.netpath_ok(&["endpoint", "list", "-o", "json"])
            + &self.netpath_ok(&["port", "list", "-o", "json"])
    }

    /// The agent's id (made at its first start, kept in the state directory).
    pub fn agent_id(&self) -> String {
        let path = self.work_dir.join("state/agent-id");
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_string()
    }

    /// Starts `netpath agent` inside the node namespace and waits for its socket.
    pub fn start_agent(&mut self) {
        self.start_agent_with(&[]);
    }

    /// Like [`Lab::start_agent`], with extra agent arguments (`--mode bridge`, ...).
    pub fn start_agent_with(&mut self, args: &[&str]) {
        if let Err(e) = self.try_start_agent(args) {
            panic!("{e}");
        }
    }

    /// Starts the agent; `Err` with its log when it exits instead of listening.
    pub fn try_start_agent(&mut self, args: &[&str]) -> Result<(), String> {
        self.launch_agent(false, args)
    }

    /// Starts the agent the way the seed enters a namespace, `ip netns exec NODE netpath
    /// agent`: in a mount namespace of its own with a fresh /sys (no bpffs, no cgroup2).
    pub fn start_agent_with_ip_netns_exec(&mut self, args: &[&str]) {
        if let Err(e) = self.launch_agent(true, args) {
            panic!("{e}");
        }
    }

    fn launch_agent(&mut self, ip_netns_exec: bool, args: &[&str]) -> Result<(), String> {
        assert!(self.agent.is_none(), "agent already running");
        let log = fs::File::create(self.work_dir.join("agent.log")).unwrap();
        let mut cmd = if ip_netns_exec {
            // ip execs the command: the child's PID is the agent's.
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &self.node.name]).arg(netpath_bin());
            c
        } else {
            Command::new(netpath_bin())
        };
        cmd.arg("agent")
            .arg("--cgroup")
            .arg(&self.cgroup)
            .args(args)
            .envs(self.agent_env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.env(&mut cmd);
        if !ip_netns_exec {
            in_netns(&mut cmd, &self.node.path());
        }
        let socket = self.work_dir.join("run/agent.sock");
        // A killed agent leaves its socket behind: waiting for it must wait for the new one.
        let _ = fs::remove_file(&socket);
        let mut child = cmd.spawn().expect("spawn netpath agent");
        // Loading the datapath takes the verifier a second or two, many more on a loaded
        // machine (a parallel test run beside VM runs saw 20 s) and under software
        // emulation (the VM runs): NETPATH_TEST_AGENT_TIMEOUT stretches the wait. A start
        // that fails says so at once; the wait only bounds a hang.
        let deadline = Instant::now() + agent_start_timeout();
        // Ready when the socket takes a connection: its path appears at bind(), before
        // listen(), and a client connecting in between is refused (seen in a guest with
        // one vCPU under load).
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                return Err(format!("agent exited with {status}: {}", self.agent_log()));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("agent did not start: {}", self.agent_log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.agent = Some(child);
        Ok(())
    }

    /// The running agent's process ID.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// Kills the agent with SIGKILL, as a crash or the OOM killer would.
    pub fn kill_agent(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Detaches netpath's programs as a fault would: removes the pinned links (TCX, XDP,
    /// cgroup) and any clsact filter or XDP program on the node's interfaces. With the
    /// agent stopped nothing else holds them, so the datapath is gone.
    pub fn detach_programs(&self) {
        if let Ok(dir) = fs::read_dir(self.bpffs_dir.join("links")) {
            for e in dir.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        for link in self.node_links() {
            let _ = self.node.exec(&["tc", "filter", "del", "dev", &link, "ingress"]);
        }
        let _ = self.node.exec(&["ip", "link", "set", "dev", "uplink0", "xdp", "off"]);
    }

    /// Stops the agent (SIGTERM) and waits for it.
    /// Stops the agent with SIGTERM, as systemd or an operator would. An agent that has
    /// not exited two minutes later is a failure, reported with what each of its threads
    /// was doing (a shutdown that hangs stalls a node's agent upgrade), and killed.
    pub fn stop_agent(&mut self) {
        let Some(mut child) = self.agent.take() else { return };
        let pid = child.id();
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(120);
        while let Ok(None) = child.try_wait() {
            if Instant::now() > deadline {
                let threads = threads_of(pid);
                let _ = child.kill();
                let _ = child.wait();
                let report = format!(
                    "the agent (pid {pid}) did not exit within 120 s of SIGTERM; its threads:\n{threads}\nits log:\n{}",
                    self.agent_log()
                );
                // In a drop during a panic, a second panic would abort the test binary.
                if std::thread::panicking() {
                    eprintln!("{report}");
                    return;
                }
                panic!("{report}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn agent_log(&self) -> String {
        fs::read_to_string(self.work_dir.join("agent.log")).unwrap_or_default()
    }

    /// Runs `args` as a process of the node: in the node namespace and in the lab's
    /// cgroup, where the node-local socket hook acts.
    pub fn node_process(&self, args: &[&str]) -> Output {
        self.cgroup_process(&self.node, args)
    }

    /// Runs `args` in the lab's cgroup and in namespace `netns`.
    pub fn cgroup_process(&self, netns: &Netns, args: &[&str]) -> Output {
        let ns = fs::File::open(netns.path()).unwrap();
        let procs = fs::OpenOptions::new().write(true).open(self.cgroup.join("cgroup.procs")).unwrap();
        let mut cmd = Command::new(args[0]);
        cmd.args(&args[1..]);
        // SAFETY: only async-signal-safe calls (write, setns) between fork and exec; the
        // files were opened before the fork.
        unsafe {
            cmd.pre_exec(move || {
                // "0" moves the writing process, i.e. this child, into the cgroup.
                if libc::write(std::os::fd::AsRawFd::as_raw_fd(&procs), b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
            });
        }
        cmd.output().expect("run node process")
    }

    /// Runs the netpath CLI against this lab's agent and pins.
    pub fn netpath(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(netpath_bin());
        cmd.args(args).stdin(Stdio::null());
        self.env(&mut cmd);
        cmd.output().expect("run netpath")
    }

    /// Runs the netpath CLI inside the node namespace (mounts untouched, unlike
    /// `ip netns exec`, so the bpffs pins stay visible), as an operator on the node would.
    pub fn netpath_in_node(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(netpath_bin());
        cmd.args(args).stdin(Stdio::null());
        self.env(&mut cmd);
        in_netns(&mut cmd, &self.node.path()).output().expect("run netpath in the node")
    }

    /// GET /metrics from the agent's default address (loopback of the node namespace);
    /// None when nothing answers.
    pub fn metrics(&self) -> Option<String> {
        use std::io::{Read as _, Write as _};
        self.node
            .run(|| {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", 9464)).ok()?;
                s.write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").ok()?;
                let mut body = String::new();
                s.read_to_string(&mut body).ok()?;
                Some(body)
            })
            .join()
            .unwrap()
    }

    /// Like [`Lab::netpath`] but panics unless the command succeeds; returns stdout.
    pub fn netpath_ok(&self, args: &[&str]) -> String {
        let out = self.netpath(args);
        assert!(
            out.status.success(),
            "netpath {args:?} failed: {}\nagent log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.agent_log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Attaches container `i` as endpoint `name`; returns its address.
    pub fn add_endpoint(&self, name: &str, i: usize) -> Ipv4Addr {
        let path = self.containers[i].path();
        self.netpath_ok(&["endpoint", "add", name, "--netns", path.to_str().unwrap()]);
        let list: Value =
            serde_json::from_str(&self.netpath_ok(&["endpoint", "list", "-o", "json"])).unwrap();
        let ep = list["endpoints"].as_array().unwrap().iter().find(|e| e["name"] == name).unwrap();
        ep["ip"].as_str().unwrap().parse().unwrap()
    }

    /// Endpoint `name`'s IPv6 address (an agent with --pod-cidr6), from `endpoint list`.
    pub fn endpoint_ip6(&self, name: &str) -> std::net::Ipv6Addr {
        let list: Value =
            serde_json::from_str(&self.netpath_ok(&["endpoint", "list", "-o", "json"])).unwrap();
        let ep = list["endpoints"].as_array().unwrap().iter().find(|e| e["name"] == name).unwrap();
        ep["ip6"].as_str().unwrap_or_else(|| panic!("{name} has no ip6: {ep}")).parse().unwrap()
    }

    /// `netpath stats -o json`.
    pub fn stats(&self) -> Stats {
        Stats(serde_json::from_str(&self.netpath_ok(&["stats", "-o", "json"])).unwrap())
    }

    /// Entries in one of netpath's pinned maps, counted by bpftool (the test's tool, not
    /// the product's).
    pub fn map_len(&self, map: &str) -> usize {
        let pin = self.bpffs_dir.join(map);
        let out = sh(&["bpftool", "-j", "map", "dump", "pinned", pin.to_str().unwrap()]);
        serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().len()
    }

    /// The values of one of netpath's pinned arrays of u64s, in index order, read by
    /// bpftool.
    pub fn map_u64s(&self, map: &str) -> Vec<u64> {
        let pin = self.bpffs_dir.join(map);
        let out = sh(&["bpftool", "-j", "map", "dump", "pinned", pin.to_str().unwrap()]);
        let entries: Value = serde_json::from_str(&out).unwrap();
        let byte = |b: &Value| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
        entries
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let bytes: Vec<u8> =
                    e["value"].as_array().unwrap_or_else(|| panic!("{map}: {e}")).iter().map(byte).collect();
                u64::from_le_bytes(bytes.try_into().unwrap_or_else(|b| panic!("{map}: not a u64: {b:?}")))
            })
            .collect()
    }

    /// [`Lab::map_u64s`] once `ok` holds for it, waiting up to 30 s (the agent's periodic
    /// passes write some of them: slower under emulation); panics with `what` if never.
    pub fn wait_for_u64s(&self, map: &str, what: &str, ok: impl Fn(&[u64]) -> bool) -> Vec<u64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let values = self.map_u64s(map);
            if ok(&values) {
                return values;
            }
            assert!(Instant::now() < deadline, "{what}: {map} holds {values:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The hairpin shortcut's test, either family: waits for a collection pass that found
    /// no hairpin (HAIRPIN cleared), then `client` connects to the published `target`,
    /// which `server` serves at `listen`, and echoes twice with passes in between. After
    /// it, a pass that sees the hairpin's entries turns the lookup back on, and exactly
    /// one more hairpin was counted. The server's view of the client's address.
    pub fn hairpin_across_passes(
        &self,
        server: &Netns,
        listen: std::net::SocketAddr,
        client: &Netns,
        target: std::net::SocketAddr,
    ) -> std::net::SocketAddr {
        use std::io::{Read as _, Write as _};
        // A pass with no hairpin flow tells the datapath none lives.
        let quiet = self.wait_for_u64s("HAIRPIN", "quiet passes turn the lookup off", |v| {
            v.len() == 2 && v[1] == v[0] + 1
        });
        let listener = server.run(move || std::net::TcpListener::bind(listen)).join().unwrap().unwrap();
        let served = std::thread::spawn(move || {
            let (mut s, peer) = listener.accept().unwrap();
            let mut buf = [0u8; 4];
            while s.read_exact(&mut buf).is_ok() {
                s.write_all(&buf).unwrap();
            }
            peer
        });
        client
            .run(move || {
                let mut s = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(5))
                    .unwrap_or_else(|e| panic!("hairpin connect after quiet passes: {e}"));
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut back = [0u8; 4];
                for (i, line) in [b"one\n", b"two\n"].into_iter().enumerate() {
                    if i > 0 {
                        // Passes while the hairpin lives.
                        std::thread::sleep(Duration::from_secs(3));
                    }
                    s.write_all(line).unwrap();
                    s.read_exact(&mut back).unwrap_or_else(|e| panic!("echo {i} through the hairpin: {e}"));
                    assert_eq!(&back, line);
                }
            })
            .join()
            .unwrap();
        let peer = served.join().unwrap();
        // Its entries stay (closing) for a while yet, and a pass that sees them turns the
        // lookup back on whatever the count: a pass that missed one would heal.
        let after =
            self.wait_for_u64s("HAIRPIN", "passes that see a hairpin turn the lookup on", |v| v[1] == 0);
        assert_eq!(after[0], quiet[0] + 1, "one hairpin opened, one counted");
        peer
    }

    /// Interfaces in the node namespace.
    /// The ifindex of node interface `dev`.
    pub fn ifindex_of(&self, dev: &str) -> u32 {
        let out = self.node.exec(&["ip", "-o", "link", "show", "dev", dev]);
        let line = String::from_utf8_lossy(&out.stdout).into_owned();
        line.split(':').next().and_then(|i| i.trim().parse().ok()).unwrap_or_else(|| panic!("{dev}: {line}"))
    }

    /// The ifindex of endpoint `name`'s host device, as the agent recorded it.
    pub fn endpoint_ifindex(&self, name: &str) -> u32 {
        let list: serde_json::Value =
            serde_json::from_str(&self.netpath_ok(&["endpoint", "list", "-o", "json"])).unwrap();
        let rec = list["endpoints"].as_array().unwrap().iter().find(|e| e["name"] == name);
        rec.and_then(|e| e["host_ifindex"].as_u64()).unwrap_or_else(|| panic!("no endpoint {name}: {list}"))
            as u32
    }

    /// Waits until the agent (`--endpoint-attach auto`, the default) has moved every veth
    /// endpoint from its filter to a TCX link, on kernels with TCX (elsewhere there is
    /// nothing to wait for): a test comparing the node before and after something must
    /// not see a move in between.
    pub fn wait_for_tcx_links(&self) {
        if !kernel_at_least(6, 6) {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let list: serde_json::Value =
                serde_json::from_str(&self.netpath_ok(&["endpoint", "list", "-o", "json"])).unwrap();
            let waiting: Vec<String> = list["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["device"] == "veth" && matches!(e["mode"].as_str(), Some("routed" | "bridge")))
                .filter_map(|e| e["host_ifindex"].as_u64())
                .filter(|i| !self.bpffs_dir.join(format!("links/from_container-{i}")).exists())
                .map(|i| i.to_string())
                .collect();
            if waiting.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "endpoints on ifindexes {waiting:?} not in TCX links after 30 s: {}",
                self.agent_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn node_links(&self) -> Vec<String> {
        let out = self.node.exec(&["ip", "-o", "link", "show"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1).map(|n| n.split('@').next().unwrap().to_string()))
            .collect()
    }
}

/// What a refused operation must leave as it was: the links, addresses and routes of
/// the node and of every container, netpath's files (state, lock files, socket; the
/// agent's log aside), its pins and its map entries.
#[derive(Debug, PartialEq, Eq)]
pub struct Residue {
    pub namespaces: Vec<(String, String)>,
    pub files: Vec<(String, String)>,
    pub pins: Vec<String>,
    pub entries: Vec<(String, usize)>,
}

/// Every file under `dir` with its content ("<dir>"/"<other>" for the rest), sorted.
fn tree(dir: &Path, out: &mut Vec<(String, String)>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let kind = e.file_type().ok();
        let content = if kind.is_some_and(|k| k.is_dir()) {
            tree(&p, out);
            "<dir>".to_string()
        } else if kind.is_some_and(|k| k.is_file()) {
            fs::read_to_string(&p).unwrap_or_else(|_| "<unreadable>".into())
        } else {
            "<other>".to_string()
        };
        out.push((p.display().to_string(), content));
    }
    out.sort();
}

impl Lab {
    /// The lab as a refused operation must leave it (see [`Residue`]).
    pub fn residue(&self) -> Residue {
        let mut namespaces = Vec::new();
        for ns in std::iter::once(&self.node).chain(&self.containers) {
            let mut view = String::new();
            for args in [
                &["ip", "-o", "link", "show"][..],
                &["ip", "-o", "addr", "show"],
                &["ip", "route", "show", "table", "all"],
            ] {
                let out = ns.exec(args);
                // Only names, addresses and routes: link counters and states may move.
                // IPv6 link-local addresses come and go (DAD) by themselves.
                for line in String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.contains("fe80:")) {
                    let keep: Vec<&str> = line
                        .split_whitespace()
                        .take_while(|w| !["qdisc", "valid_lft", "link/ether"].contains(w))
                        .collect();
                    view.push_str(&keep.join(" "));
                    view.push('\n');
                }
            }
            namespaces.push((ns.name.clone(), view));
        }
        let mut files = Vec::new();
        tree(&self.work_dir, &mut files);
        files.retain(|(p, _)| !p.ends_with("agent.log") && !p.ends_with(".toml"));
        let mut pins = Vec::new();
        tree(&self.bpffs_dir, &mut pins);
        let pins: Vec<String> = pins.into_iter().map(|(p, _)| p).collect();
        let entries = ["ENDPOINTS", "PORT_MAPS"]
            .iter()
            .filter(|m| self.bpffs_dir.join(m).exists())
            .map(|m| (m.to_string(), self.map_len(m)))
            .collect();
        Residue { namespaces, files, pins, entries }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("agent log of {}:\n{}", self.id, self.agent_log());
        }
        self.stop_agent();
        self.containers.clear();
        let _ = fs::remove_dir(&self.cgroup);
        let _ = fs::remove_dir_all(&self.bpffs_dir);
        let _ = fs::remove_dir_all(&self.work_dir);
    }
}

/// The set-up most tests start from, built in one expression: a lab, its agent started
/// with some arguments, endpoints attached (the n-th in container n), ports published.
///
/// ```ignore
/// let (lab, ips) = Lab::setup(2).agent(&["--xdp"]).endpoints(&["a", "b"]).port(&["8080", "a:80"]).build();
/// ```
pub struct Setup {
    containers: usize,
    agent: Vec<String>,
    endpoints: Vec<String>,
    ports: Vec<Vec<String>>,
}

impl Setup {
    /// Arguments for `netpath agent`.
    pub fn agent(mut self, args: &[&str]) -> Self {
        self.agent = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Endpoints to attach, the n-th in container n.
    pub fn endpoints(mut self, names: &[&str]) -> Self {
        assert!(names.len() <= self.containers, "more endpoints than containers");
        self.endpoints = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// A port to publish: the arguments of `netpath port add`.
    pub fn port(mut self, args: &[&str]) -> Self {
        self.ports.push(args.iter().map(|a| a.to_string()).collect());
        self
    }

    /// The lab, and the endpoints' addresses in the order given.
    pub fn build(self) -> (Lab, Vec<Ipv4Addr>) {
        let mut lab = Lab::new(self.containers);
        lab.start_agent_with(&self.agent.iter().map(String::as_str).collect::<Vec<_>>());
        let ips = self.endpoints.iter().enumerate().map(|(i, name)| lab.add_endpoint(name, i)).collect();
        for args in &self.ports {
            let mut full = vec!["port", "add"];
            full.extend(args.iter().map(String::as_str));
            lab.netpath_ok(&full);
        }
        (lab, ips)
    }
}

impl Lab {
    /// A [`Setup`] with `containers` container namespaces.
    pub fn setup(containers: usize) -> Setup {
        Setup { containers, agent: Vec::new(), endpoints: Vec::new(), ports: Vec::new() }
    }
}

/// The JSON of `netpath stats`, with typed getters.
pub struct Stats(pub Value);

impl Stats {
    pub fn endpoint(&self, name: &str, field: &str) -> u64 {
        self.0["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no counters for endpoint {name}: {}", self.0))[field]
            .as_u64()
            .unwrap()
    }

    pub fn has_endpoint(&self, name: &str) -> bool {
        self.0["endpoints"].as_array().unwrap().iter().any(|e| e["name"] == name)
    }

    pub fn reason(&self, reason: &str) -> u64 {
        self.reason_field(reason, "packets")
    }

    pub fn reason_bytes(&self, reason: &str) -> u64 {
        self.reason_field(reason, "bytes")
    }

    fn reason_field(&self, reason: &str, field: &str) -> u64 {
        self.0["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["reason"] == reason)
            .unwrap_or_else(|| panic!("no reason {reason}"))[field]
            .as_u64()
            .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::{fs::PermissionsExt as _, process::CommandExt as _};

    use super::*;

    #[test]
    fn a_shared_copy_runs_for_another_user_from_a_private_checkout() {
        require_root();
        // A checkout root cloned under /root or `mktemp -d`: mode 700.
        let private =
            std::env::temp_dir().join(format!("netpath-{TEST_PREFIX}{}-private", std::process::id()));
        fs::create_dir_all(&private).unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
        let bin = private.join("true");
        fs::copy("/bin/true", &bin).unwrap();
        let as_nobody = |p: &Path| Command::new(p).uid(65534).gid(65534).status();
        assert!(as_nobody(&bin).is_err(), "the private binary ran for nobody: the test proves nothing");
        let copy = SharedCopy::of(&bin);
        assert!(as_nobody(&copy.path).unwrap().success(), "the shared copy does not run for nobody");
        let dir = copy.path.parent().unwrap().to_path_buf();
        drop(copy);
        assert!(!dir.exists(), "the copy was not removed");
        fs::remove_dir_all(&private).unwrap();
    }

    /// What the kernel holds a symbol of (a loaded module's included).
    fn kallsyms_has(symbol: &str) -> bool {
        let all = fs::read_to_string("/proc/kallsyms").unwrap();
        all.lines().any(|l| l.split_whitespace().nth(2) == Some(symbol))
    }

    /// The scratch namespaces of this process still there.
    fn probe_namespaces() -> Vec<String> {
        let mine = format!("{TEST_PREFIX}{}x", std::process::id());
        fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&mine) && n.ends_with("-probe"))
            .collect()
    }

    #[test]
    fn the_link_probe_tells_what_the_kernel_makes_and_leaves_no_namespace() {
        require_root();
        // Every kernel the tests run on has macvlan (the VM runner's preflight makes one).
        assert_eq!(kernel_makes_link(&["macvlan", "mode", "bridge"]), Ok(()));
        let err = kernel_makes_link(&["npnosuchkind"]).unwrap_err();
        assert!(err.contains("type npnosuchkind: ") && err.len() > "type npnosuchkind: ".len(), "{err}");
        // A second witness: an ipvlan link made loads the driver (or it is built in),
        // whose symbols the kernel then lists; a refused one leaves none.
        assert_eq!(kernel_has_ipvlan(), kallsyms_has("ipvlan_link_new"));
        assert_eq!(probe_namespaces(), Vec::<String>::new(), "a probe namespace was left behind");
    }

    #[test]
    fn only_labs_of_gone_processes_or_this_one_are_leftovers() {
        let me = std::process::id();
        assert!(leftover(&format!("npt{me}x3-node"), "npt"));
        // PID 1 runs for as long as the machine does: its labs are not leftovers.
        assert!(!leftover("npt1x0-node", "npt"));
        // A PID above the kernel's limit (2^22) never ran.
        assert!(leftover("npt99999999x0-c1", "npt"));
        assert!(!leftover("nptables", "npt"));
        assert!(!leftover("other1x0", "npt"));
    }
}
