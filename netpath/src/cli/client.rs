//! The CLI's side of the agent socket.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
};

use anyhow::{bail, Context as _};

use crate::{
    api::{Reply, Request, Response},
    paths::Paths,
};

/// No agent listens on the socket: a caller may wait and try again (CNI's code 11).
#[derive(Debug, thiserror::Error)]
#[error("no agent is listening on {} ({source}); start it with `netpath agent` (same --run-dir)", path.display())]
pub struct NoAgent {
    pub path: std::path::PathBuf,
    source: std::io::Error,
}

impl NoAgent {
    pub fn kind(&self) -> std::io::ErrorKind {
        self.source.kind()
    }
}

/// The agent carried out the request and refused it, with its reason.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Sends one request and returns the reply; the reply's warnings go to stderr.
pub fn call(paths: &Paths, req: &Request) -> anyhow::Result<Reply> {
    call_keep(paths, req).map(|(reply, _)| reply)
}

/// [`call`], failing when the agent has not answered within `timeout` (its error then
/// holds the io::Error of the read).
pub fn call_within(paths: &Paths, req: &Request, timeout: std::time::Duration) -> anyhow::Result<Reply> {
    exchange(paths, req, Some(timeout)).map(|(reply, _)| reply)
}

/// [`call`], also returning the connection (a trace lasts as long as it stays open).
pub fn call_keep(paths: &Paths, req: &Request) -> anyhow::Result<(Reply, UnixStream)> {
    exchange(paths, req, None)
}

fn exchange(
    paths: &Paths,
    req: &Request,
    timeout: Option<std::time::Duration>,
) -> anyhow::Result<(Reply, UnixStream)> {
    let path = paths.socket();
    let mut stream = UnixStream::connect(&path).map_err(|source| NoAgent { path: path.clone(), source })?;
    stream.set_read_timeout(timeout)?;
    stream.set_write_timeout(timeout)?;
    let mut line = serde_json::to_vec(req).context("failed to encode request")?;
    line.push(b'\n');
    stream.write_all(&line).context("failed to send request to the agent")?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply).context("failed to read the agent's reply")?;
    if reply.is_empty() {
        bail!("the agent closed the connection without replying; see its log");
    }
    let response: Response = serde_json::from_str(&reply).context("the agent sent a malformed reply")?;
    for w in &response.warnings {
        eprintln!("netpath: warning: {w}");
    }
    match response.reply {
        Reply::Error { message } => Err(Refused(message).into()),
        ok => Ok((ok, stream)),
    }
}

/// Reports the answer to a delete: `present` when the thing existed, `absent` when there
/// was nothing to do (a success all the same).
pub fn deleted(reply: Reply, present: &str, absent: &str) -> anyhow::Result<()> {
    match reply {
        Reply::Deleted { existed } => {
            println!("{}", if existed { present } else { absent });
            Ok(())
        }
        other => unexpected(other),
    }
}

pub fn unexpected(reply: Reply) -> anyhow::Result<()> {
    bail!("unexpected reply from the agent: {reply:?}")
}
