//! The `loss` section of an experiment: ArcFace settings and the weights of
//! a model's loss terms (the Dual Branch models sum a concatenated-embedding
//! loss and one loss per branch, report §2.2 and §2.5).

use super::ArcFaceConfig;
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    /// ArcFace (the report) or a plain softmax classifier.
    #[serde(default)]
    pub head: super::HeadKind,
    /// ArcFace settings (ignored by the softmax head).
    #[serde(default)]
    pub arcface: ArcFaceConfig,
    /// Weights of the loss terms, in the model's order (for the dual-branch
    /// models: concatenated, first branch, second branch). Missing trailing
    /// weights are 1; `[1, 0, 0]` is the "concatenated loss only" ablation.
    #[serde(default)]
    pub weights: Vec<f64>,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig { head: super::HeadKind::Arcface, arcface: ArcFaceConfig::default(), weights: Vec::new() }
    }
}

impl LossConfig {
    /// Validates against a model with `n` loss terms.
    pub fn validate(&self, n: usize) -> Result<()> {
        if self.weights.len() > n {
            bail!("loss.weights has {} entries but the model has {n} loss terms", self.weights.len());
        }
        if self.weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
            bail!("loss.weights must be finite and non-negative");
        }
        if self.weights_for(n).iter().sum::<f64>() == 0.0 {
            bail!("loss.weights are all zero");
        }
        if self.arcface.scale.is_nan()
            || self.arcface.scale <= 0.0
            || !(0.0..std::f64::consts::PI).contains(&self.arcface.margin)
        {
            bail!("loss.arcface: scale must be positive and margin in [0, pi)");
        }
        Ok(())
    }

    /// The weights of `n` terms (missing ones are 1).
    pub fn weights_for(&self, n: usize) -> Vec<f64> {
        (0..n).map(|i| self.weights.get(i).copied().unwrap_or(1.0)).collect()
    }
}
