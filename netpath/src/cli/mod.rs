//! Command-line interface: the clap definitions (`args`) and one file per verb that
//! does what it says, reading the pins and the state or asking the agent.
mod agent;
mod apply;
mod args;
pub(crate) mod client;
pub mod config;
mod conntrack;
mod doctor;
mod endpoint;
mod maps;
mod node;
mod output;
mod port;
mod reconcile;
mod stats;
mod trace;

use anyhow::bail;

pub use args::{Cli, Command, Format, DEFAULT_POD_CIDR};

use crate::paths::Paths;

pub fn run(cli: Cli) -> anyhow::Result<()> {
    // Everything but the help texts touches the node's networking or its root-only
    // socket, state and pins: say so once, rather than as a bare EACCES from deep inside.
    let help_only = matches!(cli.command, Command::Completions { .. } | Command::Man);
    if !help_only && !nix::unistd::geteuid().is_root() {
        bail!(
            "`netpath {}` needs root: the agent's socket, its state and the pinned maps are root-only; run it with sudo",
            name_of(&cli.command)
        );
    }
    let mut paths: Paths = cli.paths.into();
    if !matches!(cli.command, Command::Agent(_)) {
        // From a shell with a mount namespace of its own (ip netns exec), the pins are
        // in the host's bpffs, where the agent put them.
        paths.bpffs_dir = crate::plumbing::bpffs::locate(&paths.bpffs_dir);
    }
    let paths = &paths;
    match cli.command {
        Command::Agent(args) => agent::run(paths.clone(), *args),
        Command::Port(cmd) => port::run(paths, cmd),
        Command::Trace(args) => trace::run(paths, args),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "netpath", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut std::io::stdout())?;
            Ok(())
        }
        Command::Map(cmd) => maps::run(paths, cmd),
        Command::Nat(cmd) => conntrack::nat(paths, cmd),
        Command::Ct(cmd) => conntrack::run(paths, cmd),
        Command::Doctor { output } => {
            if doctor::run(paths, output)? {
                Ok(())
            } else {
                Err(anyhow::anyhow!("doctor found problems (see above)"))
            }
        }
        Command::Endpoint(cmd) => endpoint::run(paths, cmd),
        Command::Stats { output } => stats::run(paths, output),
        Command::Node(cmd) => node::run(paths, cmd),
        Command::Cni(args::CniCommand::Conflist { name }) => {
            // For the running agent: a conflist naming a socket nobody listens on would
            // fail every container start later, far from here.
            match client::call(paths, &crate::api::Request::Status)? {
                crate::api::Reply::Status(_) => {}
                other => return client::unexpected(other),
            }
            let run_dir = std::path::absolute(&paths.run_dir).unwrap_or_else(|_| paths.run_dir.clone());
            let list = crate::cni::conflist(&name, &run_dir);
            println!("{}", serde_json::to_string_pretty(&list)?);
            Ok(())
        }
        Command::Reconcile { dry_run, output } => reconcile::run(paths, dry_run, output),
        Command::Apply { file, dry_run, output } => apply::apply(paths, &file, dry_run, output),
        Command::Export { output } => apply::export(paths, output),
    }
}

/// A clap error as one line: the message and its tips, without the usage block.
pub fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut parts = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if !line.is_empty() {
            parts.push(line.trim_start_matches("error: ").to_string());
        }
    }
    let mut out = parts.join(" ");
    if matches!(
        e.kind(),
        clap::error::ErrorKind::MissingRequiredArgument
            | clap::error::ErrorKind::MissingSubcommand
            | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        out.push_str("; see --help");
    }
    out
}

/// The subcommand's name as typed, for messages.
fn name_of(command: &Command) -> &'static str {
    match command {
        Command::Agent(_) => "agent",
        Command::Port(_) => "port",
        Command::Ct(_) => "ct",
        Command::Trace(_) => "trace",
        Command::Completions { .. } => "completions",
        Command::Man => "man",
        Command::Map(_) => "map",
        Command::Nat(_) => "nat",
        Command::Doctor { .. } => "doctor",
        Command::Endpoint(_) => "endpoint",
        Command::Reconcile { .. } => "reconcile",
        Command::Apply { .. } => "apply",
        Command::Export { .. } => "export",
        Command::Stats { .. } => "stats",
        Command::Node(_) => "node",
        Command::Cni(_) => "cni",
    }
}
