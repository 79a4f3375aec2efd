//! One node's membership: joining (claim the name, get the subnet), staying alive (the
//! lease, claimed again whenever the store comes back), and the operator's view of
//! every node (list, delete).
use std::{
    collections::HashSet,
    convert::Infallible,
    future::Future,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{keys, subnet::free_subnet, ClusterConfig, ClusterError, NodeRecord, NodeStatus, StoreUrl};

/// Every store call is bounded: a store that does not answer is treated as down
/// (forwarding never waits on it; the agent's start and the CLI do, this long at most).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The node's record as last agreed with the store, in the state directory: a restart
/// while the store is down starts from it instead of failing.
const CACHE_FILE: &str = "cluster-node.json";

/// Who holds a node name: the value of its `alive/` key.
#[derive(Serialize, Deserialize)]
struct Holder {
    agent_id: String,
    address: Ipv4Addr,
}

/// Runs one store call with the bound, naming the store in the error.
async fn call<T>(
    store: &StoreUrl,
    f: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ClusterError::Store { store: store.clone(), reason: e.to_string() }),
        Err(_) => Err(ClusterError::Store {
            store: store.clone(),
            reason: format!("no answer in {CALL_TIMEOUT:?}"),
        }),
    }
}

async fn connect(store: &StoreUrl) -> Result<Client, ClusterError> {
    let opts = ConnectOptions::new().with_connect_timeout(CONNECT_TIMEOUT);
    call(store, Client::connect(&store.endpoints, Some(opts))).await
}

fn corrupt(key: &str, reason: impl std::fmt::Display) -> ClusterError {
    ClusterError::Corrupt { key: key.to_string(), reason: reason.to_string() }
}

/// The node's membership while the agent runs: its record and a task that keeps its
/// lease alive, reconnecting with backoff while the store is away.
pub struct Member {
    store: StoreUrl,
    cluster_cidr: Ipv4Net,
    record: NodeRecord,
    connected: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Member {
    /// Joins the cluster: claims the node name, gets the node's subnet (the one it had,
    /// or a free one), and starts keeping the node alive. With the store unreachable, a
    /// node that joined before starts from its cached record and joins in the
    /// background; a node that never joined cannot start.
    pub async fn start(
        cfg: ClusterConfig,
        agent_id: String,
        address: Ipv4Addr,
        state_dir: &Path,
    ) -> Result<Member, ClusterError> {
        let cache = state_dir.join(CACHE_FILE);
        let (record, lease) = match join(&cfg, &agent_id, address).await {
            Ok((record, lease)) => {
                save_cache(&cache, &record);
                (record, Some(lease))
            }
            Err(e @ ClusterError::Store { .. }) => match load_cache(&cache, &cfg) {
                Some(record) => {
                    warn!(store = %cfg.store, subnet = %record.pod_cidr,
                          "{e}; starting with the subnet this node had, joining when the store is back");
                    (record, None)
                }
                None => return Err(e),
            },
            Err(e) => return Err(e),
        };
        info!(node = %record.name, subnet = %record.pod_cidr, address = %record.address,
              tunnel = %record.tunnel, store = %cfg.store, "cluster member");
        let connected = Arc::new(AtomicBool::new(lease.is_some()));
        let (store, cluster_cidr) = (cfg.store.clone(), cfg.cluster_cidr);
        let task = tokio::spawn(keep_alive(cfg, agent_id, address, lease, connected.clone()));
        Ok(Member { store, cluster_cidr, record, connected, task })
    }

    pub fn store(&self) -> &StoreUrl {
        &self.store
    }

    pub fn cluster_cidr(&self) -> Ipv4Net {
        self.cluster_cidr
    }

    pub fn record(&self) -> &NodeRecord {
        &self.record
    }

    /// Did the last exchange with the store succeed?
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// The flag behind [`Member::connected`], for readers on other tasks (metrics).
    pub fn connected_flag(&self) -> Arc<AtomicBool> {
        self.connected.clone()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn load_cache(path: &PathBuf, cfg: &ClusterConfig) -> Option<NodeRecord> {
    let record: NodeRecord = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    (record.name == cfg.node_name && fits(cfg, record.pod_cidr)).then_some(record)
}

fn save_cache(path: &PathBuf, record: &NodeRecord) {
    let tmp = path.with_extension("tmp");
    let written = serde_json::to_vec(record)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        warn!("cannot cache the node's record in {}: {e}", path.display());
    }
}

/// Is `net` a node subnet of this cluster's shape?
fn fits(cfg: &ClusterConfig, net: Ipv4Net) -> bool {
    net.prefix_len() == cfg.node_prefix && cfg.cluster_cidr.contains(&net)
}

/// Claims the name and gets the subnet; returns the record and the lease. A refused
/// subnet gives the name back, so a failed join leaves nothing behind.
async fn join(
    cfg: &ClusterConfig,
    agent_id: &str,
    address: Ipv4Addr,
) -> Result<(NodeRecord, i64), ClusterError> {
    let mut client = connect(&cfg.store).await?;
    let lease = claim(&mut client, cfg, agent_id, address).await?;
    match subnet_for(&mut client, cfg, address).await {
        Ok(record) => Ok((record, lease)),
        Err(e) => {
            let _ = call(&cfg.store, client.lease_revoke(lease)).await;
            Err(e)
        }
    }
}

/// Takes the node name under a new lease: free, or held by this same agent (a restart
/// within the lease). Held by another agent: refused, naming it.
async fn claim(
    client: &mut Client,
    cfg: &ClusterConfig,
    agent_id: &str,
    address: Ipv4Addr,
) -> Result<i64, ClusterError> {
    let store = &cfg.store;
    let lease = call(store, client.lease_grant(cfg.lease_secs as i64, None)).await?.id();
    let key = keys::alive(&cfg.node_name);
    let holder =
        serde_json::to_string(&Holder { agent_id: agent_id.to_string(), address }).expect("plain data");
    let put = || TxnOp::put(key.clone(), holder.clone(), Some(PutOptions::new().with_lease(lease)));
    for _ in 0..8 {
        let free = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([put()])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = call(store, client.txn(free)).await?;
        if resp.succeeded() {
            return Ok(lease);
        }
        let Some(held) = first_value(&resp.op_responses()) else { continue };
        let other: Holder = serde_json::from_slice(&held).map_err(|e| corrupt(&key, e))?;
        if other.agent_id != agent_id {
            let _ = call(store, client.lease_revoke(lease)).await;
            return Err(ClusterError::NameTaken {
                name: cfg.node_name.clone(),
                address: other.address.to_string(),
            });
        }
        // This agent before a restart: move the name to the new lease, unless it
        // changed hands meanwhile.
        let ours = Txn::new().when([Compare::value(key.clone(), CompareOp::Equal, held)]).and_then([put()]);
        if call(store, client.txn(ours)).await?.succeeded() {
            return Ok(lease);
        }
    }
    let _ = call(store, client.lease_revoke(lease)).await;
    Err(ClusterError::Contended)
}

/// The value a transaction's single get found, if any.
fn first_value(responses: &[TxnOpResponse]) -> Option<Vec<u8>> {
    responses.iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
        _ => None,
    })
}

/// The node's subnet: the recorded one, or the lowest free one, taken in a transaction
/// that fails if another node took it (or registered this name) meanwhile.
async fn subnet_for(
    client: &mut Client,
    cfg: &ClusterConfig,
    address: Ipv4Addr,
) -> Result<NodeRecord, ClusterError> {
    let store = &cfg.store;
    let name = &cfg.node_name;
    let node_key = keys::node(name);
    for _ in 0..64 {
        let found = call(store, client.get(node_key.clone(), None)).await?;
        if let Some(kv) = found.kvs().first() {
            let mut record: NodeRecord =
                serde_json::from_slice(kv.value()).map_err(|e| corrupt(&node_key, e))?;
            if !fits(cfg, record.pod_cidr) {
                return Err(ClusterError::SubnetMismatch {
                    name: name.clone(),
                    recorded: record.pod_cidr,
                    cidr: cfg.cluster_cidr,
                    prefix: cfg.node_prefix,
                });
            }
            if record.address == address && record.tunnel == cfg.tunnel {
                return Ok(record);
            }
            // The node moved (a new underlay address) or changed its tunnel mode.
            record.address = address;
            record.tunnel = cfg.tunnel;
            let update = Txn::new()
                .when([Compare::mod_revision(node_key.clone(), CompareOp::Equal, kv.mod_revision())])
                .and_then([TxnOp::put(node_key.clone(), to_json(&record), None)]);
            if call(store, client.txn(update)).await?.succeeded() {
                return Ok(record);
            }
            continue;
        }
        let listed =
            call(store, client.get(keys::SUBNETS, Some(GetOptions::new().with_prefix().with_keys_only())))
                .await?;
        let taken: HashSet<Ipv4Net> =
            listed.kvs().iter().filter_map(|kv| keys::parse_subnet(kv.key_str().ok()?)).collect();
        let net = free_subnet(cfg.cluster_cidr, cfg.node_prefix, &taken)
            .ok_or(ClusterError::Full { cidr: cfg.cluster_cidr, prefix: cfg.node_prefix })?;
        let record = NodeRecord { name: name.clone(), address, pod_cidr: net, tunnel: cfg.tunnel };
        let take = Txn::new()
            .when([
                Compare::create_revision(keys::subnet(net), CompareOp::Equal, 0),
                Compare::create_revision(node_key.clone(), CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::put(keys::subnet(net), name.as_bytes(), None),
                TxnOp::put(node_key.clone(), to_json(&record), None),
            ]);
        if call(store, client.txn(take)).await?.succeeded() {
            info!(node = %name, subnet = %net, "subnet allocated");
            return Ok(record);
        }
    }
    Err(ClusterError::Contended)
}

fn to_json(record: &NodeRecord) -> Vec<u8> {
    serde_json::to_vec(record).expect("plain data")
}

/// Keeps the node's lease alive for as long as the agent runs. When the store goes
/// away, forwarding goes on (nothing here touches the datapath); the task reconnects
/// with backoff and claims the name again under a new lease.
async fn keep_alive(
    cfg: ClusterConfig,
    agent_id: String,
    address: Ipv4Addr,
    mut lease: Option<i64>,
    connected: Arc<AtomicBool>,
) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let Err(e) = session(&cfg, &agent_id, address, &mut lease, &connected, &mut backoff).await;
        if connected.swap(false, Ordering::Relaxed) {
            warn!("{e}; forwarding goes on with the routes it has, retrying");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One connection's worth of keep-alives; returns only when it breaks.
async fn session(
    cfg: &ClusterConfig,
    agent_id: &str,
    address: Ipv4Addr,
    lease: &mut Option<i64>,
    connected: &AtomicBool,
    backoff: &mut Duration,
) -> Result<Infallible, ClusterError> {
    let period = Duration::from_millis((cfg.lease_secs * 1000 / 3).max(200));
    let mut client = connect(&cfg.store).await?;
    let id = match lease.take() {
        Some(id) => id,
        None => {
            let id = claim(&mut client, cfg, agent_id, address).await?;
            info!(store = %cfg.store, "in touch with the store again: node {} is ready", cfg.node_name);
            id
        }
    };
    let (mut keeper, mut stream) = call(&cfg.store, client.lease_keep_alive(id)).await?;
    loop {
        call(&cfg.store, keeper.keep_alive()).await?;
        match call(&cfg.store, stream.message()).await? {
            Some(r) if r.ttl() > 0 => connected.store(true, Ordering::Relaxed),
            _ => {
                return Err(ClusterError::Store {
                    store: cfg.store.clone(),
                    reason: "the node's lease expired".into(),
                })
            }
        }
        *backoff = Duration::from_millis(250);
        tokio::time::sleep(period).await;
    }
}

/// Every node the cluster records, with whether its agent holds a live lease.
pub async fn list_nodes(store: &StoreUrl) -> Result<Vec<NodeStatus>, ClusterError> {
    let mut client = connect(store).await?;
    let prefix = || Some(GetOptions::new().with_prefix());
    let nodes = call(store, client.get(keys::NODES, prefix())).await?;
    let alive = call(store, client.get(keys::ALIVE, prefix())).await?;
    let ready: HashSet<String> = alive
        .kvs()
        .iter()
        .filter_map(|kv| Some(kv.key_str().ok()?.strip_prefix(keys::ALIVE)?.to_string()))
        .collect();
    let mut out = Vec::new();
    for kv in nodes.kvs() {
        let key = kv.key_str().unwrap_or_default();
        let r: NodeRecord = serde_json::from_slice(kv.value()).map_err(|e| corrupt(key, e))?;
        out.push(NodeStatus {
            ready: ready.contains(&r.name),
            name: r.name,
            address: r.address,
            pod_cidr: r.pod_cidr,
            tunnel: r.tunnel,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Forgets a node for good and frees its subnet; refused while its agent is alive.
pub async fn delete_node(store: &StoreUrl, name: &str) -> Result<NodeRecord, ClusterError> {
    let mut client = connect(store).await?;
    let (node_key, alive_key) = (keys::node(name), keys::alive(name));
    let alive = call(store, client.get(alive_key.clone(), None)).await?;
    if let Some(kv) = alive.kvs().first() {
        let holder: Holder = serde_json::from_slice(kv.value()).map_err(|e| corrupt(&alive_key, e))?;
        return Err(ClusterError::StillReady { name: name.to_string(), address: holder.address.to_string() });
    }
    let found = call(store, client.get(node_key.clone(), None)).await?;
    let kv = found.kvs().first().ok_or_else(|| ClusterError::UnknownNode { name: name.to_string() })?;
    let record: NodeRecord = serde_json::from_slice(kv.value()).map_err(|e| corrupt(&node_key, e))?;
    // Only if nothing changed meanwhile: the record is the one read, and no agent came
    // back for the name.
    let forget = Txn::new()
        .when([
            Compare::mod_revision(node_key.clone(), CompareOp::Equal, kv.mod_revision()),
            Compare::create_revision(alive_key, CompareOp::Equal, 0),
        ])
        .and_then([TxnOp::delete(node_key, None), TxnOp::delete(keys::subnet(record.pod_cidr), None)]);
    if !call(store, client.txn(forget)).await?.succeeded() {
        return Err(ClusterError::Contended);
    }
    info!(node = %name, subnet = %record.pod_cidr, "node deleted, subnet freed");
    Ok(record)
}

/// Sends every node's record, whole, to `tx` whenever one changes: after listing them,
/// then after each change the store reports (a watch from the listed revision, so none
/// is missed). While the store is away the last list stands; after it, the task lists
/// again. Ends when `tx` closes.
pub fn watch_nodes(
    store: StoreUrl,
    tx: tokio::sync::mpsc::Sender<Vec<NodeRecord>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(250);
        loop {
            match watch_session(&store, &tx, &mut backoff).await {
                Ok(()) => return,
                Err(e) => warn!("watching the cluster's nodes: {e}; retrying"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    })
}

/// One list and watch; Ok when the receiver is gone.
async fn watch_session(
    store: &StoreUrl,
    tx: &tokio::sync::mpsc::Sender<Vec<NodeRecord>>,
    backoff: &mut Duration,
) -> Result<(), ClusterError> {
    let mut client = connect(store).await?;
    let listed = call(store, client.get(keys::NODES, Some(GetOptions::new().with_prefix()))).await?;
    let revision = listed.header().map_or(0, |h| h.revision());
    let mut nodes = std::collections::BTreeMap::new();
    for kv in listed.kvs() {
        let key = kv.key_str().unwrap_or_default().to_string();
        nodes.insert(
            key.clone(),
            serde_json::from_slice::<NodeRecord>(kv.value()).map_err(|e| corrupt(&key, e))?,
        );
    }
    if tx.send(nodes.values().cloned().collect()).await.is_err() {
        return Ok(());
    }
    let opts = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
    let mut stream = call(store, client.watch(keys::NODES, Some(opts))).await?;
    *backoff = Duration::from_millis(250);
    loop {
        let resp = stream
            .message()
            .await
            .map_err(|e| ClusterError::Store { store: store.clone(), reason: e.to_string() })?
            .ok_or_else(|| ClusterError::Store { store: store.clone(), reason: "the watch ended".into() })?;
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let key = kv.key_str().unwrap_or_default().to_string();
            match ev.event_type() {
                EventType::Put => match serde_json::from_slice::<NodeRecord>(kv.value()) {
                    Ok(r) => {
                        nodes.insert(key, r);
                    }
                    Err(e) => warn!("{}", corrupt(&key, e)),
                },
                EventType::Delete => {
                    nodes.remove(&key);
                }
            }
        }
        if tx.send(nodes.values().cloned().collect()).await.is_err() {
            return Ok(());
        }
    }
}
