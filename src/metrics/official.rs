//! The DCASE 2024 Task 2 official metrics, as the official evaluator
//! (nttcslab/dcase2024_task2_evaluator) computes them (dcase2024.md §1):
//!
//! * per machine type (one section, `00`):
//!   - AUC(source) over the source-domain normals plus **all** anomalies,
//!     AUC(target) over the target-domain normals plus all anomalies;
//!   - pAUC (max FPR 0.1, McClish-standardised) and AUC(all) over all clips;
//!   - precision, recall, F1 per domain (that domain's clips only) from the
//!     0/1 decisions: `tp / max(tp + fp, ε)`, `tp / max(tp + fn, ε)`,
//!     `2·p·r / max(p + r, ε)`;
//! * official score = harmonic mean of every AUC(source), every AUC(target)
//!   and every pAUC (once per machine), each floored at ε (machine epsilon);
//! * the evaluator's summary rows (arithmetic mean, harmonic mean, source
//!   and target harmonic means, per machine and over all machines), where
//!   the per-domain lists are `[source…, target…]` and the pAUC list is the
//!   pAUC values twice.
//!
//! Machines are aggregated in sorted name order, as the evaluator does.

use super::roc::{partial_auc, roc_auc};
use super::stats::{EPS, hmean_floored, np_mean};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// FPR limit of the pAUC (`MAX_FPR` in the evaluator).
pub const MAX_FPR: f64 = 0.1;

/// One machine's test clips, aligned: `is_anomaly[i]`, `is_target[i]`,
/// `scores[i]` and `decisions[i]` describe the same clip.
#[derive(Debug, Clone, Copy)]
pub struct MachineInput<'a> {
    pub is_anomaly: &'a [bool],
    pub is_target: &'a [bool],
    pub scores: &'a [f64],
    /// 0/1 decisions (1 = anomaly), when available.
    pub decisions: Option<&'a [u8]>,
}

/// One machine's metrics. Serialises to the `asd evaluate --json` shape:
/// `auc_source, auc_target, pauc` and, with decisions, precision, recall
/// and F1 per domain.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineReport {
    /// AUC over all clips (printed by the evaluator, not part of the score
    /// and not in the JSON).
    #[serde(skip)]
    pub auc_all: f64,
    pub auc_source: f64,
    pub auc_target: f64,
    pub pauc: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision_source: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision_target: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recall_source: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recall_target: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f1_source: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f1_target: Option<f64>,
}

/// The evaluation of a whole submission; serialises to exactly
/// `{"official_score": f, "machines": {"<machine>": {...}}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub official_score: f64,
    pub machines: BTreeMap<String, MachineReport>,
}

/// One summary row of the evaluator's result CSV (columns AUC, pAUC,
/// precision, recall, F1 score); P/R/F1 only with decisions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    pub auc: f64,
    pub pauc: f64,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
}

/// The four summary rows the evaluator prints per machine and over all.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SummaryRows {
    pub arithmetic_mean: SummaryRow,
    pub harmonic_mean: SummaryRow,
    pub source_harmonic_mean: SummaryRow,
    pub target_harmonic_mean: SummaryRow,
}

/// Precision, recall and F1 of one domain's decisions.
fn prf(is_anomaly: &[bool], decisions: &[u8]) -> (f64, f64, f64) {
    let (mut tp, mut fp, mut fn_) = (0u64, 0u64, 0u64);
    for (&a, &d) in is_anomaly.iter().zip(decisions) {
        match (a, d == 1) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fn_ += 1,
            (false, false) => {}
        }
    }
    let precision = tp as f64 / ((tp + fp) as f64).max(EPS);
    let recall = tp as f64 / ((tp + fn_) as f64).max(EPS);
    let f1 = 2.0 * precision * recall / (precision + recall).max(EPS);
    (precision, recall, f1)
}

/// Metrics of one machine.
pub fn machine_metrics(input: &MachineInput) -> Result<MachineReport> {
    let n = input.scores.len();
    if input.is_anomaly.len() != n || input.is_target.len() != n {
        bail!(
            "{} scores, {} labels and {} domains: the inputs are not aligned",
            n,
            input.is_anomaly.len(),
            input.is_target.len()
        );
    }
    if let Some(d) = input.decisions {
        if d.len() != n {
            bail!("{} decisions for {} scores", d.len(), n);
        }
        if let Some(i) = d.iter().position(|&v| v > 1) {
            bail!("decision {} of clip {} is neither 0 nor 1", d[i], i + 1);
        }
    }
    let auc_all = roc_auc(input.is_anomaly, input.scores).context("AUC (all)")?;
    let pauc = partial_auc(input.is_anomaly, input.scores, MAX_FPR).context("pAUC")?;
    let mut out = MachineReport {
        auc_all,
        auc_source: 0.0,
        auc_target: 0.0,
        pauc,
        precision_source: None,
        precision_target: None,
        recall_source: None,
        recall_target: None,
        f1_source: None,
        f1_target: None,
    };
    for target in [false, true] {
        let name = if target { "target" } else { "source" };
        // Domain normals plus all anomalies.
        let pick: Vec<usize> = (0..n).filter(|&i| input.is_target[i] == target || input.is_anomaly[i]).collect();
        if !pick.iter().any(|&i| !input.is_anomaly[i]) {
            bail!("AUC ({name}): there are no {name}-domain normal clips");
        }
        let labels: Vec<bool> = pick.iter().map(|&i| input.is_anomaly[i]).collect();
        let scores: Vec<f64> = pick.iter().map(|&i| input.scores[i]).collect();
        let auc = roc_auc(&labels, &scores).with_context(|| format!("AUC ({name})"))?;
        let prf = input.decisions.map(|d| {
            let dom: Vec<usize> = (0..n).filter(|&i| input.is_target[i] == target).collect();
            let a: Vec<bool> = dom.iter().map(|&i| input.is_anomaly[i]).collect();
            let dd: Vec<u8> = dom.iter().map(|&i| d[i]).collect();
            prf(&a, &dd)
        });
        if target {
            out.auc_target = auc;
            out.precision_target = prf.map(|p| p.0);
            out.recall_target = prf.map(|p| p.1);
            out.f1_target = prf.map(|p| p.2);
        } else {
            out.auc_source = auc;
            out.precision_source = prf.map(|p| p.0);
            out.recall_source = prf.map(|p| p.1);
            out.f1_source = prf.map(|p| p.2);
        }
    }
    Ok(out)
}

/// The official score: harmonic mean of all AUC(source), all AUC(target)
/// and all pAUC values (in that order, machines sorted by name), each
/// floored at machine epsilon.
pub fn official_score(machines: &BTreeMap<String, MachineReport>) -> f64 {
    let mut v: Vec<f64> = machines.values().map(|m| m.auc_source).collect();
    v.extend(machines.values().map(|m| m.auc_target));
    v.extend(machines.values().map(|m| m.pauc));
    hmean_floored(&v)
}

impl MachineReport {
    /// The official score of this machine alone: the harmonic mean of its
    /// AUC(source), AUC(target) and pAUC.
    pub fn score(&self) -> f64 {
        hmean_floored(&[self.auc_source, self.auc_target, self.pauc])
    }
}

/// Builds the report from per-machine metrics (sorted by machine name).
pub fn report(machines: BTreeMap<String, MachineReport>) -> Result<Report> {
    if machines.is_empty() {
        bail!("no machine types to evaluate");
    }
    Ok(Report { official_score: official_score(&machines), machines })
}

/// Summary rows over lists of `[source…, target…]` values (`n` sources).
fn rows_of(ms: &[&MachineReport]) -> SummaryRows {
    let cat = |s: &dyn Fn(&MachineReport) -> f64, t: &dyn Fn(&MachineReport) -> f64| -> Vec<f64> {
        ms.iter().map(|m| s(m)).chain(ms.iter().map(|m| t(m))).collect()
    };
    let auc = cat(&|m| m.auc_source, &|m| m.auc_target);
    let pauc = cat(&|m| m.pauc, &|m| m.pauc);
    let with_decisions = ms.iter().all(|m| m.precision_source.is_some() && m.precision_target.is_some());
    let opt = |s: fn(&MachineReport) -> Option<f64>, t: fn(&MachineReport) -> Option<f64>| {
        with_decisions.then(|| cat(&|m| s(m).unwrap(), &|m| t(m).unwrap()))
    };
    let p = opt(|m| m.precision_source, |m| m.precision_target);
    let r = opt(|m| m.recall_source, |m| m.recall_target);
    let f = opt(|m| m.f1_source, |m| m.f1_target);
    let half = ms.len();
    let row = |agg: &dyn Fn(&[f64]) -> f64, range: std::ops::Range<usize>| SummaryRow {
        auc: agg(&auc[range.clone()]),
        pauc: agg(&pauc[range.clone()]),
        precision: p.as_ref().map(|v| agg(&v[range.clone()])),
        recall: r.as_ref().map(|v| agg(&v[range.clone()])),
        f1: f.as_ref().map(|v| agg(&v[range.clone()])),
    };
    SummaryRows {
        arithmetic_mean: row(&np_mean, 0..2 * half),
        harmonic_mean: row(&hmean_floored, 0..2 * half),
        source_harmonic_mean: row(&hmean_floored, 0..half),
        target_harmonic_mean: row(&hmean_floored, half..2 * half),
    }
}

impl Report {
    /// The evaluator's per-machine summary rows.
    pub fn machine_rows(&self, machine: &str) -> Option<SummaryRows> {
        self.machines.get(machine).map(|m| rows_of(&[m]))
    }

    /// The evaluator's rows "… over all machine types, sections, and domains".
    pub fn overall_rows(&self) -> SummaryRows {
        let ms: Vec<&MachineReport> = self.machines.values().collect();
        rows_of(&ms)
    }

    /// True when every machine has precision/recall/F1.
    pub fn has_decisions(&self) -> bool {
        self.machines.values().all(|m| m.precision_source.is_some())
    }

    /// `{"official_score": …, "machines": {…}}` as pretty JSON.
    /// Machine names in the official order.
    pub fn ordered_machines(&self) -> Vec<String> {
        let mut v: Vec<String> = self.machines.keys().cloned().collect();
        v.sort_by_key(|m| crate::data::machines::MACHINES.iter().position(|i| i.name == m).unwrap_or(usize::MAX));
        v
    }

    /// A short per-machine table (AUC-s, AUC-t, pAUC) and the official score.
    pub fn table(&self) -> String {
        let mut s = format!("{:<16} {:>8} {:>8} {:>8}\n", "machine", "AUC-s", "AUC-t", "pAUC");
        for m in self.ordered_machines() {
            let x = &self.machines[&m];
            s += &format!("{:<16} {:>8.4} {:>8.4} {:>8.4}\n", m, x.auc_source, x.auc_target, x.pauc);
        }
        s += &format!("official score (hmean): {:.4}", self.official_score);
        s
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2 source normals, 2 target normals, 2 source and 2 target anomalies.
    fn input(scores: &[f64], decisions: Option<&[u8]>) -> MachineReport {
        let is_anomaly = [false, false, false, false, true, true, true, true];
        let is_target = [false, false, true, true, false, false, true, true];
        machine_metrics(&MachineInput { is_anomaly: &is_anomaly, is_target: &is_target, scores, decisions }).unwrap()
    }

    #[test]
    fn domain_auc_uses_all_anomalies() {
        // Source normals low, target normals high: AUC-s 1, AUC-t 0.
        let m = input(&[0.0, 0.1, 0.9, 0.95, 0.5, 0.6, 0.7, 0.8], None);
        assert_eq!(m.auc_source, 1.0);
        assert_eq!(m.auc_target, 0.0);
        assert_eq!(m.auc_all, 0.5);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"auc_source":1.0,"auc_target":0.0,"pauc":0.47368421052631576}"#);
    }

    #[test]
    fn prf_with_epsilon_guards() {
        let s = [0.0, 0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8];
        // Source: no positive decisions -> precision 0/eps = 0, F1 0.
        let m = input(&s, Some(&[0, 0, 0, 1, 0, 0, 1, 1]));
        assert_eq!((m.precision_source, m.recall_source, m.f1_source), (Some(0.0), Some(0.0), Some(0.0)));
        // Target: decisions [0 1 1 1] on [n n a a] -> tp 2, fp 1, fn 0.
        assert_eq!(m.precision_target, Some(2.0 / 3.0));
        assert_eq!(m.recall_target, Some(1.0));
        assert_eq!(m.f1_target, Some(2.0 * (2.0 / 3.0) * 1.0 / (2.0 / 3.0 + 1.0)));
    }

    #[test]
    fn official_score_and_rows() {
        let mk = |s: f64, t: f64, p: f64| MachineReport {
            auc_all: 0.0,
            auc_source: s,
            auc_target: t,
            pauc: p,
            precision_source: None,
            precision_target: None,
            recall_source: None,
            recall_target: None,
            f1_source: None,
            f1_target: None,
        };
        let mut ms = BTreeMap::new();
        ms.insert("b".to_string(), mk(0.5, 1.0, 0.75));
        ms.insert("a".to_string(), mk(0.0, 1.0, 1.0));
        let r = report(ms).unwrap();
        // hmean of [0->eps, 0.5, 1, 1, 1, 0.75]
        let expect = 6.0 / (1.0 / EPS + 2.0 + 1.0 + 1.0 + 1.0 + 4.0 / 3.0);
        assert!((r.official_score - expect).abs() < 1e-30);
        let o = r.overall_rows();
        assert_eq!(o.arithmetic_mean.auc, 2.5 / 4.0);
        assert_eq!(o.source_harmonic_mean.pauc, 1.0 / ((1.0 + 4.0 / 3.0) / 2.0));
        assert_eq!(o.arithmetic_mean.precision, None);
        assert_eq!(r.machine_rows("b").unwrap().harmonic_mean.auc, 1.0 / ((2.0 + 1.0) / 2.0));
        let json = r.to_json();
        let back: Report = serde_json::from_str(&json).unwrap();
        // serde_json's default float parser may be off by one ulp.
        assert!((back.official_score - r.official_score).abs() <= 1e-30);
        assert_eq!(back.machines.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert!(report(BTreeMap::new()).is_err());
    }

    #[test]
    fn missing_domain_normals_is_an_error() {
        let e = machine_metrics(&MachineInput {
            is_anomaly: &[false, true, true],
            is_target: &[false, false, true],
            scores: &[0.1, 0.2, 0.3],
            decisions: None,
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("no target-domain normal clips"), "{e:#}");
    }
}
