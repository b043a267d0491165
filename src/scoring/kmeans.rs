//! k-means (seeded k-means++ initialisation, then Lloyd iterations as in
//! scikit-learn's `KMeans(algorithm="lloyd")`), and the back-end that scores
//! by kNN against each domain's k-means centres instead of every training
//! clip: a smaller bank, less sensitive to single outlying training clips.

use super::Fitted;
use super::knn::{KnnConfig, KnnScorer, normalize64};
use crate::util::rng;
use anyhow::{Result, bail};
use rand::RngExt;
use serde::{Deserialize, Serialize};

fn sq(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Index of and squared distance to the nearest centre (the lowest index on
/// ties, as scikit-learn).
pub fn nearest(x: &[f64], centers: &[Vec<f64>]) -> (usize, f64) {
    centers
        .iter()
        .enumerate()
        .map(|(j, c)| (j, sq(x, c)))
        .fold((0, f64::INFINITY), |b, c| if c.1 < b.1 { c } else { b })
}

/// Lloyd iterations from `centers` until the assignment no longer changes
/// (or `max_iter`). An emptied cluster takes the point farthest from its
/// centre. Returns the centres and the labels.
pub fn lloyd(rows: &[Vec<f64>], mut centers: Vec<Vec<f64>>, max_iter: usize) -> (Vec<Vec<f64>>, Vec<usize>) {
    let p = rows.first().map_or(0, Vec::len);
    let mut labels: Vec<usize> = Vec::new();
    for _ in 0..max_iter {
        let assigned: Vec<(usize, f64)> = rows.iter().map(|x| nearest(x, &centers)).collect();
        let new: Vec<usize> = assigned.iter().map(|a| a.0).collect();
        if new == labels {
            break;
        }
        labels = new;
        let mut sums = vec![vec![0.0; p]; centers.len()];
        let mut counts = vec![0usize; centers.len()];
        for (x, &l) in rows.iter().zip(&labels) {
            counts[l] += 1;
            sums[l].iter_mut().zip(x).for_each(|(s, v)| *s += v);
        }
        let mut far: Vec<usize> = (0..rows.len()).collect();
        far.sort_by(|&a, &b| assigned[b].1.total_cmp(&assigned[a].1));
        let mut far = far.into_iter();
        for (j, c) in centers.iter_mut().enumerate() {
            if counts[j] == 0 {
                *c = rows[far.next().expect("more rows than clusters")].clone();
            } else {
                *c = sums[j].iter().map(|s| s / counts[j] as f64).collect();
            }
        }
    }
    (centers, labels)
}

/// k-means with a seeded k-means++ initialisation (`k` clamped to the rows).
pub fn kmeans(rows: &[Vec<f64>], k: usize, max_iter: usize, seed: u64) -> Vec<Vec<f64>> {
    let k = k.min(rows.len()).max(1);
    let mut r = rng::stream(seed, &[0x6b6d]);
    let mut centers = vec![rows[r.random_range(0..rows.len())].clone()];
    while centers.len() < k {
        let d: Vec<f64> = rows.iter().map(|x| nearest(x, &centers).1).collect();
        let total: f64 = d.iter().sum();
        if total <= 0.0 {
            break;
        }
        let mut u = r.random::<f64>() * total;
        let pick = d.iter().position(|&v| {
            u -= v;
            u <= 0.0
        });
        centers.push(rows[pick.unwrap_or(rows.len() - 1)].clone());
    }
    lloyd(rows, centers, max_iter).0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmeansKnnConfig {
    /// Centres per domain (fewer when a domain has fewer clips).
    #[serde(default = "sixteen")]
    pub clusters: usize,
    #[serde(default = "hundred")]
    pub max_iter: usize,
}

fn sixteen() -> usize {
    16
}
fn hundred() -> usize {
    100
}

impl Default for KmeansKnnConfig {
    fn default() -> Self {
        KmeansKnnConfig { clusters: 16, max_iter: 100 }
    }
}

/// kNN (the experiment's `scoring.knn` settings, without SMOTE) against the
/// k-means centres of each domain, computed on unit-normalised embeddings.
/// Training-clip scores are their distances to the centres (in sample: a
/// clip's own cluster includes it).
pub struct KmeansKnn {
    scorer: KnnScorer,
    train: Vec<Vec<f32>>,
}

impl KmeansKnn {
    pub fn fit(
        cfg: &KmeansKnnConfig,
        knn: &KnnConfig,
        source: &[Vec<f64>],
        target: &[Vec<f64>],
        seed: u64,
    ) -> Result<KmeansKnn> {
        if cfg.clusters == 0 || cfg.max_iter == 0 {
            bail!("kmeans_knn: clusters and max_iter must be at least 1");
        }
        if knn.smote.is_some() {
            bail!("kmeans_knn: SMOTE does not apply to a bank of centres (remove scoring.knn.smote)");
        }
        let bank = |rows: &[Vec<f64>], domain: u64| -> Vec<Vec<f32>> {
            let unit: Vec<Vec<f64>> = rows.iter().map(|r| normalize64(r)).collect();
            kmeans(&unit, cfg.clusters, cfg.max_iter, seed ^ domain)
                .into_iter()
                .map(|c| c.into_iter().map(|v| v as f32).collect())
                .collect()
        };
        let scorer = KnnScorer::fit(knn, &bank(source, 1), &bank(target, 2), seed)?;
        let train = source.iter().chain(target).map(|r| r.iter().map(|&v| v as f32).collect()).collect();
        Ok(KmeansKnn { scorer, train })
    }
}

impl Fitted for KmeansKnn {
    fn score(&self, test: &[Vec<f64>]) -> Vec<f64> {
        let t: Vec<Vec<f32>> = test.iter().map(|r| r.iter().map(|&v| v as f32).collect()).collect();
        self.scorer.score(&t).expect("inputs checked when fitting").score
    }

    fn train_scores(&self) -> Vec<f64> {
        self.scorer.score(&self.train).expect("inputs checked when fitting").score
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmeans_finds_separated_clusters_and_is_seeded() {
        let rows: Vec<Vec<f64>> =
            (0..30).map(|i| vec![(i % 3) as f64 * 10.0 + (i as f64 * 0.37).sin(), (i as f64 * 0.11).cos()]).collect();
        let c = kmeans(&rows, 3, 100, 5);
        let mut xs: Vec<f64> = c.iter().map(|c| (c[0] / 10.0).round()).collect();
        xs.sort_by(f64::total_cmp);
        assert_eq!(xs, vec![0.0, 1.0, 2.0]);
        assert_eq!(kmeans(&rows, 3, 100, 5), c);
        assert_eq!(kmeans(&rows, 50, 100, 5).len(), 30);
    }
}
