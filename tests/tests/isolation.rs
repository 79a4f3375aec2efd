//! Isolation: only root drives the agent or reads what it keeps; a container cannot
//! pose as the node, the outside or another container, and sees only its own traffic.
use std::{
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::Path,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use netpath_tests::{netpath_bin, Lab, Netns, SharedCopy, NODE_UPLINK_IP, OUTSIDE_IP};

const NOBODY: u32 = 65534;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode()
        & 0o777
}

/// Every file under `dir` (not following links), depth first.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(files(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn only_root_drives_the_agent_or_reads_its_socket_state_and_pins() {
    let mut lab = Lab::new(1);
    lab.start_agent();
    lab.add_endpoint("a", 0);
    lab.netpath_ok(&["port", "add", "8080", "a:80"]);
    // Run from a copy every user can reach: the checkout may be under /root (mode 700),
    // where exec itself fails with EACCES before netpath can say anything.
    let bin = SharedCopy::of(&netpath_bin());
    for args in
        [&["endpoint", "list"][..], &["endpoint", "add", "b", "--pid", "1"], &["stats"], &["reconcile"]]
    {
        let mut cmd = Command::new(&bin.path);
        cmd.args(args).uid(NOBODY).gid(NOBODY);
        lab.env_for(&mut cmd);
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded as nobody");
        assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err}");
        assert!(err.contains("needs root") && err.contains("sudo"), "{args:?}: {err}");
    }
    // The files themselves are root's alone, whoever asks and however.
    let socket = lab.work_dir.join("run/agent.sock");
    assert_eq!(mode(&socket), 0o600, "socket");
    for dir in [lab.work_dir.join("run"), lab.work_dir.join("state"), lab.bpffs_dir.clone()] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    let kept: Vec<_> = files(&lab.work_dir.join("state")).into_iter().chain(files(&lab.bpffs_dir)).collect();
    assert!(kept.len() > 10, "{kept:?}");
    for f in kept.iter().filter(|f| !f.is_dir()) {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    for path in [lab.state_dir().join("state.db"), lab.bpffs_dir.join("ENDPOINTS")] {
        let out = Command::new("cat").arg(&path).uid(NOBODY).gid(NOBODY).output().unwrap();
        assert!(!out.status.success(), "nobody read {}", path.display());
    }
    // And the agent is unchanged by all of it.
    assert_eq!(lab.netpath_ok(&["endpoint", "list"]).lines().count(), 2);
}

/// Does a TCP connection from `ns` with source address `from` to `to` get through?
fn connects(ns: &Netns, from: Ipv4Addr, to: SocketAddrV4) -> bool {
    ns.run(move || {
        let s = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            nix::sys::socket::SockType::Stream,
            nix::sys::socket::SockFlag::empty(),
            None,
        )
        .unwrap();
        nix::sys::socket::bind(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            &nix::sys::socket::SockaddrIn::from(SocketAddrV4::new(from, 0)),
        )
        .unwrap();
        let stream = TcpStream::from(s);
        let addr = nix::sys::socket::SockaddrIn::from(to);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        // Blocking connect bounded by SO_SNDTIMEO.
        let tv = nix::sys::time::TimeVal::new(1, 0);
        nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::SendTimeout, &tv).unwrap();
        nix::sys::socket::connect(fd, &addr).is_ok()
    })
    .join()
    .unwrap()
}

#[test]
fn a_container_cannot_pose_as_the_node_the_outside_or_a_neighbour() {
    let mut lab = Lab::new(3);
    lab.start_agent();
    let a = lab.add_endpoint("a", 0);
    let b = lab.add_endpoint("b", 1);
    let c = lab.add_endpoint("c", 2);
    lab.netpath_ok(&["port", "add", "8080", "b:80"]);
    let listener = lab.containers[1].run(move || TcpListener::bind((b, 80))).join().unwrap().unwrap();
    let outside = lab.outside.run(|| TcpListener::bind((OUTSIDE_IP, 9100))).join().unwrap().unwrap();
    // Accept whatever arrives, so a spoofed connection that got through would succeed.
    for l in [listener, outside] {
        std::thread::spawn(move || {
            for s in l.incoming() {
                drop(s)
            }
        });
    }
    let published = SocketAddrV4::new(NODE_UPLINK_IP, 8080);
    // Baselines: with its own address, a reaches all three services.
    let ns = &lab.containers[0];
    assert!(connects(ns, a, published), "a cannot reach the published port");
    assert!(connects(ns, a, SocketAddrV4::new(b, 80)));
    assert!(connects(ns, a, SocketAddrV4::new(OUTSIDE_IP, 9100)));
    let before = lab.stats();
    // a takes on other addresses: the node's, the outside host's, its neighbour c's.
    for spoofed in [NODE_UPLINK_IP, OUTSIDE_IP, c] {
        assert!(ns.exec(&["ip", "addr", "add", &format!("{spoofed}/32"), "dev", "eth0"]).status.success());
        for to in [published, SocketAddrV4::new(b, 80), SocketAddrV4::new(OUTSIDE_IP, 9100)] {
            if to.ip() == &spoofed {
                continue;
            }
            assert!(!connects(ns, spoofed, to), "a posing as {spoofed} reached {to}");
        }
    }
    let after = lab.stats();
    let dropped = after.reason("drop-spoofed-source") - before.reason("drop-spoofed-source");
    assert!(dropped >= 7, "spoofed SYNs not dropped as such: {dropped}");
}

/// IPv4 (source, destination) of every frame `ns` sees on any interface until `stop` is
/// set (at most a minute), captured with an AF_PACKET socket, as tcpdump would. Bounded
/// by the test's own traffic, not by a fixed time: under software emulation the pings
/// before the watcher's own took longer than the 3 s the capture used to run.
fn capture(ns: &Netns, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<(Ipv4Addr, Ipv4Addr)>> {
    let handle = ns.run(move || {
        // SAFETY: plain socket calls on a descriptor this closure owns.
        let fd =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, (libc::ETH_P_ALL as u16).to_be() as i32) };
        assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        let tv = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
        // SAFETY: tv outlives the call; the size is its own.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        let mut seen = Vec::new();
        let mut buf = [0u8; 2048];
        let end = Instant::now() + Duration::from_secs(60);
        while !stop.load(Ordering::Relaxed) && Instant::now() < end {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 34 && buf[12..14] == [0x08, 0x00] {
                let ip = |o: usize| Ipv4Addr::new(buf[o], buf[o + 1], buf[o + 2], buf[o + 3]);
                seen.push((ip(26), ip(30)));
            }
        }
        // SAFETY: fd is ours and closed once.
        unsafe { libc::close(fd) };
        seen
    });
    std::thread::sleep(Duration::from_millis(200));
    handle
}

#[test]
fn a_container_sees_only_its_own_traffic() {
    let mut lab = Lab::new(3);
    lab.start_agent();
    let a = lab.add_endpoint("a", 0);
    let b = lab.add_endpoint("b", 1);
    let c = lab.add_endpoint("c", 2);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = capture(&lab.containers[2], stop.clone());
    assert!(lab.containers[0].ping(b, 3));
    assert!(lab.containers[1].ping(OUTSIDE_IP, 3));
    assert!(lab.containers[0].ping(c, 2), "the watcher's own traffic must reach it");
    // Every reply is in (ping waited for it); frames still queued on the socket are read.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let seen = watcher.join().unwrap();
    let own = seen.iter().filter(|(s, d)| *s == c || *d == c).count();
    assert!(own >= 4, "the capture missed c's own traffic: {seen:?}");
    let others: Vec<_> = seen.iter().filter(|(s, d)| *s != c && *d != c).collect();
    assert!(others.is_empty(), "c saw traffic not its own: {others:?} (a={a}, b={b})");
}
