//! Anomaly-score back-ends for embedding models: kNN distance to the
//! training embeddings with separate source and target banks (optionally
//! with SMOTE-oversampled target banks), and its building blocks.

pub mod knn;
pub mod smote;

pub use knn::{KnnConfig, KnnMetric, KnnScorer};
pub use smote::SmoteConfig;
