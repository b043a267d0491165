//! Systems end to end through the `asd` binary: Table 2's coefficients
//! reproduce a fusion computed by hand, a small system trains, scores,
//! fuses, evaluates, reports and reuses its stages, and the grid search
//! writes its choice and refuses the evaluation split.

use std::path::{Path, PathBuf};

use crate::common::{asd, ok, synth};

fn repo(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel).display().to_string()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A member's scores folder: test scores and training scores of a machine.
fn write_member(dir: &Path, machine: &str, names: &[String], test: &[f64], train: &[f64]) {
    std::fs::create_dir_all(dir).unwrap();
    let rows: String = names.iter().zip(test).map(|(n, v)| format!("{n},{v}\n")).collect();
    std::fs::write(dir.join(format!("anomaly_score_{machine}_section_00_test.csv")), rows).unwrap();
    let rows: String = train.iter().enumerate().map(|(i, v)| format!("section_00_train_{i:04}.wav,{v}\n")).collect();
    std::fs::write(dir.join(format!("train_score_{machine}_section_00.csv")), rows).unwrap();
}

fn read_csv(path: &Path) -> Vec<(String, f64)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let (n, v) = l.split_once(',').unwrap();
            (n.to_string(), v.parse().unwrap())
        })
        .collect()
}

fn z(v: &[f64], train: &[f64]) -> Vec<f64> {
    let n = train.len() as f64;
    let mean = train.iter().sum::<f64>() / n;
    let std = (train.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    v.iter().map(|x| (x - mean) / std).collect()
}

#[test]
fn table_2_coefficients_reproduce_a_fusion_computed_by_hand() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    let names: Vec<String> = (0..6).map(|i| format!("section_00_test_{i:04}.wav")).collect();
    // Deterministic, distinct scores per member and machine.
    let member = |k: usize, m: usize| -> (Vec<f64>, Vec<f64>) {
        let f = |i: usize, o: usize| ((i * 7 + k * 13 + m * 5 + o) % 11) as f64 * (1.0 + k as f64) + 0.25 * i as f64;
        ((0..6).map(|i| f(i, 0)).collect(), (0..5).map(|i| f(i, 3)).collect())
    };
    let ids = ["nf_cdee", "dual_branch_cnn", "beats_lora", "eat_lora", "beats_eat"];
    let machines = ["gearbox", "fan", "Scanner"];
    for (k, id) in ids.iter().enumerate() {
        for (m, machine) in machines.iter().enumerate() {
            let (t, tr) = member(k, m);
            write_member(&run.join("members").join(id), machine, &names, &t, &tr);
        }
    }
    // Table 2 of the report: (system, machine) -> weights over `ids`.
    let table: [(&str, [[f64; 5]; 3]); 4] = [
        ("system1", [[0.0, 0.2, 0.1, 0.3, 0.4], [0.0, 0.2, 0.1, 0.3, 0.4], [0.0, 0.0, 0.5, 0.4, 0.1]]),
        ("system2", [[0.5, 0.0, 0.0, 0.5, 0.0], [0.0, 0.0, 0.5, 0.4, 0.1], [0.0, 0.0, 0.5, 0.4, 0.1]]),
        ("system3", [[0.0, 0.2, 0.3, 0.2, 0.3], [0.0, 0.2, 0.3, 0.2, 0.3], [0.0, 0.2, 0.3, 0.2, 0.3]]),
        ("system4", [[0.2, 0.1, 0.3, 0.4, 0.0], [0.0, 0.2, 0.3, 0.2, 0.3], [0.0, 0.2, 0.3, 0.2, 0.3]]),
    ];
    for (system, weights) in table {
        let out = d.path().join(system);
        ok(&["fuse", &repo(&format!("experiments/systems/{system}.json")), "--run", s(&run), "--out", s(&out)]);
        for (m, machine) in machines.iter().enumerate() {
            let mut want = [0.0; 6];
            for (k, w) in weights[m].iter().enumerate() {
                let (t, tr) = member(k, m);
                for (acc, v) in want.iter_mut().zip(z(&t, &tr)) {
                    *acc += w * v;
                }
            }
            let got = read_csv(&out.join(format!("anomaly_score_{machine}_section_00_test.csv")));
            assert_eq!(got.len(), 6);
            for ((name, v), (n, w)) in got.iter().zip(names.iter().zip(want)) {
                assert_eq!(name, n);
                assert!((v - w).abs() < 1e-12, "{system} {machine} {name}: {v} != {w}");
            }
            assert!(out.join(format!("decision_result_{machine}_section_00_test.csv")).is_file());
        }
    }
}

/// A three-member system of tiny CPU runs (NF-CDEE, the CNN, the official
/// AE) plus an optional member whose released checkpoint is absent.
fn tiny_system(dir: &Path) -> PathBuf {
    let sys = serde_json::json!({
        "name": "tiny",
        "members": {
            "nf_cdee": {"experiment": repo("experiments/demo/nf_cdee.json"), "set": [
                "model.seconds=2.0", "train.batch_size=8", "train.max_steps=3"]},
            "cnn": {"experiment": repo("experiments/demo/dual_branch_cnn.json"), "set": [
                "model.seconds=2.0", "train.batch_size=4", "train.max_steps=4", "train.checkpoint_every=2",
                "train.selection={\"rule\": \"average_last\", \"k\": 2}",
                "train.schedule={\"first_cycle_steps\": 4, \"warmup_steps\": 1, \"max_lr\": 5e-3, \"min_lr\": 1e-5}"]},
            "ae": {"experiment": repo("experiments/demo/official_ae.json"), "set": [
                "model.ridge=0.01", "train.batch_size=4", "train.max_steps=3"]},
            "beats": {"experiment": repo("experiments/demo/beats_lora.json"), "optional": true,
                "set": ["model.pretrained=\"no/such/BEATs_iter3.pt\""]}
        },
        "weights": {
            "periodic": {"nf_cdee": 0.5, "cnn": 0.5, "ae": 0.2, "beats": 0.5},
            "default": {"cnn": 1.0, "ae": 0.5, "beats": 1.0}
        }
    });
    let p = dir.join("tiny.json");
    std::fs::write(&p, serde_json::to_string_pretty(&sys).unwrap()).unwrap();
    p
}

#[test]
fn a_system_trains_scores_fuses_reports_and_reuses_its_stages() {
    let d = tempfile::tempdir().unwrap();
    let data = synth(d.path(), "dev", "gearbox,fan", "5");
    let sys = tiny_system(d.path());
    let out = d.path().join("out");
    let args = ["run", s(&sys), "--data", s(&data), "--out", s(&out)];
    let (good, table, err) = asd(&args);
    assert!(good, "{err}");
    for name in ["nf_cdee", "cnn", "ae", "fused system", "official"] {
        assert!(table.contains(name), "summary table lacks {name}:\n{table}");
    }
    for m in ["gearbox", "fan"] {
        for f in [format!("anomaly_score_{m}_section_00_test.csv"), format!("decision_result_{m}_section_00_test.csv")]
        {
            assert!(out.join("submission").join(&f).is_file(), "{f}");
            assert!(out.join("members/cnn").join(&f).is_file(), "{f}");
            assert!(out.join("members/ae").join(&f).is_file(), "{f}");
        }
        for png in [format!("roc_{m}.png"), format!("hist_{m}.png")] {
            let bytes = std::fs::read(out.join("plots").join(&png)).unwrap();
            assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 5000, "{png}: {} bytes", bytes.len());
        }
    }
    assert!(out.join("plots/loss_cnn.png").is_file() && out.join("plots/loss_nf_cdee.png").is_file());
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("](plots/roc_gearbox.png)") && report.contains("skipped: released checkpoint"), "{report}");
    assert!(report.contains("fused system") && report.contains("AUC (source)"));
    // The fused submission passes the official evaluation.
    ok(&["evaluate", "--scores", s(&out.join("submission")), "--ground-truth", s(&data)]);
    // A second run reuses training and scoring; the fused CSVs are identical.
    let before = std::fs::read_to_string(out.join("submission/anomaly_score_fan_section_00_test.csv")).unwrap();
    ok(&args);
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run_record.json")).unwrap()).unwrap();
    let stages = record["stages"].as_array().unwrap();
    let reused = |name: &str| stages.iter().find(|s| s["name"] == name).unwrap()["reused"].as_bool().unwrap();
    assert!(reused("train cnn") && reused("score cnn") && reused("train nf_cdee") && reused("score nf_cdee"));
    assert!(reused("train ae") && reused("score ae"));
    assert_eq!(record["skipped"].as_object().unwrap().len(), 1);
    let after = std::fs::read_to_string(out.join("submission/anomaly_score_fan_section_00_test.csv")).unwrap();
    assert_eq!(before, after);
    // The report redraws from the record alone.
    std::fs::remove_file(out.join("plots/roc_fan.png")).unwrap();
    ok(&["report", s(&out)]);
    assert!(out.join("plots/roc_fan.png").is_file());
    // Grid search on the labelled dev clips writes its choice, recorded as such.
    let grid = d.path().join("grid.json");
    let printed = ok(&[
        "fuse",
        s(&sys),
        "--run",
        s(&out),
        "--grid-search-test-labels",
        "0.5",
        "--ground-truth",
        s(&data),
        "--write",
        s(&grid),
    ]);
    assert!(printed.contains("left-one-out"), "{printed}");
    let chosen: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&grid).unwrap()).unwrap();
    let tuned = &chosen["tuned_on_test_labels"];
    assert!(tuned["leave_one_machine_out_official_score"].is_number() && tuned["step"] == 0.5, "{chosen}");
    // ... and is refused on the evaluation split.
    let eval = synth(d.path(), "eval", "fan", "5");
    let (good, _, err) =
        asd(&["fuse", s(&sys), "--run", s(&out), "--grid-search-test-labels", "0.5", "--ground-truth", s(&eval)]);
    assert!(!good && err.contains("refused on the evaluation split"), "{err}");
}

#[test]
fn a_required_member_without_its_checkpoint_is_an_error_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    let data = synth(d.path(), "dev", "fan", "5");
    let sys = serde_json::json!({
        "name": "needs_beats",
        "members": {"beats": {"experiment": repo("experiments/demo/beats_lora.json"),
                              "set": ["model.pretrained=\"no/such/BEATs_iter3.pt\""]}},
        "weights": {"default": {"beats": 1.0}}
    });
    let p = d.path().join("s.json");
    std::fs::write(&p, sys.to_string()).unwrap();
    let (good, _, err) = asd(&["run", s(&p), "--data", s(&data), "--out", s(&d.path().join("o"))]);
    assert!(!good && err.contains("no/such/BEATs_iter3.pt") && err.contains("member beats"), "{err}");
}
