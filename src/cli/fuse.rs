//! `asd fuse`: score calibration, score fusion and group fusion.

use crate::data::machines::DataSet;
use crate::fusion::{self, SystemConfig};
use crate::metrics::{self, ground_truth::GroundTruth};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
#[command(
    about = "Fuse the calibrated scores of several runs with per-group weights (a system file) into official CSVs"
)]
pub struct FuseArgs {
    /// System file (JSON): members, calibration, weights per group.
    pub system: PathBuf,
    /// Folder holding the members' run folders.
    #[arg(long, default_value = "checkpoints")]
    pub checkpoints: PathBuf,
    /// Output folder (default: <checkpoints>/<system name>/scores).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Evaluate the fused scores against this ground truth (data root or official folder).
    #[arg(long)]
    pub ground_truth: Option<PathBuf>,
    /// Which set of a data root holding both.
    #[arg(long, value_enum)]
    pub set: Option<SetArg>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SetArg {
    Dev,
    Eval,
}

pub fn run(a: FuseArgs, quiet: bool) -> Result<()> {
    let sys = SystemConfig::load(&a.system)?;
    let dirs = fusion::member_dirs(&sys, &a.system, &a.checkpoints)?;
    let out = a.out.unwrap_or_else(|| crate::train::RunDir::new(a.checkpoints.join(&sys.name)).scores());
    let machines = fusion::fuse(&sys, &dirs, &out, quiet)?;
    if !quiet {
        eprintln!("fused {} machine types into {}", machines.len(), out.display());
    }
    if let Some(gt) = a.ground_truth {
        let set = a.set.map(|s| match s {
            SetArg::Dev => DataSet::Dev,
            SetArg::Eval => DataSet::Eval,
        });
        let truth = GroundTruth::load(&gt, set)?;
        let report = metrics::evaluate_dir(&truth, &out, &metrics::Decisions::IfPresent(out.clone()))?;
        println!("{}", report.table());
    }
    Ok(())
}
