//! `asd train`, `asd score` and `asd run`: experiments end to end.

use crate::backend::BackendName;
use crate::experiment::Experiment;
use crate::pipeline::{self, TrainOptions};
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
#[command(about = "Train (resuming a run stopped early) then score and evaluate an experiment")]
pub struct RunArgs {
    #[command(flatten)]
    pub exp: ExperimentArgs,
}

fn prepare(a: &ExperimentArgs) -> Result<pipeline::Prepared> {
    crate::backend::device(a.backend)?;
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
    pipeline::train(&p, a.exp.backend, &TrainOptions { resume: a.resume, quiet, stop_after: a.stop_after })?;
    say(quiet, &format!("checkpoints in {}", p.run.root.display()));
    Ok(())
}

/// Scores with the run's saved model configuration: the experiment file
/// may change the scoring section, not what was trained.
pub fn score(a: ScoreArgs, quiet: bool) -> Result<()> {
    crate::backend::device(a.exp.backend)?;
    let current = Experiment::load(&a.exp.experiment, &a.exp.overrides)?;
    let run = crate::train::RunDir::new(current.run_dir(&a.exp.checkpoints));
    let mut exp = Experiment::load_resolved(&run.config())
        .with_context(|| format!("{} has not been trained (no readable configuration)", run.root.display()))?;
    exp.scoring = current.scoring;
    exp.data.root = current.data.root;
    let p = pipeline::prepare(exp, &a.exp.checkpoints)?;
    let out = pipeline::score(&p, a.exp.backend, a.out.as_deref(), quiet)?;
    say(quiet, &format!("submission files in {}", out.dir.display()));
    if let Some(r) = out.report {
        println!("{}", r.table());
    }
    Ok(())
}

/// Trains what is not trained yet (a run stopped early is resumed: its
/// saved configuration must match), then scores and evaluates.
pub fn run(a: RunArgs, quiet: bool) -> Result<()> {
    let p = prepare(&a.exp)?;
    let pipeline::TrainProgress { done, asked, started } = p.progress()?;
    if done >= asked && started {
        say(quiet, &format!("{} is already trained ({done} steps); scoring it", p.run.root.display()));
    } else {
        if started {
            say(quiet, &format!("{} stopped at step {done} of {asked}; resuming", p.run.root.display()));
        }
        let opts = TrainOptions { resume: started, quiet, stop_after: None };
        pipeline::train(&p, a.exp.backend, &opts).with_context(|| {
            if started {
                "cannot resume the run (use another name, or remove the run folder to start over)"
            } else {
                "training failed"
            }
        })?;
    }
    let out = pipeline::score(&p, a.exp.backend, None, quiet)?;
    say(quiet, &format!("submission files in {}", out.dir.display()));
    if let Some(r) = out.report {
        println!("{}", r.table());
    }
    Ok(())
}

fn say(quiet: bool, msg: &str) {
    if !quiet {
        eprintln!("{msg}");
    }
}
