//! `asd synth`: synthetic machine sounds in the DCASE 2024 layout.

use crate::data::machines::DataSet;
use crate::data::synth::{self, SynthConfig};
use crate::util::Progress;
use anyhow::Result;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SetArg {
    /// Development set: dev_data/raw/<machine>/{train,test}, labelled test names.
    Dev,
    /// Evaluation set: eval_data/raw/<machine>/{train,test}, anonymised test
    /// names, plus the official ground-truth CSVs under eval_data/ground_truth/.
    Eval,
}

#[derive(Debug, Args)]
#[command(about = "Generate synthetic machine sounds in the exact DCASE 2024 Task 2 layout and file names")]
pub struct SynthArgs {
    /// Data root to write (dev_data/ or eval_data/ is created inside).
    #[arg(long)]
    pub out: PathBuf,
    /// Which set to write.
    #[arg(long, value_enum, default_value = "dev")]
    pub split: SetArg,
    /// Comma-separated machine types (default: the 7 dev or 9 eval types).
    #[arg(long, value_delimiter = ',')]
    pub machines: Vec<String>,
    /// Random seed; the same seed writes identical files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Source-domain training clips per machine type.
    #[arg(long, default_value_t = 24)]
    pub train_source: usize,
    /// Target-domain training clips per machine type.
    #[arg(long, default_value_t = 4)]
    pub train_target: usize,
    /// Test clips per (domain, normal/anomaly) cell.
    #[arg(long, default_value_t = 6)]
    pub test_per_cell: usize,
    /// Clip length in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f32,
}

pub fn run(a: SynthArgs, quiet: bool) -> Result<()> {
    synth::check_output(&a.out)?;
    let set = match a.split {
        SetArg::Dev => DataSet::Dev,
        SetArg::Eval => DataSet::Eval,
    };
    let cfg = SynthConfig {
        out: a.out.clone(),
        set,
        machines: a.machines,
        seed: a.seed,
        train_source: a.train_source,
        train_target: a.train_target,
        test_per_cell: a.test_per_cell,
        seconds: a.seconds,
    };
    let n_machines =
        if cfg.machines.is_empty() { crate::data::machines::of_set(set).len() } else { cfg.machines.len() };
    let total = n_machines * (cfg.train_source + cfg.train_target + 4 * cfg.test_per_cell);
    let bar = Progress::new(total as u64, "synth", quiet);
    let report = synth::generate(&cfg, &|| bar.inc(1))?;
    bar.finish();
    if !quiet {
        eprintln!(
            "wrote {} clips ({:.0} s of audio) for {} under {}",
            report.clips,
            report.seconds_of_audio,
            report.machines.join(", "),
            a.out.join(set.dir_name()).display()
        );
        if set == DataSet::Eval {
            eprintln!("ground truth: {}", synth::ground_truth_dir(&a.out).display());
        }
    }
    Ok(())
}
