//! LoRA adapters on the attention projections, with peft's semantics:
//! `y = W x + b + (alpha/r) · B(A(dropout(x)))`; A drawn Kaiming-uniform as
//! `nn.init.kaiming_uniform_(A, a=√5)` does (U(±1/√d_in)), B zero, so a new
//! adapter leaves the model unchanged. The base weights are frozen (no
//! gradients, hence no optimizer state or updates); only A and B train.
//! [`merge`] folds the adapters into the base weights for inference.

use super::config::{LoraConfig, LoraTarget};
use super::encoder::{BeatsEncoder, SelfAttention};
use crate::util::rng;
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// One low-rank update of a Linear layer.
#[derive(Module, Debug)]
pub struct LoraAdapter {
    /// Down-projection A, [d_in, r] (peft's `lora_A.weight` transposed).
    pub a: Param<Tensor<2>>,
    /// Up-projection B, [r, d_out] (peft's `lora_B.weight` transposed).
    pub b: Param<Tensor<2>>,
    /// alpha / r.
    pub scale: f64,
    /// Dropout probability on the adapter input (training only).
    pub dropout: f64,
}

impl LoraAdapter {
    /// A fresh adapter for a Linear(d_in → d_out): A from `rng`, B = 0.
    pub fn new(
        d_in: usize,
        d_out: usize,
        rank: usize,
        alpha: f64,
        dropout: f64,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> LoraAdapter {
        // kaiming_uniform_(a=√5): gain √(2/(1+5)), bound gain·√(3/fan_in) = 1/√d_in.
        let bound = 1.0 / (d_in as f64).sqrt();
        let a: Vec<f32> = (0..d_in * rank).map(|_| ((rng.random::<f64>() * 2.0 - 1.0) * bound) as f32).collect();
        LoraAdapter {
            a: Param::from_data(TensorData::new(a, [d_in, rank]), device),
            b: Param::from_data(TensorData::new(vec![0.0f32; rank * d_out], [rank, d_out]), device),
            scale: alpha / rank as f64,
            dropout,
        }
    }

    pub fn rank(&self) -> usize {
        self.a.lazy_shape()[1]
    }

    /// The update (alpha/r)·B(A(dropout(x))) of x [B, N, d_in]. Dropout is
    /// applied only when `rng` is given (training) and `dropout > 0`; its
    /// mask comes from `rng`.
    pub fn forward(&self, x: Tensor<3>, rng: Option<&mut ChaCha8Rng>) -> Tensor<3> {
        let x = match rng {
            Some(r) if self.dropout > 0.0 => {
                let keep = 1.0 - self.dropout;
                let dims = x.dims();
                let n: usize = dims.iter().product();
                let m: Vec<f32> =
                    (0..n).map(|_| if r.random::<f64>() < keep { (1.0 / keep) as f32 } else { 0.0 }).collect();
                x.clone() * Tensor::<3>::from_data(TensorData::new(m, dims), &x.device())
            }
            _ => x,
        };
        x.matmul(self.a.val().unsqueeze::<3>()).matmul(self.b.val().unsqueeze::<3>()) * self.scale
    }

    /// The weight update in burn's Linear layout [d_in, d_out].
    pub fn delta(&self) -> Tensor<2> {
        self.a.val().matmul(self.b.val()) * self.scale
    }
}

fn adapter_slot(att: &mut SelfAttention, t: LoraTarget) -> (&Linear, &mut Option<LoraAdapter>) {
    match t {
        LoraTarget::Q => (&att.q_proj, &mut att.q_lora),
        LoraTarget::K => (&att.k_proj, &mut att.k_lora),
        LoraTarget::V => (&att.v_proj, &mut att.v_lora),
        LoraTarget::Out => (&att.out_proj, &mut att.out_lora),
    }
}

const TARGETS: [LoraTarget; 4] = [LoraTarget::Q, LoraTarget::K, LoraTarget::V, LoraTarget::Out];

/// Freezes every parameter of `encoder` and attaches fresh adapters as
/// `cfg` says. A of layer i comes from the stream (seed, i): adapters are
/// a function of the seed alone.
pub fn attach(encoder: BeatsEncoder, cfg: &LoraConfig, seed: u64, device: &Device) -> BeatsEncoder {
    let mut enc = encoder.no_grad();
    let layers = enc.encoder.layers.len();
    for (i, layer) in enc.encoder.layers.iter_mut().enumerate() {
        let mut r = rng::stream(seed, &[0x10a4_ada7, i as u64]);
        for t in TARGETS {
            let (lin, slot) = adapter_slot(&mut layer.self_attn, t);
            *slot = cfg.rank_of(t, i, layers).map(|rank| {
                let [d_in, d_out] = lin.weight.lazy_shape().dims();
                LoraAdapter::new(d_in, d_out, rank, cfg.alpha, cfg.dropout, &mut r, device)
            });
        }
    }
    enc
}

/// Folds every adapter into its base weight (`W + (alpha/r)·A·B` in burn's
/// layout) and removes the adapters: a plain encoder computing the same
/// function, with frozen parameters.
pub fn merge(encoder: BeatsEncoder) -> BeatsEncoder {
    let mut enc = encoder;
    for layer in enc.encoder.layers.iter_mut() {
        let att = &mut layer.self_attn;
        for t in TARGETS {
            let (lin, slot) = adapter_slot(att, t);
            if let Some(a) = slot.take() {
                let w = (lin.weight.val() + a.delta()).detach();
                let id = lin.weight.id;
                let new = Param::initialized(id, w);
                match t {
                    LoraTarget::Q => att.q_proj.weight = new,
                    LoraTarget::K => att.k_proj.weight = new,
                    LoraTarget::V => att.v_proj.weight = new,
                    LoraTarget::Out => att.out_proj.weight = new,
                }
            }
        }
    }
    enc
}

/// Whether any layer carries an adapter.
pub fn has_adapters(encoder: &BeatsEncoder) -> bool {
    encoder.encoder.layers.iter().any(|l| {
        let a = &l.self_attn;
        a.q_lora.is_some() || a.k_lora.is_some() || a.v_lora.is_some() || a.out_lora.is_some()
    })
}

/// Number of adapter parameters (A and B of every adapter).
pub fn adapter_params(encoder: &BeatsEncoder) -> usize {
    encoder
        .encoder
        .layers
        .iter()
        .flat_map(|l| {
            let a = &l.self_attn;
            [&a.q_lora, &a.k_lora, &a.v_lora, &a.out_lora]
        })
        .flatten()
        .map(crate::nn::util::count_params)
        .sum()
}
