//! The official DCASE 2023/2024 Task 2 autoencoder baseline as a model:
//! a port of nttcslab/dcase2023_task2_baseline_ae v3.3.0
//! (`networks/dcase2023t2_ae/network.py` `AENet`, its scoring in
//! `networks/dcase2023t2_ae/dcase2023t2_ae.py` and
//! `networks/criterion/mahala.py`, its features in
//! `datasets/loader_common.py` `file_to_vectors`).
//!
//! Input: the clip's log-mel (1024/512, 128 mels, floored at the f64
//! epsilon: the `official_ae` preset) as vectors of `frames` consecutive
//! frames (5 × 128 = 640), one per frame position. Network: five
//! Linear → BatchNorm(eps 1e-3, momentum 0.01) → ReLU blocks down to the
//! 8-d code, four back up to 128, a Linear back to 640; trained on the
//! mean squared reconstruction error of the vectors.
//!
//! Scores (`scoring.model_score`):
//! - `mse`: the clip's mean squared error;
//! - `selective_mahalanobis` (default): with δ the error vectors of a clip,
//!   δ̄ their mean and Σ_s, Σ_t the covariances of the training clips'
//!   error vectors of each domain (fitted on the machine's training clips
//!   before it is scored), `min(δ̄ᵀ Σ_s⁻¹ δ̄, δ̄ᵀ Σ_t⁻¹ δ̄)`. The official
//!   code computes the mean of the N × N matrix `δ Σ⁻¹ δᵀ`, which is the
//!   same number.
//!
//! Deliberate differences from the official code:
//! - Covariance: the official code sums each 256-vector training batch's
//!   scatter around *that batch's* mean, so its covariance depends on the
//!   shuffle and underestimates (the target domain's strongly: a batch holds
//!   two or three target vectors). Here it is the sample covariance of all of
//!   a domain's training error vectors (divided by n − 1, as the official
//!   code divides), which is what the official code computes when one batch
//!   holds every vector; the parity test checks exactly that. With the
//!   official code's own trained models it scored 92.30 % where the official
//!   code scores 90.90 % (BENCHMARKS.md).
//! - Training batches: `batch_size` clips × `vectors_per_clip` vectors drawn
//!   without replacement from each clip (64 × 4 in the experiment files),
//!   instead of 256 vectors shuffled over all clips; no 10 % of vectors held
//!   out for a validation loss nobody reads (held-out clips are
//!   `data.holdout_fraction`).
//! - BatchNorm's running variance is burn's (biased) rather than PyTorch's
//!   unbiased estimate: a factor 255/256 at batch 256.

use super::spec::{BatchContext, InitContext, ModelInfo, ModelSpec, Scoring};
use super::state_dict::{KeyMapEntry, StateDict, assign_all, key_problems, mapped_values, param_shapes, report};
use crate::data::naming::Domain;
use crate::features::Frames;
use crate::features::frontend::FrontEnd;
use crate::features::mel::LogmelPreset;
use crate::nn::util::{seeded_init, to_vec};
use crate::scoring::linalg::{Cholesky, Square, flat_mean, flat_moments};
use crate::train::StepOutput;
use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// The scores the model offers, the default first.
pub const SCORES: [&str; 2] = ["selective_mahalanobis", "mse"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfficialAeConfig {
    /// Consecutive log-mel frames per input vector (baseline.yaml `frames`).
    #[serde(default = "five")]
    pub frames: usize,
    /// Width of the hidden layers.
    #[serde(default = "width")]
    pub hidden: usize,
    /// Width of the code.
    #[serde(default = "code")]
    pub bottleneck: usize,
    /// Vectors drawn from each clip of a training batch (64 clips × 4
    /// vectors = the official 256). Few vectors from many clips matter: 16
    /// clips × 16 vectors trained far worse (BENCHMARKS.md).
    #[serde(default = "four")]
    pub vectors_per_clip: usize,
    /// Added to each covariance's diagonal, relative to its mean variance
    /// (`ridge · tr(Σ)/p`). The official code adds nothing; a domain with
    /// fewer error vectors than dimensions (very short or very few target
    /// clips) needs it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ridge: f64,
}

fn five() -> usize {
    5
}
fn width() -> usize {
    128
}
fn code() -> usize {
    8
}
fn four() -> usize {
    4
}
fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl Default for OfficialAeConfig {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("defaults")
    }
}

/// Mel bins of the front-end.
pub const MELS: usize = 128;

impl OfficialAeConfig {
    /// Length of one input vector.
    pub fn dim(&self) -> usize {
        MELS * self.frames
    }

    pub fn init(&self, seed: u64, device: &Device) -> OfficialAe {
        seeded_init(device, seed, || self.build(device))
    }

    fn build(&self, device: &Device) -> OfficialAe {
        let block = |i: usize, o: usize| DenseBlock {
            linear: LinearConfig::new(i, o).init(device),
            norm: BatchNormConfig::new(o).with_epsilon(1e-3).with_momentum(0.01).init(device),
        };
        let (d, h, c) = (self.dim(), self.hidden, self.bottleneck);
        OfficialAe {
            encoder: vec![block(d, h), block(h, h), block(h, h), block(h, h), block(h, c)],
            decoder: vec![block(c, h), block(h, h), block(h, h), block(h, h)],
            output: LinearConfig::new(h, d).init(device),
            score: ScoreState::Mse,
        }
    }
}

/// Linear → BatchNorm → ReLU.
#[derive(Module, Debug)]
pub struct DenseBlock {
    pub linear: Linear,
    pub norm: BatchNorm,
}

impl DenseBlock {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        relu(self.norm.forward(self.linear.forward(x)))
    }
}

/// What the model scores with (set by [`ModelSpec::fit_score`]; not saved).
#[derive(Debug, Clone)]
pub enum ScoreState {
    Mse,
    /// Cholesky factors of the source and target error covariances.
    SelectiveMahalanobis(Arc<[Cholesky; 2]>),
}

#[derive(Module, Debug)]
pub struct OfficialAe {
    pub encoder: Vec<DenseBlock>,
    pub decoder: Vec<DenseBlock>,
    pub output: Linear,
    #[module(skip)]
    pub score: ScoreState,
}

/// The vectors of a batch of clips: `x` [N, dim], the rows of clip `i`
/// being `offsets[i]..offsets[i + 1]`.
#[derive(Debug, Clone)]
pub struct AeBatch {
    pub x: Tensor<2>,
    pub offsets: Vec<usize>,
}

impl OfficialAe {
    /// Reconstruction of the vectors [N, dim].
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let z = self.encoder.iter().fold(x, |h, b| b.forward(h));
        let h = self.decoder.iter().fold(z, |h, b| b.forward(h));
        self.output.forward(h)
    }

    /// Reconstruction errors `x̂ − x` [N, dim].
    pub fn errors(&self, x: Tensor<2>) -> Tensor<2> {
        self.forward(x.clone()) - x
    }

    /// Anomaly scores of the clips of a batch (eval mode).
    pub fn scores(&self, batch: &AeBatch) -> Vec<f64> {
        let e = self.errors(batch.x.clone());
        let dim = e.dims()[1];
        let clips = batch.offsets.windows(2);
        match &self.score {
            ScoreState::Mse => {
                let per_row = to_vec(e.powi_scalar(2).mean_dim(1));
                clips.map(|w| flat_mean(&per_row[w[0]..w[1]], 1)[0]).collect()
            }
            ScoreState::SelectiveMahalanobis(chol) => {
                let e = to_vec(e);
                clips
                    .map(|w| {
                        let m = flat_mean(&e[w[0] * dim..w[1] * dim], dim);
                        chol[0].quad(&m).min(chol[1].quad(&m))
                    })
                    .collect()
            }
        }
    }
}

/// Input vector `v` of a log-mel [T, mels]: frames `v .. v + frames` side
/// by side (`file_to_vectors`), which in the row-major log-mel is one
/// contiguous slice, so batches take vectors without building them.
pub fn vector(f: &Frames, v: usize, frames: usize) -> &[f32] {
    &f.data[v * f.cols..(v + frames) * f.cols]
}

/// The number of input vectors of a log-mel of `rows` frames.
pub fn vectors(rows: usize, frames: usize) -> usize {
    rows + 1 - frames
}

/// Running count, mean and scatter of error vectors (merged batch by
/// batch with the pairwise update, so no large sums cancel), in f64: the
/// Mahalanobis distances weight the covariance's smallest directions, which
/// an f32 scatter would blur (by 4e-4 of the score on the parity clips).
#[derive(Debug, Clone)]
struct Moments {
    n: f64,
    mean: Vec<f64>,
    scatter: Square,
}

impl Moments {
    fn new(dim: usize) -> Moments {
        Moments { n: 0.0, mean: vec![0.0; dim], scatter: Square::zeros(dim) }
    }

    /// Adds the error vectors `rows` (flat, `dim` columns).
    fn add(&mut self, rows: &[f32]) {
        if rows.is_empty() {
            return;
        }
        let (n, mean, scatter) = flat_moments(rows, self.mean.len());
        let (n, total) = (n as f64, self.n + n as f64);
        let delta: Vec<f64> = mean.iter().zip(&self.mean).map(|(b, a)| b - a).collect();
        let w = self.n * n / total;
        let p = self.mean.len();
        for i in 0..p {
            for j in 0..p {
                self.scatter.a[i * p + j] += scatter.a[i * p + j] + w * delta[i] * delta[j];
            }
        }
        for (m, d) in self.mean.iter_mut().zip(&delta) {
            *m += d * n / total;
        }
        self.n = total;
    }

    /// The Cholesky factor of the covariance (scatter / (n − 1)) plus the ridge.
    fn factor(&self, ridge: f64, what: &str) -> Result<Cholesky> {
        let p = self.mean.len();
        if self.n < 2.0 {
            bail!("{what}: {} error vectors, at least 2 needed", self.n);
        }
        let mut cov = self.scatter.clone();
        cov.a.iter_mut().for_each(|v| *v /= self.n - 1.0);
        cov.add_diagonal(ridge * cov.trace() / p as f64);
        Cholesky::new(&cov).with_context(|| {
            format!(
                "{what}: the covariance of {} error vectors of {p} dimensions is singular; \
                 set model.ridge (e.g. 1e-3) or give more or longer training clips",
                self.n
            )
        })
    }
}

/// The pipeline's view: the `official_ae` log-mel, no classification head,
/// its own scores (MSE or selective Mahalanobis, the latter fitted on each
/// machine's training clips).
impl ModelInfo for OfficialAeConfig {
    fn validate(&self) -> Result<()> {
        if self.frames == 0 || self.hidden == 0 || self.bottleneck == 0 || self.vectors_per_clip == 0 {
            bail!("official_ae: frames, hidden, bottleneck and vectors_per_clip must be at least 1");
        }
        if !(self.ridge.is_finite() && self.ridge >= 0.0) {
            bail!("official_ae: ridge must be finite and at least 0, not {}", self.ridge);
        }
        Ok(())
    }
    fn loss_terms(&self) -> usize {
        0
    }
    fn scoring(&self) -> Scoring {
        Scoring::Likelihood
    }
    fn frontends(&self) -> Vec<FrontEnd> {
        vec![FrontEnd::Logmel { preset: LogmelPreset::OfficialAe }]
    }
    fn model_scores(&self) -> &'static [&'static str] {
        &SCORES
    }
    fn scoring_fields(&self) -> &'static [&'static str] {
        &["ridge"]
    }
}

impl ModelSpec for OfficialAeConfig {
    type Model = OfficialAe;
    type Batch = AeBatch;

    fn init(&self, ctx: &InitContext, device: &Device) -> Result<OfficialAe> {
        Ok(OfficialAeConfig::init(self, ctx.seed, device))
    }

    fn fit(&self, inputs: Vec<Frames>) -> Result<Vec<Frames>> {
        let f = &inputs[0];
        if f.cols != MELS {
            bail!("log-mel has {} bins, expected {MELS}", f.cols);
        }
        if f.rows < self.frames {
            bail!("the clip has {} log-mel frames, fewer than the {} of one input vector", f.rows, self.frames);
        }
        if let Some(v) = f.data.iter().find(|v| !v.is_finite()) {
            bail!("log-mel holds a non-finite value ({v})");
        }
        Ok(inputs)
    }

    /// Training batches (labels given) draw `vectors_per_clip` vectors of
    /// each clip without replacement, from the stream (batch seed, clip);
    /// scoring batches hold every vector.
    fn batch(&self, inputs: Vec<Vec<Frames>>, ctx: &BatchContext, device: &Device) -> Result<AeBatch> {
        let dim = self.dim();
        let mut offsets = vec![0];
        let mut data = Vec::new();
        for (i, clip) in inputs.iter().enumerate() {
            let f = &clip[0];
            let n = vectors(f.rows, self.frames);
            let picked: Vec<usize> = if ctx.labels.is_some() {
                let mut rng = crate::util::rng::stream(ctx.seed, &[0xAE, i as u64]);
                rand::seq::index::sample(&mut rng, n, self.vectors_per_clip.min(n)).into_vec()
            } else {
                (0..n).collect()
            };
            for v in picked {
                data.extend_from_slice(vector(f, v, self.frames));
            }
            offsets.push(data.len() / dim);
        }
        let n = offsets[offsets.len() - 1];
        Ok(AeBatch { x: Tensor::from_data(TensorData::new(data, [n, dim]), device), offsets })
    }

    fn step(&self, model: &OfficialAe, batch: AeBatch) -> StepOutput {
        let loss = model.errors(batch.x).powi_scalar(2).mean();
        StepOutput { loss, logs: Vec::new() }
    }

    fn infer(&self, model: &OfficialAe, batch: AeBatch) -> Tensor<2> {
        let device = batch.x.device();
        let s: Vec<f32> = model.scores(&batch).into_iter().map(|v| v as f32).collect();
        let n = s.len();
        Tensor::from_data(TensorData::new(s, [n, 1]), &device)
    }

    fn fit_score(
        &self,
        mut model: OfficialAe,
        score: &str,
        train: &mut dyn Iterator<Item = Result<(AeBatch, Vec<Domain>)>>,
    ) -> Result<OfficialAe> {
        if score == "mse" {
            model.score = ScoreState::Mse;
            return Ok(model);
        }
        let dim = self.dim();
        let mut moments = [Moments::new(dim), Moments::new(dim)];
        for item in train {
            let (batch, domains) = item?;
            let e = to_vec(model.errors(batch.x.clone()));
            for (d, moment) in [Domain::Source, Domain::Target].into_iter().zip(moments.iter_mut()) {
                let rows: Vec<f32> = (0..domains.len())
                    .filter(|&i| domains[i] == d)
                    .flat_map(|i| e[batch.offsets[i] * dim..batch.offsets[i + 1] * dim].iter().copied())
                    .collect();
                moment.add(&rows);
            }
        }
        let source = moments[0].factor(self.ridge, "source-domain training clips")?;
        // The official code uses the source covariance when no target clip is given.
        let target = if moments[1].n > 0.0 {
            moments[1].factor(self.ridge, "target-domain training clips")?
        } else {
            source.clone()
        };
        model.score = ScoreState::SelectiveMahalanobis(Arc::new([source, target]));
        Ok(model)
    }
}

/// The official code's `state_dict` names: `encoder.{0,3,6,9,12}` /
/// `decoder.{0,3,6,9}` Linear, the BatchNorm after each at +1, `decoder.12`
/// the output Linear.
fn key_map() -> Vec<KeyMapEntry> {
    let mut map = Vec::new();
    let mut push = |torch: String, burn: String, transpose: bool| map.push(KeyMapEntry { torch, burn, transpose });
    let blocks = [("encoder", 5), ("decoder", 4)];
    for (side, n) in blocks {
        for b in 0..n {
            let (lin, bn) = (3 * b, 3 * b + 1);
            push(format!("{side}.{lin}.weight"), format!("{side}.{b}.linear.weight"), true);
            push(format!("{side}.{lin}.bias"), format!("{side}.{b}.linear.bias"), false);
            for (t, m) in [
                ("weight", "gamma"),
                ("bias", "beta"),
                ("running_mean", "running_mean"),
                ("running_var", "running_var"),
            ] {
                push(format!("{side}.{bn}.{t}"), format!("{side}.{b}.norm.{m}"), false);
            }
        }
    }
    push("decoder.12.weight".into(), "output.weight".into(), true);
    push("decoder.12.bias".into(), "output.bias".into(), false);
    map
}

/// Loads a model saved by the official code (`torch.save(model.state_dict())`,
/// `models/saved_model/.../model_<machine>.pth`). Its `cov_source` /
/// `cov_target` are not read: the covariances are refitted on the training
/// clips when scoring.
pub fn load_official(cfg: &OfficialAeConfig, path: &Path, device: &Device) -> Result<OfficialAe> {
    // from_pt names the file in its errors.
    let state = StateDict::from_pt(path, None)?;
    let model = cfg.build(device);
    let map = key_map();
    let mut problems = key_problems(&map, &param_shapes(&model), &state);
    let known: std::collections::BTreeSet<&str> = map.iter().map(|e| e.torch.as_str()).collect();
    problems.extend(super::state_dict::unexpected_keys(
        &state,
        |k| known.contains(k) || k == "cov_source" || k == "cov_target",
        "official AE",
    ));
    report(problems, "official AE").with_context(|| format!("cannot load {}", path.display()))?;
    let values = mapped_values(&map, &state)?;
    assign_all(model, values).with_context(|| format!("cannot load {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::spec::BatchContext;

    fn small() -> OfficialAeConfig {
        OfficialAeConfig { frames: 2, hidden: 16, bottleneck: 4, vectors_per_clip: 3, ..Default::default() }
    }

    fn logmel(rows: usize, offset: f32) -> Frames {
        Frames::new((0..rows * MELS).map(|v| ((v * 37 % 101) as f32) * 0.1 + offset).collect(), rows, MELS)
    }

    #[test]
    fn vectors_stack_consecutive_frames() {
        let f = Frames::new((0..8).map(|v| v as f32).collect(), 4, 2);
        assert_eq!(vectors(f.rows, 3), 2);
        assert_eq!(vector(&f, 0, 3), &[0., 1., 2., 3., 4., 5.]);
        assert_eq!(vector(&f, 1, 3), &[2., 3., 4., 5., 6., 7.]);
        let cfg = small();
        let err = |f: Frames| format!("{:#}", ModelSpec::fit(&cfg, vec![f]).unwrap_err());
        assert!(err(logmel(1, 0.0)).contains("fewer than the 2"));
        assert!(err(Frames::new(vec![0.0; 64], 1, 64)).contains("64 bins"));
        let mut nan = logmel(3, 0.0);
        nan.data[5] = f32::NAN;
        assert!(err(nan).contains("non-finite"));
    }

    #[test]
    fn training_batches_draw_vectors_and_scoring_batches_keep_all() {
        let cfg = small();
        let dev = Device::flex();
        let clips = vec![vec![logmel(6, 0.0)], vec![logmel(2, 1.0)]];
        let labels = [0, 0];
        let train = BatchContext { labels: Some(&labels), specaugment: None, seed: 4 };
        let b = ModelSpec::batch(&cfg, clips.clone(), &train, &dev).unwrap();
        assert_eq!(b.offsets, vec![0, 3, 4], "3 of 5 vectors, then the only one");
        let again = ModelSpec::batch(&cfg, clips.clone(), &train, &dev).unwrap();
        assert_eq!(to_vec(b.x), to_vec(again.x));
        let eval = BatchContext { labels: None, specaugment: None, seed: 0 };
        let b = ModelSpec::batch(&cfg, clips, &eval, &dev).unwrap();
        assert_eq!(b.offsets, vec![0, 5, 6]);
        assert_eq!(b.x.dims(), [6, 2 * MELS]);
    }

    #[test]
    fn mse_and_selective_mahalanobis_scores() {
        let cfg = OfficialAeConfig { ridge: 1e-3, ..small() };
        let dev = Device::flex();
        let model = cfg.init(3, &dev).valid();
        let eval = BatchContext { labels: None, specaugment: None, seed: 0 };
        let batch = |offsets: &[f32]| {
            let clips = offsets.iter().map(|&o| vec![logmel(40, o)]).collect();
            ModelSpec::batch(&cfg, clips, &eval, &dev).unwrap()
        };
        let test = batch(&[0.0, 5.0]);
        // MSE by hand.
        let m = ModelSpec::fit_score(&cfg, model.clone(), "mse", &mut std::iter::empty()).unwrap();
        let e = to_vec(m.errors(test.x.clone()));
        let d = 2 * MELS;
        let by_hand: f64 = e[..39 * d].iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / (39 * d) as f64;
        let s = m.scores(&test);
        assert!((s[0] - by_hand).abs() < 1e-6 * by_hand, "{} vs {by_hand}", s[0]);
        // Mahalanobis: fitted per domain; the score is the smaller distance.
        let train = vec![
            Ok((batch(&[0.0, 0.5, 1.0]), vec![Domain::Source, Domain::Source, Domain::Target])),
            Ok((batch(&[1.5, 2.0]), vec![Domain::Target, Domain::Source])),
        ];
        let fitted =
            ModelSpec::fit_score(&cfg, model.clone(), "selective_mahalanobis", &mut train.into_iter()).unwrap();
        let ScoreState::SelectiveMahalanobis(chol) = &fitted.score else { panic!("not fitted") };
        let s = fitted.scores(&test);
        let m0 = flat_mean(&e[..39 * d], d);
        assert_eq!(s[0], chol[0].quad(&m0).min(chol[1].quad(&m0)));
        assert!(s.iter().all(|v| v.is_finite() && *v > 0.0));
        // Without the ridge, 39 vectors of 256 dimensions give a singular covariance.
        let one = vec![Ok((batch(&[0.0]), vec![Domain::Source]))];
        let err = ModelSpec::fit_score(&small(), model, "selective_mahalanobis", &mut one.into_iter()).unwrap_err();
        assert!(format!("{err:#}").contains("singular"), "{err:#}");
    }

    #[test]
    fn merged_moments_equal_the_moments_of_all_rows() {
        let rows: Vec<f32> = (0..5 * 3).map(|v| ((v * 13 % 7) as f32) + 100.0).collect();
        let mut parts = Moments::new(3);
        parts.add(&rows[..6]);
        parts.add(&[]);
        parts.add(&rows[6..]);
        let mut whole = Moments::new(3);
        whole.add(&rows);
        for (a, b) in parts.scatter.a.iter().zip(&whole.scatter.a) {
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
        assert_eq!(parts.n, 5.0);
    }

    #[test]
    fn parameter_count_of_the_official_network() {
        // 640·128+128 + 3·(128·128+128) + 128·8+8 | 8·128+128 + 3·(128·128+128) + 128·640+640,
        // plus 2·(8·128 + 8) BatchNorm weights and biases.
        let m = OfficialAeConfig::default().build(&Device::flex());
        let linear = (640 * 128 + 128)
            + 3 * (128 * 128 + 128)
            + (128 * 8 + 8)
            + (8 * 128 + 128)
            + 3 * (128 * 128 + 128)
            + (128 * 640 + 640);
        let bn = 2 * (8 * 128 + 8);
        assert_eq!(crate::nn::util::count_params(&m), linear + bn);
        assert_eq!(key_map().len(), 9 * 6 + 2);
    }
}
