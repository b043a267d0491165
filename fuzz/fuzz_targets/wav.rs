//! The wav reader: any byte string loads or is an error, never a panic.
#![no_main]
#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let p = common::scratch("clip.wav", data);
    if let Ok(x) = asd::data::wav::load(&p) {
        assert!(!x.is_empty() && x.iter().all(|v| v.is_finite()));
    }
});
