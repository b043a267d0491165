use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = asd::cli::Cli::parse();
    match asd::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
