//! `asd train`, `asd score` and `asd run`: experiments end to end.

use crate::backend::BackendName;
use crate::experiment::Experiment;
use crate::pipeline::{self, TrainOptions, say};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

/// Options shared by the experiment verbs.
#[derive(Debug, Args)]
pub struct ExperimentArgs {
    /// Experiment file (JSON; may `extends` another).
    pub experiment: PathBuf,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendName::Flex)]
    pub backend: BackendName,
    /// Train data-parallel on these devices of the backend, e.g. `--devices 0,1` (GPU
    /// backends); the effective batch and schedule stay the experiment's.
    #[arg(long, value_delimiter = ',', value_name = "I,J,...")]
    pub devices: Vec<usize>,
    /// Override a field, e.g. `--set train.max_steps=200` (repeatable; JSON values).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub overrides: Vec<String>,
    /// Folder holding the run folders.
    #[arg(long, default_value = "checkpoints")]
    pub checkpoints: PathBuf,
}

#[derive(Debug, Args)]
#[command(about = "Train an experiment's model (checkpoints go to checkpoints/<name>/)")]
pub struct TrainArgs {
    #[command(flatten)]
    pub exp: ExperimentArgs,
    /// Continue from the run's `last` checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many optimizer steps in this session (resume later).
    #[arg(long)]
    pub stop_after: Option<u64>,
}

#[derive(Debug, Args)]
#[command(
    about = "Score test clips with a trained model; writes the official submission CSVs and evaluates them when labels are known"
)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub exp: ExperimentArgs,
    /// Output folder (default: checkpoints/<name>/scores).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(
    about = "Train (resuming a run stopped early), score and evaluate an experiment, or a whole system: every member, \
             fusion per machine group, official CSVs in <out>/submission/, a report with plots"
)]
pub struct RunArgs {
    /// Experiment or system file (JSON; a system file has `members`).
    #[command(flatten)]
    pub exp: ExperimentArgs,
    /// Data root in the DCASE layout, replacing the file's `data.root`.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Run folder (a system's, or the folder of an experiment's run folder;
    /// default: <checkpoints>/<system name> or <checkpoints>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Retrain and rescore every member instead of reusing complete outputs (systems).
    #[arg(long)]
    pub overwrite: bool,
}

fn prepare(a: &ExperimentArgs) -> Result<pipeline::Prepared> {
    crate::backend::devices(a.backend, &a.devices)?;
    let exp = Experiment::load(&a.experiment, &a.overrides)?;
    pipeline::prepare(exp, &a.checkpoints)
}

pub fn train(a: TrainArgs, quiet: bool) -> Result<()> {
    let p = prepare(&a.exp)?;
    say(
        quiet,
        &format!(
            "training {} on {} clips ({} classes), backend {}",
            p.exp.name,
            p.train_clips().len(),
            p.labels.len(),
            a.exp.backend
        ),
    );
    pipeline::train(
        &p,
        a.exp.backend,
        &TrainOptions { resume: a.resume, quiet, stop_after: a.stop_after, devices: &a.exp.devices },
    )?;
    say(quiet, &format!("checkpoints in {}", p.run.root.display()));
    Ok(())
}

/// Scores with the run's saved model configuration: the experiment file
/// may change the scoring section, not what was trained.
/// A trained run as it was trained (its saved configuration), with the
/// scoring settings and data root of the experiment file as given now.
pub(crate) fn trained(a: &ExperimentArgs) -> Result<pipeline::Prepared> {
    crate::backend::device(a.backend)?;
    let current = Experiment::load(&a.experiment, &a.overrides)?;
    let run = crate::train::RunDir::new(current.run_dir(&a.checkpoints));
    let mut exp = Experiment::load_resolved(&run.config())
        .with_context(|| format!("{} has not been trained (no readable configuration)", run.root.display()))?;
    exp.scoring = current.scoring;
    exp.data.root = current.data.root;
    pipeline::prepare(exp, &a.checkpoints)
}

pub fn score(a: ScoreArgs, quiet: bool) -> Result<()> {
    let p = trained(&a.exp)?;
    let out = pipeline::score(&p, a.exp.backend, a.out.as_deref(), quiet)?;
    say(quiet, &format!("submission files in {}", out.dir.display()));
    if let Some(r) = out.report {
        println!("{}", r.table());
    }
    Ok(())
}

/// Trains what is not trained yet (a run stopped early is resumed: its
/// saved configuration must match), then scores and evaluates.
pub fn run(mut a: RunArgs, quiet: bool) -> Result<()> {
    if crate::fusion::is_system_file(&a.exp.experiment)? {
        return run_system(a, quiet);
    }
    if a.overwrite {
        anyhow::bail!("--overwrite applies to system files (remove the run folder to retrain an experiment)");
    }
    if let Some(d) = &a.data {
        a.exp.overrides.push(format!("data.root={}", serde_json::to_string(d)?));
    }
    if let Some(out) = &a.out {
        a.exp.checkpoints = out.clone();
        a.exp.overrides.push(format!("features.cache_dir={}", serde_json::to_string(&out.join("features"))?));
    }
    let p = prepare(&a.exp)?;
    pipeline::train_or_resume(&p, a.exp.backend, &a.exp.devices, quiet)?;
    let out = pipeline::score(&p, a.exp.backend, None, quiet)?;
    say(quiet, &format!("submission files in {}", out.dir.display()));
    if let Some(r) = out.report {
        println!("{}", r.table());
    }
    Ok(())
}

fn run_system(a: RunArgs, quiet: bool) -> Result<()> {
    crate::backend::devices(a.exp.backend, &a.exp.devices)?;
    let sys = crate::fusion::SystemConfig::load(&a.exp.experiment)?;
    let out = a.out.unwrap_or_else(|| a.exp.checkpoints.join(&sys.name));
    let opts = pipeline::system::SystemOptions {
        data: a.data,
        out: out.clone(),
        backend: a.exp.backend,
        devices: a.exp.devices,
        overwrite: a.overwrite,
        overrides: a.exp.overrides,
        quiet,
    };
    let (record, summary) = pipeline::system::run_system(&a.exp.experiment, &opts)?;
    say(
        quiet,
        &format!("fused submission in {}; report in {}", record.submission.display(), out.join("report.md").display()),
    );
    match summary {
        Some(table) => println!("{table}"),
        None => say(quiet, "no test labels under the data root: nothing to evaluate"),
    }
    Ok(())
}
