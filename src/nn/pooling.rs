//! Pooling of token features [B, L, C] into one vector per clip.
//!
//! [`AttnStatPool`] is ASDKit's attentive statistics pooling
//! (`asdkit/models/modules.py`, pretrained.md §4), the trainable "pooling
//! module" of the BEATs-LoRA head: with x as (B, C, L),
//! `g = [x, mean_L x, sqrt(clamp(var_L x, 1e-4))]` (unbiased variance),
//! `w = softmax_L(Conv1d(h→C, 1)(tanh(BN(relu(Conv1d(3C→h, 1)(g))))))`, h = C/16,
//! `mu = Σ_L x·w`, `sg = sqrt(clamp(Σ_L x²·w − mu², 1e-4))`,
//! output `BN(C)(Linear(2C→C)(BN(2C)([mu, sg])))`.

use burn::module::Module;
use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{relu, softmax};
use burn::tensor::{Device, Tensor};

#[derive(Module, Debug)]
pub struct AttnStatPool {
    /// Conv1d(3C → h, 1).
    pub conv1: Conv1d,
    /// BatchNorm1d(h).
    pub bn1: BatchNorm,
    /// Conv1d(h → C, 1).
    pub conv2: Conv1d,
    /// BatchNorm1d(2C) on [mu, sg].
    pub bn2: BatchNorm,
    /// Linear(2C → C).
    pub fc: Linear,
    /// BatchNorm1d(C).
    pub bn3: BatchNorm,
}

impl AttnStatPool {
    /// Pooling of C channels with hidden size C / `hidden_ratio` (ASDKit: 16).
    pub fn new(channels: usize, hidden_ratio: usize, device: &Device) -> AttnStatPool {
        let h = (channels / hidden_ratio).max(1);
        AttnStatPool {
            conv1: Conv1dConfig::new(3 * channels, h, 1).init(device),
            bn1: BatchNormConfig::new(h).init(device),
            conv2: Conv1dConfig::new(h, channels, 1).init(device),
            bn2: BatchNormConfig::new(2 * channels).init(device),
            fc: LinearConfig::new(2 * channels, channels).init(device),
            bn3: BatchNormConfig::new(channels).init(device),
        }
    }

    /// [B, L, C] → [B, C].
    pub fn forward(&self, x: Tensor<3>) -> Tensor<2> {
        let x = x.swap_dims(1, 2); // [B, C, L]
        let [b, c, l] = x.dims();
        let mean = x.clone().mean_dim(2); // [B, C, 1]
        let std = x.clone().var(2).clamp_min(1e-4).sqrt();
        let g = Tensor::cat(vec![x.clone(), mean.expand([b, c, l]), std.expand([b, c, l])], 1); // [B, 3C, L]
        let a = self.bn1.forward(relu(self.conv1.forward(g))).tanh();
        let w = softmax(self.conv2.forward(a), 2); // [B, C, L]
        let mu = (x.clone() * w.clone()).sum_dim(2); // [B, C, 1]
        let sg = ((x.powi_scalar(2) * w).sum_dim(2) - mu.clone().powi_scalar(2)).clamp_min(1e-4).sqrt();
        let s = Tensor::cat(vec![mu, sg], 1).reshape([b, 2 * c]);
        self.bn3.forward(self.fc.forward(self.bn2.forward(s)))
    }
}

/// Mean over tokens: [B, L, C] → [B, C].
pub fn mean_pool(x: Tensor<3>) -> Tensor<2> {
    let [b, _, c] = x.dims();
    x.mean_dim(1).reshape([b, c])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::util::count_params;

    #[test]
    fn shapes_and_parameter_count() {
        let dev = Device::flex();
        let p = AttnStatPool::new(64, 16, &dev);
        let x = Tensor::<3>::random([3, 10, 64], burn::tensor::Distribution::Normal(0.0, 1.0), &dev);
        assert_eq!(p.forward(x.clone()).dims(), [3, 64]);
        assert_eq!(mean_pool(x).dims(), [3, 64]);
        // conv1 192·4+4, bn1 8, conv2 4·64+64, bn2 256, fc 128·64+64, bn3 128
        assert_eq!(count_params(&p), 772 + 8 + 320 + 256 + 8256 + 128);
        // BEATs size (C = 768, h = 48): 1 333 392.
        assert_eq!(count_params(&AttnStatPool::new(768, 16, &dev)), 1_333_392);
    }
}
