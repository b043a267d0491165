//! Grid search of fusion weights on a labelled split, judged by
//! leave-one-machine-out (THUEE report §3.2: the coefficients "are obtained
//! by grid search on the development set", and the greedy search overfits).
//!
//! Weights of each entry (machine, group or `default`) are searched on the
//! simplex with a fixed step, maximising the official score (harmonic mean
//! of AUC-s, AUC-t and pAUC) over the machines the entry applies to. The
//! honest estimate of the searched system scores each machine with the
//! weights fitted on the *other* machines of its entry (or on every other
//! machine when it is alone in its entry).
//!
//! This reads test labels to choose weights: the caller refuses the
//! evaluation split, and the written system records the search.

use super::{Calibrated, SystemConfig, TunedOnTestLabels, calibrated};
use crate::metrics::ground_truth::{GroundTruth, MachineTruth};
use crate::metrics::official::{self, MachineInput, MachineReport};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Weight vectors on the simplex with `n` steps over `k` members (counts summing to `n`).
pub fn simplex(k: usize, n: usize) -> Vec<Vec<usize>> {
    if k == 1 {
        return vec![vec![n]];
    }
    let mut out = Vec::new();
    for first in (0..=n).rev() {
        for mut rest in simplex(k - 1, n - first) {
            rest.insert(0, first);
            out.push(rest);
        }
    }
    out
}

/// The outcome of a search.
#[derive(Debug, Clone)]
pub struct GridOutcome {
    /// The input system with the chosen weights and the search recorded.
    pub system: SystemConfig,
    /// Per machine: its entry, the metrics with the chosen weights and with
    /// the weights fitted without it.
    pub machines: BTreeMap<String, MachineOutcome>,
}

#[derive(Debug, Clone)]
pub struct MachineOutcome {
    pub entry: String,
    pub before: MachineReport,
    pub in_sample: MachineReport,
    pub left_out: MachineReport,
}

/// One machine's calibrated member scores aligned to its ground truth.
struct MachineData {
    truth: MachineTruth,
    /// Member index -> calibrated test scores in truth order.
    z: Vec<Vec<f64>>,
}

fn load_machine(
    sys: &SystemConfig,
    ids: &[String],
    dirs: &BTreeMap<String, PathBuf>,
    machine: &str,
    truth: &MachineTruth,
) -> Result<MachineData> {
    let mut z = Vec::new();
    for id in ids {
        let dir = dirs.get(id).with_context(|| format!("member {id} has no scores folder"))?;
        let Calibrated { names, test, .. } = calibrated(sys.calibration, id, dir, machine)?;
        let rows: Vec<(String, f64)> = names.into_iter().zip(test).collect();
        z.push(truth.align(&rows, &dir.join(crate::metrics::submission::score_file_name(machine)))?);
    }
    Ok(MachineData { truth: truth.clone(), z })
}

fn metrics_of(d: &MachineData, w: &[f64]) -> Result<MachineReport> {
    let n = d.truth.len();
    let scores: Vec<f64> = (0..n).map(|i| d.z.iter().zip(w).map(|(z, w)| w * z[i]).sum()).collect();
    official::machine_metrics(&MachineInput {
        is_anomaly: &d.truth.is_anomaly,
        is_target: &d.truth.is_target,
        scores: &scores,
        decisions: None,
    })
}

fn hmean_of(reports: &[&MachineReport]) -> f64 {
    let map: BTreeMap<String, MachineReport> = reports.iter().enumerate().map(|(i, r)| (i.to_string(), **r)).collect();
    official::official_score(&map)
}

/// Searches the weights of every entry of `sys` with the given step on
/// the labelled test clips of `truth`; `truth_name` is recorded.
pub fn search(
    sys: &SystemConfig,
    dirs: &BTreeMap<String, PathBuf>,
    truth: &GroundTruth,
    truth_name: &Path,
    step: f64,
) -> Result<GridOutcome> {
    if !(step > 0.0 && step <= 0.5) {
        bail!("--grid-search-test-labels: the step must be in (0, 0.5], not {step}");
    }
    let n = (1.0 / step).round() as usize;
    if ((n as f64) * step - 1.0).abs() > 1e-9 {
        bail!("--grid-search-test-labels: 1 / step must be a whole number (0.1, 0.05, 0.25 ...), not {step}");
    }
    let ids: Vec<String> = sys.members.keys().cloned().collect();
    let grid = simplex(ids.len(), n);
    if grid.len() > 200_000 {
        bail!("{} weight vectors for {} members at step {step}: use a coarser step", grid.len(), ids.len());
    }
    let weights_of = |c: &[usize]| -> Vec<f64> { c.iter().map(|&k| k as f64 / n as f64).collect() };
    // Per machine: its data and, per grid point, its metrics.
    let mut data = BTreeMap::new();
    let mut table: BTreeMap<String, Vec<MachineReport>> = BTreeMap::new();
    for (m, t) in &truth.machines {
        let d = load_machine(sys, &ids, dirs, m, t).with_context(|| format!("grid search on {m}"))?;
        let rows = grid.iter().map(|c| metrics_of(&d, &weights_of(c))).collect::<Result<Vec<_>>>()?;
        table.insert(m.clone(), rows);
        data.insert(m.clone(), d);
    }
    // The best grid point for a set of machines (first in grid order on ties).
    let fit = |machines: &[&String]| -> usize {
        let score = |g: usize| hmean_of(&machines.iter().map(|m| &table[*m][g]).collect::<Vec<_>>());
        (0..grid.len()).map(|g| (g, score(g))).fold((0, f64::NEG_INFINITY), |b, c| if c.1 > b.1 { c } else { b }).0
    };
    let mut by_entry: BTreeMap<String, Vec<&String>> = BTreeMap::new();
    for m in truth.machines.keys() {
        by_entry.entry(sys.entry_for(m)?.to_string()).or_default().push(m);
    }
    let mut out = sys.clone();
    let mut machines = BTreeMap::new();
    let all: Vec<&String> = truth.machines.keys().collect();
    for (entry, ms) in &by_entry {
        let chosen = weights_of(&grid[fit(ms)]);
        out.weights
            .insert(entry.clone(), ids.iter().cloned().zip(chosen.iter().copied()).filter(|(_, w)| *w > 0.0).collect());
        let before: Vec<f64> = ids.iter().map(|id| sys.weights[entry].get(id).copied().unwrap_or(0.0)).collect();
        for m in ms {
            let others: Vec<&String> = ms.iter().copied().filter(|o| o != m).collect();
            let others = if others.is_empty() { all.iter().copied().filter(|o| o != m).collect() } else { others };
            let left_out = if others.is_empty() { chosen.clone() } else { weights_of(&grid[fit(&others)]) };
            let d = &data[*m];
            machines.insert(
                (*m).clone(),
                MachineOutcome {
                    entry: entry.clone(),
                    before: metrics_of(d, &before)?,
                    in_sample: metrics_of(d, &chosen)?,
                    left_out: metrics_of(d, &left_out)?,
                },
            );
        }
    }
    let score = |f: &dyn Fn(&MachineOutcome) -> &MachineReport| hmean_of(&machines.values().map(f).collect::<Vec<_>>());
    out.tuned_on_test_labels = Some(TunedOnTestLabels {
        ground_truth: truth_name.display().to_string(),
        step,
        in_sample_official_score: score(&|o| &o.in_sample),
        leave_one_machine_out_official_score: score(&|o| &o.left_out),
        before_official_score: score(&|o| &o.before),
    });
    out.description = format!(
        "{} Weights chosen by a grid search (step {step}) on the test labels of {}.",
        sys.description,
        truth_name.display()
    )
    .trim()
    .to_string();
    out.validate()?;
    Ok(GridOutcome { system: out, machines })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simplex_grid_has_every_composition_once() {
        let g = simplex(3, 10);
        assert_eq!(g.len(), 66); // C(12, 2)
        assert!(g.iter().all(|c| c.iter().sum::<usize>() == 10));
        let mut u = g.clone();
        u.sort();
        u.dedup();
        assert_eq!(u.len(), g.len());
        assert_eq!(simplex(5, 10).len(), 1001);
    }
}
