//! The bad-input matrix through the real `asd` binary: every verb that reads
//! user files, fed broken wavs, CSVs, experiment and system files and
//! checkpoints. A refused input ends in one line `error: …` that names the
//! file and the problem, exit status 2, no panic, and no new output; what is
//! legitimately accepted (24-bit and float PCM, stereo, a BOM, CRLF line
//! ends, quoted fields) is accepted.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{fixture, synth};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn repo(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel).display().to_string()
}

/// Every file below `dir`, feature caches left out: a refused run may keep
/// the description of a front-end it prepared, which is not an output.
fn files(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.file_name().is_some_and(|n| n == "feat") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p);
            }
        }
    }
    out
}

/// Runs `asd args --quiet` in `dir`: (exit code, stderr).
fn run_in(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_asd")).current_dir(dir).args(args).arg("--quiet").output().expect("run asd");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into())
}

/// `asd args` (in `dir`) is refused cleanly and its message holds every needle.
fn refused(dir: &Path, args: &[&str], needles: &[&str]) {
    let before = files(dir);
    let (code, err) = run_in(dir, args);
    assert_eq!(code, Some(2), "asd {args:?}: expected a refusal, got exit {code:?}:\n{err}");
    assert!(!err.contains("panicked"), "asd {args:?} panicked:\n{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.len() == 1 && lines[0].starts_with("error: "), "asd {args:?}: not a one-line error:\n{err}");
    for n in needles {
        assert!(err.contains(n), "asd {args:?}: the message lacks '{n}':\n{err}");
    }
    let new: Vec<_> = files(dir).difference(&before).cloned().collect();
    assert!(new.is_empty(), "asd {args:?} left output behind: {new:?}");
}

/// `asd args` (in `dir`) succeeds.
fn accepted(dir: &Path, args: &[&str]) {
    let (code, err) = run_in(dir, args);
    assert_eq!(code, Some(0), "asd {args:?} should be accepted:\n{err}");
}

/// A RIFF/WAVE file: interleaved `samples` in [-1, 1]; `data_len` overrides
/// the data chunk's declared size (a lying header).
fn wav(rate: u32, channels: u16, bits: u16, float: bool, samples: &[f64], data_len: Option<u32>) -> Vec<u8> {
    let mut data = Vec::new();
    for &x in samples {
        match (float, bits) {
            (true, _) => data.extend_from_slice(&(x as f32).to_le_bytes()),
            (false, 8) => data.push(((x * 127.0) as i32 + 128) as u8),
            (false, b) => {
                let v = (x * ((1i64 << (b - 1)) - 1) as f64) as i64;
                data.extend_from_slice(&v.to_le_bytes()[..b as usize / 8]);
            }
        }
    }
    let block = channels * bits / 8;
    let mut fmt = Vec::new();
    fmt.extend_from_slice(&(if float { 3u16 } else { 1u16 }).to_le_bytes());
    fmt.extend_from_slice(&channels.to_le_bytes());
    fmt.extend_from_slice(&rate.to_le_bytes());
    fmt.extend_from_slice(&(rate * block as u32).to_le_bytes());
    fmt.extend_from_slice(&block.to_le_bytes());
    fmt.extend_from_slice(&bits.to_le_bytes());
    let mut body = b"WAVEfmt ".to_vec();
    body.extend_from_slice(&16u32.to_le_bytes());
    body.extend_from_slice(&fmt);
    body.extend_from_slice(b"data");
    body.extend_from_slice(&data_len.unwrap_or(data.len() as u32).to_le_bytes());
    body.extend_from_slice(&data);
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// A broadband signal (a tone plus seeded uniform noise), so that every mel
/// band lies far above the quantisation noise of 16-bit PCM.
fn tone(n: usize) -> Vec<f64> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|i| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            0.2 * (i as f64 * 0.17).sin() + 0.2 * ((state >> 11) as f64 / (1u64 << 53) as f64 - 0.5)
        })
        .collect()
}

fn pcm16(samples: &[f64]) -> Vec<u8> {
    wav(16_000, 1, 16, false, samples, None)
}

const LOGMEL: [&str; 5] = ["features", "--kind", "logmel", "--preset", "nf_cdee"];

fn features(wav: &str, out: &str) -> Vec<String> {
    let mut v: Vec<String> = LOGMEL.iter().map(|s| s.to_string()).collect();
    v.extend(["--wav".into(), wav.into(), "--out".into(), out.into()]);
    v
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn broken_wav_files_are_refused_and_odd_but_valid_ones_accepted() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let x = tone(16_000);
    let good = pcm16(&x);
    let mut nan = x.clone();
    nan[100] = f64::NAN;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", good[..good.len() / 2].to_vec(), "truncated"),
        ("lying_header", wav(16_000, 1, 16, false, &x, Some(100_000_000)), "truncated"),
        ("empty", Vec::new(), "empty"),
        ("zero_samples", pcm16(&[]), "no audio samples"),
        ("pcm8", wav(16_000, 1, 8, false, &x, None), "8-bit PCM is not supported"),
        ("rate44k", wav(44_100, 1, 16, false, &x, None), "44100 Hz, expected 16000 Hz"),
        ("text", b"a text file named .wav\n".to_vec(), "not a valid wav file"),
        ("nan", wav(16_000, 1, 32, true, &nan, None), "sample 100 is not a finite number"),
        ("header_only", good[..30].to_vec(), "truncated"),
    ];
    for (name, bytes, problem) in &cases {
        let file = format!("{name}.wav");
        std::fs::write(dir.join(&file), bytes).unwrap();
        refused(dir, &strs(&features(&file, &format!("out/{name}.npy"))), &[&file, problem]);
    }
    // A folder named like a wav file.
    std::fs::create_dir(dir.join("folder.wav")).unwrap();
    refused(dir, &strs(&features("folder.wav", "out/folder.npy")), &["folder.wav", "is a folder"]);
    refused(dir, &strs(&features("missing.wav", "out/missing.npy")), &["missing.wav", "not found"]);

    // Accepted: 24-bit, 32-bit integer and float PCM, and stereo (down-mixed).
    std::fs::write(dir.join("mono.wav"), &good).unwrap();
    accepted(dir, &strs(&features("mono.wav", "ok/mono.npy")));
    let both: Vec<f64> = x.iter().flat_map(|&v| [v, v]).collect();
    for (name, bytes) in [
        ("pcm24", wav(16_000, 1, 24, false, &x, None)),
        ("pcm32", wav(16_000, 1, 32, false, &x, None)),
        ("float32", wav(16_000, 1, 32, true, &x, None)),
        ("stereo", wav(16_000, 2, 16, false, &both, None)),
    ] {
        std::fs::write(dir.join(format!("{name}.wav")), bytes).unwrap();
        accepted(dir, &strs(&features(&format!("{name}.wav"), &format!("ok/{name}.npy"))));
        let (a, sa) = asd::util::npy::read(&dir.join("ok/mono.npy")).unwrap();
        let (b, sb) = asd::util::npy::read(&dir.join(format!("ok/{name}.npy"))).unwrap();
        assert_eq!(sa, sb, "{name}");
        // Two identical channels average to the mono clip exactly; other
        // depths differ from 16-bit only by quantisation.
        let tol = if name == "stereo" { 0.0 } else { 0.05 };
        let worst = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
        assert!(worst <= tol, "{name}: log-mel differs from the 16-bit clip by {worst} dB");
    }

    // A folder with one bad clip among good ones writes nothing at all.
    std::fs::create_dir_all(dir.join("clips/sub")).unwrap();
    for i in 0..3 {
        std::fs::write(dir.join(format!("clips/a{i}.wav")), &good).unwrap();
    }
    std::fs::write(dir.join("clips/sub/b.wav"), &cases[0].1).unwrap();
    refused(dir, &strs(&features("clips", "mirror")), &["clips/sub/b.wav", "truncated"]);
    assert!(files(&dir.join("mirror")).is_empty());
    let beats = fixture("shared/beats/beats_tiny.pt");
    refused(
        dir,
        &["embed", "--model", "beats", "--checkpoint", s(&beats), "--wav", "clips", "--out", "mirror"],
        &["clips/sub/b.wav", "truncated"],
    );
    refused(
        dir,
        &["embed", "--model", "beats", "--checkpoint", s(&beats), "--wav", "rate44k.wav", "--out", "e.npy"],
        &["rate44k.wav", "44100 Hz"],
    );
}

/// Tiny training settings of the demo Dual Branch CNN on `data` (run folders
/// under `ckpt/`, features under `feat/`, both relative to the working folder).
fn tiny_train(data: &Path) -> Vec<String> {
    [
        "--checkpoints",
        "ckpt",
        "--set",
        "features.cache_dir=\"feat\"",
        "--set",
        "model.seconds=2.0",
        "--set",
        "train.batch_size=4",
        "--set",
        "train.max_steps=2",
        "--set",
        "train.selection={\"rule\": \"last\"}",
        "--set",
        "scoring.checkpoint=\"last\"",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(["--set".into(), format!("data.root=\"{}\"", data.display())])
    .collect()
}

const CNN: &str = "experiments/demo/dual_branch_cnn.json";

fn with<'a>(head: &[&'a str], tail: &'a [String]) -> Vec<&'a str> {
    head.iter().copied().chain(tail.iter().map(String::as_str)).collect()
}

#[test]
fn a_bad_clip_in_a_data_root_stops_training_and_leaves_no_run_behind() {
    let d = tempfile::tempdir().unwrap();
    let data = synth(d.path(), "dev", "fan", "11");
    let work = d.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let cnn = repo(CNN);
    let t = tiny_train(&data);
    let train_dir = data.join("dev_data/raw/fan/train");
    let victim = train_dir.join("section_00_source_train_normal_0003_n_A.wav");
    let saved = std::fs::read(&victim).expect("synth names its clips as the grammar says");
    let bad: [(&[u8], &str); 3] = [
        (b"RIFF....WAVEjunk", "truncated"),
        (&wav(22_050, 1, 16, false, &tone(4000), None), "22050 Hz"),
        (b"", "empty"),
    ];
    for (bytes, problem) in bad {
        std::fs::write(&victim, bytes).unwrap();
        refused(&work, &with(&["train", &cnn], &t), &["section_00_source_train_normal_0003_n_A.wav", problem]);
        refused(&work, &with(&["run", &cnn], &t), &["section_00_source_train_normal_0003_n_A.wav", problem]);
    }
    // A file outside the naming grammar, and a folder named like a clip.
    std::fs::write(&victim, &saved).unwrap();
    std::fs::write(train_dir.join("notes.wav"), pcm16(&tone(100))).unwrap();
    refused(&work, &with(&["train", &cnn], &t), &["notes.wav", "does not follow the DCASE grammar"]);
    std::fs::remove_file(train_dir.join("notes.wav")).unwrap();
    let folder = train_dir.join("section_00_source_train_normal_0099_n_A.wav");
    std::fs::create_dir(&folder).unwrap();
    refused(&work, &with(&["train", &cnn], &t), &["section_00_source_train_normal_0099_n_A.wav", "is a folder"]);
    std::fs::remove_dir(&folder).unwrap();
    // The failed attempts left no run folder: training now starts clean.
    accepted(&work, &with(&["train", &cnn], &t));
    refused(&work, &with(&["train", &cnn], &t), &["already holds a trained run", "--resume"]);
    // A missing data root.
    let mut missing = tiny_train(&d.path().join("no_such_root"));
    missing.extend(["--set".into(), "name=\"other\"".into()]);
    refused(&work, &with(&["train", &cnn], &missing), &["no_such_root"]);
}

/// Writes a score file for every test clip of `machine` under a dev root.
fn scores_for(data: &Path, machine: &str, dir: &Path) {
    let mut names: Vec<String> = std::fs::read_dir(data.join("dev_data/raw").join(machine).join("test"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let rows: String = names.iter().enumerate().map(|(i, n)| format!("{n},{}\n", 0.1 * i as f64)).collect();
    let dec: String = names.iter().enumerate().map(|(i, n)| format!("{n},{}\n", i % 2)).collect();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("anomaly_score_{machine}_section_00_test.csv")), rows).unwrap();
    std::fs::write(dir.join(format!("decision_result_{machine}_section_00_test.csv")), dec).unwrap();
}

type Edit = fn(&str) -> String;

fn first_row(t: &str, value: &str) -> String {
    let mut lines: Vec<String> = t.lines().map(String::from).collect();
    lines[0] = format!("{},{value}", lines[0].split(',').next().unwrap());
    lines.join("\n") + "\n"
}

#[test]
fn broken_score_and_ground_truth_csvs_are_refused_and_tolerable_ones_accepted() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let data = synth(dir, "dev", "fan,valve", "12");
    let clean = dir.join("clean");
    for m in ["fan", "valve"] {
        scores_for(&data, m, &clean);
    }
    let fan = "anomaly_score_fan_section_00_test.csv";
    let refusals: Vec<(&str, &str, Edit, &str)> = vec![
        ("nan", fan, |t| first_row(t, "nan"), "is not finite"),
        ("inf", fan, |t| first_row(t, "-inf"), "is not finite"),
        ("empty_score", fan, |t| first_row(t, ""), "is not a number"),
        ("word", fan, |t| first_row(t, "high"), "'high' is not a number"),
        ("duplicate", fan, |t| format!("{t}{}\n", t.lines().next().unwrap()), "already given in row 1"),
        ("missing_row", fan, |t| t.lines().skip(1).map(|l| format!("{l}\n")).collect(), "no row for 1 of the 12"),
        (
            "unknown",
            fan,
            |t| format!("{t}section_00_source_test_normal_9999_x.wav,0.5\n"),
            "is not in the ground truth",
        ),
        ("header", fan, |t| format!("file,score\n{t}"), "a header row?"),
        ("extra_column", fan, |t| t.lines().map(|l| format!("{l},x\n")).collect(), "expected 2 columns"),
        ("empty_file", fan, |_| String::new(), "is empty"),
        ("decision_2", "decision_result_fan_section_00_test.csv", |t| first_row(t, "2"), "neither 0 nor 1"),
    ];
    for (case, file, edit, problem) in &refusals {
        let sub = dir.join(case);
        copy_dir(&clean, &sub);
        let p = sub.join(file);
        std::fs::write(&p, edit(&std::fs::read_to_string(&p).unwrap())).unwrap();
        refused(
            dir,
            &["evaluate", "--scores", case, "--ground-truth", s(&data)],
            &[&format!("{case}/{file}"), problem],
        );
    }
    // Bytes that are not text, and a machine without its files.
    copy_dir(&clean, &dir.join("binary"));
    std::fs::write(dir.join("binary").join(fan), [0xff, 0xfe, 0x00, 0x81]).unwrap();
    refused(dir, &["evaluate", "--scores", "binary", "--ground-truth", s(&data)], &[fan, "not UTF-8"]);
    copy_dir(&clean, &dir.join("no_valve"));
    std::fs::remove_file(dir.join("no_valve/anomaly_score_valve_section_00_test.csv")).unwrap();
    refused(dir, &["evaluate", "--scores", "no_valve", "--ground-truth", s(&data)], &["valve", "no anomaly scores"]);
    copy_dir(&clean, &dir.join("no_decisions"));
    std::fs::remove_file(dir.join("no_decisions/decision_result_valve_section_00_test.csv")).unwrap();
    refused(
        dir,
        &["evaluate", "--scores", "no_decisions", "--ground-truth", s(&data)],
        &["decision_result_valve_section_00_test.csv", "missing"],
    );
    refused(dir, &["evaluate", "--scores", "nowhere", "--ground-truth", s(&data)], &["nowhere", "does not exist"]);
    // An unreadable folder (only where permissions bind: not for root).
    copy_dir(&clean, &dir.join("locked"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read_dir(dir.join("locked")).is_err() {
        refused(dir, &["evaluate", "--scores", "locked", "--ground-truth", s(&data)], &["locked"]);
    }
    std::fs::set_permissions(dir.join("locked"), std::fs::Permissions::from_mode(0o755)).unwrap();
    refused(dir, &["evaluate", "--scores", "clean", "--ground-truth", "no_root"], &["no_root", "not a folder"]);

    // Accepted as the official evaluator's CSV reading accepts them.
    let tolerated: [(&str, Edit); 3] = [
        ("bom", |t| format!("\u{feff}{t}")),
        ("crlf", |t| t.replace('\n', "\r\n")),
        ("quoted", |t| t.lines().map(|l| format!("\"{}\"\n", l.replace(',', "\",\""))).collect()),
    ];
    let reference = evaluate_json(dir, "clean", &data);
    for (case, edit) in tolerated {
        let sub = dir.join(case);
        copy_dir(&clean, &sub);
        for f in std::fs::read_dir(&sub).unwrap() {
            let p = f.unwrap().path();
            std::fs::write(&p, edit(&std::fs::read_to_string(&p).unwrap())).unwrap();
        }
        assert_eq!(evaluate_json(dir, case, &data), reference, "{case}");
    }

    // The evaluation split's official ground-truth CSVs.
    let eval = synth(dir, "eval", "fan", "12");
    let gt = eval.join("eval_data/ground_truth");
    let gt_file = gt.join("ground_truth_data/ground_truth_fan_section_00_test.csv");
    let truth = std::fs::read_to_string(&gt_file).unwrap();
    let sub = dir.join("eval_scores");
    std::fs::create_dir(&sub).unwrap();
    let names: Vec<&str> = truth.lines().map(|l| l.split(',').next().unwrap()).collect();
    let rows: String = names.iter().enumerate().map(|(i, n)| format!("{n},{i}\n")).collect();
    std::fs::write(sub.join(fan), rows).unwrap();
    let dec: String = names.iter().map(|n| format!("{n},0\n")).collect();
    std::fs::write(sub.join("decision_result_fan_section_00_test.csv"), dec).unwrap();
    accepted(dir, &["evaluate", "--scores", "eval_scores", "--ground-truth", s(&eval)]);
    let gt_cases: [(Edit, &str); 3] = [
        (|t| first_row(t, "maybe"), "maybe"),
        (|t| format!("{t}{}\n", t.lines().next().unwrap()), "already listed in row 1"),
        (|_| String::new(), "empty"),
    ];
    for (edit, problem) in gt_cases {
        std::fs::write(&gt_file, edit(&truth)).unwrap();
        refused(
            dir,
            &["evaluate", "--scores", "eval_scores", "--ground-truth", s(&eval)],
            &["ground_truth_fan", problem],
        );
    }
    std::fs::remove_file(&gt_file).unwrap();
    refused(dir, &["evaluate", "--scores", "eval_scores", "--ground-truth", s(&eval)], &["ground_truth"]);
}

fn evaluate_json(dir: &Path, scores: &str, data: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_asd"))
        .current_dir(dir)
        .args(["evaluate", "--scores", scores, "--ground-truth", s(data), "--json", "--quiet"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{scores}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

#[test]
fn broken_experiment_and_system_files_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let data = synth(dir, "dev", "fan", "13");
    let cnn = repo(CNN);
    let t = tiny_train(&data);
    let put = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    let extend = |rest: &str| format!("{{\"extends\": \"{cnn}\", \"name\": \"x\"{rest}}}");
    let experiments: Vec<(&str, String, &str)> = vec![
        ("malformed.json", format!("{{\"extends\": \"{cnn}\", \"name\": \"x\","), "is not valid JSON"),
        ("empty.json", String::new(), "is not valid JSON"),
        ("list.json", "[1, 2]".into(), "must be a JSON object"),
        ("unknown.json", extend(", \"trian\": {}"), "unknown field `trian`"),
        ("misspelt.json", extend(", \"train\": {\"max_stpes\": 3}"), "train.max_stpes"),
        ("wrong_type.json", extend(", \"train\": {\"log_every\": \"ten\"}"), "invalid type: string \"ten\""),
        ("negative.json", extend(", \"model\": {\"branch_dim\": -3}"), "invalid value: integer `-3`"),
        ("zero_accum.json", extend(", \"train\": {\"grad_accum\": 0}"), "must be at least 1"),
        ("nan.json", extend(", \"seed\": NaN"), "is not valid JSON"),
        ("no_base.json", "{\"extends\": \"no_such_base.json\", \"name\": \"x\"}".into(), "no_such_base.json"),
        ("cycle_a.json", "{\"extends\": \"cycle_b.json\", \"name\": \"x\"}".into(), "forms a cycle"),
    ];
    put("cycle_b.json", "{\"extends\": \"cycle_a.json\"}");
    for (file, text, problem) in &experiments {
        put(file, text);
        refused(dir, &with(&["train", file], &t), &[file, problem]);
    }
    refused(dir, &with(&["train", "absent.json"], &t), &["absent.json", "No such file"]);
    refused(dir, &with(&["train", &cnn, "--set", "train.max_steps"], &t), &["train.max_steps", "path.to.field=value"]);
    refused(dir, &with(&["train", &cnn, "--set", "train.nope=3"], &t), &["train.nope", "unknown field"]);
    refused(dir, &with(&["score", &cnn], &t), &["has not been trained"]);

    let system =
        |members: &str, weights: &str| format!("{{\"name\": \"s\", \"members\": {members}, \"weights\": {weights}}}");
    let member = format!("{{\"a\": \"{cnn}\"}}");
    let systems: Vec<(&str, String, &str)> = vec![
        (
            "sys_missing.json",
            system("{\"a\": \"no_such_member.json\"}", "{\"default\": {\"a\": 1}}"),
            "no_such_member.json",
        ),
        ("sys_type.json", system("{\"a\": 3}", "{\"default\": {\"a\": 1}}"), "members.a"),
        (
            "sys_typo.json",
            system(&format!("{{\"a\": {{\"experimnet\": \"{cnn}\"}}}}"), "{\"default\": {\"a\": 1}}"),
            "unknown field `experimnet`",
        ),
        ("sys_weight.json", system(&member, "{\"default\": {\"b\": 1}}"), "'b' is not a member"),
        ("sys_negative.json", system(&member, "{\"default\": {\"a\": -1}}"), "non-negative"),
        ("sys_group.json", system(&member, "{\"pumps\": {\"a\": 1}}"), "'pumps' is neither"),
        (
            "sys_unknown.json",
            format!(
                "{{\"name\": \"s\", \"members\": {member}, \"weights\": {{\"default\": {{\"a\": 1}}}}, \"calibratoin\": \"train\"}}"
            ),
            "unknown field `calibratoin`",
        ),
        (
            "sys_calibration.json",
            format!(
                "{{\"name\": \"s\", \"members\": {member}, \"weights\": {{\"default\": {{\"a\": 1}}}}, \"calibration\": \"test\"}}"
            ),
            "calibration",
        ),
        (
            "sys_cycle.json",
            format!(
                "{{\"extends\": \"sys_cycle.json\", \"name\": \"s\", \"members\": {member}, \"weights\": {{\"default\": {{\"a\": 1}}}}}}"
            ),
            "forms a cycle",
        ),
    ];
    for (file, text, problem) in &systems {
        put(file, text);
        refused(dir, &["run", file, "--data", s(&data), "--out", "sys_out"], &[file, problem]);
        // `fuse` reads the member outputs of a run, not the member files.
        let fuse_problem = if *file == "sys_missing.json" { "no member has scores in sys_out" } else { problem };
        refused(dir, &["fuse", file, "--run", "sys_out"], &[file, fuse_problem]);
    }
}

/// A Hugging Face EAT folder whose weights went through `edit`.
fn eat_folder(dir: &Path, edit: impl Fn(&mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>)) -> PathBuf {
    let bytes = std::fs::read(fixture("shared/eat/eat_tiny_hf.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> =
        st.tensors().into_iter().map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    edit(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, dt, sh, data)| (n.clone(), safetensors::tensor::TensorView::new(*dt, sh.clone(), data).unwrap()))
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    std::fs::copy(fixture("shared/eat/eat_tiny_hf_config.json"), dir.join("config.json")).unwrap();
    dir.to_path_buf()
}

#[test]
fn broken_checkpoints_are_refused_by_embed_and_score() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let clip = fixture("shared/audio/clip_b_chirp_noise.wav");
    let embed = |model: &str, ck: &Path| -> Vec<String> {
        ["embed", "--model", model, "--checkpoint", s(ck), "--wav", s(&clip), "--out", "e.npy"]
            .iter()
            .map(|x| x.to_string())
            .collect()
    };
    let bad = |name: &str| fixture(&format!("robustness/{name}"));
    // Released BEATs format (tests/fixtures/gen/robustness_checkpoints.py).
    for (file, problem) in [
        ("beats_missing_key.pt", "missing key encoder.layers.1.fc2.weight"),
        ("beats_wrong_shape.pt", "post_extract_proj.weight: checkpoint has shape [64, 47], the model expects [64, 48]"),
        ("beats_f16.pt", "dtype F16"),
        ("beats_int.pt", "dtype I64"),
    ] {
        refused(dir, &strs(&embed("beats", &bad(file))), &[file, problem]);
    }
    let beats = std::fs::read(fixture("shared/beats/beats_tiny.pt")).unwrap();
    std::fs::write(dir.join("cut.pt"), &beats[..beats.len() / 2]).unwrap();
    std::fs::write(dir.join("text.pt"), "not a checkpoint").unwrap();
    for f in ["cut.pt", "text.pt"] {
        refused(dir, &strs(&embed("beats", &dir.join(f))), &[f]);
        refused(dir, &strs(&embed("eat", &dir.join(f))), &[f]);
    }
    refused(dir, &strs(&embed("beats", &dir.join("absent.pt"))), &["absent.pt", "not found"]);
    // An EAT checkpoint given as BEATs, and the other way round.
    refused(dir, &strs(&embed("beats", &fixture("shared/eat/eat_tiny_fairseq.pt"))), &["eat_tiny_fairseq.pt"]);
    refused(dir, &strs(&embed("eat", &fixture("shared/beats/beats_tiny.pt"))), &["beats_tiny.pt"]);
    // Hugging Face EAT: a key removed, a shape changed, a dtype changed.
    let hf = eat_folder(&dir.join("hf_missing"), |t| t.retain(|x| x.0 != "model.pre_norm.bias"));
    refused(dir, &strs(&embed("eat", &hf)), &["hf_missing", "missing key model.pre_norm.bias"]);
    let hf = eat_folder(&dir.join("hf_shape"), |t| {
        let x = t.iter_mut().find(|x| x.0 == "model.pre_norm.bias").unwrap();
        x.2 = vec![x.2[0] / 2];
        x.3.truncate(x.3.len() / 2);
    });
    refused(dir, &strs(&embed("eat", &hf)), &["hf_shape", "model.pre_norm.bias: checkpoint has shape [32]"]);
    let hf = eat_folder(&dir.join("hf_dtype"), |t| {
        let x = t.iter_mut().find(|x| x.0 == "model.pre_norm.bias").unwrap();
        x.1 = safetensors::Dtype::I32;
    });
    refused(dir, &strs(&embed("eat", &hf)), &["hf_dtype", "model.pre_norm.bias has dtype I32"]);
    std::fs::write(dir.join("hf_dtype/model.safetensors"), b"\x08\x00\x00\x00\x00\x00\x00\x00{}").unwrap();
    refused(dir, &strs(&embed("eat", &dir.join("hf_dtype"))), &["model.safetensors"]);

    // Our own checkpoints (burnpack): a run folder whose model file is cut
    // short, not a checkpoint, or saved by another model or configuration.
    let data = synth(dir, "dev", "fan", "14");
    let cnn = repo(CNN);
    let t = tiny_train(&data);
    accepted(dir, &with(&["train", &cnn], &t));
    for (name, set) in [("noatt", "model.attention=false"), ("dim64", "model.branch_dim=64")] {
        accepted(dir, &with(&["train", &cnn, "--set", &format!("name=\"{name}\""), "--set", set], &t));
    }
    let nf = repo("experiments/demo/nf_cdee.json");
    accepted(dir, &with(&["train", &nf, "--set", "train.batch_size=8"], &t));
    let model = dir.join("ckpt/demo_dual_branch_cnn/last/model.bpk");
    let good = std::fs::read(&model).unwrap();
    let nf_model = walk_find(&dir.join("ckpt/demo_nf_cdee"), "model.bpk");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (good[..good.len() / 3].to_vec(), "the file is truncated"),
        (good[..2].to_vec(), "truncated"),
        (b"hello".to_vec(), "not a burnpack checkpoint"),
        (std::fs::read(dir.join("ckpt/noatt/last/model.bpk")).unwrap(), "24 of this model's 144 tensors are missing"),
        (std::fs::read(dir.join("ckpt/dim64/last/model.bpk")).unwrap(), "tensors do not fit this model"),
        (std::fs::read(nf_model).unwrap(), "a checkpoint of another model"),
    ];
    for (bytes, problem) in cases {
        std::fs::write(&model, bytes).unwrap();
        refused(dir, &with(&["score", &cnn], &t), &["ckpt/demo_dual_branch_cnn/last/model.bpk", problem]);
    }
    std::fs::remove_file(&model).unwrap();
    refused(dir, &with(&["score", &cnn], &t), &["model.bpk", "does not exist"]);
    std::fs::write(&model, &good).unwrap();
    accepted(dir, &with(&["score", &cnn], &t));
    // Resuming from a damaged optimizer state or training state.
    let last = dir.join("ckpt/demo_dual_branch_cnn/last");
    let resume_args = with(&["train", &cnn, "--resume", "--set", "train.max_steps=3"], &t);
    let optim = std::fs::read(last.join("optim.bpk")).unwrap();
    std::fs::write(last.join("optim.bpk"), &optim[..10]).unwrap();
    refused(dir, &resume_args, &["optim.bpk", "truncated"]);
    std::fs::write(last.join("optim.bpk"), &optim).unwrap();
    let state = std::fs::read(last.join("state.json")).unwrap();
    std::fs::write(last.join("state.json"), "{").unwrap();
    refused(dir, &resume_args, &["state.json", "not a valid training state"]);
    std::fs::write(last.join("state.json"), &state).unwrap();
    accepted(dir, &resume_args);
}

fn walk_find(dir: &Path, name: &str) -> PathBuf {
    files(dir).into_iter().find(|p| p.file_name().is_some_and(|n| n == name)).expect("file below the run")
}

/// A checkpoint is read by parsing its pickle opcodes, never by running
/// them: a pickle whose `cfg` would call `os.system("touch PICKLE_EXECUTED")`
/// when unpickled is refused as a malformed configuration, and the file the
/// command would create never appears.
#[test]
fn a_pickle_that_would_run_code_is_never_executed() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let clip = fixture("shared/audio/clip_b_chirp_noise.wav");
    for file in ["evil_zip.pt", "evil_legacy.pt"] {
        let ck = fixture(&format!("robustness/{file}"));
        for model in ["beats", "eat"] {
            let args = ["embed", "--model", model, "--checkpoint", s(&ck), "--wav", s(&clip), "--out", "e.npy"];
            refused(dir, &args, &[file]);
            assert!(!dir.join("PICKLE_EXECUTED").exists(), "{model} loader executed the pickle in {file}");
        }
    }
    let (_, err) = run_in(dir, &["embed", "--model", "beats", "--checkpoint", s(&fixture("robustness/evil_zip.pt"))]);
    assert!(!err.contains("panicked"));
}

#[test]
fn outputs_are_never_left_half_written() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // A write that fails midway (the file-size limit stands in for a full
    // disk): a clear error and no partial file. SIGXFSZ is ignored so that
    // the write returns an error instead of killing the process.
    std::fs::write(dir.join("clip.wav"), pcm16(&tone(32_000))).unwrap();
    let limited = Command::new("sh")
        .current_dir(dir)
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f 16; exec '{}' features --kind logmel --preset nf_cdee --wav clip.wav \
             --out out/clip.npy --quiet",
            env!("CARGO_BIN_EXE_asd")
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&limited.stderr);
    assert_eq!(limited.status.code(), Some(2), "{err}");
    assert!(err.starts_with("error: failed to write out/clip.npy") && err.lines().count() == 1, "{err}");
    assert!(files(&dir.join("out")).is_empty(), "a partial file was left: {:?}", files(&dir.join("out")));

    // synth never writes over a data set, and its output appears whole.
    std::fs::write(dir.join("a_file"), "x").unwrap();
    let synth_args = |out: &str, train: &str| {
        ["synth", "--out", out, "--machines", "fan", "--seconds", "1", "--train-source", train, "--train-target", "1"]
            .iter()
            .chain(&["--test-per-cell", "1"])
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
    };
    refused(dir, &strs(&synth_args("a_file", "1")), &["a_file", "not a folder"]);
    accepted(dir, &strs(&synth_args("root", "1")));
    refused(dir, &strs(&synth_args("root", "1")), &["root/dev_data", "--overwrite"]);
    let before = files(&dir.join("root")).len();
    let mut again = synth_args("root", "2");
    again.push("--overwrite".into());
    accepted(dir, &strs(&again));
    assert_eq!(files(&dir.join("root")).len(), before + 1, "the replaced set should hold exactly the new clips");
    let names: Vec<_> = std::fs::read_dir(dir.join("root")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("dev_data")], "staging folders left behind");
}

#[test]
fn broken_member_scores_are_refused_by_fuse_and_a_broken_run_record_by_report() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let names: Vec<String> = (0..6).map(|i| format!("section_00_test_{i:04}.wav")).collect();
    let write = |run: &Path, member: &str, machine: &str, bump: f64| {
        let m = run.join("members").join(member);
        std::fs::create_dir_all(&m).unwrap();
        let rows: String = names.iter().enumerate().map(|(i, n)| format!("{n},{}\n", i as f64 * 0.5 + bump)).collect();
        std::fs::write(m.join(format!("anomaly_score_{machine}_section_00_test.csv")), rows).unwrap();
        let rows: String = (0..5).map(|i| format!("section_00_train_{i:04}.wav,{}\n", i as f64 * 0.3 + bump)).collect();
        std::fs::write(m.join(format!("train_score_{machine}_section_00.csv")), rows).unwrap();
    };
    let sys = serde_json::json!({
        "name": "pair",
        "members": {"a": "a.json", "b": "b.json"},
        "weights": {"default": {"a": 0.5, "b": 0.5}}
    });
    std::fs::write(dir.join("pair.json"), sys.to_string()).unwrap();
    let fresh = |case: &str| -> PathBuf {
        let run = dir.join(case);
        for (m, bump) in [("a", 0.0), ("b", 1.0)] {
            write(&run, m, "fan", bump);
        }
        run
    };
    accepted(dir, &["fuse", "pair.json", "--run", s(&fresh("good")), "--out", "fused_good"]);
    let test_csv = "members/a/anomaly_score_fan_section_00_test.csv";
    let train_csv = "members/b/train_score_fan_section_00.csv";
    let cases: [(&str, &str, Option<&str>, &str); 4] = [
        ("nan_test", test_csv, Some("section_00_test_0000.wav,nan\n"), "is not finite"),
        ("nan_train", train_csv, Some("section_00_train_0000.wav,NaN\n"), "is not finite"),
        ("no_train", train_csv, None, "train_score_fan_section_00.csv"),
        ("no_test", test_csv, None, "no scores of fan"),
    ];
    for (case, file, content, problem) in cases {
        let run = fresh(case);
        match content {
            Some(text) => std::fs::write(run.join(file), text).unwrap(),
            None => std::fs::remove_file(run.join(file)).unwrap(),
        }
        let out = format!("fused_{case}");
        let named = if content.is_some() { file } else { "members/" };
        refused(dir, &["fuse", "pair.json", "--run", s(&run), "--out", &out], &[named, problem]);
    }
    // `asd report` needs the run record a system run wrote.
    std::fs::create_dir(dir.join("not_a_run")).unwrap();
    refused(dir, &["report", "not_a_run"], &["not_a_run", "run_record.json"]);
    std::fs::write(dir.join("not_a_run/run_record.json"), "{\"stages\": 3").unwrap();
    refused(dir, &["report", "not_a_run"], &["run_record.json"]);
}
