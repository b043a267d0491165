//! Building blocks shared by the models: heads, losses, LoRA, pooling.

pub mod activation;
pub mod arcface;
pub mod attention;
pub mod classifier;
pub mod conv2d;
pub mod flex_op;
pub mod flow;
pub mod gemm;
pub mod head;
pub mod linear;
pub mod lora;
pub mod loss;
pub mod pooling;
pub mod util;

pub use arcface::{ArcFace, ArcFaceConfig};
pub use classifier::LinearClassifier;
pub use head::{Head, HeadKind};
pub use loss::LossConfig;
