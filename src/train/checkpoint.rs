//! Run directories and checkpoints (`checkpoints/<experiment>/`).
//!
//! A checkpoint is a folder holding `model.bpk` and `optim.bpk` (burnpack:
//! full precision, raw bytes, parameter ids preserved, so optimizer state
//! re-attaches on resume) and `state.json`. Folders are written under a
//! temporary name and renamed into place, so a crash never leaves a
//! half-written checkpoint where a complete one is expected; replacing a
//! folder takes two renames, and a crash between them is undone by
//! [`recover`] on the next start.

use crate::nn::util::{ParamValue, assign_params};
use crate::util::atomic;
use anyhow::{Context, Result, bail};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::ModuleOptimizer;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Progress of a training run, saved with every checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: u64,
    /// Best checkpoints so far: (step, validation metric; higher is better).
    pub top: Vec<(u64, f64)>,
    /// Seconds of training so far (over all resumed sessions).
    pub elapsed_s: f64,
}

/// Paths of one experiment's run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> RunDir {
        RunDir { root: root.into() }
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }
    pub fn labels(&self) -> PathBuf {
        self.root.join("labels.json")
    }
    pub fn manifest(&self) -> PathBuf {
        self.root.join("manifest.json")
    }
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    pub fn last(&self) -> PathBuf {
        self.root.join("last")
    }
    pub fn periodic(&self, step: u64) -> PathBuf {
        self.root.join(format!("step-{step:06}"))
    }
    pub fn top(&self, step: u64) -> PathBuf {
        self.root.join("top").join(format!("step-{step:06}"))
    }
    pub fn averaged(&self) -> PathBuf {
        self.root.join("averaged")
    }
    pub fn scores(&self) -> PathBuf {
        self.root.join("scores")
    }
    /// The sub-run of one machine group (models trained per group).
    pub fn group(&self, group: &str) -> RunDir {
        RunDir::new(self.root.join("groups").join(group))
    }
    /// The sub-run of one machine type (models trained per machine).
    pub fn machine(&self, machine: &str) -> RunDir {
        RunDir::new(self.root.join("machines").join(machine))
    }

    /// Steps done by the run's `last` checkpoint (None: not started).
    pub fn steps_done(&self) -> Result<Option<u64>> {
        recover(&self.last())?;
        if !self.last().join("state.json").is_file() {
            return Ok(None);
        }
        Ok(Some(read_state(&self.last())?.step))
    }

    /// Resolves a checkpoint selector: `last`, `best`, `averaged` or `step-N`.
    pub fn select(&self, which: &str) -> Result<PathBuf> {
        recover(&self.last())?;
        let p = match which {
            "last" => self.last(),
            "averaged" => self.averaged(),
            "best" => {
                let state = read_state(&self.last())?;
                let (step, _) = state
                    .top
                    .first()
                    .with_context(|| format!("{}: no validated checkpoint yet", self.root.display()))?;
                self.top(*step)
            }
            s if s.starts_with("step-") => {
                let n: u64 = s[5..].parse().with_context(|| format!("bad checkpoint selector '{s}'"))?;
                let p = self.periodic(n);
                if p.exists() { p } else { self.top(n) }
            }
            other => bail!("unknown checkpoint '{other}' (use last, best, averaged or step-N)"),
        };
        if !p.is_dir() {
            bail!("checkpoint {} does not exist (train first)", p.display());
        }
        if !p.join("model.bpk").is_file() {
            bail!("checkpoint {}: model.bpk does not exist (an incomplete copy?)", p.display());
        }
        Ok(p)
    }
}

pub fn read_state(dir: &Path) -> Result<TrainState> {
    let p = dir.join("state.json");
    let text = std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a valid training state", p.display()))
}

/// The temporary (`.tmp`) and replaced (`.old`) siblings of a checkpoint
/// folder; fixed names, so that a later process can find them.
fn siblings(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let parent = dir.parent().context("checkpoint folder has no parent")?;
    let name = dir.file_name().context("checkpoint folder has no name")?.to_string_lossy();
    Ok((parent.join(format!(".{name}.tmp")), parent.join(format!(".{name}.old"))))
}

/// Repairs a checkpoint folder left between the two renames of [`save`]:
/// when `dir` is missing, the complete new copy (`.tmp`, whose `state.json`
/// is written last) or else the previous one (`.old`) takes its place.
/// Returns whether anything was repaired.
pub fn recover(dir: &Path) -> Result<bool> {
    if dir.exists() {
        return Ok(false);
    }
    let (tmp, old) = siblings(dir)?;
    for candidate in [tmp, old] {
        if candidate.join("state.json").is_file() && candidate.join("model.bpk").is_file() {
            std::fs::rename(&candidate, dir)
                .with_context(|| format!("cannot restore {} from {}", dir.display(), candidate.display()))?;
            eprintln!(
                "note: restored {} from {} (an earlier run stopped while saving)",
                dir.display(),
                candidate.display()
            );
            return Ok(true);
        }
    }
    Ok(false)
}

/// Writes a checkpoint folder atomically (temp folder, then rename).
pub fn save<M: Module>(dir: &Path, model: &M, optim: Option<&ModuleOptimizer>, state: &TrainState) -> Result<()> {
    let parent = dir.parent().context("checkpoint folder has no parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    recover(dir)?;
    let (tmp, old) = siblings(dir)?;
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let result = (|| -> Result<()> {
        // valid() syncs batch-norm running statistics before they are read.
        let _ = model.valid();
        model.clone().save_file(tmp.join("model.bpk")).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        if let Some(o) = optim {
            o.save(tmp.join("optim.bpk")).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        atomic::write_json(&tmp.join("state.json"), state)?;
        let _ = std::fs::remove_dir_all(&old);
        if dir.exists() {
            std::fs::rename(dir, &old)?;
        }
        std::fs::rename(&tmp, dir)?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.with_context(|| format!("cannot write checkpoint {}", dir.display()))
}

/// Loads a checkpoint's weights into `model` (built from the same config).
/// Missing, unexpected or mis-shaped tensors are errors.
pub fn load_model<M: Module>(model: M, dir: &Path) -> Result<M> {
    let p = dir.join("model.bpk");
    let bytes = read_burnpack(&p)?;
    let expected = tensors(&model).len();
    burn::store::ModuleRecord::from_bytes(bytes)
        .and_then(|r| model.try_load_record(r))
        .map_err(|e| anyhow::anyhow!("cannot load {}: {}", p.display(), explain(&e, Some(expected))))
}

/// A checkpoint file's bytes, with a clear error for a file that is
/// missing, cut short or not a burnpack file at all, before burn-store
/// parses it. The whole file is read: burn-store's file reader leaves
/// tensors that read their bytes from the file when first used, and a
/// checkpoint folder is replaced while its model lives on (the next `last`
/// of a resumed run, a frozen encoder's weights).
fn read_burnpack(p: &Path) -> Result<burn::tensor::Bytes> {
    let bytes = std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot load {}: {}", p.display(), describe_io(&e)))?;
    if bytes.len() < BURNPACK_MAGIC.len() {
        bail!("cannot load {}: the file is truncated", p.display());
    }
    if bytes[..BURNPACK_MAGIC.len()] != BURNPACK_MAGIC[..] {
        bail!("cannot load {}: not a burnpack checkpoint (written by `asd train`)", p.display());
    }
    Ok(burn::tensor::Bytes::from_bytes_vec(bytes))
}

/// The first bytes of every burnpack file.
const BURNPACK_MAGIC: &[u8; 4] = b"NRUB";

fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "the file is truncated".into(),
        std::io::ErrorKind::NotFound => "the file does not exist".into(),
        _ => e.to_string(),
    }
}

/// One line for burn-store's record errors, whose validation messages list
/// every missing or mis-shaped tensor.
fn explain(e: &burn::store::RecordError, expected: Option<usize>) -> String {
    use burn::store::RecordError;
    let msg = match e {
        // The file reader's and the in-memory reader's words for a short file.
        RecordError::Io(m)
            if m.contains("fill whole buffer") || m.contains("UnexpectedEof") || m.contains("insufficient bytes") =>
        {
            return "the file is truncated or corrupt".into();
        }
        RecordError::Io(m) | RecordError::Validation(m) if m.contains("truncated") => {
            return format!("the file is truncated ({})", m.trim_start_matches("Validation error: "));
        }
        RecordError::Io(m) => return format!("unreadable checkpoint ({m})"),
        RecordError::Validation(m) => m,
    };
    let items: Vec<&str> = msg.split('"').skip(1).step_by(2).collect();
    let first = items.iter().take(3).copied().collect::<Vec<_>>().join("; ");
    if msg.starts_with("Missing tensors") {
        return match expected {
            Some(n) if items.len() >= n => {
                format!("it holds none of this model's {n} tensors: a checkpoint of another model?")
            }
            Some(n) => format!(
                "{} of this model's {n} tensors are missing (e.g. {first}): saved with another configuration?",
                items.len()
            ),
            None => format!("{} tensors are missing (e.g. {first})", items.len()),
        };
    }
    if msg.starts_with("Apply errors") && !items.is_empty() {
        return format!("{} tensors do not fit this model ({first}): saved with another configuration?", items.len());
    }
    msg.chars().take(300).collect()
}

/// Loads the optimizer state saved next to a model.
pub fn load_optim(optim: ModuleOptimizer, dir: &Path) -> Result<ModuleOptimizer> {
    let p = dir.join("optim.bpk");
    optim
        .from_bytes(read_burnpack(&p)?)
        .map_err(|e| anyhow::anyhow!("cannot load {}: {}", p.display(), explain(&e, None)))
}

/// Float tensors of a module by path (parameters and running statistics).
#[derive(Default)]
struct Collect {
    path: Vec<String>,
    out: BTreeMap<String, (Vec<usize>, Vec<f64>)>,
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        let t = p.val();
        let shape = t.dims().to_vec();
        let v = t.into_data().try_into_vec_as::<f64>().expect("float tensor");
        self.out.insert(self.path.join("."), (shape, v));
    }
}

/// Named float tensors of a module (for tests and averaging).
pub fn tensors<M: Module>(model: &M) -> BTreeMap<String, (Vec<usize>, Vec<f64>)> {
    let _ = model.valid();
    let mut c = Collect::default();
    model.visit(&mut c);
    c.out
}

/// Element-wise average of the parameters (and batch-norm statistics) of
/// several checkpoints of one architecture (report §3.1: top-3 averaging).
pub fn average<M: Module>(template: M, dirs: &[PathBuf]) -> Result<M> {
    if dirs.is_empty() {
        bail!("model averaging needs at least one checkpoint");
    }
    let mut sum: BTreeMap<String, (Vec<usize>, Vec<f64>)> = BTreeMap::new();
    for d in dirs {
        let m = load_model(template.clone(), d)?;
        for (k, (shape, v)) in tensors(&m) {
            match sum.get_mut(&k) {
                Some((s, acc)) => {
                    if *s != shape {
                        bail!("{}: tensor {k} has shape {shape:?}, expected {s:?}", d.display());
                    }
                    acc.iter_mut().zip(&v).for_each(|(a, b)| *a += b);
                }
                None => {
                    sum.insert(k, (shape, v));
                }
            }
        }
    }
    let n = dirs.len() as f64;
    for (_, v) in sum.values_mut() {
        v.iter_mut().for_each(|a| *a /= n);
    }
    let values = sum
        .into_iter()
        .map(|(k, (shape, v))| {
            (k, ParamValue { shape, data: v.into_iter().map(|x| x as f32).collect(), transpose: false })
        })
        .collect();
    let (out, unmatched) = assign_params(template, values);
    if let Some(k) = unmatched.first() {
        bail!("averaging left tensor {k} unmatched");
    }
    Ok(out)
}
