//! `asd`: unsupervised anomalous sound detection for machine condition
//! monitoring, re-implementing the THUEE system for DCASE 2024 Task 2 on burn.
//!
//! Layout by pipeline role: [`data`] (DCASE layout, wav, synthetic data),
//! [`backend`] (run-time backend choice), [`util`] (atomic output, npy, seeded RNG),
//! and the command-line front end in [`cli`].

pub mod backend;
pub mod cli;
pub mod data;
pub mod experiment;
pub mod features;
pub mod fusion;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod pipeline;
pub mod report;
pub mod scoring;
pub mod train;
pub mod util;
