//! Decision thresholds for the 0/1 `decision_result_*.csv` files
//! (models.md §5.4). A clip is anomalous when its score is *greater* than
//! the threshold.
//!
//! * [`DecisionRule::Gamma`] — the official baseline's rule: a gamma
//!   distribution fitted to the training clips' scores with all three
//!   parameters free, exactly as `scipy.stats.gamma.fit` does it (start point
//!   `_fitstart`, penalised negative log-likelihood, `scipy.optimize.fmin`
//!   Nelder–Mead with xtol = ftol = 1e-4 and 200·N iterations/evaluations),
//!   then its quantile (`gamma.ppf(0.9, ...)`).
//! * [`DecisionRule::Percentile`] — `np.percentile(train_scores, 90)` with
//!   linear interpolation (Wilkinghoff's rule; robust and exact).
//!
//! Decisions do not enter the official score; they only feed precision,
//! recall and F1.

use super::stats::{np_mean, np_sum};
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use statrs::function::gamma::{gamma_lr, ln_gamma};

/// How a machine's decision threshold is derived from its training scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DecisionRule {
    /// Quantile of a gamma distribution fitted as `scipy.stats.gamma.fit`.
    Gamma {
        #[serde(default = "default_quantile")]
        quantile: f64,
    },
    /// Plain percentile of the training scores (numpy linear interpolation).
    Percentile {
        #[serde(default = "default_percent")]
        percent: f64,
    },
}

fn default_quantile() -> f64 {
    0.9
}

fn default_percent() -> f64 {
    90.0
}

impl Default for DecisionRule {
    /// The official baseline's rule: gamma fit, 90th percentile.
    fn default() -> Self {
        DecisionRule::Gamma { quantile: default_quantile() }
    }
}

impl DecisionRule {
    /// Checks the rule's parameter.
    pub fn validate(&self) -> Result<()> {
        match *self {
            DecisionRule::Gamma { quantile } if !(quantile > 0.0 && quantile < 1.0) => {
                bail!("gamma decision rule: quantile must be in (0, 1), got {quantile}")
            }
            DecisionRule::Percentile { percent } if !(0.0..=100.0).contains(&percent) => {
                bail!("percentile decision rule: percent must be in [0, 100], got {percent}")
            }
            _ => Ok(()),
        }
    }
}

/// The decision threshold of `rule` for a machine's training-clip scores.
pub fn threshold(rule: &DecisionRule, train_scores: &[f64]) -> Result<f64> {
    rule.validate()?;
    check_finite(train_scores)?;
    match *rule {
        DecisionRule::Gamma { quantile } => {
            let fit = gamma_fit(train_scores)?;
            gamma_ppf(quantile, fit.shape, fit.loc, fit.scale)
        }
        DecisionRule::Percentile { percent } => percentile(train_scores, percent),
    }
}

/// 0/1 decisions: 1 (anomaly) where `score > threshold`.
pub fn decide(scores: &[f64], threshold: f64) -> Vec<u8> {
    scores.iter().map(|&s| (s > threshold) as u8).collect()
}

fn check_finite(data: &[f64]) -> Result<()> {
    if data.is_empty() {
        bail!("no training scores to derive a decision threshold from");
    }
    if let Some(i) = data.iter().position(|x| !x.is_finite()) {
        bail!("training score {} (number {} of {}) is not finite", data[i], i + 1, data.len());
    }
    Ok(())
}

/// `np.percentile(data, percent)` with the default linear method, including
/// numpy's `_lerp` (which interpolates from the upper end when the fraction
/// is at least one half).
pub fn percentile(data: &[f64], percent: f64) -> Result<f64> {
    check_finite(data)?;
    if !(0.0..=100.0).contains(&percent) {
        bail!("percentile must be in [0, 100], got {percent}");
    }
    let mut v = data.to_vec();
    v.sort_by(f64::total_cmp);
    let q = percent / 100.0;
    let virtual_index = q * (v.len() - 1) as f64;
    let prev = virtual_index.floor();
    let frac = virtual_index - prev;
    let lo = (prev as usize).min(v.len() - 1);
    let hi = (lo + 1).min(v.len() - 1);
    let (a, b) = (v[lo], v[hi]);
    let diff = b - a;
    Ok(if frac >= 0.5 { b - diff * (1.0 - frac) } else { a + diff * frac })
}

// ---------------------------------------------------------------------------
// Gamma distribution: fit (scipy.stats.gamma.fit) and quantile.

/// Result of [`gamma_fit`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GammaFit {
    pub shape: f64,
    pub loc: f64,
    pub scale: f64,
    /// Penalised negative log-likelihood at the optimum (scipy's objective).
    pub neg_log_likelihood: f64,
    pub iterations: usize,
    pub evaluations: usize,
    /// False when Nelder–Mead stopped at its iteration/evaluation cap
    /// (scipy returns the best point then too, silently).
    pub converged: bool,
}

/// `ln(DBL_MAX)`: scipy's per-point penalty unit (`_LOGXMAX`).
const LOG_XMAX: f64 = 709.782712893384;

/// scipy's `gamma._fitstart`: shape from the (biased) sample skewness,
/// `a = 4 / (1e-8 + skew²)`, then loc and scale by the method of moments,
/// falling back to `loc = min − 0.1·(max − min)`, `scale = 1` when that
/// support would not cover the data. Returns `[a, loc, scale]`.
pub fn gamma_fitstart(data: &[f64]) -> Result<[f64; 3]> {
    check_fit_data(data)?;
    let mu = np_mean(data);
    let d: Vec<f64> = data.iter().map(|&x| x - mu).collect();
    let m2 = np_mean(&d.iter().map(|&x| x * x).collect::<Vec<_>>());
    let m3 = np_mean(&d.iter().map(|&x| x.powf(3.0)).collect::<Vec<_>>());
    let skew = m3 / m2.powf(1.5);
    let a = 4.0 / (1e-8 + skew * skew);
    // fit_loc_scale: gamma mean = var = a.
    let var = m2; // np.var == mean of squared deviations
    let mut scale = (var / a).sqrt();
    let mut loc = mu - scale * a;
    if !loc.is_finite() {
        loc = 0.0;
    }
    if !(scale.is_finite() && scale > 0.0) {
        scale = 1.0;
    }
    // _fit_loc_scale_support, support (0, inf).
    let (lo, hi) = data.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| (l.min(x), h.max(x)));
    if loc < lo {
        return Ok([a, loc, scale]);
    }
    let margin = (hi - lo) * 0.1;
    Ok([a, lo - margin, 1.0])
}

fn check_fit_data(data: &[f64]) -> Result<()> {
    check_finite(data)?;
    if data.len() < 2 {
        bail!("a gamma fit needs at least 2 training scores, got {}", data.len());
    }
    if data.iter().all(|&x| x == data[0]) {
        bail!(
            "cannot fit a gamma distribution: all {} training scores equal {} (use the percentile rule)",
            data.len(),
            data[0]
        );
    }
    Ok(())
}

/// scipy's `_penalized_nnlf` for the gamma distribution at
/// `theta = [a, loc, scale]`: `−Σ log pdf + n·ln(scale)`, with every point
/// outside the support (or of non-finite log-density) adding
/// `100·ln(DBL_MAX)` instead; `+∞` for `a <= 0` or `scale <= 0`.
pub fn gamma_nll(theta: &[f64], data: &[f64]) -> f64 {
    let (a, loc, scale) = (theta[0], theta[1], theta[2]);
    if a.is_nan() || scale.is_nan() || a <= 0.0 || scale <= 0.0 {
        return f64::INFINITY;
    }
    let lg = ln_gamma(a);
    let mut logpdf = Vec::with_capacity(data.len());
    let mut bad = 0usize;
    for &v in data {
        let x = (v - loc) / scale;
        if !(x > 0.0 && x < f64::INFINITY) {
            bad += 1;
            continue;
        }
        // xlogy(a - 1, x) - x - gammaln(a)
        let xlogy = if a - 1.0 == 0.0 { 0.0 } else { (a - 1.0) * x.ln() };
        let l = xlogy - x - lg;
        if l.is_finite() {
            logpdf.push(l);
        } else {
            bad += 1;
        }
    }
    let total = np_sum(&logpdf);
    let n_log_scale = data.len() as f64 * scale.ln();
    (-total + bad as f64 * LOG_XMAX * 100.0) + n_log_scale
}

/// `scipy.stats.gamma.fit(data)`: maximum likelihood with shape, loc and
/// scale all free, from [`gamma_fitstart`] by [`nelder_mead`].
pub fn gamma_fit(data: &[f64]) -> Result<GammaFit> {
    let x0 = gamma_fitstart(data)?;
    let r = nelder_mead(|t| gamma_nll(t, data), &x0, 1e-4, 1e-4);
    let (shape, loc, scale) = (r.x[0], r.x[1], r.x[2]);
    if !(shape > 0.0 && scale > 0.0) {
        bail!("gamma fit converged to invalid parameters a={shape}, scale={scale}");
    }
    Ok(GammaFit {
        shape,
        loc,
        scale,
        neg_log_likelihood: gamma_nll(&r.x, data),
        iterations: r.iterations,
        evaluations: r.evaluations,
        converged: r.converged,
    })
}

/// Outcome of [`nelder_mead`].
#[derive(Debug, Clone, PartialEq)]
pub struct NelderMead {
    pub x: Vec<f64>,
    pub fun: f64,
    pub iterations: usize,
    pub evaluations: usize,
    pub converged: bool,
}

/// `scipy.optimize.fmin` (`_minimize_neldermead`, non-adaptive) step for
/// step: initial simplex with 5 % perturbations (0.00025 for zero
/// coordinates), coefficients ρ=1, χ=2, ψ=0.5, σ=0.5, at most 200·N
/// iterations and 200·N function evaluations, stopping when
/// `max |x_i − x_0| <= xtol` and `max |f_0 − f_i| <= ftol`.
pub fn nelder_mead<F: FnMut(&[f64]) -> f64>(mut f: F, x0: &[f64], xtol: f64, ftol: f64) -> NelderMead {
    let n = x0.len();
    let max_iter = 200 * n;
    let max_fun = 200 * n;
    let (rho, chi, psi, sigma) = (1.0, 2.0, 0.5, 0.5);
    let mut sim: Vec<Vec<f64>> = Vec::with_capacity(n + 1);
    sim.push(x0.to_vec());
    for k in 0..n {
        let mut y = x0.to_vec();
        y[k] = if y[k] != 0.0 { (1.0 + 0.05) * y[k] } else { 0.00025 };
        sim.push(y);
    }
    let mut calls = 0usize;
    // The wrapped objective: `None` once the evaluation budget is spent
    // (scipy raises _MaxFuncCallError there and stops).
    let mut eval = |x: &[f64], calls: &mut usize| -> Option<f64> {
        if *calls >= max_fun {
            return None;
        }
        *calls += 1;
        Some(f(x))
    };
    let mut fsim = vec![f64::INFINITY; n + 1];
    for k in 0..=n {
        match eval(&sim[k], &mut calls) {
            Some(v) => fsim[k] = v,
            None => break,
        }
    }
    sort_simplex(&mut sim, &mut fsim);
    let mut iterations = 1usize;
    let mut converged = false;
    while calls < max_fun && iterations < max_iter {
        let xspread = sim[1..]
            .iter()
            .flat_map(|v| v.iter().zip(&sim[0]).map(|(a, b)| (a - b).abs()))
            .fold(f64::NEG_INFINITY, f64::max);
        let fspread = fsim[1..].iter().map(|&v| (fsim[0] - v).abs()).fold(f64::NEG_INFINITY, f64::max);
        if xspread <= xtol && fspread <= ftol {
            converged = true;
            break;
        }
        // One iteration; `None` from `step` means the budget ran out mid-way.
        let done = (|| -> Option<()> {
            let mut xbar = vec![0.0; n];
            for v in &sim[..n] {
                for (s, &x) in xbar.iter_mut().zip(v) {
                    *s += x;
                }
            }
            for s in &mut xbar {
                *s /= n as f64;
            }
            let worst = sim[n].clone();
            let comb =
                |c1: f64, c2: f64| -> Vec<f64> { xbar.iter().zip(&worst).map(|(&b, &w)| c1 * b - c2 * w).collect() };
            let xr = comb(1.0 + rho, rho);
            let fxr = eval(&xr, &mut calls)?;
            if fxr < fsim[0] {
                let xe = comb(1.0 + rho * chi, rho * chi);
                let fxe = eval(&xe, &mut calls)?;
                if fxe < fxr {
                    sim[n] = xe;
                    fsim[n] = fxe;
                } else {
                    sim[n] = xr;
                    fsim[n] = fxr;
                }
            } else if fxr < fsim[n - 1] {
                sim[n] = xr;
                fsim[n] = fxr;
            } else {
                let shrink;
                if fxr < fsim[n] {
                    let xc = comb(1.0 + psi * rho, psi * rho);
                    let fxc = eval(&xc, &mut calls)?;
                    if fxc <= fxr {
                        sim[n] = xc;
                        fsim[n] = fxc;
                        shrink = false;
                    } else {
                        shrink = true;
                    }
                } else {
                    // Inside contraction: (1 - psi) * xbar + psi * worst.
                    let xcc: Vec<f64> = xbar.iter().zip(&worst).map(|(&b, &w)| (1.0 - psi) * b + psi * w).collect();
                    let fxcc = eval(&xcc, &mut calls)?;
                    if fxcc < fsim[n] {
                        sim[n] = xcc;
                        fsim[n] = fxcc;
                        shrink = false;
                    } else {
                        shrink = true;
                    }
                }
                if shrink {
                    for j in 1..=n {
                        let s: Vec<f64> = sim[j].iter().zip(&sim[0]).map(|(&x, &b)| b + sigma * (x - b)).collect();
                        sim[j] = s;
                        fsim[j] = eval(&sim[j], &mut calls)?;
                    }
                }
            }
            Some(())
        })();
        if done.is_some() {
            iterations += 1;
        }
        sort_simplex(&mut sim, &mut fsim);
    }
    let fun = fsim.iter().copied().fold(f64::INFINITY, f64::min);
    NelderMead { x: sim[0].clone(), fun, iterations, evaluations: calls, converged }
}

/// `argsort(fsim)` then reorder (stable; NaN last).
fn sort_simplex(sim: &mut Vec<Vec<f64>>, fsim: &mut Vec<f64>) {
    let mut idx: Vec<usize> = (0..fsim.len()).collect();
    idx.sort_by(|&a, &b| fsim[a].total_cmp(&fsim[b]));
    *sim = idx.iter().map(|&i| sim[i].clone()).collect();
    *fsim = idx.iter().map(|&i| fsim[i]).collect();
}

/// Regularised lower incomplete gamma `P(a, x)`, 0 for `x <= 0`.
fn gamma_p(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        0.0
    } else if x == f64::INFINITY {
        1.0
    } else {
        gamma_lr(a, x)
    }
}

/// Quantile of the gamma distribution, `scipy.stats.gamma.ppf(q, a, loc,
/// scale) = loc + scale · P⁻¹(a, q)`, inverted by safeguarded Newton
/// (bisection fallback) to about 1e-14 relative.
pub fn gamma_ppf(q: f64, shape: f64, loc: f64, scale: f64) -> Result<f64> {
    if !(q > 0.0 && q < 1.0) {
        bail!("gamma quantile: q must be in (0, 1), got {q}");
    }
    if !(shape > 0.0 && shape.is_finite() && scale > 0.0 && scale.is_finite() && loc.is_finite()) {
        bail!("gamma quantile: invalid parameters a={shape}, loc={loc}, scale={scale}");
    }
    Ok(loc + scale * gamma_p_inv(shape, q))
}

fn gamma_p_inv(a: f64, q: f64) -> f64 {
    // Bracket [lo, hi] with P(lo) <= q <= P(hi).
    let mut lo = 0.0f64;
    let mut hi = a.max(1.0);
    while gamma_p(a, hi) < q {
        lo = hi;
        hi *= 2.0;
    }
    // Wilson-Hilferty start, clamped into the bracket.
    let z = std::f64::consts::SQRT_2 * statrs::function::erf::erf_inv(2.0 * q - 1.0);
    let c = 1.0 / (9.0 * a);
    let wh = a * (1.0 - c + z * c.sqrt()).powi(3);
    let mut x = if wh > lo && wh < hi { wh } else { 0.5 * (lo + hi) };
    let lg = ln_gamma(a);
    for _ in 0..200 {
        let fx = gamma_p(a, x) - q;
        if fx == 0.0 {
            return x;
        }
        if fx < 0.0 {
            lo = x;
        } else {
            hi = x;
        }
        let pdf = ((a - 1.0) * x.ln() - x - lg).exp();
        let newton = x - fx / pdf;
        let next = if pdf > 0.0 && newton > lo && newton < hi { newton } else { 0.5 * (lo + hi) };
        if (next - x).abs() <= 1e-15 * x.abs() || hi - lo <= 4.0 * f64::EPSILON * hi {
            return next;
        }
        x = next;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_serde() {
        let r: DecisionRule = serde_json::from_str(r#"{"kind":"gamma"}"#).unwrap();
        assert_eq!(r, DecisionRule::Gamma { quantile: 0.9 });
        let r: DecisionRule = serde_json::from_str(r#"{"kind":"percentile"}"#).unwrap();
        assert_eq!(r, DecisionRule::Percentile { percent: 90.0 });
        let r: DecisionRule = serde_json::from_str(r#"{"kind":"percentile","percent":75}"#).unwrap();
        assert_eq!(r, DecisionRule::Percentile { percent: 75.0 });
        assert!(serde_json::from_str::<DecisionRule>(r#"{"kind":"gamma","q":0.9}"#).is_err());
        assert!(serde_json::from_str::<DecisionRule>(r#"{"kind":"median"}"#).is_err());
        assert_eq!(DecisionRule::default(), DecisionRule::Gamma { quantile: 0.9 });
        assert!(threshold(&DecisionRule::Gamma { quantile: 1.0 }, &[1.0, 2.0]).is_err());
    }

    #[test]
    fn percentile_numpy_linear() {
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0).unwrap(), 2.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.0).unwrap(), 1.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 100.0).unwrap(), 4.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 90.0).unwrap(), 3.7);
        assert_eq!(percentile(&[5.0], 90.0).unwrap(), 5.0);
        assert!(percentile(&[], 90.0).is_err());
        assert!(percentile(&[1.0, f64::NAN], 90.0).is_err());
    }

    #[test]
    #[allow(clippy::approx_constant)] // scipy's outputs, verbatim
    fn ppf_matches_scipy_gammaincinv() {
        // scipy.special.gammaincinv(a, q) (scipy 1.17.1) for q in QS.
        const QS: [f64; 5] = [1e-6, 0.1, 0.5, 0.9, 0.999];
        let reference: [(f64, [f64; 5]); 7] = [
            (
                0.3,
                [
                    6.97269909640939e-21,
                    0.0003237246218234327,
                    0.07313113586695198,
                    0.8848107733602443,
                    4.618936042791333,
                ],
            ),
            (
                1.0,
                [1.0000005000003338e-06, 0.10536051565782636, 0.6931471805599455, 2.302585092994046, 6.907755278982137],
            ),
            (
                2.5,
                [0.0064480801032485435, 0.8051539934811613, 2.175730095547763, 4.618178449890562, 10.257502826216436],
            ),
            (7.0, [0.4998190342272766, 3.8947668048761845, 6.66963707454977, 10.532072106498532, 18.061636840199064]),
            (40.0, [16.753150234308055, 32.13892223408757, 39.6671650106891, 48.28910180763351, 62.41961200788239]),
            (300.0, [224.7406162512669, 278.0279971525585, 299.66673259043927, 322.40022284953517, 356.3855814426481]),
            (5000.0, [4671.050953616445, 4909.59744092241, 4999.666670617572, 5090.830806915189, 5221.365282705089]),
        ];
        for (a, xs) in reference {
            for (q, want) in QS.iter().zip(xs) {
                let x = gamma_ppf(*q, a, 0.0, 1.0).unwrap();
                assert!(((x - want) / want).abs() <= 1e-12, "a={a} q={q}: {x} vs scipy {want}");
            }
        }
        // Exponential: ppf(q) = -ln(1-q); loc and scale applied.
        let x = gamma_ppf(0.9, 1.0, 2.0, 3.0).unwrap();
        assert!((x - (2.0 - 3.0 * 0.1f64.ln())).abs() < 1e-13);
        assert!(gamma_ppf(1.0, 1.0, 0.0, 1.0).is_err());
        assert!(gamma_ppf(0.5, 0.0, 0.0, 1.0).is_err());
    }

    #[test]
    fn degenerate_data_is_an_error() {
        let e = threshold(&DecisionRule::default(), &[1.0, 1.0, 1.0]).unwrap_err().to_string();
        assert!(e.contains("all 3 training scores equal 1"), "{e}");
        assert!(threshold(&DecisionRule::default(), &[1.0]).is_err());
        assert!(threshold(&DecisionRule::default(), &[]).is_err());
        assert_eq!(threshold(&DecisionRule::Percentile { percent: 90.0 }, &[1.0, 1.0]).unwrap(), 1.0);
        assert_eq!(decide(&[0.5, 1.0, 1.5], 1.0), [0, 0, 1]);
    }

    #[test]
    fn nelder_mead_minimises_a_quadratic() {
        let r = nelder_mead(|x| (x[0] - 1.0).powi(2) + 10.0 * (x[1] + 2.0).powi(2), &[0.0, 0.0], 1e-8, 1e-12);
        assert!(r.converged);
        assert!((r.x[0] - 1.0).abs() < 1e-6 && (r.x[1] + 2.0).abs() < 1e-6, "{:?}", r.x);
    }
}
