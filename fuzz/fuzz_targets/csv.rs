//! Score and decision CSV readers (submission files, training scores).
#![no_main]
#[path = "common.rs"]
mod common;

use asd::metrics::submission::{read_decisions, read_scores};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let p = common::scratch("anomaly_score_fan_section_00_test.csv", data);
    if let Ok(rows) = read_scores(&p) {
        assert!(rows.iter().all(|(_, v)| v.is_finite()));
    }
    if let Ok(rows) = read_decisions(&p) {
        assert!(rows.iter().all(|(_, v)| *v <= 1));
    }
});
