//! Training-step time on any backend (`--backend`, default flex), the burn side of the PyTorch
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
//!
//! The program is `asd bench train-step` (src/cli/bench.rs); this example calls it.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = asd::cli::bench::train_step(&args) {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}
