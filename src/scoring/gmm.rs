//! Gaussian mixture back-end: a mixture fitted by EM on all training
//! embeddings (both domains), the score a clip's negative log-likelihood.
//! The EM step is scikit-learn's `GaussianMixture` (full or diagonal
//! covariances, `reg_covar` added to the diagonal, the 10·ε floor on the
//! component weights); from the same initial parameters the same number of
//! steps gives the same model. The initial parameters come from seeded
//! k-means (hard responsibilities), as sklearn's `init_params="kmeans"`.
//! Training-clip scores are in sample: the mixture has fitted them.

use super::Fitted;
use super::kmeans::{kmeans, nearest};
use super::knn::normalize64;
use super::linalg::{Cholesky, Square, scatter};
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Covariance {
    #[default]
    Diag,
    Full,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GmmConfig {
    #[serde(default = "four")]
    pub components: usize,
    #[serde(default)]
    pub covariance: Covariance,
    /// Added to every covariance diagonal (sklearn `reg_covar`; embeddings
    /// are unit-normalised, so their variances are about 1/dim).
    #[serde(default = "reg")]
    pub reg_covar: f64,
    /// EM steps after the k-means initialisation.
    #[serde(default = "hundred")]
    pub iterations: usize,
    #[serde(default = "yes")]
    pub normalize: bool,
}

fn four() -> usize {
    4
}
fn reg() -> f64 {
    1e-4
}
fn hundred() -> usize {
    100
}
fn yes() -> bool {
    true
}

impl Default for GmmConfig {
    fn default() -> Self {
        GmmConfig { components: 4, covariance: Covariance::Diag, reg_covar: 1e-4, iterations: 100, normalize: true }
    }
}

/// One component: weight, mean and covariance (its Cholesky factor for full
/// covariances, the variances for diagonal ones).
#[derive(Debug, Clone)]
pub struct Component {
    pub weight: f64,
    pub mean: Vec<f64>,
    pub cov: ComponentCov,
}

#[derive(Debug, Clone)]
pub enum ComponentCov {
    Full(Cholesky),
    Diag(Vec<f64>),
}

impl Component {
    fn log_prob(&self, x: &[f64]) -> f64 {
        let p = x.len() as f64;
        let d: Vec<f64> = x.iter().zip(&self.mean).map(|(a, b)| a - b).collect();
        let (quad, log_det) = match &self.cov {
            ComponentCov::Full(c) => (c.quad(&d), c.log_det()),
            ComponentCov::Diag(v) => (d.iter().zip(v).map(|(a, s)| a * a / s).sum(), v.iter().map(|s| s.ln()).sum()),
        };
        -0.5 * (p * (2.0 * std::f64::consts::PI).ln() + quad + log_det)
    }
}

fn log_sum_exp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + v.iter().map(|a| (a - m).exp()).sum::<f64>().ln()
}

/// Per-clip log-likelihood under the mixture, and responsibilities.
fn e_step(rows: &[Vec<f64>], comps: &[Component]) -> (Vec<f64>, Vec<Vec<f64>>) {
    rows.iter()
        .map(|x| {
            let w: Vec<f64> = comps.iter().map(|c| c.weight.ln() + c.log_prob(x)).collect();
            let norm = log_sum_exp(&w);
            (norm, w.iter().map(|a| (a - norm).exp()).collect())
        })
        .unzip()
}

/// sklearn's `_estimate_gaussian_parameters` + `_m_step`.
pub fn m_step(rows: &[Vec<f64>], resp: &[Vec<f64>], kind: Covariance, reg_covar: f64) -> Result<Vec<Component>> {
    let k = resp[0].len();
    let n = rows.len() as f64;
    let p = rows[0].len();
    let mut comps = Vec::with_capacity(k);
    let nks: Vec<f64> = (0..k).map(|j| resp.iter().map(|r| r[j]).sum::<f64>() + 10.0 * f64::EPSILON).collect();
    let total: f64 = nks.iter().map(|nk| nk / n).sum();
    for (j, &nk) in nks.iter().enumerate() {
        let w: Vec<f64> = resp.iter().map(|r| r[j]).collect();
        let mut m = vec![0.0; p];
        for (x, wi) in rows.iter().zip(&w) {
            m.iter_mut().zip(x).for_each(|(a, v)| *a += wi * v);
        }
        m.iter_mut().for_each(|a| *a /= nk);
        let cov = match kind {
            Covariance::Full => {
                let mut s: Square = scatter(rows, &m, Some(&w));
                s.a.iter_mut().for_each(|v| *v /= nk);
                s.add_diagonal(reg_covar);
                ComponentCov::Full(Cholesky::new(&s)?)
            }
            Covariance::Diag => {
                // avg_X2 − 2·avg_X_means + avg_means2, as sklearn computes it.
                let mut x2 = vec![0.0; p];
                let mut xm = vec![0.0; p];
                for (x, wi) in rows.iter().zip(&w) {
                    for d in 0..p {
                        x2[d] += wi * x[d] * x[d];
                        xm[d] += wi * x[d];
                    }
                }
                let v: Vec<f64> =
                    (0..p).map(|d| x2[d] / nk - 2.0 * m[d] * xm[d] / nk + m[d] * m[d] + reg_covar).collect();
                if let Some(bad) = v.iter().find(|s| s.is_nan() || **s <= 0.0) {
                    bail!("gmm: a variance became {bad:e}; raise reg_covar");
                }
                ComponentCov::Diag(v)
            }
        };
        comps.push(Component { weight: nk / n / total, mean: m, cov });
    }
    Ok(comps)
}

/// A fitted mixture over all training clips of one machine type.
pub struct Gmm {
    cfg: GmmConfig,
    comps: Vec<Component>,
    train_nll: Vec<f64>,
}

impl Gmm {
    pub fn fit(cfg: &GmmConfig, source: &[Vec<f64>], target: &[Vec<f64>], seed: u64) -> Result<Gmm> {
        if cfg.components == 0 || cfg.reg_covar.is_nan() || cfg.reg_covar <= 0.0 {
            bail!("gmm: components must be at least 1 and reg_covar positive");
        }
        let rows: Vec<Vec<f64>> = source.iter().chain(target).map(|r| prep(cfg, r)).collect();
        let centers = kmeans(&rows, cfg.components, 100, seed);
        let resp: Vec<Vec<f64>> = rows
            .iter()
            .map(|x| {
                let best = nearest(x, &centers).0;
                (0..centers.len()).map(|j| (j == best) as u8 as f64).collect()
            })
            .collect();
        let comps = em(&rows, m_step(&rows, &resp, cfg.covariance, cfg.reg_covar)?, cfg)?;
        let train_nll = nll(&rows, &comps);
        Ok(Gmm { cfg: cfg.clone(), comps, train_nll })
    }
}

/// `iterations` EM steps from `comps`.
pub fn em(rows: &[Vec<f64>], mut comps: Vec<Component>, cfg: &GmmConfig) -> Result<Vec<Component>> {
    for _ in 0..cfg.iterations {
        let (_, resp) = e_step(rows, &comps);
        comps = m_step(rows, &resp, cfg.covariance, cfg.reg_covar)?;
    }
    Ok(comps)
}

/// Negative log-likelihood of each row (sklearn: `-score_samples`).
pub fn nll(rows: &[Vec<f64>], comps: &[Component]) -> Vec<f64> {
    e_step(rows, comps).0.into_iter().map(|l| -l).collect()
}

fn prep(cfg: &GmmConfig, r: &[f64]) -> Vec<f64> {
    if cfg.normalize { normalize64(r) } else { r.to_vec() }
}

impl Fitted for Gmm {
    fn score(&self, test: &[Vec<f64>]) -> Vec<f64> {
        let rows: Vec<Vec<f64>> = test.iter().map(|r| prep(&self.cfg, r)).collect();
        nll(&rows, &self.comps)
    }

    fn train_scores(&self) -> Vec<f64> {
        self.train_nll.clone()
    }
}

/// Builds components from given weights, means and covariances (for parity
/// tests against scikit-learn's initial parameters).
pub fn components(
    weights: &[f64],
    means: &[Vec<f64>],
    covs: &[Vec<Vec<f64>>],
    kind: Covariance,
) -> Result<Vec<Component>> {
    weights
        .iter()
        .zip(means)
        .zip(covs)
        .map(|((&weight, m), c)| {
            let cov = match kind {
                Covariance::Diag => ComponentCov::Diag((0..m.len()).map(|i| c[i][i]).collect()),
                Covariance::Full => {
                    let p = m.len();
                    ComponentCov::Full(Cholesky::new(&Square { n: p, a: c.iter().flatten().copied().collect() })?)
                }
            };
            Ok(Component { weight, mean: m.clone(), cov })
        })
        .collect()
}
