//! The stages that turn an experiment into results: prepare (scan data,
//! build the class table), train, score (model outputs, back-end, official
//! CSVs) and evaluate. Every model goes through the same code: the
//! pipeline asks it for everything through [`crate::models::ModelSpec`]
//! and never names a model. Models trained per machine group
//! (`data.per_group`) run as one sub-run per group.

pub mod backend_check;
pub mod inputs;
pub mod pseudo;
pub mod system;

use crate::backend::{self, BackendName};
use crate::data::labels::LabelTable;
use crate::data::machines::{DataSet, MachineGroup};
use crate::data::naming::{Domain, Split};
use crate::data::{Clip, Dataset};
use crate::experiment::Experiment;
use crate::metrics::ground_truth::GroundTruth;
use crate::metrics::official::{MachineInput, MachineReport, Report};
use crate::metrics::{self, DecisionRule, submission};
use crate::models::{BatchContext, InitContext, ModelSpec, Scoring, SpecVisitor};
use crate::train::{self, RunDir, RunOptions, checkpoint};
use crate::util::atomic;
use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use inputs::{Inputs, SpecTask};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// An experiment with its data scanned and its run folder known.
#[derive(Clone)]
pub struct Prepared {
    pub exp: Experiment,
    pub dataset: Dataset,
    pub labels: LabelTable,
    pub run: RunDir,
    /// Training clips held out of training (`data.holdout_fraction`).
    pub held_out: BTreeSet<PathBuf>,
}

/// The training clips held out of training: per machine and domain, the
/// `round(fraction × n)` clips first in a seeded order of their names
/// (never all of them).
fn held_out(clips: &[Clip], fraction: f64, seed: u64) -> BTreeSet<PathBuf> {
    let mut cells: BTreeMap<(&str, Option<Domain>), Vec<&Clip>> = BTreeMap::new();
    for c in clips.iter().filter(|c| c.split == Split::Train) {
        cells.entry((c.machine.as_str(), c.domain())).or_default().push(c);
    }
    let mut out = BTreeSet::new();
    for cell in cells.values_mut() {
        let k = ((fraction * cell.len() as f64).round() as usize).min(cell.len() - 1);
        cell.sort_by_key(|c| {
            (crate::util::rng::mix64(seed ^ crate::util::rng::hash_str(&c.file_name())), c.file_name())
        });
        out.extend(cell.iter().take(k).map(|c| c.path.clone()));
    }
    out
}

/// Scans the data and builds the class table of an experiment.
pub fn prepare(exp: Experiment, checkpoints: &Path) -> Result<Prepared> {
    let run = RunDir::new(exp.run_dir(checkpoints));
    prepare_in(exp, run)
}

fn prepare_in(exp: Experiment, run: RunDir) -> Result<Prepared> {
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
    let pseudo = match &exp.data.pseudo_attributes {
        Some(path) => pseudo::PseudoLabels::load(path)?.clusters,
        None => BTreeMap::new(),
    };
    let labels = LabelTable::build(dataset.clips.iter().filter(|c| c.split == Split::Train), exp.data.labels, pseudo)?;
    let held_out = held_out(&dataset.clips, exp.data.holdout_fraction, exp.seed);
    Ok(Prepared { exp, dataset, labels, run, held_out })
}

impl Prepared {
    /// The clips the model is trained on (training clips not held out).
    pub fn train_clips(&self) -> Vec<&Clip> {
        self.dataset.clips.iter().filter(|c| c.split == Split::Train && !self.held_out.contains(&c.path)).collect()
    }

    /// The checkpoint `scoring.checkpoint` names (`selected`: what the
    /// training's selection rule chose).
    pub fn scoring_checkpoint(&self) -> Result<PathBuf> {
        let selector = match self.exp.scoring.checkpoint.as_str() {
            "selected" => self.exp.train.selection.checkpoint(),
            other => other,
        };
        self.run.select(selector)
    }

    /// The groups of a per-group experiment, in the report's order.
    pub fn groups(&self) -> Result<Vec<MachineGroup>> {
        let present: Vec<MachineGroup> = MachineGroup::ALL
            .into_iter()
            .filter(|g| self.dataset.clips.iter().any(|c| g.machines().any(|m| m.name == c.machine)))
            .collect();
        if self.exp.data.groups.is_empty() {
            return Ok(present);
        }
        for g in &self.exp.data.groups {
            if !present.contains(g) {
                bail!(
                    "data.groups lists {} but no machine of that group is under {}",
                    g.name(),
                    self.exp.data.root.display()
                );
            }
        }
        Ok(present.into_iter().filter(|g| self.exp.data.groups.contains(g)).collect())
    }

    /// What is trained and scored as one model: the run itself, or one
    /// sub-run per machine group (`groups/<group>/`) or per machine type
    /// (`machines/<machine>/`).
    pub fn units(&self) -> Result<Vec<Prepared>> {
        if self.exp.data.per_machine {
            return self
                .dataset
                .machines()
                .into_iter()
                .map(|m| {
                    let mut exp = self.exp.clone();
                    exp.data.per_machine = false;
                    exp.data.machines = vec![m.clone()];
                    prepare_in(exp, self.run.machine(&m))
                })
                .collect();
        }
        if !self.exp.data.per_group {
            return Ok(vec![self.clone()]);
        }
        self.groups()?
            .into_iter()
            .map(|g| {
                let mut exp = self.exp.clone();
                exp.data.per_group = false;
                exp.data.groups.clear();
                exp.data.group = Some(g);
                prepare_in(exp, self.run.group(g.name()))
            })
            .collect()
    }

    /// How far training is, over all units (one scan of the data and the
    /// run folders).
    pub fn progress(&self) -> Result<TrainProgress> {
        let mut p = TrainProgress { done: 0, asked: 0, started: false };
        for u in self.units()? {
            let steps = u.run.steps_done()?;
            p.started |= steps.is_some();
            p.done += steps.unwrap_or(0).min(u.exp.train.max_steps);
            p.asked += u.exp.train.max_steps;
        }
        Ok(p)
    }
}

/// Steps done and asked, summed over a run's units, and whether any unit
/// has started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainProgress {
    pub done: u64,
    pub asked: u64,
    pub started: bool,
}

/// Trains what is not trained yet: a fresh run, or a run stopped early
/// resumed (its saved configuration must match). Returns whether any
/// training happened.
pub fn train_or_resume(p: &Prepared, backend: BackendName, devices: &[usize], quiet: bool) -> Result<bool> {
    let TrainProgress { done, asked, started } = p.progress()?;
    if done >= asked && started {
        if !trained_as(p)? {
            bail!(
                "{} was trained with another configuration of {} (only train.max_steps, scoring, data.root, \
                 features.cache_dir, the description and a model's scoring-only settings may differ); remove it, pass --overwrite (systems) or use another output folder",
                p.run.root.display(),
                p.exp.name
            );
        }
        say(quiet, &format!("{} is already trained ({done} steps)", p.run.root.display()));
        return Ok(false);
    }
    if started {
        say(quiet, &format!("{} stopped at step {done} of {asked}; resuming", p.run.root.display()));
    }
    let opts = TrainOptions { resume: started, quiet, stop_after: None, devices };
    train(p, backend, &opts).with_context(|| {
        if started {
            format!(
                "cannot resume {} (use another name or output folder, or remove the run folder to start over)",
                p.run.root.display()
            )
        } else {
            format!("training {} failed", p.exp.name)
        }
    })?;
    Ok(true)
}

pub(crate) fn say(quiet: bool, msg: &str) {
    if !quiet {
        eprintln!("{msg}");
    }
}

/// Options of one training session.
pub struct TrainOptions<'a> {
    pub resume: bool,
    pub quiet: bool,
    pub stop_after: Option<u64>,
    /// Device indices of a data-parallel run (`--devices`; empty: the backend's one device).
    pub devices: &'a [usize],
}

/// The resolved config minus what may change between sessions of one run.
fn identity(exp: &Experiment) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(exp)?;
    v["train"]["max_steps"] = serde_json::Value::Null;
    // Prose: rewording an experiment's description changes nothing trained.
    v["description"] = serde_json::Value::Null;
    v["scoring"] = serde_json::Value::Null;
    for f in exp.model.info().scoring_fields() {
        v["model"][*f] = serde_json::Value::Null;
    }
    v["data"]["root"] = serde_json::Value::Null;
    // Where the feature cache lives does not change what is trained.
    v["features"]["cache_dir"] = serde_json::Value::Null;
    Ok(v)
}

/// Trains the experiment's model (every unit) on the chosen backend. A
/// fresh run that fails before its first checkpoint (an unreadable clip, a
/// bad setting) leaves no run folder behind, so the next attempt starts
/// clean instead of asking for `--resume`.
pub fn train(p: &Prepared, backend: BackendName, opts: &TrainOptions) -> Result<()> {
    let fresh = !p.run.root.exists();
    let result = train_units(p, backend, opts);
    if result.is_err() && fresh && !has_checkpoint(&p.run.root) {
        let _ = std::fs::remove_dir_all(&p.run.root);
    }
    result
}

/// Whether a run folder (or one of its groups) holds a saved checkpoint.
fn has_checkpoint(dir: &Path) -> bool {
    RunDir::new(dir).last().is_dir()
        || std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.path().is_dir() && has_checkpoint(&e.path()))
}

fn train_units(p: &Prepared, backend: BackendName, opts: &TrainOptions) -> Result<()> {
    let mut devices = backend::devices(backend, opts.devices)?.into_iter().map(|d| d.autodiff());
    let device = devices.next().context("no device")?;
    let replicas: Vec<Device> = devices.collect();
    let split = p.exp.data.split_into_units();
    if split {
        check_resume(p, opts.resume)?;
        atomic::write_json(&p.run.config(), &p.exp)?;
    }
    for u in p.units()? {
        if split && !opts.quiet {
            let unit = match u.exp.data.group {
                Some(g) => format!("group {}", g.name()),
                None => u.exp.data.machines.join(","),
            };
            eprintln!("{unit}: {} training clips", u.train_clips().len());
        }
        let resume = opts.resume && u.run.steps_done()?.is_some();
        train_unit(&u, backend, (&device, &replicas), &TrainOptions { resume, ..*opts })?;
    }
    Ok(())
}

/// Whether the run folder was trained with this experiment (its saved
/// configuration has the same identity).
fn trained_as(p: &Prepared) -> Result<bool> {
    let saved = Experiment::load_resolved(&p.run.config())
        .with_context(|| format!("cannot read the run's configuration {}", p.run.config().display()))?;
    Ok(identity(&saved)? == identity(&p.exp)?)
}

/// With `--resume`, the saved configuration must be the one asked for.
fn check_resume(p: &Prepared, resume: bool) -> Result<()> {
    std::fs::create_dir_all(&p.run.root).with_context(|| format!("cannot create {}", p.run.root.display()))?;
    if resume {
        if !trained_as(p).context("--resume")? {
            bail!(
                "--resume: the experiment differs from the one {} was started with (only train.max_steps, scoring, \
                 data.root, features.cache_dir and the description may change); use a new name to start another run",
                p.run.root.display()
            );
        }
    } else if p.run.steps_done()?.is_some() {
        bail!(
            "{} already holds a trained run; pass --resume to continue it or choose another name",
            p.run.root.display()
        );
    }
    Ok(())
}

/// Trains one unit on `devices` (the main device and the data-parallel replicas).
fn train_unit(p: &Prepared, backend: BackendName, devices: (&Device, &[Device]), opts: &TrainOptions) -> Result<()> {
    check_resume(p, opts.resume)?;
    if opts.resume {
        let saved_labels = LabelTable::load(&p.run.labels())?;
        if saved_labels != p.labels {
            bail!("--resume: the class table changed (different data?); start a new run");
        }
    }
    atomic::write_json(&p.run.config(), &p.exp)?;
    p.labels.save(&p.run.labels())?;
    manifest::start(p, backend, opts.devices, opts.resume)?;
    let (device, replicas) = devices;
    let params = p.exp.model.visit(TrainVisitor { p, device, replicas, opts })?;
    manifest::finish(p, params)
}

/// Parameter counts of a model (PyTorch convention, running statistics excluded).
#[derive(Debug, Clone, Copy)]
pub struct ParamCount {
    pub total: usize,
    pub trainable: usize,
}

struct TrainVisitor<'a> {
    p: &'a Prepared,
    device: &'a Device,
    replicas: &'a [Device],
    opts: &'a TrainOptions<'a>,
}

impl SpecVisitor for TrainVisitor<'_> {
    type Out = Result<ParamCount>;

    fn visit<S: ModelSpec>(self, spec: &S) -> Result<ParamCount> {
        let (p, device, opts) = (self.p, self.device, self.opts);
        let inputs = Inputs::new(spec.frontends(), &p.exp.features.cache_dir)?;
        let train_clips = p.train_clips();
        let all: Vec<&Clip> = p.dataset.clips.iter().collect();
        let validating = p.exp.train.selection.reads_test_labels();
        inputs.prefetch(if validating { &all } else { &train_clips }, opts.quiet)?;
        let labels = train_clips.iter().map(|c| p.labels.index_of(c)).collect::<Result<Vec<_>>>()?;
        let task = SpecTask {
            spec,
            inputs: &inputs,
            clips: train_clips,
            labels,
            specaugment: p.exp.features.specaugment.clone(),
        };
        let infer = device.clone().inner();
        let validator = |m: &S::Model| -> Result<f64> {
            let model = spec.for_inference(m.clone());
            let out = outputs(p, spec, &inputs, model, &all, &infer, true)?;
            test_label_validation(p, &all, &out, spec.scoring())?.ok_or_else(|| {
                anyhow::anyhow!("train.selection test_labels_dev_only: no machine has labelled test clips")
            })
        };
        let model = spec.init(&init_context(p, !opts.resume), device)?;
        let params = ParamCount {
            total: crate::nn::util::count_params(&model),
            trainable: crate::nn::util::count_trainable(&model),
        };
        if !opts.quiet {
            eprintln!("{}: {} parameters, {} trainable", p.exp.model.kind(), params.total, params.trainable);
        }
        let run_opts = RunOptions {
            seed: p.exp.seed,
            resume: opts.resume,
            quiet: opts.quiet,
            stop_after: opts.stop_after,
            validator: if validating { Some(&validator) } else { None },
            replicas: self.replicas,
        };
        train::fit(&task, model, &p.exp.train, &p.run, device, run_opts)?;
        Ok(params)
    }
}

fn init_context(p: &Prepared, pretrained: bool) -> InitContext<'_> {
    InitContext { loss: &p.exp.loss, classes: p.labels.len(), seed: p.exp.seed, pretrained }
}

/// Scoring outputs of clips with a trained checkpoint.
struct InferVisitor<'a> {
    p: &'a Prepared,
    checkpoint: &'a Path,
    clips: &'a [&'a Clip],
    device: &'a Device,
    quiet: bool,
}

impl SpecVisitor for InferVisitor<'_> {
    type Out = Result<Vec<Vec<f32>>>;

    fn visit<S: ModelSpec>(self, spec: &S) -> Result<Vec<Vec<f32>>> {
        let p = self.p;
        let inputs = Inputs::new(spec.frontends(), &p.exp.features.cache_dir)?;
        inputs.prefetch(self.clips, self.quiet)?;
        let model = checkpoint::load_model(spec.init(&init_context(p, false), self.device)?, self.checkpoint)?;
        let model = spec.for_inference(model);
        outputs(p, spec, &inputs, model, self.clips, self.device, self.quiet)
    }
}

/// The scoring outputs of `clips` (`out[i]` for `clips[i]`). A model
/// offering a choice of its own scores is readied for each machine in
/// turn ([`ModelSpec::fit_score`] on that machine's training clips) and
/// scores that machine's clips.
fn outputs<S: ModelSpec>(
    p: &Prepared,
    spec: &S,
    inputs: &Inputs,
    model: S::Model,
    clips: &[&Clip],
    device: &Device,
    quiet: bool,
) -> Result<Vec<Vec<f32>>> {
    let batch = p.exp.scoring.batch_size;
    let Some(score) = p.exp.model_score()? else {
        return inputs.infer(spec, &model, clips, batch, device, quiet);
    };
    let mut out = vec![Vec::new(); clips.len()];
    let machines: BTreeSet<&str> = clips.iter().map(|c| c.machine.as_str()).collect();
    for m in machines {
        let train: Vec<&Clip> = p.train_clips().into_iter().filter(|c| c.machine == m).collect();
        let ctx = BatchContext { labels: None, specaugment: None, seed: 0 };
        let bar = crate::util::Progress::new(train.len() as u64, &format!("fit {m}"), quiet);
        let mut batches = train.chunks(batch.max(1)).map(|chunk| {
            let domains = chunk.iter().map(|c| c.domain().unwrap_or(Domain::Source)).collect();
            bar.inc(chunk.len() as u64);
            Ok((inputs.batch(spec, chunk, &ctx, device)?, domains))
        });
        let fitted = spec
            .fit_score(model.clone(), score, &mut batches)
            .with_context(|| format!("fitting the {score} score of {m} on its training clips"))?;
        bar.finish();
        let ix: Vec<usize> = (0..clips.len()).filter(|&i| clips[i].machine == m).collect();
        let mine: Vec<&Clip> = ix.iter().map(|&i| clips[i]).collect();
        for (i, o) in ix.into_iter().zip(inputs.infer(spec, &fitted, &mine, batch, device, quiet)?) {
            out[i] = o;
        }
    }
    Ok(out)
}

/// One machine's scores: its test clips (indices into the scored clips)
/// with their anomaly scores, and training clips (indices) with scores of
/// a model that did not fit them (leave-one-out kNN distances, or held-out
/// clips), for the decision threshold and calibration.
pub struct MachineScores {
    pub machine: String,
    pub test: Vec<usize>,
    pub scores: Vec<f64>,
    pub train: Vec<usize>,
    pub train_scores: Vec<f64>,
}

/// The seed of one machine's back-end draws (SMOTE): the same in
/// validation and in final scoring.
pub fn backend_seed(seed: u64, machine: &str) -> u64 {
    seed ^ crate::util::rng::hash_str(machine)
}

/// Anomaly scores per machine from model outputs (`out[i]` belongs to
/// `clips[i]`): kNN fitted on each machine's training clips for
/// embeddings, the model's own score for likelihood models. `test` picks
/// the test clips to score.
pub fn machine_scores(
    p: &Prepared,
    clips: &[&Clip],
    out: &[Vec<f32>],
    scoring: Scoring,
    test: &dyn Fn(&Clip) -> bool,
) -> Result<Vec<MachineScores>> {
    let mut result = Vec::new();
    for m in p.dataset.machines() {
        let idx = |f: &dyn Fn(&Clip) -> bool| -> Vec<usize> {
            (0..clips.len()).filter(|&i| clips[i].machine == m && f(clips[i])).collect()
        };
        let tix = idx(&|c| c.split == Split::Test && test(c));
        if tix.is_empty() {
            continue;
        }
        let (scores, train, train_scores) = match scoring {
            Scoring::Embedding => {
                let pick = |ix: &[usize]| ix.iter().map(|&i| out[i].clone()).collect::<Vec<_>>();
                let src = idx(&|c| c.split == Split::Train && c.domain() == Some(Domain::Source));
                let tgt = idx(&|c| c.split == Split::Train && c.domain() == Some(Domain::Target));
                let scoring = &p.exp.scoring;
                let fitted = scoring
                    .backend
                    .fit(&scoring.knn, &pick(&src), &pick(&tgt), backend_seed(p.exp.seed, &m))
                    .with_context(|| format!("scoring {m}"))?;
                // `train_scores` lists the source clips, then the target clips.
                let test_scores = crate::scoring::backend::score(fitted.as_ref(), &pick(&tix))?;
                (test_scores, [src, tgt].concat(), fitted.train_scores())
            }
            Scoring::Likelihood => {
                // The held-out clips' scores when there are any: the model
                // has fitted the others.
                let pick = |ix: &[usize]| ix.iter().map(|&i| out[i][0] as f64).collect::<Vec<_>>();
                let held = idx(&|c| p.held_out.contains(&c.path));
                let train = if held.is_empty() { idx(&|c| c.split == Split::Train) } else { held };
                (pick(&tix), train.clone(), pick(&train))
            }
        };
        result.push(MachineScores { machine: m, test: tix, scores, train, train_scores });
    }
    Ok(result)
}

/// The official score on the labelled test clips (the dev-only
/// `test_labels_dev_only` selection rule).
fn test_label_validation(p: &Prepared, clips: &[&Clip], out: &[Vec<f32>], scoring: Scoring) -> Result<Option<f64>> {
    let labelled = |c: &Clip| c.label().is_some();
    let mut test_clips = Vec::new();
    let mut test_scores = Vec::new();
    for ms in machine_scores(p, clips, out, scoring, &labelled)? {
        test_clips.extend(ms.test.iter().map(|&i| clips[i]));
        test_scores.extend(ms.scores);
    }
    validation_hmean(&test_clips, &test_scores)
}

/// Official hmean of in-memory scores over the machines with labelled test
/// clips. A machine whose metrics cannot be computed (one class only, say)
/// is left out with a warning naming it.
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
        match metrics::official::machine_metrics(&input) {
            Ok(r) => {
                reports.insert(m.to_string(), r);
            }
            Err(e) => eprintln!("warning: validation leaves out {m}: {e:#}"),
        }
    }
    if reports.is_empty() {
        return Ok(None);
    }
    Ok(Some(metrics::official::official_score(&reports)))
}

/// Result of scoring: where the CSVs went and, when ground truth is
/// available, the evaluation.
pub struct ScoreOutput {
    pub dir: PathBuf,
    pub report: Option<Report>,
}

/// Scores every machine's test clips with the trained checkpoint(s) and
/// writes the official submission CSVs to `out` (default `<run>/scores`).
pub fn score(p: &Prepared, backend: BackendName, out: Option<&Path>, quiet: bool) -> Result<ScoreOutput> {
    let device = backend::device(backend)?;
    let dir = out.map(Path::to_path_buf).unwrap_or_else(|| p.run.scores());
    for u in p.units()? {
        score_unit(&u, &device, &dir, quiet)?;
    }
    let report = evaluate_if_possible(p, &dir)?;
    if let Some(r) = &report {
        atomic::write_json(&dir.join("evaluation.json"), r)?;
    }
    Ok(ScoreOutput { dir, report })
}

fn score_unit(p: &Prepared, device: &Device, dir: &Path, quiet: bool) -> Result<()> {
    let ckpt = p.scoring_checkpoint()?;
    let all: Vec<&Clip> = p.dataset.clips.iter().collect();
    let out = p.exp.model.visit(InferVisitor { p, checkpoint: &ckpt, clips: &all, device, quiet })?;
    let scoring = p.exp.model.info().scoring();
    for ms in machine_scores(p, &all, &out, scoring, &|_| true)? {
        let m = &ms.machine;
        let thr = decision_threshold(&p.exp.scoring.decision, &ms.train_scores, m, quiet)?;
        let names: Vec<String> = ms.test.iter().map(|&i| all[i].file_name()).collect();
        let rows: Vec<(String, f64)> = names.iter().cloned().zip(ms.scores.iter().copied()).collect();
        let dec: Vec<(String, u8)> = names.into_iter().zip(metrics::decide(&ms.scores, thr)).collect();
        submission::write_submission(dir, m, &rows, &dec)?;
        let train: Vec<(String, f64)> =
            ms.train.iter().map(|&i| all[i].file_name()).zip(ms.train_scores.iter().copied()).collect();
        crate::fusion::write_train_scores(dir, m, &train)?;
    }
    Ok(())
}

/// The decision threshold from the training scores. A degenerate score
/// distribution (all equal, say) has no gamma fit; the decisions then use
/// the 90th percentile instead, with a warning.
fn decision_threshold(rule: &DecisionRule, train_scores: &[f64], machine: &str, quiet: bool) -> Result<f64> {
    match metrics::threshold(rule, train_scores) {
        Ok(t) => Ok(t),
        Err(e) if matches!(rule, DecisionRule::Gamma { .. }) => {
            if !quiet {
                eprintln!("warning: {machine}: {e:#}; using the 90th percentile of the training scores");
            }
            metrics::threshold(&DecisionRule::Percentile { percent: 90.0 }, train_scores)
        }
        Err(e) => Err(e.context(format!("decision threshold of {machine}"))),
    }
}

/// Evaluates a scores folder against the data root's ground truth when the
/// test labels are known (dev names, or an eval ground-truth folder). A
/// ground truth that exists but cannot be read is an error.
pub fn evaluate_if_possible(p: &Prepared, dir: &Path) -> Result<Option<Report>> {
    evaluate_in(&p.exp.data.root, &p.exp.data.sets, dir)
}

/// [`evaluate_if_possible`] for a data root and its sets.
pub fn evaluate_in(root: &Path, sets: &[DataSet], dir: &Path) -> Result<Option<Report>> {
    let Some(truth) = GroundTruth::labelled(root, sets)? else {
        return Ok(None);
    };
    let r = metrics::evaluate_dir(&truth, dir, &metrics::Decisions::IfPresent(dir.to_path_buf()))
        .with_context(|| format!("evaluating the scores in {}", dir.display()))?;
    Ok(Some(r))
}

/// The run manifest (`manifest.json`): what was trained, how the scoring
/// weights are chosen, and one entry per training session.
mod manifest {
    use super::*;
    use serde_json::{Value, json};

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    fn git_revision() -> Option<String> {
        let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn read(p: &Prepared) -> Result<Value> {
        let path = p.run.manifest();
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
    }

    /// Records a session's start (a new manifest, or a session appended on resume).
    pub fn start(p: &Prepared, backend: BackendName, devices: &[usize], resume: bool) -> Result<()> {
        let mut m = if resume && p.run.manifest().is_file() {
            read(p)?
        } else {
            let selection = &p.exp.train.selection;
            json!({
                "experiment": p.exp.name,
                "model": p.exp.model.kind(),
                "scoring": p.exp.model.info().scoring(),
                "selection": selection,
                "selection_reads_test_labels": selection.reads_test_labels(),
                "seed": p.exp.seed,
                "asd_version": env!("CARGO_PKG_VERSION"),
                "burn_version": env!("ASD_BURN_VERSION"),
                "classes": p.labels.len(),
                "train_clips": p.train_clips().len(),
                "started_unix_s": now(),
                "finished_unix_s": null,
                "sessions": [],
            })
        };
        let session = json!({
            "started_unix_s": now(),
            "backend": backend.as_str(),
            "devices": devices,
            "git_revision": git_revision(),
            "command_line": std::env::args().collect::<Vec<_>>(),
        });
        m["sessions"].as_array_mut().context("manifest.json: sessions is not a list")?.push(session);
        atomic::write_json(&p.run.manifest(), &m)
    }

    /// Records the end of a session (and of training, once all steps are done).
    pub fn finish(p: &Prepared, params: ParamCount) -> Result<()> {
        let mut m = read(p)?;
        m["parameters"] = json!(params.total);
        m["trainable_parameters"] = json!(params.trainable);
        let steps = p.run.steps_done()?.unwrap_or(0);
        if let Some(last) = m["sessions"].as_array_mut().and_then(|s| s.last_mut()) {
            last["ended_unix_s"] = json!(now());
            last["steps_done"] = json!(steps);
        }
        if steps >= p.exp.train.max_steps {
            m["finished_unix_s"] = json!(now());
            m["checkpoint_scored"] = json!(p.exp.train.selection.checkpoint());
        }
        atomic::write_json(&p.run.manifest(), &m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::naming::ClipName;

    fn clip(machine: &str, domain: &str, i: usize) -> Clip {
        let file = format!("section_00_{domain}_train_normal_{i:04}_a_1.wav");
        Clip {
            path: PathBuf::from(format!("/d/{machine}/train/{file}")),
            machine: machine.into(),
            set: DataSet::Dev,
            split: Split::Train,
            name: ClipName::parse(&file).unwrap(),
        }
    }

    #[test]
    fn a_run_identity_ignores_what_does_not_change_training() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/demo/dual_branch_cnn.json");
        let load = |sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            identity(&Experiment::load(&file, &sets).unwrap()).unwrap()
        };
        let base = load(&[]);
        for same in [
            "description=\"reworded\"",
            "train.max_steps=7",
            "features.cache_dir=\"elsewhere\"",
            "data.root=\"other\"",
            "scoring.backend={\"kind\": \"knn\"}",
        ] {
            assert_eq!(load(&[same]), base, "{same} should not change the identity");
        }
        for differs in ["model.attention=false", "train.batch_size=3", "seed=9"] {
            assert_ne!(load(&[differs]), base, "{differs} should change the identity");
        }
        // A model's scoring-only field (the official AE's ridge) is ignored; its others count.
        let ae = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/demo/official_ae.json");
        let load = |set: &str| identity(&Experiment::load(&ae, &[set.to_string()]).unwrap()).unwrap();
        assert_eq!(load("model.ridge=0.01"), load("scoring.model_score=\"mse\""));
        assert_ne!(load("model.ridge=0.01"), load("model.hidden=64"));
    }

    #[test]
    fn held_out_clips_are_a_seeded_share_of_each_machine_and_domain() {
        let mut clips: Vec<Clip> = (0..20).map(|i| clip("fan", "source", i)).collect();
        clips.extend((0..4).map(|i| clip("fan", "target", i)));
        clips.push(clip("valve", "target", 0));
        let h = held_out(&clips, 0.1, 3);
        // round(2.0) source clips, round(0.4) = 0 target clips; never a cell's only clip.
        assert_eq!(h.len(), 2);
        assert!(h.iter().all(|p| p.to_string_lossy().contains("source")));
        assert_eq!(h, held_out(&clips, 0.1, 3));
        assert_ne!(h, held_out(&clips, 0.1, 4));
        assert_eq!(held_out(&clips, 0.45, 3).len(), 9 + 2);
        assert!(held_out(&clips, 0.0, 3).is_empty());
    }
}
