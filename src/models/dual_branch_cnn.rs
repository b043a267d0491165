//! Dual Branch CNN with self-attention modules (THUEE report §2.2).
//!
//! Wilkinghoff's dual-branch network (ICASSP 2023; layer by layer in
//! models.md §1.2) with the report's attention modules (models.md §1.4):
//!
//! * spectrum branch, input |DFT(hann · x)| (first N/2 bins):
//!   3 × [Conv1d (no bias, Keras "same") → ReLU → multi-head self-attention
//!   with all projections and no residual], the modules attending along
//!   frequency, frequency and channel with 4, 4 and 2 heads; then flatten
//!   (Keras order), 4 × [Dense → BatchNorm → ReLU], Dense → 128-d embedding;
//! * spectrogram branch, input the mean-normalised |STFT| (1024/512, Hann):
//!   per-frequency BatchNorm, Conv2d 7×7/2 → BN → ReLU → MaxPool 3×3/2,
//!   four residual blocks (16, 32, 64, 128 channels), then two
//!   projection-free multi-head self-attention modules with residual
//!   connections (frequency then time, 2 heads each), max-pooling over time,
//!   flatten, BatchNorm, Dense → 128-d embedding;
//! * embedding = concat(spectrum, spectrogram) = 256-d; three ArcFace heads
//!   (concatenated, spectrum, spectrogram) whose weighted losses are summed:
//!   one backward of the sum is the report's "three flows of gradient".
//!
//! Keras defaults are kept where the source model uses them: no biases in
//! convolutions and dense layers, BatchNorm momentum 0.99 (burn/PyTorch
//! 0.01) and epsilon 1e-3, "same" padding with the extra pad on the right.
//! The Keras L2 kernel regulariser (1e-5) is replaced by AdamW's decoupled
//! weight decay of the same size, as the report trains with AdamW.

use super::spec::{BatchContext, InitContext, ModelInfo, ModelSpec, Scoring};
use crate::features::Frames;
use crate::features::frontend::FrontEnd;
use crate::nn::attention::attention;
use crate::nn::conv2d::conv2d;
use crate::nn::util::{l2_normalize, labels_tensor, seeded_init};
use crate::nn::{Head, LossConfig};
use crate::train::StepOutput;
use anyhow::{Result, bail};
use burn::module::Module;
use burn::nn::attention::{MultiHeadAttention, MultiHeadAttentionConfig};
use burn::nn::conv::{Conv1d, Conv1dConfig, Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig1d, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::ops::PadMode;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// Which branches the model has (the spectrogram-only ablation drops one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Branches {
    #[default]
    Both,
    SpectrumOnly,
    SpectrogramOnly,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DualBranchCnnConfig {
    /// Input length in seconds at 16 kHz (10 s in the report).
    #[serde(default = "ten")]
    pub seconds: f32,
    #[serde(default)]
    pub branches: Branches,
    /// The report's self-attention modules (off = Wilkinghoff's network).
    #[serde(default = "yes")]
    pub attention: bool,
    /// Embedding size per branch (128 + 128 = 256, report Fig. 1).
    #[serde(default = "d128")]
    pub branch_dim: usize,
    /// Heads of the spectrum-branch modules (frequency, frequency, channel).
    #[serde(default = "spectrum_heads")]
    pub spectrum_heads: [usize; 3],
    /// Heads of the spectrogram-branch modules (frequency, time).
    #[serde(default = "spectrogram_heads")]
    pub spectrogram_heads: [usize; 2],
}

fn ten() -> f32 {
    10.0
}
fn yes() -> bool {
    true
}
fn d128() -> usize {
    128
}
fn spectrum_heads() -> [usize; 3] {
    [4, 4, 2]
}
fn spectrogram_heads() -> [usize; 2] {
    [2, 2]
}

impl Default for DualBranchCnnConfig {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("defaults")
    }
}

/// STFT of the spectrogram branch (fixed by the report).
pub const STFT_WINDOW: usize = 1024;
pub const STFT_HOP: usize = 512;

/// Keras "same" padding of a strided window: (left, right, output length).
pub fn same_padding(len: usize, kernel: usize, stride: usize) -> (usize, usize, usize) {
    let out = len.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(len);
    (total / 2, total - total / 2, out)
}

impl DualBranchCnnConfig {
    pub fn samples(&self) -> usize {
        (self.seconds as f64 * 16_000.0).round() as usize
    }

    /// (spectrum bins, spectrogram frames, spectrogram bins) of the inputs.
    pub fn input_shapes(&self) -> (usize, usize, usize) {
        let n = self.samples();
        (n / 2, 1 + (n - STFT_WINDOW) / STFT_HOP, STFT_WINDOW / 2 + 1)
    }

    pub fn validate(&self) -> Result<()> {
        if self.seconds < 1.0 {
            bail!("dual_branch_cnn: seconds must be at least 1");
        }
        let [a, b, c] = self.spectrum_heads;
        if self.branch_dim == 0 || !128usize.is_multiple_of(a) || !128usize.is_multiple_of(b) {
            bail!("dual_branch_cnn: spectrum heads must divide 128 channels");
        }
        let (bins, _, _) = self.input_shapes();
        let l3 = spectrum_lengths(bins)[2];
        if c == 0 || !l3.is_multiple_of(c) {
            bail!("dual_branch_cnn: channel-attention heads ({c}) must divide the final length {l3}");
        }
        if self.spectrogram_heads.iter().any(|&h| h == 0 || !128usize.is_multiple_of(h)) {
            bail!("dual_branch_cnn: spectrogram heads must divide 128 channels");
        }
        Ok(())
    }

    /// Builds the model for `classes` auxiliary classes, seeded.
    pub fn init(&self, loss: &LossConfig, classes: usize, seed: u64, device: &Device) -> DualBranchCnn {
        seeded_init(device, seed, || self.build(loss, classes, device))
    }

    fn build(&self, loss: &LossConfig, classes: usize, device: &Device) -> DualBranchCnn {
        let w = loss.weights_for(3);
        let (bins, frames, fbins) = self.input_shapes();
        let d = self.branch_dim;
        let spectrum = (self.branches != Branches::SpectrogramOnly).then(|| SpectrumBranch::new(bins, d, self, device));
        let spectrogram =
            (self.branches != Branches::SpectrumOnly).then(|| SpectrogramBranch::new(frames, fbins, d, self, device));
        let both = self.branches == Branches::Both;
        let heads = [(if both { 2 * d } else { d }, true), (d, both && w[1] > 0.0), (d, both && w[2] > 0.0)];
        let mk = |(dim, on): (usize, bool)| on.then(|| Head::new(loss, dim, classes, device));
        DualBranchCnn {
            spectrum,
            spectrogram,
            head_concat: mk(heads[0]).expect("main head"),
            head_spectrum: mk(heads[1]),
            head_spectrogram: mk(heads[2]),
            loss_weights: w,
        }
    }
}

/// Lengths after the three strided convolutions of the spectrum branch.
fn spectrum_lengths(bins: usize) -> [usize; 3] {
    let (_, _, l1) = same_padding(bins, 256, 64);
    let (_, _, l2) = same_padding(l1, 64, 32);
    let (_, _, l3) = same_padding(l2, 16, 4);
    [l1, l2, l3]
}

fn keras_bn(n: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(n).with_momentum(0.01).with_epsilon(1e-3).init(device)
}

fn dense(i: usize, o: usize, device: &Device) -> Linear {
    LinearConfig::new(i, o).with_bias(false).init(device)
}

fn mha(d: usize, heads: usize, device: &Device) -> MultiHeadAttention {
    MultiHeadAttentionConfig::new(d, heads).with_dropout(0.0).init(device)
}

#[derive(Module, Debug)]
pub struct SpectrumBranch {
    convs: Vec<Conv1d>,
    /// Attention after each conv (frequency, frequency, channel).
    attention: Vec<MultiHeadAttention>,
    dense: Vec<Linear>,
    bns: Vec<BatchNorm>,
    out: Linear,
}

impl SpectrumBranch {
    fn new(bins: usize, dim: usize, cfg: &DualBranchCnnConfig, device: &Device) -> Self {
        let mut len = bins;
        let mut convs = Vec::new();
        for (cin, k, s) in [(1, 256, 64), (128, 64, 32), (128, 16, 4)] {
            let (l, r, out) = same_padding(len, k, s);
            convs.push(
                Conv1dConfig::new(cin, 128, k)
                    .with_stride(s)
                    .with_padding(PaddingConfig1d::Explicit(l, r))
                    .with_bias(false)
                    .init(device),
            );
            len = out;
        }
        let [h1, h2, h3] = cfg.spectrum_heads;
        let attention =
            if cfg.attention { vec![mha(128, h1, device), mha(128, h2, device), mha(len, h3, device)] } else { vec![] };
        SpectrumBranch {
            convs,
            attention,
            dense: vec![
                dense(128 * len, 128, device),
                dense(128, 128, device),
                dense(128, 128, device),
                dense(128, 128, device),
            ],
            bns: (0..4).map(|_| keras_bn(128, device)).collect(),
            out: dense(128, dim, device),
        }
    }

    /// [B, bins] -> [B, dim]
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let mut x = x.unsqueeze_dim::<3>(1); // [B, 1, bins]
        for (i, conv) in self.convs.iter().enumerate() {
            x = relu(conv.forward(x)); // [B, 128, L_i]
            if let Some(att) = self.attention.get(i) {
                x = if i < 2 {
                    // Frequency attention: tokens are positions, features are channels.
                    self_attention(att, x.swap_dims(1, 2)).swap_dims(1, 2) // tokens [B, L, 128]
                } else {
                    // Channel attention: tokens are channels, features are positions.
                    self_attention(att, x)
                };
            }
        }
        let [b, c, l] = x.dims();
        // Keras flattens channels-last: position-major, channel fastest.
        let mut h = x.swap_dims(1, 2).reshape([b, l * c]);
        for (fc, bn) in self.dense.iter().zip(&self.bns) {
            h = relu(bn.forward(fc.forward(h)));
        }
        self.out.forward(h)
    }
}

/// burn's `MultiHeadAttention::forward` (same weights, dropout 0, no masks)
/// with the attention product of `nn::attention`: at the 1 250 tokens of the
/// first module it trains the branch 1.3× faster in 0.6× the memory
/// (BENCHMARKS.md, "Where the time goes").
fn self_attention(att: &MultiHeadAttention, x: Tensor<3>) -> Tensor<3> {
    let [b, l, d] = x.dims();
    let heads = |lin: &Linear| lin.forward(x.clone()).reshape([b, l, att.n_heads, att.d_k]).swap_dims(1, 2);
    let (q, k, v) = (heads(&att.query), heads(&att.key), heads(&att.value));
    let context = attention(q, k, v, None, (att.d_k as f64).powf(-0.5));
    att.output.forward(context.swap_dims(1, 2).reshape([b, l, d]))
}

/// A 3×3 Keras-"same" convolution without bias for an input of `size`
/// (time, frequency); returns the layer and its output size.
fn conv3(cin: usize, cout: usize, stride: usize, size: (usize, usize), device: &Device) -> (Conv2d, (usize, usize)) {
    let (t, f) = (same_padding(size.0, 3, stride), same_padding(size.1, 3, stride));
    let conv = Conv2dConfig::new([cin, cout], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(t.0, f.0, t.1, f.1))
        .with_bias(false)
        .init(device);
    (conv, (t.2, f.2))
}

#[derive(Module, Debug)]
pub struct ResBlock {
    /// Pre-activation BN of the block input (blocks 3–5).
    bn_in: Option<BatchNorm>,
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    /// Projection shortcut (blocks 3–5).
    shortcut: Option<Conv2d>,
    bn_mid: BatchNorm,
    conv3: Conv2d,
    bn2: BatchNorm,
    conv4: Conv2d,
    /// Block 2 applies ReLU before BN in its second half (as the source code does).
    relu_before_bn: bool,
}

impl ResBlock {
    /// A block for inputs of `size` (time, frequency); also returns the output size.
    fn new(cin: usize, cout: usize, downsample: bool, size: (usize, usize), device: &Device) -> (Self, (usize, usize)) {
        let s = if downsample { 2 } else { 1 };
        let (conv1, out) = conv3(cin, cout, s, size, device);
        let block = ResBlock {
            bn_in: downsample.then(|| keras_bn(cin, device)),
            conv1,
            bn1: keras_bn(cout, device),
            conv2: conv3(cout, cout, 1, out, device).0,
            shortcut: downsample.then(|| Conv2dConfig::new([cin, cout], [1, 1]).with_bias(false).init(device)),
            bn_mid: keras_bn(cout, device),
            conv3: conv3(cout, cout, 1, out, device).0,
            bn2: keras_bn(cout, device),
            conv4: conv3(cout, cout, 1, out, device).0,
            relu_before_bn: !downsample,
        };
        (block, out)
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        // First half.
        let x = match &self.bn_in {
            Some(bn) => bn.forward(x),
            None => x,
        };
        let xr = conv2d(&self.conv1, relu(x.clone()));
        let xr = conv2d(&self.conv2, relu(self.bn1.forward(xr)));
        let shortcut = match &self.shortcut {
            Some(conv) => conv2d(conv, max_pool_2x2_same(x)),
            None => x,
        };
        let x = self.bn_mid.forward(shortcut + xr);
        // Second half.
        let h = conv2d(&self.conv3, relu(x.clone()));
        let h = if self.relu_before_bn { self.bn2.forward(relu(h)) } else { relu(self.bn2.forward(h)) };
        x + conv2d(&self.conv4, h)
    }
}

/// 2×2 max pooling with stride 2 and Keras "same" padding (odd sizes get
/// one padded row/column at the end that never wins the max).
fn max_pool_2x2_same(x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let x = if h % 2 == 1 || w % 2 == 1 { x.pad([(0, h % 2), (0, w % 2)], PadMode::Constant(-1e30)) } else { x };
    let pool: MaxPool2d = MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init();
    pool.forward(x)
}

/// Projection-free multi-head self-attention with a residual connection:
/// `X + concat_h softmax(X_h X_hᵀ / √d_h) X_h` over tokens [G, L, D].
pub fn plain_self_attention(x: Tensor<3>, heads: usize) -> Tensor<3> {
    let [g, l, d] = x.dims();
    let dh = d / heads;
    let xh = x.clone().reshape([g, l, heads, dh]).swap_dims(1, 2); // [G, H, L, dh]
    let att = attention(xh.clone(), xh.clone(), xh, None, (dh as f64).powf(-0.5)); // [G, H, L, dh]
    x + att.swap_dims(1, 2).reshape([g, l, d])
}

#[derive(Module, Debug)]
pub struct SpectrogramBranch {
    bn_freq: BatchNorm,
    conv: Conv2d,
    bn: BatchNorm,
    blocks: Vec<ResBlock>,
    heads: Vec<usize>,
    bn_flat: BatchNorm,
    out: Linear,
}

impl SpectrogramBranch {
    fn new(frames: usize, bins: usize, dim: usize, cfg: &DualBranchCnnConfig, device: &Device) -> Self {
        let (pt, pf) = (same_padding(frames, 7, 2), same_padding(bins, 7, 2)); // conv 7×7 / 2
        let mut size = ((pt.2 - 3) / 2 + 1, (pf.2 - 3) / 2 + 1); // max pool 3×3 / 2, valid
        let mut blocks = Vec::new();
        for (cin, cout, down) in [(16, 16, false), (16, 32, true), (32, 64, true), (64, 128, true)] {
            let (b, out) = ResBlock::new(cin, cout, down, size, device);
            blocks.push(b);
            size = out;
        }
        let f_final = size.1;
        SpectrogramBranch {
            bn_freq: keras_bn(bins, device),
            conv: Conv2dConfig::new([1, 16], [7, 7])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(pt.0, pf.0, pt.1, pf.1))
                .with_bias(false)
                .init(device),
            bn: keras_bn(16, device),
            blocks,
            heads: if cfg.attention { cfg.spectrogram_heads.to_vec() } else { vec![] },
            bn_flat: keras_bn(128 * f_final, device),
            out: dense(128 * f_final, dim, device),
        }
    }

    /// [B, frames, bins] -> [B, dim]
    pub fn forward(&self, x: Tensor<3>) -> Tensor<2> {
        // Per-frequency normalisation, statistics over batch × time.
        let x = self.bn_freq.forward(x.swap_dims(1, 2)).swap_dims(1, 2); // [B, T, F]
        let x = x.unsqueeze_dim::<4>(1); // [B, 1, T, F]
        let x = relu(self.bn.forward(conv2d(&self.conv, x)));
        let pool: MaxPool2d = MaxPool2dConfig::new([3, 3]).with_strides([2, 2]).init();
        let mut x = pool.forward(x);
        for b in &self.blocks {
            x = b.forward(x);
        }
        let [b, c, t, f] = x.dims(); // [B, 128, T', F']
        if let Some(&h) = self.heads.first() {
            // Frequency attention: per time step, tokens are frequencies.
            let y = x.permute([0, 2, 3, 1]).reshape([b * t, f, c]);
            x = plain_self_attention(y, h).reshape([b, t, f, c]).permute([0, 3, 1, 2]);
        }
        if let Some(&h) = self.heads.get(1) {
            // Time attention: per frequency, tokens are time steps.
            let y = x.permute([0, 3, 2, 1]).reshape([b * f, t, c]);
            x = plain_self_attention(y, h).reshape([b, f, t, c]).permute([0, 3, 2, 1]);
        }
        // Max pooling over the whole time axis, then Keras' channels-last flatten.
        let x = x.max_dim(2); // [B, C, 1, F']
        let h = x.permute([0, 2, 3, 1]).reshape([b, f * c]);
        self.out.forward(self.bn_flat.forward(h))
    }
}

#[derive(Module, Debug)]
pub struct DualBranchCnn {
    pub spectrum: Option<SpectrumBranch>,
    pub spectrogram: Option<SpectrogramBranch>,
    pub head_concat: Head,
    pub head_spectrum: Option<Head>,
    pub head_spectrogram: Option<Head>,
    pub loss_weights: Vec<f64>,
}

/// One batch of model inputs.
pub struct DualBranchBatch {
    /// [B, bins]
    pub spectrum: Tensor<2>,
    /// [B, frames, bins]
    pub spectrogram: Tensor<3>,
    pub labels: Option<Tensor<1, Int>>,
}

/// Branch embeddings of one forward pass.
pub struct Embeddings {
    pub spectrum: Option<Tensor<2>>,
    pub spectrogram: Option<Tensor<2>>,
    /// What the heads and the scoring back-end see.
    pub concat: Tensor<2>,
}

impl DualBranchCnn {
    pub fn forward(&self, batch: &DualBranchBatch) -> Embeddings {
        let s = self.spectrum.as_ref().map(|m| m.forward(batch.spectrum.clone()));
        let g = self.spectrogram.as_ref().map(|m| m.forward(batch.spectrogram.clone()));
        let concat = match (&s, &g) {
            (Some(a), Some(b)) => Tensor::cat(vec![a.clone(), b.clone()], 1),
            (Some(a), None) => a.clone(),
            (None, Some(b)) => b.clone(),
            (None, None) => unreachable!("a model has at least one branch"),
        };
        Embeddings { spectrum: s, spectrogram: g, concat }
    }

    /// The embedding used for scoring (L2-normalised concatenation).
    pub fn embed(&self, batch: &DualBranchBatch) -> Tensor<2> {
        l2_normalize(self.forward(batch).concat, 1)
    }

    /// Weighted sum of the three ArcFace losses, and the parts.
    pub fn loss(&self, batch: &DualBranchBatch) -> (Tensor<1>, Vec<(&'static str, Tensor<1>)>) {
        let labels = batch.labels.clone().expect("training batch has labels");
        let e = self.forward(batch);
        let w = &self.loss_weights;
        let main = self.head_concat.loss(e.concat, labels.clone());
        let mut total = main.clone() * w[0];
        let mut parts = vec![("loss_concat", main.detach())];
        if let (Some(h), Some(x)) = (&self.head_spectrum, e.spectrum) {
            let l = h.loss(x, labels.clone());
            total = total + l.clone() * w[1];
            parts.push(("loss_spectrum", l.detach()));
        }
        if let (Some(h), Some(x)) = (&self.head_spectrogram, e.spectrogram) {
            let l = h.loss(x, labels);
            total = total + l.clone() * w[2];
            parts.push(("loss_spectrogram", l.detach()));
        }
        (total, parts)
    }
}

/// The pipeline's view of the model: two cached front-ends (spectrum and
/// spectrogram of the clip fitted to `seconds`), three ArcFace terms,
/// kNN on the L2-normalised concatenated embedding.
impl ModelInfo for DualBranchCnnConfig {
    fn validate(&self) -> Result<()> {
        DualBranchCnnConfig::validate(self)
    }
    fn loss_terms(&self) -> usize {
        3
    }
    fn scoring(&self) -> Scoring {
        Scoring::Embedding
    }
    fn frontends(&self) -> Vec<FrontEnd> {
        vec![FrontEnd::Spectrum { seconds: self.seconds }, FrontEnd::Spectrogram { seconds: self.seconds }]
    }
}

impl ModelSpec for DualBranchCnnConfig {
    type Model = DualBranchCnn;
    type Batch = DualBranchBatch;

    fn init(&self, ctx: &InitContext, device: &Device) -> Result<DualBranchCnn> {
        Ok(DualBranchCnnConfig::init(self, ctx.loss, ctx.classes, ctx.seed, device))
    }

    fn fit(&self, inputs: Vec<Frames>) -> Result<Vec<Frames>> {
        let (bins, frames, fbins) = self.input_shapes();
        let (s, g) = (&inputs[0], &inputs[1]);
        if s.data.len() != bins || (g.rows, g.cols) != (frames, fbins) {
            bail!(
                "inputs have shapes {}x{} and {}x{}, expected 1x{bins} and {frames}x{fbins}",
                s.rows,
                s.cols,
                g.rows,
                g.cols
            );
        }
        Ok(inputs)
    }

    fn batch(&self, inputs: Vec<Vec<Frames>>, ctx: &BatchContext, device: &Device) -> Result<DualBranchBatch> {
        let (bins, frames, fbins) = self.input_shapes();
        let b = inputs.len();
        let mut spec = Vec::with_capacity(b * bins);
        let mut gram = Vec::with_capacity(b * frames * fbins);
        for clip in inputs {
            spec.extend_from_slice(&clip[0].data);
            gram.extend_from_slice(&clip[1].data);
        }
        Ok(DualBranchBatch {
            spectrum: Tensor::from_data(TensorData::new(spec, [b, bins]), device),
            spectrogram: Tensor::from_data(TensorData::new(gram, [b, frames, fbins]), device),
            labels: ctx.labels.map(|l| labels_tensor(l, device)),
        })
    }

    fn step(&self, model: &DualBranchCnn, batch: DualBranchBatch) -> StepOutput {
        let (loss, logs) = model.loss(&batch);
        StepOutput { loss, logs }
    }

    fn infer(&self, model: &DualBranchCnn, batch: DualBranchBatch) -> Tensor<2> {
        model.embed(&batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::util::{count_params, labels_tensor, to_vec};
    use burn::tensor::{Distribution, TensorData};

    fn batch(cfg: &DualBranchCnnConfig, b: usize, dev: &Device, labels: bool) -> DualBranchBatch {
        let (bins, frames, fbins) = cfg.input_shapes();
        DualBranchBatch {
            spectrum: Tensor::random([b, bins], Distribution::Uniform(0.0, 1.0), dev),
            spectrogram: Tensor::random([b, frames, fbins], Distribution::Normal(0.0, 1.0), dev),
            labels: labels.then(|| labels_tensor(&(0..b).map(|i| i % 3).collect::<Vec<_>>(), dev)),
        }
    }

    /// Scoring on flex runs attention through burn's fused kernel, other
    /// backends (and training) through the composition: the same weights
    /// give the same embeddings (strided head views, the 5-d heads of the
    /// channel attention included).
    #[test]
    fn fused_and_composed_attention_give_the_same_embeddings() {
        let flex = Device::flex();
        let cfg = DualBranchCnnConfig { seconds: 2.0, ..Default::default() };
        let model = cfg.init(&LossConfig::default(), 3, 7, &flex);
        let b = batch(&cfg, 2, &flex, false);
        let fused = to_vec(model.embed(&b));
        let other = crate::backend::device(crate::backend::BackendName::Ndarray).unwrap();
        let b = DualBranchBatch {
            spectrum: b.spectrum.to_device(&other),
            spectrogram: b.spectrogram.to_device(&other),
            labels: None,
        };
        let composed = to_vec(model.to_device(&other).embed(&b));
        let diff = composed.iter().zip(&fused).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "max difference {diff}");
    }

    #[test]
    fn keras_same_padding() {
        assert_eq!(same_padding(80000, 256, 64), (96, 96, 1250));
        assert_eq!(same_padding(1250, 64, 32), (31, 31, 40));
        assert_eq!(same_padding(40, 16, 4), (6, 6, 10));
        assert_eq!(same_padding(128, 3, 2), (0, 1, 64));
        assert_eq!(same_padding(77, 3, 2), (1, 1, 39));
        assert_eq!(same_padding(311, 7, 2), (3, 3, 156));
    }

    #[test]
    fn shapes_of_every_stage_on_10_s() {
        let dev = Device::flex();
        let cfg = DualBranchCnnConfig::default();
        cfg.validate().unwrap();
        assert_eq!(cfg.input_shapes(), (80000, 311, 513));
        let m = cfg.init(&LossConfig::default(), 5, 0, &dev);
        let x = batch(&cfg, 2, &dev, false);
        // Spectrum branch stages.
        let sb = m.spectrum.as_ref().unwrap();
        let mut h = x.spectrum.clone().unsqueeze_dim::<3>(1);
        for (conv, want) in sb.convs.iter().zip([1250, 40, 10]) {
            h = conv.forward(h);
            assert_eq!(h.dims(), [2, 128, want]);
        }
        assert_eq!(sb.attention[2].d_model, 10);
        // Spectrogram branch stages.
        let gb = m.spectrogram.as_ref().unwrap();
        let mut g = gb.conv.forward(x.spectrogram.clone().unsqueeze_dim::<4>(1));
        assert_eq!(g.dims(), [2, 16, 156, 257]);
        g = MaxPool2dConfig::new([3, 3]).with_strides([2, 2]).init().forward(g);
        assert_eq!(g.dims(), [2, 16, 77, 128]);
        for (b, want) in gb.blocks.iter().zip([[16, 77, 128], [32, 39, 64], [64, 20, 32], [128, 10, 16]]) {
            g = b.forward(g);
            assert_eq!(g.dims()[1..], want);
        }
        let a = plain_self_attention(g.clone().permute([0, 2, 3, 1]).reshape([20, 16, 128]), 2);
        assert_eq!(a.dims(), [20, 16, 128]);
        let e = m.forward(&x);
        assert_eq!(e.spectrum.unwrap().dims(), [2, 128]);
        assert_eq!(e.spectrogram.unwrap().dims(), [2, 128]);
        assert_eq!(e.concat.dims(), [2, 256]);
        let n = to_vec(m.embed(&x).powi_scalar(2).sum_dim(1));
        assert!(n.iter().all(|v| (v - 1.0).abs() < 1e-5));
    }

    #[test]
    fn parameter_count_matches_the_budget() {
        // Backbone without attention = Wilkinghoff's 2 540 978 (models.md §1.2).
        let dev = Device::flex();
        let plain = DualBranchCnnConfig { attention: false, ..Default::default() };
        let concat_only = LossConfig { weights: vec![1.0, 0.0, 0.0], ..Default::default() };
        let m = plain.init(&concat_only, 1, 0, &dev);
        let heads = count_params(&m.head_concat);
        assert_eq!(count_params(&m) - heads, 2_540_978);
        // The report's model: + 132 536 attention parameters + three ArcFace heads.
        let full = DualBranchCnnConfig::default().init(&LossConfig::default(), 150, 0, &dev);
        assert_eq!(count_params(&full), 2_540_978 + 132_536 + 512 * 150);
    }

    #[test]
    fn one_training_step_reaches_both_branches_through_every_loss() {
        let dev = Device::flex().autodiff();
        let cfg = DualBranchCnnConfig { seconds: 2.0, ..Default::default() };
        cfg.validate().unwrap();
        let grads_of = |weights: [f64; 3]| {
            let m = cfg.init(&LossConfig { weights: weights.to_vec(), ..Default::default() }, 3, 1, &dev);
            let (loss, parts) = m.loss(&batch(&cfg, 3, &dev, true));
            assert!(loss.clone().into_scalar::<f32>().is_finite());
            let g = loss.backward();
            let spec = m.spectrum.as_ref().unwrap().out.weight.grad(&g).map(|t| t.abs().sum().into_scalar::<f32>());
            let gram = m.spectrogram.as_ref().unwrap().out.weight.grad(&g).map(|t| t.abs().sum().into_scalar::<f32>());
            (spec.unwrap_or(0.0), gram.unwrap_or(0.0), parts.len())
        };
        let (s, g, n) = grads_of([1.0, 1.0, 1.0]);
        assert!(s > 0.0 && g > 0.0 && n == 3);
        // Only the spectrum loss: no gradient may reach the spectrogram branch, and vice versa.
        let (s, g, _) = grads_of([0.0, 1.0, 0.0]);
        assert!(s > 0.0 && g == 0.0, "spectrum loss leaked: {s} {g}");
        let (s, g, _) = grads_of([0.0, 0.0, 1.0]);
        assert!(s == 0.0 && g > 0.0, "spectrogram loss leaked: {s} {g}");
    }

    #[test]
    fn ablations_build() {
        let dev = Device::flex();
        for branches in [Branches::SpectrogramOnly, Branches::SpectrumOnly] {
            let cfg = DualBranchCnnConfig { seconds: 2.0, branches, ..Default::default() };
            let m = cfg.init(&LossConfig::default(), 2, 0, &dev);
            assert_eq!(m.forward(&batch(&cfg, 2, &dev, false)).concat.dims(), [2, 128]);
            assert!(m.head_spectrum.is_none() && m.head_spectrogram.is_none());
        }
        let _ = TensorData::new(vec![0.0f32], [1]);
    }
}
