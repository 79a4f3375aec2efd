//! `netpath port add|del|list`.
use super::{args::PortCommand, client, output};
use crate::{
    api::{PortSpec, Reply, Request},
    paths::Paths,
    state::{PortRecord, Store},
};

pub fn run(paths: &Paths, cmd: PortCommand) -> anyhow::Result<()> {
    match cmd {
        PortCommand::Add { proto, host_port, target: (endpoint, container_port), host_ip } => {
            let spec = PortSpec { proto, host_port, host_ip, endpoint, container_port };
            match client::call(paths, &Request::PortAdd(spec))? {
                Reply::Port(p) => {
                    let host = p.host_ip.map_or("*".to_string(), |a| a.to_string());
                    println!(
                        "{} {host}:{} -> {} {}:{}",
                        p.proto, p.host_port, p.endpoint, p.container_ip, p.container_port
                    );
                    Ok(())
                }
                other => client::unexpected(other),
            }
        }
        PortCommand::Del { proto, host_port, host_ip } => {
            let reply = client::call(paths, &Request::PortDel { proto, host_port, host_ip })?;
            let what = format!("{proto}/{host_port}");
            client::deleted(
                reply,
                &format!("{what} unpublished"),
                &format!("{what} is not published; nothing to do"),
            )
        }
        PortCommand::List { output } => {
            let ports = Store::<PortRecord>::new(paths.ports_file()).load()?;
            output::ports(&ports, output);
            Ok(())
        }
    }
}
