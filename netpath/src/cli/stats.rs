//! `netpath stats`: counters and conntrack usage, read from the pinned maps.
use super::{output, Format};
use crate::{datapath::Inspector, paths::Paths};

pub fn run(paths: &Paths, format: Format) -> anyhow::Result<()> {
    let inspector = Inspector::new(&paths.bpffs_dir);
    let endpoints = inspector.endpoint_counters()?;
    let reasons = inspector.reason_counters()?;
    // Names come from the state file; a map entry without one is shown by address only.
    let names = crate::state::read(paths).map(|(e, _)| e).unwrap_or_default();
    let ct = inspector.conntrack_summary(&reasons)?;
    output::stats(&endpoints, &reasons, &ct, &names, format);
    Ok(())
}
