//! The BEATs encoder (UNILM `BEATs.extract_features` with
//! `TransformerEncoder` from `backbone.py`), eval semantics, plus the
//! training-only behaviour the fine-tuning uses (LayerDrop, layer-wise
//! gradient decay, LoRA dropout) driven by an explicit seeded [`TrainNoise`].
//!
//! Shapes for B clips of T fbank frames; E = `embed_dim`, D =
//! `encoder_embed_dim`, H heads of d = D/H, N = ⌊T/16⌋·8 tokens.

use super::config::BeatsConfig;
use crate::nn::attention::attention_tokens;
use crate::nn::linear;
use crate::nn::lora::{self, LoraAdapter};
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::module::conv1d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// Randomness and switches of a training forward pass. `None` everywhere
/// means evaluation (the original's `eval()`): no LayerDrop, no dropout,
/// no gradient scaling.
pub struct TrainNoise {
    /// Seeded stream (keyed by the micro-batch seed): LayerDrop draws and
    /// LoRA dropout masks, consumed in a fixed order.
    pub rng: ChaCha8Rng,
    /// Probability of skipping a layer (original: `encoder_layerdrop`).
    pub layerdrop: f64,
    /// `GradMultiply` ratio on each layer's input (1 = off).
    pub gradient_decay: f64,
}

/// The patch embedding, transformer encoder and (fine-tuned checkpoints
/// only) the AudioSet predictor of a BEATs checkpoint.
#[derive(Module, Debug)]
pub struct BeatsEncoder {
    /// Conv2d(1, E, p, stride p), no bias in BEATs_iter3.
    pub patch_embedding: Conv2d,
    /// LayerNorm(E) on the patch tokens.
    pub layer_norm: LayerNorm,
    /// Linear(E → D), present when E ≠ D.
    pub post_extract_proj: Option<Linear>,
    pub encoder: TransformerEncoder,
    /// Linear(D → classes) of fine-tuned checkpoints: loaded, never applied
    /// (the output is always the token features).
    pub predictor: Option<Linear>,
    pub patch: usize,
}

#[derive(Module, Debug)]
pub struct TransformerEncoder {
    pub pos_conv: PosConv,
    /// Applied before the layers (post-LN model).
    pub layer_norm: LayerNorm,
    pub layers: Vec<EncoderLayer>,
    pub num_buckets: usize,
    pub max_distance: usize,
}

/// Weight-normalised grouped Conv1d(D, D, k, padding k/2) + SamePad + GELU.
/// The weight is recomputed from (g, v) in every forward pass, as
/// `torch.nn.utils.weight_norm` does: `w = g · v / ‖v‖`, the norm taken over
/// dims (0, 1) for each kernel tap (weight_norm `dim=2`).
#[derive(Module, Debug)]
pub struct PosConv {
    /// [1, 1, k]
    pub weight_g: Param<Tensor<3>>,
    /// [D, D/groups, k]
    pub weight_v: Param<Tensor<3>>,
    /// [D]
    pub bias: Param<Tensor<1>>,
    pub groups: usize,
}

/// Post-LN transformer layer with DeepNorm residual scaling.
#[derive(Module, Debug)]
pub struct EncoderLayer {
    pub self_attn: SelfAttention,
    pub self_attn_layer_norm: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
    pub final_layer_norm: LayerNorm,
    /// Residual scale α.
    pub alpha: f64,
}

/// Multi-head attention with separate q/k/v/out projections, the T5-style
/// bucketed relative position bias (table held by layer 0 only, shared by
/// all layers) and the gated relative position term; optional LoRA adapters
/// on the projections.
#[derive(Module, Debug)]
pub struct SelfAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    /// Linear(d → 8) of the gate.
    pub grep_linear: Option<Linear>,
    /// [1, H, 1, 1]
    pub grep_a: Option<Param<Tensor<4>>>,
    /// Embedding(num_buckets, H); layer 0 only.
    pub relative_attention_bias: Option<Embedding>,
    pub q_lora: Option<LoraAdapter>,
    pub k_lora: Option<LoraAdapter>,
    pub v_lora: Option<LoraAdapter>,
    pub out_lora: Option<LoraAdapter>,
    pub heads: usize,
}

/// Intermediate values of one forward pass (the parity fixtures' names).
pub struct Trace {
    /// Patch conv output [B, E, T/16, F/16].
    pub patch_conv_out: Tensor<4>,
    /// [B, N, E], token n = t·(F/16) + f.
    pub patch_tokens: Tensor<3>,
    pub patch_tokens_ln: Tensor<3>,
    /// Encoder input [B, N, D].
    pub post_extract_proj: Tensor<3>,
    /// conv → SamePad → GELU, before the residual add.
    pub pos_conv_out: Tensor<3>,
    /// Input of layer 0.
    pub encoder_input_ln: Tensor<3>,
    /// Output of every layer (the last one is the final output).
    pub layers: Vec<Tensor<3>>,
}

fn ln(d: usize, device: &Device) -> LayerNorm {
    LayerNormConfig::new(d).with_epsilon(1e-5).init(device)
}

fn linear(i: usize, o: usize, device: &Device) -> Linear {
    LinearConfig::new(i, o).init(device)
}

impl BeatsEncoder {
    /// A randomly initialised (lazy) encoder of `cfg`'s sizes: load a
    /// checkpoint into it with [`super::loader`].
    pub fn new(cfg: &BeatsConfig, device: &Device) -> BeatsEncoder {
        let (e, d, p) = (cfg.embed_dim, cfg.encoder_embed_dim, cfg.patch());
        let patch_embedding =
            Conv2dConfig::new([1, e], [p, p]).with_stride([p, p]).with_bias(cfg.conv_bias).init(device);
        let layers = (0..cfg.encoder_layers).map(|i| EncoderLayer::new(cfg, i, device)).collect();
        let k = cfg.conv_pos;
        let pos_conv = PosConv {
            weight_g: Initializer::Ones.init([1, 1, k], device),
            weight_v: Initializer::Normal { mean: 0.0, std: (4.0 / (k * d) as f64).sqrt() }
                .init([d, d / cfg.conv_pos_groups, k], device),
            bias: Initializer::Zeros.init([d], device),
            groups: cfg.conv_pos_groups,
        };
        BeatsEncoder {
            patch_embedding,
            layer_norm: ln(e, device),
            post_extract_proj: (e != d).then(|| linear(e, d, device)),
            encoder: TransformerEncoder {
                pos_conv,
                layer_norm: ln(d, device),
                layers,
                num_buckets: cfg.num_buckets,
                max_distance: cfg.max_distance,
            },
            predictor: cfg.finetuned_model.then(|| linear(d, cfg.predictor_class, device)),
            patch: p,
        }
    }

    /// Width D of the output features.
    pub fn dim(&self) -> usize {
        self.encoder.layer_norm.gamma.lazy_shape()[0]
    }

    /// Number of output tokens for `frames` fbank frames of 128 bins.
    pub fn tokens(&self, frames: usize, bins: usize) -> usize {
        (frames / self.patch) * (bins / self.patch)
    }

    /// Token features [B, N, D] of normalised fbank input [B, T, F]
    /// (= `extract_features(...)[0]` of the original).
    pub fn forward(&self, fbank: Tensor<3>, noise: Option<&mut TrainNoise>) -> Tensor<3> {
        let x = self.embed_patches(fbank).3;
        self.encoder.forward(x, noise, None)
    }

    /// Patch conv output, tokens, tokens after LayerNorm, projected tokens.
    fn embed_patches(&self, fbank: Tensor<3>) -> (Tensor<4>, Tensor<3>, Tensor<3>, Tensor<3>) {
        let conv = self.patch_embedding.forward(fbank.unsqueeze_dim::<4>(1)); // [B, E, T', F']
        let [b, e, t, f] = conv.dims();
        let tokens = conv.clone().reshape([b, e, t * f]).swap_dims(1, 2); // [B, N, E]
        let normed = self.layer_norm.forward(tokens.clone());
        let proj = match &self.post_extract_proj {
            Some(p) => linear::forward(p, normed.clone()),
            None => normed.clone(),
        }; // [B, N, D]
        (conv, tokens, normed, proj)
    }

    /// Like [`BeatsEncoder::forward`] (eval), keeping every intermediate.
    pub fn trace(&self, fbank: Tensor<3>) -> Trace {
        let (patch_conv_out, patch_tokens, patch_tokens_ln, post_extract_proj) = self.embed_patches(fbank);
        let mut stages = Vec::new();
        self.encoder.forward(post_extract_proj.clone(), None, Some(&mut stages));
        let mut it = stages.into_iter();
        let pos_conv_out = it.next().expect("pos conv stage");
        let encoder_input_ln = it.next().expect("input stage");
        Trace {
            patch_conv_out,
            patch_tokens,
            patch_tokens_ln,
            post_extract_proj,
            pos_conv_out,
            encoder_input_ln,
            layers: it.collect(),
        }
    }
}

impl PosConv {
    /// The effective convolution weight g·v/‖v‖ [D, D/groups, k].
    pub fn weight(&self) -> Tensor<3> {
        let v = self.weight_v.val();
        let norm = v.clone().powi_scalar(2).sum_dim(0).sum_dim(1).sqrt(); // [1, 1, k]
        v * (self.weight_g.val() / norm)
    }

    /// conv → SamePad → GELU of [B, N, D], returned as [B, N, D].
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let w = self.weight();
        let k = w.dims()[2];
        let n = x.dims()[1];
        let opts = ConvOptions::new([1], [k / 2], [1], self.groups);
        let y = conv1d(x.swap_dims(1, 2), w, Some(self.bias.val()), opts); // [B, D, N + 1 - k%2]
        // SamePad: an even kernel gives one extra step at the end; drop it.
        let y = if k.is_multiple_of(2) { y.narrow(2, 0, n) } else { y };
        gelu(y).swap_dims(1, 2)
    }
}

/// `GradMultiply`: identity forward (bit-exact), gradient scaled by `r`.
fn grad_multiply(x: Tensor<3>, r: f64) -> Tensor<3> {
    let d = x.clone().detach();
    d.clone() + (x - d) * r
}

impl TransformerEncoder {
    /// Encoder of projected tokens [B, N, D]. With `stages`, pushes the
    /// pos-conv output, the layer-0 input and every layer's output.
    pub fn forward(
        &self,
        x: Tensor<3>,
        mut noise: Option<&mut TrainNoise>,
        mut stages: Option<&mut Vec<Tensor<3>>>,
    ) -> Tensor<3> {
        let pc = self.pos_conv.forward(x.clone());
        if let Some(s) = stages.as_deref_mut() {
            s.push(pc.clone());
        }
        let mut x = self.layer_norm.forward(x + pc);
        if let Some(s) = stages.as_deref_mut() {
            s.push(x.clone());
        }
        let n = x.dims()[1];
        let bias = self.layers.first().and_then(|l| l.self_attn.position_bias(n, self.num_buckets, self.max_distance));
        for layer in &self.layers {
            if let Some(tn) = noise.as_deref_mut() {
                // backbone.py: GradMultiply on the input, then one uniform
                // draw per layer; the layer runs when u > layerdrop.
                if tn.gradient_decay != 1.0 {
                    x = grad_multiply(x, tn.gradient_decay);
                }
                let u: f64 = tn.rng.random();
                if u <= tn.layerdrop {
                    if let Some(s) = stages.as_deref_mut() {
                        s.push(x.clone());
                    }
                    continue;
                }
            }
            x = layer.forward(x, bias.clone(), noise.as_deref_mut());
            if let Some(s) = stages.as_deref_mut() {
                s.push(x.clone());
            }
        }
        x
    }
}

impl EncoderLayer {
    fn new(cfg: &BeatsConfig, index: usize, device: &Device) -> EncoderLayer {
        let (d, f, h) = (cfg.encoder_embed_dim, cfg.encoder_ffn_embed_dim, cfg.encoder_attention_heads);
        let self_attn = SelfAttention {
            q_proj: linear(d, d, device),
            k_proj: linear(d, d, device),
            v_proj: linear(d, d, device),
            out_proj: linear(d, d, device),
            grep_linear: cfg.gru_rel_pos.then(|| linear(cfg.head_dim(), 8, device)),
            grep_a: cfg.gru_rel_pos.then(|| Initializer::Ones.init([1, h, 1, 1], device)),
            relative_attention_bias: (cfg.relative_position_embedding && index == 0)
                .then(|| EmbeddingConfig::new(cfg.num_buckets, h).init(device)),
            q_lora: None,
            k_lora: None,
            v_lora: None,
            out_lora: None,
            heads: h,
        };
        EncoderLayer {
            self_attn,
            self_attn_layer_norm: ln(d, device),
            fc1: linear(d, f, device),
            fc2: linear(f, d, device),
            final_layer_norm: ln(d, device),
            alpha: cfg.deep_norm_alpha(),
        }
    }

    /// `x = LN(α·x + MHA(x)); x = LN(α·x + fc2(gelu(fc1(x))))`.
    pub fn forward(&self, x: Tensor<3>, bias: Option<Tensor<4>>, noise: Option<&mut TrainNoise>) -> Tensor<3> {
        let a = self.self_attn.forward(x.clone(), bias, noise);
        let x = self.self_attn_layer_norm.forward(x * self.alpha + a);
        let f = linear::forward(&self.fc2, linear::forward_gelu(&self.fc1, x.clone()));
        self.final_layer_norm.forward(x * self.alpha + f)
    }
}

/// T5 bidirectional bucket of every (query i, key j) pair, row-major
/// [q_len, k_len], for rel = j − i, as `_relative_positions_bucket`
/// computes it (float32 log, truncation toward zero).
pub fn relative_position_bucket(q_len: usize, k_len: usize, num_buckets: usize, max_distance: usize) -> Vec<i64> {
    let nb = (num_buckets / 2) as i64;
    let max_exact = nb / 2;
    // Python: math.log(max_distance / max_exact) in double, applied to a
    // float32 tensor (so used as f32).
    let denom = (max_distance as f64 / max_exact as f64).ln() as f32;
    let scale = (nb - max_exact) as f32;
    let one = |rel: i64| -> i64 {
        let mut b = if rel > 0 { nb } else { 0 };
        let a = rel.abs();
        b += if a < max_exact {
            a
        } else {
            let large = ((a as f32 / max_exact as f32).ln() / denom * scale) as i64;
            (max_exact + large).min(nb - 1)
        };
        b
    };
    let mut out = Vec::with_capacity(q_len * k_len);
    for i in 0..q_len as i64 {
        for j in 0..k_len as i64 {
            out.push(one(j - i));
        }
    }
    out
}

impl SelfAttention {
    /// The un-gated relative position bias [1, H, N, N] from this layer's
    /// table (None for layers without one).
    pub fn position_bias(&self, n: usize, num_buckets: usize, max_distance: usize) -> Option<Tensor<4>> {
        let table = self.relative_attention_bias.as_ref()?.weight.val(); // [NB, H]
        let device = table.device();
        let buckets = relative_position_bucket(n, n, num_buckets, max_distance);
        let idx = Tensor::<1, Int>::from_data(TensorData::new(buckets, [n * n]), &device);
        let h = table.dims()[1];
        let v = table.select(0, idx); // [N·N, H]
        Some(v.reshape([n, n, h]).permute([2, 0, 1]).unsqueeze_dim::<4>(0))
    }

    fn project(lin: &Linear, adapter: &Option<LoraAdapter>, x: Tensor<3>, noise: Option<&mut TrainNoise>) -> Tensor<3> {
        lora::project(lin, adapter.as_ref(), x, noise.map(|n| &mut n.rng))
    }

    /// Self-attention of [B, N, D] with the shared bias [1, H, N, N].
    pub fn forward(&self, x: Tensor<3>, bias: Option<Tensor<4>>, mut noise: Option<&mut TrainNoise>) -> Tensor<3> {
        let [b, n, d] = x.dims();
        let h = self.heads;
        let hd = d / h;
        let q = Self::project(&self.q_proj, &self.q_lora, x.clone(), noise.as_deref_mut());
        let k = Self::project(&self.k_proj, &self.k_lora, x.clone(), noise.as_deref_mut());
        let v = Self::project(&self.v_proj, &self.v_lora, x, noise.as_deref_mut());
        let bias = bias.map(|bias| match (&self.grep_linear, &self.grep_a) {
            (Some(lin), Some(a)) => {
                // Gate from the unscaled projected query of each head.
                let q = q.clone().reshape([b, n, h, hd]).swap_dims(1, 2); // [B, H, N, d]
                let g = lin.forward(q).reshape([b, h, n, 2, 4]).sum_dim(4).reshape([b, h, n, 2]);
                let g = sigmoid(g);
                let ga = g.clone().narrow(3, 0, 1); // [B, H, N, 1]
                let gb = g.narrow(3, 1, 1);
                let gate = ga * (gb * a.val() - 1.0) + 2.0;
                gate * bias
            }
            _ => bias,
        });
        // The original computes (q·s/32)·kᵀ, subtracts the row max and
        // multiplies by 32: the same softmax input up to rounding.
        let o = attention_tokens(q, k, v, h, bias, (hd as f64).powf(-0.5));
        Self::project(&self.out_proj, &self.out_lora, o, noise)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// First |rel| of every bucket change for num_buckets 320, max_distance
    /// 800, from the original PyTorch function evaluated for |rel| ≤ 3000
    /// (values 0..=80 are the exact buckets).
    const CHANGES_320_800: [i64; 79] = [
        83, 85, 88, 90, 93, 96, 98, 101, 104, 107, 110, 114, 117, 120, 124, 127, 131, 135, 139, 143, 147, 151, 156,
        160, 165, 170, 175, 180, 185, 190, 196, 201, 207, 213, 220, 226, 233, 239, 246, 253, 261, 268, 276, 284, 293,
        301, 310, 319, 328, 338, 348, 358, 368, 379, 390, 401, 413, 425, 438, 450, 464, 477, 491, 505, 520, 535, 551,
        567, 583, 600, 618, 636, 655, 674, 693, 714, 734, 756, 778,
    ];

    #[test]
    fn buckets_match_the_original_for_long_inputs() {
        let row = relative_position_bucket(1, 3001, 320, 800); // rel = 0..=3000
        let mut expected_changes: Vec<i64> = (1..=80).collect();
        expected_changes.extend(CHANGES_320_800);
        let changes: Vec<i64> = (1..row.len()).filter(|&i| row[i] != row[i - 1]).map(|i| i as i64).collect();
        assert_eq!(changes, expected_changes);
        assert_eq!((row[0], row[1], row[3000]), (0, 161, 319));
        let col = relative_position_bucket(3001, 1, 320, 800); // rel = 0..=-3000
        assert_eq!(col[3000], 159);
        assert!((1..=3000).all(|i| col[i] + 160 == row[i] || i == 0));
    }

    #[test]
    fn grad_multiply_is_an_exact_identity_forward() {
        let dev = Device::flex();
        let x = Tensor::<3>::random([2, 3, 4], burn::tensor::Distribution::Normal(0.0, 3.0), &dev);
        let y = grad_multiply(x.clone(), 0.6);
        assert_eq!(x.into_data(), y.into_data());
    }
}
