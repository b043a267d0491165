//! Pseudo-attributes for machines whose attributes are concealed
//! (`noAttribute`): the training clips of such a machine are embedded by a
//! first trained model, clustered per domain with k-means (on unit-normalised
//! embeddings, seeded), and the cluster indices become auxiliary classes of a
//! second model (`data.pseudo_attributes`, see [`crate::data::labels`]).
//! Only training clips are read; no label of a test clip is involved.

use super::{InferVisitor, Prepared, say};
use crate::backend::{self, BackendName};
use crate::data::Clip;
use crate::data::labels::pseudo_key;
use crate::data::machines;
use crate::data::naming::{Domain, NO_ATTRIBUTE, Split};
use crate::models::Scoring;
use crate::scoring::kmeans::{kmeans, nearest};
use crate::scoring::knn::normalize64;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// What `asd pseudo-labels` writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PseudoLabels {
    /// The experiment whose trained run embedded the clips.
    pub experiment: String,
    pub source_clusters: usize,
    pub target_clusters: usize,
    /// Cluster index of every clustered training clip, by `<machine>/<file name>`.
    pub clusters: BTreeMap<String, usize>,
}

impl PseudoLabels {
    pub fn load(path: &Path) -> Result<PseudoLabels> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the pseudo-attribute file {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| {
            format!("{} is not a pseudo-attribute file (written by asd pseudo-labels)", path.display())
        })
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        crate::util::atomic::write_json(path, self)
    }
}

/// Clusters the training clips of every concealed-attribute machine of `p`
/// (a trained embedding model) per domain.
pub fn pseudo_labels(
    p: &Prepared,
    backend: BackendName,
    source_clusters: usize,
    target_clusters: usize,
    quiet: bool,
) -> Result<PseudoLabels> {
    if source_clusters == 0 || target_clusters == 0 {
        bail!("--clusters and --target-clusters must be at least 1");
    }
    if p.exp.model.info().scoring() != Scoring::Embedding {
        bail!("{} is not an embedding model: pseudo-attributes cluster embeddings", p.exp.name);
    }
    if p.exp.data.split_into_units() {
        bail!("{} trains one model per group or machine; pseudo-attributes need one embedding model", p.exp.name);
    }
    let concealed = |c: &&Clip| {
        c.split == Split::Train
            && c.name.attributes.as_deref() == Some(NO_ATTRIBUTE)
            && machines::find(&c.machine).is_some_and(|m| m.concealed_attributes)
    };
    let clips: Vec<&Clip> = p.dataset.clips.iter().filter(concealed).collect();
    if clips.is_empty() {
        bail!("no training clip of a concealed-attribute machine (noAttribute) under {}", p.exp.data.root.display());
    }
    let checkpoint = p.scoring_checkpoint()?;
    let device = backend::device(backend)?;
    say(quiet, &format!("embedding {} training clips with {}", clips.len(), checkpoint.display()));
    let out = p.exp.model.visit(InferVisitor { p, checkpoint: &checkpoint, clips: &clips, device: &device, quiet })?;
    let mut cells: BTreeMap<(&str, bool), Vec<usize>> = BTreeMap::new();
    for (i, c) in clips.iter().enumerate() {
        cells.entry((c.machine.as_str(), c.domain() == Some(Domain::Target))).or_default().push(i);
    }
    let mut clusters = BTreeMap::new();
    for ((machine, target), ix) in cells {
        let k = if target { target_clusters } else { source_clusters };
        let rows: Vec<Vec<f64>> =
            ix.iter().map(|&i| normalize64(&out[i].iter().map(|&v| v as f64).collect::<Vec<_>>())).collect();
        let seed = p.exp.seed ^ crate::util::rng::hash_str(machine) ^ target as u64;
        let centers = kmeans(&rows, k, 100, seed);
        for (&i, x) in ix.iter().zip(&rows) {
            clusters.insert(pseudo_key(clips[i]), nearest(x, &centers).0);
        }
        say(
            quiet,
            &format!(
                "{machine} {}: {} clips in {} clusters",
                if target { "target" } else { "source" },
                ix.len(),
                centers.len()
            ),
        );
    }
    Ok(PseudoLabels { experiment: p.exp.name.clone(), source_clusters, target_clusters, clusters })
}
