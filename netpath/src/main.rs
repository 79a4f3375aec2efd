use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = netpath::cli::Cli::parse();
    match netpath::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: what failed, and the cause chain flattened.
            eprintln!("netpath: {e:#}");
            ExitCode::FAILURE
        }
    }
}
