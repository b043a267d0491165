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
            if f.file_stem().unwrap() == "system" {
                SystemConfig::load(&f).unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
                continue;
            }
            let e = Experiment::load(&f, &[]).unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
            assert_eq!(
                f.file_stem().unwrap().to_str().unwrap().trim_start_matches("demo_"),
                e.name.trim_start_matches("demo_"),
                "{}: name should match the file",
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
    // System 2: NF-CDEE only on the periodic group.
    let s2 =
        SystemConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/systems/system2.json")).unwrap();
    assert_eq!(s2.weights_for("gearbox").unwrap()["nf_cdee"], 0.5);
    assert!(!s2.weights_for("fan").unwrap().contains_key("nf_cdee"));
}
