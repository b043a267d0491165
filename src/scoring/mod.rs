//! Anomaly-score back-ends for embedding models, fitted per machine type on
//! its training clips: kNN with source and target banks (optionally with
//! SMOTE-oversampled target banks), kNN with local-density rescaling, kNN
//! against k-means centres, (selective) Mahalanobis, Gaussian mixtures, and
//! back-end fusion. [`BackendConfig`] (an experiment's `scoring.backend`)
//! picks one.

pub mod backend;
pub mod gmm;
pub mod kmeans;
pub mod knn;
pub mod knn_rescale;
pub mod linalg;
pub mod mahalanobis;
pub mod smote;

pub use backend::{BackendConfig, Fitted};
pub use knn::{KnnConfig, KnnMetric, KnnScorer};
pub use smote::SmoteConfig;
