//! The binary: parse the command line, run it, turn the outcome into an exit status.

use clap::{CommandFactory, Parser};
use image_rebase::cli::args::Cli;
use image_rebase::error::{EXIT_ERROR, EXIT_OK, exit_status};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let mut out = std::io::stdout().lock();
    // Not locked for the whole run: other threads (blob copies and mounts at once, their
    // -v log lines, the progress line) write to stderr too.
    let mut err = std::io::stderr();
    match image_rebase::cli::run(cli, &mut out, &mut err) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(err) if is_broken_pipe(&err) => ExitCode::from(EXIT_OK),
        Err(err) => {
            eprintln!("image-rebase: error: {err:#}");
            ExitCode::from(exit_status(&err))
        }
    }
}

/// A command line that does not parse: one error line as every other error has, and where
/// to read about the command (its usage, as clap prints it, is the help's first line).
/// Help and version requests are not errors.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    eprintln!(
        "image-rebase: error: {}",
        first.strip_prefix("error: ").unwrap_or(first)
    );
    // The subcommand named on the command line, if any, has the help to read.
    let command = Cli::command();
    let sub = std::env::args().skip(1).find(|a| {
        command
            .get_subcommands()
            .any(|c| c.get_name() == a.as_str())
    });
    let help = match sub {
        Some(sub) => format!("image-rebase {sub} --help"),
        None => "image-rebase --help".to_string(),
    };
    eprintln!("image-rebase: see '{help}'");
    ExitCode::from(EXIT_ERROR)
}

/// A reader downstream that went away is not our error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
