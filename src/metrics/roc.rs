//! ROC curve, AUC and partial AUC exactly as scikit-learn computes them
//! (`sklearn.metrics.roc_curve`, `roc_auc_score`), which is what the official
//! DCASE evaluator calls (dcase2024.md §1.1–1.2).
//!
//! * The curve has one point per *distinct* score (`_binary_clf_curve`), so
//!   a tie between a normal and an anomalous clip becomes a diagonal segment:
//!   ties count one half.
//! * `roc_auc_score` builds the curve with `drop_intermediate=True`, which
//!   removes collinear points. The full AUC does not depend on it, but the
//!   partial AUC interpolates between the surviving points, and the
//!   trapezoid sum rounds differently, so the same points are kept here.
//! * AUC is the trapezoid area (`np.trapezoid`, summed pairwise as numpy).
//! * pAUC: `stop = searchsorted(fpr, max_fpr, 'right')`, the curve is cut at
//!   `max_fpr` with linear interpolation, its area `A` is McClish-
//!   standardised: `0.5 · (1 + (A − max_fpr²/2) / (max_fpr − max_fpr²/2))`.
//!
//! Labels are `true` for an anomaly (the positive class, as label 1 in the
//! evaluator); larger scores mean more anomalous.

use super::stats::np_sum;
use anyhow::{Result, bail};

/// A ROC curve as `sklearn.metrics.roc_curve(drop_intermediate=True)`
/// returns it: the first point is (0, 0) with threshold +∞.
#[derive(Debug, Clone, PartialEq)]
pub struct RocCurve {
    pub fpr: Vec<f64>,
    pub tpr: Vec<f64>,
    pub thresholds: Vec<f64>,
}

fn check_input(labels: &[bool], scores: &[f64]) -> Result<()> {
    if labels.len() != scores.len() {
        bail!("{} labels but {} scores", labels.len(), scores.len());
    }
    if labels.is_empty() {
        bail!("cannot compute a ROC curve from no clips");
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        bail!("score {} (clip {} of {}) is not a finite number", scores[i], i + 1, scores.len());
    }
    let positives = labels.iter().filter(|&&l| l).count();
    if positives == 0 || positives == labels.len() {
        bail!(
            "only one class present ({} clips, all {}): AUC is not defined",
            labels.len(),
            if positives == 0 { "normal" } else { "anomalous" }
        );
    }
    Ok(())
}

/// `_binary_clf_curve`: false/true positive counts at each distinct
/// threshold, highest threshold first.
fn binary_clf_curve(labels: &[bool], scores: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut fps, mut tps, mut thr) = (Vec::new(), Vec::new(), Vec::new());
    let mut tp = 0usize;
    for (k, &i) in order.iter().enumerate() {
        tp += labels[i] as usize;
        // The last index of each run of equal scores (`np.diff(...) != 0`;
        // 0.0 and -0.0 are equal, as in numpy).
        let last = k + 1 == order.len() || scores[order[k + 1]] != scores[i];
        if last {
            tps.push(tp as f64);
            fps.push((k + 1 - tp) as f64);
            thr.push(scores[i]);
        }
    }
    (fps, tps, thr)
}

/// `sklearn.metrics.roc_curve(labels, scores)` with `drop_intermediate=True`.
pub fn roc_curve(labels: &[bool], scores: &[f64]) -> Result<RocCurve> {
    check_input(labels, scores)?;
    let (mut fps, mut tps, mut thr) = binary_clf_curve(labels, scores);
    if fps.len() > 2 {
        // Keep the ends and every point where the second difference of fps
        // or tps is non-zero (a corner); counts are exact in f64.
        let n = fps.len();
        let keep: Vec<usize> = (0..n)
            .filter(|&k| {
                k == 0 || k == n - 1 || {
                    let d2 = |v: &[f64]| (v[k + 1] - v[k]) - (v[k] - v[k - 1]);
                    d2(&fps) != 0.0 || d2(&tps) != 0.0
                }
            })
            .collect();
        fps = keep.iter().map(|&k| fps[k]).collect();
        tps = keep.iter().map(|&k| tps[k]).collect();
        thr = keep.iter().map(|&k| thr[k]).collect();
    }
    fps.insert(0, 0.0);
    tps.insert(0, 0.0);
    thr.insert(0, f64::INFINITY);
    let (fl, tl) = (*fps.last().unwrap(), *tps.last().unwrap());
    Ok(RocCurve {
        fpr: fps.iter().map(|&f| f / fl).collect(),
        tpr: tps.iter().map(|&t| t / tl).collect(),
        thresholds: thr,
    })
}

/// `sklearn.metrics.auc(x, y)` for increasing `x`: the trapezoid rule as
/// `np.trapezoid` evaluates it, `sum(diff(x) * (y[1:] + y[:-1]) / 2.0)`.
fn trapezoid(x: &[f64], y: &[f64]) -> f64 {
    let terms: Vec<f64> = (1..x.len()).map(|i| (x[i] - x[i - 1]) * (y[i] + y[i - 1]) / 2.0).collect();
    np_sum(&terms)
}

/// `np.interp(x, [x0, x1], [y0, y1])` for `x0 <= x < x1`.
fn interp(x: f64, x0: f64, x1: f64, y0: f64, y1: f64) -> f64 {
    if x == x0 {
        return y0;
    }
    let slope = (y1 - y0) / (x1 - x0);
    let r = slope * (x - x0) + y0;
    if r.is_nan() {
        let r2 = slope * (x - x1) + y1;
        if r2.is_nan() && y0 == y1 { y0 } else { r2 }
    } else {
        r
    }
}

/// AUC, `sklearn.metrics.roc_auc_score(labels, scores)`.
pub fn roc_auc(labels: &[bool], scores: &[f64]) -> Result<f64> {
    let c = roc_curve(labels, scores)?;
    Ok(trapezoid(&c.fpr, &c.tpr))
}

/// McClish-standardised partial AUC up to `max_fpr`,
/// `sklearn.metrics.roc_auc_score(labels, scores, max_fpr=max_fpr)`.
/// `max_fpr = 1` gives the plain AUC.
pub fn partial_auc(labels: &[bool], scores: &[f64], max_fpr: f64) -> Result<f64> {
    if !(max_fpr > 0.0 && max_fpr <= 1.0) {
        bail!("max_fpr must be in (0, 1], got {max_fpr}");
    }
    let c = roc_curve(labels, scores)?;
    if max_fpr == 1.0 {
        return Ok(trapezoid(&c.fpr, &c.tpr));
    }
    // searchsorted(fpr, max_fpr, 'right'): number of points with fpr <= max_fpr.
    // fpr[0] = 0 <= max_fpr and fpr[last] = 1 > max_fpr, so 1 <= stop < len.
    let stop = c.fpr.partition_point(|&f| f <= max_fpr);
    let mut fpr = c.fpr[..stop].to_vec();
    let mut tpr = c.tpr[..stop].to_vec();
    tpr.push(interp(max_fpr, c.fpr[stop - 1], c.fpr[stop], c.tpr[stop - 1], c.tpr[stop]));
    fpr.push(max_fpr);
    let partial = trapezoid(&fpr, &tpr);
    let min_area = 0.5 * (max_fpr * max_fpr);
    let max_area = max_fpr;
    Ok(0.5 * (1.0 + (partial - min_area) / (max_area - min_area)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(v: &[u8]) -> Vec<bool> {
        v.iter().map(|&x| x == 1).collect()
    }

    #[test]
    fn ties_count_half() {
        // One normal and one anomaly with equal scores: AUC 0.5.
        assert_eq!(roc_auc(&b(&[0, 1]), &[0.3, 0.3]).unwrap(), 0.5);
        // Mann-Whitney: pairs (n, a): 2x2; one tie, three wins -> 3.5/4.
        let auc = roc_auc(&b(&[0, 0, 1, 1]), &[0.1, 0.5, 0.5, 0.9]).unwrap();
        assert_eq!(auc, 0.875);
    }

    #[test]
    fn curve_points_and_pauc_bounds() {
        let c = roc_curve(&b(&[0, 1, 0, 1, 0]), &[0.3, 0.35, 0.4, 0.8, 0.1]).unwrap();
        assert_eq!(c.fpr, [0.0, 0.0, 1.0 / 3.0, 1.0 / 3.0, 1.0]);
        assert_eq!(c.tpr, [0.0, 0.5, 0.5, 1.0, 1.0]);
        assert_eq!(c.thresholds[0], f64::INFINITY);
        let inv = partial_auc(&b(&[0, 0, 1, 1]), &[0.9, 0.8, 0.2, 0.1], 0.1).unwrap();
        assert!((inv - 0.47368421052631576).abs() < 1e-15);
        assert_eq!(partial_auc(&b(&[0, 0, 1, 1]), &[0.1, 0.2, 0.8, 0.9], 0.1).unwrap(), 1.0);
        assert_eq!(partial_auc(&b(&[0, 1]), &[0.2, 0.8], 1.0).unwrap(), 1.0);
    }

    #[test]
    fn bad_input() {
        let e = |r: Result<f64>| r.unwrap_err().to_string();
        assert!(e(roc_auc(&[], &[])).contains("no clips"));
        assert!(e(roc_auc(&b(&[0, 0]), &[0.1, 0.2])).contains("only one class"));
        assert!(e(roc_auc(&b(&[1, 1]), &[0.1, 0.2])).contains("only one class"));
        assert!(e(roc_auc(&b(&[0, 1]), &[0.1, f64::NAN])).contains("not a finite"));
        assert!(e(roc_auc(&b(&[0, 1]), &[f64::INFINITY, 0.0])).contains("not a finite"));
        assert!(e(roc_auc(&b(&[0, 1]), &[0.1])).contains("1 scores"));
        assert!(e(partial_auc(&b(&[0, 1]), &[0.1, 0.2], 0.0)).contains("max_fpr"));
    }
}
