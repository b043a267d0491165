//! Structure rules checked on the source tree: the model registry is the
//! only place that matches on the model kind, and nothing imports the
//! command line (the top floor).

use std::path::{Path, PathBuf};

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(sources(&p));
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Files (relative to src/) whose text contains `needle`.
fn files_containing(needle: &str) -> Vec<String> {
    sources(&src())
        .into_iter()
        .filter(|p| std::fs::read_to_string(p).unwrap().contains(needle))
        .map(|p| p.strip_prefix(src()).unwrap().display().to_string())
        .collect()
}

#[test]
fn only_the_registry_matches_on_the_model_kind() {
    assert_eq!(files_containing("ModelConfig::"), vec!["models/mod.rs".to_string()]);
}

#[test]
fn nothing_below_the_command_line_imports_it() {
    let offenders: Vec<String> = files_containing("crate::cli")
        .into_iter()
        .chain(files_containing("asd::cli"))
        .filter(|f| !f.starts_with("cli/") && f != "main.rs")
        .collect();
    assert!(offenders.is_empty(), "modules importing cli: {offenders:?}");
}

#[test]
fn run_folder_names_are_spelt_in_one_place() {
    for name in ["\"config.json\"", "\"manifest.json\"", "\"labels.json\"", "\"metrics.jsonl\""] {
        // The Hugging Face EAT layout has its own config.json (not a run file).
        let files: Vec<String> = files_containing(name).into_iter().filter(|f| f != "models/eat/loader.rs").collect();
        assert_eq!(files, vec!["train/checkpoint.rs".to_string()], "{name}");
    }
}
