//! Crash safety and determinism through the `asd` binary: training and a
//! whole system run killed with SIGKILL at random points and restarted end
//! bit-identical to uninterrupted runs; the same seed gives byte-identical
//! score files at any thread count, and another seed changes them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::common::synth;

fn repo(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel).display().to_string()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn asd(args: &[&str], threads: Option<usize>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_asd"));
    c.args(args).arg("--quiet");
    if let Some(n) = threads {
        c.env("RAYON_NUM_THREADS", n.to_string());
    }
    c
}

fn finish(mut c: Command) -> Duration {
    let t = Instant::now();
    let out = c.output().expect("run asd");
    assert!(out.status.success(), "{c:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    t.elapsed()
}

/// Seeded kill delays in [lo, hi) (an LCG: the test's randomness is fixed).
fn delays(seed: u64, n: usize, lo: Duration, hi: Duration) -> Vec<Duration> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            lo + (hi - lo).mul_f64((x >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect()
}

/// Starts `c`, waits `after`, then SIGKILLs it. Returns whether it was still
/// running (the kill interrupted it).
fn kill_after(mut c: Command, after: Duration) -> bool {
    let mut child: Child = c.spawn().expect("spawn asd");
    let start = Instant::now();
    while start.elapsed() < after {
        if child.try_wait().expect("wait").is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let running = child.try_wait().expect("wait").is_none();
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    running
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The tensor payload of a burnpack file: everything after its header
/// (`NRUB`, version u16, header length u32, header). The header differs
/// between any two runs, resumed or not, because it records each
/// parameter's random `ParamId`; the values are what must match.
fn tensor_bytes(file: &[u8]) -> &[u8] {
    assert_eq!(&file[..4], b"NRUB", "not a burnpack file");
    let header = u32::from_le_bytes(file[6..10].try_into().unwrap()) as usize;
    &file[10 + header..]
}

/// Every file below `dir` with the given extension, relative, sorted.
fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// Asserts that two folders hold the same CSV files with identical bytes.
fn same_csvs(a: &Path, b: &Path, what: &str) {
    let (fa, fb) = (files_with(a, "csv"), files_with(b, "csv"));
    assert!(!fa.is_empty(), "{what}: no CSV under {}", a.display());
    assert_eq!(fa, fb, "{what}: different files");
    for f in &fa {
        assert!(bytes(&a.join(f)) == bytes(&b.join(f)), "{what}: {} differs", f.display());
    }
}

#[test]
fn training_killed_at_random_points_resumes_to_bit_identical_weights() {
    let d = tempfile::tempdir().unwrap();
    let data = synth(d.path(), "dev", "fan", "21");
    let cnn = repo("experiments/demo/dual_branch_cnn.json");
    let args = |dir: &Path| -> Vec<String> {
        [
            "train",
            &cnn,
            "--resume",
            "--checkpoints",
            s(&dir.join("ckpt")),
            "--set",
            &format!("data.root=\"{}\"", data.display()),
            "--set",
            &format!("features.cache_dir=\"{}\"", dir.join("feat").display()),
            "--set",
            "model.seconds=2.0",
            "--set",
            "train.batch_size=4",
            "--set",
            "train.max_steps=14",
            "--set",
            "train.save_last_every=3",
            "--set",
            "train.checkpoint_every=0",
            "--set",
            "train.selection={\"rule\": \"last\"}",
            "--set",
            "train.schedule={\"first_cycle_steps\": 14, \"warmup_steps\": 2, \"max_lr\": 5e-3, \"min_lr\": 1e-5}",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let cmd = |dir: &Path| {
        let a = args(dir);
        asd(&a.iter().map(String::as_str).collect::<Vec<_>>(), None)
    };
    let (whole, killed) = (d.path().join("whole"), d.path().join("killed"));
    let took = finish(cmd(&whole));
    // Three kills at seeded points of the run, each restart resuming from
    // the last checkpoint the previous one saved.
    let run = |dir: &Path| dir.join("ckpt/demo_dual_branch_cnn/last");
    let mut landed = 0;
    let mut resumed_from = Vec::new();
    for after in delays(17, 3, took.mul_f64(0.15), took.mul_f64(0.7)) {
        landed += kill_after(cmd(&killed), after) as usize;
        let saved: Option<serde_json::Value> =
            std::fs::read(run(&killed).join("state.json")).ok().map(|b| serde_json::from_slice(&b).unwrap());
        resumed_from.push(saved.map_or(0, |v| v["step"].as_u64().unwrap()));
    }
    eprintln!("uninterrupted run {took:?}; kills landed {landed}/3; restarts resumed from steps {resumed_from:?}");
    finish(cmd(&killed));
    assert!(landed >= 1, "no kill interrupted a run (the run took {took:?})");
    assert!(resumed_from.iter().any(|&k| k > 0 && k < 14), "no restart resumed mid-run: {resumed_from:?}");
    // The weights; the optimizer state (keyed, and so ordered, by random
    // parameter ids) is checked through them: a restored Adam state that
    // differed would have moved the weights of the steps after a restart.
    let (a, b) = (bytes(&run(&whole).join("model.bpk")), bytes(&run(&killed).join("model.bpk")));
    assert!(tensor_bytes(&a) == tensor_bytes(&b), "the weights differ after {landed} kills");
    let state =
        |dir: &Path| -> serde_json::Value { serde_json::from_slice(&bytes(&run(dir).join("state.json"))).unwrap() };
    assert_eq!(state(&whole)["step"], 14);
    assert_eq!(state(&killed)["step"], 14);
}

/// A two-member system of the demo's members (NF-CDEE and the Dual Branch
/// CNN) at test size.
fn tiny_demo(dir: &Path) -> PathBuf {
    let sys = serde_json::json!({
        "name": "tiny_demo",
        "members": {
            "nf_cdee": {"experiment": repo("experiments/demo/nf_cdee.json"), "set": [
                "model.seconds=2.0", "train.batch_size=8", "train.max_steps=6"]},
            "dual_branch_cnn": {"experiment": repo("experiments/demo/dual_branch_cnn.json"), "set": [
                "model.seconds=2.0", "train.batch_size=4", "train.max_steps=6", "train.checkpoint_every=2",
                "train.save_last_every=2", "train.selection={\"rule\": \"average_last\", \"k\": 2}",
                "train.schedule={\"first_cycle_steps\": 6, \"warmup_steps\": 1, \"max_lr\": 5e-3, \"min_lr\": 1e-5}"]}
        },
        "calibration": "train",
        "weights": {"default": {"nf_cdee": 0.5, "dual_branch_cnn": 0.5}},
        "decision": {"kind": "percentile", "percent": 90.0}
    });
    let p = dir.join("tiny_demo.json");
    std::fs::write(&p, serde_json::to_string_pretty(&sys).unwrap()).unwrap();
    p
}

#[test]
fn a_killed_system_run_resumes_where_it_stopped() {
    let d = tempfile::tempdir().unwrap();
    let data = synth(d.path(), "dev", "fan,gearbox", "22");
    let sys = tiny_demo(d.path());
    let cmd = |out: &Path| asd(&["run", s(&sys), "--data", s(&data), "--out", s(out)], None);
    let (whole, killed) = (d.path().join("whole"), d.path().join("killed"));
    let took = finish(cmd(&whole));
    let mut landed = 0;
    for after in delays(23, 3, took.mul_f64(0.1), took.mul_f64(0.8)) {
        landed += kill_after(cmd(&killed), after) as usize;
    }
    finish(cmd(&killed));
    assert!(landed >= 1, "no kill interrupted the system run (it took {took:?})");
    same_csvs(&whole.join("submission"), &killed.join("submission"), "fused submission");
    same_csvs(&whole.join("members"), &killed.join("members"), "member scores");
}

#[test]
fn the_same_seed_gives_identical_scores_at_any_thread_count_and_another_seed_changes_them() {
    let d = tempfile::tempdir().unwrap();
    let data = synth(d.path(), "dev", "fan,gearbox", "24");
    let sys = tiny_demo(d.path());
    let run = |out: &str, threads: usize, extra: &[&str]| -> PathBuf {
        let out = d.path().join(out);
        let mut args = vec!["run", s(&sys), "--data", s(&data), "--out", s(&out)];
        args.extend(extra);
        let mut c = asd(&args, Some(threads));
        c.current_dir(d.path());
        finish(c);
        out
    };
    let a = run("a", 2, &[]);
    let b = run("b", 1, &[]);
    let c = run("c", 2, &["--set", "seed=7"]);
    same_csvs(&a.join("submission"), &b.join("submission"), "1 vs 2 threads, fused");
    same_csvs(&a.join("members"), &b.join("members"), "1 vs 2 threads, members");
    for m in ["nf_cdee", "dual_branch_cnn"] {
        let f = format!("members/{m}/anomaly_score_fan_section_00_test.csv");
        assert!(bytes(&a.join(&f)) != bytes(&c.join(&f)), "seed 7 gave the same {m} scores as the default seed");
    }
}
