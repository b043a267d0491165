//! The `asd` command line: one binary, one verb per pipeline stage.

pub mod bench;
mod check_backend;
mod embed;
mod evaluate;
mod features;
mod fuse;
mod pseudo_labels;
mod report;
mod run;
mod synth;

use std::path::PathBuf;

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
    /// Score a submission folder with the official DCASE 2024 Task 2 metrics.
    Evaluate(evaluate::EvaluateArgs),
    /// Compute a model's input features (spectrum, spectrogram, log-mel, fbank) as .npy.
    Features(features::FeaturesArgs),
    /// Write a pre-trained model's output features (BEATs, EAT) of wav clips as .npy.
    Embed(embed::EmbedArgs),
    /// Train an experiment's model.
    Train(run::TrainArgs),
    /// Score test clips with a trained model (official CSVs + evaluation).
    Score(run::ScoreArgs),
    /// Train, score and evaluate an experiment, or a whole system (members, fusion, report).
    Run(run::RunArgs),
    /// Calibrate and fuse the scores of several runs per machine group (report §3.2–3.4).
    Fuse(fuse::FuseArgs),
    /// Redraw the report of a system run (report.md and its plots).
    Report(report::ReportArgs),
    /// Pseudo-attributes for concealed-attribute machines from a trained model's embeddings.
    PseudoLabels(pseudo_labels::PseudoLabelsArgs),
    /// Compare each model's outputs and training step on two backends (GPU checks).
    CheckBackend(check_backend::CheckBackendArgs),
    /// Benchmark programs (train-step, eat-forward), for machines without a Rust toolchain.
    #[command(hide = true)]
    Bench(bench::BenchArgs),
}

/// What `--wav FILE|DIR --out FILE.npy|DIR` asks for.
pub(crate) enum NpyJobs {
    /// One clip to one file (`--out` may be a folder to write into).
    Single(PathBuf, PathBuf),
    /// Every wav below a folder, mirrored as `.npy` files below `--out`.
    Folder(Vec<(PathBuf, PathBuf)>),
}

/// Resolves `--wav` / `--out` of the verbs that write one `.npy` per clip.
pub(crate) fn npy_jobs(wav: &std::path::Path, out: &std::path::Path) -> anyhow::Result<NpyJobs> {
    if !wav.is_dir() {
        let target = if out.is_dir() {
            out.join(std::path::Path::new(wav.file_name().unwrap_or_default()).with_extension("npy"))
        } else {
            out.to_path_buf()
        };
        return Ok(NpyJobs::Single(wav.to_path_buf(), target));
    }
    if out.extension().is_some_and(|e| e == "npy") {
        anyhow::bail!("--wav {} is a folder: --out must be a folder, not {}", wav.display(), out.display());
    }
    let wavs = crate::data::wav::files_below(wav)?;
    if wavs.is_empty() {
        anyhow::bail!("no .wav files below {}", wav.display());
    }
    Ok(NpyJobs::Folder(wavs.iter().map(|rel| (wav.join(rel), out.join(rel).with_extension("npy"))).collect()))
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Synth(a) => synth::run(a, cli.quiet),
        Command::Evaluate(a) => evaluate::run(a, cli.quiet),
        Command::Features(a) => features::run(a, cli.quiet),
        Command::Embed(a) => embed::run(a, cli.quiet),
        Command::Train(a) => run::train(a, cli.quiet),
        Command::Score(a) => run::score(a, cli.quiet),
        Command::Run(a) => run::run(a, cli.quiet),
        Command::Fuse(a) => fuse::run(a, cli.quiet),
        Command::Report(a) => report::run(a, cli.quiet),
        Command::PseudoLabels(a) => pseudo_labels::run(a, cli.quiet),
        Command::CheckBackend(a) => check_backend::run(a, cli.quiet),
        Command::Bench(a) => bench::run(a),
    }
}
