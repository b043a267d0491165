//! Experiments as files: what is trained, on which data, how it is scored.
//!
//! ```json
//! {
//!   "name": "dual_branch_cnn",
//!   "seed": 0,
//!   "data": {"root": "data/dcase2024t2", "sets": ["dev"], "machines": []},
//!   "features": {"cache_dir": "checkpoints/.features"},
//!   "model": {"kind": "dual_branch_cnn", "seconds": 10.0},
//!   "loss": {"arcface": {"scale": 30.0, "margin": 0.5}, "weights": [1.0, 1.0, 1.0]},
//!   "train": {"batch_size": 64, "grad_accum": 8, "max_steps": 1000,
//!             "checkpoint_every": 100, "selection": {"rule": "average_last", "k": 3}, ...},
//!   "scoring": {"checkpoint": "selected", "knn": {"k": 1}}
//! }
//! ```
//! Files may `extends` a parent and `--set path=value` overrides fields
//! ([`resolve`]). Parsing is strict: unknown fields are errors naming the
//! field and the file. The resolved experiment is saved with every run and
//! is what restores the model.

pub mod resolve;

use crate::data::labels::LabelScheme;
use crate::data::machines::{DataSet, MachineGroup};
use crate::features::specaugment::SpecAugment;
use crate::metrics::threshold::DecisionRule;
pub use crate::models::ModelConfig;
use crate::nn::LossConfig;
use crate::scoring::{BackendConfig, KnnConfig};
use crate::train::TrainConfig;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Run name: outputs go to `checkpoints/<name>/`.
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default)]
    pub seed: u64,
    pub data: DataConfig,
    #[serde(default)]
    pub features: FeatureSettings,
    pub model: ModelConfig,
    #[serde(default)]
    pub loss: LossConfig,
    pub train: TrainConfig,
    #[serde(default)]
    pub scoring: ScoringConfig,
}

/// Which clips a run uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Data root in the DCASE layout (`dev_data/raw/...`, `eval_data/raw/...`).
    pub root: PathBuf,
    /// Sets to train on and score.
    #[serde(default = "dev_only")]
    pub sets: Vec<DataSet>,
    /// Machine types (empty = every type found).
    #[serde(default)]
    pub machines: Vec<String>,
    /// Restrict to one machine group.
    #[serde(default)]
    pub group: Option<MachineGroup>,
    /// Train one model per machine group present (NF-CDEE, report §2.1),
    /// each in its own sub-run `groups/<group>/` of the run folder.
    #[serde(default)]
    pub per_group: bool,
    /// With `per_group`: the groups to train (empty = every group present).
    #[serde(default)]
    pub groups: Vec<MachineGroup>,
    /// Train one model per machine type present (the official AE
    /// baseline), each in its own sub-run `machines/<machine>/`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub per_machine: bool,
    /// Auxiliary-task classes.
    #[serde(default)]
    pub labels: LabelScheme,
    /// Pseudo-attributes for concealed-attribute machines: a file written by
    /// `asd pseudo-labels` (k-means clusters of a first model's embeddings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pseudo_attributes: Option<PathBuf>,
    /// Fraction of each machine's training clips (per domain, rounded) held
    /// out of training. A likelihood-scored model (NF-CDEE) fits its training
    /// clips far more closely than unseen normals, so their scores give
    /// neither a calibration nor a decision threshold; the held-out clips'
    /// scores do. Embedding models keep them in their kNN bank.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub holdout_fraction: f64,
}

impl DataConfig {
    /// Whether the run trains several models, one per group or per machine type.
    pub fn split_into_units(&self) -> bool {
        self.per_group || self.per_machine
    }
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn dev_only() -> Vec<DataSet> {
    vec![DataSet::Dev]
}

/// Feature computation settings shared by all models (each model fixes its
/// own front-end; see `crate::features::frontend`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSettings {
    /// Where cached features go (keyed by front-end configuration).
    #[serde(default = "cache_dir")]
    pub cache_dir: PathBuf,
    /// SpecAugment on training inputs (pre-trained models; report §2.3).
    #[serde(default)]
    pub specaugment: Option<SpecAugment>,
}

fn cache_dir() -> PathBuf {
    PathBuf::from("checkpoints/.features")
}

impl Default for FeatureSettings {
    fn default() -> Self {
        FeatureSettings { cache_dir: cache_dir(), specaugment: None }
    }
}

/// How test clips are scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringConfig {
    /// Checkpoint to score with: `selected` (what `train.selection` chose),
    /// `last`, `averaged`, `best` (test-label selection only) or `step-N`.
    #[serde(default = "selected")]
    pub checkpoint: String,
    /// kNN settings (the default back-end, and the kNN inside `kmeans_knn`).
    #[serde(default)]
    pub knn: KnnConfig,
    /// The back-end that turns embeddings into anomaly scores (default: kNN).
    #[serde(default)]
    pub backend: BackendConfig,
    /// Decision threshold from the training clips' scores.
    #[serde(default)]
    pub decision: DecisionRule,
    /// Clips per forward pass when embedding.
    #[serde(default = "embed_batch")]
    pub batch_size: usize,
    /// Which of its own scores a model that offers several reports (the
    /// official AE: `selective_mahalanobis`, its default, or `mse`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_score: Option<String>,
}

fn selected() -> String {
    "selected".into()
}
fn embed_batch() -> usize {
    16
}

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            checkpoint: selected(),
            knn: KnnConfig::default(),
            backend: BackendConfig::default(),
            decision: DecisionRule::default(),
            batch_size: embed_batch(),
            model_score: None,
        }
    }
}

impl Experiment {
    /// Loads an experiment file with its `extends` chain and overrides.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Experiment> {
        let resolved = resolve::load(path, overrides)?;
        let exp: Experiment = resolved.parse()?;
        exp.validate().with_context(|| format!("invalid experiment {}", path.display()))?;
        Ok(exp)
    }

    /// Loads a run's saved (resolved) configuration.
    pub fn load_resolved(path: &Path) -> Result<Experiment> {
        Experiment::load(path, &[])
    }

    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name.starts_with('.') {
            bail!("name '{}' must be a plain folder name", self.name);
        }
        if self.data.sets.is_empty() {
            bail!("data.sets is empty");
        }
        if !(0.0..0.5).contains(&self.data.holdout_fraction) {
            bail!("data.holdout_fraction must be in [0, 0.5), not {}", self.data.holdout_fraction);
        }
        for m in &self.data.machines {
            crate::data::machines::lookup(m).context("in data.machines")?;
        }
        self.train.validate()?;
        self.scoring.backend.validate().context("scoring.backend")?;
        if self.scoring.batch_size == 0 {
            bail!("scoring.batch_size must be at least 1");
        }
        if self.train.selection.reads_test_labels() && self.data.sets.contains(&DataSet::Eval) {
            bail!(
                "train.selection \"test_labels_dev_only\" reads test labels to choose the checkpoint; it is refused \
                 on the evaluation split (data.sets contains \"eval\")"
            );
        }
        if !self.data.groups.is_empty() && !self.data.per_group {
            bail!("data.groups applies with data.per_group = true");
        }
        if self.data.per_group && self.data.group.is_some() {
            bail!("data.group and data.per_group exclude each other");
        }
        if self.data.per_group && self.data.per_machine {
            bail!("data.per_group and data.per_machine exclude each other");
        }
        let info = self.model.info();
        info.validate()?;
        self.model_score()?;
        let terms = info.loss_terms();
        if terms > 0 {
            self.loss.validate(terms)?;
        } else if !self.loss.weights.is_empty() {
            bail!("loss.weights: model kind {} has no classification loss to weight", self.model.kind());
        }
        Ok(())
    }

    /// The model's own score to report (`scoring.model_score`, or the
    /// model's default); `None` for a model that offers no choice.
    pub fn model_score(&self) -> Result<Option<&'static str>> {
        let offered = self.model.info().model_scores();
        match (&self.scoring.model_score, offered.first()) {
            (None, first) => Ok(first.copied()),
            (Some(s), None) => {
                bail!("scoring.model_score \"{s}\": model kind {} offers one score only", self.model.kind())
            }
            (Some(s), Some(_)) => match offered.iter().find(|o| **o == s.as_str()) {
                Some(o) => Ok(Some(*o)),
                None => bail!("scoring.model_score \"{s}\" is not one of {}", offered.join(", ")),
            },
        }
    }

    /// The run directory of this experiment under `checkpoints`.
    pub fn run_dir(&self, checkpoints: &Path) -> PathBuf {
        checkpoints.join(&self.name)
    }
}
