//! NF-CDEE: a normalizing flow on the time-averaged log-mel (THUEE report
//! §2.1; design in models.md §3.2).
//!
//! log-mel [B, T, mels] → BatchNorm per mel bin over batch × time
//! ("frequency-wise normalisation") → mean over time → z [B, mels] →
//! flow of `blocks` × [AffineCoupling, Permute, BatchNorm] blocks
//! ([`crate::nn::flow`]). The negative log-likelihood is both the training
//! loss and, in eval mode (`model.valid()`, moving statistics), the anomaly
//! score.

use super::spec::{BatchContext, InitContext, ModelInfo, ModelSpec, Scoring, fit_rows};
use crate::features::Frames;
use crate::features::frontend::FrontEnd;
use crate::features::mel::LogmelPreset;
use crate::nn::flow::{Flow, FlowConfig};
use crate::nn::util::{count_params, seeded_init};
use crate::train::StepOutput;
use anyhow::{Result, bail};
use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// Front end fixed by the report: STFT window 8192, hop 512 at 16 kHz.
pub const WINDOW: usize = 8192;
pub const HOP: usize = 512;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NfCdeeConfig {
    /// Clip length in seconds at 16 kHz that inputs are fitted to.
    #[serde(default = "ten")]
    pub seconds: f32,
    #[serde(default = "mels")]
    pub mels: usize,
    /// Flow blocks [AffineCoupling, Permute, BatchNorm].
    #[serde(default = "blocks")]
    pub blocks: usize,
    /// Hidden widths of each coupling's hypernet.
    #[serde(default = "hidden")]
    pub hidden: Vec<usize>,
}

fn ten() -> f32 {
    10.0
}
fn mels() -> usize {
    256
}
fn blocks() -> usize {
    8
}
fn hidden() -> Vec<usize> {
    vec![2048]
}

impl Default for NfCdeeConfig {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("defaults")
    }
}

impl NfCdeeConfig {
    pub fn samples(&self) -> usize {
        (self.seconds as f64 * 16_000.0).round() as usize
    }

    /// Log-mel frames of the model input (centred framing: 1 + samples / hop).
    pub fn frames(&self) -> usize {
        1 + self.samples() / HOP
    }

    /// The flow on the `mels`-dim clip vector (split mels / 2, Pyro defaults).
    pub fn flow(&self) -> FlowConfig {
        FlowConfig::new(self.mels, self.blocks, self.hidden.clone())
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.seconds.is_finite() && self.samples() >= WINDOW) {
            bail!("nf_cdee: seconds must cover one {WINDOW}-sample window");
        }
        if self.mels < 2 {
            bail!("nf_cdee: mels must be at least 2");
        }
        self.flow().validate()
    }

    /// Builds the model, weights drawn from `seed`.
    pub fn init(&self, seed: u64, device: &Device) -> NfCdee {
        seeded_init(device, seed, || self.build(device))
    }

    fn build(&self, device: &Device) -> NfCdee {
        NfCdee {
            norm: BatchNormConfig::new(self.mels).with_momentum(0.1).with_epsilon(1e-5).init(device),
            flow: self.flow().build(device),
        }
    }
}

#[derive(Module, Debug)]
pub struct NfCdee {
    /// Per-mel-bin normalisation over batch × time.
    pub norm: BatchNorm,
    pub flow: Flow,
}

/// One batch of clips, as the time moments of each clip's log-mel: the
/// normalisation is per mel bin over batch × time and is followed by a mean
/// over time, so `mean_t(BN(x))` needs only each clip's mean and mean
/// square per bin, not the [B, T, mels] tensor.
#[derive(Debug, Clone)]
pub struct NfCdeeBatch {
    /// [B, mels]: mean over time of each clip's log-mel.
    pub mean: Tensor<2>,
    /// [B, mels]: mean over time of the squared log-mel.
    pub sq_mean: Tensor<2>,
}

impl NfCdeeBatch {
    /// The moments of `b` clips of `t` frames × `mels` bins (frame-major
    /// rows, as in `Frames`), accumulated in f64.
    pub fn from_logmel(data: &[f32], b: usize, t: usize, mels: usize, device: &Device) -> NfCdeeBatch {
        use rayon::prelude::*;
        assert_eq!(data.len(), b * t * mels, "log-mel batch of {b} × {t} × {mels}");
        // One clip per task: the sums of a clip never mix across threads, so
        // the result does not depend on the thread count.
        let per_clip: Vec<(Vec<f32>, Vec<f32>)> = data
            .par_chunks(t * mels)
            .map(|clip| {
                let (mut m, mut q) = (vec![0.0f64; mels], vec![0.0f64; mels]);
                for row in clip.chunks(mels) {
                    for (k, &v) in row.iter().enumerate() {
                        m[k] += v as f64;
                        q[k] += v as f64 * v as f64;
                    }
                }
                let n = t as f64;
                (m.iter().map(|x| (x / n) as f32).collect(), q.iter().map(|x| (x / n) as f32).collect())
            })
            .collect();
        let (m, q): (Vec<Vec<f32>>, Vec<Vec<f32>>) = per_clip.into_iter().unzip();
        let to = |v: Vec<Vec<f32>>| Tensor::from_data(TensorData::new(v.concat(), [b, mels]), device);
        NfCdeeBatch { mean: to(m), sq_mean: to(q) }
    }
}

impl NfCdee {
    /// [B, T, mels] → [B, mels] through burn's `BatchNorm` on the whole
    /// tensor: the reference for [`NfCdee::features_from_moments`].
    pub fn features(&self, logmel: Tensor<3>) -> Tensor<2> {
        let [b, _, m] = logmel.dims();
        let x = self.norm.forward(logmel.swap_dims(1, 2)); // [B, mels, T]
        x.mean_dim(2).reshape([b, m])
    }

    /// `mean_t(BN(x))` from the clips' time moments, with burn's `BatchNorm`
    /// semantics: in training, per-bin statistics over batch × time (mean,
    /// biased variance; every clip has the same frame count) that also move
    /// the running statistics; in eval mode, the running statistics.
    pub fn features_from_moments(&self, batch: &NfCdeeBatch) -> Tensor<2> {
        let norm = &self.norm;
        let device = batch.mean.device();
        let (mu, var) = if device.is_autodiff() && norm.training.is_enabled() {
            let mu = batch.mean.clone().mean_dim(0); // [1, mels]
            let var = (batch.sq_mean.clone().mean_dim(0) - mu.clone().powi_scalar(2)).clamp_min(0.0);
            let update = |state: &burn::module::RunningState<Tensor<1>>, stat: Tensor<2>| {
                let old = state.value_sync().to_device(&device);
                let stat = stat.detach().reshape([-1]);
                state.update((old * (1.0 - norm.momentum) + stat * norm.momentum).detach());
            };
            update(&norm.running_mean, mu.clone());
            update(&norm.running_var, var.clone());
            (mu, var)
        } else {
            let mean = norm.running_mean.value().to_device(&device).unsqueeze::<2>();
            let var = norm.running_var.value().to_device(&device).unsqueeze::<2>();
            (mean, var)
        };
        let scale = norm.gamma.val().unsqueeze::<2>() / (var + norm.epsilon).sqrt();
        (batch.mean.clone() - mu) * scale + norm.beta.val().unsqueeze::<2>()
    }

    /// Per-clip negative log-likelihood [B]; the anomaly score in eval mode.
    pub fn nll(&self, batch: &NfCdeeBatch) -> Tensor<1> {
        self.flow.log_prob(self.features_from_moments(batch)).neg()
    }

    /// Mean NLL over the batch, shape [1].
    pub fn loss(&self, batch: NfCdeeBatch) -> Tensor<1> {
        self.nll(&batch).mean()
    }

    /// (trainable, total) parameters as PyTorch counts them (batch-norm
    /// running statistics excluded). Nothing is frozen, so both are equal;
    /// the report's 7.28 M total is unexplained (models.md §3.1).
    pub fn param_counts(&self) -> (usize, usize) {
        let n = count_params(self);
        (n, n)
    }
}

/// The pipeline's view of the model: the cached `nf_cdee` log-mel fitted
/// to `seconds` (cropped, or tiled from the start), no classification
/// head, and its own anomaly score: the clip's negative log-likelihood in
/// eval mode (no back-end).
impl ModelInfo for NfCdeeConfig {
    fn validate(&self) -> Result<()> {
        NfCdeeConfig::validate(self)?;
        let preset = LogmelPreset::NfCdee.config().n_mels;
        if self.mels != preset {
            bail!("nf_cdee: mels must be {preset} (the bins of the nf_cdee log-mel front-end), not {}", self.mels);
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
        vec![FrontEnd::Logmel { preset: LogmelPreset::NfCdee }]
    }
}

impl ModelSpec for NfCdeeConfig {
    type Model = NfCdee;
    type Batch = NfCdeeBatch;

    fn init(&self, ctx: &InitContext, device: &Device) -> Result<NfCdee> {
        Ok(NfCdeeConfig::init(self, ctx.seed, device))
    }

    fn fit(&self, inputs: Vec<Frames>) -> Result<Vec<Frames>> {
        let f = &inputs[0];
        if f.cols != self.mels {
            bail!("log-mel has {} bins, expected {}", f.cols, self.mels);
        }
        if let Some(v) = f.data.iter().find(|v| !v.is_finite()) {
            bail!("log-mel holds a non-finite value ({v})");
        }
        Ok(vec![fit_rows(f, self.frames())?])
    }

    fn batch(&self, inputs: Vec<Vec<Frames>>, _ctx: &BatchContext, device: &Device) -> Result<NfCdeeBatch> {
        let (b, t) = (inputs.len(), self.frames());
        let data: Vec<f32> = inputs.into_iter().flat_map(|mut c| std::mem::take(&mut c[0].data)).collect();
        Ok(NfCdeeBatch::from_logmel(&data, b, t, self.mels, device))
    }

    fn step(&self, model: &NfCdee, batch: NfCdeeBatch) -> StepOutput {
        StepOutput { loss: model.loss(batch), logs: Vec::new() }
    }

    fn infer(&self, model: &NfCdee, batch: NfCdeeBatch) -> Tensor<2> {
        model.nll(&batch).unsqueeze_dim(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::util::to_vec;
    use burn::tensor::Distribution;

    fn small() -> NfCdeeConfig {
        NfCdeeConfig { mels: 8, blocks: 2, hidden: vec![16], ..Default::default() }
    }

    /// The moments batch of a [B, T, mels] tensor.
    fn moments(x: &Tensor<3>) -> NfCdeeBatch {
        let [b, t, m] = x.dims();
        NfCdeeBatch::from_logmel(&to_vec(x.clone()), b, t, m, &x.device())
    }

    fn max_diff(a: Tensor<2>, b: Tensor<2>) -> f32 {
        to_vec(a).iter().zip(to_vec(b)).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn inputs_are_fitted_and_bad_ones_named() {
        let cfg = NfCdeeConfig { seconds: 1.0, ..Default::default() };
        let t = cfg.frames();
        assert_eq!(t, 32); // 1 + 16 000 / 512
        let f = Frames::new((0..3 * 256).map(|v| v as f32).collect(), 3, 256);
        let fitted = ModelSpec::fit(&cfg, vec![f]).unwrap();
        assert_eq!((fitted[0].rows, fitted[0].cols), (t, 256));
        assert_eq!(fitted[0].row(3), fitted[0].row(0), "short clips are tiled from their start");
        let err = |f: Frames| format!("{:#}", ModelSpec::fit(&cfg, vec![f]).unwrap_err());
        assert!(err(Frames::new(vec![0.0; 128], 1, 128)).contains("128 bins, expected 256"));
        let mut nan = vec![0.0; 256];
        nan[7] = f32::NAN;
        assert!(err(Frames::new(nan, 1, 256)).contains("non-finite"));
        assert!(ModelInfo::validate(&NfCdeeConfig { mels: 64, ..Default::default() }).is_err());
    }

    #[test]
    fn moments_path_equals_batch_norm_on_the_whole_log_mel() {
        let dev = Device::flex().autodiff();
        let (a, b) = (small().init(4, &dev), small().init(4, &dev));
        dev.seed(7);
        // Log-mel-like values: dB around −40 with spread 15.
        let x = Tensor::<3>::random([5, 9, 8], Distribution::Normal(-40.0, 15.0), &dev);
        let d = max_diff(a.features(x.clone()), b.features_from_moments(&moments(&x)));
        assert!(d < 1e-4, "train mode differs by {d}");
        let (a, b) = (a.valid(), b.valid());
        let stats = |m: &NfCdee| (to_vec(m.norm.running_mean.value()), to_vec(m.norm.running_var.value()));
        let ((ma, va), (mb, vb)) = (stats(&a), stats(&b));
        for (p, q) in ma.iter().chain(&va).zip(mb.iter().chain(&vb)) {
            assert!((p - q).abs() < 1e-3 * p.abs().max(1.0), "running statistics differ: {p} vs {q}");
        }
        let x = x.inner();
        let d = max_diff(a.features(x.clone()), b.features_from_moments(&moments(&x)));
        assert!(d < 1e-4, "eval mode differs by {d}");
    }

    #[test]
    fn parameter_count_of_the_report_setting() {
        let cfg = NfCdeeConfig::default();
        cfg.validate().unwrap();
        // Lazy build: shapes only, no weights drawn.
        let m = cfg.build(&Device::flex());
        assert_eq!(m.param_counts(), (6_314_496, 6_314_496));
        assert_eq!(6_314_496, 8 * 788_736 + 8 * 512 + 512);
    }

    #[test]
    fn config_defaults_and_unknown_fields() {
        let c: NfCdeeConfig = serde_json::from_str(r#"{"mels": 64}"#).unwrap();
        assert_eq!((c.mels, c.blocks, c.hidden.clone(), c.seconds), (64, 8, vec![2048], 10.0));
        assert!(serde_json::from_str::<NfCdeeConfig>(r#"{"mel": 64}"#).is_err());
        assert!(NfCdeeConfig { seconds: 0.3, ..small() }.validate().is_err());
        assert!(NfCdeeConfig { mels: 1, ..small() }.validate().is_err());
    }

    #[test]
    fn features_normalise_each_mel_bin_then_average_time() {
        let dev = Device::flex().autodiff();
        let m = small().init(0, &dev);
        dev.seed(1);
        let x = Tensor::<3>::random([3, 5, 8], Distribution::Normal(4.0, 2.0), &dev);
        let f = m.features_from_moments(&moments(&x));
        assert_eq!(f.dims(), [3, 8]);
        // Train-mode BN: every bin has zero mean over batch × time, so the
        // batch mean of the time averages is zero too.
        let col = to_vec(f.mean_dim(0));
        assert!(col.iter().all(|v| v.abs() < 1e-5), "{col:?}");
    }

    #[test]
    fn seeded_training_step_and_eval_scoring() {
        let dev = Device::flex().autodiff();
        let cfg = small();
        let a = cfg.init(5, &dev);
        let b = cfg.init(5, &dev);
        dev.seed(2);
        let x = Tensor::<3>::random([4, 6, 8], Distribution::Normal(0.0, 1.0), &dev);
        let la = a.loss(moments(&x));
        let lb = b.loss(moments(&x));
        assert_eq!(la.dims(), [1]);
        assert_eq!(to_vec(la.clone()), to_vec(lb));
        let g = la.backward();
        assert!(a.norm.gamma.grad(&g).is_some());
        assert!(a.flow.blocks[1].coupling.hypernet.layers[1].weight.grad(&g).is_some());
        // Eval mode: scores of one clip do not depend on the rest of the batch.
        let eval = a.valid();
        let x = x.inner();
        let all = to_vec(eval.nll(&moments(&x)));
        let one = to_vec(eval.nll(&moments(&x.narrow(0, 2, 1))));
        assert!((all[2] - one[0]).abs() < 1e-4 * all[2].abs().max(1.0), "{all:?} {one:?}");
    }

    #[test]
    fn checkpoint_round_trip_into_a_model_built_with_another_seed() {
        // Running statistics are saved; permutations come from the config.
        let dev = Device::flex().autodiff();
        let cfg = small();
        let m = cfg.init(1, &dev);
        dev.seed(3);
        let x = Tensor::<3>::random([4, 6, 8], Distribution::Normal(1.0, 2.0), &dev);
        let _ = m.loss(moments(&x));
        let m = m.valid();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.bpk");
        m.clone().save_file(&p).unwrap();
        let loaded = cfg.init(2, &Device::flex()).try_load_file(&p).unwrap().valid();
        let x = x.inner();
        assert_eq!(to_vec(m.nll(&moments(&x))), to_vec(loaded.nll(&moments(&x))));
    }
}
