//! The `asd` command line: one binary, one verb per pipeline stage.

mod progress;
mod synth;

pub use progress::Progress;

use clap::{Parser, Subcommand};

/// Unsupervised anomalous sound detection (DCASE 2024 Task 2, THUEE system) on burn.
#[derive(Debug, Parser)]
#[command(name = "asd", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// No progress bars or summaries on stderr (for scripts).
    #[arg(long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate synthetic machine sounds in the DCASE 2024 layout (no download needed).
    Synth(synth::SynthArgs),
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Synth(a) => synth::run(a, cli.quiet),
    }
}
