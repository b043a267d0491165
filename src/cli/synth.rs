//! `asd synth`: synthetic machine sounds in the DCASE 2024 layout.

use crate::data::machines::DataSet;
use crate::data::synth::{self, SynthConfig};
use crate::util::Progress;
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

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
    /// Replace the set if --out already holds one (otherwise an error).
    #[arg(long)]
    pub overwrite: bool,
}

pub fn run(a: SynthArgs, quiet: bool) -> Result<()> {
    synth::check_output(&a.out)?;
    let set = match a.split {
        SetArg::Dev => DataSet::Dev,
        SetArg::Eval => DataSet::Eval,
    };
    let target = a.out.join(set.dir_name());
    if target.exists() && !a.overwrite {
        bail!("{} already holds a data set; pass --overwrite to replace it, or choose another --out", target.display());
    }
    // The set is generated under a hidden staging root and moved into place
    // whole, so an interrupted synth never leaves a partial set that a
    // later run would take for a complete one.
    let staging = a.out.join(format!(".synth-{}", std::process::id()));
    let cfg = SynthConfig {
        out: staging.clone(),
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
    let generated = synth::generate(&cfg, &|| bar.inc(1)).and_then(|r| {
        replace_dir(&staging.join(set.dir_name()), &target)?;
        Ok(r)
    });
    let _ = std::fs::remove_dir_all(&staging);
    let report = generated?;
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

/// Moves `from` to `to`, replacing a folder already there (removed only once
/// the new one is complete).
fn replace_dir(from: &Path, to: &Path) -> Result<()> {
    let old = to.with_file_name(format!(".{}.old-{}", set_name(to), std::process::id()));
    if to.exists() {
        std::fs::rename(to, &old).with_context(|| format!("cannot move {} aside", to.display()))?;
    }
    std::fs::rename(from, to).with_context(|| format!("cannot move {} to {}", from.display(), to.display()))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("cannot remove the replaced set {}", old.display()))?;
    }
    Ok(())
}

fn set_name(p: &Path) -> String {
    p.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}
