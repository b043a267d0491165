//! Official DCASE 2024 Task 2 evaluation, identical to the official
//! evaluator (nttcslab/dcase2024_task2_evaluator) but strict about its
//! inputs: ROC/AUC/pAUC as scikit-learn ([`roc`]), the per-machine metrics,
//! official score and summary rows ([`official`]), ground truth
//! ([`ground_truth`]), submission CSVs ([`submission`]) and decision
//! thresholds ([`mod@threshold`]).
//!
//! Entry points for other modules:
//! * scoring paths: [`threshold::threshold`] + [`threshold::decide`], then
//!   [`submission::write_submission`] per machine;
//! * pipelines: [`evaluate_dir`] (submission folder) or [`evaluate_scores`]
//!   (in memory) against a [`GroundTruth`], returning a [`Report`].

pub mod ground_truth;
pub mod official;
pub mod roc;
pub mod stats;
pub mod submission;
pub mod threshold;

pub use ground_truth::{GroundTruth, MachineTruth};
pub use official::{MachineInput, MachineReport, Report, SummaryRow, SummaryRows};
pub use roc::{partial_auc, roc_auc};
pub use submission::write_submission;
pub use threshold::{DecisionRule, decide, threshold};

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where decision files come from in [`evaluate_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decisions {
    /// Scores only: no precision/recall/F1.
    Ignore,
    /// Use the decision files in this folder when *every* machine has one;
    /// none at all means no P/R/F1; some but not all is an error.
    IfPresent(PathBuf),
    /// Every machine must have a decision file in this folder.
    Required(PathBuf),
}

/// Scores (and decisions) of one machine, aligned to its ground truth.
fn machine_report(
    machine: &str,
    truth: &MachineTruth,
    scores: &[(String, f64)],
    scores_file: &Path,
    decisions: Option<(&[(String, u8)], &Path)>,
) -> Result<MachineReport> {
    let s = truth.align(scores, scores_file)?;
    let d = match decisions {
        Some((rows, file)) => Some(truth.align(rows, file)?),
        None => None,
    };
    official::machine_metrics(&MachineInput {
        is_anomaly: &truth.is_anomaly,
        is_target: &truth.is_target,
        scores: &s,
        decisions: d.as_deref(),
    })
    .with_context(|| format!("evaluating {machine} ({})", scores_file.display()))
}

/// Evaluates the submission files in `scores_dir` for every machine of the
/// ground truth. A machine without a score file is an error naming the
/// expected file (the official evaluator skips the whole submission then).
pub fn evaluate_dir(truth: &GroundTruth, scores_dir: &Path, decisions: &Decisions) -> Result<Report> {
    if !scores_dir.is_dir() {
        bail!("scores folder {} does not exist", scores_dir.display());
    }
    let mut score_files = BTreeMap::new();
    for m in truth.machines.keys() {
        match submission::find_score_file(scores_dir, m)? {
            Some(p) => score_files.insert(m.clone(), p),
            None => bail!(
                "no anomaly scores for {m}: expected {} (every machine type of the ground truth must be scored)",
                scores_dir.join(submission::score_file_name(m)).display()
            ),
        };
    }
    let decision_files: Option<BTreeMap<String, PathBuf>> = match decisions {
        Decisions::Ignore => None,
        Decisions::IfPresent(dir) | Decisions::Required(dir) => {
            let mut found = BTreeMap::new();
            let mut missing = Vec::new();
            for m in truth.machines.keys() {
                match submission::find_decision_file(dir, m)? {
                    Some(p) => {
                        found.insert(m.clone(), p);
                    }
                    None => missing.push(dir.join(submission::decision_file_name(m))),
                }
            }
            let required = matches!(decisions, Decisions::Required(_));
            if missing.is_empty() {
                Some(found)
            } else if found.is_empty() && !required {
                None
            } else {
                bail!(
                    "decision file missing: {}{}",
                    missing[0].display(),
                    if missing.len() > 1 { format!(" (and {} more)", missing.len() - 1) } else { String::new() }
                );
            }
        }
    };
    let mut machines = BTreeMap::new();
    for (m, truth_m) in &truth.machines {
        let sfile = &score_files[m];
        let scores = submission::read_scores(sfile)?;
        let dec = match &decision_files {
            Some(files) => Some((submission::read_decisions(&files[m])?, files[m].clone())),
            None => None,
        };
        let r = machine_report(m, truth_m, &scores, sfile, dec.as_ref().map(|(d, p)| (d.as_slice(), p.as_path())))?;
        machines.insert(m.clone(), r);
    }
    official::report(machines)
}

/// Evaluates in-memory scores (and optional decisions) per machine, named
/// as the ground truth names its clips. Every machine of the ground truth
/// must be present; machines not in the ground truth are an error.
pub fn evaluate_scores(
    truth: &GroundTruth,
    scores: &BTreeMap<String, Vec<(String, f64)>>,
    decisions: Option<&BTreeMap<String, Vec<(String, u8)>>>,
) -> Result<Report> {
    if let Some(m) = scores.keys().find(|m| !truth.machines.contains_key(*m)) {
        bail!("scores for {m}, which is not in the ground truth ({})", truth.machine_names().join(", "));
    }
    let mut machines = BTreeMap::new();
    for (m, truth_m) in &truth.machines {
        let label = PathBuf::from(format!("<{m} scores>"));
        let Some(s) = scores.get(m) else {
            bail!("no scores for {m}");
        };
        let dlabel = PathBuf::from(format!("<{m} decisions>"));
        let d = match decisions {
            Some(all) => Some(all.get(m).with_context(|| format!("no decisions for {m}"))?.as_slice()),
            None => None,
        };
        machines.insert(m.clone(), machine_report(m, truth_m, s, &label, d.map(|d| (d, dlabel.as_path())))?);
    }
    official::report(machines)
}
