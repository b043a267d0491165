//! Mahalanobis back-ends: the squared Mahalanobis distance to a Gaussian fitted
//! on the training embeddings, and the official DCASE baseline's selective
//! Mahalanobis (one Gaussian per domain, the smaller distance; ported in idea
//! from nttcslab/dcase2023_task2_baseline_ae `networks/criterion/mahala.py`).
//!
//! The covariance is scikit-learn's `ShrunkCovariance`: the empirical
//! covariance `S` (divided by n) shrunk towards a scaled identity,
//! `(1 − α) S + α tr(S)/p · I`, so that the ten clips of a target domain
//! still give an invertible matrix. Scores equal sklearn's
//! `ShrunkCovariance(shrinkage=α).fit(X).mahalanobis(Y)` (squared distances).
//!
//! Training-clip scores leave each clip out of its own Gaussian in closed
//! form (a rank-one update, Sherman–Morrison), with the shrinkage target
//! `tr(S)/p` of the full fit held fixed.

use super::Fitted;
use super::linalg::{Cholesky, mean, scatter};
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MahalanobisConfig {
    /// One Gaussian per domain and the smaller distance (selective), or one
    /// Gaussian over all training clips.
    #[serde(default = "yes")]
    pub selective: bool,
    /// α of the shrinkage towards `tr(S)/p · I` (sklearn's default 0.1).
    #[serde(default = "tenth")]
    pub shrinkage: f64,
    /// Unit-normalise the embeddings first (as the kNN back-end does).
    #[serde(default = "yes")]
    pub normalize: bool,
}

fn yes() -> bool {
    true
}
fn tenth() -> f64 {
    0.1
}

impl Default for MahalanobisConfig {
    fn default() -> Self {
        MahalanobisConfig { selective: true, shrinkage: 0.1, normalize: true }
    }
}

impl MahalanobisConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.shrinkage > 0.0 && self.shrinkage <= 1.0) {
            bail!("mahalanobis: shrinkage must be in (0, 1], got {}", self.shrinkage);
        }
        Ok(())
    }
}

/// A Gaussian with a shrunk covariance, and what its leave-one-out
/// distances need.
#[derive(Debug, Clone)]
struct Gaussian {
    n: usize,
    mean: Vec<f64>,
    cov: Cholesky,
    /// `(1 − α) W/(n − 1) + α μ I`: the covariance without one clip, before
    /// the rank-one term (W the scatter matrix, μ = tr(S)/p of the full fit).
    loo_base: Cholesky,
    alpha: f64,
}

impl Gaussian {
    fn fit(rows: &[Vec<f64>], alpha: f64) -> Result<Gaussian> {
        let n = rows.len();
        if n < 2 {
            bail!("mahalanobis needs at least 2 training clips per Gaussian, got {n}");
        }
        let m = mean(rows);
        let w = scatter(rows, &m, None);
        let p = m.len() as f64;
        let mu = w.trace() / n as f64 / p;
        if mu.is_nan() || mu <= 0.0 {
            bail!("mahalanobis: the {n} training embeddings are all equal");
        }
        let shrunk = |denominator: f64| {
            let mut s = w.clone();
            s.a.iter_mut().for_each(|v| *v *= (1.0 - alpha) / denominator);
            s.add_diagonal(alpha * mu);
            s
        };
        let cov = Cholesky::new(&shrunk(n as f64))?;
        // With two clips, leaving one out leaves the shrinkage target αμ·I
        // alone: still positive definite, so every n ≥ 2 has a leave-one-out fit.
        let loo_base = Cholesky::new(&shrunk((n - 1) as f64))?;
        Ok(Gaussian { n, mean: m, cov, loo_base, alpha })
    }

    fn dist2(&self, x: &[f64]) -> f64 {
        let d: Vec<f64> = x.iter().zip(&self.mean).map(|(a, b)| a - b).collect();
        self.cov.quad(&d)
    }

    /// The squared distance of training row `x` to the Gaussian fitted
    /// without it: with u = x − m, the covariance without x is
    /// `B − β u uᵀ` (β = (1 − α) n/(n − 1)²) and x − m₍₋ₓ₎ = c·u (c = n/(n − 1)),
    /// so the distance is `c² q / (1 − β q)` with `q = uᵀ B⁻¹ u`.
    fn loo_dist2(&self, x: &[f64]) -> f64 {
        let n = self.n as f64;
        let u: Vec<f64> = x.iter().zip(&self.mean).map(|(a, b)| a - b).collect();
        let q = self.loo_base.quad(&u);
        let c = n / (n - 1.0);
        let beta = (1.0 - self.alpha) * n / ((n - 1.0) * (n - 1.0));
        c * c * q / (1.0 - beta * q)
    }
}

/// A fitted (selective) Mahalanobis scorer of one machine type.
pub struct Mahalanobis {
    cfg: MahalanobisConfig,
    source: Vec<Vec<f64>>,
    target: Vec<Vec<f64>>,
    /// One Gaussian (all clips), or source and target.
    gaussians: Vec<Gaussian>,
}

impl Mahalanobis {
    pub fn fit(cfg: &MahalanobisConfig, source: &[Vec<f64>], target: &[Vec<f64>]) -> Result<Mahalanobis> {
        cfg.validate()?;
        let prep = |rows: &[Vec<f64>]| -> Vec<Vec<f64>> {
            rows.iter().map(|r| if cfg.normalize { super::knn::normalize64(r) } else { r.clone() }).collect()
        };
        let (source, target) = (prep(source), prep(target));
        let gaussians = if cfg.selective {
            vec![Gaussian::fit(&source, cfg.shrinkage)?, Gaussian::fit(&target, cfg.shrinkage)?]
        } else {
            vec![Gaussian::fit(&[source.clone(), target.clone()].concat(), cfg.shrinkage)?]
        };
        Ok(Mahalanobis { cfg: cfg.clone(), source, target, gaussians })
    }

    fn prep(&self, x: &[f64]) -> Vec<f64> {
        if self.cfg.normalize { super::knn::normalize64(x) } else { x.to_vec() }
    }
}

impl Fitted for Mahalanobis {
    fn score(&self, test: &[Vec<f64>]) -> Vec<f64> {
        test.iter()
            .map(|x| {
                let x = self.prep(x);
                self.gaussians.iter().map(|g| g.dist2(&x)).fold(f64::INFINITY, f64::min)
            })
            .collect()
    }

    fn train_scores(&self) -> Vec<f64> {
        let rows = self.source.iter().map(|x| (x, 0)).chain(self.target.iter().map(|x| (x, 1)));
        rows.map(|(x, domain)| {
            let own = if self.gaussians.len() == 1 { 0 } else { domain };
            let mut best = self.gaussians[own].loo_dist2(x);
            for (k, g) in self.gaussians.iter().enumerate() {
                if k != own {
                    best = best.min(g.dist2(x));
                }
            }
            best
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, p: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                (0..p)
                    .map(|_| {
                        s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                        (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn leave_one_out_distances_equal_a_refit_without_the_clip() {
        let x = rows(9, 4, 3);
        let alpha = 0.3;
        let g = Gaussian::fit(&x, alpha).unwrap();
        // The shrinkage target of the full fit, held fixed in the refits.
        let w = scatter(&x, &mean(&x), None);
        let fixed_mu = w.trace() / 9.0 / 4.0;
        for i in 0..x.len() {
            let rest: Vec<Vec<f64>> = x.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, r)| r.clone()).collect();
            let m = mean(&rest);
            let mut s = scatter(&rest, &m, None);
            s.a.iter_mut().for_each(|v| *v *= (1.0 - alpha) / 8.0);
            s.add_diagonal(alpha * fixed_mu);
            let d: Vec<f64> = x[i].iter().zip(&m).map(|(a, b)| a - b).collect();
            let want = Cholesky::new(&s).unwrap().quad(&d);
            let got = g.loo_dist2(&x[i]);
            assert!((got - want).abs() < 1e-9 * want.max(1.0), "clip {i}: {got} vs refit {want}");
        }
    }

    #[test]
    fn two_clips_still_have_finite_leave_one_out_distances() {
        let x = rows(2, 3, 9);
        let g = Gaussian::fit(&x, 0.1).unwrap();
        // Without the other clip, the Gaussian is centred on it with covariance αμ·I.
        let mu = scatter(&x, &mean(&x), None).trace() / 2.0 / 3.0;
        let d2: f64 = x[0].iter().zip(&x[1]).map(|(a, b)| (a - b) * (a - b)).sum::<f64>() / (0.1 * mu);
        assert!((g.loo_dist2(&x[0]) - d2).abs() < 1e-9 * d2);
    }

    #[test]
    fn selective_takes_the_nearer_domain_and_bad_input_is_refused() {
        let cfg = MahalanobisConfig { normalize: false, ..Default::default() };
        let source = rows(20, 3, 1);
        let target: Vec<Vec<f64>> = rows(5, 3, 2).into_iter().map(|r| r.iter().map(|v| v + 5.0).collect()).collect();
        let m = Mahalanobis::fit(&cfg, &source, &target).unwrap();
        let near_target = m.score(&[vec![5.0, 5.0, 5.0]])[0];
        let far = m.score(&[vec![2.5, 2.5, 2.5]])[0];
        assert!(near_target < far);
        assert_eq!(m.train_scores().len(), 25);
        assert!(Mahalanobis::fit(&cfg, &source, &target[..1]).is_err());
        let bad = MahalanobisConfig { shrinkage: 0.0, ..cfg };
        assert!(Mahalanobis::fit(&bad, &source, &target).is_err());
    }
}
