use std::process::ExitCode;

use clap::{error::ErrorKind, Parser};

fn main() -> ExitCode {
    // A runtime runs the plugin (a copy or link of this binary) with CNI_COMMAND set.
    // Runtimes pass no arguments; a CNI_COMMAND left in a shell must not turn
    // `netpath agent` into a plugin waiting on stdin.
    if std::env::args_os().len() == 1 && netpath::cni::invoked() {
        return netpath::cni::main();
    }
    let argv = match netpath::cli::config::apply(std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(e) => {
            eprintln!("netpath: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cli = match netpath::cli::Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => e.exit(),
        Err(e) => {
            // Bad input is one line, like every other refusal.
            eprintln!("netpath: {}", netpath::cli::one_line(&e));
            return ExitCode::from(2);
        }
    };
    match netpath::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: what failed, and the cause chain flattened.
            eprintln!("netpath: {e:#}");
            ExitCode::FAILURE
        }
    }
}
