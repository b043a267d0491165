//! `asd bench`: the benchmark programs, inside the binary so that a GPU
//! machine without a Rust toolchain needs one executable (scripts/gpu-bundle.sh).
//! `asd bench train-step …` and `asd bench eat-forward …` take the flags of
//! the `bench_train_step` and `bench_eat_forward` examples, which call them.

use crate::models::beats::{BeatsBatch, BeatsConfig, BeatsEncoder, BeatsLoraConfig};
use crate::models::dual_branch_cnn::{DualBranchBatch, DualBranchCnnConfig};
use crate::models::eat::{EatBatch, EatConfig, EatEncoder, EatLoraConfig};
use crate::models::nf_cdee::{NfCdeeBatch, NfCdeeConfig};
use crate::nn::util::{count_params, labels_tensor};
use crate::nn::{Head, LossConfig, linear};
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
        "eat-forward" => encoder_forward(Encoder::Eat, &a.args),
        "beats-forward" => encoder_forward(Encoder::Beats, &a.args),
        "knn" => knn(&a.args),
        other => bail!("asd bench {other}: use train-step, eat-forward, beats-forward or knn"),
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

/// RAYON_NUM_THREADS as a JSON value (`null` when unset or not a number).
fn threads_json() -> String {
    let threads = std::env::var("RAYON_NUM_THREADS").ok().and_then(|s| s.parse::<usize>().ok());
    threads.map_or("null".to_string(), |t| t.to_string())
}

/// The three load averages of /proc/loadavg (empty where unreadable).
fn loadavg() -> Vec<String> {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace().take(3).map(str::to_string).collect()
}

/// Median of the timings (NaN for none).
fn median(times: &[f64]) -> f64 {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]),
    }
}

/// A value of the updated head, read back so that a timed step includes all work.
fn sync_head(head: &Head) -> f32 {
    match head {
        Head::ArcFace(h) => h.weight.val().sum().into_scalar::<f32>(),
        Head::Softmax(_) => 0.0,
    }
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
/// `--model eat_lora|beats_lora`: the LoRA fine-tuning models with their
/// default sections at full size (EAT-base, BEATs_iter3; random frozen
/// encoder weights, LayerDrop off), batch `--batch` (8) of 10-s fbank
/// inputs, ArcFace over 150 classes, AdamW (lr 1e-4); the PyTorch side is
/// `tests/fixtures/gen/lora_torch.py`.
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
    let (threads, load) = (threads_json(), loadavg());
    let (backend, device) = backend_device(args)?;
    let device = device.autodiff();

    let (times, extra) = match which.as_str() {
        "dual_branch_cnn" => {
            let batch: usize = opt(args, "--batch", 16)?;
            let seconds: f32 = opt(args, "--seconds", 10.0)?;
            let classes: usize = opt(args, "--classes", 150)?;
            let branches: String = opt(args, "--branches", "both".to_string())?;
            let branches = serde_json::from_value(serde_json::Value::String(branches.clone()))
                .with_context(|| format!("--branches {branches}: use both, spectrum_only or spectrogram_only"))?;
            let attention: bool = opt(args, "--attention", true)?;
            let cfg = DualBranchCnnConfig { seconds, branches, attention, ..Default::default() };
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
            let times = time_steps(model, optim, 5e-3, steps, |m| m.loss(&inputs).0, |m| sync_head(&m.head_concat));
            let branches = serde_json::to_string(&cfg.branches)?;
            (
                times,
                format!(
                    "\"batch\": {batch}, \"seconds\": {seconds}, \"classes\": {classes}, \"branches\": {branches}, \
                     \"attention\": {attention}, \"params\": {params}"
                ),
            )
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
        "eat_lora" | "beats_lora" => {
            let batch: usize = opt(args, "--batch", 8)?;
            let classes: usize = opt(args, "--classes", 150)?;
            let loss = LossConfig::default();
            let labels = labels_tensor(&(0..batch).map(|i| i % classes).collect::<Vec<_>>(), &device);
            let optim = || AdamW { lr: 1e-4, ..AdamW::default() }.init();
            // The default model sections; `pretrained` is not read (random encoder weights).
            // LayerDrop off, so that every step does the same work.
            let section = serde_json::json!({"pretrained": "unused"});
            let (times, params) = if which == "eat_lora" {
                let cfg: EatLoraConfig = serde_json::from_value(section)?;
                let enc_cfg = EatConfig::default();
                let model = cfg.assemble(&enc_cfg, EatEncoder::new(&enc_cfg, &device), &loss, classes, 0, &device);
                let fbank = Tensor::<3>::random([batch, 1024, 128], Distribution::Normal(0.0, 1.0), &device);
                let params = model.param_counts().trainable();
                let batch = || EatBatch { fbank: fbank.clone(), labels: Some(labels.clone()), seed: 0 };
                (time_steps(model, optim(), 1e-4, steps, |m| m.loss(batch()), |m| sync_head(&m.head)), params)
            } else {
                let cfg = BeatsLoraConfig { layerdrop: Some(0.0), ..serde_json::from_value(section)? };
                let enc_cfg = beats_iter3();
                let model = cfg.assemble(&enc_cfg, BeatsEncoder::new(&enc_cfg, &device), &loss, classes, 0, &device);
                let fbank = Tensor::<3>::random([batch, 998, 128], Distribution::Normal(0.0, 1.0), &device);
                let params = model.param_counts().trainable();
                let batch = || BeatsBatch { fbank: fbank.clone(), labels: Some(labels.clone()), seed: 0 };
                (time_steps(model, optim(), 1e-4, steps, |m| m.loss(batch()), |m| sync_head(&m.head)), params)
            };
            (times, format!("\"batch\": {batch}, \"classes\": {classes}, \"trainable_params\": {params}"))
        }
        other => bail!("--model {other}: use dual_branch_cnn, nf_cdee, eat_lora or beats_lora"),
    };
    let mid = median(&times);
    let steps_json: Vec<String> = times.iter().map(|t| format!("{t:.4}")).collect();
    println!(
        "{{\"model\": \"{which}\", \"framework\": \"burn-{backend}\", \"burn\": \"{}\", \"profile\": \"{}\", \
         \"threads\": {threads}, {extra}, \"median_step_s\": {mid:.4}, \"steps_per_s\": {:.3}, \"steps\": [{}], \
         \"peak_rss_mib\": {:.1}, \"loadavg_before\": \"{}\"}}",
        env!("ASD_BURN_VERSION"),
        if cfg!(debug_assertions) { "dev (deps opt-level 3)" } else { "release" },
        1.0 / mid,
        steps_json.join(", "),
        peak_rss_mib(),
        load.join(" ")
    );
    Ok(())
}

/// The pretrained encoders `asd bench *-forward` times.
#[derive(Clone, Copy)]
enum Encoder {
    Eat,
    Beats,
}

/// Forward time of a full-size pretrained encoder on one 10-s clip on the
/// flex CPU backend (`--backend` for another), the burn side of
/// `tests/fixtures/gen/eat_torch.py` and `tests/fixtures/gen/beats_torch.py`:
///
/// ```text
/// cargo build --example bench_eat_forward
/// RAYON_NUM_THREADS=2 target/debug/examples/bench_eat_forward --runs 5
/// /work/pyref/bin/python tests/fixtures/gen/eat_torch.py --threads 2 --runs 5
/// RAYON_NUM_THREADS=2 target/debug/asd bench beats-forward --runs 5
/// /work/pyref/bin/python tests/fixtures/gen/beats_torch.py --beats-src UNILM/beats --threads 2 --runs 5
/// ```
///
/// EAT: EAT-base sizes (12 blocks, 768-d, 12 heads, FFN 3072), input
/// [1, 1024, 128] (10 s padded to 1024 frames → 1 + 512 tokens). BEATs: the
/// released iter3 configuration (12 layers, 768-d, gated relative position
/// bias, deep norm), fbank input [1, 998, 128] (10 s → 496 patches). Random
/// weights (speed does not depend on their values), eval, no adapters. One
/// warm-up pass, then the median of `--runs` passes (`--frames` changes the
/// input length). As in scoring, the passes run inside
/// [`linear::with_frozen_weights`], so the warm-up pass packs the Linear
/// weights and the timed ones reuse them; `--repack` times every pass
/// reading and packing them again. Threads come from RAYON_NUM_THREADS.
/// Prints one JSON object (peak RSS = VmHWM).
fn encoder_forward(which: Encoder, args: &[String]) -> Result<()> {
    let runs: usize = opt(args, "--runs", 5)?;
    let frames: usize = opt(args, "--frames", if matches!(which, Encoder::Eat) { 1024 } else { 998 })?;
    let (threads, load) = (threads_json(), loadavg());
    let (backend, device) = backend_device(args)?;
    device.seed(0);
    let x = Tensor::<3>::random([1, frames, 128], Distribution::Normal(0.0, 1.0), &device);
    let forward: Box<dyn Fn() -> Tensor<3>> = match which {
        Encoder::Eat => {
            let enc = EatEncoder::new(&EatConfig::default(), &device);
            Box::new(move || enc.forward(x.clone(), None))
        }
        Encoder::Beats => {
            let enc = BeatsEncoder::new(&beats_iter3(), &device);
            Box::new(move || enc.forward(x.clone(), None))
        }
    };
    let pass = || {
        let t = Instant::now();
        let _ = forward().into_data();
        t.elapsed().as_secs_f64()
    };
    let all = || (pass(), (0..runs).map(|_| pass()).collect::<Vec<f64>>());
    let repack = args.iter().any(|a| a == "--repack");
    let (warm, mut times) = if repack { all() } else { linear::with_frozen_weights(all) };
    times.sort_by(f64::total_cmp);
    let model = if matches!(which, Encoder::Eat) { "eat" } else { "beats" };
    println!(
        "{{\"model\": \"{model}\", \"side\": \"burn-{backend}\", \"threads\": {threads}, \"frames\": {frames}, \
         \"warmup_s\": {warm:.3}, \"median_s\": {:.3}, \"times_s\": {times:?}, \"peak_rss_mib\": {:.0}, \
         \"repack\": {repack}, \"loadavg_before\": {load:?}}}",
        median(&times),
        peak_rss_mib()
    );
    Ok(())
}

/// `asd bench eat-forward` (the `bench_eat_forward` example calls it).
pub fn eat_forward(args: &[String]) -> Result<()> {
    encoder_forward(Encoder::Eat, args)
}

/// The configuration of the released BEATs_iter3 checkpoints.
fn beats_iter3() -> BeatsConfig {
    BeatsConfig {
        input_patch_size: 16,
        relative_position_embedding: true,
        max_distance: 800,
        gru_rel_pos: true,
        deep_norm: true,
        layer_wise_gradient_decay_ratio: 0.6,
        dropout: 0.0,
        attention_dropout: 0.0,
        encoder_layerdrop: 0.05,
        ..BeatsConfig::default()
    }
}

/// Time of the kNN back-end (cosine, k = 1, one source and one target bank,
/// no SMOTE) on random embeddings, the burn-free side of
/// `tests/fixtures/gen/knn_sklearn_bench.py`:
///
/// ```text
/// RAYON_NUM_THREADS=2 target/release/asd bench knn --test 1000 --bank 1000 --dim 256 --runs 5
/// ```
///
/// `--bank` rows in each of the two banks, `--test` query clips, `--dim`
/// dimensions, standard normal draws (seeded). Timed: fitting (normalising
/// the banks) and scoring the queries. Prints one JSON object.
fn knn(args: &[String]) -> Result<()> {
    use crate::scoring::knn::{KnnConfig, KnnScorer};
    use rand_distr::{Distribution as _, StandardNormal};
    let (n_test, n_bank, dim): (usize, usize, usize) =
        (opt(args, "--test", 1000)?, opt(args, "--bank", 1000)?, opt(args, "--dim", 256)?);
    let runs: usize = opt(args, "--runs", 5)?;
    let threads = threads_json();
    let mut rng = crate::util::rng::stream(0, &[]);
    let mut draw = |n: usize| -> Vec<Vec<f32>> {
        (0..n).map(|_| (0..dim).map(|_| StandardNormal.sample(&mut rng)).collect()).collect()
    };
    let (source, target, test) = (draw(n_bank), draw(n_bank), draw(n_test));
    let pass = || -> Result<f64> {
        let t = Instant::now();
        let scorer = KnnScorer::fit(&KnnConfig::default(), &source, &target, 0)?;
        std::hint::black_box(scorer.score(&test)?);
        Ok(t.elapsed().as_secs_f64())
    };
    let warm = pass()?;
    let mut times = (0..runs.max(1)).map(|_| pass()).collect::<Result<Vec<f64>>>()?;
    times.sort_by(f64::total_cmp);
    println!(
        "{{\"model\": \"knn\", \"side\": \"asd\", \"threads\": {threads}, \"test\": {n_test}, \"bank\": {n_bank}, \
         \"dim\": {dim}, \"warmup_s\": {warm:.4}, \"median_s\": {:.4}, \"times_s\": {times:?}, \"peak_rss_mib\": {:.0}}}",
        median(&times),
        peak_rss_mib()
    );
    Ok(())
}
