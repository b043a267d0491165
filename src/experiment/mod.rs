//! Experiments as files: strict JSON configs with `extends` and overrides.

pub mod resolve;
