//! `netpath endpoint add|del|list`.
use std::path::PathBuf;

use anyhow::bail;

use super::{args::EndpointCommand, client, output};
use crate::{
    api::{EndpointSpec, Reply, Request},
    paths::Paths,
};

pub fn run(paths: &Paths, cmd: EndpointCommand) -> anyhow::Result<()> {
    match cmd {
        EndpointCommand::Add { name, netns, pid, ip, ip6, mac, mtu, ifname } => {
            let netns = match (netns, pid) {
                (Some(p), _) => p,
                (None, Some(pid)) => PathBuf::from(format!("/proc/{pid}/ns/net")),
                (None, None) => bail!("give the container's namespace with --netns PATH or --pid PID"),
            };
            // The agent opens the path itself; make it absolute so its cwd cannot matter.
            let netns = std::path::absolute(&netns).unwrap_or(netns);
            let spec =
                EndpointSpec { name, netns, ifname, ip, ip6, mac, mtu, owner: None, ports: Vec::new() };
            match client::call(paths, &Request::EndpointAdd(spec))? {
                Reply::Endpoint(rec) => {
                    match rec.ip6 {
                        Some(ip6) => println!(
                            "{} {} via {}, {ip6} via {} on {}",
                            rec.name,
                            rec.ip,
                            rec.gateway,
                            std::net::Ipv6Addr::from(netpath_common::GATEWAY6),
                            rec.host_ifname
                        ),
                        None => match &rec.parent {
                            Some(parent) => println!(
                                "{} {}/{} on {} ({} of {parent})",
                                rec.name,
                                rec.ip,
                                rec.prefix.unwrap_or(32),
                                rec.ifname,
                                rec.mode
                            ),
                            None => {
                                println!("{} {} via {} on {}", rec.name, rec.ip, rec.gateway, rec.host_ifname)
                            }
                        },
                    }
                    Ok(())
                }
                other => client::unexpected(other),
            }
        }
        EndpointCommand::Del { name, no_wait } => {
            let reply =
                client::call(paths, &Request::EndpointDel { name: name.clone(), owner: None, no_wait })?;
            client::deleted(
                reply,
                &format!("{name} deleted"),
                &format!("{name} does not exist; nothing to do"),
            )
        }
        EndpointCommand::List { output } => {
            let endpoints = crate::state::read(paths)?.0;
            output::endpoints(&endpoints, output);
            Ok(())
        }
    }
}
