//! The agent's Unix socket: one JSON request per line, one JSON reply per line. Requests
//! are handled one at a time, which serialises concurrent CLI calls.
use std::os::unix::fs::PermissionsExt as _;

use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    signal::unix::{signal, SignalKind},
};
use tracing::{info, warn};

use super::{Agent, AgentError};
use crate::api::{Reply, Request};

pub async fn serve(mut agent: Agent) -> Result<(), AgentError> {
    let path = agent.paths().socket();
    let listen_err = |source| AgentError::Listen { path: path.clone(), source };
    crate::paths::create_private_dir(&agent.paths().run_dir).map_err(listen_err)?;
    // A socket left by a killed agent would make bind fail; nobody listens on it.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(listen_err)?;
    // Only root may change the node's networking.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(listen_err)?;
    info!(socket = %path.display(), "listening");

    let mut term = signal(SignalKind::terminate()).map_err(listen_err)?;
    let mut int = signal(SignalKind::interrupt()).map_err(listen_err)?;
    let mut gc = tokio::time::interval(agent.gc_interval());
    loop {
        tokio::select! {
            _ = gc.tick() => {
                if let Err(e) = agent.collect_conntrack() {
                    warn!("conntrack collection: {e}");
                }
            }
            conn = listener.accept() => match conn {
                Ok((stream, _)) => {
                    if let Err(e) = handle(&mut agent, stream).await {
                        warn!("client connection: {e}");
                    }
                }
                Err(e) => warn!("accept: {e}"),
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let _ = std::fs::remove_file(&path);
    info!("agent stopped; maps stay pinned, programs detach with the agent");
    Ok(())
}

/// How long a client may keep the agent waiting for its next request line. Requests
/// are served one at a time, so a stuck client would otherwise stall every other one.
/// Only the wait for input is bounded: a request being carried out is never cancelled
/// halfway.
const CLIENT_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

async fn handle(agent: &mut Agent, stream: UnixStream) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    loop {
        let Ok(next) = tokio::time::timeout(CLIENT_IDLE, lines.next_line()).await else {
            warn!("client sent nothing for {CLIENT_IDLE:?}; closing its connection");
            return Ok(());
        };
        let Some(line) = next? else { return Ok(()) };
        let reply = match serde_json::from_str::<Request>(&line) {
            Err(e) => Reply::Error { message: format!("malformed request: {e}") },
            Ok(req) => dispatch(agent, req).await,
        };
        let mut out = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
        out.push(b'\n');
        write.write_all(&out).await?;
    }
}

async fn dispatch(agent: &mut Agent, req: Request) -> Reply {
    let result = match req {
        Request::EndpointAdd(spec) => agent.endpoint_add(spec).await.map(Reply::Endpoint),
        Request::EndpointDel { name } => {
            agent.endpoint_del(&name).await.map(|existed| Reply::Deleted { existed })
        }
        Request::PortAdd(spec) => agent.port_add(spec).await.map(Reply::Port),
        Request::PortDel { proto, host_port, host_ip } => {
            agent.port_del(proto, host_port, host_ip).map(|existed| Reply::Deleted { existed })
        }
        Request::Reconcile { dry_run } => {
            agent.reconcile(dry_run).await.map(|repairs| Reply::Reconciled { dry_run, repairs })
        }
    };
    result.unwrap_or_else(|e| Reply::Error { message: e.to_string() })
}
