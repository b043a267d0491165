//! Forward time of the full-size EAT-base encoder on one 10-s clip on the
//! flex CPU backend (`--backend` for another), the burn side of `tests/fixtures/gen/eat_torch.py`.
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
//!
//! The program is `asd bench eat-forward` (src/cli/bench.rs); this example calls it.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = asd::cli::bench::eat_forward(&args) {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}
