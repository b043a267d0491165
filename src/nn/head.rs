//! Classification heads over the auxiliary classes: ArcFace (the report's
//! loss) or a plain linear softmax classifier.

use super::{ArcFace, LinearClassifier, LossConfig};
use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

/// Which head a model trains with (`loss.head` in experiment files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    #[default]
    Arcface,
    Softmax,
}

#[derive(Module, Debug)]
pub enum Head {
    ArcFace(ArcFace),
    Softmax(LinearClassifier),
}

impl Head {
    pub fn new(loss: &LossConfig, dim: usize, classes: usize, device: &Device) -> Head {
        match loss.head {
            HeadKind::Arcface => Head::ArcFace(loss.arcface.init(dim, classes, device)),
            HeadKind::Softmax => Head::Softmax(LinearClassifier::new(dim, classes, device)),
        }
    }

    /// Mean loss of embeddings [B, D] against class indices [B].
    pub fn loss(&self, x: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
        match self {
            Head::ArcFace(h) => h.forward(x, labels).loss,
            Head::Softmax(h) => h.forward(x, labels).1,
        }
    }
}
