use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let argv = match netpath::cli::config::apply(std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(e) => {
            eprintln!("netpath: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cli = netpath::cli::Cli::parse_from(argv);
    match netpath::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: what failed, and the cause chain flattened.
            eprintln!("netpath: {e:#}");
            ExitCode::FAILURE
        }
    }
}
