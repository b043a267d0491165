//! Training-step time of the Dual Branch CNN on the flex CPU backend, the
//! burn side of `tests/fixtures/gen/dual_branch_cnn_torch.py --bench`.
//!
//! ```text
//! cargo build --example bench_train_step
//! RAYON_NUM_THREADS=2 target/debug/examples/bench_train_step --batch 16 --seconds 10 --steps 5
//! /work/pyref/bin/python tests/fixtures/gen/dual_branch_cnn_torch.py --bench --batch 16 --seconds 10 --threads 2 --steps 5
//! ```
//!
//! Random inputs of the model's shapes (spectrum uniform [0, 1), spectrogram
//! standard normal), labels `i % classes` (`--classes`, default 150), three
//! ArcFace losses summed, AdamW (lr 5e-3, betas 0.9/0.98, weight decay
//! 1e-5). One warm-up step, then `--steps` timed steps (forward + backward +
//! optimizer step). Threads come from RAYON_NUM_THREADS. Prints one JSON
//! object (peak RSS = VmHWM of /proc/self/status).

use asd::models::dual_branch_cnn::{DualBranchBatch, DualBranchCnn, DualBranchCnnConfig};
use asd::nn::util::labels_tensor;
use asd::nn::{Head, LossConfig};
use asd::train::AdamW;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Tensor};
use std::time::Instant;

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn main() {
    let batch: usize = arg("--batch", 16);
    let seconds: f32 = arg("--seconds", 10.0);
    let steps: usize = arg("--steps", 5);
    let classes: usize = arg("--classes", 150);
    let threads = std::env::var("RAYON_NUM_THREADS").ok().and_then(|s| s.parse::<usize>().ok());
    let threads = threads.map_or("null".to_string(), |t| t.to_string());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();

    let device = Device::flex().autodiff();
    let cfg = DualBranchCnnConfig { seconds, ..Default::default() };
    cfg.validate().expect("config");
    let mut model = cfg.init(&LossConfig::default(), classes, 0, &device);
    let (bins, frames, fbins) = cfg.input_shapes();
    let inputs = DualBranchBatch {
        spectrum: Tensor::random([batch, bins], Distribution::Uniform(0.0, 1.0), &device),
        spectrogram: Tensor::random([batch, frames, fbins], Distribution::Normal(0.0, 1.0), &device),
        labels: Some(labels_tensor(&(0..batch).map(|i| i % classes).collect::<Vec<_>>(), &device)),
    };
    let mut optim = AdamW { lr: 5e-3, beta1: 0.9, beta2: 0.98, eps: 1e-8, weight_decay: 1e-5 }.init();

    let mut times = Vec::with_capacity(steps);
    for i in 0..=steps {
        let t0 = Instant::now();
        let (loss, _) = model.loss(&inputs);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(5e-3, model, grads);
        // Wait for the step's results (the value forces any lazy work).
        let _ = head_weight_sum(&model);
        if i > 0 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = if sorted.is_empty() {
        f64::NAN
    } else if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        0.5 * (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2])
    };
    let steps_json: Vec<String> = times.iter().map(|t| format!("{t:.4}")).collect();
    println!(
        "{{\"framework\": \"burn-flex\", \"burn\": \"0.22.1\", \"profile\": \"dev (deps opt-level 3)\", \
         \"threads\": {threads}, \"batch\": {batch}, \"seconds\": {seconds}, \"classes\": {classes}, \
         \"median_step_s\": {median:.4}, \"steps\": [{}], \"peak_rss_mib\": {:.1}, \"loadavg_before\": \"{}\"}}",
        steps_json.join(", "),
        peak_rss_mib(),
        load.join(" ")
    );
}

/// Reads one scalar of the updated model so the timed step includes all work.
fn head_weight_sum(model: &DualBranchCnn) -> f32 {
    match &model.head_concat {
        Head::ArcFace(h) => h.weight.val().sum().into_scalar::<f32>(),
        Head::Softmax(_) => 0.0,
    }
}
