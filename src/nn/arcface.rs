//! ArcFace: additive angular margin softmax (Deng et al., CVPR 2019),
//! models.md §2.1.
//!
//! `cos_j = x̂ · ŵ_j`; the target logit uses `cos(θ_y + m)` with the usual
//! fall-back where `θ_y + m` would pass π (or, with `easy_margin`, where
//! `cos_y <= 0`); all logits are scaled by `s`; the loss is the mean
//! cross-entropy. The class centres W ([D, C], column j = class j) are
//! trainable. s = 30, m = 0.5 by default: THUEE does not state them; these
//! are the STgram-MFN class defaults common in ASD code.

use super::util::{cross_entropy, l2_normalize};
use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Int, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArcFaceConfig {
    #[serde(default = "default_scale")]
    pub scale: f64,
    #[serde(default = "default_margin")]
    pub margin: f64,
    #[serde(default)]
    pub easy_margin: bool,
}

fn default_scale() -> f64 {
    30.0
}
fn default_margin() -> f64 {
    0.5
}

impl Default for ArcFaceConfig {
    fn default() -> Self {
        ArcFaceConfig { scale: default_scale(), margin: default_margin(), easy_margin: false }
    }
}

impl ArcFaceConfig {
    /// Class centres drawn like PyTorch's `xavier_uniform_` on a [C, D] weight.
    pub fn init(&self, dim: usize, classes: usize, device: &Device) -> ArcFace {
        let bound = (6.0 / (dim + classes) as f64).sqrt();
        let w = Tensor::<2>::random([dim, classes], Distribution::Uniform(-bound, bound), device);
        ArcFace { weight: Param::from_tensor(w), scale: self.scale, margin: self.margin, easy_margin: self.easy_margin }
    }
}

#[derive(Module, Debug)]
pub struct ArcFace {
    /// Class centres, [D, C].
    pub weight: Param<Tensor<2>>,
    pub scale: f64,
    pub margin: f64,
    pub easy_margin: bool,
}

/// Logits and loss of one ArcFace evaluation.
pub struct ArcFaceOutput {
    pub cos: Tensor<2>,
    pub logits: Tensor<2>,
    pub loss: Tensor<1>,
}

impl ArcFace {
    pub fn classes(&self) -> usize {
        self.weight.dims()[1]
    }

    /// Cosine similarity of embeddings [B, D] to every class centre: [B, C].
    pub fn cosine(&self, x: Tensor<2>) -> Tensor<2> {
        l2_normalize(x, 1).matmul(l2_normalize(self.weight.val(), 0))
    }

    pub fn forward(&self, x: Tensor<2>, labels: Tensor<1, Int>) -> ArcFaceOutput {
        let cos = self.cosine(x);
        let [_, c] = cos.dims();
        let m = self.margin;
        let sin = (cos.clone().powi_scalar(2) * -1.0 + 1.0).clamp(0.0, 1.0).sqrt();
        let phi = cos.clone() * m.cos() - sin * m.sin();
        let phi = if self.easy_margin {
            phi.mask_where(cos.clone().lower_equal_elem(0.0), cos.clone())
        } else {
            let th = (std::f64::consts::PI - m).cos();
            let mm = (std::f64::consts::PI - m).sin() * m;
            phi.mask_where(cos.clone().lower_equal_elem(th), cos.clone() - mm)
        };
        let one_hot = labels.clone().one_hot(c).equal_elem(1);
        let logits = cos.clone().mask_where(one_hot, phi) * self.scale;
        let loss = cross_entropy(logits.clone(), labels);
        ArcFaceOutput { cos, logits, loss }
    }
}
