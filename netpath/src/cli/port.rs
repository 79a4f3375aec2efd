//! `netpath port add|del|list`.
use std::{net::IpAddr, ops::RangeInclusive};

use anyhow::bail;

use super::{
    args::{parse_publish, PortCommand},
    client, output,
};
use crate::{
    api::{PortSpec, Reply, Request},
    paths::Paths,
    state::{format_host_port, Proto},
};

/// The mappings `port add` asks for: one per port of the ranges, paired in order. A host
/// port of 0 asks the agent for a free one.
fn specs(
    proto: Proto,
    host: Option<RangeInclusive<u16>>,
    endpoint: &str,
    container: Option<RangeInclusive<u16>>,
    host_ip: Option<IpAddr>,
) -> anyhow::Result<Vec<PortSpec>> {
    let spec = |host_port, container_port| PortSpec {
        proto,
        host_port,
        host_ip,
        endpoint: endpoint.to_string(),
        container_port: Some(container_port),
        host_port_from: None,
    };
    let shown = |r: &RangeInclusive<u16>| format!("{}-{}", r.start(), r.end());
    match (host, container) {
        (None, Some(c)) if c.len() == 1 => Ok(vec![spec(0, *c.start())]),
        (None, Some(c)) => bail!(
            "container ports {} need host ports: give a host range of the same length, e.g. {} {endpoint}:{}",
            shown(&c),
            shown(&(8000..=8000 + (c.len() as u16 - 1))),
            shown(&c)
        ),
        (None, None) => bail!("give the container port ({endpoint}:80) when netpath is to choose the host port"),
        (Some(h), None) => Ok(h.map(|p| spec(p, p)).collect()),
        (Some(h), Some(c)) if c.len() == 1 && h.len() == 1 => Ok(vec![spec(*h.start(), *c.start())]),
        // docker's `-p 8000-8010:80`: one mapping, on the first free port of the range.
        (Some(h), Some(c)) if c.len() == 1 => {
            Ok(vec![PortSpec { host_port_from: Some(h), ..spec(0, *c.start()) }])
        }
        (Some(h), Some(c)) if h.len() == c.len() => Ok(h.zip(c).map(|(a, b)| spec(a, b)).collect()),
        (Some(h), Some(c)) => bail!(
            "host ports {} and container ports {} differ in length ({} and {}); give ranges of the same length, or one container port to publish on the first free host port of the range",
            shown(&h),
            shown(&c),
            h.len(),
            c.len()
        ),
    }
}

pub fn run(paths: &Paths, cmd: PortCommand) -> anyhow::Result<()> {
    match cmd {
        PortCommand::Add { proto, ports, host_ip } => {
            let mut specs = Vec::new();
            for (host, endpoint, container) in parse_publish(&ports).map_err(anyhow::Error::msg)? {
                specs.extend(self::specs(proto, host, &endpoint, container, host_ip)?);
            }
            let published = match &specs[..] {
                [one] => match client::call(paths, &Request::PortAdd(one.clone()))? {
                    Reply::Port(p) => vec![p],
                    other => return client::unexpected(other),
                },
                _ => match client::call(paths, &Request::PortsAdd { ports: specs })? {
                    Reply::Ports { ports } => ports,
                    other => return client::unexpected(other),
                },
            };
            for p in published {
                let host = format_host_port(p.host_ip, p.host_port);
                println!("{} {host} -> {} {}", p.proto, p.endpoint, output::container(&p));
            }
            Ok(())
        }
        PortCommand::Del { proto, host_port, host_ip } => {
            let host_ports: Vec<u16> = host_port.into_iter().flatten().collect();
            if let [port] = host_ports[..] {
                let reply = client::call(paths, &Request::PortDel { proto, host_port: port, host_ip })?;
                let what = format!("{proto}/{port}");
                return client::deleted(
                    reply,
                    &format!("{what} unpublished"),
                    &format!("{what} is not published; nothing to do"),
                );
            }
            let reply =
                client::call(paths, &Request::PortsDel { proto, host_ports: host_ports.clone(), host_ip })?;
            let Reply::PortsDeleted { existed } = reply else { return client::unexpected(reply) };
            for (port, existed) in host_ports.iter().zip(existed) {
                match existed {
                    true => println!("{proto}/{port} unpublished"),
                    false => println!("{proto}/{port} is not published; nothing to do"),
                }
            }
            Ok(())
        }
        PortCommand::List { output } => {
            let ports = crate::state::read(paths)?.1;
            output::ports(&ports, output);
            Ok(())
        }
    }
}
