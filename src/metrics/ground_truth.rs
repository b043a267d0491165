//! Ground truth for `asd evaluate`: which test clip is anomalous and which
//! lies in the target domain, per machine type.
//!
//! Two sources, detected automatically ([`GroundTruth::load`]):
//!
//! * **An official ground-truth folder** (dcase2024.md §2.9), as the
//!   official evaluator repository publishes it for the evaluation set:
//!   `ground_truth_data/ground_truth_<m>_section_00_test.csv` (`name,0|1`,
//!   1 = anomaly), `ground_truth_domain/…` (`name,0|1`, 1 = target), and
//!   optionally `ground_truth_attributes/…` (`name,<original name without
//!   .wav>[,…]`), which lets submissions name clips by their original names
//!   as the evaluator allows. No header, LF or CRLF.
//! * **A data root in the DCASE layout**: for the development set the
//!   labels and domains come from the test file names
//!   (`dev_data/raw/<m>/test/section_00_<domain>_test_<label>_…wav`); for the
//!   evaluation set, whose test names are anonymised, from the official
//!   folder `<root>/eval_data/ground_truth/` (which `asd synth --split eval`
//!   writes, and where a user can copy the official files).

use crate::data::machines::DataSet;
use crate::data::naming::{Domain, Label, Split};
use crate::data::{Dataset, synth};
use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Ground truth of one machine type; clips sorted by name.
#[derive(Debug, Clone, Default)]
pub struct MachineTruth {
    /// Clip file names as submissions name them (`section_00_0001.wav` on
    /// the evaluation set, the full labelled name on the development set).
    pub names: Vec<String>,
    pub is_anomaly: Vec<bool>,
    pub is_target: Vec<bool>,
    index: HashMap<String, usize>,
    /// Alternative names (original attribute-style names) → clip index.
    aliases: HashMap<String, usize>,
}

/// Where a [`GroundTruth`] was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TruthSource {
    /// An official `ground_truth_data/` + `ground_truth_domain/` folder.
    OfficialFolder(PathBuf),
    /// Labelled test file names of a data root's set.
    FileNames { root: PathBuf, set: DataSet },
}

/// Ground truth of every machine type found, sorted by machine name.
#[derive(Debug, Clone)]
pub struct GroundTruth {
    pub source: TruthSource,
    pub machines: BTreeMap<String, MachineTruth>,
}

impl MachineTruth {
    /// Builds the truth of one machine from `(name, is_anomaly, is_target)`
    /// rows; duplicate names are an error.
    pub fn new(mut rows: Vec<(String, bool, bool)>) -> Result<MachineTruth> {
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = rows.windows(2).find(|w| w[0].0 == w[1].0) {
            bail!("clip '{}' is listed twice", w[0].0);
        }
        let mut t = MachineTruth::default();
        for (i, (name, a, d)) in rows.into_iter().enumerate() {
            t.index.insert(name.clone(), i);
            t.names.push(name);
            t.is_anomaly.push(a);
            t.is_target.push(d);
        }
        Ok(t)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Position of a clip, by its name or an alias.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).or_else(|| self.aliases.get(name)).copied()
    }

    /// Joins submission rows to the clips **by name** and returns the values
    /// in clip order. A name that is neither a clip nor an alias, a clip
    /// named twice (also through an alias) and a clip without a row are
    /// errors naming `file` and the 1-based row.
    pub fn align<T: Copy>(&self, rows: &[(String, T)], file: &Path) -> Result<Vec<T>> {
        let mut out: Vec<Option<(T, usize)>> = vec![None; self.len()];
        for (r, (name, value)) in rows.iter().enumerate() {
            let Some(i) = self.position(name) else {
                bail!(
                    "{} row {}: clip '{name}' is not in the ground truth ({} clips, e.g. '{}')",
                    file.display(),
                    r + 1,
                    self.len(),
                    self.names.first().map(String::as_str).unwrap_or("")
                );
            };
            if let Some((_, first)) = out[i] {
                bail!(
                    "{} row {}: clip '{}' already given in row {first}{}",
                    file.display(),
                    r + 1,
                    self.names[i],
                    if name != &self.names[i] { format!(" (row {} names it '{name}')", r + 1) } else { String::new() }
                );
            }
            out[i] = Some((*value, r + 1));
        }
        let missing: Vec<&str> =
            out.iter().zip(&self.names).filter(|(v, _)| v.is_none()).map(|(_, n)| n.as_str()).collect();
        if !missing.is_empty() {
            let shown: Vec<&str> = missing.iter().take(3).copied().collect();
            bail!(
                "{}: no row for {} of the {} ground-truth clips ({}{}); the file has {} rows",
                file.display(),
                missing.len(),
                self.len(),
                shown.join(", "),
                if missing.len() > shown.len() { ", …" } else { "" },
                rows.len()
            );
        }
        Ok(out.into_iter().map(|v| v.unwrap().0).collect())
    }
}

/// Whether a set of a data root has test labels: dev names carry them; an
/// evaluation set has them only with its ground-truth folder.
pub fn has_test_labels(root: &Path, set: DataSet) -> bool {
    match set {
        DataSet::Dev => true,
        DataSet::Eval => synth::ground_truth_dir(root).join("ground_truth_data").is_dir(),
    }
}

impl GroundTruth {
    /// The ground truth of the sets of a data root whose test labels are
    /// known (None when none is).
    pub fn labelled(root: &Path, sets: &[DataSet]) -> Result<Option<GroundTruth>> {
        let mut all: Option<GroundTruth> = None;
        for &set in sets.iter().filter(|&&s| has_test_labels(root, s)) {
            let t = GroundTruth::load(root, Some(set))?;
            match &mut all {
                None => all = Some(t),
                Some(a) => a.machines.extend(t.machines),
            }
        }
        Ok(all)
    }

    /// Loads ground truth from `path`: an official ground-truth folder (it
    /// contains `ground_truth_data/`) or a data root (it contains
    /// `dev_data/` or `eval_data/`). `set` picks the set of a data root; it
    /// may be left out when the root holds ground truth for one set only.
    pub fn load(path: &Path, set: Option<DataSet>) -> Result<GroundTruth> {
        if !path.is_dir() {
            bail!("ground truth {} is not a folder", path.display());
        }
        if path.join("ground_truth_data").is_dir() {
            if set.is_some() {
                bail!(
                    "{} is an official ground-truth folder; a set (dev/eval) applies only to a data root",
                    path.display()
                );
            }
            return Self::from_official_dir(path);
        }
        let has = |s: DataSet| path.join(s.dir_name()).is_dir();
        if !has(DataSet::Dev) && !has(DataSet::Eval) {
            bail!(
                "{} is neither an official ground-truth folder (with ground_truth_data/ and ground_truth_domain/) \
                 nor a data root (with dev_data/ or eval_data/)",
                path.display()
            );
        }
        let set = match set {
            Some(s) => s,
            None if has(DataSet::Dev) && has(DataSet::Eval) => bail!(
                "data root {} holds both dev_data/ and eval_data/: choose the ground truth with --set dev or --set eval",
                path.display()
            ),
            None if has(DataSet::Dev) => DataSet::Dev,
            None => DataSet::Eval,
        };
        Self::from_data_root(path, set)
    }

    /// Ground truth of one set of a data root.
    pub fn from_data_root(root: &Path, set: DataSet) -> Result<GroundTruth> {
        if set == DataSet::Eval {
            let gt = synth::ground_truth_dir(root);
            if gt.join("ground_truth_data").is_dir() {
                return Self::from_official_dir(&gt);
            }
        }
        let ds = Dataset::scan(root, &[set], None)?;
        let mut machines = BTreeMap::new();
        for m in ds.machines() {
            let mut rows = Vec::new();
            for c in ds.clips(&m, Split::Test) {
                let (Some(label), Some(domain)) = (c.label(), c.domain()) else {
                    bail!(
                        "{} is an anonymised test clip: its label is not in its name. Put the official ground truth \
                         (ground_truth_data/, ground_truth_domain/) under {} or pass that folder as the ground truth",
                        c.path.display(),
                        synth::ground_truth_dir(root).display()
                    );
                };
                rows.push((c.file_name(), label == Label::Anomaly, domain == Domain::Target));
            }
            if rows.is_empty() {
                continue;
            }
            let t = MachineTruth::new(rows).with_context(|| format!("test clips of {m} under {}", root.display()))?;
            machines.insert(m, t);
        }
        if machines.is_empty() {
            bail!("no test clips under {}/{}/raw/<machine>/test/", root.display(), set.dir_name());
        }
        Ok(GroundTruth { source: TruthSource::FileNames { root: root.to_path_buf(), set }, machines })
    }

    /// Reads an official ground-truth folder.
    pub fn from_official_dir(dir: &Path) -> Result<GroundTruth> {
        let data_dir = dir.join("ground_truth_data");
        let domain_dir = dir.join("ground_truth_domain");
        let attr_dir = dir.join("ground_truth_attributes");
        if !domain_dir.is_dir() {
            bail!("{} has ground_truth_data/ but no ground_truth_domain/", dir.display());
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&data_dir)
            .with_context(|| format!("cannot list {}", data_dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "csv"))
            .collect();
        files.sort();
        let mut machines = BTreeMap::new();
        for path in files {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let machine = parse_gt_file_name(&file).with_context(|| format!("in {}", data_dir.display()))?;
            let labels = read_binary_csv(&path)?;
            let dpath = domain_dir.join(&file);
            if !dpath.is_file() {
                bail!("{} has no domain file {}", path.display(), dpath.display());
            }
            let domains: HashMap<String, bool> = read_binary_csv(&dpath)?.into_iter().collect();
            let mut rows = Vec::with_capacity(labels.len());
            for (name, a) in &labels {
                let Some(&d) = domains.get(name) else {
                    bail!("clip '{name}' of {} is missing from {}", path.display(), dpath.display());
                };
                rows.push((name.clone(), *a, d));
            }
            if domains.len() != labels.len() {
                let names: std::collections::HashSet<&String> = labels.iter().map(|(n, _)| n).collect();
                // Both files are free of duplicates (read_binary_csv) and every
                // label row has a domain, so the domain file has an extra clip.
                let extra = domains.keys().find(|n| !names.contains(n)).expect("an extra domain row");
                bail!("clip '{extra}' of {} is missing from {}", dpath.display(), path.display());
            }
            let mut t = MachineTruth::new(rows).with_context(|| format!("in {}", path.display()))?;
            let apath = attr_dir.join(&file);
            if apath.is_file() {
                for (alias, anon) in read_attribute_csv(&apath)? {
                    if let Some(&i) = t.index.get(&anon) {
                        t.aliases.entry(alias).or_insert(i);
                    }
                }
            }
            machines.insert(machine, t);
        }
        if machines.is_empty() {
            bail!("no ground_truth_<machine>_section_00_test.csv files in {}", data_dir.display());
        }
        Ok(GroundTruth { source: TruthSource::OfficialFolder(dir.to_path_buf()), machines })
    }

    /// Machine names, sorted.
    pub fn machine_names(&self) -> Vec<String> {
        self.machines.keys().cloned().collect()
    }
}

/// `ground_truth_<machine>_section_00_test.csv` → machine.
fn parse_gt_file_name(file: &str) -> Result<String> {
    let bad = || {
        anyhow::anyhow!(
            "unexpected file '{file}': ground-truth files are named ground_truth_<machine>_section_00_test.csv"
        )
    };
    let rest = file.strip_prefix("ground_truth_").ok_or_else(bad)?;
    let rest = rest.strip_suffix("_test.csv").ok_or_else(bad)?;
    let (machine, section) = rest.split_once("_section_").ok_or_else(bad)?;
    if machine.is_empty() || machine.contains('_') {
        return Err(bad());
    }
    if section != "00" {
        bail!("'{file}': only section 00 exists in DCASE 2024 Task 2");
    }
    Ok(machine.to_string())
}

/// Parses a CSV text into rows of trimmed fields (RFC 4180 quoting through
/// the `csv` crate; `\n` or `\r\n` line ends, blank lines skipped, a UTF-8
/// BOM skipped, rows of any width); a blank line before the last row is an
/// error (a hand-edited file lost a row?). Returns (1-based line, fields).
pub(crate) fn csv_rows(text: &str) -> Result<Vec<(usize, Vec<String>)>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.lines().collect();
    let last = lines.iter().rposition(|l| !l.trim().is_empty()).unwrap_or(0);
    if let Some(i) = lines[..last].iter().position(|l| l.trim().is_empty()) {
        bail!("row {}: empty line", i + 1);
    }
    let mut reader =
        csv::ReaderBuilder::new().has_headers(false).flexible(true).trim(csv::Trim::All).from_reader(text.as_bytes());
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| anyhow::anyhow!("malformed CSV: {e}"))?;
        let line = record.position().map_or(rows.len() + 1, |p| p.line() as usize);
        if record.len() == 1 && record[0].is_empty() {
            continue; // trailing white space
        }
        rows.push((line, record.iter().map(str::to_string).collect()));
    }
    Ok(rows)
}

pub(crate) fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", path.display()))
}

/// `name,0|1` rows.
fn read_binary_csv(path: &Path) -> Result<Vec<(String, bool)>> {
    let rows = csv_rows(&read_text(path)?).with_context(|| path.display().to_string())?;
    if rows.is_empty() {
        bail!("{} is empty", path.display());
    }
    let mut out = Vec::with_capacity(rows.len());
    let mut seen = HashMap::new();
    for (r, f) in rows {
        if f.len() != 2 {
            bail!("{} row {r}: expected 2 columns (name,0|1), found {}", path.display(), f.len());
        }
        let v = match f[1].as_str() {
            "0" => false,
            "1" => true,
            other => bail!("{} row {r}: value '{other}' is neither 0 nor 1", path.display()),
        };
        if f[0].is_empty() {
            bail!("{} row {r}: empty clip name", path.display());
        }
        if let Some(first) = seen.insert(f[0].clone(), r) {
            bail!("{} row {r}: clip '{}' already listed in row {first}", path.display(), f[0]);
        }
        out.push((f[0].clone(), v));
    }
    Ok(out)
}

/// `anon,original_without_wav[,…]` → (original.wav, anon).
fn read_attribute_csv(path: &Path) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (r, f) in csv_rows(&read_text(path)?).with_context(|| path.display().to_string())? {
        if f.len() < 2 || f[0].is_empty() || f[1].is_empty() {
            bail!("{} row {r}: expected anonymised_name,original_name[,...]", path.display());
        }
        out.push((format!("{}.wav", f[1]), f[0].clone()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, s: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    }

    #[test]
    fn official_folder_with_aliases() {
        let d = tempfile::tempdir().unwrap();
        let g = d.path();
        write(&g.join("ground_truth_data/ground_truth_MachA_section_00_test.csv"), "c2.wav,1\r\nc1.wav,0\r\n");
        write(&g.join("ground_truth_domain/ground_truth_MachA_section_00_test.csv"), "c1.wav,1\nc2.wav,0\n");
        write(
            &g.join("ground_truth_attributes/ground_truth_MachA_section_00_test.csv"),
            "c1.wav,orig_1\nc2.wav,orig_2,x.wav\n",
        );
        let t = GroundTruth::load(g, None).unwrap();
        let m = &t.machines["MachA"];
        assert_eq!(m.names, ["c1.wav", "c2.wav"]);
        assert_eq!(m.is_anomaly, [false, true]);
        assert_eq!(m.is_target, [true, false]);
        assert_eq!(m.position("orig_2.wav"), Some(1));
        let v = m.align(&[("orig_2.wav".into(), 2.0), ("c1.wav".into(), 1.0)], Path::new("s.csv")).unwrap();
        assert_eq!(v, [1.0, 2.0]);
        let e = m.align(&[("orig_2.wav".into(), 2.0), ("c2.wav".into(), 1.0)], Path::new("s.csv")).unwrap_err();
        assert!(e.to_string().contains("s.csv row 2: clip 'c2.wav' already given in row 1"), "{e}");
    }

    #[test]
    fn official_folder_errors() {
        let d = tempfile::tempdir().unwrap();
        let g = d.path();
        let data = g.join("ground_truth_data/ground_truth_M_section_00_test.csv");
        let dom = g.join("ground_truth_domain/ground_truth_M_section_00_test.csv");
        write(&data, "a.wav,1\nb.wav,2\n");
        write(&dom, "a.wav,0\nb.wav,1\n");
        let e = format!("{:#}", GroundTruth::load(g, None).unwrap_err());
        assert!(e.contains("ground_truth_M_section_00_test.csv row 2: value '2'"), "{e}");
        write(&data, "a.wav,1\nb.wav,0\n");
        write(&dom, "a.wav,0\n");
        let e = format!("{:#}", GroundTruth::load(g, None).unwrap_err());
        assert!(e.contains("clip 'b.wav'") && e.contains("missing from"), "{e}");
        write(&dom, "a.wav,0\nb.wav,1\n");
        write(&g.join("ground_truth_data/notes.csv"), "x");
        let e = format!("{:#}", GroundTruth::load(g, None).unwrap_err());
        assert!(e.contains("unexpected file 'notes.csv'"), "{e}");
        assert!(GroundTruth::load(&g.join("nope"), None).is_err());
    }

    #[test]
    fn data_root_dev_names() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for n in [
            "section_00_source_test_normal_0001_n_A.wav",
            "section_00_target_test_anomaly_0002_n_X.wav",
            "section_00_source_test_anomaly_0003_n_A.wav",
        ] {
            write(&r.join("dev_data/raw/fan/test").join(n), "");
        }
        write(&r.join("dev_data/raw/fan/train/section_00_source_train_normal_0001_n_A.wav"), "");
        let t = GroundTruth::load(r, None).unwrap();
        let m = &t.machines["fan"];
        assert_eq!(m.len(), 3);
        // Sorted by name: source anomaly 0003, source normal 0001, target anomaly 0002.
        assert_eq!(m.is_anomaly, [true, false, true]);
        assert_eq!(m.is_target, [false, false, true]);
        write(&r.join("eval_data/raw/Scanner/test/section_00_0001.wav"), "");
        let e = GroundTruth::load(r, None).unwrap_err().to_string();
        assert!(e.contains("--set dev or --set eval"), "{e}");
        let e = format!("{:#}", GroundTruth::load(r, Some(DataSet::Eval)).unwrap_err());
        assert!(e.contains("anonymised test clip"), "{e}");
        assert_eq!(GroundTruth::load(r, Some(DataSet::Dev)).unwrap().machine_names(), ["fan"]);
    }
}
