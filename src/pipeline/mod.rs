//! The stages that turn an experiment into results: prepare (scan data,
//! build the class table), train, score (embed, kNN back-end, official
//! CSVs) and evaluate. Each model kind plugs in through [`ModelKind`].

pub mod beats;
pub mod dual_branch;

use crate::backend::{self, BackendName};
use crate::cli::Progress;
use crate::data::labels::LabelTable;
use crate::data::machines;
use crate::data::naming::{Domain, Split};
use crate::data::{Clip, Dataset};
use crate::experiment::{Experiment, ModelConfig};
use crate::metrics::ground_truth::GroundTruth;
use crate::metrics::official::{MachineInput, MachineReport, Report};
use crate::metrics::{self, DecisionRule, submission};
use crate::scoring::KnnScorer;
use crate::train::{RunDir, RunOptions};
use crate::util::atomic;
use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// An experiment with its data scanned and its run folder known.
pub struct Prepared {
    pub exp: Experiment,
    pub dataset: Dataset,
    pub labels: LabelTable,
    pub run: RunDir,
}

/// Scans the data and builds the class table of an experiment.
pub fn prepare(exp: Experiment, checkpoints: &Path) -> Result<Prepared> {
    let machines_filter: Option<Vec<String>> = match (&exp.data.group, exp.data.machines.is_empty()) {
        (Some(g), true) => Some(g.machines().map(|m| m.name.to_string()).collect()),
        _ if exp.data.machines.is_empty() => None,
        _ => Some(exp.data.machines.clone()),
    };
    let mut dataset = match &machines_filter {
        // A group may span both sets: keep only the machines present.
        Some(ms) if exp.data.group.is_some() => {
            let all = Dataset::scan(&exp.data.root, &exp.data.sets, None)?;
            let clips: Vec<Clip> = all.clips.into_iter().filter(|c| ms.contains(&c.machine)).collect();
            if clips.is_empty() {
                bail!("no machine of group {} under {}", exp.data.group.unwrap(), exp.data.root.display());
            }
            Dataset { root: all.root, clips }
        }
        Some(ms) => Dataset::scan(&exp.data.root, &exp.data.sets, Some(ms))?,
        None => Dataset::scan(&exp.data.root, &exp.data.sets, None)?,
    };
    dataset.clips.retain(|c| c.split == Split::Train || c.split == Split::Test);
    let labels = LabelTable::build(dataset.clips.iter().filter(|c| c.split == Split::Train), exp.data.labels)?;
    let run = RunDir::new(exp.run_dir(checkpoints));
    Ok(Prepared { exp, dataset, labels, run })
}

impl Prepared {
    pub fn train_clips(&self) -> Vec<&Clip> {
        self.dataset.clips.iter().filter(|c| c.split == Split::Train).collect()
    }
}

/// What a model kind provides to the pipeline.
pub trait ModelKind {
    /// Trains (or resumes) and leaves checkpoints in the run folder.
    fn train(&self, p: &Prepared, device: &Device, opts: &TrainOptions) -> Result<()>;
    /// Embeds clips with a checkpoint (inference device).
    fn embed(
        &self,
        p: &Prepared,
        checkpoint: &Path,
        clips: &[&Clip],
        device: &Device,
        quiet: bool,
    ) -> Result<Vec<Vec<f32>>>;
}

pub struct TrainOptions {
    pub resume: bool,
    pub quiet: bool,
    pub stop_after: Option<u64>,
}

fn kind_of(model: &ModelConfig) -> Box<dyn ModelKind> {
    match model {
        ModelConfig::DualBranchCnn(c) => Box::new(dual_branch::DualBranch { cfg: c.clone() }),
        ModelConfig::BeatsLora(c) => Box::new(beats::Beats { cfg: c.clone() }),
    }
}

/// Saved description of a run (next to its checkpoints).
#[derive(Debug, serde::Serialize)]
struct Manifest<'a> {
    experiment: &'a str,
    model: &'a str,
    backend: &'a str,
    seed: u64,
    git_revision: Option<String>,
    asd_version: &'a str,
    burn_version: &'a str,
    started_unix_s: u64,
    command_line: Vec<String>,
    classes: usize,
    train_clips: usize,
}

fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The resolved config minus what may change between sessions of one run.
fn identity(exp: &Experiment) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(exp)?;
    v["train"]["max_steps"] = serde_json::Value::Null;
    v["scoring"] = serde_json::Value::Null;
    Ok(v)
}

/// Trains the experiment's model on the chosen backend.
pub fn train(p: &Prepared, backend: BackendName, opts: &TrainOptions) -> Result<()> {
    let device = backend::device(backend)?.autodiff();
    std::fs::create_dir_all(&p.run.root).with_context(|| format!("cannot create {}", p.run.root.display()))?;
    if opts.resume {
        let saved = Experiment::load_resolved(&p.run.config())
            .with_context(|| format!("--resume: cannot read the run's configuration {}", p.run.config().display()))?;
        if identity(&saved)? != identity(&p.exp)? {
            bail!(
                "--resume: the experiment differs from the one {} was started with (only train.max_steps and \
                 scoring may change); use a new name to start another run",
                p.run.root.display()
            );
        }
        let saved_labels = LabelTable::load(&p.run.labels())?;
        if saved_labels != p.labels {
            bail!("--resume: the class table changed (different data?); start a new run");
        }
    } else if p.run.last().exists() {
        bail!(
            "{} already holds a trained run; pass --resume to continue it or choose another name",
            p.run.root.display()
        );
    }
    atomic::write_json(&p.run.config(), &p.exp)?;
    p.labels.save(&p.run.labels())?;
    let manifest = Manifest {
        experiment: &p.exp.name,
        model: p.exp.model.kind(),
        backend: backend.as_str(),
        seed: p.exp.seed,
        git_revision: git_revision(),
        asd_version: env!("CARGO_PKG_VERSION"),
        burn_version: "0.22.1",
        started_unix_s: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        command_line: std::env::args().collect(),
        classes: p.labels.len(),
        train_clips: p.train_clips().len(),
    };
    atomic::write_json(&p.run.manifest(), &manifest)?;
    kind_of(&p.exp.model).train(p, &device, opts)
}

/// Embeddings of one machine's clips.
pub struct MachineEmbeddings {
    pub source: Vec<Vec<f32>>,
    pub target: Vec<Vec<f32>>,
    pub test: Vec<Vec<f32>>,
    pub test_names: Vec<String>,
}

/// Result of scoring: where the CSVs went and, when ground truth is
/// available, the evaluation.
pub struct ScoreOutput {
    pub dir: PathBuf,
    pub report: Option<Report>,
}

/// Scores every machine's test clips with a trained checkpoint and writes
/// the official submission CSVs to `out` (default `checkpoints/<name>/scores`).
pub fn score(p: &Prepared, backend: BackendName, out: Option<&Path>, quiet: bool) -> Result<ScoreOutput> {
    let device = backend::device(backend)?;
    let ckpt = p.run.select(&p.exp.scoring.checkpoint)?;
    let kind = kind_of(&p.exp.model);
    let dir = out.map(Path::to_path_buf).unwrap_or_else(|| p.run.scores());
    let machines = p.dataset.machines();
    let all: Vec<&Clip> = p.dataset.clips.iter().collect();
    let emb = kind.embed(p, &ckpt, &all, &device, quiet)?;
    let mut by_machine: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for m in &machines {
        let idx = |f: &dyn Fn(&Clip) -> bool| -> Vec<usize> {
            all.iter().enumerate().filter(|(_, c)| c.machine == *m && f(c)).map(|(i, _)| i).collect()
        };
        let src = idx(&|c| c.split == Split::Train && c.domain() == Some(Domain::Source));
        let tgt = idx(&|c| c.split == Split::Train && c.domain() == Some(Domain::Target));
        let test = idx(&|c| c.split == Split::Test);
        let pick = |ix: &[usize]| ix.iter().map(|&i| emb[i].clone()).collect::<Vec<_>>();
        let seed = p.exp.seed ^ crate::util::rng::hash_str(m);
        let scorer = KnnScorer::fit(&p.exp.scoring.knn, &pick(&src), &pick(&tgt), seed)
            .with_context(|| format!("scoring {m}"))?;
        let s = scorer.score(&pick(&test))?.score;
        let train_scores = scorer.train_scores();
        let thr = match metrics::threshold(&p.exp.scoring.decision, &train_scores) {
            Ok(t) => t,
            // A degenerate score distribution (e.g. all equal) has no gamma fit;
            // the decisions then use the 90th percentile instead.
            Err(e) if matches!(p.exp.scoring.decision, DecisionRule::Gamma { .. }) => {
                if !quiet {
                    eprintln!("warning: {m}: {e:#}; using the 90th percentile of the training scores");
                }
                metrics::threshold(&DecisionRule::Percentile { percent: 90.0 }, &train_scores)?
            }
            Err(e) => return Err(e.context(format!("decision threshold of {m}"))),
        };
        let names: Vec<String> = test.iter().map(|&i| all[i].file_name()).collect();
        let rows: Vec<(String, f64)> = names.iter().cloned().zip(s.iter().copied()).collect();
        let dec: Vec<(String, u8)> = names.into_iter().zip(metrics::decide(&s, thr)).collect();
        submission::write_submission(&dir, m, &rows, &dec)?;
        crate::fusion::write_train_scores(&dir, m, &train_scores)?;
        by_machine.insert(m.clone(), s);
    }
    let report = evaluate_if_possible(p, &dir)?;
    if let Some(r) = &report {
        atomic::write_json(&dir.join("evaluation.json"), r)?;
    }
    Ok(ScoreOutput { dir, report })
}

/// Evaluates a scores folder against the data root's ground truth when the
/// test labels are known (dev names, or the synthetic eval ground truth).
pub fn evaluate_if_possible(p: &Prepared, dir: &Path) -> Result<Option<Report>> {
    let mut reports = BTreeMap::new();
    for &set in &p.exp.data.sets {
        let Ok(truth) = GroundTruth::load(&p.exp.data.root, Some(set)) else {
            continue;
        };
        let r = metrics::evaluate_dir(&truth, dir, &metrics::Decisions::IfPresent(dir.to_path_buf()));
        match r {
            Ok(r) => reports.extend(r.machines),
            Err(e) => return Err(e.context("evaluating the scores")),
        }
    }
    if reports.is_empty() {
        return Ok(None);
    }
    Ok(Some(metrics::official::report(reports)?))
}

/// Official hmean of in-memory scores over the machines with labelled test
/// clips: the validation metric of training runs.
pub fn validation_hmean(clips: &[&Clip], scores: &[f64]) -> Result<Option<f64>> {
    // Per machine: (is anomaly, is target, score) of each labelled clip.
    type Columns = (Vec<bool>, Vec<bool>, Vec<f64>);
    let mut per: BTreeMap<&str, Columns> = BTreeMap::new();
    for (c, s) in clips.iter().zip(scores) {
        if let (Some(l), Some(d)) = (c.label(), c.domain()) {
            let e = per.entry(c.machine.as_str()).or_default();
            e.0.push(l == crate::data::Label::Anomaly);
            e.1.push(d == Domain::Target);
            e.2.push(*s);
        }
    }
    let mut reports: BTreeMap<String, MachineReport> = BTreeMap::new();
    for (m, (a, t, s)) in per {
        let input = MachineInput { is_anomaly: &a, is_target: &t, scores: &s, decisions: None };
        if let Ok(r) = metrics::official::machine_metrics(&input) {
            reports.insert(m.to_string(), r);
        }
    }
    if reports.is_empty() {
        return Ok(None);
    }
    Ok(Some(metrics::official::official_score(&reports)))
}

/// kNN scores of every labelled test clip from in-memory embeddings
/// (validation during training); `emb[i]` belongs to `clips[i]`.
pub fn knn_validation(p: &Prepared, clips: &[&Clip], emb: &[Vec<f32>]) -> Result<Option<f64>> {
    let mut test_clips = Vec::new();
    let mut test_scores = Vec::new();
    for m in p.dataset.machines() {
        let pick = |f: &dyn Fn(&Clip) -> bool| -> (Vec<usize>, Vec<Vec<f32>>) {
            let ix: Vec<usize> = (0..clips.len()).filter(|&i| clips[i].machine == m && f(clips[i])).collect();
            let e = ix.iter().map(|&i| emb[i].clone()).collect();
            (ix, e)
        };
        let (_, src) = pick(&|c| c.split == Split::Train && c.domain() == Some(Domain::Source));
        let (_, tgt) = pick(&|c| c.split == Split::Train && c.domain() == Some(Domain::Target));
        let (tix, test) = pick(&|c| c.split == Split::Test && c.label().is_some());
        if test.is_empty() || src.is_empty() || tgt.is_empty() {
            continue;
        }
        let scorer = KnnScorer::fit(&p.exp.scoring.knn, &src, &tgt, p.exp.seed)?;
        test_scores.extend(scorer.score(&test)?.score);
        test_clips.extend(tix.iter().map(|&i| clips[i]));
    }
    validation_hmean(&test_clips, &test_scores)
}

/// Machine names in the official order (for printing).
pub fn ordered_machines(report: &Report) -> Vec<String> {
    let mut v: Vec<String> = report.machines.keys().cloned().collect();
    v.sort_by_key(|m| machines::MACHINES.iter().position(|i| i.name == m).unwrap_or(usize::MAX));
    v
}

/// Embeds clips `batch` at a time (one forward pass per chunk) with a
/// progress bar; `forward` returns the chunk's embeddings [n, dim].
pub fn embed_in_batches(
    clips: &[&Clip],
    batch: usize,
    quiet: bool,
    mut forward: impl FnMut(&[&Clip]) -> Result<burn::tensor::Tensor<2>>,
) -> Result<Vec<Vec<f32>>> {
    let bar = embed_progress(clips.len(), quiet);
    let mut out = Vec::with_capacity(clips.len());
    for chunk in clips.chunks(batch.max(1)) {
        let e = forward(chunk)?;
        let [n, d] = e.dims();
        let v = crate::nn::util::to_vec(e);
        out.extend((0..n).map(|i| v[i * d..(i + 1) * d].to_vec()));
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    Ok(out)
}

/// A progress bar for embedding.
pub fn embed_progress(n: usize, quiet: bool) -> Progress {
    Progress::new(n as u64, "embed", quiet)
}

/// The run options of a training session.
pub fn run_options<'a, M>(
    p: &Prepared,
    opts: &TrainOptions,
    validator: Option<crate::train::Validator<'a, M>>,
) -> RunOptions<'a, M> {
    RunOptions { seed: p.exp.seed, resume: opts.resume, quiet: opts.quiet, stop_after: opts.stop_after, validator }
}
