//! The EAT encoder as `Data2VecMultiModel.extract_features(x, mode="IMAGE",
//! mask=False, remove_extra_tokens=False)` computes it (cwx-worst-one/EAT
//! `models/EAT_pretraining.py`, `models/images.py`, `models/base.py`,
//! `models/modules.py` `AltBlock`; the same as the Hugging Face port's
//! `EAT.extract_features`), eval semantics, with optional LoRA adapters.
//!
//! Shapes for B clips of T fbank frames (T a multiple of 16) and F = 128
//! bins; D = `embed_dim`, H heads of d = D/H, N = (T/16)·(F/16) patch
//! tokens, token n = t·(F/16) + f; the output has 1 + N tokens, CLS first.

use super::config::EatConfig;
use crate::nn::attention::attention_tokens;
use crate::nn::lora::{self, LoraAdapter};
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use rand_chacha::ChaCha8Rng;

/// Patch embedding, fixed positions, CLS token, pre-norm and the post-LN
/// blocks of an EAT checkpoint (the decoder of pre-training is not part of
/// it).
#[derive(Module, Debug)]
pub struct EatEncoder {
    /// Conv2d(1, D, 16, stride 16) with bias (`local_encoder.proj`).
    pub proj: Conv2d,
    /// Fixed 2-D sin-cos table [1, P, D], loaded from the checkpoint
    /// (frozen in the original too).
    pub positions: Param<Tensor<3>>,
    /// The CLS token [1, 1, D] (`extra_tokens`); it gets no position.
    pub extra_tokens: Param<Tensor<3>>,
    /// LayerNorm on CLS + patches before the blocks (`context_encoder.norm`).
    pub pre_norm: LayerNorm,
    pub blocks: Vec<Block>,
    pub patch: usize,
}

/// `AltBlock` with `layer_norm_first = False`:
/// `x = norm1(x + attn(x)); x = norm2(x + mlp(x))`.
#[derive(Module, Debug)]
pub struct Block {
    pub norm1: LayerNorm,
    pub attn: Attention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
}

/// Multi-head self-attention with a fused qkv projection (output columns
/// [q | k | v], head-major inside each) and an output projection; adapters
/// on column slices of qkv and on proj.
#[derive(Module, Debug)]
pub struct Attention {
    pub qkv: Linear,
    pub proj: Linear,
    pub q_lora: Option<LoraAdapter>,
    pub k_lora: Option<LoraAdapter>,
    pub v_lora: Option<LoraAdapter>,
    pub out_lora: Option<LoraAdapter>,
    pub heads: usize,
}

/// fc1 → GELU (exact erf) → fc2, with optional adapters on both.
#[derive(Module, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
    pub fc1_lora: Option<LoraAdapter>,
    pub fc2_lora: Option<LoraAdapter>,
}

/// Intermediate values of one forward pass (the parity fixtures' names).
pub struct Trace {
    /// Patch conv output as tokens [B, N, D].
    pub patch_tokens: Tensor<3>,
    pub patch_tokens_plus_pos: Tensor<3>,
    /// CLS prepended, then pre-norm [B, 1 + N, D].
    pub context_encoder_out: Tensor<3>,
    /// Output of every block (the last one is the final output).
    pub layers: Vec<Tensor<3>>,
}

fn ln(d: usize, eps: f64, device: &Device) -> LayerNorm {
    LayerNormConfig::new(d).with_epsilon(eps).init(device)
}

impl EatEncoder {
    /// A randomly initialised (lazy) encoder of `cfg`'s sizes: load a
    /// checkpoint into it with [`super::loader`].
    pub fn new(cfg: &EatConfig, device: &Device) -> EatEncoder {
        let (d, p) = (cfg.embed_dim, cfg.patch_size);
        EatEncoder {
            proj: Conv2dConfig::new([cfg.in_chans, d], [p, p]).with_stride([p, p]).with_bias(true).init(device),
            positions: Initializer::Zeros.init([1, cfg.positions(), d], device),
            extra_tokens: Initializer::Normal { mean: 0.0, std: 0.02 }.init([1, 1, d], device),
            pre_norm: ln(d, cfg.norm_eps, device),
            blocks: (0..cfg.depth).map(|_| Block::new(cfg, device)).collect(),
            patch: p,
        }
    }

    /// Width D of the output features.
    pub fn dim(&self) -> usize {
        self.pre_norm.gamma.lazy_shape()[0]
    }

    /// Number of patch tokens for `frames` × `bins` input (CLS excluded).
    pub fn tokens(&self, frames: usize, bins: usize) -> usize {
        (frames / self.patch) * (bins / self.patch)
    }

    /// Most patch tokens the positional table covers.
    pub fn max_tokens(&self) -> usize {
        self.positions.lazy_shape()[1]
    }

    /// Output sequence [B, 1 + N, D], CLS first, of normalised, padded
    /// fbank input [B, T, F]. `rng` drives LoRA dropout (training only).
    pub fn forward(&self, fbank: Tensor<3>, mut rng: Option<&mut ChaCha8Rng>) -> Tensor<3> {
        let (_, x) = self.embed_patches(fbank);
        let mut x = self.pre_norm.forward(self.prepend_cls(x));
        for block in &self.blocks {
            x = block.forward(x, rng.as_deref_mut());
        }
        x
    }

    /// Patch tokens, and the same plus their positions.
    fn embed_patches(&self, fbank: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
        let conv = self.proj.forward(fbank.unsqueeze_dim::<4>(1)); // [B, D, T', F']
        let [b, d, t, f] = conv.dims();
        let tokens = conv.reshape([b, d, t * f]).swap_dims(1, 2); // [B, N, D]
        let n = t * f;
        assert!(n <= self.max_tokens(), "{n} patch tokens exceed the positional table ({})", self.max_tokens());
        let pos = self.positions.val().narrow(1, 0, n);
        (tokens.clone(), tokens + pos)
    }

    fn prepend_cls(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, _, d] = x.dims();
        let cls = self.extra_tokens.val().expand([b, 1, d]);
        Tensor::cat(vec![cls, x], 1)
    }

    /// Like [`EatEncoder::forward`] (eval), keeping every intermediate.
    pub fn trace(&self, fbank: Tensor<3>) -> Trace {
        let (patch_tokens, patch_tokens_plus_pos) = self.embed_patches(fbank);
        let context_encoder_out = self.pre_norm.forward(self.prepend_cls(patch_tokens_plus_pos.clone()));
        let mut layers: Vec<Tensor<3>> = Vec::new();
        for block in &self.blocks {
            let x = layers.last().unwrap_or(&context_encoder_out).clone();
            layers.push(block.forward(x, None));
        }
        Trace { patch_tokens, patch_tokens_plus_pos, context_encoder_out, layers }
    }
}

impl Block {
    fn new(cfg: &EatConfig, device: &Device) -> Block {
        let (d, f, eps) = (cfg.embed_dim, cfg.ffn_dim(), cfg.norm_eps);
        let linear = |i, o| LinearConfig::new(i, o).with_bias(true).init(device);
        Block {
            norm1: ln(d, eps, device),
            attn: Attention {
                qkv: LinearConfig::new(d, 3 * d).with_bias(cfg.qkv_bias).init(device),
                proj: linear(d, d),
                q_lora: None,
                k_lora: None,
                v_lora: None,
                out_lora: None,
                heads: cfg.num_heads,
            },
            norm2: ln(d, eps, device),
            mlp: Mlp { fc1: linear(d, f), fc2: linear(f, d), fc1_lora: None, fc2_lora: None },
        }
    }

    pub fn forward(&self, x: Tensor<3>, mut rng: Option<&mut ChaCha8Rng>) -> Tensor<3> {
        let a = self.attn.forward(x.clone(), rng.as_deref_mut());
        let x = self.norm1.forward(x + a);
        let m = self.mlp.forward(x.clone(), rng);
        self.norm2.forward(x + m)
    }
}

impl Attention {
    /// qkv of [B, N, D] with the slice adapters: [B, N, 3D].
    fn qkv(&self, x: Tensor<3>, rng: Option<&mut ChaCha8Rng>) -> Tensor<3> {
        let d = x.dims()[2];
        let slots = [(0..d, &self.q_lora), (d..2 * d, &self.k_lora), (2 * d..3 * d, &self.v_lora)];
        let slices: Vec<_> = slots.into_iter().filter_map(|(cols, a)| a.as_ref().map(|a| (cols, a))).collect();
        lora::project_fused(&self.qkv, &slices, x, rng)
    }

    pub fn forward(&self, x: Tensor<3>, mut rng: Option<&mut ChaCha8Rng>) -> Tensor<3> {
        let d = x.dims()[2];
        let (h, hd) = (self.heads, d / self.heads);
        let qkv = self.qkv(x, rng.as_deref_mut());
        let part = |s: usize| qkv.clone().narrow(2, s * d, d); // [B, N, D]
        let o = attention_tokens(part(0), part(1), part(2), h, None, (hd as f64).powf(-0.5));
        lora::project(&self.proj, self.out_lora.as_ref(), o, rng)
    }
}

impl Mlp {
    pub fn forward(&self, x: Tensor<3>, mut rng: Option<&mut ChaCha8Rng>) -> Tensor<3> {
        let hidden = lora::project_gelu(&self.fc1, self.fc1_lora.as_ref(), x, rng.as_deref_mut());
        lora::project(&self.fc2, self.fc2_lora.as_ref(), hidden, rng)
    }
}

/// The fixed positional table EAT stores (MAE's
/// `get_2d_sincos_pos_embed_flexible` on a (time, frequency) grid): token
/// (t, f) gets the 1-D sin-cos code of f in its first D/2 dims and of t in
/// the last D/2 (the original's meshgrid order swaps the names), each code
/// being [sin(p·ω_k)]_k ++ [cos(p·ω_k)]_k with ω_k = 10000^(−k/(D/4)).
/// Rows t·F' + f, [rows · D] row-major, computed in f64.
pub fn sincos_positions(time: usize, freq: usize, dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let quarter = half / 2;
    let code = |p: f64, out: &mut Vec<f32>| {
        let omega = |k: usize| 1.0 / 10000f64.powf(k as f64 / quarter as f64);
        out.extend((0..quarter).map(|k| (p * omega(k)).sin() as f32));
        out.extend((0..quarter).map(|k| (p * omega(k)).cos() as f32));
    };
    let mut out = Vec::with_capacity(time * freq * dim);
    for t in 0..time {
        for f in 0..freq {
            code(f as f64, &mut out);
            code(t as f64, &mut out);
        }
    }
    out
}
