//! On-disk cache of front-end features for training.
//!
//! Layout: `<dir>/<config key>/<wav stem>.<clip key>.npy`, one float32 `.npy`
//! (frames × bins) per clip, plus `<dir>/<config key>/frontend.json` naming
//! the configuration for humans.
//! - config key = hash of (front-end configuration as JSON, [`CODE_VERSION`]):
//!   a changed configuration, or a release that changes the numbers, lands in
//!   a different folder and never reads a stale cache.
//! - clip key = hash of (config key, canonical wav path, file size, mtime in
//!   ns): an edited or replaced wav is recomputed.
//!
//! Keys are 128 bits (two independent stable 64-bit hashes). Files are
//! written atomically (temp file + rename), so concurrent runs and
//! interrupted runs never leave partial files; a file that cannot be read
//! back is recomputed and overwritten.

use super::Frames;
use crate::data::wav;
use crate::util::{atomic, npy};
use anyhow::{Context, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bump when any front-end's numerical output changes: invalidates every cache.
pub const CODE_VERSION: u32 = 1;

/// 128-bit stable hash of a string, as 32 hex digits.
fn hash128(s: &str) -> String {
    use crate::util::rng::{hash_str, mix64};
    let a = hash_str(s);
    let b = mix64(hash_str(&format!("asd-feature-cache\u{0}{s}")) ^ 0x5bd1_e995);
    format!("{a:016x}{b:016x}")
}

/// A feature cache for one front-end configuration.
#[derive(Debug, Clone)]
pub struct FeatureCache {
    dir: PathBuf,
    config_key: String,
}

impl FeatureCache {
    /// Cache under `dir` for the configuration `config_json` (any stable JSON
    /// text describing everything that changes the features, e.g.
    /// `serde_json::to_string(&frontend)`). Creates the folder.
    pub fn new(dir: &Path, config_json: &str) -> Result<FeatureCache> {
        let config_key = hash128(&format!("{CODE_VERSION}\u{0}{config_json}"));
        let sub = dir.join(&config_key[..16]);
        std::fs::create_dir_all(&sub)
            .with_context(|| format!("cannot create feature cache folder {}", sub.display()))?;
        let info = sub.join("frontend.json");
        if !info.exists() {
            let text = format!(
                "{{\"code_version\": {CODE_VERSION}, \"config_key\": \"{config_key}\", \"frontend\": {config_json}}}\n"
            );
            atomic::write_string(&info, &text)?;
        }
        Ok(FeatureCache { dir: sub, config_key })
    }

    /// The folder holding this configuration's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cache file of a wav (depends on its path, size and mtime).
    pub fn path_for(&self, wav_path: &Path) -> Result<PathBuf> {
        let canon =
            std::fs::canonicalize(wav_path).with_context(|| format!("cannot find audio {}", wav_path.display()))?;
        let meta = std::fs::metadata(&canon).with_context(|| format!("cannot read metadata of {}", canon.display()))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let key = hash128(&format!("{}\u{0}{}\u{0}{}\u{0}{}", self.config_key, canon.display(), meta.len(), mtime));
        let stem = canon.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(self.dir.join(format!("{stem}.{key}.npy")))
    }

    /// The cached features of `wav_path`, or `compute(samples)` stored first.
    pub fn get_or_compute<F>(&self, wav_path: &Path, compute: F) -> Result<Frames>
    where
        F: Fn(&[f32]) -> Result<Frames>,
    {
        let file = self.path_for(wav_path)?;
        if let Ok((data, shape)) = npy::read(&file)
            && shape.len() == 2
        {
            return Ok(Frames::new(data, shape[0], shape[1]));
        }
        self.recompute(wav_path, compute)
    }

    /// Computes the features of `wav_path` afresh and replaces its cache
    /// file (for a cached file that turned out unusable).
    pub fn recompute<F>(&self, wav_path: &Path, compute: F) -> Result<Frames>
    where
        F: Fn(&[f32]) -> Result<Frames>,
    {
        let file = self.path_for(wav_path)?;
        let x = wav::load(wav_path)?;
        let f = compute(&x).with_context(|| format!("cannot compute features of {}", wav_path.display()))?;
        npy::write(&file, &f.data, &[f.rows, f.cols])
            .with_context(|| format!("cannot write feature cache for {}", wav_path.display()))?;
        Ok(f)
    }

    /// [`FeatureCache::get_or_compute`] for many clips in parallel (rayon),
    /// results in input order; `progress(done)` is called after each clip.
    pub fn get_or_compute_many<F>(
        &self,
        wav_paths: &[PathBuf],
        compute: F,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Vec<Frames>>
    where
        F: Fn(&[f32]) -> Result<Frames> + Sync,
    {
        let done = AtomicUsize::new(0);
        wav_paths
            .par_iter()
            .map(|p| {
                let f = self.get_or_compute(p, &compute)?;
                progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                Ok(f)
            })
            .collect()
    }

    /// Makes sure every clip is cached without keeping the features in memory
    /// (for training sets larger than RAM); returns how many were computed.
    pub fn prefetch_many<F>(
        &self,
        wav_paths: &[PathBuf],
        compute: F,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<usize>
    where
        F: Fn(&[f32]) -> Result<Frames> + Sync,
    {
        let done = AtomicUsize::new(0);
        let computed = AtomicUsize::new(0);
        wav_paths.par_iter().try_for_each(|p| -> Result<()> {
            if !self.path_for(p)?.exists() {
                self.get_or_compute(p, &compute)?;
                computed.fetch_add(1, Ordering::Relaxed);
            }
            progress(done.fetch_add(1, Ordering::Relaxed) + 1);
            Ok(())
        })?;
        Ok(computed.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn count_calls(counter: &AtomicUsize, scale: f32) -> impl Fn(&[f32]) -> Result<Frames> + Sync + '_ {
        move |x: &[f32]| {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(Frames::new(x[..4].iter().map(|v| v * scale).collect(), 2, 2))
        }
    }

    #[test]
    fn hit_miss_and_invalidation() {
        let dir = tempfile::tempdir().unwrap();
        let wav_path = dir.path().join("a.wav");
        wav::write_pcm16(&wav_path, &[0.5, 0.25, -0.5, 0.0, 0.1]).unwrap();
        let calls = AtomicUsize::new(0);
        let cache_dir = dir.path().join("cache");

        let c1 = FeatureCache::new(&cache_dir, r#"{"kind":"x","v":1}"#).unwrap();
        let a = c1.get_or_compute(&wav_path, count_calls(&calls, 1.0)).unwrap();
        let b = c1.get_or_compute(&wav_path, count_calls(&calls, 1.0)).unwrap();
        assert_eq!(a, b);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "second call must hit the cache");
        assert!(c1.dir().join("frontend.json").exists());

        // A different configuration never sees the first one's files.
        let c2 = FeatureCache::new(&cache_dir, r#"{"kind":"x","v":2}"#).unwrap();
        assert_ne!(c1.dir(), c2.dir());
        let c = c2.get_or_compute(&wav_path, count_calls(&calls, 2.0)).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(c.data[0], 2.0 * a.data[0]);

        // Same configuration text → same folder, still a hit.
        let c1b = FeatureCache::new(&cache_dir, r#"{"kind":"x","v":1}"#).unwrap();
        c1b.get_or_compute(&wav_path, count_calls(&calls, 1.0)).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        // Rewriting the wav (new size) invalidates its entry.
        wav::write_pcm16(&wav_path, &[0.5, 0.25, -0.5, 0.0, 0.1, 0.2]).unwrap();
        c1.get_or_compute(&wav_path, count_calls(&calls, 1.0)).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        // A corrupt cache file is recomputed, not an error.
        let p = c1.path_for(&wav_path).unwrap();
        std::fs::write(&p, b"garbage").unwrap();
        c1.get_or_compute(&wav_path, count_calls(&calls, 1.0)).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn parallel_batch_keeps_order_and_reports_progress() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (0..12)
            .map(|i| {
                let p = dir.path().join(format!("c{i}.wav"));
                wav::write_pcm16(&p, &[i as f32 / 20.0; 8]).unwrap();
                p
            })
            .collect();
        let cache = FeatureCache::new(&dir.path().join("cache"), "{}").unwrap();
        let calls = AtomicUsize::new(0);
        let seen = AtomicUsize::new(0);
        let progress = |_done: usize| {
            seen.fetch_add(1, Ordering::SeqCst);
        };
        let out = cache.get_or_compute_many(&paths, count_calls(&calls, 1.0), &progress).unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 12);
        for (i, f) in out.iter().enumerate() {
            assert!((f.data[0] - i as f32 / 20.0).abs() < 1e-4);
        }
        assert_eq!(cache.prefetch_many(&paths, count_calls(&calls, 1.0), &|_| {}).unwrap(), 0);
        assert_eq!(calls.load(Ordering::SeqCst), 12);
        let missing = vec![dir.path().join("nope.wav")];
        let e = cache.get_or_compute_many(&missing, count_calls(&calls, 1.0), &|_| {}).unwrap_err();
        assert!(format!("{e:#}").contains("nope.wav"));
    }
}
