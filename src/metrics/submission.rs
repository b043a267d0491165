//! DCASE 2024 Task 2 submission files (dcase2024.md §3), per machine type:
//!
//! ```text
//! anomaly_score_<machine>_section_00_test.csv     <clip>.wav,<score>   (no header)
//! decision_result_<machine>_section_00_test.csv   <clip>.wav,<0|1>     (1 = anomaly)
//! ```
//!
//! [`write_submission`] is the one writer every scoring path uses. The
//! readers are strict where the official evaluator is not (it sorts rows and
//! aligns them by position, never comparing names, and crashes on a header):
//! a header row, a wrong column count, an empty name, a non-numeric, NaN or
//! infinite score, a decision other than 0/1, a duplicated name and an empty
//! file are errors naming the file and the 1-based row. Rows are joined to
//! the ground truth by name ([`MachineTruth::align`]). LF or CRLF.
//!
//! As the evaluator, the lookup falls back to the baseline's file names
//! `anomaly_score_DCASE2024T2<machine>_section_00_test_seed<seed><tag>_Eval.csv`.
//!
//! [`MachineTruth::align`]: super::ground_truth::MachineTruth::align

use super::ground_truth::{csv_rows, read_text};
use crate::util::atomic;
use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// `anomaly_score_<machine>_section_00_test.csv`.
pub fn score_file_name(machine: &str) -> String {
    format!("anomaly_score_{machine}_section_00_test.csv")
}

/// `decision_result_<machine>_section_00_test.csv`.
pub fn decision_file_name(machine: &str) -> String {
    format!("decision_result_{machine}_section_00_test.csv")
}

/// Finds a file of `kind` (`anomaly_score` or `decision_result`) for
/// `machine` in `dir`: the official name, else a single baseline-style
/// `<kind>_DCASE2024T2<machine>_section_00_test_seed*_Eval.csv`.
fn find_file(dir: &Path, kind: &str, machine: &str) -> Result<Option<PathBuf>> {
    let official = dir.join(format!("{kind}_{machine}_section_00_test.csv"));
    if official.is_file() {
        return Ok(Some(official));
    }
    let prefix = format!("{kind}_DCASE2024T2{machine}_section_00_test_seed");
    let mut found: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(&prefix) && n.ends_with("_Eval.csv")
            })
            .map(|e| e.path())
            .collect(),
        Err(_) => Vec::new(),
    };
    found.sort();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => bail!(
            "several baseline-style {kind} files for {machine} in {}: {}",
            dir.display(),
            found.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The anomaly-score file of `machine` in `dir`, if any.
pub fn find_score_file(dir: &Path, machine: &str) -> Result<Option<PathBuf>> {
    find_file(dir, "anomaly_score", machine)
}

/// The decision file of `machine` in `dir`, if any.
pub fn find_decision_file(dir: &Path, machine: &str) -> Result<Option<PathBuf>> {
    find_file(dir, "decision_result", machine)
}

/// Machine types that have an anomaly-score file in `dir` (official or
/// baseline-style name), sorted.
pub fn machines_with_scores(dir: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("cannot list {}: {e}", dir.display()))?;
    let mut out: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let rest = n.strip_prefix("anomaly_score_")?;
            let m = match rest.strip_suffix("_section_00_test.csv") {
                Some(m) => m,
                None => {
                    let m = rest.strip_prefix("DCASE2024T2")?;
                    let (m, tail) = m.split_once("_section_00_test_seed")?;
                    tail.ends_with("_Eval.csv").then_some(m)?
                }
            };
            (!m.is_empty() && !m.contains('_')).then(|| m.to_string())
        })
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// Checks the common row shape; returns (row, name, value text).
fn rows_of(path: &Path) -> Result<Vec<(usize, String, String)>> {
    let rows = csv_rows(&read_text(path)?).with_context(|| path.display().to_string())?;
    if rows.is_empty() {
        bail!("{} is empty: expected one row '<clip>.wav,<value>' per test clip", path.display());
    }
    let mut out = Vec::with_capacity(rows.len());
    for (r, f) in rows {
        if f.len() == 1 && f[0].is_empty() {
            bail!("{} row {r}: empty line", path.display());
        }
        if f.len() != 2 {
            bail!("{} row {r}: expected 2 columns '<clip>.wav,<value>', found {}", path.display(), f.len());
        }
        let [name, value]: [String; 2] = f.try_into().unwrap();
        if name.is_empty() {
            bail!("{} row {r}: empty clip name", path.display());
        }
        out.push((r, name, value));
    }
    Ok(out)
}

fn check_duplicates<T>(path: &Path, rows: &[(usize, String, T)]) -> Result<()> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (r, name, _) in rows {
        if let Some(first) = seen.insert(name, *r) {
            bail!("{} row {r}: clip '{name}' already given in row {first}", path.display());
        }
    }
    Ok(())
}

fn header_hint(r: usize, value: &str) -> &'static str {
    if r == 1 && value.chars().any(|c| c.is_ascii_alphabetic()) {
        " (a header row? submission files have no header)"
    } else {
        ""
    }
}

/// Reads an anomaly-score file: `(clip name, score)` in file order.
pub fn read_scores(path: &Path) -> Result<Vec<(String, f64)>> {
    let rows = rows_of(path)?;
    let mut parsed = Vec::with_capacity(rows.len());
    for (r, name, value) in rows {
        let Ok(v) = value.parse::<f64>() else {
            bail!("{} row {r}: score '{value}' is not a number{}", path.display(), header_hint(r, &value));
        };
        if !v.is_finite() {
            bail!("{} row {r}: score '{value}' is not finite", path.display());
        }
        parsed.push((r, name, v));
    }
    check_duplicates(path, &parsed)?;
    Ok(parsed.into_iter().map(|(_, n, v)| (n, v)).collect())
}

/// Reads a decision file: `(clip name, 0|1)` in file order. `0`, `1`,
/// `0.0` and `1.0` are accepted.
pub fn read_decisions(path: &Path) -> Result<Vec<(String, u8)>> {
    let rows = rows_of(path)?;
    let mut parsed = Vec::with_capacity(rows.len());
    for (r, name, value) in rows {
        let Some(v) = value.parse::<f64>().ok().filter(|&x| x == 0.0 || x == 1.0) else {
            bail!("{} row {r}: decision '{value}' is neither 0 nor 1{}", path.display(), header_hint(r, &value));
        };
        let v = v as u8;
        parsed.push((r, name, v));
    }
    check_duplicates(path, &parsed)?;
    Ok(parsed.into_iter().map(|(_, n, v)| (n, v)).collect())
}

/// Writes both submission files of `machine` into `dir` atomically, in the
/// official format (no header, `name,value`, LF, scores in shortest
/// round-trip form). `decisions` must name the same clips in the same order
/// as `scores`. Names must be non-empty and free of `,`, quotes and line
/// breaks; scores finite; decisions 0 or 1.
pub fn write_submission(dir: &Path, machine: &str, scores: &[(String, f64)], decisions: &[(String, u8)]) -> Result<()> {
    if machine.is_empty() || machine.contains(['_', '/', '\\']) {
        bail!("machine type '{machine}' cannot appear in a submission file name");
    }
    if scores.is_empty() {
        bail!("no scores to write for {machine}");
    }
    if decisions.len() != scores.len() {
        bail!("{machine}: {} scores but {} decisions", scores.len(), decisions.len());
    }
    let mut seen = std::collections::HashSet::new();
    let (mut s_text, mut d_text) = (String::new(), String::new());
    for (i, ((name, score), (dname, dec))) in scores.iter().zip(decisions).enumerate() {
        if name.is_empty() || name.contains([',', '"', '\n', '\r']) || name.trim() != name {
            bail!("{machine}: clip name {name:?} cannot be written to a submission CSV");
        }
        if dname != name {
            bail!("{machine}: decision {} is for '{dname}' but score {} is for '{name}'", i + 1, i + 1);
        }
        if !seen.insert(name.as_str()) {
            bail!("{machine}: clip '{name}' appears twice");
        }
        if !score.is_finite() {
            bail!("{machine}: score of '{name}' is {score}");
        }
        if *dec > 1 {
            bail!("{machine}: decision of '{name}' is {dec}, not 0 or 1");
        }
        // `{:?}` is the shortest representation that parses back to the same
        // f64 (exponent form for very small/large magnitudes).
        writeln!(s_text, "{name},{score:?}").unwrap();
        writeln!(d_text, "{name},{dec}").unwrap();
    }
    atomic::write_with(&dir.join(score_file_name(machine)), |w| Ok(w.write_all(s_text.as_bytes())?))?;
    atomic::write_with(&dir.join(decision_file_name(machine)), |w| Ok(w.write_all(d_text.as_bytes())?))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Every bad input names the file and, where a row exists, the row.
    #[test]
    fn bad_score_files() {
        let d = tempfile::tempdir().unwrap();
        let cases: [(&str, &str, &str); 9] = [
            ("header", "file,score\na.wav,1.0\n", "row 1: score 'score' is not a number (a header row?"),
            ("nan", "a.wav,1.0\nb.wav,NaN\n", "row 2: score 'NaN' is not finite"),
            ("inf", "a.wav,inf\n", "row 1: score 'inf' is not finite"),
            ("neg_inf", "a.wav,0\nb.wav,2\nc.wav,-infinity\n", "row 3: score '-infinity' is not finite"),
            ("text", "a.wav,0.5\nb.wav,abc\n", "row 2: score 'abc' is not a number"),
            ("dup", "a.wav,0.5\nb.wav,0.1\na.wav,0.2\n", "row 3: clip 'a.wav' already given in row 1"),
            ("columns", "a.wav,0.5\nb.wav,0.1,7\n", "row 2: expected 2 columns"),
            ("blank", "a.wav,0.5\n\nb.wav,0.1\n", "row 2: empty line"),
            ("empty", "", "is empty"),
        ];
        for (tag, text, want) in cases {
            let p = file(d.path(), &format!("anomaly_score_{tag}_section_00_test.csv"), text);
            let e = format!("{:#}", read_scores(&p).unwrap_err());
            assert!(e.contains(&p.display().to_string()), "{tag}: {e}");
            assert!(e.contains(want), "{tag}: {e}");
        }
    }

    #[test]
    fn bad_decision_files() {
        let d = tempfile::tempdir().unwrap();
        let cases: [(&str, &str, &str); 4] = [
            ("two", "a.wav,1\nb.wav,2\n", "row 2: decision '2' is neither 0 nor 1"),
            ("half", "a.wav,0.5\n", "row 1: decision '0.5' is neither 0 nor 1"),
            ("header", "file,decision\na.wav,1\n", "row 1: decision 'decision' is neither 0 nor 1 (a header row?"),
            ("dup", "a.wav,1\na.wav,0\n", "row 2: clip 'a.wav' already given in row 1"),
        ];
        for (tag, text, want) in cases {
            let p = file(d.path(), &format!("decision_result_{tag}_section_00_test.csv"), text);
            let e = format!("{:#}", read_decisions(&p).unwrap_err());
            assert!(e.contains(&p.display().to_string()) && e.contains(want), "{tag}: {e}");
        }
        let p = file(d.path(), "ok.csv", "a.wav,1\r\nb.wav,0\r\nc.wav,1.0\r\n");
        assert_eq!(read_decisions(&p).unwrap(), [("a.wav".into(), 1), ("b.wav".into(), 0), ("c.wav".into(), 1)]);
    }

    /// Missing and extra names are found when joining to the ground truth.
    #[test]
    fn join_by_name_errors() {
        use crate::metrics::ground_truth::MachineTruth;
        let d = tempfile::tempdir().unwrap();
        let truth = MachineTruth::new(vec![
            ("a.wav".into(), false, false),
            ("b.wav".into(), true, false),
            ("c.wav".into(), false, true),
        ])
        .unwrap();
        let p = file(d.path(), "anomaly_score_M_section_00_test.csv", "c.wav,3\na.wav,1\n");
        let e = format!("{:#}", truth.align(&read_scores(&p).unwrap(), &p).unwrap_err());
        assert!(
            e.contains(&p.display().to_string()) && e.contains("no row for 1 of the 3") && e.contains("b.wav"),
            "{e}"
        );
        let p = file(d.path(), "anomaly_score_M_section_00_test.csv", "c.wav,3\na.wav,1\nb.wav,2\nzzz.wav,4\n");
        let e = format!("{:#}", truth.align(&read_scores(&p).unwrap(), &p).unwrap_err());
        assert!(e.contains(&format!("{} row 4: clip 'zzz.wav' is not in the ground truth", p.display())), "{e}");
        let p = file(
            d.path(),
            "anomaly_score_M_section_00_test.csv",
            "\u{feff}c.wav, 3\r\na.wav,\"1\"\r\nb.wav,2e0\r\n\r\n",
        );
        assert_eq!(truth.align(&read_scores(&p).unwrap(), &p).unwrap(), [1.0, 2.0, 3.0]);
    }

    #[test]
    fn write_then_read_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let values = [
            0.1,
            -0.0,
            1.0 / 3.0,
            1e12 + 0.01,
            5e-324,
            f64::MAX,
            -1.2345678901234567e-7,
            std::f64::consts::PI * 1e20,
            0.30000000000000004,
        ];
        let scores: Vec<(String, f64)> =
            values.iter().enumerate().map(|(i, &v)| (format!("section_00_{i:04}.wav"), v)).collect();
        let decisions: Vec<(String, u8)> = scores.iter().map(|(n, v)| (n.clone(), (*v > 0.2) as u8)).collect();
        write_submission(d.path(), "MachA", &scores, &decisions).unwrap();
        let back = read_scores(&d.path().join(score_file_name("MachA"))).unwrap();
        assert_eq!(back.len(), scores.len());
        for ((n0, v0), (n1, v1)) in scores.iter().zip(&back) {
            assert_eq!(n0, n1);
            assert_eq!(v0.to_bits(), v1.to_bits(), "{v0} -> {v1}");
        }
        assert_eq!(read_decisions(&d.path().join(decision_file_name("MachA"))).unwrap(), decisions);
        assert_eq!(machines_with_scores(d.path()).unwrap(), ["MachA"]);
        // Invalid inputs are refused before anything is written.
        let bad = [("x,y.wav".to_string(), 1.0)];
        assert!(write_submission(d.path(), "MachB", &bad, &[("x,y.wav".into(), 0)]).is_err());
        assert!(write_submission(d.path(), "MachB", &[("a.wav".into(), f64::NAN)], &[("a.wav".into(), 0)]).is_err());
        assert!(write_submission(d.path(), "MachB", &[("a.wav".into(), 1.0)], &[("b.wav".into(), 0)]).is_err());
        assert!(write_submission(d.path(), "MachB", &[("a.wav".into(), 1.0)], &[("a.wav".into(), 2)]).is_err());
        assert!(write_submission(d.path(), "Mach_B", &[("a.wav".into(), 1.0)], &[("a.wav".into(), 0)]).is_err());
        assert_eq!(machines_with_scores(d.path()).unwrap(), ["MachA"]);
    }

    #[test]
    fn baseline_style_names_are_found() {
        let d = tempfile::tempdir().unwrap();
        file(d.path(), "anomaly_score_DCASE2024T2fan_section_00_test_seed13711_id(0_)_Eval.csv", "a.wav,1\n");
        file(d.path(), "decision_result_DCASE2024T2fan_section_00_test_seed13711_id(0_)_Eval.csv", "a.wav,1\n");
        assert_eq!(machines_with_scores(d.path()).unwrap(), ["fan"]);
        assert!(find_score_file(d.path(), "fan").unwrap().is_some());
        assert!(find_decision_file(d.path(), "fan").unwrap().is_some());
        assert!(find_score_file(d.path(), "valve").unwrap().is_none());
    }
}
