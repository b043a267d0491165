//! Normalizing flow with Pyro's semantics (models.md §3.3).
//!
//! `Normal(0, I)` pushed through K blocks `[AffineCoupling, Permute,
//! BatchNorm]`; the list order is the sampling direction, so a density is
//! evaluated by walking the blocks backwards through their inverses.
//! Ported from pyro 1.9 `pyro/distributions/transforms/affine_coupling.py`,
//! `permute.py` and `batch_norm.py` (and torch's `TransformedDistribution.log_prob`).
//!
//! Train vs eval mode is decided exactly as by burn's `BatchNorm`: training
//! statistics are used when the input lives on an autodiff device *and* the
//! module's `training` flag is on, so `model.valid()` scores with the moving
//! statistics.

use crate::nn::util::seeded_init;
use crate::util::rng::stream;
use anyhow::{Result, bail};
use burn::module::{Flag, Module, Param, RunningState};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::RngExt;
use serde::{Deserialize, Serialize};

/// ln(2π).
const LN_2PI: f64 = 1.837_877_066_409_345_5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowConfig {
    pub dim: usize,
    pub blocks: usize,
    /// Hidden widths of each coupling's hypernet.
    pub hidden: Vec<usize>,
    /// Dimensions passed through unchanged by each coupling (default dim / 2).
    #[serde(default)]
    pub split: Option<usize>,
    #[serde(default = "ls_min")]
    pub log_scale_min: f64,
    #[serde(default = "ls_max")]
    pub log_scale_max: f64,
    #[serde(default = "momentum")]
    pub bn_momentum: f64,
    #[serde(default = "eps")]
    pub bn_eps: f64,
    /// Seed of the fixed permutations. Kept apart from the weight seed so
    /// that a checkpoint (which stores no permutation) loads into a flow
    /// built from the same config whatever seed that build used.
    #[serde(default)]
    pub perm_seed: u64,
}

fn ls_min() -> f64 {
    -5.0
}
fn ls_max() -> f64 {
    3.0
}
fn momentum() -> f64 {
    0.1
}
fn eps() -> f64 {
    1e-5
}

impl FlowConfig {
    pub fn new(dim: usize, blocks: usize, hidden: Vec<usize>) -> Self {
        FlowConfig {
            dim,
            blocks,
            hidden,
            split: None,
            log_scale_min: ls_min(),
            log_scale_max: ls_max(),
            bn_momentum: momentum(),
            bn_eps: eps(),
            perm_seed: 0,
        }
    }

    pub fn split(&self) -> usize {
        self.split.unwrap_or(self.dim / 2)
    }

    pub fn validate(&self) -> Result<()> {
        let s = self.split();
        if self.dim < 2 || s == 0 || s >= self.dim {
            bail!("flow: need dim ≥ 2 and 0 < split < dim (dim {}, split {s})", self.dim);
        }
        if self.blocks == 0 || self.hidden.contains(&0) {
            bail!("flow: blocks and hidden widths must be positive");
        }
        if self.log_scale_min.partial_cmp(&self.log_scale_max) != Some(std::cmp::Ordering::Less) {
            bail!("flow: log_scale_min must be below log_scale_max");
        }
        if !(0.0..=1.0).contains(&self.bn_momentum) || self.bn_eps.is_nan() || self.bn_eps <= 0.0 {
            bail!("flow: bn_momentum must lie in [0, 1] and bn_eps be positive");
        }
        Ok(())
    }

    /// The permutation of block `k`: a seeded Fisher–Yates shuffle.
    pub fn permutation(&self, k: usize) -> Vec<usize> {
        let mut r = stream(self.perm_seed, &[0xf10e, k as u64]);
        let mut p: Vec<usize> = (0..self.dim).collect();
        for i in (1..p.len()).rev() {
            p.swap(i, r.random_range(0..=i));
        }
        p
    }

    /// Builds the flow with weights drawn from `seed`.
    pub fn init(&self, seed: u64, device: &Device) -> Flow {
        seeded_init(device, seed, || self.build(device))
    }

    /// Builds the flow lazily (weights drawn on first use; callers that need
    /// reproducible weights go through [`seeded_init`]).
    pub fn build(&self, device: &Device) -> Flow {
        let s = self.split();
        let blocks = (0..self.blocks)
            .map(|k| FlowBlock {
                coupling: AffineCoupling {
                    hypernet: DenseNn::new(s, &self.hidden, 2 * (self.dim - s), device),
                    split: s,
                    log_scale_min: self.log_scale_min,
                    log_scale_max: self.log_scale_max,
                },
                permute: Permute::new(self.permutation(k)),
                bn: BatchNormTransform::new(self.dim, self.bn_momentum, self.bn_eps, device),
            })
            .collect();
        Flow { blocks }
    }
}

/// Pyro's `DenseNN`: Linear → ReLU per hidden layer, then a plain Linear.
#[derive(Module, Debug)]
pub struct DenseNn {
    pub layers: Vec<Linear>,
}

impl DenseNn {
    pub fn new(input: usize, hidden: &[usize], output: usize, device: &Device) -> Self {
        let mut sizes = vec![input];
        sizes.extend_from_slice(hidden);
        sizes.push(output);
        let layers = sizes.windows(2).map(|w| LinearConfig::new(w[0], w[1]).init(device)).collect();
        DenseNn { layers }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let last = self.layers.len() - 1;
        self.layers.iter().enumerate().fold(x, |h, (i, l)| {
            let h = l.forward(h);
            if i < last { relu(h) } else { h }
        })
    }
}

/// Row sums: [B, N] → [B].
fn row_sum(x: Tensor<2>) -> Tensor<1> {
    let [b, _] = x.dims();
    x.sum_dim(1).reshape([b])
}

/// `y₁ = x₁`, `y₂ = exp(ℓ(x₁))·x₂ + μ(x₁)`; log|det| = Σℓ.
#[derive(Module, Debug)]
pub struct AffineCoupling {
    pub hypernet: DenseNn,
    pub split: usize,
    pub log_scale_min: f64,
    pub log_scale_max: f64,
}

impl AffineCoupling {
    /// (μ, ℓ) from the untouched half; ℓ is clamped in value only, so its
    /// gradient is the identity even outside the clip range (as in Pyro).
    fn params(&self, x1: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        let out = self.hypernet.forward(x1);
        let [_, n] = out.dims();
        let mu = out.clone().narrow(1, 0, n / 2);
        let l = out.narrow(1, n / 2, n / 2);
        let clamped = l.clone().clamp(self.log_scale_min, self.log_scale_max);
        let l = l.clone() + (clamped - l).detach();
        (mu, l)
    }

    fn halves(&self, x: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        let [_, d] = x.dims();
        (x.clone().narrow(1, 0, self.split), x.narrow(1, self.split, d - self.split))
    }

    pub fn forward(&self, x: Tensor<2>) -> (Tensor<2>, Tensor<1>) {
        let (x1, x2) = self.halves(x);
        let (mu, l) = self.params(x1.clone());
        let y2 = l.clone().exp() * x2 + mu;
        (Tensor::cat(vec![x1, y2], 1), row_sum(l))
    }

    /// Returns x and the forward log|det| at x.
    pub fn inverse(&self, y: Tensor<2>) -> (Tensor<2>, Tensor<1>) {
        let (y1, y2) = self.halves(y);
        let (mu, l) = self.params(y1.clone());
        let x2 = (y2 - mu) * l.clone().neg().exp();
        (Tensor::cat(vec![y1, x2], 1), row_sum(l))
    }
}

/// `y = x[..., perm]`. The permutation is not part of a checkpoint: it is
/// recomputed from [`FlowConfig::perm_seed`] whenever the flow is built.
#[derive(Module, Debug)]
pub struct Permute {
    #[module(skip)]
    pub perm: Vec<usize>,
    #[module(skip)]
    pub inv: Vec<usize>,
}

impl Permute {
    pub fn new(perm: Vec<usize>) -> Self {
        let mut inv = vec![usize::MAX; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            assert!(p < perm.len() && inv[p] == usize::MAX, "not a permutation: {perm:?}");
            inv[p] = i;
        }
        Permute { perm, inv }
    }

    fn gather(x: Tensor<2>, idx: &[usize]) -> Tensor<2> {
        let v: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
        let t = Tensor::<1, Int>::from_data(TensorData::new(v, [idx.len()]), &x.device());
        x.select(1, t)
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        Self::gather(x, &self.perm)
    }

    pub fn inverse(&self, y: Tensor<2>) -> Tensor<2> {
        Self::gather(y, &self.inv)
    }
}

/// Pyro's batch-norm transform. The data direction (inverse) normalises:
/// `x = (y − m)·γ⁺/√(v + ε) + β`, γ⁺ = relu(γ) + 1e-6; training uses the
/// batch mean and unbiased variance and updates the moving statistics,
/// eval uses the moving statistics. The sampling direction always uses the
/// moving statistics.
#[derive(Module, Debug)]
pub struct BatchNormTransform {
    pub gamma: Param<Tensor<1>>,
    pub beta: Param<Tensor<1>>,
    pub training: Param<Flag>,
    /// Named like burn's BatchNorm so `count_params` leaves them out.
    pub running_mean: RunningState<Tensor<1>>,
    pub running_var: RunningState<Tensor<1>>,
    pub momentum: f64,
    pub epsilon: f64,
}

impl BatchNormTransform {
    pub fn new(dim: usize, momentum: f64, epsilon: f64, device: &Device) -> Self {
        BatchNormTransform {
            gamma: Initializer::Ones.init([dim], device),
            beta: Initializer::Zeros.init([dim], device),
            training: Param::from_bool(true),
            running_mean: RunningState::new(Tensor::zeros([dim], device)),
            running_var: RunningState::new(Tensor::ones([dim], device)),
            momentum,
            epsilon,
        }
    }

    fn gamma_pos(&self) -> Tensor<2> {
        relu(self.gamma.val()).add_scalar(1e-6).unsqueeze_dim(0)
    }

    /// Whether batch statistics are used (burn's BatchNorm rule).
    pub fn is_training(&self, device: &Device) -> bool {
        device.is_autodiff() && self.training.is_enabled()
    }

    fn moving(&self, device: &Device) -> (Tensor<2>, Tensor<2>) {
        (
            self.running_mean.value().to_device(device).unsqueeze_dim(0),
            self.running_var.value().to_device(device).unsqueeze_dim(0),
        )
    }

    /// Forward log|det| per row from the variance used.
    fn log_det(&self, var: Tensor<2>, b: usize) -> Tensor<1> {
        let per_dim = var.add_scalar(self.epsilon).log().mul_scalar(0.5) - self.gamma_pos().log();
        per_dim.sum_dim(1).reshape([1]).expand([b])
    }

    pub fn forward(&self, x: Tensor<2>) -> (Tensor<2>, Tensor<1>) {
        let [b, _] = x.dims();
        let (m, v) = self.moving(&x.device());
        let y =
            (x - self.beta.val().unsqueeze_dim(0)) / self.gamma_pos() * v.clone().add_scalar(self.epsilon).sqrt() + m;
        (y, self.log_det(v, b))
    }

    /// Returns x and the forward log|det| (train mode: of this batch's variance).
    pub fn inverse(&self, y: Tensor<2>) -> (Tensor<2>, Tensor<1>) {
        let [b, d] = y.dims();
        let device = y.device();
        let (m, v) = if self.is_training(&device) {
            let m = y.clone().mean_dim(0);
            let v = y.clone().var(0);
            let k = self.momentum;
            let old_m = self.running_mean.value_sync().to_device(&device);
            let old_v = self.running_var.value_sync().to_device(&device);
            self.running_mean
                .update(old_m.mul_scalar(1.0 - k).add(m.clone().detach().reshape([d]).mul_scalar(k)).detach());
            self.running_var
                .update(old_v.mul_scalar(1.0 - k).add(v.clone().detach().reshape([d]).mul_scalar(k)).detach());
            (m, v)
        } else {
            self.moving(&device)
        };
        let x =
            (y - m) * self.gamma_pos() / v.clone().add_scalar(self.epsilon).sqrt() + self.beta.val().unsqueeze_dim(0);
        (x, self.log_det(v, b))
    }
}

#[derive(Module, Debug)]
pub struct FlowBlock {
    pub coupling: AffineCoupling,
    pub permute: Permute,
    pub bn: BatchNormTransform,
}

impl FlowBlock {
    /// Sampling direction; returns y and log|det ∂y/∂x|.
    pub fn forward(&self, x: Tensor<2>) -> (Tensor<2>, Tensor<1>) {
        let (h, a) = self.coupling.forward(x);
        let (y, c) = self.bn.forward(self.permute.forward(h));
        (y, a + c)
    }

    /// Data direction; returns x and the forward log|det ∂y/∂x| at x.
    pub fn inverse(&self, y: Tensor<2>) -> (Tensor<2>, Tensor<1>) {
        let (h, c) = self.bn.inverse(y);
        let (x, a) = self.coupling.inverse(self.permute.inverse(h));
        (x, a + c)
    }
}

#[derive(Module, Debug)]
pub struct Flow {
    pub blocks: Vec<FlowBlock>,
}

impl Flow {
    /// Base → data through every block; returns y and the summed log|det|.
    pub fn forward(&self, u: Tensor<2>) -> (Tensor<2>, Tensor<1>) {
        let [b, _] = u.dims();
        let mut ld = Tensor::zeros([b], &u.device());
        let mut y = u;
        for block in &self.blocks {
            let (next, l) = block.forward(y);
            y = next;
            ld = ld + l;
        }
        (y, ld)
    }

    /// Data → base (last block first); returns u and the summed forward log|det|.
    pub fn inverse(&self, y: Tensor<2>) -> (Tensor<2>, Tensor<1>) {
        let [b, _] = y.dims();
        let mut ld = Tensor::zeros([b], &y.device());
        let mut x = y;
        for block in self.blocks.iter().rev() {
            let (next, l) = block.inverse(x);
            x = next;
            ld = ld + l;
        }
        (x, ld)
    }

    /// log p(z) per row: [B, D] → [B]. In train mode this also updates the
    /// moving statistics of every batch-norm transform.
    pub fn log_prob(&self, z: Tensor<2>) -> Tensor<1> {
        let [_, d] = z.dims();
        let (u, ld) = self.inverse(z);
        let base = row_sum(u.powi_scalar(2)).mul_scalar(-0.5).sub_scalar(0.5 * d as f64 * LN_2PI);
        base - ld
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::util::{count_params, to_vec};
    use burn::tensor::Distribution;

    /// A small flow with random coupling weights and non-trivial batch-norm
    /// parameters and moving statistics.
    fn small(dim: usize, dev: &Device) -> Flow {
        let cfg = FlowConfig { split: Some(dim / 2 - 1).filter(|&s| s > 0), ..FlowConfig::new(dim, 3, vec![16, 8]) };
        cfg.validate().unwrap();
        let mut flow = cfg.init(3, dev);
        for (k, b) in flow.blocks.iter_mut().enumerate() {
            let r = |lo: f64, hi: f64, s: u64| {
                dev.seed(100 + 10 * k as u64 + s);
                Tensor::<1>::random([dim], Distribution::Uniform(lo, hi), dev)
            };
            b.bn.gamma = Param::from_tensor(r(0.5, 1.5, 0));
            b.bn.beta = Param::from_tensor(r(-0.5, 0.5, 1));
            b.bn.running_mean = RunningState::new(r(-1.0, 1.0, 2));
            b.bn.running_var = RunningState::new(r(0.3, 2.0, 3));
        }
        flow
    }

    fn input(b: usize, d: usize, dev: &Device) -> Tensor<2> {
        dev.seed(7);
        Tensor::random([b, d], Distribution::Normal(0.0, 1.5), dev)
    }

    #[test]
    fn permutations_are_seeded_permutations() {
        let cfg = FlowConfig::new(10, 4, vec![4]);
        let p = cfg.permutation(1);
        let mut s = p.clone();
        s.sort();
        assert_eq!(s, (0..10).collect::<Vec<_>>());
        assert_eq!(p, cfg.permutation(1));
        assert_ne!(p, cfg.permutation(2));
        let perm = Permute::new(p);
        for (i, &j) in perm.perm.iter().enumerate() {
            assert_eq!(perm.inv[j], i);
        }
    }

    #[test]
    fn inverse_undoes_forward() {
        // Eval mode (plain device): every direction uses the moving statistics.
        let dev = Device::flex();
        let flow = small(6, &dev);
        let x = input(5, 6, &dev);
        let (y, ld_f) = flow.forward(x.clone());
        let (back, ld_i) = flow.inverse(y);
        let err = to_vec(x.clone() - back).iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = to_vec(x).iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(err <= 1e-5 * scale.max(1.0), "round trip error {err}");
        let d = to_vec(ld_f - ld_i).iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(d < 1e-5, "log-det mismatch {d}");
    }

    /// log|det| of a square matrix by Gaussian elimination with partial pivoting (f64).
    fn log_abs_det(mut a: Vec<Vec<f64>>) -> f64 {
        let n = a.len();
        let mut acc = 0.0;
        for c in 0..n {
            let p = (c..n).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs())).unwrap();
            a.swap(c, p);
            let piv = a[c][c];
            acc += piv.abs().ln();
            let (top, rest) = a.split_at_mut(c + 1);
            for row in rest {
                let f = row[c] / piv;
                for (v, p) in row[c..].iter_mut().zip(&top[c][c..]) {
                    *v -= f * p;
                }
            }
        }
        acc
    }

    #[test]
    fn block_log_det_matches_finite_difference_jacobian() {
        // Central differences, h = 1e-2, on f32 values of size ~1: rounding
        // error per Jacobian entry ~1e-7/h = 1e-5, truncation ~h²·|f'''|/6
        // (ReLU kinks aside). Measured: ≤ 4e-5 on log|det|; tolerance 5e-4.
        let dev = Device::flex();
        let (d, h) = (6, 1e-2f32);
        let flow = small(d, &dev);
        let x0 = to_vec(input(3, d, &dev));
        for (k, block) in flow.blocks.iter().enumerate() {
            for row in 0..3 {
                let x = &x0[row * d..(row + 1) * d];
                // 2d perturbed copies, evaluated as one batch (rows are independent in eval mode).
                let mut pts = Vec::with_capacity(2 * d * d + d);
                for j in 0..d {
                    for sign in [1.0f32, -1.0] {
                        pts.extend(x.iter().enumerate().map(|(i, &v)| if i == j { v + sign * h } else { v }));
                    }
                }
                pts.extend_from_slice(x);
                let t = Tensor::<2>::from_data(TensorData::new(pts, [2 * d + 1, d]), &dev);
                let (y, ld) = block.forward(t);
                let y = to_vec(y);
                let jac: Vec<Vec<f64>> = (0..d)
                    .map(|i| {
                        (0..d)
                            .map(|j| (y[(2 * j) * d + i] as f64 - y[(2 * j + 1) * d + i] as f64) / (2.0 * h as f64))
                            .collect()
                    })
                    .collect();
                let fd = log_abs_det(jac);
                let analytic = to_vec(ld)[2 * d] as f64;
                assert!((fd - analytic).abs() < 5e-4, "block {k} row {row}: fd {fd} vs {analytic}");
            }
        }
    }

    #[test]
    fn train_mode_uses_batch_stats_and_updates_moving_stats() {
        let dev = Device::flex().autodiff();
        let flow = FlowConfig::new(4, 1, vec![8]).init(0, &dev);
        let z = input(8, 4, &dev).mul_scalar(3.0).add_scalar(2.0);
        let lp = flow.log_prob(z.clone());
        assert!(to_vec(lp.clone()).iter().all(|v| v.is_finite()));
        let mean = to_vec(flow.blocks[0].bn.running_mean.value_sync());
        let want: Vec<f32> = to_vec(z.clone().mean_dim(0)).iter().map(|m| 0.1 * m).collect();
        for (a, b) in mean.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{mean:?} vs {want:?}");
        }
        // The gradient reaches the hypernet and γ.
        let g = lp.sum().backward();
        assert!(flow.blocks[0].bn.gamma.grad(&g).is_some());
        assert!(flow.blocks[0].coupling.hypernet.layers[0].weight.grad(&g).is_some());
        // valid(): plain device and moving statistics, nothing updated.
        let eval = flow.valid();
        let before = to_vec(eval.blocks[0].bn.running_var.value());
        let _ = eval.log_prob(z.inner());
        assert_eq!(before, to_vec(eval.blocks[0].bn.running_var.value()));
    }

    #[test]
    fn clamped_log_scale_keeps_its_gradient() {
        let dev = Device::flex().autodiff();
        let mut flow = FlowConfig::new(2, 1, vec![]).init(0, &dev);
        // ℓ = 10·x₁ + 10: far above the clip (3) for x₁ = 1.
        let c = &mut flow.blocks[0].coupling.hypernet.layers[0];
        c.weight = Param::from_data(TensorData::new(vec![0.0f32, 10.0], [1, 2]), &dev);
        c.bias = Some(Param::from_data(TensorData::new(vec![0.0f32, 10.0], [2]), &dev));
        let x = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 1.0], [1, 2]), &dev);
        let (y, ld) = flow.blocks[0].coupling.forward(x);
        assert!((to_vec(ld.clone())[0] - 3.0).abs() < 1e-6);
        assert!((to_vec(y)[1] - 3f32.exp()).abs() < 1e-4);
        let g = ld.sum().backward();
        let gw = to_vec(flow.blocks[0].coupling.hypernet.layers[0].weight.grad(&g).unwrap());
        assert!((gw[1] - 1.0).abs() < 1e-6, "straight-through gradient {gw:?}");
    }

    #[test]
    fn parameter_count_of_one_block() {
        // 128 → 2048 → 256 hypernet + γ, β of 256 dims; running stats excluded.
        let flow = FlowConfig::new(256, 1, vec![2048]).build(&Device::flex());
        assert_eq!(count_params(&flow), 788_736 + 512);
    }
}
