//! `asd bench`: the benchmark programs, inside the binary so that a GPU
//! machine without a Rust toolchain needs one executable (scripts/gpu-bundle.sh).
//! `asd bench train-step …` and `asd bench eat-forward …` take the flags of
//! the `bench_train_step` and `bench_eat_forward` examples, which call them.

use crate::models::dual_branch_cnn::{DualBranchBatch, DualBranchCnnConfig};
use crate::models::eat::{EatConfig, EatEncoder};
use crate::models::nf_cdee::{NfCdeeBatch, NfCdeeConfig};
use crate::nn::util::{count_params, labels_tensor};
use crate::nn::{Head, LossConfig};
use crate::train::AdamW;
use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Distribution, Tensor};
use clap::Args;
use std::time::Instant;

#[derive(Debug, Args)]
#[command(about = "Benchmark programs (see BENCHMARKS.md): train-step | eat-forward, then their flags")]
pub struct BenchArgs {
    /// `train-step` or `eat-forward`.
    pub what: String,
    /// Flags of that program (`--model nf_cdee --batch 128 --backend cuda …`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn run(a: BenchArgs) -> Result<()> {
    match a.what.as_str() {
        "train-step" => train_step(&a.args),
        "eat-forward" => eat_forward(&a.args),
        other => bail!("asd bench {other}: use train-step or eat-forward"),
    }
}

/// The value after `--name`, or `default`.
fn opt<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => {
            let v = args.get(i + 1).with_context(|| format!("{name} needs a value"))?;
            v.parse().map_err(|_| anyhow::anyhow!("{name} {v}: not a valid value"))
        }
    }
}

/// The device of `--backend NAME` (default flex), and its name.
fn backend_device(args: &[String]) -> Result<(String, Device)> {
    let name: String = opt(args, "--backend", "flex".to_string())?;
    let backend = <crate::backend::BackendName as clap::ValueEnum>::from_str(&name, true)
        .map_err(|e| anyhow::anyhow!("--backend {name}: {e}"))?;
    Ok((name, crate::backend::device(backend)?))
}

/// Peak resident memory of this process (VmHWM of /proc/self/status), MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

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

/// Training-step time on any backend (`--backend`, default flex), the burn side of the PyTorch
/// re-statements in `tests/fixtures/gen/`:
///
/// ```text
/// cargo build --example bench_train_step
/// RAYON_NUM_THREADS=2 target/debug/examples/bench_train_step --batch 16 --seconds 10 --steps 5
/// /work/pyref/bin/python tests/fixtures/gen/dual_branch_cnn_torch.py --bench --batch 16 --seconds 10 --threads 2 --steps 5
/// RAYON_NUM_THREADS=2 target/debug/examples/bench_train_step --model nf_cdee --batch 128 --steps 20
/// /work/pyref/bin/python tests/fixtures/gen/nf_cdee_torch.py --bench --batch 128 --threads 2 --steps 20 --warmup 1
/// ```
///
/// `--model dual_branch_cnn` (default): random inputs of the model's shapes
/// (spectrum uniform [0, 1), spectrogram standard normal), labels
/// `i % classes` (`--classes`, default 150), three ArcFace losses summed,
/// AdamW (lr 5e-3, betas 0.9/0.98, weight decay 1e-5).
/// `--model nf_cdee`: the report's full configuration (8 blocks, 2048
/// hidden units), log-mel input [B, 313, 256] (10 s) drawn N(−10, 2²), mean
/// NLL, Adam (lr 1e-3); the timed step includes turning the log-mel batch
/// into its per-clip time moments, as the training task does.
/// One warm-up step, then `--steps` timed steps (forward + backward +
/// optimizer step). Threads come from RAYON_NUM_THREADS. Prints one JSON
/// object (peak RSS = VmHWM of /proc/self/status).
pub fn train_step(args: &[String]) -> Result<()> {
    let which: String = opt(args, "--model", "dual_branch_cnn".to_string())?;
    let steps: usize = opt(args, "--steps", 5)?;
    let threads = std::env::var("RAYON_NUM_THREADS").ok().and_then(|s| s.parse::<usize>().ok());
    let threads = threads.map_or("null".to_string(), |t| t.to_string());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let (backend, device) = backend_device(args)?;
    let device = device.autodiff();

    let (times, extra) = match which.as_str() {
        "dual_branch_cnn" => {
            let batch: usize = opt(args, "--batch", 16)?;
            let seconds: f32 = opt(args, "--seconds", 10.0)?;
            let classes: usize = opt(args, "--classes", 150)?;
            let cfg = DualBranchCnnConfig { seconds, ..Default::default() };
            cfg.validate()?;
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
            let batch: usize = opt(args, "--batch", 128)?;
            let frames: usize = opt(args, "--frames", 313)?;
            let cfg = NfCdeeConfig::default();
            let model = cfg.init(0, &device);
            let x = Tensor::<3>::random([batch, frames, cfg.mels], Distribution::Normal(-10.0, 2.0), &device);
            let x = crate::nn::util::to_vec(x);
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
        other => bail!("--model {other}: use dual_branch_cnn or nf_cdee"),
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
        "{{\"model\": \"{which}\", \"framework\": \"burn-{backend}\", \"burn\": \"{}\", \"profile\": \"{}\", \
         \"threads\": {threads}, {extra}, \"median_step_s\": {median:.4}, \"steps_per_s\": {:.3}, \"steps\": [{}], \
         \"peak_rss_mib\": {:.1}, \"loadavg_before\": \"{}\"}}",
        env!("ASD_BURN_VERSION"),
        if cfg!(debug_assertions) { "dev (deps opt-level 3)" } else { "release" },
        1.0 / median,
        steps_json.join(", "),
        peak_rss_mib(),
        load.join(" ")
    );
    Ok(())
}

/// Forward time of the full-size EAT-base encoder on one 10-s clip on the
/// flex CPU backend (`--backend` for another), the burn side of `tests/fixtures/gen/eat_torch.py`.
///
/// ```text
/// cargo build --example bench_eat_forward
/// RAYON_NUM_THREADS=2 target/debug/examples/bench_eat_forward --runs 5
/// /work/pyref/bin/python tests/fixtures/gen/eat_torch.py --threads 2 --runs 5
/// ```
///
/// EAT-base sizes (12 blocks, 768-d, 12 heads, FFN 3072) with random
/// weights (speed does not depend on their values), input [1, 1024, 128]
/// (10 s padded to 1024 frames → 1 + 512 tokens), eval, no adapters. One
/// warm-up pass, then the median of `--runs` passes. Threads come from
/// RAYON_NUM_THREADS. Prints one JSON object (peak RSS = VmHWM).
pub fn eat_forward(args: &[String]) -> Result<()> {
    let runs: usize = opt(args, "--runs", 5)?;
    let frames: usize = opt(args, "--frames", 1024)?;
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "null".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let (backend, device) = backend_device(args)?;
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
        "{{\"side\": \"burn-{backend}\", \"threads\": {threads}, \"frames\": {frames}, \"warmup_s\": {warm:.3}, \
         \"median_s\": {:.3}, \"times_s\": {times:?}, \"peak_rss_mib\": {:.0}, \"loadavg_before\": {load:?}}}",
        times[times.len() / 2],
        peak_rss_mib()
    );
    Ok(())
}
