//! Training-step time on the flex CPU backend, the burn side of the PyTorch
//! re-statements in `tests/fixtures/gen/`:
//!
//! ```text
//! cargo build --example bench_train_step
//! RAYON_NUM_THREADS=2 target/debug/examples/bench_train_step --batch 16 --seconds 10 --steps 5
//! /work/pyref/bin/python tests/fixtures/gen/dual_branch_cnn_torch.py --bench --batch 16 --seconds 10 --threads 2 --steps 5
//! RAYON_NUM_THREADS=2 target/debug/examples/bench_train_step --model nf_cdee --batch 128 --steps 20
//! /work/pyref/bin/python tests/fixtures/gen/nf_cdee_torch.py --bench --batch 128 --threads 2 --steps 20 --warmup 1
//! ```
//!
//! `--model dual_branch_cnn` (default): random inputs of the model's shapes
//! (spectrum uniform [0, 1), spectrogram standard normal), labels
//! `i % classes` (`--classes`, default 150), three ArcFace losses summed,
//! AdamW (lr 5e-3, betas 0.9/0.98, weight decay 1e-5).
//! `--model nf_cdee`: the report's full configuration (8 blocks, 2048
//! hidden units), log-mel input [B, 313, 256] (10 s) drawn N(−10, 2²), mean
//! NLL, Adam (lr 1e-3); the timed step includes turning the log-mel batch
//! into its per-clip time moments, as the training task does.
//! One warm-up step, then `--steps` timed steps (forward + backward +
//! optimizer step). Threads come from RAYON_NUM_THREADS. Prints one JSON
//! object (peak RSS = VmHWM of /proc/self/status).

use asd::models::dual_branch_cnn::{DualBranchBatch, DualBranchCnnConfig};
use asd::models::nf_cdee::{NfCdeeBatch, NfCdeeConfig};
use asd::nn::util::{count_params, labels_tensor};
use asd::nn::{Head, LossConfig};
use asd::train::AdamW;
use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Distribution, Tensor};
use std::time::Instant;

mod common;
use common::{arg, peak_rss_mib};

/// Times `steps` optimizer steps after one warm-up step; `loss` gives the
/// step's loss, `sync` reads a value of the updated model so the timed step
/// includes all work.
fn time_steps<M: Module>(
    mut model: M,
    mut optim: ModuleOptimizer,
    lr: f64,
    steps: usize,
    loss: impl Fn(&M) -> Tensor<1>,
    sync: impl Fn(&M) -> f32,
) -> Vec<f64> {
    let mut times = Vec::with_capacity(steps);
    for i in 0..=steps {
        let t0 = Instant::now();
        let l = loss(&model);
        let grads = GradientsParams::from_grads(l.backward(), &model);
        model = optim.step(lr, model, grads);
        let _ = sync(&model);
        if i > 0 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    times
}

fn main() {
    let which: String = arg("--model", "dual_branch_cnn".to_string());
    let steps: usize = arg("--steps", 5);
    let threads = std::env::var("RAYON_NUM_THREADS").ok().and_then(|s| s.parse::<usize>().ok());
    let threads = threads.map_or("null".to_string(), |t| t.to_string());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let device = Device::flex().autodiff();

    let (times, extra) = match which.as_str() {
        "dual_branch_cnn" => {
            let batch: usize = arg("--batch", 16);
            let seconds: f32 = arg("--seconds", 10.0);
            let classes: usize = arg("--classes", 150);
            let cfg = DualBranchCnnConfig { seconds, ..Default::default() };
            cfg.validate().expect("config");
            let model = cfg.init(&LossConfig::default(), classes, 0, &device);
            let (bins, frames, fbins) = cfg.input_shapes();
            let inputs = DualBranchBatch {
                spectrum: Tensor::random([batch, bins], Distribution::Uniform(0.0, 1.0), &device),
                spectrogram: Tensor::random([batch, frames, fbins], Distribution::Normal(0.0, 1.0), &device),
                labels: Some(labels_tensor(&(0..batch).map(|i| i % classes).collect::<Vec<_>>(), &device)),
            };
            let optim = AdamW { lr: 5e-3, beta1: 0.9, beta2: 0.98, eps: 1e-8, weight_decay: 1e-5 }.init();
            let params = count_params(&model);
            let times = time_steps(
                model,
                optim,
                5e-3,
                steps,
                |m| m.loss(&inputs).0,
                |m| match &m.head_concat {
                    Head::ArcFace(h) => h.weight.val().sum().into_scalar::<f32>(),
                    Head::Softmax(_) => 0.0,
                },
            );
            (times, format!("\"batch\": {batch}, \"seconds\": {seconds}, \"classes\": {classes}, \"params\": {params}"))
        }
        "nf_cdee" => {
            let batch: usize = arg("--batch", 128);
            let frames: usize = arg("--frames", 313);
            let cfg = NfCdeeConfig::default();
            let model = cfg.init(0, &device);
            let x = Tensor::<3>::random([batch, frames, cfg.mels], Distribution::Normal(-10.0, 2.0), &device);
            let x = asd::nn::util::to_vec(x);
            let optim = AdamW { lr: 1e-3, weight_decay: 0.0, ..AdamW::default() }.init();
            let params = count_params(&model);
            let times = time_steps(
                model,
                optim,
                1e-3,
                steps,
                |m| m.loss(NfCdeeBatch::from_logmel(&x, batch, frames, cfg.mels, &device)),
                |m| m.norm.gamma.val().sum().into_scalar::<f32>(),
            );
            (times, format!("\"batch\": {batch}, \"frames\": {frames}, \"params\": {params}"))
        }
        other => panic!("--model {other}: use dual_branch_cnn or nf_cdee"),
    };
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
        "{{\"model\": \"{which}\", \"framework\": \"burn-flex\", \"burn\": \"{}\", \"profile\": \"dev (deps opt-level 3)\", \
         \"threads\": {threads}, {extra}, \"median_step_s\": {median:.4}, \"steps_per_s\": {:.3}, \"steps\": [{}], \
         \"peak_rss_mib\": {:.1}, \"loadavg_before\": \"{}\"}}",
        env!("ASD_BURN_VERSION"),
        1.0 / median,
        steps_json.join(", "),
        peak_rss_mib(),
        load.join(" ")
    );
}
