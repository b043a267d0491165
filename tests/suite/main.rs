//! The integration tests, compiled as one binary: every test binary links
//! all of burn, so one binary instead of eleven saves minutes of linking and
//! gigabytes of disk on a fresh build.

mod common;

mod architecture;
mod backends;
mod bad_input;
mod beats_lora;
mod beats_parity;
mod cli;
mod crash_safety;
mod eat_lora;
mod eat_parity;
mod engine;
mod evaluator_parity;
mod experiment_files;
mod flow_parity;
mod frontend_parity;
mod metrics_fixtures;
mod models;
mod official_ae_parity;
mod scoring_parity;
mod systems;
mod training_parity;
