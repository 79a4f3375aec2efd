//! One node's membership: joining (claim the name, get the subnet), staying alive (the
//! lease, claimed again whenever the store comes back), ageing out, and the operator's
//! view of every node (list, delete).
//!
//! Ageing out is flannel's design: the node's record and its subnet claim sit under a
//! second, long lease (TTL `--node-gc-after`) that the running agent keeps alive with
//! the short one. When no agent has refreshed it for that long, etcd itself deletes
//! both keys, in one revision, so every watcher sees the node go (and drops its route)
//! and the subnet is free in the same instant. No sweeper is needed, so none can race
//! an agent coming back: a restart within the window moves the record onto its own new
//! lease in a transaction that only succeeds while the record is unchanged. The lease
//! clock is etcd's, and etcd renews every lease when a leader takes over, so a store
//! outage never ages a node out. etcd bounds a TTL to [its minimum, about 2 s on
//! default settings, .. 9e9 s]; the flag checks keep inside that.
use std::{
    collections::HashSet,
    convert::Infallible,
    future::Future,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::{
    keys,
    subnet::{free_subnet, free_subnet6},
    ClusterConfig, ClusterError, NodeRecord, NodeStatus, StoreUrl,
};

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

/// The node's underlay addresses, as its record carries them.
#[derive(Clone, Copy, Debug)]
pub struct Underlay {
    pub v4: Ipv4Addr,
    /// The uplink's global IPv6 address, if it has one.
    pub v6: Option<Ipv6Addr>,
}

/// The subnets a node had (its cached record's, or those the running datapath serves):
/// the ones it asks for back.
#[derive(Clone, Copy, Debug, Default)]
struct Subnets {
    v4: Option<Ipv4Net>,
    v6: Option<Ipv6Net>,
}

impl Subnets {
    fn of(record: &NodeRecord) -> Self {
        Subnets { v4: Some(record.pod_cidr), v6: record.pod_cidr6 }
    }
}

/// The two leases a running agent keeps alive: the name's (`--node-lease`) and the
/// record's (`--node-gc-after`).
#[derive(Clone, Copy)]
struct Leases {
    alive: i64,
    record: i64,
}

/// The node's membership while the agent runs: its record and a task that keeps its
/// leases alive, reconnecting with backoff while the store is away.
pub struct Member {
    store: StoreUrl,
    cluster_cidr: Ipv4Net,
    /// The IPv6 cluster CIDR and node prefix, when the node serves an IPv6 subnet.
    cluster6: Option<(Ipv6Net, u8)>,
    record: NodeRecord,
    connected: Arc<AtomicBool>,
    /// The name's lease held now (0: none yet), for [`Leaver`].
    held: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

/// Gives the node name back at once, for a start that fails after joining: without it
/// the name stays held by a lease nobody keeps alive, and the retry (with a new agent
/// id, the failed start's is forgotten) is refused as "name taken" until it runs out.
pub struct Leaver {
    store: StoreUrl,
    held: Arc<AtomicI64>,
    task: tokio::task::AbortHandle,
}

impl Leaver {
    /// Stops keeping the name alive and revokes its lease. The record's lease is left
    /// alone: the node keeps its subnet as a stopped node does.
    pub async fn leave(&self) {
        // First the keeper, or it would claim the name again under a new lease.
        self.task.abort();
        let id = self.held.swap(0, Ordering::SeqCst);
        if id == 0 {
            return;
        }
        let revoked = async {
            let mut client = connect(&self.store).await?;
            call(&self.store, client.lease_revoke(id)).await
        };
        match revoked.await {
            Ok(_) => info!("gave the node name back to the cluster"),
            Err(e) => warn!("{e}; the node name stays taken until its lease runs out"),
        }
    }
}

impl Member {
    /// Joins the cluster: claims the node name, gets the node's subnet (the one it had,
    /// or a free one), and starts keeping the node alive. With the store unreachable, a
    /// node that joined before starts from its cached record and joins in the
    /// background; a node that never joined cannot start.
    pub async fn start(
        cfg: ClusterConfig,
        agent_id: String,
        address: Underlay,
        state_dir: &Path,
    ) -> Result<Member, ClusterError> {
        let cache = state_dir.join(CACHE_FILE);
        let cached = load_cache(&cache, &cfg);
        let preferred = cached.as_ref().map(Subnets::of).unwrap_or_default();
        let (record, leases) = match join(&cfg, &agent_id, address, preferred).await {
            Ok((record, leases)) => {
                save_cache(&cache, &record);
                (record, Some(leases))
            }
            Err(e @ ClusterError::Store { .. }) => match cached {
                Some(record) => {
                    warn!(store = %cfg.store, subnet = %record.pod_cidr,
                          "{e}; starting with the subnet this node had, joining when the store is back");
                    (record, None)
                }
                None => return Err(e),
            },
            Err(e) => return Err(e),
        };
        info!(node = %record.name, subnet = %record.pod_cidr, subnet6 = ?record.pod_cidr6,
              address = %record.address, tunnel = %record.tunnel, store = %cfg.store, "cluster member");
        let connected = Arc::new(AtomicBool::new(leases.is_some()));
        let held = Arc::new(AtomicI64::new(leases.map_or(0, |l| l.alive)));
        let (store, cluster_cidr) = (cfg.store.clone(), cfg.cluster_cidr);
        let cluster6 = cfg.cluster_cidr6.map(|c| (c, cfg.node_prefix6));
        if cluster6.is_some() && record.pod_cidr6.is_none() {
            warn!(node = %record.name, "the node's cached record has no IPv6 subnet and the store is away: \
                  its pods get IPv4 only until the agent restarts with the store");
        }
        let keeper = Keeper {
            cfg,
            agent_id,
            address,
            serving: Subnets::of(&record),
            connected: connected.clone(),
            held: held.clone(),
        };
        let task = tokio::spawn(keeper.run(leases));
        Ok(Member { store, cluster_cidr, cluster6, record, connected, held, task })
    }

    /// What gives the name back if the start fails after this join.
    pub fn leaver(&self) -> Leaver {
        Leaver { store: self.store.clone(), held: self.held.clone(), task: self.task.abort_handle() }
    }

    pub fn store(&self) -> &StoreUrl {
        &self.store
    }

    pub fn cluster_cidr(&self) -> Ipv4Net {
        self.cluster_cidr
    }

    /// The IPv6 cluster CIDR and the node prefix length, and this node's IPv6 subnet
    /// of it: None without `--cluster-cidr6` (or while a cached record has none).
    pub fn cluster6(&self) -> Option<(Ipv6Net, u8, Ipv6Net)> {
        let (cidr, prefix) = self.cluster6?;
        Some((cidr, prefix, self.record.pod_cidr6.filter(|n| cidr.contains(n))?))
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
    let mut record: NodeRecord = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    // An IPv6 subnet of another shape than this start's is not asked for back.
    record.pod_cidr6 = record.pod_cidr6.filter(|n| fits6(cfg, *n));
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

/// Is `net` a node IPv6 subnet of this cluster's shape (which has one)?
fn fits6(cfg: &ClusterConfig, net: Ipv6Net) -> bool {
    cfg.cluster_cidr6.is_some_and(|c| net.prefix_len() == cfg.node_prefix6 && c.contains(&net))
}

async fn join(
    cfg: &ClusterConfig,
    agent_id: &str,
    address: Underlay,
    preferred: Subnets,
) -> Result<(NodeRecord, Leases), ClusterError> {
    let mut client = connect(&cfg.store).await?;
    join_with(&mut client, cfg, agent_id, address, preferred).await
}

/// Claims the name and gets the subnet (`preferred`, the one the node had, if its
/// record aged out and nobody took it since); returns the record and its leases. A
/// refused subnet gives the name back, so a failed join leaves nothing behind.
async fn join_with(
    client: &mut Client,
    cfg: &ClusterConfig,
    agent_id: &str,
    address: Underlay,
    preferred: Subnets,
) -> Result<(NodeRecord, Leases), ClusterError> {
    let store = &cfg.store;
    let alive = claim(client, cfg, agent_id, address.v4).await?;
    let record = match call(store, client.lease_grant(cfg.gc_after_secs as i64, None)).await {
        Ok(granted) => granted.id(),
        Err(e) => {
            let _ = call(store, client.lease_revoke(alive)).await;
            return Err(e);
        }
    };
    match subnet_for(client, cfg, address, preferred, record).await {
        Ok(found) => Ok((found, Leases { alive, record })),
        Err(e) => {
            let _ = call(store, client.lease_revoke(alive)).await;
            let _ = call(store, client.lease_revoke(record)).await;
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

/// The node's subnet: the recorded one, or a free one, taken in a transaction that
/// fails if another node took it (or registered this name) meanwhile. Either way the
/// record and its subnet claim end up under `gc`, this start's record lease.
async fn subnet_for(
    client: &mut Client,
    cfg: &ClusterConfig,
    address: Underlay,
    preferred: Subnets,
    gc: i64,
) -> Result<NodeRecord, ClusterError> {
    let node_key = keys::node(&cfg.node_name);
    for _ in 0..64 {
        let found = call(&cfg.store, client.get(node_key.clone(), None)).await?;
        let done = match found.kvs().first() {
            Some(kv) => renew(client, cfg, address, kv, preferred.v6, gc).await?,
            None => allocate(client, cfg, address, preferred, gc).await?,
        };
        if let Some(record) = done {
            return Ok(record);
        }
    }
    Err(ClusterError::Contended)
}

/// The node is registered: its record (with this start's addresses and tunnel mode)
/// and subnet claims move to lease `gc`, unless the record changed since it was read
/// (None). The previous agent's record lease would otherwise age them out under this
/// one. A record without an IPv6 subnet (an earlier build's, or a node that had no
/// `--cluster-cidr6`) gets one now, in the same transaction, `preferred6` if free.
async fn renew(
    client: &mut Client,
    cfg: &ClusterConfig,
    address: Underlay,
    kv: &etcd_client::KeyValue,
    preferred6: Option<Ipv6Net>,
    gc: i64,
) -> Result<Option<NodeRecord>, ClusterError> {
    let (store, name) = (&cfg.store, &cfg.node_name);
    let node_key = keys::node(name);
    let mut record: NodeRecord = serde_json::from_slice(kv.value()).map_err(|e| corrupt(&node_key, e))?;
    if !fits(cfg, record.pod_cidr) {
        return Err(ClusterError::SubnetMismatch {
            name: name.clone(),
            recorded: record.pod_cidr,
            cidr: cfg.cluster_cidr,
            prefix: cfg.node_prefix,
        });
    }
    let mut when = vec![Compare::mod_revision(node_key.clone(), CompareOp::Equal, kv.mod_revision())];
    match (record.pod_cidr6, cfg.cluster_cidr6) {
        (Some(net6), Some(cidr6)) if !fits6(cfg, net6) => {
            return Err(ClusterError::SubnetMismatch6 {
                name: name.clone(),
                recorded: net6,
                cidr: cidr6,
                prefix: cfg.node_prefix6,
            });
        }
        (None, Some(_)) => {
            let net6 = choose6(client, cfg, preferred6).await?;
            when.push(Compare::create_revision(keys::subnet6(net6), CompareOp::Equal, 0));
            record.pod_cidr6 = Some(net6);
            info!(node = %name, subnet6 = %net6, "IPv6 subnet allocated");
        }
        _ => {}
    }
    record.address = address.v4;
    record.address6 = address.v6;
    record.tunnel = cfg.tunnel;
    let under_gc = || Some(PutOptions::new().with_lease(gc));
    let mut puts = vec![
        TxnOp::put(node_key, to_json(&record), under_gc()),
        TxnOp::put(keys::subnet(record.pod_cidr), name.as_bytes(), under_gc()),
    ];
    if let Some(net6) = record.pod_cidr6 {
        puts.push(TxnOp::put(keys::subnet6(net6), name.as_bytes(), under_gc()));
    }
    let update = Txn::new().when(when).and_then(puts);
    if !call(store, client.txn(update)).await?.succeeded() {
        return Ok(None);
    }
    if kv.lease() != 0 && kv.lease() != gc {
        // Holds nothing now; revoked so etcd need not carry it for a day.
        let _ = call(store, client.lease_revoke(kv.lease())).await;
    }
    Ok(Some(record))
}

/// The node is not registered (new, deleted or aged out): takes `preferred` if it is
/// still free, else the lowest free subnet; None when another node won the race.
async fn allocate(
    client: &mut Client,
    cfg: &ClusterConfig,
    address: Underlay,
    preferred: Subnets,
    gc: i64,
) -> Result<Option<NodeRecord>, ClusterError> {
    let (store, name) = (&cfg.store, &cfg.node_name);
    let node_key = keys::node(name);
    let listed =
        call(store, client.get(keys::SUBNETS, Some(GetOptions::new().with_prefix().with_keys_only())))
            .await?;
    let taken: HashSet<Ipv4Net> =
        listed.kvs().iter().filter_map(|kv| keys::parse_subnet(kv.key_str().ok()?)).collect();
    let net = match preferred.v4.filter(|p| fits(cfg, *p) && !taken.contains(p)) {
        Some(p) => p,
        None => free_subnet(cfg.cluster_cidr, cfg.node_prefix, &taken)
            .ok_or(ClusterError::Full { cidr: cfg.cluster_cidr, prefix: cfg.node_prefix })?,
    };
    let net6 = match cfg.cluster_cidr6 {
        Some(_) => Some(choose6(client, cfg, preferred.v6).await?),
        None => None,
    };
    let record = NodeRecord {
        name: name.clone(),
        address: address.v4,
        pod_cidr: net,
        tunnel: cfg.tunnel,
        pod_cidr6: net6,
        address6: address.v6,
    };
    let under_gc = || Some(PutOptions::new().with_lease(gc));
    let mut when = vec![
        Compare::create_revision(keys::subnet(net), CompareOp::Equal, 0),
        Compare::create_revision(node_key.clone(), CompareOp::Equal, 0),
    ];
    let mut puts = vec![
        TxnOp::put(keys::subnet(net), name.as_bytes(), under_gc()),
        TxnOp::put(node_key, to_json(&record), under_gc()),
    ];
    if let Some(net6) = net6 {
        when.push(Compare::create_revision(keys::subnet6(net6), CompareOp::Equal, 0));
        puts.push(TxnOp::put(keys::subnet6(net6), name.as_bytes(), under_gc()));
    }
    let take = Txn::new().when(when).and_then(puts);
    if !call(store, client.txn(take)).await?.succeeded() {
        return Ok(None);
    }
    if let Some(net6) = net6 {
        info!(node = %name, subnet6 = %net6, "IPv6 subnet allocated");
    }
    match preferred.v4 {
        Some(had) if had != net => warn!(node = %name, had = %had, subnet = %net,
            "this node's record had aged out of the cluster and its subnet went to another node: it gets a new one"),
        Some(_) => {
            info!(node = %name, subnet = %net, "this node's record had aged out: it re-joined with its subnet")
        }
        None => info!(node = %name, subnet = %net, "subnet allocated"),
    }
    Ok(Some(record))
}

/// An IPv6 subnet for the node: `preferred` (the one it had) if no node holds it, else
/// the lowest free one. Taken only by the caller's transaction, which fails if another
/// node took it meanwhile.
async fn choose6(
    client: &mut Client,
    cfg: &ClusterConfig,
    preferred: Option<Ipv6Net>,
) -> Result<Ipv6Net, ClusterError> {
    let cidr6 = cfg.cluster_cidr6.ok_or(ClusterError::Contended)?;
    let opts = Some(GetOptions::new().with_prefix().with_keys_only());
    let listed = call(&cfg.store, client.get(keys::SUBNETS6, opts)).await?;
    let taken: HashSet<Ipv6Net> =
        listed.kvs().iter().filter_map(|kv| keys::parse_subnet6(kv.key_str().ok()?)).collect();
    match preferred.filter(|p| fits6(cfg, *p) && !taken.contains(p)) {
        Some(p) => Ok(p),
        None => free_subnet6(cidr6, cfg.node_prefix6, &taken)
            .ok_or(ClusterError::Full6 { cidr: cidr6, prefix: cfg.node_prefix6 }),
    }
}

fn to_json(record: &NodeRecord) -> Vec<u8> {
    serde_json::to_vec(record).expect("plain data")
}

/// Keeps the node's leases alive for as long as the agent runs. When the store goes
/// away, forwarding goes on (nothing here touches the datapath); the keeper reconnects
/// with backoff and joins again (the name under a new lease, the record refreshed).
struct Keeper {
    cfg: ClusterConfig,
    agent_id: String,
    address: Underlay,
    /// The subnets the running datapath serves: the ones to keep or get back.
    serving: Subnets,
    connected: Arc<AtomicBool>,
    held: Arc<AtomicI64>,
}

impl Keeper {
    async fn run(self, mut leases: Option<Leases>) {
        let mut backoff = Duration::from_millis(250);
        loop {
            let Err(e) = self.session(&mut leases, &mut backoff).await;
            if self.connected.swap(false, Ordering::Relaxed) {
                warn!("{e}; forwarding goes on with the routes it has, retrying");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// One connection's worth of keep-alives; returns only when it breaks.
    async fn session(
        &self,
        leases: &mut Option<Leases>,
        backoff: &mut Duration,
    ) -> Result<Infallible, ClusterError> {
        let store = &self.cfg.store;
        let period = Duration::from_millis((self.cfg.lease_secs * 1000 / 3).max(200));
        let mut client = connect(store).await?;
        let ids = match leases.take() {
            Some(ids) => ids,
            None => self.rejoin(&mut client).await?,
        };
        let (mut alive, mut alive_acks) = call(store, client.lease_keep_alive(ids.alive)).await?;
        let (mut record, mut record_acks) = call(store, client.lease_keep_alive(ids.record)).await?;
        loop {
            refresh(store, &mut alive, &mut alive_acks, "the node's lease expired").await?;
            refresh(store, &mut record, &mut record_acks, "the node's record aged out").await?;
            self.connected.store(true, Ordering::Relaxed);
            *backoff = Duration::from_millis(250);
            tokio::time::sleep(period).await;
        }
    }

    /// Joins again after losing the store. The record normally is still there; if it
    /// aged out meanwhile (the agent was cut off longer than --node-gc-after), the
    /// node asks for its subnet back, and says so if another node has it.
    async fn rejoin(&self, client: &mut Client) -> Result<Leases, ClusterError> {
        let cfg = &self.cfg;
        let (record, leases) = join_with(client, cfg, &self.agent_id, self.address, self.serving).await?;
        self.held.store(leases.alive, Ordering::SeqCst);
        // In touch again from here: the node shows ready in the store already.
        self.connected.store(true, Ordering::Relaxed);
        let serving6 = self.serving.v6.filter(|_| cfg.cluster_cidr6.is_some());
        let registered6 = record.pod_cidr6.filter(|_| cfg.cluster_cidr6.is_some());
        if Some(record.pod_cidr) == self.serving.v4 && registered6 == serving6 {
            info!(store = %cfg.store, "in touch with the store again: node {} is ready", cfg.node_name);
        } else {
            error!(node = %cfg.node_name, serving = ?self.serving, registered = %record.pod_cidr,
                   registered6 = ?record.pod_cidr6,
                   "the node aged out while away from the store and its subnet went to another node; \
                    restart the agent to move its pods to the new subnet");
        }
        Ok(leases)
    }
}

/// One keep-alive of one lease; Err when the store is gone or the lease is.
async fn refresh(
    store: &StoreUrl,
    keeper: &mut etcd_client::LeaseKeeper,
    acks: &mut etcd_client::LeaseKeepAliveStream,
    expired: &str,
) -> Result<(), ClusterError> {
    call(store, keeper.keep_alive()).await?;
    match call(store, acks.message()).await? {
        Some(r) if r.ttl() > 0 => Ok(()),
        _ => Err(ClusterError::Store { store: store.clone(), reason: expired.into() }),
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
            pod_cidr6: r.pod_cidr6,
            address6: r.address6,
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
        .and_then(
            [TxnOp::delete(node_key, None), TxnOp::delete(keys::subnet(record.pod_cidr), None)]
                .into_iter()
                .chain(record.pod_cidr6.map(|n| TxnOp::delete(keys::subnet6(n), None)))
                .collect::<Vec<_>>(),
        );
    if !call(store, client.txn(forget)).await?.succeeded() {
        return Err(ClusterError::Contended);
    }
    if kv.lease() != 0 {
        // The record's lease holds nothing now.
        let _ = call(store, client.lease_revoke(kv.lease())).await;
    }
    info!(node = %name, subnet = %record.pod_cidr, subnet6 = ?record.pod_cidr6, "node deleted, subnets freed");
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
