//! Score calibration, score fusion and group fusion (THUEE report §3.2–3.4).
//!
//! A system file names member experiments and, per machine group (or
//! machine), the weight of each member:
//!
//! ```json
//! {
//!   "name": "system2",
//!   "members": {
//!     "nf_cdee": "../models/nf_cdee.json",
//!     "eat_lora": {"experiment": "../models/eat_lora.json", "optional": true}
//!   },
//!   "calibration": "train",
//!   "weights": {"periodic": {"nf_cdee": 0.5, "eat_lora": 0.5}, "default": {"eat_lora": 1.0}}
//! }
//! ```
//! Each member's scores of a machine are calibrated to zero mean and unit
//! variance, then summed with the weights of the machine's entry: the
//! machine's own name first, then its group (`stationary`,
//! `non_stationary`, `periodic`, `aperiodic_impulse`), then `default`.
//!
//! Calibration reads no label. By default its statistics are those of the
//! machine's training-clip scores (leave-one-out kNN distances, or the
//! model's own likelihood scores); `test_scores_transductive` uses the
//! machine's test scores instead (transductive, as the report's first
//! author does in RMIS), and says so in its name.
//!
//! A member is an experiment file (relative to the system file) or a
//! scores folder; `optional` members whose released checkpoints are absent
//! are left out of a run, and the weights of an entry are then those of its
//! remaining members.

pub mod grid;

use crate::data::machines;
use crate::metrics::threshold::DecisionRule;
use crate::metrics::{self, submission};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where the calibration statistics come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Calibration {
    /// The machine's training-clip scores (written by `asd score`).
    #[default]
    Train,
    /// The machine's test scores: transductive, reads no label.
    TestScoresTransductive,
    /// Raw scores.
    None,
}

/// One member of a system: an experiment file or a scores folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub struct Member {
    /// Experiment file (`.json`, relative to the system file) or scores folder.
    pub experiment: String,
    /// Left out (with one line naming the missing file) when a released
    /// checkpoint it loads is absent, instead of failing the run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
    /// Overrides of the experiment's fields (`train.max_steps=100`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<String>,
}

/// A member as written: a path, or an object. Parsed from a JSON value so
/// that a wrong shape or a misspelt key gets its own message (serde's
/// untagged enums only say that no variant matched).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberFields {
    experiment: String,
    #[serde(default)]
    optional: bool,
    #[serde(default)]
    set: Vec<String>,
}

impl TryFrom<serde_json::Value> for Member {
    type Error = String;
    fn try_from(v: serde_json::Value) -> std::result::Result<Member, String> {
        let m = match v {
            serde_json::Value::String(experiment) => Member { experiment, optional: false, set: Vec::new() },
            serde_json::Value::Object(_) => {
                let f: MemberFields = serde_json::from_value(v).map_err(|e| e.to_string())?;
                Member { experiment: f.experiment, optional: f.optional, set: f.set }
            }
            other => {
                return Err(format!(
                    "a member is an experiment file (or scores folder) path or an object {{\"experiment\", \
                     \"optional\", \"set\"}}, not {other}"
                ));
            }
        };
        if m.experiment.is_empty() {
            return Err("a member needs an experiment file or scores folder".into());
        }
        Ok(m)
    }
}

impl Member {
    /// Whether the member is an experiment file (else a scores folder).
    pub fn is_experiment(&self) -> bool {
        self.experiment.ends_with(".json")
    }
}

/// Where a system's weights came from when a grid search on labelled test
/// clips chose them (`asd fuse --grid-search-test-labels`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunedOnTestLabels {
    /// The labelled split whose test labels chose the weights.
    pub ground_truth: String,
    pub step: f64,
    /// Official score with the chosen weights on the machines they were fitted on.
    pub in_sample_official_score: f64,
    /// Official score when each machine is scored with weights fitted
    /// without it (leave-one-machine-out): the honest estimate.
    pub leave_one_machine_out_official_score: f64,
    /// Official score of the system's weights before the search.
    pub before_official_score: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Member id -> experiment file (relative to the system file) or scores folder.
    pub members: BTreeMap<String, Member>,
    #[serde(default)]
    pub calibration: Calibration,
    /// Entry (machine, group or `default`) -> member id -> weight.
    pub weights: BTreeMap<String, BTreeMap<String, f64>>,
    /// Decision threshold on the fused training scores.
    #[serde(default = "percentile90")]
    pub decision: DecisionRule,
    /// Set when the weights were chosen by test labels (a grid search).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuned_on_test_labels: Option<TunedOnTestLabels>,
}

fn percentile90() -> DecisionRule {
    DecisionRule::Percentile { percent: 90.0 }
}

/// Training-score file written next to the submission CSVs by `asd score`
/// (not part of the official format; the evaluator ignores it).
pub fn train_score_file_name(machine: &str) -> String {
    format!("train_score_{machine}_section_00.csv")
}

/// Whether a JSON file is a system file (it has `members`) rather than an experiment.
pub fn is_system_file(path: &Path) -> Result<bool> {
    let r = crate::experiment::resolve::load(path, &[])?;
    Ok(r.value.get("members").is_some())
}

impl SystemConfig {
    pub fn load(path: &Path) -> Result<SystemConfig> {
        let r = crate::experiment::resolve::load(path, &[])?;
        let s: SystemConfig = r.parse()?;
        s.validate().with_context(|| format!("invalid system {}", path.display()))?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name.starts_with('.') {
            bail!("name '{}' must be a plain folder name", self.name);
        }
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
        self.decision.validate()?;
        Ok(())
    }

    /// The entry (machine, group or `default`) whose weights apply to a machine.
    pub fn entry_for(&self, machine: &str) -> Result<&str> {
        let group = machines::find(machine).map(|m| m.group.name());
        [Some(machine), group, Some("default")]
            .into_iter()
            .flatten()
            .find_map(|k| self.weights.get_key_value(k).map(|(k, _)| k.as_str()))
            .with_context(|| format!("no weights for {machine} (nor its group, nor 'default')"))
    }

    /// The weights that apply to a machine.
    pub fn weights_for(&self, machine: &str) -> Result<&BTreeMap<String, f64>> {
        Ok(&self.weights[self.entry_for(machine)?])
    }

    /// The system without the members in `absent`: an entry keeps the
    /// relative weights of its remaining members, and an entry left with no
    /// positive weight is an error naming it.
    pub fn without(&self, absent: &BTreeSet<String>) -> Result<SystemConfig> {
        let mut s = self.clone();
        s.members.retain(|id, _| !absent.contains(id));
        for (entry, ws) in s.weights.iter_mut() {
            ws.retain(|id, _| !absent.contains(id));
            if ws.values().sum::<f64>() <= 0.0 {
                let gone: Vec<&str> = absent.iter().map(String::as_str).collect();
                bail!("weights.{entry}: no member with a positive weight is left without {}", gone.join(", "));
            }
        }
        Ok(s)
    }
}

/// Resolves members to their scores folders: an experiment member's run
/// `scores/` folder under `checkpoints`, or the folder itself.
pub fn member_dirs(sys: &SystemConfig, system_file: &Path, checkpoints: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let base = system_file.parent().unwrap_or(Path::new("."));
    sys.members
        .iter()
        .map(|(id, m)| {
            let p = base.join(&m.experiment);
            let dir = if m.is_experiment() {
                let exp = crate::experiment::Experiment::load(&p, &m.set)
                    .with_context(|| format!("{}: member {id}", system_file.display()))?;
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

/// One member's calibrated scores of one machine: test clips sorted by
/// name, and the training clips' (name, score) when the member wrote them.
#[derive(Debug, Clone)]
pub struct Calibrated {
    pub names: Vec<String>,
    pub test: Vec<f64>,
    pub train: Option<Vec<(String, f64)>>,
}

/// Reads and calibrates a member's scores of a machine.
pub fn calibrated(calibration: Calibration, id: &str, dir: &Path, machine: &str) -> Result<Calibrated> {
    let file = submission::find_score_file(dir, machine)?
        .with_context(|| format!("member {id}: no scores of {machine} in {}", dir.display()))?;
    let mut rows = submission::read_scores(&file)?;
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let train_file = dir.join(train_score_file_name(machine));
    let train: Option<Vec<(String, f64)>> =
        if train_file.is_file() { Some(submission::read_scores(&train_file)?) } else { None };
    let test: Vec<f64> = rows.iter().map(|r| r.1).collect();
    let train_values: Option<Vec<f64>> = train.as_ref().map(|t| t.iter().map(|r| r.1).collect());
    let (mean, std) = match calibration {
        Calibration::Train => mean_std(train_values.as_deref().with_context(|| {
            format!(
                "member {id}: calibration 'train' needs the training scores {} (written by asd score; or use \
                 \"calibration\": \"test_scores_transductive\")",
                train_file.display()
            )
        })?),
        Calibration::TestScoresTransductive => mean_std(&test),
        Calibration::None => (0.0, 1.0),
    };
    let z = |s: &f64| (s - mean) / std;
    Ok(Calibrated {
        names: rows.into_iter().map(|r| r.0).collect(),
        test: test.iter().map(z).collect(),
        train: train.map(|t| t.into_iter().map(|(n, s)| (n, z(&s))).collect()),
    })
}

/// Fused test rows of a machine, and its fused training scores (the
/// training clips every member scored) when there are any.
pub type Fused = (Vec<(String, f64)>, Option<Vec<(String, f64)>>);

/// The weighted sum of calibrated members (`weights` names members of `members`).
pub fn combine(
    machine: &str,
    weights: &BTreeMap<String, f64>,
    members: &BTreeMap<String, Calibrated>,
) -> Result<Fused> {
    let mut fused: Option<(Vec<String>, Vec<f64>)> = None;
    // Training clips by name: members score different subsets (all clips
    // leave-one-out, or only held-out clips); the common ones are fused.
    let mut fused_train: Option<BTreeMap<String, f64>> = None;
    let mut every_member_has_train = true;
    for (id, &w) in weights.iter().filter(|(_, w)| **w > 0.0) {
        let c = members.get(id).with_context(|| format!("member {id} has no scores of {machine}"))?;
        match &mut fused {
            None => fused = Some((c.names.clone(), c.test.iter().map(|z| w * z).collect())),
            Some((names, acc)) => {
                if *names != c.names {
                    bail!("member {id}: the test clips of {machine} differ from the other members'");
                }
                acc.iter_mut().zip(&c.test).for_each(|(a, z)| *a += w * z);
            }
        }
        match (&mut fused_train, &c.train) {
            (_, None) => every_member_has_train = false,
            (None, Some(t)) => fused_train = Some(t.iter().map(|(n, z)| (n.clone(), w * z)).collect()),
            (Some(acc), Some(t)) => {
                let t: BTreeMap<&str, f64> = t.iter().map(|(n, z)| (n.as_str(), *z)).collect();
                acc.retain(|n, _| t.contains_key(n.as_str()));
                acc.iter_mut().for_each(|(n, a)| *a += w * t[n.as_str()]);
            }
        }
    }
    let (names, scores) = fused.context("no member with a positive weight")?;
    let train = fused_train.filter(|t| every_member_has_train && !t.is_empty()).map(|t| t.into_iter().collect());
    Ok((names.into_iter().zip(scores).collect(), train))
}

/// Fused scores of one machine: (test rows, fused training scores if every member has them).
pub fn fuse_machine(sys: &SystemConfig, machine: &str, dirs: &BTreeMap<String, PathBuf>) -> Result<Fused> {
    let weights = sys.weights_for(machine)?;
    let mut members = BTreeMap::new();
    for id in weights.iter().filter(|(_, w)| **w > 0.0).map(|(id, _)| id) {
        let dir = dirs.get(id).with_context(|| format!("member {id} has no scores folder"))?;
        members.insert(id.clone(), calibrated(sys.calibration, id, dir, machine)?);
    }
    combine(machine, weights, &members)
}

/// Fuses every machine that the members have scored; writes the official
/// CSVs (and fused training scores) to `out`. Returns the machines.
pub fn fuse(sys: &SystemConfig, dirs: &BTreeMap<String, PathBuf>, out: &Path, quiet: bool) -> Result<Vec<String>> {
    let mut machines = BTreeSet::new();
    for dir in dirs.values() {
        machines.extend(submission::machines_with_scores(dir)?);
    }
    if machines.is_empty() {
        let folders: Vec<String> = dirs.values().map(|d| d.display().to_string()).collect();
        bail!("no scores in {}", folders.join(", "));
    }
    for m in &machines {
        let (rows, train) = fuse_machine(sys, m, dirs)?;
        let scores: Vec<f64> = rows.iter().map(|r| r.1).collect();
        let thr = match &train {
            Some(t) => metrics::threshold(&sys.decision, &t.iter().map(|r| r.1).collect::<Vec<_>>())?,
            None => {
                if !quiet {
                    eprintln!(
                        "warning: {m}: no training clip has scores of every member; deciding at the 90th percentile of the fused test scores"
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
    Ok(machines.into_iter().collect())
}

/// Writes a machine's training-clip scores (one `clip name,score` row per clip).
pub fn write_train_scores(dir: &Path, machine: &str, scores: &[(String, f64)]) -> Result<()> {
    let mut text = String::new();
    for (name, s) in scores {
        text.push_str(&format!("{name},{s}\n"));
    }
    crate::util::atomic::write_string(&dir.join(train_score_file_name(machine)), &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sys(weights: serde_json::Value) -> SystemConfig {
        serde_json::from_value(serde_json::json!({
            "name": "s", "members": {"a": "x", "b": {"experiment": "y.json", "optional": true}}, "weights": weights
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
        assert_eq!(s.entry_for("gearbox").unwrap(), "periodic");
        assert_eq!(s.weights_for("fan").unwrap().len(), 2);
        assert!(s.members["b"].optional && !s.members["a"].optional);
        assert!(sys(serde_json::json!({"nonsense": {"a": 1.0}})).validate().is_err());
        assert!(sys(serde_json::json!({"default": {"c": 1.0}})).validate().is_err());
    }

    #[test]
    fn an_absent_member_leaves_its_entries_to_the_others() {
        let s = sys(serde_json::json!({"periodic": {"b": 1.0}, "default": {"a": 0.5, "b": 0.5}}));
        let absent: BTreeSet<String> = ["b".to_string()].into();
        let err = s.without(&absent).unwrap_err().to_string();
        assert!(err.contains("weights.periodic"), "{err}");
        let s = sys(serde_json::json!({"default": {"a": 0.5, "b": 0.5}}));
        let w = s.without(&absent).unwrap();
        assert_eq!(w.weights["default"].len(), 1);
        assert!(!w.members.contains_key("b"));
    }

    #[test]
    fn calibration_names_say_what_they_read() {
        let c: Calibration = serde_json::from_value(serde_json::json!("test_scores_transductive")).unwrap();
        assert_eq!(c, Calibration::TestScoresTransductive);
        assert!(serde_json::from_value::<Calibration>(serde_json::json!("test")).is_err());
        assert_eq!(Calibration::default(), Calibration::Train);
    }

    fn write_member(dir: &Path, names: &[String], test: &[f64], train: &[f64]) {
        let rows = names.iter().cloned().zip(test.iter().copied()).collect::<Vec<_>>();
        let dec = names.iter().map(|n| (n.clone(), 0u8)).collect::<Vec<_>>();
        submission::write_submission(dir, "fan", &rows, &dec).unwrap();
        let train: Vec<(String, f64)> = train.iter().enumerate().map(|(i, s)| (format!("train_{i}.wav"), *s)).collect();
        write_train_scores(dir, "fan", &train).unwrap();
    }

    #[test]
    fn fusion_is_a_weighted_sum_of_scores_calibrated_on_training_scores() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        let names: Vec<String> = (0..4).map(|i| format!("section_00_{i:04}.wav")).collect();
        let (sa, ta) = ([1.0, 2.0, 3.0, 4.0], [0.5, 1.0, 1.5]);
        let (sb, tb) = ([10.0, 0.0, 10.0, 0.0], [2.0, 4.0]);
        write_member(&a, &names, &sa, &ta);
        write_member(&b, &names, &sb, &tb);
        let mut s = sys(serde_json::json!({"default": {"a": 0.25, "b": 0.75}}));
        let dirs: BTreeMap<String, PathBuf> = [("a".to_string(), a), ("b".to_string(), b)].into();
        for cal in [Calibration::Train, Calibration::TestScoresTransductive] {
            s.calibration = cal;
            let (fused, train) = fuse_machine(&s, "fan", &dirs).unwrap();
            // Training clips scored by both members (by name) are fused.
            let train = train.unwrap();
            assert_eq!(train.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), ["train_0.wav", "train_1.wav"]);
            let stats = |test: &[f64], train: &[f64]| match cal {
                Calibration::Train => mean_std(train),
                _ => mean_std(test),
            };
            let ((ma, sda), (mb, sdb)) = (stats(&sa, &ta), stats(&sb, &tb));
            for (i, (_, v)) in fused.iter().enumerate() {
                let want = 0.25 * (sa[i] - ma) / sda + 0.75 * (sb[i] - mb) / sdb;
                assert!((v - want).abs() < 1e-12);
            }
        }
        let out = d.path().join("out");
        assert_eq!(fuse(&s, &dirs, &out, true).unwrap(), vec!["fan"]);
        assert!(out.join("anomaly_score_fan_section_00_test.csv").is_file());
    }
}
