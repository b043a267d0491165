//! Experiment and system files: JSON with `extends`, overrides and validation.
#![no_main]
#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let p = common::scratch("experiment.json", data);
    let _ = asd::experiment::Experiment::load(&p, &[]);
    let _ = asd::fusion::SystemConfig::load(&p);
});
