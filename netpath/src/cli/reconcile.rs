//! `netpath reconcile`: the agent compares state and kernel and repairs the drift.
use anyhow::bail;

use super::{client, output, Format};
use crate::{
    api::{Reply, Request},
    paths::Paths,
};

pub fn run(paths: &Paths, dry_run: bool, format: Format) -> anyhow::Result<()> {
    let Reply::Reconciled { dry_run, repairs } = client::call(paths, &Request::Reconcile { dry_run })? else {
        bail!("unexpected reply from the agent to reconcile");
    };
    output::repairs(&repairs, dry_run, format);
    let failed = repairs.iter().filter(|r| r.failed.is_some()).count();
    if failed > 0 {
        bail!("{failed} repair(s) failed; see above and the agent's log");
    }
    if dry_run && !repairs.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
