//! kNN anomaly scores with separate source and target banks (models.md §5.1).
//!
//! Embeddings are L2-normalised (`x / max(|x|, 1e-12)`). For each test clip
//! the distance to its k nearest training embeddings is averaged per domain
//! bank, and the score is the smaller of the two domain scores: a clip close
//! to either domain's normal data is normal. Similarities come from one
//! matrix product (test × bankᵀ) in f64.
//!
//! Metrics: `cosine` = 1 − cos (sklearn's cosine distance, RMIS / THUEE);
//! `chord` = |x̂ − ŷ| / 2, ASDKit's "cosine" kNN (Euclidean distance of unit
//! vectors, halved). Optional per-domain z-normalisation (RMIS, `normalize:
//! True`) standardises each domain's test scores by their own mean and
//! population standard deviation before the minimum.

use super::smote::{self, SmoteConfig};
use anyhow::{Result, bail};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KnnMetric {
    #[default]
    Cosine,
    Chord,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnnConfig {
    /// Neighbours averaged per domain bank (1 in THUEE/RMIS and ASDKit).
    #[serde(default = "one")]
    pub k: usize,
    #[serde(default)]
    pub metric: KnnMetric,
    /// Oversample the target bank with SMOTE (THUEE: for the pre-trained models).
    #[serde(default)]
    pub smote: Option<SmoteConfig>,
    /// Z-normalise each domain's test scores before the minimum (RMIS).
    #[serde(default)]
    pub domain_znorm: bool,
}

fn one() -> usize {
    1
}

impl Default for KnnConfig {
    fn default() -> Self {
        KnnConfig { k: 1, metric: KnnMetric::Cosine, smote: None, domain_znorm: false }
    }
}

/// Row-major matrix of unit-norm embeddings.
#[derive(Debug, Clone)]
struct Bank {
    rows: Vec<Vec<f64>>,
}

/// Unit-normalises a row (`x / max(|x|, 1e-12)`, as sklearn's `normalize`).
pub fn normalize(x: &[f32]) -> Vec<f64> {
    let v: Vec<f64> = x.iter().map(|&a| a as f64).collect();
    normalize64(&v)
}

/// Unit-normalises an f64 row (`x / max(|x|, 1e-12)`).
pub fn normalize64(v: &[f64]) -> Vec<f64> {
    let n = v.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12);
    v.iter().map(|a| a / n).collect()
}

/// Gram matrix `a · bᵀ` (rows of a by rows of b), one parallel matrix product.
pub fn gram(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
    a.par_chunks(TILE).flat_map_iter(|tile| gram_tile(tile, b)).collect()
}

/// Test rows per tile: the tile (16 × 2 KB at 256-d) stays in cache while
/// the bank streams past once per tile, not once per test row (which made
/// the product memory-bound).
const TILE: usize = 16;

/// Rows of the Gram matrix for a tile of `a`, four tile rows per bank row
/// at a time (measured faster than two, although four spill registers).
fn gram_tile(tile: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let mut rows = vec![Vec::with_capacity(b.len()); tile.len()];
    let quads = tile.chunks_exact(4);
    let rest = quads.remainder();
    let done = tile.len() - rest.len();
    for y in b {
        for (i, q) in quads.clone().enumerate() {
            let d = dots::<4>(y, [&q[0], &q[1], &q[2], &q[3]]);
            for (r, v) in d.into_iter().enumerate() {
                rows[4 * i + r].push(v);
            }
        }
        for (r, x) in rest.iter().enumerate() {
            rows[done + r].push(dots::<1>(y, [x])[0]);
        }
    }
    rows
}

/// Dot products of `x` with R rows, each in eight interleaved partial sums:
/// a fixed summation order (the same result at any thread count, tiling and
/// R) that stays in vector registers and loads `x` once for R rows, where one
/// running sum per product cannot be reordered.
fn dots<const R: usize>(x: &[f64], ys: [&[f64]; R]) -> [f64; R] {
    let n8 = x.len() / 8 * 8;
    let mut acc = [[0.0f64; 8]; R];
    for c in (0..n8).step_by(8) {
        let xa = &x[c..c + 8];
        for (acc, y) in acc.iter_mut().zip(&ys) {
            let ya = &y[c..c + 8];
            for i in 0..8 {
                acc[i] += xa[i] * ya[i];
            }
        }
    }
    std::array::from_fn(|r| {
        let a = &acc[r];
        let tail: f64 = x[n8..].iter().zip(&ys[r][n8..]).map(|(p, q)| p * q).sum();
        ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])) + tail
    })
}

/// What every back-end needs of one machine type's training embeddings:
/// both domains present, one dimension, finite values.
pub fn check_training(source: &[Vec<f32>], target: &[Vec<f32>]) -> Result<()> {
    if source.is_empty() || target.is_empty() {
        bail!(
            "the back-end needs training embeddings of both domains (got {} source, {} target)",
            source.len(),
            target.len()
        );
    }
    let dim = source[0].len();
    if let Some(bad) = source.iter().chain(target).find(|r| r.len() != dim) {
        bail!("embedding dimensions differ ({dim} vs {})", bad.len());
    }
    if source.iter().chain(target).flatten().any(|v| !v.is_finite()) {
        bail!("training embeddings contain NaN or infinite values");
    }
    Ok(())
}

/// A fitted kNN scorer for one machine type.
#[derive(Debug, Clone)]
pub struct KnnScorer {
    cfg: KnnConfig,
    source: Bank,
    target: Bank,
    /// Real (not SMOTE) target rows at the start of the target bank.
    n_target_real: usize,
}

/// Per-clip scores with the per-domain parts.
#[derive(Debug, Clone, PartialEq)]
pub struct KnnScores {
    pub source: Vec<f64>,
    pub target: Vec<f64>,
    pub score: Vec<f64>,
}

impl KnnScorer {
    /// Fits the banks. `seed` drives SMOTE.
    pub fn fit(cfg: &KnnConfig, source: &[Vec<f32>], target: &[Vec<f32>], seed: u64) -> Result<KnnScorer> {
        if cfg.k == 0 {
            bail!("kNN k must be at least 1");
        }
        check_training(source, target)?;
        let source: Vec<Vec<f64>> = source.iter().map(|r| normalize(r)).collect();
        let mut target: Vec<Vec<f64>> = target.iter().map(|r| normalize(r)).collect();
        let n_target_real = target.len();
        if let Some(s) = &cfg.smote {
            let synth = smote::oversample(&target, source.len(), s, seed)?;
            target.extend(synth.iter().map(|r| normalize64(r)));
        }
        Ok(KnnScorer { cfg: cfg.clone(), source: Bank { rows: source }, target: Bank { rows: target }, n_target_real })
    }

    /// Target bank size after SMOTE.
    pub fn target_len(&self) -> usize {
        self.target.rows.len()
    }

    /// Scores test embeddings.
    pub fn score(&self, test: &[Vec<f32>]) -> Result<KnnScores> {
        if test.iter().flatten().any(|v| !v.is_finite()) {
            bail!("test embeddings contain NaN or infinite values");
        }
        let test: Vec<Vec<f64>> = test.iter().map(|r| normalize(r)).collect();
        let mut s = self.bank_scores(&test, &self.source);
        let mut t = self.bank_scores(&test, &self.target);
        let (s_raw, t_raw) = (s.clone(), t.clone());
        if self.cfg.domain_znorm {
            znorm(&mut s);
            znorm(&mut t);
        }
        let score = s.iter().zip(&t).map(|(a, b)| a.min(*b)).collect();
        Ok(KnnScores { source: s_raw, target: t_raw, score })
    }

    /// Scores of the training clips themselves, each left out of its own
    /// bank (a clip's nearest neighbour would otherwise be itself): the
    /// distribution the decision threshold is fitted on. Order: source rows,
    /// then the real target rows. Not z-normalised.
    pub fn train_scores(&self) -> Vec<f64> {
        let src = &self.source.rows;
        let tgt = &self.target.rows[..self.n_target_real];
        let s_self = self.bank_scores_excluding(src, &self.source, true);
        let s_other = self.bank_scores_excluding(src, &self.target, false);
        let t_other = self.bank_scores_excluding(tgt, &self.source, false);
        let t_self = self.bank_scores_excluding(tgt, &self.target, true);
        let mut out: Vec<f64> = s_self.iter().zip(&s_other).map(|(a, b)| a.min(*b)).collect();
        out.extend(t_other.iter().zip(&t_self).map(|(a, b)| a.min(*b)));
        out
    }

    fn bank_scores(&self, test: &[Vec<f64>], bank: &Bank) -> Vec<f64> {
        self.bank_scores_excluding(test, bank, false)
    }

    /// kNN distances; with `skip_self`, query i ignores bank row i.
    fn bank_scores_excluding(&self, test: &[Vec<f64>], bank: &Bank, skip_self: bool) -> Vec<f64> {
        let avail = bank.rows.len() - skip_self as usize;
        if avail == 0 {
            return vec![f64::INFINITY; test.len()];
        }
        let k = self.cfg.k.min(avail);
        gram(test, &bank.rows)
            .into_iter()
            .enumerate()
            .map(|(i, sims)| {
                let mut d: Vec<f64> = sims
                    .into_iter()
                    .enumerate()
                    .filter(|(j, _)| !(skip_self && *j == i))
                    .map(|(_, c)| match self.cfg.metric {
                        KnnMetric::Cosine => 1.0 - c,
                        KnnMetric::Chord => (2.0 - 2.0 * c).max(0.0).sqrt() / 2.0,
                    })
                    .collect();
                // The k smallest, ascending: what a full sort gives, in O(n).
                if k < d.len() {
                    d.select_nth_unstable_by(k, f64::total_cmp);
                }
                d[..k].sort_by(f64::total_cmp);
                d[..k].iter().sum::<f64>() / k as f64
            })
            .collect()
    }
}

/// `(s - mean) / std` with the population standard deviation.
pub fn znorm(s: &mut [f64]) {
    znorm_with(s);
}

/// [`znorm`], returning the mean and standard deviation used (1 when the
/// scores are constant).
pub fn znorm_with(s: &mut [f64]) -> (f64, f64) {
    let n = s.len().max(1) as f64;
    let mean = s.iter().sum::<f64>() / n;
    let std = (s.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt();
    let std = if std > 0.0 { std } else { 1.0 };
    s.iter_mut().for_each(|v| *v = (*v - mean) / std);
    (mean, std)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tiled product equals plain dot products for sizes that leave
    /// remainders everywhere (tile of 16, groups of 4, chunks of 8).
    #[test]
    fn gram_equals_plain_dot_products() {
        let mut rng = crate::util::rng::stream(3, &[]);
        let mut rows = |n: usize| -> Vec<Vec<f64>> {
            (0..n).map(|_| (0..19).map(|_| rand::RngExt::random::<f64>(&mut rng) - 0.5).collect()).collect()
        };
        let (a, b) = (rows(37), rows(11));
        let g = gram(&a, &b);
        assert_eq!((g.len(), g[0].len()), (37, 11));
        for (x, row) in a.iter().zip(&g) {
            for (y, v) in b.iter().zip(row) {
                let plain: f64 = x.iter().zip(y).map(|(p, q)| p * q).sum();
                assert!((v - plain).abs() < 1e-12, "{v} vs {plain}");
            }
        }
    }
}
