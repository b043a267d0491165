//! Front-end throughput: clips/s of the BEATs Kaldi fbank and the NF-CDEE
//! 8192-point log-mel on synthetic 10 s clips, batch-parallel over clips.
//!
//! ```text
//! cargo run --release --example bench_frontends -- --threads 1 --clips 50
//! /work/pyref/bin/python tests/fixtures/gen/bench_frontends.py --threads 1 --clips 50
//! ```
//!
//! `--threads` (default: RAYON_NUM_THREADS, else 1) sizes the rayon pool,
//! `--repeat R` reports the best of R passes (default 1, as the Python script),
//! `--only NAME` runs one front-end (for profiling); the
//! clips are like `bench_frontends.py`'s (a random tone, its 2.7× partial and
//! white noise, quantised to 16 bit). Prints one JSON object.

use asd::features::{FbankPreset, LogmelPreset, fbank, mel, spectrum};
use rand::RngExt;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use std::time::Instant;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn make_clips(n: usize, seed: u64) -> Vec<Vec<f32>> {
    (0..n)
        .map(|i| {
            let mut rng = asd::util::rng::stream(seed, &[i as u64]);
            let f0: f64 = 100.0 + 1900.0 * rng.random::<f64>();
            (0..160_000)
                .map(|k| {
                    let t = k as f64 / 16000.0;
                    let noise: f64 = StandardNormal.sample(&mut rng);
                    let x = 0.3 * (2.0 * std::f64::consts::PI * f0 * t).sin()
                        + 0.1 * (2.0 * std::f64::consts::PI * 2.7 * f0 * t).sin()
                        + 0.05 * noise;
                    ((x * 32767.0).round() / 32768.0) as f32
                })
                .collect()
        })
        .collect()
}

/// Best of `repeat` timed passes over all clips (after one warm-up call).
fn bench(name: &str, clips: &[Vec<f32>], f: impl Fn(&[f32]) -> usize + Sync) -> String {
    let only = arg("--only");
    if only.as_deref().is_some_and(|o| o != name) {
        return format!("  \"{name}\": null");
    }
    let repeat: usize = arg("--repeat").and_then(|s| s.parse().ok()).unwrap_or(1);
    f(&clips[0]); // warm-up: plans, filterbanks, thread pool
    let mut dt = f64::INFINITY;
    for _ in 0..repeat.max(1) {
        let t0 = Instant::now();
        let total: usize = clips.par_iter().map(|x| f(x)).sum();
        dt = dt.min(t0.elapsed().as_secs_f64());
        std::hint::black_box(total);
    }
    format!(
        "  \"{name}\": {{\"seconds\": {dt:.4}, \"clips_per_s\": {:.2}, \"ms_per_clip\": {:.3}}}",
        clips.len() as f64 / dt,
        1000.0 * dt / clips.len() as f64
    )
}

fn main() {
    let threads: usize =
        arg("--threads").or_else(|| std::env::var("RAYON_NUM_THREADS").ok()).and_then(|s| s.parse().ok()).unwrap_or(1);
    let n: usize = arg("--clips").and_then(|s| s.parse().ok()).unwrap_or(50);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
    let clips = make_clips(n, 7);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let results = pool.install(|| {
        [
            bench("fbank_beats", &clips, |x| fbank::beats_input(x).unwrap().data.len()),
            bench("logmel_nf_cdee", &clips, |x| mel::logmel(x, LogmelPreset::NfCdee).unwrap().data.len()),
            bench("fbank_eat", &clips, |x| fbank::fbank(x, FbankPreset::Eat).unwrap().data.len()),
            bench("logmel_baseline", &clips, |x| mel::logmel(x, LogmelPreset::Baseline).unwrap().data.len()),
            bench("dual_branch", &clips, |x| {
                let d = spectrum::dual_branch_input(x, spectrum::DUAL_BRANCH_SAMPLES).unwrap();
                d.spectrum.data.len() + d.spectrogram.data.len()
            }),
        ]
    });
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("{{\n  \"threads\": {threads},\n  \"clips\": {n},\n  \"clip_seconds\": 10.0,");
    println!("  \"loadavg_before\": \"{}\",", load.trim());
    println!("{},", results.join(",\n"));
    println!("  \"loadavg_after\": \"{}\"\n}}", load_after.trim());
}
