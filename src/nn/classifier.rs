//! A linear classifier over the auxiliary classes (machine type ×
//! attribute), trained with softmax cross-entropy: the plain alternative to
//! ArcFace (report Fig. 1: a final linear layer maps 256 → classes).

use super::util::cross_entropy;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor};

#[derive(Module, Debug)]
pub struct LinearClassifier {
    pub fc: Linear,
}

impl LinearClassifier {
    pub fn new(dim: usize, classes: usize, device: &Device) -> Self {
        LinearClassifier { fc: LinearConfig::new(dim, classes).init(device) }
    }

    /// (logits [B, C], mean cross-entropy).
    pub fn forward(&self, x: Tensor<2>, labels: Tensor<1, Int>) -> (Tensor<2>, Tensor<1>) {
        let logits = self.fc.forward(x);
        let loss = cross_entropy(logits.clone(), labels);
        (logits, loss)
    }
}
