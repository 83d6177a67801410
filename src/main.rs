use clap::Parser;
use image_rebase::cli::Cli;
use image_rebase::error::{EXIT_OK, exit_status};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    match image_rebase::cmd::run(cli, &mut out, &mut err) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(err) if is_broken_pipe(&err) => ExitCode::from(EXIT_OK),
        Err(err) => {
            eprintln!("image-rebase: error: {err:#}");
            ExitCode::from(exit_status(&err))
        }
    }
}

/// A reader downstream that went away is not our error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
