//! udp-probe ADDR:PORT MESSAGE [--connect]: sends MESSAGE in one datagram, from a socket
//! of ADDR's family (`[::1]:53` for IPv6), and prints where the answer came from and
//! what it said (`from ADDR:PORT: TEXT`); with --connect, on a connected socket, and
//! also the socket's peer (`peer ADDR:PORT`).
//! A helper for the tests: the node-local socket hooks act on a process's sockets, so
//! the client must be a process of its own in the lab's cgroup.
use std::{net::UdpSocket, process::ExitCode, time::Duration};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(to), Some(msg)) = (args.first(), args.get(1)) else {
        eprintln!("usage: udp-probe ADDR:PORT MESSAGE [--connect]");
        return ExitCode::from(2);
    };
    match probe(to, msg, args.get(2).is_some_and(|a| a == "--connect")) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp-probe {to}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn probe(to: &str, msg: &str, connect: bool) -> std::io::Result<()> {
    let to: std::net::SocketAddr = to.parse().map_err(std::io::Error::other)?;
    let s = UdpSocket::bind(if to.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" })?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    if connect {
        s.connect(to)?;
        println!("peer {}", s.peer_addr()?);
        s.send(msg.as_bytes())?;
    } else {
        s.send_to(msg.as_bytes(), to)?;
    }
    let mut buf = [0u8; 512];
    let (n, from) = s.recv_from(&mut buf)?;
    println!("from {from}: {}", String::from_utf8_lossy(&buf[..n]));
    Ok(())
}
