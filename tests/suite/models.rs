//! Every model kind through the same path: prepare → train (2 steps) →
//! score, on tiny synthetic data, by the library calls the CLI makes; and
//! the report-settings files on an evaluation split, where no test label
//! exists.

use asd::backend::BackendName;
use asd::experiment::{Experiment, ModelConfig};
use asd::pipeline::{self, TrainOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The model kinds the registry accepts, read from serde's own list.
fn registry_kinds() -> Vec<String> {
    let err = serde_json::from_value::<ModelConfig>(serde_json::json!({"kind": "?"})).unwrap_err().to_string();
    let list = err.split("expected ").nth(1).expect("serde lists the variants");
    // "one of `a`, `b`, `c`" or "`a` or `b`": the names are the back-quoted parts.
    list.split('`').skip(1).step_by(2).map(String::from).collect()
}

/// A tiny experiment file per kind (CPU-sized settings of each model),
/// with what the tiny data needs besides.
const TINY: &[(&str, &str, &[&str])] = &[
    ("dual_branch_cnn", "experiments/demo/dual_branch_cnn.json", &[]),
    ("beats_lora", "experiments/demo/beats_lora_tiny.json", &[]),
    ("nf_cdee", "experiments/demo/nf_cdee.json", &[]),
    ("eat_lora", "experiments/demo/eat_lora_tiny.json", &[]),
    ("beats_eat", "experiments/demo/beats_eat_tiny.json", &[]),
    // Two 2-s target clips give 118 error vectors of 640 dimensions: a
    // singular covariance without a ridge.
    ("official_ae", "experiments/demo/official_ae.json", &["model.ridge=0.01"]),
];

fn synth(root: &Path, split: &str, machines: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_asd"))
        .args(["synth", "--out", root.to_str().unwrap(), "--split", split, "--machines", machines, "--seed", "11"])
        .args(["--train-source", "6", "--train-target", "2", "--test-per-cell", "2", "--seconds", "2", "--quiet"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn tiny_overrides(root: &Path, work: &Path, sets: &str) -> Vec<String> {
    vec![
        format!("data.root={}", root.display()),
        format!("data.sets={sets}"),
        format!("features.cache_dir={}", work.join("features").display()),
        "train.batch_size=4".into(),
        "train.grad_accum=1".into(),
        "train.max_steps=2".into(),
        "train.schedule=null".into(),
        "scoring.batch_size=4".into(),
    ]
}

/// Trains and scores `file` with `overrides`; returns the scores folder.
fn train_and_score(file: &str, overrides: &[String], work: &Path) -> PathBuf {
    let exp = Experiment::load(Path::new(file), overrides).unwrap_or_else(|e| panic!("{file}: {e:#}"));
    let p = pipeline::prepare(exp, &work.join("ckpt")).unwrap();
    let opts = TrainOptions { resume: false, quiet: true, stop_after: None, devices: &[] };
    pipeline::train(&p, BackendName::Flex, &opts).unwrap_or_else(|e| panic!("{file}: {e:#}"));
    let steps = 2 * p.units().unwrap().len() as u64;
    assert_eq!(p.progress().unwrap(), pipeline::TrainProgress { done: steps, asked: steps, started: true });
    pipeline::score(&p, BackendName::Flex, None, true).unwrap_or_else(|e| panic!("{file}: {e:#}")).dir
}

/// Every score CSV of `machines` has `rows` finite scores.
fn assert_scores(dir: &Path, machines: &[&str], rows: usize) {
    for m in machines {
        let f = dir.join(format!("anomaly_score_{m}_section_00_test.csv"));
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let values: Vec<f64> = text.lines().map(|l| l.rsplit(',').next().unwrap().parse().unwrap()).collect();
        assert_eq!(values.len(), rows, "{}", f.display());
        assert!(values.iter().all(|v| v.is_finite()), "{}", f.display());
        assert!(dir.join(format!("decision_result_{m}_section_00_test.csv")).is_file());
    }
}

#[test]
fn every_model_kind_trains_and_scores_through_one_path() {
    let kinds = registry_kinds();
    assert!(kinds.len() >= 2, "{kinds:?}");
    for k in &kinds {
        assert!(TINY.iter().any(|(t, _, _)| t == k), "no tiny experiment for model kind {k}: add one to TINY");
    }
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("data");
    synth(&root, "dev", "fan,valve");
    for (kind, file, extra) in TINY {
        let work = d.path().join(kind);
        let mut o = tiny_overrides(&root, &work, "[\"dev\"]");
        o.extend(extra.iter().map(|s| s.to_string()));
        let dir = train_and_score(file, &o, &work);
        // 2 per cell: (source, target) × (normal, anomaly) = 8 test clips.
        assert_scores(&dir, &["fan", "valve"], 8);
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("evaluation.json")).unwrap()).unwrap();
        assert!(report["official_score"].as_f64().is_some_and(|s| (0.0..=1.0).contains(&s)), "{kind}");
    }
}

#[test]
fn the_official_ae_trains_per_machine_and_offers_two_scores() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("data");
    synth(&root, "dev", "fan,valve");
    let mut o = tiny_overrides(&root, d.path(), "[\"dev\"]");
    o.push("model.ridge=0.01".into());
    let file = "experiments/demo/official_ae.json";
    let mahala = train_and_score(file, &o, d.path());
    for m in ["fan", "valve"] {
        let sub = d.path().join("ckpt/demo_official_ae/machines").join(m);
        assert!(sub.join("last").is_dir(), "{}", sub.display());
    }
    let scores = |dir: &Path| std::fs::read_to_string(dir.join("anomaly_score_fan_section_00_test.csv")).unwrap();
    o.push("scoring.model_score=\"mse\"".into());
    let exp = Experiment::load(Path::new(file), &o).unwrap();
    let p = pipeline::prepare(exp, &d.path().join("ckpt")).unwrap();
    let mse = pipeline::score(&p, BackendName::Flex, Some(&d.path().join("mse")), true).unwrap().dir;
    assert_scores(&mse, &["fan", "valve"], 8);
    assert_ne!(scores(&mahala), scores(&mse), "the two scores differ");
    // A score the model does not offer, and a choice for a model with one score.
    o.push("scoring.model_score=\"knn\"".into());
    let err = Experiment::load(Path::new(file), &o).unwrap_err();
    assert!(format!("{err:#}").contains("not one of selective_mahalanobis, mse"), "{err:#}");
    let o = [format!("data.root={}", root.display()), "scoring.model_score=\"mse\"".into()];
    let err = Experiment::load(Path::new("experiments/demo/nf_cdee.json"), &o).unwrap_err();
    assert!(format!("{err:#}").contains("offers one score only"), "{err:#}");
    // Without a ridge the two short target clips cannot give a covariance: the error says so.
    let o = tiny_overrides(&root, d.path(), "[\"dev\"]");
    let p = pipeline::prepare(Experiment::load(Path::new(file), &o).unwrap(), &d.path().join("ckpt")).unwrap();
    let err = pipeline::score(&p, BackendName::Flex, Some(&d.path().join("noridge")), true).err().unwrap();
    let msg = format!("{err:#}");
    assert!(msg.contains("singular") && msg.contains("model.ridge") && msg.contains("fan"), "{msg}");
}

#[test]
fn report_settings_run_on_an_evaluation_split_without_labels() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("data");
    synth(&root, "eval", "RoboticArm");
    std::fs::remove_dir_all(root.join("eval_data/ground_truth")).unwrap();
    let mut o = tiny_overrides(&root, d.path(), "[\"eval\"]");
    o.push("model.seconds=2.0".into());
    let dir = train_and_score("experiments/models/dual_branch_cnn.json", &o, d.path());
    assert_scores(&dir, &["RoboticArm"], 8);
    assert!(!dir.join("evaluation.json").exists(), "no labels, no evaluation");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("ckpt/dual_branch_cnn/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["selection"]["rule"], "average_last");
    assert_eq!(manifest["selection_reads_test_labels"], false);
    assert!(manifest["finished_unix_s"].is_u64());
    assert_eq!(manifest["burn_version"], "0.22.1");

    // Every report-settings file is valid on an evaluation split as committed
    // (none chooses anything by test labels).
    for e in std::fs::read_dir("experiments/models").unwrap() {
        let f = e.unwrap().path();
        let exp = Experiment::load(&f, &["data.sets=[\"eval\"]".to_string()])
            .unwrap_or_else(|e| panic!("{} on the eval split: {e:#}", f.display()));
        assert!(!exp.train.selection.reads_test_labels(), "{}", f.display());
    }

    // The report's own rule reads test labels: refused on this split.
    o.push("train.selection={\"rule\": \"test_labels_dev_only\", \"every\": 1}".into());
    let err = Experiment::load(Path::new("experiments/models/dual_branch_cnn.json"), &o).unwrap_err();
    assert!(format!("{err:#}").contains("refused on the evaluation split"), "{err:#}");
}
