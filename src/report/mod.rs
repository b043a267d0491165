//! The report of a system run: `report.md` with the official metrics of
//! every member and of the fused system per machine, ROC curves and score
//! histograms per machine, and each member's training-loss curve, as PNG
//! under `plots/`. Drawn from the run's record (`run_record.json`), so
//! `asd report RUN` redraws it without training or scoring anything.

mod plots;

use crate::data::machines::DataSet;
use crate::fusion::SystemConfig;
use crate::metrics::ground_truth::{GroundTruth, MachineTruth};
use crate::metrics::official::Report;
use crate::metrics::{self, submission};
use crate::train::RunDir;
use crate::util::atomic;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What a system run produced, and where.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    /// The system as run (absent optional members left out).
    pub system: SystemConfig,
    pub system_file: PathBuf,
    pub data_root: PathBuf,
    pub sets: Vec<DataSet>,
    pub members: Vec<MemberRecord>,
    /// Member id -> why it was left out.
    pub skipped: BTreeMap<String, String>,
    /// The fused official CSVs.
    pub submission: PathBuf,
    pub stages: Vec<Stage>,
    /// Whether any choice of the run read test labels (a checkpoint chosen
    /// by them, weights from a grid search on them).
    pub reads_test_labels: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRecord {
    pub id: String,
    /// Experiment name (empty for a scores folder).
    pub experiment: String,
    /// Model kind (empty for a scores folder).
    pub kind: String,
    /// The training run folder.
    pub run: Option<PathBuf>,
    /// The member's official CSVs.
    pub scores: PathBuf,
    pub reads_test_labels: bool,
}

impl MemberRecord {
    /// A member given as a folder of scores (no training run).
    pub fn scores_only(id: &str, scores: PathBuf) -> MemberRecord {
        MemberRecord {
            id: id.to_string(),
            experiment: String::new(),
            kind: String::new(),
            run: None,
            scores,
            reads_test_labels: false,
        }
    }
}

/// One stage of a run and its wall time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub name: String,
    pub seconds: f64,
    /// Outputs of an earlier run were reused.
    pub reused: bool,
}

fn record_path(dir: &Path) -> PathBuf {
    dir.join("run_record.json")
}

pub fn save_record(dir: &Path, record: &RunRecord) -> Result<()> {
    atomic::write_json(&record_path(dir), record)
}

pub fn load_record(dir: &Path) -> Result<RunRecord> {
    let p = record_path(dir);
    let text = std::fs::read_to_string(&p).with_context(|| {
        format!("cannot read {} (is {} the folder of an `asd run SYSTEM`?)", p.display(), dir.display())
    })?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a run record", p.display()))
}

/// The name of the fused system in tables and plots.
pub const FUSED: &str = "fused system";

/// Official metrics of every model of the run (members, then the fused system).
pub struct Evaluations {
    pub truth: GroundTruth,
    pub models: Vec<(String, PathBuf, Report)>,
}

/// Evaluates every member and the fused system where test labels exist.
pub fn evaluate(record: &RunRecord) -> Result<Option<Evaluations>> {
    let Some(truth) = GroundTruth::labelled(&record.data_root, &record.sets)? else {
        return Ok(None);
    };
    let mut models = Vec::new();
    let named = record.members.iter().map(|m| (m.id.clone(), m.scores.clone()));
    for (name, dir) in named.chain([(FUSED.to_string(), record.submission.clone())]) {
        let r = metrics::evaluate_dir(&truth, &dir, &metrics::Decisions::IfPresent(dir.clone()))
            .with_context(|| format!("evaluating {name}"))?;
        models.push((name, dir, r));
    }
    Ok(Some(Evaluations { truth, models }))
}

fn pct(x: f64) -> String {
    format!("{:.2}", 100.0 * x)
}

/// Official score per machine (hmean of AUC-s, AUC-t, pAUC) and overall, one row per model.
pub fn summary_table(ev: &Evaluations) -> String {
    let machines: Vec<&String> = ev.truth.machines.keys().collect();
    let width = ev.models.iter().map(|(n, ..)| n.len()).max().unwrap_or(5).max(5);
    let mut s = format!("{:width$}", "model");
    for m in &machines {
        let _ = write!(s, " {:>10}", m);
    }
    s.push_str("   official\n");
    for (name, _, r) in &ev.models {
        let _ = write!(s, "{name:width$}");
        for m in &machines {
            let _ = write!(s, " {:>10}", pct(r.machines[*m].score()));
        }
        let _ = writeln!(s, "   {:>8}", pct(r.official_score));
    }
    s
}

/// A model's scores of a machine aligned to its ground truth.
fn aligned_scores(dir: &Path, machine: &str, truth: &MachineTruth) -> Result<Vec<f64>> {
    let file = submission::find_score_file(dir, machine)?
        .with_context(|| format!("no scores of {machine} in {}", dir.display()))?;
    truth.align(&submission::read_scores(&file)?, &file)
}

/// `(curve name, [(step, loss)])` of a member's training runs (one per machine group for per-group models).
fn loss_curves(run: &Path) -> Result<Vec<plots::Curve>> {
    let mut runs = vec![("loss".to_string(), RunDir::new(run))];
    if let Ok(groups) = std::fs::read_dir(run.join("groups")) {
        let mut g: Vec<(String, RunDir)> = groups
            .filter_map(|e| e.ok())
            .map(|e| (e.file_name().to_string_lossy().to_string(), RunDir::new(e.path())))
            .collect();
        g.sort_by(|a, b| a.0.cmp(&b.0));
        runs.extend(g);
    }
    let mut out = Vec::new();
    for (name, r) in runs {
        let Ok(text) = std::fs::read_to_string(r.metrics()) else { continue };
        let pts: Vec<(f64, f64)> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| Some((v.get("step")?.as_f64()?, v.get("loss")?.as_f64()?)))
            .filter(|(_, l)| l.is_finite())
            .collect();
        if !pts.is_empty() {
            out.push((name, pts));
        }
    }
    Ok(out)
}

/// Draws the plots and writes `report.md` into `dir`; returns the summary
/// table (None when no test labels are known).
pub fn write(dir: &Path, record: &RunRecord) -> Result<Option<String>> {
    let plot_dir = dir.join("plots");
    std::fs::create_dir_all(&plot_dir).with_context(|| format!("cannot create {}", plot_dir.display()))?;
    let mut md = String::new();
    let _ = writeln!(md, "# Run report: {}\n", record.system.name);
    if !record.system.description.is_empty() {
        let _ = writeln!(md, "{}\n", record.system.description);
    }
    let _ = writeln!(md, "- system file: `{}`", record.system_file.display());
    let _ = writeln!(md, "- data: `{}` ({})", record.data_root.display(), serde_json::to_string(&record.sets)?);
    let _ =
        writeln!(md, "- calibration: {} (per member and machine)", serde_json::to_string(&record.system.calibration)?);
    let _ = writeln!(md, "- fused official CSVs: `{}`", rel(dir, &record.submission));
    let _ = writeln!(
        md,
        "- test labels chose anything: **{}**",
        if record.reads_test_labels {
            "yes (see the members' manifests and the system's `tuned_on_test_labels`)"
        } else {
            "no"
        }
    );
    md.push_str("\n## Members\n\n| member | model | run | scores |\n|---|---|---|---|\n");
    for m in &record.members {
        let run = m.run.as_deref().map(|r| format!("`{}`", rel(dir, r))).unwrap_or_default();
        let _ = writeln!(md, "| {} | {} | {} | `{}` |", m.id, m.kind, run, rel(dir, &m.scores));
    }
    for (id, why) in &record.skipped {
        let _ = writeln!(md, "| {id} | skipped: {why} | | |");
    }
    md.push_str("\n## Weights per machine group\n\n");
    let ids: Vec<&String> = record.system.members.keys().collect();
    let _ = writeln!(md, "| entry | {} |", ids.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(ids.len()));
    for (entry, ws) in &record.system.weights {
        let cells: Vec<String> = ids.iter().map(|id| ws.get(*id).map_or("0".into(), |w| format!("{w}"))).collect();
        let _ = writeln!(md, "| {entry} | {} |", cells.join(" | "));
    }
    md.push_str("\n## Stages\n\n| stage | seconds | |\n|---|---:|---|\n");
    for s in &record.stages {
        let _ = writeln!(md, "| {} | {:.1} | {} |", s.name, s.seconds, if s.reused { "reused" } else { "" });
    }
    let ev = evaluate(record)?;
    let summary = ev.as_ref().map(summary_table);
    if let Some(ev) = &ev {
        write_metrics(&mut md, ev);
        md.push_str("\n## Per machine\n\nROC curves of every model (all test clips of the machine) and histograms of the fused scores.\n");
        for (machine, truth) in &ev.truth.machines {
            let mut curves = Vec::new();
            for (name, d, r) in &ev.models {
                let s = aligned_scores(d, machine, truth)?;
                let roc = metrics::roc::roc_curve(&truth.is_anomaly, &s)?;
                let label = format!("{name} (AUC {:.3})", r.machines[machine].auc_all);
                curves.push((label, roc.fpr.into_iter().zip(roc.tpr).collect::<Vec<_>>()));
            }
            let roc_png = plot_dir.join(format!("roc_{machine}.png"));
            plots::roc(&roc_png, &format!("{machine}: ROC"), &curves)?;
            let fused = aligned_scores(&record.submission, machine, truth)?;
            let hist_png = plot_dir.join(format!("hist_{machine}.png"));
            plots::histograms(&hist_png, &format!("{machine}: fused scores"), &histogram_series(truth, &fused))?;
            let _ = writeln!(
                md,
                "\n### {machine}\n\n![ROC {machine}](plots/roc_{machine}.png) ![scores {machine}](plots/hist_{machine}.png)"
            );
        }
    }
    md.push_str("\n## Training loss\n");
    for m in &record.members {
        let Some(run) = &m.run else { continue };
        let curves = loss_curves(run)?;
        if curves.is_empty() {
            continue;
        }
        let png = plot_dir.join(format!("loss_{}.png", m.id));
        plots::lines(&png, &format!("{}: training loss", m.id), "step", "loss", &curves)?;
        let _ = writeln!(md, "\n![loss {}](plots/loss_{}.png)", m.id, m.id);
    }
    atomic::write_string(&dir.join("report.md"), &md)?;
    Ok(summary)
}

fn histogram_series(truth: &MachineTruth, scores: &[f64]) -> Vec<(String, Vec<f64>)> {
    let mut out = Vec::new();
    for (target, dom) in [(false, "source"), (true, "target")] {
        for (anomaly, cls) in [(false, "normal"), (true, "anomaly")] {
            let v: Vec<f64> = (0..scores.len())
                .filter(|&i| truth.is_target[i] == target && truth.is_anomaly[i] == anomaly)
                .map(|i| scores[i])
                .collect();
            out.push((format!("{dom} {cls} ({})", v.len()), v));
        }
    }
    out
}

fn write_metrics(md: &mut String, ev: &Evaluations) {
    md.push_str("\n## Official scores (%)\n\nPer machine: the harmonic mean of AUC (source), AUC (target) and pAUC; last column: the official score over all machines.\n\n```\n");
    md.push_str(&summary_table(ev));
    md.push_str("```\n");
    for (name, _, r) in &ev.models {
        let _ = writeln!(
            md,
            "\n### {name}\n\n| machine | AUC (source) | AUC (target) | pAUC | score |\n|---|---:|---:|---:|---:|"
        );
        for (m, mr) in &r.machines {
            let _ = writeln!(
                md,
                "| {m} | {} | {} | {} | {} |",
                pct(mr.auc_source),
                pct(mr.auc_target),
                pct(mr.pauc),
                pct(mr.score())
            );
        }
        let _ = writeln!(md, "| **official score** | | | | **{}** |", pct(r.official_score));
    }
}

/// `path` relative to `dir` where it lies below it.
fn rel(dir: &Path, path: &Path) -> String {
    path.strip_prefix(dir).unwrap_or(path).display().to_string()
}
