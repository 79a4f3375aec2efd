//! Prometheus metrics, read from the pinned maps at each scrape and served in the
//! OpenMetrics text format (what prometheus-client's encoder writes, `# EOF` included)
//! on a small HTTP endpoint (loopback by default), by axum.
use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::net::TcpListener;
use tracing::{info, warn};

use super::Health;
use crate::{
    cluster::NodeStatus,
    datapath::{CtSummary, DatapathError, Inspector, ReasonCounter},
};

type Labels = Vec<(String, String)>;

fn counter_family(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    registry.register(name, help, f.clone());
    f
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    registry.register(name, help, g);
}

/// Why a scrape got no metrics.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error("cannot encode the metrics: {0}")]
    Encode(std::fmt::Error),
}

/// netpath's loaded programs by name and kernel id, when the kernel counts their runs.
pub type ProgramIds = Option<Vec<(&'static str, u32)>>;

/// The metrics text for the node whose maps are pinned in `bpffs_dir`.
pub fn render(
    bpffs_dir: &std::path::Path,
    paths: &crate::paths::Paths,
    programs: &ProgramIds,
    health: &Health,
    nodes: Option<&[NodeStatus]>,
) -> Result<String, RenderError> {
    let inspector = Inspector::new(bpffs_dir);
    let mut registry = Registry::with_prefix("netpath");
    endpoints(&mut registry, &inspector, paths)?;
    let reasons = inspector.reason_counters()?;
    decisions(&mut registry, &reasons);
    conntrack(&mut registry, &inspector.conntrack_summary(&reasons)?);
    gauge(
        &mut registry,
        "uplink_up",
        "1 while the uplink is there, 0 while it is gone (masquerade and published ports down)",
        i64::from(health.uplink_up.load(std::sync::atomic::Ordering::Relaxed)),
    );
    if let Some(connected) = &health.store_connected {
        gauge(
            &mut registry,
            "store_connected",
            "cluster mode: 1 while the agent is in touch with the cluster store (etcd), 0 while not \
             (forwarding goes on; cluster changes wait)",
            i64::from(connected.load(Ordering::Relaxed)),
        );
        cluster(&mut registry, &inspector, nodes)?;
    }
    if let Some(programs) = programs {
        program_runs(&mut registry, programs, bpffs_dir);
    }
    let mut out = String::new();
    encode(&mut out, &registry).map_err(RenderError::Encode)?;
    Ok(out)
}

/// Cluster mode: the nodes by readiness (left out when the store did not answer: then
/// `store_connected` says why) and the routes to other nodes the datapath holds.
fn cluster(
    registry: &mut Registry,
    inspector: &Inspector,
    nodes: Option<&[NodeStatus]>,
) -> Result<(), DatapathError> {
    if let Some(nodes) = nodes {
        let family = Family::<Labels, Gauge<i64>>::default();
        registry.register(
            "cluster_nodes",
            "Nodes the cluster store records, by readiness (ready: the node's agent holds its lease)",
            family.clone(),
        );
        for ready in [true, false] {
            let n = nodes.iter().filter(|n| n.ready == ready).count();
            family.get_or_create(&vec![("ready".to_string(), ready.to_string())]).set(n as i64);
        }
    }
    gauge(
        registry,
        "node_routes",
        "Routes to other nodes' pod subnets in the datapath (NODE_ROUTES)",
        inspector.node_routes()?.len() as i64,
    );
    gauge(
        registry,
        "node_routes6",
        "Routes to other nodes' IPv6 pod subnets in the datapath (NODE_ROUTES6)",
        inspector.node_routes6()?.len() as i64,
    );
    Ok(())
}

/// The cluster's nodes for a scrape: asked of the store only while the agent is in
/// touch with it, and briefly, so a scrape never waits out the store's timeouts.
async fn cluster_nodes(health: &Health) -> Option<Vec<NodeStatus>> {
    let store = health.store.as_ref()?;
    if !health.store_connected.as_ref()?.load(Ordering::Relaxed) {
        return None;
    }
    tokio::time::timeout(Duration::from_secs(2), crate::cluster::list_nodes(store)).await.ok()?.ok()
}

/// Packets and bytes per endpoint and direction, named from the node's state.
fn endpoints(
    registry: &mut Registry,
    inspector: &Inspector,
    paths: &crate::paths::Paths,
) -> Result<(), DatapathError> {
    let names = crate::state::read(paths).map(|(e, _)| e).unwrap_or_default();
    let packets = counter_family(registry, "endpoint_packets", "Packets per endpoint and direction");
    let bytes = counter_family(registry, "endpoint_bytes", "Bytes per endpoint and direction");
    for c in inspector.endpoint_counters()? {
        let name = names.iter().find(|n| n.ip == c.ip).map_or("-".to_string(), |n| n.name.clone());
        for (dir, p, b) in [("tx", c.tx_packets, c.tx_bytes), ("rx", c.rx_packets, c.rx_bytes)] {
            let labels = vec![
                ("endpoint".into(), name.clone()),
                ("ip".into(), c.ip.to_string()),
                ("direction".into(), dir.into()),
            ];
            packets.get_or_create(&labels).inc_by(p);
            bytes.get_or_create(&labels).inc_by(b);
        }
    }
    Ok(())
}

/// Packets per datapath decision, drops on their own, NAT port allocation failures.
fn decisions(registry: &mut Registry, reasons: &[ReasonCounter]) {
    let decisions = counter_family(registry, "datapath_packets", "Packets per datapath decision");
    let drops = counter_family(registry, "drops", "Packets dropped, by named reason");
    for r in reasons {
        let labels = vec![("reason".to_string(), r.reason.to_string())];
        if r.drop {
            drops.get_or_create(&labels).inc_by(r.packets);
        } else {
            decisions.get_or_create(&labels).inc_by(r.packets);
        }
    }
    let failures = Counter::<u64>::default();
    failures.inc_by(reasons.iter().find(|r| r.reason == "drop-nat-ports-exhausted").map_or(0, |r| r.packets));
    registry.register("nat_port_allocation_failures", "New flows refused for want of a NAT port", failures);
}

/// Every conntrack table's use and size, and evictions (both families). IPv6's tables
/// have gauges of their own rather than a label on IPv4's: those names are scraped as
/// they are.
fn conntrack(registry: &mut Registry, ct: &CtSummary) {
    gauge(registry, "conntrack_entries", "Conntrack entries in use", ct.entries as i64);
    gauge(registry, "conntrack_capacity", "Conntrack table size", ct.capacity as i64);
    gauge(
        registry,
        "conntrack_new_entries",
        "Entries of flows not yet assured (handshake incomplete)",
        ct.new_entries as i64,
    );
    gauge(registry, "conntrack_new_capacity", "Size of the table of new flows", ct.new_capacity as i64);
    gauge(registry, "conntrack6_entries", "IPv6 conntrack entries in use", ct.entries6 as i64);
    gauge(registry, "conntrack6_capacity", "IPv6 conntrack table size", ct.capacity6 as i64);
    gauge(
        registry,
        "conntrack6_new_entries",
        "Entries of IPv6 flows not yet assured (handshake incomplete)",
        ct.new_entries6 as i64,
    );
    gauge(
        registry,
        "conntrack6_new_capacity",
        "Size of the table of new IPv6 flows",
        ct.new_capacity6 as i64,
    );
    let evictions = Counter::<u64>::default();
    evictions.inc_by(ct.evicted);
    registry.register(
        "conntrack_evictions",
        "Conntrack entries evicted because the table was full",
        evictions,
    );
}

/// Runs and run time of this agent's programs, from the kernel's own accounting. An
/// endpoint's from_container may be an earlier agent's instance (the filter stays, only
/// the slot it tail-calls through changes): every from_container whose slot is this
/// node's counts.
fn program_runs(registry: &mut Registry, programs: &[(&'static str, u32)], bpffs_dir: &std::path::Path) {
    use netpath_common::{contract::program::FROM_CONTAINER, maps::ENDPOINT_PROGS};
    let slot = aya::maps::MapInfo::from_pin(bpffs_dir.join(ENDPOINT_PROGS)).ok().map(|m| m.id());
    let runs = counter_family(registry, "program_runs", "Runs of each netpath program (--bpf-stats)");
    let time = Family::<Labels, Counter<f64, AtomicU64>>::default();
    registry.register(
        "program_run_seconds",
        "Time spent in each netpath program (--bpf-stats)",
        time.clone(),
    );
    // One walk over the kernel's programs; ours are known by id, not by name (other
    // agents' programs have the same names).
    for info in aya::programs::loaded_programs().flatten() {
        let ours = programs.iter().find(|(_, id)| *id == info.id()).map(|(name, _)| *name);
        let an_entry = || {
            info.name_as_str() == Some(FROM_CONTAINER)
                && slot.is_some_and(|s| info.map_ids().ok().flatten().is_some_and(|ids| ids.contains(&s)))
        };
        if let Some(name) = ours.or_else(|| an_entry().then_some(FROM_CONTAINER)) {
            let labels = vec![("program".to_string(), name.to_string())];
            runs.get_or_create(&labels).inc_by(info.run_count());
            time.get_or_create(&labels).inc_by(info.run_time().as_secs_f64());
        }
    }
}

/// The content type of what [`render`] writes (prometheus-client encodes OpenMetrics).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a scrape reads.
struct Scrape {
    bpffs_dir: PathBuf,
    paths: crate::paths::Paths,
    programs: ProgramIds,
    health: Arc<Health>,
}

/// Serves GET /metrics on `listener` until the process ends.
pub fn serve(
    listener: std::net::TcpListener,
    bpffs_dir: PathBuf,
    paths: crate::paths::Paths,
    programs: ProgramIds,
    health: Arc<Health>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let listener = TcpListener::from_std(listener)?;
    info!(%addr, "metrics at http://{addr}/metrics");
    let scrape = Arc::new(Scrape { bpffs_dir, paths, programs, health });
    let app = axum::Router::new().route("/metrics", axum::routing::get(scrape_metrics)).with_state(scrape);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!("the metrics endpoint stopped: {e}");
        }
    });
    Ok(())
}

async fn scrape_metrics(
    axum::extract::State(s): axum::extract::State<Arc<Scrape>>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let nodes = cluster_nodes(&s.health).await;
    match render(&s.bpffs_dir, &s.paths, &s.programs, &s.health, nodes.as_deref()) {
        Ok(body) => ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(e) => {
            warn!("metrics: {e}");
            axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
