//! `asd pseudo-labels`: pseudo-attributes for concealed-attribute machines
//! from a trained embedding model (see `pipeline::pseudo`).

use super::run::{ExperimentArgs, trained};
use crate::pipeline::{pseudo, say};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
#[command(about = "Cluster the training clips of concealed-attribute machines (noAttribute) by a trained model's \
             embeddings, per domain; a second experiment uses the clusters as auxiliary classes \
             (data.pseudo_attributes)")]
pub struct PseudoLabelsArgs {
    /// The trained embedding model (experiment file).
    #[command(flatten)]
    pub exp: ExperimentArgs,
    /// Clusters of each machine's source-domain clips.
    #[arg(long, default_value_t = 4)]
    pub clusters: usize,
    /// Clusters of each machine's target-domain clips (10 clips in DCASE 2024).
    #[arg(long, default_value_t = 1)]
    pub target_clusters: usize,
    /// The pseudo-attribute file to write (JSON).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: PseudoLabelsArgs, quiet: bool) -> Result<()> {
    let p = trained(&a.exp)?;
    let labels = pseudo::pseudo_labels(&p, a.exp.backend, a.clusters, a.target_clusters, quiet)?;
    labels.save(&a.out)?;
    say(
        quiet,
        &format!(
            "{} clips labelled; use it with --set data.pseudo_attributes='\"{}\"'",
            labels.clusters.len(),
            a.out.display()
        ),
    );
    Ok(())
}
