//! tcp-probe ADDR:PORT MESSAGE: connects, prints the socket's peer (`peer ADDR:PORT`),
//! sends MESSAGE, half-closes and prints what comes back until the server closes
//! (`reply TEXT`). A helper for the tests: the node-local socket hooks act on a
//! process's sockets, so the client must be a process of its own in the lab's cgroup,
//! and getpeername() is what a process sees of where it is connected.
use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpStream},
    process::ExitCode,
    time::Duration,
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(to), Some(msg)) = (args.first(), args.get(1)) else {
        eprintln!("usage: tcp-probe ADDR:PORT MESSAGE");
        return ExitCode::from(2);
    };
    match probe(to, msg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcp-probe {to}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn probe(to: &str, msg: &str) -> std::io::Result<()> {
    let to: SocketAddr = to.parse().map_err(std::io::Error::other)?;
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    println!("peer {}", s.peer_addr()?);
    s.write_all(msg.as_bytes())?;
    s.shutdown(Shutdown::Write)?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    println!("reply {reply}");
    Ok(())
}
