//! `netpath agent`: the node agent in the foreground, logging to stderr.
use anyhow::Context as _;

use super::{
    args::{AgentArgs, ClusterArgs},
    output,
};
use crate::{
    agent::{self, Agent, AgentConfig},
    cluster::ClusterConfig,
    paths::Paths,
};

pub fn run(paths: Paths, args: AgentArgs) -> anyhow::Result<()> {
    let AgentArgs {
        config: _,
        pod_cidr,
        pod_cidr6,
        masquerade6,
        masquerade,
        mode,
        macvlan_mode: _,
        ipvlan_mode,
        parent,
        device,
        bridge,
        uplink,
        nat_ports,
        cgroup,
        xdp,
        metrics,
        tc_attach,
        endpoint_attach,
        bpf_stats,
        conntrack,
        cluster,
    } = args;
    let cluster = cluster_config(cluster)?;
    let config = AgentConfig {
        paths,
        pod_cidr,
        pod_cidr6,
        masquerade6,
        masquerade,
        mode,
        parent,
        ipvlan_mode,
        device,
        bridge_name: bridge,
        uplink,
        nat_ports,
        cgroup,
        xdp,
        metrics: metrics.0,
        tc_attach,
        endpoint_attach,
        bpf_stats,
        conntrack: conntrack.into(),
        cluster,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NETPATH_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(output::colour(&std::io::stderr()))
        .init();
    let rt = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    rt.block_on(async {
        let mut stop = agent::Stop::new()?;
        // A stop during the start ends it where it stands, as a kill would (every step
        // of a start is safe to cut); the next start takes over.
        let agent = tokio::select! {
            agent = Agent::start(config) => agent?,
            () = stop.recv() => {
                tracing::info!("stopped by a signal before the start finished");
                return Ok(());
            }
        };
        agent::serve(agent, stop).await?;
        Ok(())
    })
}

/// Cluster mode's settings, checked together (clap has checked each).
fn cluster_config(args: ClusterArgs) -> anyhow::Result<Option<ClusterConfig>> {
    let ClusterArgs {
        store,
        node_name,
        cluster_cidr,
        node_cidr_prefix,
        cluster_cidr6,
        node_cidr_prefix6,
        tunnel,
        node_lease,
        node_gc_after,
    } = args;
    let (Some(store), Some(node_name), Some(cluster_cidr)) = (store, node_name, cluster_cidr) else {
        return Ok(None);
    };
    if node_cidr_prefix < cluster_cidr.prefix_len() {
        anyhow::bail!(
            "--node-cidr-prefix {node_cidr_prefix} is wider than --cluster-cidr {cluster_cidr}: give a prefix from {} to 30",
            cluster_cidr.prefix_len()
        );
    }
    if let Some(cidr6) = cluster_cidr6.filter(|c| node_cidr_prefix6 < c.prefix_len()) {
        anyhow::bail!(
            "--node-cidr-prefix6 {node_cidr_prefix6} is wider than --cluster-cidr6 {cidr6}: give a prefix from {} to 120",
            cidr6.prefix_len().max(48)
        );
    }
    if node_gc_after <= node_lease {
        anyhow::bail!(
            "--node-gc-after {node_gc_after}s is not longer than --node-lease {node_lease}s: a node would age out \
             while its agent still counts as alive; give a longer --node-gc-after (the default is 24h)"
        );
    }
    Ok(Some(ClusterConfig {
        store,
        node_name,
        cluster_cidr,
        node_prefix: node_cidr_prefix,
        cluster_cidr6,
        node_prefix6: node_cidr_prefix6,
        tunnel,
        lease_secs: node_lease,
        gc_after_secs: node_gc_after,
    }))
}
