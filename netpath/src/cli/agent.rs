//! `netpath agent`: the node agent in the foreground, logging to stderr.
use anyhow::Context as _;

use super::{args::AgentArgs, output};
use crate::{
    agent::{self, Agent, AgentConfig},
    paths::Paths,
};

pub fn run(paths: Paths, args: AgentArgs) -> anyhow::Result<()> {
    let AgentArgs {
        config: _,
        pod_cidr,
        mode,
        device,
        bridge,
        uplink,
        nat_ports,
        cgroup,
        xdp,
        metrics,
        tc_attach,
        bpf_stats,
        conntrack,
    } = args;
    let config = AgentConfig {
        paths,
        pod_cidr,
        mode,
        device,
        bridge_name: bridge,
        uplink,
        nat_ports,
        cgroup,
        xdp,
        metrics: metrics.0,
        tc_attach,
        bpf_stats,
        conntrack: conntrack.into(),
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
        let agent = Agent::start(config).await?;
        agent::serve(agent).await?;
        Ok(())
    })
}
