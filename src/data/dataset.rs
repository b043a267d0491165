//! Scanning a data root in the DCASE 2024 layout (dcase2024.md §2.3):
//!
//! ```text
//! <root>/dev_data/raw/<machine>/{train,test}/*.wav
//! <root>/eval_data/raw/<machine>/{train,test}/*.wav
//! ```
//! Every wav name is parsed; a name that breaks the grammar, or that
//! contradicts its folder (a test name under `train/`), is an error naming
//! the file. Other files (`attributes_00.csv`, ...) are ignored.

use super::machines::{self, DataSet};
use super::naming::{ClipName, Domain, Label, Split};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use machines::DataSet as DatasetSplit;

/// One audio clip of the dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clip {
    pub path: PathBuf,
    pub machine: String,
    pub set: DataSet,
    /// The folder the clip lies in.
    pub split: Split,
    pub name: ClipName,
}

impl Clip {
    /// The bare file name, as submissions and ground truth name the clip.
    pub fn file_name(&self) -> String {
        self.path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
    }

    pub fn domain(&self) -> Option<Domain> {
        self.name.domain
    }

    pub fn label(&self) -> Option<Label> {
        self.name.label
    }
}

/// All clips found under a data root.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub root: PathBuf,
    pub clips: Vec<Clip>,
}

/// Counts of one machine type, for summaries and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MachineCounts {
    pub train_source: usize,
    pub train_target: usize,
    pub test_source_normal: usize,
    pub test_source_anomaly: usize,
    pub test_target_normal: usize,
    pub test_target_anomaly: usize,
    /// Anonymised test clips (evaluation set).
    pub test_unlabelled: usize,
}

impl Dataset {
    /// Scans `root` for the given sets. `machines`, when given, restricts the
    /// scan (unknown or absent names are errors).
    pub fn scan(root: &Path, sets: &[DataSet], machines: Option<&[String]>) -> Result<Dataset> {
        let mut clips = Vec::new();
        let mut found_machines = Vec::new();
        for &set in sets {
            let raw = root.join(set.dir_name()).join("raw");
            if !raw.is_dir() {
                continue;
            }
            let mut dirs: Vec<_> = std::fs::read_dir(&raw)
                .with_context(|| format!("cannot list {}", raw.display()))?
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            dirs.sort();
            for machine in dirs {
                if machines.is_some_and(|ms| !ms.contains(&machine)) {
                    continue;
                }
                machines::lookup(&machine).with_context(|| format!("in {}", raw.join(&machine).display()))?;
                found_machines.push(machine.clone());
                for split in [Split::Train, Split::Test] {
                    scan_folder(&raw.join(&machine).join(split.as_str()), &machine, set, split, &mut clips)?;
                }
            }
        }
        if let Some(ms) = machines {
            for m in ms {
                machines::lookup(m)?;
                if !found_machines.contains(m) {
                    bail!("machine type '{m}' not found under {}", root.display());
                }
            }
        }
        if clips.is_empty() {
            let wanted: Vec<_> = sets.iter().map(|s| format!("{}/raw/<machine>/", s.dir_name())).collect();
            bail!("no clips found under {} (expected {})", root.display(), wanted.join(" or "));
        }
        // Official machine order, then folder, then file name.
        let order = |m: &str| machines::MACHINES.iter().position(|i| i.name == m).unwrap_or(usize::MAX);
        clips.sort_by(|a, b| {
            (order(&a.machine), a.split, a.file_name()).cmp(&(order(&b.machine), b.split, b.file_name()))
        });
        Ok(Dataset { root: root.to_path_buf(), clips })
    }

    /// Machine types present, in the official order.
    pub fn machines(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in &self.clips {
            if out.last() != Some(&c.machine) {
                out.push(c.machine.clone());
            }
        }
        out
    }

    /// Clips of one machine type and folder, sorted by file name.
    pub fn clips<'a>(&'a self, machine: &'a str, split: Split) -> impl Iterator<Item = &'a Clip> + 'a {
        self.clips.iter().filter(move |c| c.machine == machine && c.split == split)
    }

    /// Per-machine counts by domain and label.
    pub fn counts(&self) -> BTreeMap<String, MachineCounts> {
        let mut out: BTreeMap<String, MachineCounts> = BTreeMap::new();
        for c in &self.clips {
            let e = out.entry(c.machine.clone()).or_default();
            match (c.split, c.name.domain, c.name.label) {
                (Split::Train, Some(Domain::Source), _) => e.train_source += 1,
                (Split::Train, Some(Domain::Target), _) => e.train_target += 1,
                (Split::Test, Some(Domain::Source), Some(Label::Normal)) => e.test_source_normal += 1,
                (Split::Test, Some(Domain::Source), Some(Label::Anomaly)) => e.test_source_anomaly += 1,
                (Split::Test, Some(Domain::Target), Some(Label::Normal)) => e.test_target_normal += 1,
                (Split::Test, Some(Domain::Target), Some(Label::Anomaly)) => e.test_target_anomaly += 1,
                _ => e.test_unlabelled += 1,
            }
        }
        out
    }
}

fn scan_folder(dir: &Path, machine: &str, set: DataSet, split: Split, out: &mut Vec<Clip>) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("wav") {
            continue;
        }
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let name = ClipName::parse(&file).with_context(|| format!("in {}", dir.display()))?;
        match (split, name.split) {
            (Split::Train, Some(Split::Train)) | (Split::Test, Some(Split::Test) | None) => {}
            (folder, named) => bail!(
                "{} lies in the {folder} folder but its name says {}",
                path.display(),
                named.map_or("anonymised test clip".to_string(), |s| format!("{s} clip"))
            ),
        }
        out.push(Clip { path, machine: machine.to_string(), set, split, name });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"").unwrap();
    }

    #[test]
    fn scan_finds_and_orders_clips() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        touch(&r.join("dev_data/raw/fan/train/section_00_source_train_normal_0001_n_A.wav"));
        touch(&r.join("dev_data/raw/fan/train/section_00_target_train_normal_0001_n_X.wav"));
        touch(&r.join("dev_data/raw/fan/test/section_00_target_test_anomaly_0001_n_X.wav"));
        touch(&r.join("dev_data/raw/ToyCar/test/section_00_source_test_normal_0001_car_A1_spd_28V_mic_1.wav"));
        touch(&r.join("dev_data/raw/ToyCar/attributes_00.csv"));
        touch(&r.join("eval_data/raw/Scanner/test/section_00_0001.wav"));
        let ds = Dataset::scan(r, &[DataSet::Dev, DataSet::Eval], None).unwrap();
        assert_eq!(ds.machines(), vec!["ToyCar", "fan", "Scanner"]);
        let c = ds.counts();
        assert_eq!(c["fan"].train_source, 1);
        assert_eq!(c["fan"].train_target, 1);
        assert_eq!(c["fan"].test_target_anomaly, 1);
        assert_eq!(c["Scanner"].test_unlabelled, 1);
        let only = Dataset::scan(r, &[DataSet::Dev], Some(&["fan".to_string()])).unwrap();
        assert_eq!(only.machines(), vec!["fan"]);
        let e = Dataset::scan(r, &[DataSet::Dev], Some(&["valve".to_string()])).unwrap_err();
        assert!(e.to_string().contains("'valve' not found"));
    }

    #[test]
    fn inconsistent_layout_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        touch(&r.join("dev_data/raw/fan/train/section_00_source_test_normal_0001_n_A.wav"));
        let e = format!("{:#}", Dataset::scan(r, &[DataSet::Dev], None).unwrap_err());
        assert!(e.contains("lies in the train folder but its name says test"), "{e}");

        let d2 = tempfile::tempdir().unwrap();
        touch(&d2.path().join("dev_data/raw/fan/test/section_00_sauce_test_normal_0001_n_A.wav"));
        let e = format!("{:#}", Dataset::scan(d2.path(), &[DataSet::Dev], None).unwrap_err());
        assert!(e.contains("sauce") && e.contains("fan/test"), "{e}");

        let d3 = tempfile::tempdir().unwrap();
        touch(&d3.path().join("dev_data/raw/blender/test/section_00_0001.wav"));
        let e = format!("{:#}", Dataset::scan(d3.path(), &[DataSet::Dev], None).unwrap_err());
        assert!(e.contains("unknown machine type 'blender'"), "{e}");

        let d4 = tempfile::tempdir().unwrap();
        let e = Dataset::scan(d4.path(), &[DataSet::Dev], None).unwrap_err().to_string();
        assert!(e.contains("no clips found"), "{e}");
    }
}
