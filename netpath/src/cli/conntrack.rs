//! `netpath ct list` and `netpath nat list`: conntrack as the pinned maps hold it.
use super::{
    args::{CtCommand, NatCommand},
    output,
};
use crate::{datapath::Inspector, paths::Paths};

pub fn run(paths: &Paths, cmd: CtCommand) -> anyhow::Result<()> {
    let CtCommand::List { host, port, proto, output } = cmd;
    let entries: Vec<_> = Inspector::new(&paths.bpffs_dir)
        .conntrack()?
        .into_iter()
        .filter(|r| host.is_none_or(|h| r.src == h || r.dst == h))
        .filter(|r| port.is_none_or(|p| r.sport == p || r.dport == p))
        .filter(|r| proto.as_deref().is_none_or(|p| r.proto == p))
        .collect();
    output::conntrack(&entries, output);
    Ok(())
}

/// Masqueraded flows: the original direction of every SNAT entry.
pub fn nat(paths: &Paths, cmd: NatCommand) -> anyhow::Result<()> {
    let NatCommand::List { output } = cmd;
    let rows: Vec<_> = Inspector::new(&paths.bpffs_dir)
        .conntrack()?
        .into_iter()
        .filter(|r| !r.reply && r.rewrite.starts_with("snat"))
        .collect();
    output::conntrack(&rows, output);
    Ok(())
}
