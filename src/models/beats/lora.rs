//! LoRA adapters of the BEATs attention projections (report §2.3) on the
//! shared layer [`crate::nn::lora`]: which projections carry adapters,
//! attaching them to a loaded encoder, merging them for inference.

use super::config::{LoraConfig, LoraTarget};
use super::encoder::{BeatsEncoder, SelfAttention};
use crate::nn::lora;
pub use crate::nn::lora::LoraAdapter;
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Device;

fn adapter_slot(att: &mut SelfAttention, t: LoraTarget) -> (&Linear, &mut Option<LoraAdapter>) {
    match t {
        LoraTarget::Q => (&att.q_proj, &mut att.q_lora),
        LoraTarget::K => (&att.k_proj, &mut att.k_lora),
        LoraTarget::V => (&att.v_proj, &mut att.v_lora),
        LoraTarget::Out => (&att.out_proj, &mut att.out_lora),
        LoraTarget::Fc1 | LoraTarget::Fc2 => unreachable!("BeatsLoraConfig::validate rejects {t:?}"),
    }
}

/// The projections BEATs adapters can sit on.
pub const TARGETS: [LoraTarget; 4] = [LoraTarget::Q, LoraTarget::K, LoraTarget::V, LoraTarget::Out];

/// Freezes every parameter of `encoder` and attaches fresh adapters as
/// `cfg` says. A of layer i comes from the stream (seed, i): adapters are
/// a function of the seed alone.
pub fn attach(encoder: BeatsEncoder, cfg: &LoraConfig, seed: u64, device: &Device) -> BeatsEncoder {
    let mut enc = encoder.no_grad();
    let layers = enc.encoder.layers.len();
    for (i, layer) in enc.encoder.layers.iter_mut().enumerate() {
        let mut r = lora::layer_stream(seed, i);
        for t in TARGETS {
            let (lin, slot) = adapter_slot(&mut layer.self_attn, t);
            *slot = cfg.rank_of(t, i, layers).map(|rank| {
                let [_, d_out] = lin.weight.lazy_shape().dims();
                lora::adapter_for(&lin.weight, d_out, rank, cfg, &mut r, device)
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
                let [_, d_out] = lin.weight.lazy_shape().dims();
                let new = lora::merged(&lin.weight, &a, 0..d_out);
                match t {
                    LoraTarget::Q => att.q_proj.weight = new,
                    LoraTarget::K => att.k_proj.weight = new,
                    LoraTarget::V => att.v_proj.weight = new,
                    LoraTarget::Out => att.out_proj.weight = new,
                    LoraTarget::Fc1 | LoraTarget::Fc2 => unreachable!("no BEATs slot"),
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
