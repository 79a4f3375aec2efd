//! The agent's Unix socket: one JSON request per line, one JSON reply per line.
//!
//! Three owners, so that no client can hold up another:
//! - the [`Listener`] accepts connections and caps how many are open, closing the
//!   longest-idle one when a new client would exceed the cap;
//! - each connection has a handler task that reads its client's requests (bounded in
//!   length and in how long the client may stay silent) and writes the replies;
//! - the agent task owns the [`Agent`] and carries out one job at a time from a queue:
//!   requests, the end of a trace, link events, conntrack collection. A silent client
//!   never reaches the queue, so it delays nobody.
use std::{
    collections::VecDeque,
    os::unix::fs::PermissionsExt as _,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    signal::unix::{signal, Signal, SignalKind},
    sync::{mpsc, oneshot},
};
use tracing::{error, info, warn};

use super::{endpoint::AddStart, inflight::Route, uplink::LinkEvent, Agent, AgentError};
use crate::api::{Reply, Request, Response};

/// How long a client may keep its connection open without sending a whole request line.
const CLIENT_IDLE: Duration = Duration::from_secs(10);
/// How long a client may take to read its reply.
const CLIENT_WRITE: Duration = Duration::from_secs(10);
/// Longest request line: a batch of every port of one protocol (65,535 mappings of about
/// a hundred bytes) fits; a line that never ends does not take the agent's memory.
const MAX_REQUEST: usize = 8 << 20;
/// Open connections at most; beyond it the longest-idle one is closed.
const MAX_CONNECTIONS: usize = 1024;

/// Work for the agent task, one at a time.
pub enum Job {
    Request {
        request: Request,
        peer_pid: u32,
        reply: oneshot::Sender<Response>,
    },
    /// A trace's client disconnected.
    TraceEnded {
        session: u64,
    },
    Link(LinkEvent),
    /// Every node of the cluster, as the store has them now.
    Nodes(Vec<crate::cluster::NodeRecord>),
    /// An endpoint add's kernel work ended (see `inflight`).
    Built {
        plan: Box<super::endpoint::AddPlan>,
        built: Result<(), AgentError>,
        reply: oneshot::Sender<Response>,
    },
    /// The task of an endpoint change ended without its end (it panicked).
    Lost {
        name: String,
        reply: Option<oneshot::Sender<Response>>,
        error: String,
    },
    /// An endpoint delete's pair is gone, or could not be deleted; `reply` is None
    /// when the caller was answered already (`--no-wait`).
    Unplumbed {
        name: String,
        outcome: Result<(), AgentError>,
        reply: Option<oneshot::Sender<Response>>,
    },
}

/// SIGTERM and SIGINT, taken when the process starts. tokio installs a signal's
/// handler and then subscribes the stream, and a signal broadcast in between has no
/// listener and is lost: taken any later (once the socket was bound), a SIGTERM sent the
/// moment the socket answered went unanswered (a 6.12 guest's test waited 2 min).
pub struct Stop {
    term: Signal,
    int: Signal,
}

impl Stop {
    pub fn new() -> Result<Stop, AgentError> {
        let term = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
        let int = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
        Ok(Stop { term, int })
    }

    /// Until one of them comes.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// The agent's socket: the last step of a start.
fn listen(agent: &Agent) -> Result<UnixListener, AgentError> {
    let path = agent.paths().socket();
    let listen_err = |source| AgentError::Listen { path: path.clone(), source };
    crate::paths::create_private_dir(&agent.paths().run_dir).map_err(listen_err)?;
    // A socket left by a killed agent would make bind fail; nobody listens on it (the
    // run directory's lock says this agent is its only user).
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(listen_err)?;
    // Only root may change the node's networking.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(listen_err)?;
    Ok(listener)
}

pub async fn serve(mut agent: Agent, mut stop: Stop) -> Result<(), AgentError> {
    let path = agent.paths().socket();
    let listener = match listen(&agent) {
        Ok(listening) => listening,
        Err(e) => {
            // A start that fails here must not keep the node name taken.
            if let Some(l) = agent.cluster.as_ref().map(crate::cluster::Member::leaver) {
                l.leave().await;
            }
            return Err(e);
        }
    };
    raise_fd_limit();
    info!(socket = %path.display(), "listening");
    // systemd's Type=notify: ready only now, with the datapath attached and the socket
    // taking connections (a no-op without $NOTIFY_SOCKET).
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        warn!("cannot tell the service manager that the agent is ready: {e}");
    }

    let (jobs_tx, mut jobs) = mpsc::channel::<Job>(1024);
    tokio::spawn(Listener::new(listener, jobs_tx.clone()).run());
    if let Some(name) = agent.node.uplink_name.clone() {
        let index = agent.node.uplink.as_ref().map(|u| u.index);
        if let Err(e) = super::uplink::watch(name, index, jobs_tx.clone()) {
            warn!("cannot watch the uplink's link events: {e}");
        }
    }
    if let Some(m) = &agent.cluster {
        let (tx, mut rx) = mpsc::channel(16);
        crate::cluster::watch_nodes(m.store().clone(), tx);
        let jobs = jobs_tx.clone();
        tokio::spawn(async move {
            while let Some(nodes) = rx.recv().await {
                if jobs.send(Job::Nodes(nodes)).await.is_err() {
                    return;
                }
            }
        });
    }
    agent.inflight.serve(jobs_tx);

    let mut gc = tokio::time::interval(agent.conntrack.gc_interval());
    loop {
        let promotion = agent.promotion_due();
        tokio::select! {
            // A request first, then the collection; a promotion only when neither waits.
            biased;
            () = stop.recv() => break,
            Some(job) = jobs.recv() => {
                agent.take(job).await;
                while let Some(job) = agent.inflight.next_ready() {
                    agent.take(job).await;
                }
            }
            _ = gc.tick() => {
                if let Err(e) = agent.conntrack.collect(&mut agent.datapath) {
                    warn!("conntrack collection: {e}");
                }
            }
            () = tokio::time::sleep_until(promotion.unwrap_or_else(tokio::time::Instant::now)),
                if promotion.is_some() => agent.promote_next().await,
        }
    }
    agent.finish_inflight(&mut jobs).await;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    agent.trace_stop_all();
    let _ = std::fs::remove_file(&path);
    info!(
        "agent stopped; the datapath keeps forwarding (programs stay attached, maps pinned in {}); \
         a restarted agent takes over, removing that directory takes netpath off the node",
        agent.paths().bpffs_dir.display()
    );
    Ok(())
}

/// Many clients, each with an open descriptor: the default soft limit (1024) would make
/// accept fail long before the connection cap. The hard limit is the system's word.
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write/read only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(1 << 20);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// How long a stopping agent waits for the endpoint changes in flight to end.
const STOP_WAIT: Duration = Duration::from_secs(30);

impl Agent {
    /// Runs `job` now, or queues it behind the endpoint changes in flight it must follow.
    async fn take(&mut self, job: Job) {
        if let Some(p) = self.promotions.as_mut() {
            p.busy();
        }
        match self.inflight.route(&job) {
            Route::Now => self.run_job(job).await,
            later => self.inflight.wait(later, job),
        }
    }

    async fn run_job(&mut self, job: Job) {
        // The client may be gone; its request was carried out all the same.
        match job {
            Job::Request { request: Request::EndpointAdd(spec), reply, .. }
                if self.inflight.sender().is_some() =>
            {
                self.start_add(spec, reply).await
            }
            Job::Request { request: Request::EndpointDel { name, owner, no_wait }, reply, .. }
                if self.inflight.sender().is_some() =>
            {
                self.start_del(&name, owner.as_deref(), no_wait, reply)
            }
            Job::Request { request, peer_pid, reply } => {
                let response = self.dispatch(request, peer_pid).await;
                let _ = reply.send(response);
            }
            Job::TraceEnded { session } => self.trace_end(session),
            Job::Link(event) => self.on_link_event(event).await,
            Job::Nodes(nodes) => self.on_nodes(nodes).await,
            Job::Lost { name, reply, error } => {
                self.inflight.release(&name);
                warn!(endpoint = %name, "an endpoint change failed: {error}; `netpath reconcile` repairs what it left");
                if let Some(reply) = reply {
                    let _ = reply.send(Response::error(format!(
                        "the change of endpoint {name} failed ({error}); `netpath reconcile` repairs what it left"
                    )));
                }
            }
            Job::Built { plan, built, reply } => {
                let name = plan.rec.name.clone();
                self.inflight.publishing(&name);
                let result = self.add_finish(*plan, built).await.map(Reply::Endpoint);
                self.inflight.release(&name);
                let _ = reply.send(self.respond(result));
            }
            Job::Unplumbed { name, outcome, reply } => {
                self.inflight.release(&name);
                match (reply, outcome) {
                    (Some(reply), outcome) => {
                        let _ = reply.send(self.respond(outcome.map(|()| Reply::Deleted { existed: true })));
                    }
                    (None, Err(e)) => warn!(endpoint = %name,
                        "the pair of a deleted endpoint could not be deleted: {e}; reconciliation removes it"),
                    (None, Ok(())) => {}
                }
            }
        }
    }

    /// An endpoint add from the socket: checked and claimed here, built beside other
    /// requests, finished by [`Job::Built`].
    async fn start_add(&mut self, spec: crate::api::EndpointSpec, reply: oneshot::Sender<Response>) {
        let (held, held_ports) = (self.inflight.held(), self.inflight.held_ports());
        match self.add_begin(spec, &held, &held_ports).await {
            Err(e) => {
                let _ = reply.send(self.respond(Err(e)));
            }
            Ok(AddStart::Done(rec)) => {
                let _ = reply.send(self.respond(Ok(Reply::Endpoint(*rec))));
            }
            Ok(AddStart::Build(mut plan)) => {
                let Some(done) = self.inflight.sender() else { return };
                self.inflight.hold(&plan.rec, plan.planned.clone());
                let name = plan.rec.name.clone();
                tokio::spawn(async move {
                    let work = tokio::spawn(async move {
                        let built = plan.builder.build(&plan.ns, &mut plan.rec).await;
                        (plan, built)
                    });
                    // A stopped agent leaves a pair it never recorded: marked as its own,
                    // the next one's reconciliation removes it.
                    let job = match work.await {
                        Ok((plan, built)) => Job::Built { plan, built, reply },
                        Err(e) => Job::Lost { name, reply: Some(reply), error: e.to_string() },
                    };
                    let _ = done.send(job).await;
                });
            }
        }
    }

    /// An endpoint delete from the socket: all but the pair's deletion here, which runs
    /// beside other requests and ends in [`Job::Unplumbed`]; with `no_wait` the caller
    /// is answered before it.
    fn start_del(
        &mut self,
        name: &str,
        owner: Option<&str>,
        no_wait: bool,
        reply: oneshot::Sender<Response>,
    ) {
        match self.del_begin(name, owner) {
            Err(e) => {
                let _ = reply.send(self.respond(Err(e)));
            }
            Ok(None) => {
                let _ = reply.send(self.respond(Ok(Reply::Deleted { existed: false })));
            }
            Ok(Some(plan)) => {
                let Some(done) = self.inflight.sender() else { return };
                self.inflight.hold(plan.record(), Vec::new());
                let name = name.to_string();
                let reply = match no_wait {
                    true => {
                        let _ = reply.send(self.respond(Ok(Reply::Deleted { existed: true })));
                        None
                    }
                    false => Some(reply),
                };
                tokio::spawn(async move {
                    let job = match tokio::spawn(plan.run()).await {
                        Ok(outcome) => Job::Unplumbed { name, outcome, reply },
                        Err(e) => Job::Lost { name, reply, error: e.to_string() },
                    };
                    let _ = done.send(job).await;
                });
            }
        }
    }

    /// A stopping agent finishes the endpoint changes in flight (for so long at most),
    /// refusing what waited for them: a client gets its answer, and no change stops half
    /// done in the agent's records.
    async fn finish_inflight(&mut self, jobs: &mut mpsc::Receiver<Job>) {
        let deadline = tokio::time::Instant::now() + STOP_WAIT;
        let refuse = |job: Job| {
            if let Job::Request { reply, .. } = job {
                let _ =
                    reply.send(Response::error("the agent is stopping; try again once it is back".into()));
            }
        };
        while !self.inflight.is_idle() {
            match tokio::time::timeout_at(deadline, jobs.recv()).await {
                Ok(Some(job @ (Job::Built { .. } | Job::Unplumbed { .. } | Job::Lost { .. }))) => {
                    self.run_job(job).await
                }
                Ok(Some(job)) => refuse(job),
                _ => {
                    warn!("stopping with endpoint changes in flight; the next start reconciles them");
                    self.inflight.drain().into_iter().for_each(refuse);
                    break;
                }
            }
            while let Some(job) = self.inflight.next_ready() {
                refuse(job);
            }
        }
    }

    async fn dispatch(&mut self, req: Request, peer_pid: u32) -> Response {
        let result = match req {
            Request::EndpointAdd(spec) => self.endpoint_add(spec).await.map(Reply::Endpoint),
            Request::EndpointDel { name, owner, .. } => {
                self.endpoint_del(&name, owner.as_deref()).await.map(|existed| Reply::Deleted { existed })
            }
            Request::PortAdd(spec) => self.port_add(spec).await.map(Reply::Port),
            Request::PortsAdd { ports } => self.ports_add(ports).await.map(|ports| Reply::Ports { ports }),
            Request::PortDel { proto, host_port, host_ip } => {
                self.port_del(proto, host_port, host_ip).map(|existed| Reply::Deleted { existed })
            }
            Request::PortsDel { proto, host_ports, host_ip } => {
                let keys: Vec<_> = host_ports.iter().map(|p| (proto, *p, host_ip)).collect();
                self.ports_del(&keys).map(|existed| Reply::PortsDeleted { existed })
            }
            Request::Apply { spec, dry_run } => match self.apply(spec, dry_run).await {
                Ok(changes) => Ok(Reply::Applied { dry_run, changes }),
                Err(super::apply::ApplyError { entry, error, restored: Some(restored) }) => {
                    Ok(Reply::ApplyFailed { entry, message: error.to_string(), restored })
                }
                Err(super::apply::ApplyError { entry: Some(entry), error, restored: None }) => {
                    Ok(Reply::ApplyRefused { entry, message: error.to_string() })
                }
                Err(super::apply::ApplyError { entry: None, error, restored: None }) => Err(*error),
            },
            Request::Reconcile { dry_run } => {
                self.reconcile(dry_run).await.map(|repairs| Reply::Reconciled { dry_run, repairs })
            }
            Request::TraceStart(spec) => {
                self.trace_start(spec, peer_pid).map(|session| Reply::TraceStarted { session })
            }
            Request::Status => Ok(Reply::Status(self.status())),
            Request::NodeList => self.node_list().await.map(|nodes| Reply::Nodes { nodes }),
            Request::NodeDel { name } => self.node_del(&name).await.map(Reply::NodeDeleted),
            Request::EndpointCheck { name, ports, expect } => {
                self.endpoint_check(&name, &ports, &expect).await.map(|drift| Reply::Checked { drift })
            }
            Request::EndpointList => Ok(Reply::Endpoints { endpoints: self.endpoints.all().to_vec() }),
        };
        self.respond(result)
    }

    /// A request's outcome as its reply line, with what the operator should know.
    fn respond(&self, result: Result<Reply, AgentError>) -> Response {
        match result {
            Ok(reply) => {
                let warnings = match reply {
                    Reply::Endpoint(_) | Reply::Port(_) | Reply::Ports { .. } => self.warnings(),
                    _ => Vec::new(),
                };
                Response { reply, warnings }
            }
            Err(e) => Response { reply: Reply::Error { message: e.to_string() }, warnings: Vec::new() },
        }
    }
}

/// Connections waiting for their client's next request, oldest first: the ones closed
/// when the cap is reached.
#[derive(Default)]
struct Idle {
    waiting: Mutex<VecDeque<(u64, oneshot::Sender<()>)>>,
    open: AtomicUsize,
}

impl Idle {
    /// Registers connection `id` as waiting; the receiver fires when it is to close.
    fn wait(&self, id: u64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).push_back((id, tx));
        rx
    }

    fn busy(&self, id: u64) {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).retain(|(i, _)| *i != id);
    }

    /// Closes the longest-waiting connection; false when every one is busy.
    fn evict_oldest(&self) -> bool {
        let oldest = self.waiting.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
        oldest.is_some_and(|(_, tx)| tx.send(()).is_ok())
    }
}

struct Listener {
    listener: UnixListener,
    jobs: mpsc::Sender<Job>,
    idle: Arc<Idle>,
    next_id: u64,
}

impl Listener {
    fn new(listener: UnixListener, jobs: mpsc::Sender<Job>) -> Self {
        Listener { listener, jobs, idle: Arc::new(Idle::default()), next_id: 0 }
    }

    async fn run(mut self) {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or memory: give the handlers a moment to finish
                    // rather than spin on the error.
                    warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if self.idle.open.load(Ordering::Relaxed) >= MAX_CONNECTIONS && !self.idle.evict_oldest() {
                let mut stream = stream;
                let busy = Response::error(format!(
                    "the agent has {MAX_CONNECTIONS} connections open, all busy; try again"
                ));
                let _ = tokio::time::timeout(CLIENT_WRITE, stream.write_all(&busy.line())).await;
                continue;
            }
            self.next_id += 1;
            let handler = Handler { id: self.next_id, jobs: self.jobs.clone(), idle: self.idle.clone() };
            self.idle.open.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let idle = handler.idle.clone();
                if let Err(e) = handler.run(stream).await {
                    warn!("client connection: {e}");
                }
                idle.open.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
}

/// One client's connection.
struct Handler {
    id: u64,
    jobs: mpsc::Sender<Job>,
    idle: Arc<Idle>,
}

impl Handler {
    async fn run(self, stream: UnixStream) -> std::io::Result<()> {
        let peer_pid = stream.peer_cred().ok().and_then(|c| c.pid()).map_or(0, |p| p as u32);
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        loop {
            let evicted = self.idle.wait(self.id);
            let line = tokio::select! {
                r = tokio::time::timeout(CLIENT_IDLE, read_request(&mut read)) => r,
                _ = evicted => {
                    warn!("closing an idle client connection: {MAX_CONNECTIONS} are open");
                    return Ok(());
                }
            };
            self.idle.busy(self.id);
            let Ok(line) = line else {
                warn!("client sent nothing for {CLIENT_IDLE:?}; closing its connection");
                return Ok(());
            };
            let response = match line? {
                None => return Ok(()),
                Some(Err(message)) => Response::error(message),
                Some(Ok(request)) => {
                    let (tx, rx) = oneshot::channel();
                    let job = Job::Request { request, peer_pid, reply: tx };
                    if self.jobs.send(job).await.is_err() {
                        return Ok(());
                    }
                    match rx.await {
                        Ok(r) => r,
                        Err(_) => return Ok(()),
                    }
                }
            };
            let session = match response.reply {
                Reply::TraceStarted { session } => Some(session),
                _ => None,
            };
            tokio::time::timeout(CLIENT_WRITE, write.write_all(&response.line()))
                .await
                .map_err(|_| std::io::Error::other("client does not read its reply"))??;
            if let Some(session) = session {
                // The trace lasts as long as its client's connection: however the client
                // ends (Ctrl-C, kill -9), the filter is disarmed.
                let mut sink = [0u8; 256];
                while matches!(read.read(&mut sink).await, Ok(n) if n > 0) {}
                let _ = self.jobs.send(Job::TraceEnded { session }).await;
                return Ok(());
            }
        }
    }
}

/// The next request line: None at the end of the stream, `Err` (a message for the
/// client) when it is not a request.
async fn read_request(
    read: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
) -> std::io::Result<Option<Result<Request, String>>> {
    let mut line = Vec::new();
    let n = read.take(MAX_REQUEST as u64 + 1).read_until(b'\n', &mut line).await?;
    if n == 0 {
        return Ok(None);
    }
    if line.len() > MAX_REQUEST {
        return Err(std::io::Error::other(format!("request longer than {MAX_REQUEST} bytes")));
    }
    Ok(Some(serde_json::from_slice::<Request>(&line).map_err(|e| format!("malformed request: {e}"))))
}

impl Response {
    fn error(message: String) -> Self {
        Response { reply: Reply::Error { message }, warnings: Vec::new() }
    }

    fn line(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).unwrap_or_else(|e| {
            error!("cannot encode a reply: {e}");
            b"{\"result\":\"error\",\"message\":\"the agent could not encode its reply\"}".to_vec()
        });
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_waiting_connection_is_closed_first() {
        let idle = Idle::default();
        let mut first = idle.wait(1);
        let mut second = idle.wait(2);
        idle.busy(2);
        let mut third = idle.wait(3);
        assert!(idle.evict_oldest());
        assert!(first.try_recv().is_ok(), "the oldest was not closed");
        assert!(third.try_recv().is_err());
        // Busy connections are never closed; the next is the third.
        assert!(idle.evict_oldest());
        assert!(third.try_recv().is_ok());
        assert!(second.try_recv().is_err());
        assert!(!idle.evict_oldest(), "nothing waits any more");
    }
}
