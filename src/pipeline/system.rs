//! A system end to end (`asd run SYSTEM`): train every member experiment
//! that is not trained yet, score each, calibrate and fuse per machine
//! group, evaluate where labels exist, and write the run report.
//!
//! The run folder:
//!
//! ```text
//! DIR/runs/<experiment>/      each member's training run (checkpoints, logs)
//! DIR/members/<member>/       each member's official CSVs and training scores
//! DIR/submission/             the fused official CSVs (scores and decisions)
//! DIR/features/               the feature cache
//! DIR/system.json             the system as run (absent optional members left out)
//! DIR/run_record.json         members, data, stage times: what `asd report` reads
//! DIR/report.md, DIR/plots/   the report
//! ```
//! Stages whose outputs are complete are reused: a trained run is not
//! trained again, a member scored with the same checkpoint and scoring
//! settings is not scored again. `overwrite` redoes them.

use super::{Prepared, evaluate_in, prepare, say, score, train_or_resume};
use crate::backend::BackendName;
use crate::experiment::Experiment;
use crate::fusion::{self, Member, SystemConfig};
use crate::report::{self, MemberRecord, RunRecord, Stage};
use crate::util::atomic;
use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How to run a system.
pub struct SystemOptions {
    /// Data root replacing every member's `data.root`.
    pub data: Option<PathBuf>,
    /// The run folder.
    pub out: PathBuf,
    pub backend: BackendName,
    /// Device indices for data-parallel training (empty: one device).
    pub devices: Vec<usize>,
    /// Retrain and rescore every member.
    pub overwrite: bool,
    /// Overrides applied to every member experiment (`train.max_steps=10`).
    pub overrides: Vec<String>,
    pub quiet: bool,
}

/// Paths of a system's run folder.
#[derive(Debug, Clone)]
pub struct SystemDir {
    pub root: PathBuf,
}

impl SystemDir {
    pub fn runs(&self) -> PathBuf {
        self.root.join("runs")
    }
    pub fn features(&self) -> PathBuf {
        self.root.join("features")
    }
    pub fn member(&self, id: &str) -> PathBuf {
        self.root.join("members").join(id)
    }
    pub fn submission(&self) -> PathBuf {
        self.root.join("submission")
    }
    pub fn system(&self) -> PathBuf {
        self.root.join("system.json")
    }
    /// Marker of a member's complete scoring: what it was scored with.
    fn scored_stamp(&self, id: &str) -> PathBuf {
        self.member(id).join("scored_with.json")
    }
}

/// One member ready to fuse, or the reason it was left out.
enum MemberState {
    Ready(MemberRecord),
    Skipped(String),
}

/// Runs a system file end to end; returns the record the report was drawn
/// from and the summary table (when test labels are known).
pub fn run_system(file: &Path, opts: &SystemOptions) -> Result<(RunRecord, Option<String>)> {
    let sys = SystemConfig::load(file)?;
    let dir = SystemDir { root: opts.out.clone() };
    std::fs::create_dir_all(&dir.root).with_context(|| format!("cannot create {}", dir.root.display()))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let mut stages = Vec::new();
    let mut members = Vec::new();
    let mut skipped = BTreeMap::new();
    let mut data: Option<(PathBuf, Vec<crate::data::machines::DataSet>)> = None;
    for (i, (id, m)) in sys.members.iter().enumerate() {
        say(opts.quiet, &format!("== member {}/{}: {id}", i + 1, sys.members.len()));
        match run_member(id, m, base, &dir, opts, &mut stages, &mut data)
            .with_context(|| format!("system {}", file.display()))?
        {
            MemberState::Ready(r) => members.push(r),
            MemberState::Skipped(why) => {
                say(opts.quiet, &format!("skipping member {id}: {why}"));
                skipped.insert(id.clone(), why);
            }
        }
    }
    let absent: BTreeSet<String> = skipped.keys().cloned().collect();
    let run_sys = sys.without(&absent).with_context(|| format!("system {}", file.display()))?;
    let (root, sets) = data.context("no member was run (every member was skipped)")?;
    let t = Instant::now();
    let calibration = serde_json::to_value(run_sys.calibration)?;
    say(opts.quiet, &format!("== fusing {} members per machine group ({calibration} calibration)", members.len()));
    let dirs: BTreeMap<String, PathBuf> = members.iter().map(|m| (m.id.clone(), m.scores.clone())).collect();
    fusion::fuse(&run_sys, &dirs, &dir.submission(), opts.quiet)?;
    if let Some(r) = evaluate_in(&root, &sets, &dir.submission())? {
        atomic::write_json(&dir.submission().join("evaluation.json"), &r)?;
    }
    stages.push(Stage { name: "fuse and evaluate".into(), seconds: t.elapsed().as_secs_f64(), reused: false });
    atomic::write_json(&dir.system(), &run_sys)?;
    let reads_test_labels = run_sys.tuned_on_test_labels.is_some() || members.iter().any(|m| m.reads_test_labels);
    let record = RunRecord {
        system: run_sys,
        system_file: file.to_path_buf(),
        data_root: root,
        sets,
        members,
        skipped,
        submission: dir.submission(),
        stages,
        reads_test_labels,
    };
    // The record first: a report that fails to draw can be redrawn from it.
    report::save_record(&dir.root, &record)?;
    say(opts.quiet, "== report");
    let summary = report::write(&dir.root, &record)?;
    Ok((record, summary))
}

/// Trains (or reuses) and scores (or reuses) one member.
fn run_member(
    id: &str,
    m: &Member,
    base: &Path,
    dir: &SystemDir,
    opts: &SystemOptions,
    stages: &mut Vec<Stage>,
    data: &mut Option<(PathBuf, Vec<crate::data::machines::DataSet>)>,
) -> Result<MemberState> {
    let path = base.join(&m.experiment);
    if !m.is_experiment() {
        if !path.is_dir() {
            bail!("member {id}: scores folder {} does not exist", path.display());
        }
        return Ok(MemberState::Ready(MemberRecord::scores_only(id, path)));
    }
    let overrides: Vec<String> = m.set.iter().chain(&opts.overrides).cloned().collect();
    let mut exp = Experiment::load(&path, &overrides).with_context(|| format!("member {id}"))?;
    if let Some(missing) = exp.model.info().pretrained_files().into_iter().find(|f| !f.is_file()) {
        let why = format!(
            "released checkpoint {} not found (download it: README, \"Pre-trained BEATs\" / \"Pre-trained EAT\")",
            missing.display()
        );
        if m.optional {
            return Ok(MemberState::Skipped(why));
        }
        bail!("member {id}: {why}");
    }
    if let Some(root) = &opts.data {
        exp.data.root = root.clone();
    }
    exp.features.cache_dir = dir.features();
    match data {
        None => *data = Some((exp.data.root.clone(), exp.data.sets.clone())),
        Some((root, sets)) if *root != exp.data.root || *sets != exp.data.sets => bail!(
            "member {id} reads {} ({:?}) but an earlier member reads {} ({:?}): members of a system share their data \
             (give --data to run them all on one root)",
            exp.data.root.display(),
            exp.data.sets,
            root.display(),
            sets
        ),
        Some(_) => {}
    }
    let p = prepare(exp, &dir.runs())?;
    let scores = dir.member(id);
    if opts.overwrite {
        for d in [&p.run.root, &scores] {
            if d.exists() {
                std::fs::remove_dir_all(d).with_context(|| format!("cannot remove {}", d.display()))?;
            }
        }
    }
    let t = Instant::now();
    let trained =
        train_or_resume(&p, opts.backend, &opts.devices, opts.quiet).with_context(|| format!("member {id}"))?;
    stages.push(Stage { name: format!("train {id}"), seconds: t.elapsed().as_secs_f64(), reused: !trained });
    let t = Instant::now();
    let stamp = scoring_stamp(&p)?;
    let reuse = !trained && read_stamp(&dir.scored_stamp(id)).is_some_and(|s| s == stamp);
    if reuse {
        say(opts.quiet, &format!("{id}: scores in {} are up to date", scores.display()));
    } else {
        score(&p, opts.backend, Some(&scores), opts.quiet).with_context(|| format!("scoring member {id}"))?;
        atomic::write_json(&dir.scored_stamp(id), &stamp)?;
    }
    stages.push(Stage { name: format!("score {id}"), seconds: t.elapsed().as_secs_f64(), reused: reuse });
    Ok(MemberState::Ready(MemberRecord {
        id: id.to_string(),
        experiment: p.exp.name.clone(),
        kind: p.exp.model.kind(),
        run: Some(p.run.root.clone()),
        scores,
        reads_test_labels: p.exp.train.selection.reads_test_labels(),
    }))
}

/// What a member's scores depend on besides the trained weights: the
/// steps trained, the checkpoint and the scoring settings.
fn scoring_stamp(p: &Prepared) -> Result<serde_json::Value> {
    let steps: Vec<Option<u64>> = p.units()?.iter().map(|u| u.run.steps_done()).collect::<Result<_>>()?;
    Ok(serde_json::json!({
        "steps": steps,
        "data_root": p.exp.data.root,
        "scoring": p.exp.scoring,
        "selection": p.exp.train.selection,
    }))
}

fn read_stamp(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}
