//! The training engine: one explicit loop for every model.

pub mod checkpoint;
pub mod engine;
pub mod optim;
pub mod schedule;

pub use checkpoint::{RunDir, TrainState};
pub use engine::{RunOptions, Selection, StepOutput, Task, TrainConfig, Validator, fit};
pub use optim::AdamW;
pub use schedule::CosineWarmupRestarts;
