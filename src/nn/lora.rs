//! LoRA (Hu et al., 2021) as a shared layer, with peft's semantics
//! (`peft/tuners/lora/layer.py`): `y = W x + b + (alpha/r) · B(A(dropout(x)))`;
//! A drawn Kaiming-uniform as `nn.init.kaiming_uniform_(A, a=√5)` does
//! (U(±1/√d_in)), B zero, so a new adapter leaves the model unchanged. The
//! base weights stay frozen; only A and B train. An adapter sits on a whole
//! Linear ([`project`]) or on a column slice of a fused projection such as a
//! fused qkv ([`project_fused`], q and v as in EAT-LoRA); [`merged`] folds
//! adapters into the base weight for inference.
//!
//! burn's built-in `burn::module::Lora` reparameterises whole parameters by
//! path; it has no input dropout, no per-slice adapters and no peft
//! initialisation stream, which the BEATs/EAT recipes need, hence this layer.

use crate::util::rng;
use anyhow::{Result, bail};
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Which projections get LoRA adapters: the attention's q, k, v and output
/// projections, and the two feed-forward layers (EAT-LoRA adapts them,
/// report §2.4; BEATs-LoRA adapts attention only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraTarget {
    Q,
    K,
    V,
    Out,
    Fc1,
    Fc2,
}

/// LoRA settings (report: q, v, out; rank 64, rank 96 for v in the latter
/// half of the layers). peft semantics: `y = W x + b + (alpha/r)·B(A(dropout(x)))`,
/// A Kaiming-uniform, B zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    pub targets: Vec<LoraTarget>,
    /// Rank of every adapter …
    pub rank: usize,
    /// … except `v_proj` in layers ≥ L/2 (None = `rank`).
    pub v_rank_latter_half: Option<usize>,
    /// Scale numerator: the update is scaled by alpha/rank (peft default 8).
    pub alpha: f64,
    /// Dropout on the adapter input (peft `lora_dropout`), masks drawn from
    /// the run's seeded streams.
    pub dropout: f64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            targets: vec![LoraTarget::Q, LoraTarget::V, LoraTarget::Out],
            rank: 64,
            v_rank_latter_half: Some(96),
            alpha: 8.0,
            dropout: 0.0,
        }
    }
}

impl LoraConfig {
    /// Rank of the adapter on `target` in layer `layer` of `layers`, if any.
    pub fn rank_of(&self, target: LoraTarget, layer: usize, layers: usize) -> Option<usize> {
        if !self.targets.contains(&target) {
            return None;
        }
        match (target, self.v_rank_latter_half) {
            (LoraTarget::V, Some(r)) if layer >= layers / 2 => Some(r),
            _ => Some(self.rank),
        }
    }

    /// Checks the settings for a model whose adapters can sit on `supported`.
    pub fn validate_for(&self, model: &str, supported: &[LoraTarget]) -> Result<()> {
        if let Some(t) = self.targets.iter().find(|t| !supported.contains(t)) {
            bail!("lora.targets: {model} has no adapter slot for {t:?} (supported: {supported:?})");
        }
        self.validate()
    }

    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 || self.v_rank_latter_half == Some(0) {
            bail!("lora: ranks must be at least 1");
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            bail!("lora.alpha must be positive");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("lora.dropout must be in [0, 1)");
        }
        Ok(())
    }
}

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

/// `lin(x)` plus the adapter's update, if any.
pub fn project(lin: &Linear, adapter: Option<&LoraAdapter>, x: Tensor<3>, rng: Option<&mut ChaCha8Rng>) -> Tensor<3> {
    let y = super::linear::forward(lin, x.clone());
    match adapter {
        Some(a) => y + a.forward(x, rng),
        None => y,
    }
}

/// `gelu(project(..))` (exact GELU): one pass on the fast path when there
/// is no adapter (inference after [`merged`], or a layer left without one).
pub fn project_gelu(
    lin: &Linear,
    adapter: Option<&LoraAdapter>,
    x: Tensor<3>,
    rng: Option<&mut ChaCha8Rng>,
) -> Tensor<3> {
    match adapter {
        Some(a) => super::activation::gelu_tensor(super::linear::forward(lin, x.clone()) + a.forward(x, rng)),
        None => super::linear::forward_gelu(lin, x),
    }
}

/// A fused projection `lin` (e.g. qkv, output columns [q | k | v]) with
/// adapters on column slices: each adapter's update is added to its columns
/// only. Slices must not overlap.
pub fn project_fused(
    lin: &Linear,
    slices: &[(Range<usize>, &LoraAdapter)],
    x: Tensor<3>,
    mut rng: Option<&mut ChaCha8Rng>,
) -> Tensor<3> {
    let mut y = super::linear::forward(lin, x.clone());
    for (cols, a) in slices {
        let [b, n, _] = y.dims();
        let u = a.forward(x.clone(), rng.as_deref_mut());
        let current = y.clone().slice([0..b, 0..n, cols.clone()]);
        y = y.slice_assign([0..b, 0..n, cols.clone()], current + u);
    }
    y
}

/// `weight` ([d_in, d_out], burn's Linear layout) with the adapter folded
/// into output columns `cols`; keeps the parameter id and stays frozen.
pub fn merged(weight: &Param<Tensor<2>>, adapter: &LoraAdapter, cols: Range<usize>) -> Param<Tensor<2>> {
    let w = weight.val();
    let [d_in, _] = w.dims();
    let part = w.clone().slice([0..d_in, cols.clone()]) + adapter.delta();
    Param::initialized(weight.id, w.slice_assign([0..d_in, cols], part).detach())
}

/// A fresh adapter for the `[d_in, d_out]` weight of a Linear, A drawn
/// from the stream (seed, words).
pub fn adapter_for(
    weight: &Param<Tensor<2>>,
    cols: usize,
    rank: usize,
    cfg: &LoraConfig,
    r: &mut ChaCha8Rng,
    device: &Device,
) -> LoraAdapter {
    let [d_in, _] = weight.lazy_shape().dims();
    LoraAdapter::new(d_in, cols, rank, cfg.alpha, cfg.dropout, r, device)
}

/// The seeded stream of the adapters of layer `layer`: adapters are a
/// function of the seed alone.
pub fn layer_stream(seed: u64, layer: usize) -> ChaCha8Rng {
    rng::stream(seed, &[0x10a4_ada7, layer as u64])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LinearConfig;

    fn adapter(d_in: usize, d_out: usize, seed: u64, device: &Device) -> LoraAdapter {
        let mut a = LoraAdapter::new(d_in, d_out, 2, 4.0, 0.0, &mut layer_stream(seed, 0), device);
        // A fresh B is zero; give it values so the update is visible.
        let b: Vec<f32> = (0..2 * d_out).map(|i| (i as f32 * 0.37).sin()).collect();
        a.b = Param::from_data(TensorData::new(b, [2, d_out]), device);
        a
    }

    #[test]
    fn slice_adapters_touch_only_their_columns_and_merge_exactly() {
        let device = Device::flex();
        let lin = LinearConfig::new(4, 9).init(&device);
        let (q, v) = (adapter(4, 3, 1, &device), adapter(4, 3, 2, &device));
        let x = Tensor::<3>::from_data(
            TensorData::new((0..24).map(|i| (i as f32 * 0.21).cos()).collect(), [2, 3, 4]),
            &device,
        );
        let fused = project_fused(&lin, &[(0..3, &q), (6..9, &v)], x.clone(), None);
        let base = lin.forward(x.clone());
        let diff = crate::nn::util::to_vec(fused.clone() - base);
        for (i, d) in diff.iter().enumerate() {
            let col = i % 9;
            if (3..6).contains(&col) {
                assert_eq!(*d, 0.0, "k columns must be untouched");
            }
        }
        assert!(diff.iter().any(|d| d.abs() > 1e-3));
        let mut m = lin.clone();
        m.weight = merged(&m.weight, &q, 0..3);
        m.weight = merged(&m.weight, &v, 6..9);
        let a = crate::nn::util::to_vec(fused);
        let b = crate::nn::util::to_vec(m.forward(x));
        assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-5));
    }

    #[test]
    fn whole_linear_adapter_equals_a_full_slice() {
        let device = Device::flex();
        let lin = LinearConfig::new(4, 5).init(&device);
        let a = adapter(4, 5, 3, &device);
        let x = Tensor::<3>::from_data(TensorData::new((0..8).map(|i| i as f32 * 0.1).collect(), [1, 2, 4]), &device);
        let p = crate::nn::util::to_vec(project(&lin, Some(&a), x.clone(), None));
        let f = crate::nn::util::to_vec(project_fused(&lin, &[(0..5, &a)], x, None));
        assert_eq!(p, f);
    }
}
