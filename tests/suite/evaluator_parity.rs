//! `asd evaluate` against the unmodified official DCASE 2024 Task 2
//! evaluator (`tests/fixtures/evaluator/`, see its README): every machine
//! value, every summary row and the official score, through the library and
//! through the binary's `--json` output. Also end-to-end runs on ground truth
//! written by `asd synth`.

use asd::data::machines::DataSet;
use asd::data::synth::{self, SynthConfig};
use asd::metrics::official::{SummaryRow, SummaryRows};
use asd::metrics::{self, Decisions, GroundTruth, Report, write_submission};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const TOL: f64 = 1e-9;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/evaluator")
}

fn submissions() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(fixtures().join("submissions"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    assert!(v.len() >= 9, "expected the 9 evaluator submissions, found {v:?}");
    v
}

/// Splits one CSV line, honouring double quotes.
fn split_csv(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for ch in line.chars() {
        match ch {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

const ROW_NAMES: [&str; 4] = ["arithmetic_mean", "harmonic_mean", "source_harmonic_mean", "target_harmonic_mean"];
const ROW_COLS: [&str; 5] = ["auc", "pauc", "precision", "recall", "f1"];
const MACHINE_COLS: [&str; 10] = [
    "auc_all",
    "auc_source",
    "auc_target",
    "pauc",
    "precision_source",
    "precision_target",
    "recall_source",
    "recall_target",
    "f1_source",
    "f1_target",
];

/// Every value of the evaluator's verbatim result CSV (shortest round-trip
/// floats, parsed exactly), keyed `<machine>.<col>`,
/// `<machine>.rows.<row>.<col>`, `overall.<row>.<col>`, `official_score`.
fn evaluator_values(sub: &str) -> BTreeMap<String, f64> {
    let path = fixtures().join("result_csv").join(format!("{sub}_result.csv"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = BTreeMap::new();
    let mut machine: Option<String> = None;
    let num = |s: &str| s.parse::<f64>().unwrap_or_else(|_| panic!("{}: '{s}'", path.display()));
    for line in text.lines() {
        let f = split_csv(line);
        let label = f[0].as_str();
        if f.len() == 1 && !label.is_empty() {
            machine = Some(label.to_string());
        } else if label == "00" {
            let m = machine.as_ref().unwrap();
            for (c, v) in MACHINE_COLS.iter().zip(&f[1..]) {
                out.insert(format!("{m}.{c}"), num(v));
            }
        } else if label == "official score" {
            out.insert("official_score".into(), num(&f[2]));
        } else if let Some(row) = ["arithmetic mean", "harmonic mean", "source harmonic mean", "target harmonic mean"]
            .iter()
            .position(|r| label == *r || label.starts_with(&format!("{r} over all")))
        {
            let prefix = if label.contains("over all") {
                machine = None;
                "overall".to_string()
            } else {
                format!("{}.rows", machine.as_ref().unwrap())
            };
            for (c, v) in ROW_COLS.iter().zip(&f[2..]) {
                out.insert(format!("{prefix}.{}.{c}", ROW_NAMES[row]), num(v));
            }
        }
    }
    assert!(out.contains_key("official_score") && out.contains_key("overall.harmonic_mean.auc"), "{}", path.display());
    out
}

fn row_values(out: &mut BTreeMap<String, f64>, prefix: &str, rows: &SummaryRows) {
    let rs: [&SummaryRow; 4] =
        [&rows.arithmetic_mean, &rows.harmonic_mean, &rows.source_harmonic_mean, &rows.target_harmonic_mean];
    for (name, r) in ROW_NAMES.iter().zip(rs) {
        let vals = [Some(r.auc), Some(r.pauc), r.precision, r.recall, r.f1];
        for (c, v) in ROW_COLS.iter().zip(vals) {
            if let Some(v) = v {
                out.insert(format!("{prefix}.{name}.{c}"), v);
            }
        }
    }
}

/// The same keys from our report.
fn report_values(r: &Report) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    out.insert("official_score".to_string(), r.official_score);
    for (m, v) in &r.machines {
        let vals = [
            Some(v.auc_all),
            Some(v.auc_source),
            Some(v.auc_target),
            Some(v.pauc),
            v.precision_source,
            v.precision_target,
            v.recall_source,
            v.recall_target,
            v.f1_source,
            v.f1_target,
        ];
        for (c, x) in MACHINE_COLS.iter().zip(vals) {
            if let Some(x) = x {
                out.insert(format!("{m}.{c}"), x);
            }
        }
        row_values(&mut out, &format!("{m}.rows"), &r.machine_rows(m).unwrap());
    }
    row_values(&mut out, "overall", &r.overall_rows());
    out
}

/// Values of `asd evaluate --json` output, parsed from the text exactly
/// (serde_json's default float parser can be one ulp off): keys
/// `official_score` and `<machine>.<field>`. Also checks the JSON shape.
fn json_values(stdout: &[u8]) -> BTreeMap<String, f64> {
    let text = std::str::from_utf8(stdout).unwrap();
    let v: Value = serde_json::from_str(text).unwrap();
    let top: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(top, ["machines", "official_score"], "top-level keys");
    let mut out = BTreeMap::new();
    let mut machine: Option<String> = None;
    for line in text.lines() {
        let t = line.trim().trim_end_matches(',');
        let Some((k, val)) = t.split_once(": ") else { continue };
        let k = k.trim_matches('"');
        if val == "{" {
            machine = (k != "machines").then(|| k.to_string());
        } else if let Ok(x) = val.parse::<f64>() {
            let key = match &machine {
                Some(m) => format!("{m}.{k}"),
                None => k.to_string(),
            };
            out.insert(key, x);
        }
    }
    for (m, fields) in v["machines"].as_object().unwrap() {
        let keys: Vec<&String> = fields.as_object().unwrap().keys().collect();
        let n = keys.len();
        assert!(n == 3 || n == 9, "{m}: {keys:?}");
        for k in keys {
            assert!(out.contains_key(&format!("{m}.{k}")), "{m}.{k} not parsed");
        }
    }
    out
}

/// Compares `ours` with the evaluator's values on the keys of `ours`
/// (which must all exist there); returns (max |diff|, where, bit-identical, total).
fn compare(sub: &str, ours: &BTreeMap<String, f64>, theirs: &BTreeMap<String, f64>) -> (f64, String, usize, usize) {
    let mut worst = (0.0f64, String::new());
    let mut identical = 0;
    let mut failures = Vec::new();
    for (k, &g) in ours {
        let Some(&w) = theirs.get(k) else {
            failures.push(format!("{k}: not in the evaluator's output"));
            continue;
        };
        let d = (g - w).abs();
        identical += (g.to_bits() == w.to_bits()) as usize;
        if d > worst.0 {
            worst = (d, format!("{k}: {g:?} vs {w:?}"));
        }
        if d > TOL {
            failures.push(format!("{k}: {g:?} vs evaluator {w:?}"));
        }
    }
    assert!(failures.is_empty(), "{sub}:\n{}", failures.join("\n"));
    (worst.0, worst.1, identical, ours.len())
}

#[test]
fn library_matches_official_evaluator() {
    let truth = GroundTruth::load(&fixtures(), None).unwrap();
    let (mut worst, mut n_same, mut n_all) = (0.0f64, 0, 0);
    for sub in submissions() {
        let dir = fixtures().join("submissions").join(&sub);
        let r = metrics::evaluate_dir(&truth, &dir, &Decisions::Required(dir.clone()))
            .unwrap_or_else(|e| panic!("{sub}: {e:#}"));
        let theirs = evaluator_values(&sub);
        let ours = report_values(&r);
        // Every value the evaluator prints is reproduced.
        assert_eq!(ours.keys().collect::<Vec<_>>(), theirs.keys().collect::<Vec<_>>(), "{sub}: keys");
        let (w, at, same, all) = compare(&sub, &ours, &theirs);
        eprintln!("{sub}: {same}/{all} values bit-identical, max |diff| {w:e} {at}");
        worst = worst.max(w);
        n_same += same;
        n_all += all;
    }
    eprintln!("library: {n_same}/{n_all} values bit-identical to the official evaluator, max |diff| {worst:e}");
}

fn asd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_asd")).args(args).output().unwrap()
}

#[test]
fn binary_json_matches_official_evaluator() {
    let gt = fixtures();
    let (mut worst, mut n_same, mut n_all) = (0.0f64, 0, 0);
    for sub in submissions() {
        let dir = fixtures().join("submissions").join(&sub);
        let out =
            asd(&["evaluate", "--scores", dir.to_str().unwrap(), "--ground-truth", gt.to_str().unwrap(), "--json"]);
        assert!(out.status.success(), "{sub}: {}", String::from_utf8_lossy(&out.stderr));
        let ours = json_values(&out.stdout);
        assert_eq!(ours.len(), 1 + 3 * 9, "{sub}: official score + 9 values for each of 3 machines");
        let (w, _, same, all) = compare(&sub, &ours, &evaluator_values(&sub));
        worst = worst.max(w);
        n_same += same;
        n_all += all;
    }
    eprintln!(
        "asd evaluate --json: {n_same}/{n_all} values bit-identical to the official evaluator, max |diff| {worst:e}"
    );
    // The table form runs too and shows the official score.
    let dir = fixtures().join("submissions/random");
    let out = asd(&["evaluate", "--scores", dir.to_str().unwrap(), "--ground-truth", gt.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("official score") && text.contains("MachC"), "{text}");
    let pct = format!("{:.2} %", 100.0 * evaluator_values("random")["official_score"]);
    assert!(text.contains(&pct), "{text}");
}

/// Strictness the official evaluator lacks: a wrong name is an error, not
/// a silently shifted score; a missing machine names the expected file.
#[test]
fn binary_rejects_broken_submissions() {
    let d = tempfile::tempdir().unwrap();
    let src = fixtures().join("submissions/random");
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), d.path().join(e.file_name())).unwrap();
    }
    let gt = fixtures();
    let run =
        |dir: &Path| asd(&["evaluate", "--scores", dir.to_str().unwrap(), "--ground-truth", gt.to_str().unwrap()]);
    let f = d.path().join("anomaly_score_MachB_section_00_test.csv");
    let text = std::fs::read_to_string(&f).unwrap();
    std::fs::write(&f, text.replacen("section_00_0007.wav", "zzz.wav", 1)).unwrap();
    let out = run(d.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("anomaly_score_MachB_section_00_test.csv row")
            && err.contains("'zzz.wav' is not in the ground truth"),
        "{err}"
    );
    std::fs::write(&f, text).unwrap();
    std::fs::remove_file(d.path().join("anomaly_score_MachC_section_00_test.csv")).unwrap();
    let out = run(d.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("anomaly_score_MachC_section_00_test.csv"), "{err}");
    // Partial decision files are an error, none at all means scores only.
    std::fs::copy(
        src.join("anomaly_score_MachC_section_00_test.csv"),
        d.path().join("anomaly_score_MachC_section_00_test.csv"),
    )
    .unwrap();
    std::fs::remove_file(d.path().join("decision_result_MachA_section_00_test.csv")).unwrap();
    let out = run(d.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("decision_result_MachA_section_00_test.csv"), "{err}");
    for m in ["MachB", "MachC"] {
        std::fs::remove_file(d.path().join(format!("decision_result_{m}_section_00_test.csv"))).unwrap();
    }
    let out =
        asd(&["evaluate", "--scores", d.path().to_str().unwrap(), "--ground-truth", gt.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["machines"]["MachA"].as_object().unwrap().len(), 3);
    let want = evaluator_values("random")["official_score"];
    assert!((got["official_score"].as_f64().unwrap() - want).abs() <= TOL);
}

/// Scores and decisions of one machine, as `write_submission` takes them.
type Submission = (Vec<(String, f64)>, Vec<(String, u8)>);

/// Perfect scores for every clip of a ground truth.
fn perfect(truth: &GroundTruth) -> BTreeMap<String, Submission> {
    truth
        .machines
        .iter()
        .map(|(m, t)| {
            let s: Vec<(String, f64)> =
                t.names.iter().zip(&t.is_anomaly).map(|(n, &a)| (n.clone(), if a { 1.0 } else { 0.0 })).collect();
            let d = s.iter().map(|(n, v)| (n.clone(), *v as u8)).collect();
            (m.clone(), (s, d))
        })
        .collect()
}

/// Ground truth written by `asd synth` (dev names and eval CSVs), scored
/// through `write_submission` and `asd evaluate`.
#[test]
fn synth_ground_truth_end_to_end() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("data");
    for (set, machines) in [(DataSet::Dev, ["fan", "valve"]), (DataSet::Eval, ["Scanner", "3DPrinter"])] {
        let mut cfg = SynthConfig::new(&root, set);
        cfg.machines = machines.iter().map(|m| m.to_string()).collect();
        cfg.train_source = 1;
        cfg.train_target = 1;
        cfg.test_per_cell = 2;
        cfg.seconds = 0.5;
        synth::generate(&cfg, &|| {}).unwrap();
    }
    // Both sets present: the set must be chosen.
    let e = GroundTruth::load(&root, None).unwrap_err().to_string();
    assert!(e.contains("--set"), "{e}");
    for (set, name) in [(DataSet::Dev, "dev"), (DataSet::Eval, "eval")] {
        let truth = GroundTruth::load(&root, Some(set)).unwrap();
        assert_eq!(truth.machines.len(), 2);
        // The ground truth names exactly the test wavs on disk.
        for (m, t) in &truth.machines {
            let mut wavs: Vec<String> = std::fs::read_dir(root.join(set.dir_name()).join("raw").join(m).join("test"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            wavs.sort();
            assert_eq!(wavs, t.names, "{name}/{m}");
            assert_eq!(t.is_anomaly.iter().filter(|&&a| a).count(), 4);
            assert_eq!(t.is_target.iter().filter(|&&a| a).count(), 4);
        }
        let out = d.path().join(format!("sub_{name}"));
        for (m, (s, dd)) in perfect(&truth) {
            write_submission(&out, &m, &s, &dd).unwrap();
        }
        let r = metrics::evaluate_dir(&truth, &out, &Decisions::IfPresent(out.clone())).unwrap();
        assert_eq!(r.official_score, 1.0);
        assert!(r.has_decisions());
        let cli = asd(&[
            "evaluate",
            "--scores",
            out.to_str().unwrap(),
            "--ground-truth",
            root.to_str().unwrap(),
            "--set",
            name,
            "--json",
        ]);
        assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
        let got: Value = serde_json::from_slice(&cli.stdout).unwrap();
        assert_eq!(got["official_score"].as_f64(), Some(1.0));
        let in_memory: BTreeMap<String, Vec<(String, f64)>> =
            perfect(&truth).into_iter().map(|(m, (s, _))| (m, s)).collect();
        assert_eq!(metrics::evaluate_scores(&truth, &in_memory, None).unwrap().official_score, 1.0);
    }
    // The eval ground-truth folder itself is accepted too.
    let gt = synth::ground_truth_dir(&root);
    assert_eq!(GroundTruth::load(&gt, None).unwrap().machine_names(), ["3DPrinter", "Scanner"]);
}
