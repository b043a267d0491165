//! LoRA adapters of the EAT blocks (report §2.4: q and v and the
//! feed-forward layers) on the shared layer [`crate::nn::lora`]. q, k and v
//! are column slices of the fused qkv projection, so their adapters update
//! only their slice (loralib's `MergedLinear(enable_lora=[q, k, v])`
//! semantics; peft on `qkv` would adapt k as well).

use super::config::{LoraConfig, LoraTarget, TARGETS};
use super::encoder::{Block, EatEncoder};
use crate::nn::lora::{self, LoraAdapter};
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor};
use std::ops::Range;

/// The Linear an adapter on `t` modifies, its output columns, and the slot.
fn slot(block: &mut Block, t: LoraTarget) -> (&mut Linear, Range<usize>, &mut Option<LoraAdapter>) {
    let d = block.attn.proj.weight.lazy_shape()[1];
    let f = block.mlp.fc1.weight.lazy_shape()[1];
    let (a, m) = (&mut block.attn, &mut block.mlp);
    match t {
        LoraTarget::Q => (&mut a.qkv, 0..d, &mut a.q_lora),
        LoraTarget::K => (&mut a.qkv, d..2 * d, &mut a.k_lora),
        LoraTarget::V => (&mut a.qkv, 2 * d..3 * d, &mut a.v_lora),
        LoraTarget::Out => (&mut a.proj, 0..d, &mut a.out_lora),
        LoraTarget::Fc1 => (&mut m.fc1, 0..f, &mut m.fc1_lora),
        LoraTarget::Fc2 => (&mut m.fc2, 0..d, &mut m.fc2_lora),
    }
}

/// Freezes every parameter of `encoder` and attaches fresh adapters as
/// `cfg` says. A of block i comes from the stream (seed, i): adapters are
/// a function of the seed alone.
pub fn attach(encoder: EatEncoder, cfg: &LoraConfig, seed: u64, device: &Device) -> EatEncoder {
    let mut enc = encoder.no_grad();
    let depth = enc.blocks.len();
    for (i, block) in enc.blocks.iter_mut().enumerate() {
        let mut r = lora::layer_stream(seed, i);
        for t in TARGETS {
            let (lin, cols, adapter) = slot(block, t);
            *adapter = cfg
                .rank_of(t, i, depth)
                .map(|rank| lora::adapter_for(&lin.weight, cols.len(), rank, cfg, &mut r, device));
        }
    }
    enc
}

/// Folds every adapter into its base weight and removes it: a plain encoder
/// computing the same function, with frozen parameters.
pub fn merge(encoder: EatEncoder) -> EatEncoder {
    let mut enc = encoder;
    for block in enc.blocks.iter_mut() {
        for t in TARGETS {
            let (lin, cols, adapter) = slot(block, t);
            if let Some(a) = adapter.take() {
                let w: Param<Tensor<2>> = lora::merged(&lin.weight, &a, cols);
                lin.weight = w;
            }
        }
    }
    enc
}

fn adapters(block: &Block) -> [&Option<LoraAdapter>; 6] {
    let (a, m) = (&block.attn, &block.mlp);
    [&a.q_lora, &a.k_lora, &a.v_lora, &a.out_lora, &m.fc1_lora, &m.fc2_lora]
}

/// Whether any block carries an adapter.
pub fn has_adapters(encoder: &EatEncoder) -> bool {
    encoder.blocks.iter().any(|b| adapters(b).iter().any(|a| a.is_some()))
}

/// Number of adapter parameters (A and B of every adapter).
pub fn adapter_params(encoder: &EatEncoder) -> usize {
    encoder.blocks.iter().flat_map(adapters).flatten().map(crate::nn::util::count_params).sum()
}
