//! Score calibration, score fusion and group fusion (THUEE report §3.2–3.4).
//!
//! A system file names member runs and, per machine group (or machine),
//! the weight of each member:
//!
//! ```json
//! {
//!   "name": "system2",
//!   "members": {"nf_cdee": "../models/nf_cdee.json", "eat_lora": "../models/eat_lora.json"},
//!   "calibration": "test",
//!   "weights": {"periodic": {"nf_cdee": 0.5, "eat_lora": 0.5}, "default": {"eat_lora": 1.0}}
//! }
//! ```
//! Each member's scores of a machine are calibrated to zero mean and unit
//! variance (statistics of that machine's test scores — transductive, as the
//! report's first author does in RMIS — or of its training scores), then
//! summed with the weights of the machine's entry: the machine's own name
//! first, then its group (`stationary`, `non_stationary`, `periodic`,
//! `aperiodic_impulse`), then `default`. A member may be an experiment file
//! (its run's `scores/` folder is used) or a scores folder.

use crate::data::machines;
use crate::experiment::Experiment;
use crate::metrics::threshold::DecisionRule;
use crate::metrics::{self, submission};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the calibration statistics come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Calibration {
    /// The machine's test scores (transductive; RMIS `normalize: True`).
    #[default]
    Test,
    /// The machine's training scores (written by `asd score`).
    Train,
    /// Raw scores.
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Member id -> experiment file (relative to the system file) or scores folder.
    pub members: BTreeMap<String, String>,
    #[serde(default)]
    pub calibration: Calibration,
    /// Entry (machine, group or `default`) -> member id -> weight.
    pub weights: BTreeMap<String, BTreeMap<String, f64>>,
    /// Decision threshold on the fused training scores.
    #[serde(default = "percentile90")]
    pub decision: DecisionRule,
}

fn percentile90() -> DecisionRule {
    DecisionRule::Percentile { percent: 90.0 }
}

/// Training-score file written next to the submission CSVs by `asd score`
/// (not part of the official format; the evaluator ignores it).
pub fn train_score_file_name(machine: &str) -> String {
    format!("train_score_{machine}_section_00.csv")
}

impl SystemConfig {
    pub fn load(path: &Path) -> Result<SystemConfig> {
        let r = crate::experiment::resolve::load(path, &[])?;
        let s: SystemConfig = r.parse()?;
        s.validate().with_context(|| format!("invalid system {}", path.display()))?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<()> {
        if self.weights.is_empty() {
            bail!("weights is empty");
        }
        for (entry, ws) in &self.weights {
            let known = entry == "default"
                || machines::find(entry).is_some()
                || machines::MachineGroup::ALL.iter().any(|g| g.name() == entry);
            if !known {
                bail!("weights: '{entry}' is neither a machine type, a group nor 'default'");
            }
            for (m, w) in ws {
                if !self.members.contains_key(m) {
                    bail!("weights.{entry}: '{m}' is not a member");
                }
                if !w.is_finite() || *w < 0.0 {
                    bail!("weights.{entry}.{m}: weight must be finite and non-negative");
                }
            }
            if ws.values().sum::<f64>() <= 0.0 {
                bail!("weights.{entry}: all weights are zero");
            }
        }
        Ok(())
    }

    /// The weights that apply to a machine.
    pub fn weights_for(&self, machine: &str) -> Result<&BTreeMap<String, f64>> {
        let group = machines::find(machine).map(|m| m.group.name());
        self.weights
            .get(machine)
            .or_else(|| group.and_then(|g| self.weights.get(g)))
            .or_else(|| self.weights.get("default"))
            .with_context(|| format!("no weights for {machine} (nor its group, nor 'default')"))
    }
}

/// Resolves members to their scores folders.
pub fn member_dirs(sys: &SystemConfig, system_file: &Path, checkpoints: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let base = system_file.parent().unwrap_or(Path::new("."));
    sys.members
        .iter()
        .map(|(id, spec)| {
            let p = base.join(spec);
            let dir = if spec.ends_with(".json") {
                let exp = Experiment::load(&p, &[]).with_context(|| format!("member {id}"))?;
                crate::train::RunDir::new(exp.run_dir(checkpoints)).scores()
            } else {
                p
            };
            Ok((id.clone(), dir))
        })
        .collect()
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    (mean, if std > 0.0 { std } else { 1.0 })
}

/// Fused test rows of a machine, and its fused training scores when every member has them.
pub type Fused = (Vec<(String, f64)>, Option<Vec<f64>>);

/// Fused scores of one machine: (test rows, fused training scores if every member has them).
pub fn fuse_machine(sys: &SystemConfig, machine: &str, dirs: &BTreeMap<String, PathBuf>) -> Result<Fused> {
    let weights = sys.weights_for(machine)?;
    let mut fused: Option<Vec<(String, f64)>> = None;
    let mut fused_train: Option<Vec<f64>> = Some(Vec::new());
    for (id, &w) in weights.iter().filter(|(_, w)| **w > 0.0) {
        let dir = &dirs[id];
        let file = submission::find_score_file(dir, machine)?
            .with_context(|| format!("member {id}: no scores of {machine} in {}", dir.display()))?;
        let mut rows = submission::read_scores(&file)?;
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let train_file = dir.join(train_score_file_name(machine));
        let train: Option<Vec<f64>> = if train_file.is_file() {
            Some(submission::read_scores(&train_file)?.into_iter().map(|r| r.1).collect())
        } else {
            None
        };
        let test_scores: Vec<f64> = rows.iter().map(|r| r.1).collect();
        let (mean, std) = match sys.calibration {
            Calibration::Test => mean_std(&test_scores),
            Calibration::Train => mean_std(
                train
                    .as_deref()
                    .with_context(|| format!("member {id}: calibration 'train' needs {}", train_file.display()))?,
            ),
            Calibration::None => (0.0, 1.0),
        };
        let z = |s: f64| w * (s - mean) / std;
        match &mut fused {
            None => fused = Some(rows.iter().map(|(n, s)| (n.clone(), z(*s))).collect()),
            Some(acc) => {
                if acc.len() != rows.len() || acc.iter().zip(&rows).any(|(a, b)| a.0 != b.0) {
                    bail!("member {id}: the clips of {machine} differ from the other members' ({})", file.display());
                }
                acc.iter_mut().zip(&rows).for_each(|(a, b)| a.1 += z(b.1));
            }
        }
        fused_train = match (fused_train, train) {
            (Some(acc), Some(t)) if acc.is_empty() => Some(t.iter().map(|s| z(*s)).collect()),
            (Some(acc), Some(t)) if acc.len() == t.len() => Some(acc.iter().zip(&t).map(|(a, s)| a + z(*s)).collect()),
            _ => None,
        };
    }
    Ok((fused.context("no member with a positive weight")?, fused_train))
}

/// Fuses every machine that all weighted members have scored; writes the
/// official CSVs (and fused training scores) to `out`. Returns the machines.
pub fn fuse(sys: &SystemConfig, dirs: &BTreeMap<String, PathBuf>, out: &Path, quiet: bool) -> Result<Vec<String>> {
    let first = dirs.values().next().context("system without members")?;
    let machines = submission::machines_with_scores(first)?;
    if machines.is_empty() {
        bail!("no scores in {}", first.display());
    }
    for m in &machines {
        let (rows, train) = fuse_machine(sys, m, dirs)?;
        let scores: Vec<f64> = rows.iter().map(|r| r.1).collect();
        let thr = match &train {
            Some(t) => metrics::threshold(&sys.decision, t)?,
            None => {
                if !quiet {
                    eprintln!(
                        "warning: {m}: not every member has training scores; deciding at the 90th percentile of the fused test scores"
                    );
                }
                metrics::threshold(&percentile90(), &scores)?
            }
        };
        let dec: Vec<(String, u8)> = rows.iter().map(|r| r.0.clone()).zip(metrics::decide(&scores, thr)).collect();
        submission::write_submission(out, m, &rows, &dec)?;
        if let Some(t) = train {
            write_train_scores(out, m, &t)?;
        }
    }
    Ok(machines)
}

/// Writes a machine's training scores (one `index,score` row per clip).
pub fn write_train_scores(dir: &Path, machine: &str, scores: &[f64]) -> Result<()> {
    let mut text = String::new();
    for (i, s) in scores.iter().enumerate() {
        text.push_str(&format!("train_{i:05},{s}\n"));
    }
    crate::util::atomic::write_string(&dir.join(train_score_file_name(machine)), &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sys(weights: serde_json::Value) -> SystemConfig {
        serde_json::from_value(serde_json::json!({
            "name": "s", "members": {"a": "x", "b": "y"}, "weights": weights
        }))
        .unwrap()
    }

    #[test]
    fn weights_resolve_machine_then_group_then_default() {
        let s = sys(serde_json::json!({
            "Scanner": {"a": 1.0}, "periodic": {"b": 1.0}, "default": {"a": 0.5, "b": 0.5}
        }));
        s.validate().unwrap();
        assert_eq!(s.weights_for("Scanner").unwrap()["a"], 1.0);
        assert_eq!(s.weights_for("gearbox").unwrap()["b"], 1.0);
        assert_eq!(s.weights_for("fan").unwrap().len(), 2);
        assert!(sys(serde_json::json!({"nonsense": {"a": 1.0}})).validate().is_err());
        assert!(sys(serde_json::json!({"default": {"c": 1.0}})).validate().is_err());
    }

    #[test]
    fn fusion_is_a_weighted_sum_of_z_scores() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        let names: Vec<String> = (0..4).map(|i| format!("section_00_{i:04}.wav")).collect();
        let sa = [1.0, 2.0, 3.0, 4.0];
        let sb = [10.0, 0.0, 10.0, 0.0];
        let rows = |s: &[f64]| names.iter().cloned().zip(s.iter().copied()).collect::<Vec<_>>();
        let dec = names.iter().map(|n| (n.clone(), 0u8)).collect::<Vec<_>>();
        submission::write_submission(&a, "fan", &rows(&sa), &dec).unwrap();
        submission::write_submission(&b, "fan", &rows(&sb), &dec).unwrap();
        let s = sys(serde_json::json!({"default": {"a": 0.25, "b": 0.75}}));
        let dirs: BTreeMap<String, PathBuf> = [("a".to_string(), a), ("b".to_string(), b)].into();
        let (fused, train) = fuse_machine(&s, "fan", &dirs).unwrap();
        assert!(train.is_none());
        let (ma, sda) = mean_std(&sa);
        let (mb, sdb) = mean_std(&sb);
        for (i, (_, v)) in fused.iter().enumerate() {
            let want = 0.25 * (sa[i] - ma) / sda + 0.75 * (sb[i] - mb) / sdb;
            assert!((v - want).abs() < 1e-12);
        }
        let out = d.path().join("out");
        assert_eq!(fuse(&s, &dirs, &out, true).unwrap(), vec!["fan"]);
        assert!(out.join("anomaly_score_fan_section_00_test.csv").is_file());
    }
}
