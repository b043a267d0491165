//! `asd fuse`: score calibration, score fusion and group fusion.

use crate::data::machines::DataSet;
use crate::fusion::{self, SystemConfig};
use crate::metrics::{
    self,
    ground_truth::{GroundTruth, TruthSource},
};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Args)]
#[command(
    about = "Fuse the calibrated scores of several runs with per-group weights (a system file) into official CSVs"
)]
pub struct FuseArgs {
    /// System file (JSON): members, calibration, weights per group.
    pub system: PathBuf,
    /// Folder holding the members' run folders.
    #[arg(long, default_value = "checkpoints")]
    pub checkpoints: PathBuf,
    /// A system's run folder (`asd run SYSTEM --out DIR`): fuse the member
    /// scores it holds (`DIR/members/<member>/`) instead of <checkpoints>.
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Output folder (default: <checkpoints>/<system name>/scores).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Evaluate the fused scores against this ground truth (data root or official folder).
    #[arg(long)]
    pub ground_truth: Option<PathBuf>,
    /// Which set of a data root holding both.
    #[arg(long, value_enum)]
    pub set: Option<SetArg>,
    /// READS TEST LABELS: search each group's weights on the simplex with
    /// this step (0.1 = the report's grid), maximising the official score on
    /// the labelled test clips of --ground-truth (refused on the evaluation
    /// split); prints the leave-one-machine-out estimate and writes the
    /// chosen system file (--write).
    #[arg(long, value_name = "STEP", requires = "ground_truth")]
    pub grid_search_test_labels: Option<f64>,
    /// Where the grid search writes the chosen system file (default:
    /// <output folder>/../<system name>_grid.json).
    #[arg(long, requires = "grid_search_test_labels")]
    pub write: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SetArg {
    Dev,
    Eval,
}

pub fn run(a: FuseArgs, quiet: bool) -> Result<()> {
    let mut sys = SystemConfig::load(&a.system)?;
    let dirs = match &a.run {
        Some(run) => {
            if !run.is_dir() {
                bail!("--run {} does not exist (make it with `asd run {}`)", run.display(), a.system.display());
            }
            let dir = crate::pipeline::system::SystemDir { root: run.clone() };
            let absent: std::collections::BTreeSet<String> =
                sys.members.keys().filter(|id| !dir.member(id).is_dir()).cloned().collect();
            if absent.len() == sys.members.len() {
                bail!(
                    "{}: no member has scores in {} (expected members/<member>/; make them with `asd run`)",
                    a.system.display(),
                    run.display()
                );
            }
            sys = sys
                .without(&absent)
                .with_context(|| format!("{}: members scored in {}", a.system.display(), run.display()))?;
            sys.members.keys().map(|id| (id.clone(), dir.member(id))).collect()
        }
        None => fusion::member_dirs(&sys, &a.system, &a.checkpoints)?,
    };
    if let Some(step) = a.grid_search_test_labels {
        return grid_search(&a, sys, &dirs, step, quiet);
    }
    let out = a.out.clone().unwrap_or_else(|| crate::train::RunDir::new(a.checkpoints.join(&sys.name)).scores());
    let machines = fusion::fuse(&sys, &dirs, &out, quiet)?;
    if !quiet {
        eprintln!("fused {} machine types into {}", machines.len(), out.display());
    }
    if let Some(gt) = &a.ground_truth {
        let truth = GroundTruth::load(gt, a.data_set())?;
        let report = metrics::evaluate_dir(&truth, &out, &metrics::Decisions::IfPresent(out.clone()))?;
        println!("{}", report.table());
    }
    Ok(())
}

fn grid_search(
    a: &FuseArgs,
    sys: SystemConfig,
    dirs: &BTreeMap<String, PathBuf>,
    step: f64,
    quiet: bool,
) -> Result<()> {
    let gt = a.ground_truth.as_ref().expect("clap requires --ground-truth");
    let truth = GroundTruth::load(gt, a.data_set())?;
    let dev_names = matches!(&truth.source, TruthSource::FileNames { set: DataSet::Dev, .. });
    if !dev_names {
        bail!(
            "--grid-search-test-labels chooses weights by test labels: it is refused on the evaluation split \
             ({} is not a development set)",
            gt.display()
        );
    }
    let outcome = fusion::grid::search(&sys, dirs, &truth, gt, step)?;
    println!("{:<12} {:<18} {:>8} {:>10} {:>14}", "machine", "entry", "before", "in-sample", "left-one-out");
    let score = |r: &metrics::official::MachineReport| 100.0 * r.score();
    for (m, o) in &outcome.machines {
        println!(
            "{m:<12} {:<18} {:>8.2} {:>10.2} {:>14.2}",
            o.entry,
            score(&o.before),
            score(&o.in_sample),
            score(&o.left_out)
        );
    }
    let t = outcome.system.tuned_on_test_labels.as_ref().expect("search records itself");
    println!(
        "{:<12} {:<18} {:>8.2} {:>10.2} {:>14.2}",
        "official",
        "",
        100.0 * t.before_official_score,
        100.0 * t.in_sample_official_score,
        100.0 * t.leave_one_machine_out_official_score
    );
    for (entry, ws) in &outcome.system.weights {
        println!("weights {entry}: {ws:?}");
    }
    let file = a.write.clone().unwrap_or_else(|| a.system.with_file_name(format!("{}_grid.json", sys.name)));
    let mut chosen = outcome.system;
    chosen.name = format!("{}_grid", sys.name);
    // Member paths stay relative to the original system file.
    let from = a.system.parent().unwrap_or(std::path::Path::new("."));
    let to = file.parent().unwrap_or(std::path::Path::new("."));
    if from != to {
        for m in chosen.members.values_mut() {
            m.experiment = std::path::absolute(from.join(&m.experiment))?.display().to_string();
        }
    }
    crate::util::atomic::write_json(&file, &chosen)?;
    if !quiet {
        eprintln!("wrote {}", file.display());
    }
    Ok(())
}

impl FuseArgs {
    fn data_set(&self) -> Option<DataSet> {
        self.set.map(|s| match s {
            SetArg::Dev => DataSet::Dev,
            SetArg::Eval => DataSet::Eval,
        })
    }
}
