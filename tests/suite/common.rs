//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// Path of a file under tests/fixtures.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

/// Parses a JSON fixture.
pub fn json(rel: &str) -> serde_json::Value {
    let p = fixture(rel);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

pub fn matrix(v: &serde_json::Value) -> Vec<Vec<f64>> {
    v.as_array().expect("array").iter().map(f64s).collect()
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Whether the gradients hold an entry for the parameter `id` of rank `dims`.
pub fn has_grad(gp: &burn::optim::GradientsParams, id: burn::module::ParamId, dims: usize) -> bool {
    match dims {
        1 => gp.get::<1>(id).is_some(),
        2 => gp.get::<2>(id).is_some(),
        3 => gp.get::<3>(id).is_some(),
        4 => gp.get::<4>(id).is_some(),
        _ => unreachable!(),
    }
}

/// Runs the `asd` binary quietly: (success, stdout, stderr).
pub fn asd(args: &[&str]) -> (bool, String, String) {
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_asd")).args(args).arg("--quiet").output().expect("run asd");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Runs the `asd` binary and returns its stdout; a failure fails the test with its stderr.
pub fn ok(args: &[&str]) -> String {
    let (good, out, err) = asd(args);
    assert!(good, "asd {args:?} failed:\n{err}");
    out
}

/// A tiny synthetic data root (`data-<split>-<seed>` under `dir`): 8 + 2
/// training clips and 3 test clips per cell of 2 s per machine type.
pub fn synth(dir: &std::path::Path, split: &str, machines: &str, seed: &str) -> PathBuf {
    let root = dir.join(format!("data-{split}-{seed}"));
    let r = root.to_str().unwrap();
    ok(&[
        "synth",
        "--out",
        r,
        "--split",
        split,
        "--machines",
        machines,
        "--seed",
        seed,
        "--train-source",
        "8",
        "--train-target",
        "2",
        "--test-per-cell",
        "3",
        "--seconds",
        "2",
    ]);
    root
}
