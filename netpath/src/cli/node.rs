//! `netpath node list|del`: the cluster's nodes, through the agent (it knows the store).
use super::{args::NodeCommand, client, output};
use crate::{
    api::{Reply, Request},
    paths::Paths,
};

pub fn run(paths: &Paths, cmd: NodeCommand) -> anyhow::Result<()> {
    match cmd {
        NodeCommand::List { output: format } => match client::call(paths, &Request::NodeList)? {
            Reply::Nodes { nodes } => {
                output::nodes(&nodes, format);
                Ok(())
            }
            other => client::unexpected(other),
        },
        NodeCommand::Del { name } => match client::call(paths, &Request::NodeDel { name })? {
            Reply::NodeDeleted(r) => {
                println!("node {} deleted; subnet {} is free", r.name, r.pod_cidr);
                Ok(())
            }
            other => client::unexpected(other),
        },
    }
}
