//! SpecAugment for the pretrained branches (`models.md` §6.1): one time mask
//! and one frequency mask per sample, each applied with probability `p`,
//! maximum width 80, mask value 0. Training only.
//!
//! Masks follow torchaudio's `mask_along_axis_iid` (as used by
//! `TimeMasking`/`FrequencyMasking(…, iid_masks=True)` in ASDKit): for an axis
//! of length L and maximum width W,
//! `w = U[0,1)·W`, `start = U[0,1)·(L − w)`, and the masked index range is
//! `[trunc(start), trunc(start) + trunc(w))` clipped to `[0, L)` (torch's
//! `.long()` truncates toward zero; `start` is only negative when L < w).
//!
//! Frames are time × frequency: the time mask zeroes rows, the frequency mask
//! zeroes columns. Random numbers come from the caller's seeded stream; each
//! call consumes exactly six `f32` draws (decision, width, start for time,
//! then for frequency) whatever is decided, so streams stay aligned.

use super::Frames;
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// SpecAugment settings (defaults: ASDKit / THUEE, width 80, p 0.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpecAugment {
    /// Maximum time-mask width in frames.
    pub time_mask_param: usize,
    /// Maximum frequency-mask width in bins.
    pub freq_mask_param: usize,
    /// Probability that a sample gets the time mask (and, independently, the frequency mask).
    pub p: f32,
}

impl Default for SpecAugment {
    fn default() -> Self {
        SpecAugment { time_mask_param: 80, freq_mask_param: 80, p: 0.5 }
    }
}

/// The masks drawn for one sample (empty ranges when not applied or of width 0).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Masks {
    /// Masked rows (frames).
    pub time: Range<usize>,
    /// Masked columns (bins).
    pub freq: Range<usize>,
}

/// One torchaudio iid mask along an axis of length `len` (uses two draws).
pub fn mask_along_axis<R: Rng + ?Sized>(len: usize, mask_param: usize, rng: &mut R) -> Range<usize> {
    let value = rng.random::<f32>() * mask_param as f32;
    let min_value = rng.random::<f32>() * (len as f32 - value);
    let start = min_value.trunc() as i64;
    let end = start + value.trunc() as i64;
    let clip = |v: i64| v.clamp(0, len as i64) as usize;
    clip(start)..clip(end)
}

impl SpecAugment {
    /// Draws the masks of one sample of `rows` frames × `cols` bins.
    pub fn draw<R: Rng + ?Sized>(&self, rows: usize, cols: usize, rng: &mut R) -> Masks {
        let mut one = |len: usize, param: usize| {
            let apply = rng.random::<f32>() < self.p;
            let r = mask_along_axis(len, param, rng);
            if apply { r } else { 0..0 }
        };
        let time = one(rows, self.time_mask_param);
        let freq = one(cols, self.freq_mask_param);
        Masks { time, freq }
    }

    /// Draws and applies the masks of one sample in place; returns them.
    pub fn apply<R: Rng + ?Sized>(&self, x: &mut Frames, rng: &mut R) -> Masks {
        let m = self.draw(x.rows, x.cols, rng);
        apply_masks(x, &m);
        m
    }
}

/// Sets the masked rows and columns to 0.
pub fn apply_masks(x: &mut Frames, m: &Masks) {
    let cols = x.cols;
    for r in m.time.clone() {
        x.data[r * cols..(r + 1) * cols].fill(0.0);
    }
    if !m.freq.is_empty() {
        for row in x.data.chunks_exact_mut(cols) {
            row[m.freq.clone()].fill(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::stream;

    #[test]
    fn masks_stay_in_bounds_and_below_the_maximum_width() {
        let aug = SpecAugment::default();
        let mut rng = stream(3, &[1]);
        let (mut applied_t, mut applied_f, mut widths) = (0, 0, Vec::new());
        for i in 0..2000 {
            let (rows, cols) = if i % 2 == 0 { (998, 128) } else { (40, 128) };
            let m = aug.draw(rows, cols, &mut rng);
            assert!(m.time.end <= rows && m.time.start <= m.time.end);
            assert!(m.freq.end <= cols && m.freq.start <= m.freq.end);
            assert!(m.time.len() < 80 && m.freq.len() < 80);
            applied_t += (!m.time.is_empty()) as usize;
            applied_f += (!m.freq.is_empty()) as usize;
            if rows == 998 {
                widths.push(m.time.len());
            }
        }
        // p = 0.5 each, independently (width-0 draws count as not applied).
        assert!((900..1100).contains(&applied_t), "{applied_t}");
        assert!((900..1100).contains(&applied_f), "{applied_f}");
        assert!(widths.iter().any(|&w| w >= 70));
    }

    #[test]
    fn deterministic_by_seed_and_masks_are_zero() {
        let aug = SpecAugment { p: 1.0, ..Default::default() };
        let base = Frames::new(vec![1.0; 300 * 128], 300, 128);
        let run = |seed| {
            let mut x = base.clone();
            let m = aug.apply(&mut x, &mut stream(seed, &[7]));
            (x, m)
        };
        let (a, ma) = run(11);
        let (b, mb) = run(11);
        let (_, mc) = run(12);
        assert_eq!(a, b);
        assert_eq!(ma, mb);
        assert_ne!(ma, mc);
        for r in 0..300 {
            for c in 0..128 {
                let masked = ma.time.contains(&r) || ma.freq.contains(&c);
                assert_eq!(a.data[r * 128 + c] == 0.0, masked, "({r},{c})");
            }
        }
        let never = SpecAugment { p: 0.0, ..Default::default() };
        let mut x = base.clone();
        assert_eq!(never.apply(&mut x, &mut stream(1, &[])), Masks::default());
        assert_eq!(x, base);
    }

    #[test]
    fn torchaudio_truncation_for_short_axes() {
        // L < w makes `start` negative; torch truncates toward zero and the
        // mask is clipped to the axis.
        let mut rng = stream(5, &[]);
        for _ in 0..500 {
            let r = mask_along_axis(10, 80, &mut rng);
            assert!(r.end <= 10);
        }
    }

    #[test]
    fn serde_defaults() {
        let a: SpecAugment = serde_json::from_str("{}").unwrap();
        assert_eq!(a, SpecAugment::default());
        let b: SpecAugment = serde_json::from_str(r#"{"p": 1.0}"#).unwrap();
        assert_eq!(b.time_mask_param, 80);
        assert!(serde_json::from_str::<SpecAugment>(r#"{"q": 1}"#).is_err());
    }
}
