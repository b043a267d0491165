//! Forward time of the full-size EAT-base encoder on one 10-s clip on the
//! flex CPU backend, the burn side of `tests/fixtures/gen/eat_torch.py`.
//!
//! ```text
//! cargo build --example bench_eat_forward
//! RAYON_NUM_THREADS=2 target/debug/examples/bench_eat_forward --runs 5
//! /work/pyref/bin/python tests/fixtures/gen/eat_torch.py --threads 2 --runs 5
//! ```
//!
//! EAT-base sizes (12 blocks, 768-d, 12 heads, FFN 3072) with random
//! weights (speed does not depend on their values), input [1, 1024, 128]
//! (10 s padded to 1024 frames → 1 + 512 tokens), eval, no adapters. One
//! warm-up pass, then the median of `--runs` passes. Threads come from
//! RAYON_NUM_THREADS. Prints one JSON object (peak RSS = VmHWM).

use asd::models::eat::{EatConfig, EatEncoder};
use burn::tensor::{Device, Distribution, Tensor};
use std::time::Instant;

mod common;
use common::{arg, peak_rss_mib};

fn main() {
    let runs: usize = arg("--runs", 5);
    let frames: usize = arg("--frames", 1024);
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "null".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let device = Device::flex();
    device.seed(0);
    let enc = EatEncoder::new(&EatConfig::default(), &device);
    let x = Tensor::<3>::random([1, frames, 128], Distribution::Normal(0.0, 1.0), &device);
    let pass = || {
        let t = Instant::now();
        let y = enc.forward(x.clone(), None);
        let _ = y.into_data();
        t.elapsed().as_secs_f64()
    };
    let warm = pass();
    let mut times: Vec<f64> = (0..runs).map(|_| pass()).collect();
    times.sort_by(f64::total_cmp);
    println!(
        "{{\"side\": \"burn-flex\", \"threads\": {threads}, \"frames\": {frames}, \"warmup_s\": {warm:.3}, \
         \"median_s\": {:.3}, \"times_s\": {times:?}, \"peak_rss_mib\": {:.0}, \"loadavg_before\": {load:?}}}",
        times[times.len() / 2],
        peak_rss_mib()
    );
}
