//! kNN with local-density rescaling (Wilkinghoff et al., "Keeping the
//! Balance: Anomaly Score Calculation for Domain Generalization", ICASSP
//! 2025; ASDKit's `KnnRescale` backend): one bank of all training clips, no
//! domain labels. Every bank row r gets a density constant c_r, the mean
//! Euclidean distance to its `k_ref` nearest other rows; a clip's score is
//! the mean of its k smallest rescaled distances d(x, r) / c_r. Sparse (target)
//! regions of the bank get large constants, so their clips are not
//! penalised for being far from the dense source data.
//!
//! `cosine` unit-normalises embeddings first (distances stay Euclidean, as in
//! ASDKit, not halved); `euclidean` uses them as they are. Training-clip
//! scores leave the clip out of the bank (its constant keeps its own row).

use super::Fitted;
use super::knn::{gram, normalize64};
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RescaleMetric {
    #[default]
    Cosine,
    Euclidean,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnnRescaleConfig {
    /// Neighbours averaged (ASDKit `n_neighbors`).
    #[serde(default = "one")]
    pub k: usize,
    /// Neighbours of a bank row that set its density constant (ASDKit default 4).
    #[serde(default = "four")]
    pub k_ref: usize,
    #[serde(default)]
    pub metric: RescaleMetric,
}

fn one() -> usize {
    1
}
fn four() -> usize {
    4
}

impl Default for KnnRescaleConfig {
    fn default() -> Self {
        KnnRescaleConfig { k: 1, k_ref: 4, metric: RescaleMetric::Cosine }
    }
}

pub struct KnnRescale {
    cfg: KnnRescaleConfig,
    bank: Vec<Vec<f64>>,
    norms: Vec<f64>,
    constants: Vec<f64>,
}

/// Euclidean distances from a Gram row and squared norms (clipped at 0, as
/// scikit-learn's `euclidean_distances`).
fn distances(sims: &[f64], x2: f64, bank2: &[f64]) -> Vec<f64> {
    sims.iter().zip(bank2).map(|(c, y2)| (x2 + y2 - 2.0 * c).max(0.0).sqrt()).collect()
}

fn mean_of_smallest(mut d: Vec<f64>, k: usize) -> f64 {
    d.sort_by(f64::total_cmp);
    let k = k.min(d.len());
    d[..k].iter().sum::<f64>() / k as f64
}

impl KnnRescale {
    pub fn fit(cfg: &KnnRescaleConfig, source: &[Vec<f64>], target: &[Vec<f64>]) -> Result<KnnRescale> {
        if cfg.k == 0 || cfg.k_ref == 0 {
            bail!("knn_rescale: k and k_ref must be at least 1");
        }
        let bank: Vec<Vec<f64>> = source.iter().chain(target).map(|r| prep(cfg, r)).collect();
        if bank.len() < 2 {
            bail!("knn_rescale needs at least 2 training clips, got {}", bank.len());
        }
        let norms: Vec<f64> = bank.iter().map(|r| r.iter().map(|v| v * v).sum()).collect();
        let g = gram(&bank, &bank);
        let constants = g
            .iter()
            .enumerate()
            .map(|(i, sims)| {
                let mut d = distances(sims, norms[i], &norms);
                d.remove(i);
                mean_of_smallest(d, cfg.k_ref)
            })
            .collect();
        Ok(KnnRescale { cfg: cfg.clone(), bank, norms, constants })
    }

    /// Mean of the k smallest rescaled distances of every row of `xs`;
    /// `leave_out` skips bank row i for query i (training clips).
    fn rescaled(&self, xs: &[Vec<f64>], leave_out: bool) -> Vec<f64> {
        gram(xs, &self.bank)
            .iter()
            .zip(xs)
            .enumerate()
            .map(|(i, (sims, x))| {
                let x2 = x.iter().map(|v| v * v).sum();
                let d: Vec<f64> = distances(sims, x2, &self.norms)
                    .into_iter()
                    .zip(&self.constants)
                    .enumerate()
                    .filter(|(j, _)| !(leave_out && *j == i))
                    .map(|(_, (d, c))| d / c.max(1e-12))
                    .collect();
                mean_of_smallest(d, self.cfg.k)
            })
            .collect()
    }
}

fn prep(cfg: &KnnRescaleConfig, r: &[f64]) -> Vec<f64> {
    match cfg.metric {
        RescaleMetric::Cosine => normalize64(r),
        RescaleMetric::Euclidean => r.to_vec(),
    }
}

impl Fitted for KnnRescale {
    fn score(&self, test: &[Vec<f64>]) -> Vec<f64> {
        let xs: Vec<Vec<f64>> = test.iter().map(|x| prep(&self.cfg, x)).collect();
        self.rescaled(&xs, false)
    }

    fn train_scores(&self) -> Vec<f64> {
        self.rescaled(&self.bank, true)
    }
}
