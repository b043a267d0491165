//! AdamW settings (PyTorch defaults, not burn's) and global-norm gradient
//! clipping.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// AdamW hyper-parameters. Defaults are PyTorch's `torch.optim.AdamW`
/// (burn's own defaults differ: eps 1e-5, weight decay 1e-4).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamW {
    /// Learning rate when no schedule is given.
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default = "d_b1")]
    pub beta1: f32,
    #[serde(default = "d_b2")]
    pub beta2: f32,
    #[serde(default = "d_eps")]
    pub eps: f32,
    #[serde(default = "d_wd")]
    pub weight_decay: f32,
}

fn d_lr() -> f64 {
    1e-3
}
fn d_b1() -> f32 {
    0.9
}
fn d_b2() -> f32 {
    0.999
}
fn d_eps() -> f32 {
    1e-8
}
fn d_wd() -> f32 {
    1e-2
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW { lr: d_lr(), beta1: d_b1(), beta2: d_b2(), eps: d_eps(), weight_decay: d_wd() }
    }
}

impl AdamW {
    /// The burn optimizer. Only parameters that require gradients get state
    /// and updates (burn skips frozen parameters in `GradientsParams`).
    pub fn init(&self) -> ModuleOptimizer {
        AdamWConfig::new()
            .with_beta_1(self.beta1)
            .with_beta_2(self.beta2)
            .with_epsilon(self.eps)
            .with_weight_decay(self.weight_decay)
            .init()
    }
}

/// Sum of squared gradient entries over all parameters of `module`.
struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    total: f64,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.total += g.powi_scalar(2).sum().into_scalar::<f64>();
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, g * self.factor);
        }
    }
}

/// Global L2 norm of the gradients, as `torch.nn.utils.clip_grad_norm_`
/// computes it (burn's built-in clipping works per tensor instead).
pub fn grad_norm<M: Module>(module: &M, grads: &GradientsParams) -> f64 {
    let mut v = SquaredNorm { grads, total: 0.0 };
    module.visit(&mut v);
    v.total.sqrt()
}

/// Scales all gradients so that their global norm is at most `max_norm`
/// (same rule as PyTorch: factor `max_norm / (norm + 1e-6)` when it is < 1).
/// Returns the norm before clipping.
pub fn clip_grad_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let norm = grad_norm(module, grads);
    let factor = max_norm / (norm + 1e-6);
    if factor < 1.0 {
        module.visit(&mut Scale { grads, factor });
    }
    norm
}
