//! Atomic file output: every artifact is written to a temporary file in the
//! destination folder and renamed into place, so an interrupted run never
//! leaves a half-written CSV, checkpoint or feature file behind.

use anyhow::{Context, Result};
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Temporary sibling of `path`, unique per process and call so that parallel
/// writers in one folder never collide.
fn temp_path(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Writes `path` atomically: `fill` writes into a buffered temp file, which is
/// flushed, synced and renamed over `path`. On error the temp file is removed
/// and `path` is untouched.
pub fn write_with<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> Result<()>,
{
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("cannot create folder {}", dir.display()))?;
    }
    let tmp = temp_path(path);
    let result = (|| -> Result<()> {
        let file = fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut w = BufWriter::new(file);
        fill(&mut w)?;
        let file =
            w.into_inner().map_err(|e| e.into_error()).with_context(|| format!("cannot write {}", tmp.display()))?;
        file.sync_all().ok();
        fs::rename(&tmp, path).with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("failed to write {}", path.display()))
}

/// Writes a byte buffer atomically.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |w| Ok(w.write_all(bytes)?))
}

/// Writes a string atomically.
pub fn write_string(path: &Path, text: &str) -> Result<()> {
    write_bytes(path, text.as_bytes())
}

/// Serialises `value` as pretty JSON atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_string(path, &text)
}

/// Outputs that appear together or not at all (`asd features --wav DIR`):
/// each is written complete under a hidden staging name beside its final
/// path, and [`Batch::commit`] renames them all once every one succeeded.
/// Dropping an uncommitted batch removes what it staged.
#[derive(Default)]
pub struct Batch {
    staged: std::sync::Mutex<Vec<(PathBuf, PathBuf)>>,
    committed: bool,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    /// The path to write `path`'s content to; it moves to `path` on commit.
    pub fn stage(&self, path: &Path) -> PathBuf {
        let name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
        let staging = path.with_file_name(format!(".{name}.staged-{}", std::process::id()));
        self.staged.lock().expect("batch lock").push((staging.clone(), path.to_path_buf()));
        staging
    }

    /// Moves every staged output to its final path.
    pub fn commit(mut self) -> Result<()> {
        let staged = std::mem::take(&mut *self.staged.lock().expect("batch lock"));
        self.committed = true;
        for (from, to) in &staged {
            fs::rename(from, to).with_context(|| format!("cannot move {} to {}", from.display(), to.display()))?;
        }
        Ok(())
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if !self.committed {
            for (staging, _) in self.staged.lock().map(|s| s.clone()).unwrap_or_default() {
                let _ = fs::remove_file(staging);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_leaves_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        write_string(&p, "old").unwrap();
        let err = write_with(&p, |w| {
            w.write_all(b"partial")?;
            anyhow::bail!("boom")
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("a.txt"));
        assert_eq!(fs::read_to_string(&p).unwrap(), "old");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temp file left behind");
    }

    #[test]
    fn a_batch_appears_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
        let batch = Batch::new();
        write_string(&batch.stage(&a), "a").unwrap();
        drop(batch);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "an uncommitted batch left files");
        let batch = Batch::new();
        write_string(&batch.stage(&a), "a").unwrap();
        write_string(&batch.stage(&b), "b").unwrap();
        assert!(!a.exists() && !b.exists());
        batch.commit().unwrap();
        assert_eq!((fs::read_to_string(&a).unwrap(), fs::read_to_string(&b).unwrap()), ("a".into(), "b".into()));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn creates_parent_folders() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x/y/z.json");
        write_json(&p, &serde_json::json!({"k": 1})).unwrap();
        assert!(fs::read_to_string(&p).unwrap().contains("\"k\": 1"));
    }
}
