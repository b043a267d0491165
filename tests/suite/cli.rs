//! The `asd` binary end to end on synthetic data: synth layout, training,
//! scoring, evaluation, determinism, resume, experiment files and errors.

use asd::data::Dataset;
use asd::data::machines::DataSet;
use std::path::{Path, PathBuf};

use crate::common::{asd, ok, synth};

#[test]
fn help_describes_the_cli() {
    let top = ok(&["--help"]);
    for verb in ["synth", "evaluate", "features", "train", "score", "run"] {
        assert!(top.contains(verb), "asd --help lacks {verb}:\n{top}");
    }
    let s = ok(&["synth", "--help"]);
    for flag in
        ["--out", "--split", "--machines", "--seed", "--train-source", "--train-target", "--test-per-cell", "--seconds"]
    {
        assert!(s.contains(flag), "asd synth --help lacks {flag}");
    }
    assert!(ok(&["train", "--help"]).contains("--backend"));
}

#[test]
fn synth_writes_the_dcase_layout_with_expected_counts() {
    let d = tempfile::tempdir().unwrap();
    let dev = synth(d.path(), "dev", "ToyCar,gearbox,valve", "1");
    let ds = Dataset::scan(&dev, &[DataSet::Dev], None).unwrap();
    assert_eq!(ds.machines(), ["ToyCar", "gearbox", "valve"]);
    for (m, c) in ds.counts() {
        assert_eq!((c.train_source, c.train_target), (8, 2), "{m}");
        assert_eq!(
            (
                c.test_source_normal,
                c.test_source_anomaly,
                c.test_target_normal,
                c.test_target_anomaly,
                c.test_unlabelled
            ),
            (3, 3, 3, 3, 0),
            "{m}"
        );
    }
    // Real attribute strings; concealed machines say noAttribute.
    let names: Vec<String> = ds.clips.iter().map(|c| c.file_name()).collect();
    assert!(names.iter().any(|n| n.contains("_car_") && n.contains("_spd_") && n.contains("_mic_")));
    assert!(ds.clips.iter().filter(|c| c.machine == "gearbox").all(|c| c.file_name().ends_with("_noAttribute.wav")));

    let eval = synth(d.path(), "eval", "RoboticArm,Scanner,AirCompressor", "1");
    let ds = Dataset::scan(&eval, &[DataSet::Eval], None).unwrap();
    for (m, c) in ds.counts() {
        assert_eq!((c.train_source, c.train_target, c.test_unlabelled), (8, 2, 12), "{m}");
        let gt = eval.join(format!("eval_data/ground_truth/ground_truth_data/ground_truth_{m}_section_00_test.csv"));
        let rows = std::fs::read_to_string(&gt).unwrap();
        assert_eq!(rows.lines().count(), 12);
        assert_eq!(rows.lines().filter(|l| l.ends_with(",1")).count(), 6, "{m}: anomalies");
        let dom =
            std::fs::read_to_string(gt.to_str().unwrap().replace("ground_truth_data", "ground_truth_domain")).unwrap();
        assert_eq!(dom.lines().filter(|l| l.ends_with(",1")).count(), 6, "{m}: target clips");
    }
    // Anonymised test names, numbered from 0001 for Scanner and 0000 for RoboticArm.
    assert!(eval.join("eval_data/raw/Scanner/test/section_00_0001.wav").exists());
    assert!(eval.join("eval_data/raw/RoboticArm/test/section_00_0000.wav").exists());
    assert!(
        eval.join("eval_data/raw/RoboticArm/train/section_00_target_train_normal_0009_weight15_BckgF.wav").exists()
            || eval
                .join("eval_data/raw/RoboticArm/train/section_00_target_train_normal_0009_weight20_BckgF.wav")
                .exists()
    );
}

#[test]
fn synth_is_deterministic_by_seed() {
    let d = tempfile::tempdir().unwrap();
    let a = synth(d.path(), "dev", "fan", "7");
    let b = synth(&d.path().join("again"), "dev", "fan", "7");
    let c = synth(d.path(), "dev", "fan", "8");
    let file = "dev_data/raw/fan/test/section_00_source_test_anomaly_0001_n_A.wav";
    let read = |root: &Path| std::fs::read(root.join(file)).ok();
    let wavs = |root: &Path| {
        let mut v: Vec<_> = walk(root).into_iter().map(|p| std::fs::read(p).unwrap()).collect();
        v.sort();
        v
    };
    assert_eq!(wavs(&a), wavs(&b), "same seed, different audio");
    assert_ne!(wavs(&a), wavs(&c), "different seeds, same audio");
    let _ = read;
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

/// A tiny training configuration of the demo experiment.
fn tiny(root: &Path, work: &Path) -> Vec<String> {
    [
        "--checkpoints".to_string(),
        work.join("ckpt").display().to_string(),
        "--set".into(),
        format!("data.root={}", root.display()),
        "--set".into(),
        format!("features.cache_dir={}", work.join("features").display()),
        "--set".into(),
        "model.seconds=2.0".into(),
        "--set".into(),
        "train.batch_size=4".into(),
        "--set".into(),
        "train.max_steps=6".into(),
        "--set".into(),
        "train.selection={\"rule\": \"test_labels_dev_only\", \"every\": 2, \"keep_top_k\": 3, \"average_top_k\": 3}"
            .into(),
        "--set".into(),
        "train.schedule={\"first_cycle_steps\": 6, \"warmup_steps\": 1, \"max_lr\": 5e-3, \"min_lr\": 1e-5}".into(),
    ]
    .into()
}

/// [`tiny`], selecting and scoring the last checkpoint.
fn tiny_last(root: &Path, work: &Path) -> Vec<String> {
    let mut a = tiny(root, work);
    a.extend(["--set".into(), "train.selection={\"rule\": \"last\"}".into()]);
    a.extend(["--set".into(), "scoring.checkpoint=\"last\"".into()]);
    a
}

fn run_args<'a>(verb: &'a str, exp: &'a str, extra: &'a [String]) -> Vec<&'a str> {
    let mut v = vec![verb, exp];
    v.extend(extra.iter().map(String::as_str));
    v
}

const DEMO: &str = "experiments/demo/dual_branch_cnn.json";

#[test]
fn train_score_evaluate_end_to_end_and_deterministic() {
    let d = tempfile::tempdir().unwrap();
    let data = synth(d.path(), "dev", "fan,slider", "3");
    let (w1, w2) = (d.path().join("w1"), d.path().join("w2"));
    let (a1, a2) = (tiny(&data, &w1), tiny(&data, &w2));
    ok(&run_args("run", DEMO, &a1));
    ok(&run_args("run", DEMO, &a2));
    let scores = |w: &Path| w.join("ckpt/demo_dual_branch_cnn/scores");
    for m in ["fan", "slider"] {
        for kind in ["anomaly_score", "decision_result"] {
            let f = format!("{kind}_{m}_section_00_test.csv");
            let (x, y) = (
                std::fs::read_to_string(scores(&w1).join(&f)).unwrap(),
                std::fs::read_to_string(scores(&w2).join(&f)).unwrap(),
            );
            assert_eq!(x.lines().count(), 12, "{f}");
            assert_eq!(x, y, "{f} differs between two runs with the same seed");
        }
    }
    // Checkpoint averaging ran over the top-3 validated checkpoints.
    let run = w1.join("ckpt/demo_dual_branch_cnn");
    assert!(run.join("averaged/model.bpk").is_file());
    assert_eq!(std::fs::read_dir(run.join("top")).unwrap().count(), 3);
    for f in ["config.json", "labels.json", "manifest.json", "metrics.jsonl"] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    // The official evaluation of the written CSVs.
    let json = ok(&[
        "evaluate",
        "--scores",
        scores(&w1).to_str().unwrap(),
        "--ground-truth",
        data.to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let score = v["official_score"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&score));
    assert!(v["machines"]["fan"]["auc_source"].is_number() && v["machines"]["slider"]["f1_target"].is_number());
}

#[test]
fn resume_gives_the_same_model_as_an_uninterrupted_run() {
    let d = tempfile::tempdir().unwrap();
    let data = synth(d.path(), "dev", "valve", "4");
    let (w1, w2) = (d.path().join("full"), d.path().join("split"));
    let mut a1 = tiny(&data, &w1);
    let mut a2 = tiny(&data, &w2);
    for a in [&mut a1, &mut a2] {
        a.extend(["--set".into(), "train.selection={\"rule\": \"last\"}".into()]);
        a.extend(["--set".into(), "scoring.checkpoint=\"last\"".into()]);
    }
    ok(&run_args("train", DEMO, &a1));
    let mut first = run_args("train", DEMO, &a2);
    first.extend(["--stop-after", "2"]);
    ok(&first);
    // Training again without --resume refuses to overwrite.
    let (good, _, err) = asd(&run_args("train", DEMO, &a2));
    assert!(!good && err.contains("--resume"), "{err}");
    let mut again = run_args("train", DEMO, &a2);
    again.push("--resume");
    ok(&again);
    // Same weights give the same scores, to the last bit of every value.
    ok(&run_args("score", DEMO, &a1));
    ok(&run_args("score", DEMO, &a2));
    let f = "ckpt/demo_dual_branch_cnn/scores/anomaly_score_valve_section_00_test.csv";
    assert_eq!(std::fs::read_to_string(w1.join(f)).unwrap(), std::fs::read_to_string(w2.join(f)).unwrap());
    let metrics = |w: &Path| std::fs::read_to_string(w.join("ckpt/demo_dual_branch_cnn/metrics.jsonl")).unwrap();
    let losses = |t: String| {
        t.lines()
            .filter(|l| l.contains("\"loss\""))
            .map(|l| l.split("\"lr\"").next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(losses(metrics(&w1)), losses(metrics(&w2)), "loss curves differ");
}

#[test]
fn ablation_files_extend_a_base_and_typos_are_named() {
    let d = tempfile::tempdir().unwrap();
    let data = synth(d.path(), "dev", "fan", "5");
    let demo = std::fs::canonicalize(DEMO).unwrap();
    let abl = d.path().join("ablation.json");
    std::fs::write(
        &abl,
        format!(r#"{{"extends": "{}", "name": "abl_no_attention", "model": {{"attention": false}}}}"#, demo.display()),
    )
    .unwrap();
    let mut a = tiny(&data, d.path());
    a.extend([
        "--set".into(),
        "train.max_steps=2".into(),
        "--set".into(),
        "train.selection={\"rule\": \"last\"}".into(),
    ]);
    ok(&run_args("train", abl.to_str().unwrap(), &a));
    let cfg = std::fs::read_to_string(d.path().join("ckpt/abl_no_attention/config.json")).unwrap();
    assert!(cfg.contains("\"attention\": false"));

    let typo = d.path().join("typo.json");
    std::fs::write(
        &typo,
        format!(r#"{{"extends": "{}", "name": "typo", "train": {{"max_stpes": 3}}}}"#, demo.display()),
    )
    .unwrap();
    let (good, _, err) = asd(&run_args("train", typo.to_str().unwrap(), &a));
    assert!(
        !good && err.contains("train.max_stpes") && err.contains("typo.json") && err.contains("unknown field"),
        "{err}"
    );
}

#[test]
fn unknown_backend_names_its_feature() {
    for b in asd::backend::BackendName::ALL {
        if b.is_compiled() {
            continue;
        }
        let (good, _, err) = asd(&["train", DEMO, "--backend", b.as_str()]);
        assert!(!good && err.contains(&format!("--features {b}")), "{err}");
    }
}

#[test]
fn several_devices_of_a_cpu_backend_are_refused() {
    let (good, _, err) = asd(&["train", DEMO, "--devices", "0,1"]);
    assert!(!good && err.contains("backend 'flex' has one device"), "{err}");
}

#[test]
fn every_backend_of_the_ablations_scores_a_trained_run() {
    let d = tempfile::tempdir().unwrap();
    let data = synth(d.path(), "dev", "fan,valve", "6");
    let work = d.path().join("w");
    let a = tiny_last(&data, &work);
    ok(&run_args("train", DEMO, &a));
    let mut n = 0;
    for e in std::fs::read_dir("experiments/ablations").unwrap() {
        let f = e.unwrap().path();
        if !f.file_name().unwrap().to_str().unwrap().contains("_backend_") {
            continue;
        }
        let raw: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let backend = raw["scoring"]["backend"].to_string();
        let out = d.path().join(f.file_stem().unwrap());
        let mut args = run_args("score", DEMO, &a);
        let set = format!("scoring.backend={backend}");
        args.extend(["--set", &set, "--out", out.to_str().unwrap()]);
        ok(&args);
        for m in ["fan", "valve"] {
            let scores = std::fs::read_to_string(out.join(format!("anomaly_score_{m}_section_00_test.csv"))).unwrap();
            assert_eq!(scores.lines().count(), 12, "{}", f.display());
            let train = std::fs::read_to_string(out.join(format!("train_score_{m}_section_00.csv"))).unwrap();
            assert_eq!(train.lines().count(), 10, "{}: every training clip is scored", f.display());
        }
        ok(&["evaluate", "--scores", out.to_str().unwrap(), "--ground-truth", data.to_str().unwrap()]);
        n += 1;
    }
    assert_eq!(n, 6);
}

#[test]
fn pseudo_attributes_split_a_concealed_machine_into_classes() {
    let d = tempfile::tempdir().unwrap();
    let data = synth(d.path(), "dev", "gearbox,fan", "8");
    let work = d.path().join("w");
    let a = tiny_last(&data, &work);
    ok(&run_args("train", DEMO, &a));
    let file = d.path().join("pseudo.json");
    let mut args = run_args("pseudo-labels", DEMO, &a);
    args.extend(["--clusters", "3", "--out", file.to_str().unwrap()]);
    ok(&args);
    let pl: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let clusters = pl["clusters"].as_object().unwrap();
    // gearbox's attributes are concealed: all 10 of its training clips are clustered, fan's are not.
    assert_eq!(clusters.len(), 10, "{pl}");
    assert!(clusters.keys().all(|k| k.starts_with("gearbox/")));
    let source: Vec<u64> =
        clusters.iter().filter(|(k, _)| k.contains("_source_")).map(|(_, v)| v.as_u64().unwrap()).collect();
    assert!(source.iter().all(|&c| c < 3) && source.len() == 8);
    assert!(clusters.iter().filter(|(k, _)| k.contains("_target_")).all(|(_, v)| v == 0));
    // A second model learns the clusters as auxiliary classes.
    let mut b = a.clone();
    b.extend(["--set".into(), "name=\"with_pseudo\"".into()]);
    b.extend(["--set".into(), format!("data.pseudo_attributes=\"{}\"", file.display())]);
    ok(&run_args("run", DEMO, &b));
    let labels = std::fs::read_to_string(work.join("ckpt/with_pseudo/labels.json")).unwrap();
    assert!(labels.contains("gearbox###pseudo00###source") && labels.contains("fan###"), "{labels}");
    assert!(!labels.contains("gearbox###noAttribute###source"), "{labels}");
    // A missing pseudo-attribute file is named.
    let mut c = a.clone();
    c.extend(["--set".into(), "name=\"bad\"".into(), "--set".into(), "data.pseudo_attributes=\"nope.json\"".into()]);
    let (good, _, err) = asd(&run_args("train", DEMO, &c));
    assert!(!good && err.contains("nope.json") && err.contains("pseudo-attribute"), "{err}");
}
