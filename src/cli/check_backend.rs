//! `asd check-backend`: the same models on two backends, compared.

use crate::backend::{self, BackendName};
use crate::experiment::Experiment;
use crate::pipeline::backend_check::{self, CheckOptions};
use anyhow::{Result, bail};
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
#[command(about = "Run each experiment's model on two backends (one batch of synthetic clips, then one \
                   training step) and compare their outputs; exit status 1 if any differs beyond --tolerance")]
pub struct CheckBackendArgs {
    /// Experiment files whose models to check (e.g. experiments/demo/*.json).
    #[arg(required = true)]
    pub experiments: Vec<PathBuf>,
    /// The backend under test.
    #[arg(long, value_enum)]
    pub backend: BackendName,
    /// The backend it is compared with.
    #[arg(long, value_enum, default_value_t = BackendName::Flex)]
    pub reference: BackendName,
    /// Largest accepted max |reference − other| / max |reference|.
    #[arg(long, default_value_t = 1e-3)]
    pub tolerance: f64,
    /// Synthetic clips in the batch.
    #[arg(long, default_value_t = 8)]
    pub clips: usize,
    /// Their length in seconds.
    #[arg(long, default_value_t = 4.0)]
    pub seconds: f32,
}

pub fn run(a: CheckBackendArgs, quiet: bool) -> Result<()> {
    let reference = backend::device(a.reference)?;
    let other = backend::device(a.backend)?;
    let opts = CheckOptions { clips: a.clips, seconds: a.seconds, tolerance: a.tolerance, ..Default::default() };
    let mut failed = Vec::new();
    for path in &a.experiments {
        let exp = Experiment::load(path, &[])?;
        let name = path.display().to_string();
        let started = std::time::Instant::now();
        let row = backend_check::check(&name, &exp, &reference, &other, &opts)
            .map_err(|e| e.context(format!("{name} on {}", a.backend)))?;
        if !quiet {
            eprintln!(
                "{} {name} ({}): outputs {:.1e}, loss {:.6} vs {:.6}, after one step {:.1e} [{:.1} s]",
                if row.ok { "ok  " } else { "FAIL" },
                row.kind,
                row.infer_rel_diff,
                row.loss_reference,
                row.loss_other,
                row.step_rel_diff,
                started.elapsed().as_secs_f64()
            );
        }
        println!("{}", serde_json::to_string(&row)?);
        if !row.ok {
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!("{} differs from {} beyond {}: {}", a.backend, a.reference, a.tolerance, failed.join(", "));
    }
    Ok(())
}
