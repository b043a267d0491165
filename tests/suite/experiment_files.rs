//! Every shipped experiment and system file parses strictly and validates.

use asd::experiment::Experiment;
use asd::fusion::SystemConfig;
use std::path::{Path, PathBuf};

fn files(dir: &str) -> Vec<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments").join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    v.sort();
    v
}

#[test]
fn experiment_files_parse() {
    let mut n = 0;
    for dir in ["models", "ablations", "demo"] {
        for f in files(dir) {
            let e = Experiment::load(&f, &[]).unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
            // A file that only changes scoring keeps its base's name, so that
            // it scores the base's trained run instead of training again.
            let raw: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
            let changes: Vec<&String> = raw
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| !["extends", "name", "description"].contains(&k.as_str()))
                .collect();
            let expected = if changes == ["scoring"] {
                let base = f.parent().unwrap().join(raw["extends"].as_str().unwrap());
                Experiment::load(&base, &[]).unwrap().name
            } else {
                f.file_stem().unwrap().to_str().unwrap().to_string()
            };
            assert_eq!(
                expected.trim_start_matches("demo_"),
                e.name.trim_start_matches("demo_"),
                "{}: name should match the file (or its base's, for a scoring-only change)",
                f.display()
            );
            n += 1;
        }
    }
    assert!(n >= 6);
}

#[test]
fn system_files_reproduce_table_2() {
    let systems = files("systems");
    assert_eq!(systems.len(), 4);
    for f in systems {
        let s = SystemConfig::load(&f).unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
        for (entry, w) in &s.weights {
            let sum: f64 = w.values().sum();
            assert!((sum - 1.0).abs() < 1e-12, "{}: weights of {entry} sum to {sum}", f.display());
        }
    }
    // The CPU-sized variants carry the same coefficients, and every
    // member of every system (the demo's included) is a valid experiment.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    for f in files("systems") {
        let tiny = SystemConfig::load(&f.parent().unwrap().join("tiny").join(f.file_name().unwrap())).unwrap();
        assert_eq!(tiny.weights, SystemConfig::load(&f).unwrap().weights, "{}", f.display());
    }
    let mut all = files("systems");
    all.extend(files("systems/tiny"));
    all.push(root.join("demo.json"));
    all.push(root.join("demo_official_ae.json"));
    for f in all {
        let s = SystemConfig::load(&f).unwrap();
        for (id, m) in &s.members {
            let p = f.parent().unwrap().join(&m.experiment);
            Experiment::load(&p, &m.set).unwrap_or_else(|e| panic!("{} member {id}: {e:#}", f.display()));
        }
    }
    // System 2: NF-CDEE only on the periodic group.
    let s2 =
        SystemConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/systems/system2.json")).unwrap();
    assert_eq!(s2.weights_for("gearbox").unwrap()["nf_cdee"], 0.5);
    assert!(!s2.weights_for("fan").unwrap().contains_key("nf_cdee"));
}
