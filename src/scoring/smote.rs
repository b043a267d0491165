//! SMOTE oversampling of the target-domain training embeddings
//! (imbalanced-learn semantics, models.md §5.2).
//!
//! For a float `ratio` the minority (target) class is grown to
//! `floor(ratio * n_majority)` rows. Each synthetic row interpolates a
//! uniformly drawn minority row towards one of its `k_neighbors` nearest
//! minority neighbours (Euclidean, self excluded): `x + u * (x_nn - x)`,
//! `u ~ U[0, 1)`. The random stream is this project's (seeded ChaCha8), not
//! numpy's, so the synthetic rows differ from imbalanced-learn's draws while
//! following the same rule.

use anyhow::{Result, bail};
use rand::RngExt;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmoteConfig {
    /// Target rows after oversampling, as a fraction of the source rows
    /// (0.2 = ASDKit's default, config/score/experiments/default.yaml).
    #[serde(default = "default_ratio")]
    pub ratio: f64,
    /// Minority neighbours to interpolate towards (ASDKit: 2).
    #[serde(default = "default_k")]
    pub k_neighbors: usize,
}

fn default_ratio() -> f64 {
    0.2
}
fn default_k() -> usize {
    2
}

impl Default for SmoteConfig {
    fn default() -> Self {
        SmoteConfig { ratio: default_ratio(), k_neighbors: default_k() }
    }
}

/// One synthetic sample: `minority[row] + u * (minority[neighbour] - minority[row])`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Draw {
    pub row: usize,
    pub neighbour: usize,
    pub u: f64,
}

/// Indices of the `k` nearest other rows of each row (Euclidean; ties by index).
pub fn neighbours(rows: &[Vec<f64>], k: usize) -> Vec<Vec<usize>> {
    (0..rows.len())
        .map(|i| {
            let mut d: Vec<(f64, usize)> =
                (0..rows.len()).filter(|&j| j != i).map(|j| (sq_dist(&rows[i], &rows[j]), j)).collect();
            d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            d.into_iter().take(k).map(|(_, j)| j).collect()
        })
        .collect()
}

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Applies draws to the minority rows.
pub fn interpolate(minority: &[Vec<f64>], draws: &[Draw]) -> Vec<Vec<f64>> {
    draws
        .iter()
        .map(|d| {
            let (a, b) = (&minority[d.row], &minority[d.neighbour]);
            a.iter().zip(b).map(|(x, y)| x + d.u * (y - x)).collect()
        })
        .collect()
}

/// Returns the synthetic minority rows (the originals are not repeated).
pub fn oversample(minority: &[Vec<f64>], n_majority: usize, cfg: &SmoteConfig, seed: u64) -> Result<Vec<Vec<f64>>> {
    if !(cfg.ratio > 0.0 && cfg.ratio.is_finite()) {
        bail!("SMOTE ratio must be positive, got {}", cfg.ratio);
    }
    if cfg.k_neighbors == 0 {
        bail!("SMOTE k_neighbors must be at least 1");
    }
    let wanted = (cfg.ratio * n_majority as f64).floor() as usize;
    if minority.is_empty() || wanted <= minority.len() {
        return Ok(Vec::new());
    }
    if minority.len() < 2 {
        // No neighbour to interpolate towards; imbalanced-learn refuses too.
        bail!("SMOTE needs at least 2 target-domain clips, got {}", minority.len());
    }
    // imbalanced-learn errors when k_neighbors >= n_minority; with only ten
    // target clips per machine we use every other clip instead.
    let k = cfg.k_neighbors.min(minority.len() - 1);
    let nn = neighbours(minority, k);
    let mut rng = crate::util::rng::stream(seed, &[0x5307e]);
    let draws: Vec<Draw> = (0..wanted - minority.len())
        .map(|_| {
            let idx = rng.random_range(0..minority.len() * k);
            let (row, col) = (idx / k, idx % k);
            Draw { row, neighbour: nn[row][col], u: rng.random::<f64>() }
        })
        .collect();
    Ok(interpolate(minority, &draws))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_imbalanced_learn() {
        let minority: Vec<Vec<f64>> = (0..3).map(|i| vec![i as f64, 1.0]).collect();
        let cfg = SmoteConfig::default();
        assert_eq!(oversample(&minority, 30, &cfg, 0).unwrap().len(), 3); // floor(0.2*30)=6
        assert_eq!(oversample(&minority, 990, &cfg, 0).unwrap().len(), 195);
        assert!(oversample(&minority, 10, &cfg, 0).unwrap().is_empty());
        // Synthetic rows lie on segments between minority rows.
        for r in oversample(&minority, 990, &cfg, 3).unwrap() {
            assert!((0.0..=2.0).contains(&r[0]) && r[1] == 1.0);
        }
        assert_eq!(oversample(&minority, 990, &cfg, 3).unwrap(), oversample(&minority, 990, &cfg, 3).unwrap());
        assert!(oversample(&minority[..1], 990, &cfg, 0).is_err());
    }
}
