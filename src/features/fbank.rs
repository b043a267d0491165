//! Kaldi filterbank features as `torchaudio.compliance.kaldi.fbank` computes
//! them, with the BEATs and EAT preprocessing (`pretrained.md` §1.2, §2.2, §3).
//!
//! Per clip (16 kHz, f32 waveform in [−1, 1)):
//! 1. Scale: BEATs `x · 2^15`; EAT `x − mean(x)` (mean and subtraction in f32,
//!    as torch does), no scaling.
//! 2. Frames of 400 samples (25 ms) every 160 (10 ms), `snip_edges=True`:
//!    only whole frames, `frames = 1 + (N − 400) / 160`.
//! 3. Per frame (f64 from here on): remove the frame mean (DC offset);
//!    pre-emphasis 0.97 (`y[i] = x[i] − 0.97·x[i−1]`, `y[0] = x[0] − 0.97·x[0]`);
//!    window (BEATs: povey = symmetric Hann^0.85; EAT: `hanning` = symmetric
//!    Hann); zero-pad to 512; power spectrum `|rfft|²` (257 bins). Dither 0.
//! 4. 128 triangular Kaldi-mel filters (mel = 1127·ln(1 + f/700)) equally
//!    spaced in mel between 20 Hz and 8 kHz over FFT bins 0..255 (the Nyquist
//!    bin has weight 0). The filterbank is built with torchaudio's float32
//!    arithmetic (`get_mel_banks`); with these settings band 3 contains no
//!    FFT bin and is always `log(ε)`.
//! 5. `log(max(E, ε))` with ε = f32::EPSILON = 1.1920929e-07, E rounded to
//!    f32 first (as torch); no energy term (`use_energy=False`, so
//!    `htk_compat` changes nothing).
//!
//! Steps 3–4 run in f64 (torch uses f32): the result differs from
//! torchaudio by the f32 rounding of the reference itself, ~1e-3 at most in
//! the log domain (see `tests/suite/frontend_parity.rs`).
//!
//! Model inputs: [`beats_input`] = `(fbank − 15.41663) / (2·6.55582)`, no
//! padding; [`eat_input`] = raw EAT fbank zero-padded/cropped in the fbank
//! domain to the target frame count, then `(x + 4.268) / (2·4.569)` (so padded
//! rows become 0.46706066).

use super::Frames;
use super::fft::{Rfft, hann_symmetric, povey};
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// BEATs fbank normalisation mean.
pub const BEATS_MEAN: f64 = 15.41663;
/// BEATs fbank normalisation std (the input is divided by 2·std).
pub const BEATS_STD: f64 = 6.55582;
/// EAT fbank normalisation mean.
pub const EAT_MEAN: f64 = -4.268;
/// EAT fbank normalisation std (the input is divided by 2·std).
pub const EAT_STD: f64 = 4.569;
/// Frame length in samples (25 ms at 16 kHz).
pub const FRAME_LENGTH: usize = 400;
/// Frame shift in samples (10 ms at 16 kHz).
pub const FRAME_SHIFT: usize = 160;
/// FFT size (frame length rounded up to a power of two).
pub const N_FFT: usize = 512;
/// Mel bins of both presets.
pub const NUM_MEL_BINS: usize = 128;
/// Pre-emphasis coefficient.
pub const PREEMPHASIS: f64 = 0.97;

/// Which pretrained model's fbank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FbankPreset {
    /// BEATs_iter3: `x·2^15`, povey window.
    Beats,
    /// EAT-base: `x − mean(x)`, hanning window.
    Eat,
}

/// Kaldi analysis window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KaldiWindow {
    /// Symmetric Hann^0.85 (Kaldi default).
    Povey,
    /// Symmetric Hann (`window_type='hanning'`).
    Hanning,
}

/// Waveform preprocessing before framing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WaveScale {
    /// Multiply by a constant (BEATs: 2^15).
    Times(f32),
    /// Subtract the clip mean (EAT).
    SubtractMean,
}

impl FbankPreset {
    pub fn window(self) -> KaldiWindow {
        match self {
            FbankPreset::Beats => KaldiWindow::Povey,
            FbankPreset::Eat => KaldiWindow::Hanning,
        }
    }

    pub fn wave_scale(self) -> WaveScale {
        match self {
            FbankPreset::Beats => WaveScale::Times(32768.0),
            FbankPreset::Eat => WaveScale::SubtractMean,
        }
    }

    /// The shared, precomputed extractor of this preset.
    pub fn extractor(self) -> &'static KaldiFbank {
        static BEATS: OnceLock<KaldiFbank> = OnceLock::new();
        static EAT: OnceLock<KaldiFbank> = OnceLock::new();
        let cell = match self {
            FbankPreset::Beats => &BEATS,
            FbankPreset::Eat => &EAT,
        };
        cell.get_or_init(|| KaldiFbank::new(self.wave_scale(), self.window()))
    }
}

/// Kaldi fbank frame count with `snip_edges=True` (0 for clips shorter than a frame).
pub fn num_frames(n_samples: usize) -> usize {
    if n_samples < FRAME_LENGTH { 0 } else { 1 + (n_samples - FRAME_LENGTH) / FRAME_SHIFT }
}

/// A precomputed Kaldi fbank extractor (16 kHz, 25/10 ms, 512-point FFT, 128
/// bins, 20 Hz – 8 kHz).
#[derive(Debug, Clone)]
pub struct KaldiFbank {
    scale: WaveScale,
    window: Vec<f64>,
    /// Per mel bin: first FFT bin and its weights (non-zero run only).
    bands: Vec<(usize, Vec<f64>)>,
}

impl KaldiFbank {
    pub fn new(scale: WaveScale, window: KaldiWindow) -> KaldiFbank {
        let window = match window {
            KaldiWindow::Povey => povey(FRAME_LENGTH),
            KaldiWindow::Hanning => hann_symmetric(FRAME_LENGTH),
        };
        let bands = kaldi_mel_banks(NUM_MEL_BINS, N_FFT, 16000.0, 20.0, 8000.0)
            .into_iter()
            .map(|row| match row.iter().position(|&w| w != 0.0) {
                None => (0, Vec::new()),
                Some(first) => {
                    let last = row.iter().rposition(|&w| w != 0.0).unwrap_or(first);
                    (first, row[first..=last].iter().map(|&w| w as f64).collect())
                }
            })
            .collect();
        KaldiFbank { scale, window, bands }
    }

    /// Raw log-mel fbank (frames × 128), before any model normalisation.
    pub fn compute(&self, x: &[f32]) -> Result<Frames> {
        let rows = num_frames(x.len());
        if rows == 0 {
            bail!("Kaldi fbank: the clip has {} samples, shorter than one {FRAME_LENGTH}-sample frame", x.len());
        }
        let (mul, sub) = match self.scale {
            WaveScale::Times(s) => (s, 0.0f32),
            WaveScale::SubtractMean => {
                let mean = (x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64) as f32;
                (1.0, mean)
            }
        };
        let mut fft = Rfft::<f64>::new(N_FFT);
        let mut frame = [0.0f64; FRAME_LENGTH];
        let mut power = [0.0f64; N_FFT / 2 + 1];
        let mut data = vec![0.0f32; rows * NUM_MEL_BINS];
        let w = &self.window[..FRAME_LENGTH];
        for t in 0..rows {
            let src = &x[t * FRAME_SHIFT..t * FRAME_SHIFT + FRAME_LENGTH];
            // Scaling / clip-mean removal happen on the f32 waveform in torch.
            for i in 0..FRAME_LENGTH {
                frame[i] = ((src[i] - sub) * mul) as f64;
            }
            let mean = sum_f64(&frame) / FRAME_LENGTH as f64;
            // DC removal, pre-emphasis (first sample against itself), window.
            let buf = fft.input_mut();
            buf[0] = ((frame[0] - mean) - PREEMPHASIS * (frame[0] - mean)) * w[0];
            for i in 1..FRAME_LENGTH {
                buf[i] = ((frame[i] - mean) - PREEMPHASIS * (frame[i - 1] - mean)) * w[i];
            }
            buf[FRAME_LENGTH..].fill(0.0);
            for (p, z) in power.iter_mut().zip(fft.process()) {
                *p = z.re * z.re + z.im * z.im;
            }
            // Mel energies rounded to f32 and floored at ε (as torch), then log.
            let out = &mut data[t * NUM_MEL_BINS..(t + 1) * NUM_MEL_BINS];
            for ((start, wts), o) in self.bands.iter().zip(out.iter_mut()) {
                let e = dot_f64(wts, &power[*start..*start + wts.len()]) as f32;
                *o = e.max(f32::EPSILON);
            }
            ln_in_place(out);
        }
        Ok(Frames::new(data, rows, NUM_MEL_BINS))
    }
}

/// Natural log of positive normal f32 values, in place, without libm calls
/// so that the loop vectorises (libm `logf` was a sixth of the fbank time).
/// `x = 2^k·m`, m ∈ [√½, √2), `ln m = 2·atanh(s)`, `s = (m − 1)/(m + 1)`,
/// series to s¹³ in f64 (truncation < 1e-12 relative), rounded to f32: equal
/// to `f32::ln` but for rare last-bit ties (≤ 1 ulp, see the tests).
fn ln_in_place(v: &mut [f32]) {
    const LN2: f64 = std::f64::consts::LN_2;
    for x in v.iter_mut() {
        let bits = x.to_bits();
        let mut k = ((bits >> 23) & 0xff) as i32 - 127;
        let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000) as f64;
        let big = m > std::f64::consts::SQRT_2;
        m = if big { m * 0.5 } else { m };
        k += big as i32;
        let s = (m - 1.0) / (m + 1.0);
        let z = s * s;
        let series = 1.0
            + z * (1.0 / 3.0
                + z * (1.0 / 5.0 + z * (1.0 / 7.0 + z * (1.0 / 9.0 + z * (1.0 / 11.0 + z * (1.0 / 13.0))))));
        *x = (k as f64 * LN2 + 2.0 * s * series) as f32;
    }
}

/// Sum with 4 independent accumulators (vectorises).
#[inline]
fn sum_f64(a: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let chunks = a.chunks_exact(4);
    let rest: f64 = chunks.remainder().iter().sum();
    for c in chunks {
        for j in 0..4 {
            acc[j] += c[j];
        }
    }
    (acc[0] + acc[2]) + (acc[1] + acc[3]) + rest
}

/// Dot product with 4 independent accumulators (vectorises).
#[inline]
fn dot_f64(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let n = a.len().min(b.len()) / 4 * 4;
    for (x, y) in a[..n].chunks_exact(4).zip(b[..n].chunks_exact(4)) {
        for j in 0..4 {
            acc[j] += x[j] * y[j];
        }
    }
    let mut s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
    for i in n..a.len().min(b.len()) {
        s += a[i] * b[i];
    }
    s
}

/// torchaudio `get_mel_banks(num_bins, n_fft, sr, low, high, vtln 1.0)`
/// evaluated in float32 exactly like torchaudio (its tensors are float32);
/// rows over FFT bins 0..n_fft/2 (the Nyquist column torchaudio pads with 0
/// is omitted).
pub fn kaldi_mel_banks(num_bins: usize, n_fft: usize, sr: f64, low: f64, high: f64) -> Vec<Vec<f32>> {
    let mel_scalar = |f: f64| 1127.0 * (1.0 + f / 700.0).ln();
    let num_fft_bins = n_fft / 2;
    let fft_bin_width = (sr / n_fft as f64) as f32;
    let mel_low = mel_scalar(low);
    let mel_high = mel_scalar(high);
    let delta = ((mel_high - mel_low) / (num_bins + 1) as f64) as f32;
    let low32 = mel_low as f32;
    let mel: Vec<f32> = (0..num_fft_bins)
        .map(|k| {
            let f = fft_bin_width * k as f32;
            1127.0f32 * (1.0f32 + f / 700.0f32).ln()
        })
        .collect();
    (0..num_bins)
        .map(|b| {
            let b = b as f32;
            let left = low32 + b * delta;
            let center = low32 + (b + 1.0) * delta;
            let right = low32 + (b + 2.0) * delta;
            mel.iter()
                .map(|&m| {
                    let up = (m - left) / (center - left);
                    let down = (right - m) / (right - center);
                    0f32.max(up.min(down))
                })
                .collect()
        })
        .collect()
}

/// Raw Kaldi fbank of a preset (frames × 128), before normalisation.
pub fn fbank(x: &[f32], preset: FbankPreset) -> Result<Frames> {
    preset.extractor().compute(x)
}

/// `(v − mean) / (2·std)` in f32, as torch evaluates it on the f32 fbank.
fn normalise(f: &mut Frames, mean: f64, std: f64) {
    let (m, d) = (mean as f32, (2.0 * std) as f32);
    for v in &mut f.data {
        *v = (*v - m) / d;
    }
}

/// The BEATs model input: `(fbank − 15.41663) / (2·6.55582)`, frames × 128,
/// no padding (frames = 1 + (N − 400)/160; 998 for 10 s).
pub fn beats_input(x: &[f32]) -> Result<Frames> {
    let mut f = fbank(x, FbankPreset::Beats)?;
    normalise(&mut f, BEATS_MEAN, BEATS_STD);
    Ok(f)
}

/// How many fbank frames the EAT input has.
///
/// EAT's own recipe pads/crops to a fixed `target_length` (1024 frames for
/// 10 s clips, its default). ASDKit instead pads to the next multiple of 32
/// (`ceil(frames/32)·32`: 998 → 1024, 298 → 320) and never crops. Both give
/// 1024 frames for 10 s clips; they differ for other lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EatLength {
    /// Zero-pad or crop to exactly this many frames (EAT default: 1024).
    Fixed(usize),
    /// Zero-pad to the next multiple of this many frames (ASDKit: 32).
    RoundUp(usize),
}

impl Default for EatLength {
    fn default() -> Self {
        EatLength::Fixed(1024)
    }
}

impl EatLength {
    /// Target frame count for a clip with `frames` raw fbank frames.
    pub fn target(self, frames: usize) -> Result<usize> {
        match self {
            EatLength::Fixed(0) | EatLength::RoundUp(0) => {
                bail!("EAT input length must be positive, got {self:?}")
            }
            EatLength::Fixed(n) => Ok(n),
            EatLength::RoundUp(m) => Ok(frames.div_ceil(m) * m),
        }
    }
}

/// The EAT model input: raw EAT fbank zero-padded at the end (or cropped to
/// its first frames) to the target length, then `(x + 4.268) / (2·4.569)`.
pub fn eat_input(x: &[f32], length: EatLength) -> Result<Frames> {
    let f = fbank(x, FbankPreset::Eat)?;
    let target = length.target(f.rows)?;
    let keep = f.rows.min(target);
    let mut data = f.data;
    data.truncate(keep * NUM_MEL_BINS);
    data.resize(target * NUM_MEL_BINS, 0.0);
    let mut out = Frames::new(data, target, NUM_MEL_BINS);
    normalise(&mut out, EAT_MEAN, EAT_STD);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_ln_equals_libm_to_one_ulp() {
        let mut xs: Vec<f32> = vec![f32::EPSILON, 1.0, 2.0, 0.5, std::f32::consts::SQRT_2, 1.4142137, 1e-7, 3e38];
        let mut r = 0x1234_5678u32;
        for _ in 0..200_000 {
            r = r.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            // Positive normal floats across the whole exponent range.
            xs.push(f32::from_bits((r % (0x7f00_0000 - 0x0080_0000)) + 0x0080_0000));
        }
        let mut ys = xs.clone();
        ln_in_place(&mut ys);
        let mut exact = 0;
        for (x, y) in xs.iter().zip(&ys) {
            let want = x.ln();
            let ulps = (want.to_bits() as i64 - y.to_bits() as i64).abs();
            assert!(ulps <= 1 || (want - y).abs() <= 1e-7, "ln({x}) = {want}, got {y}");
            exact += (ulps == 0) as usize;
        }
        assert!(exact as f64 >= 0.999 * xs.len() as f64, "{exact} of {} exact", xs.len());
        assert_eq!(ys[1], 0.0);
    }

    #[test]
    fn frame_counts_and_targets() {
        assert_eq!(num_frames(160_000), 998);
        assert_eq!(num_frames(48_000), 298);
        assert_eq!(num_frames(399), 0);
        assert_eq!(num_frames(400), 1);
        assert_eq!(EatLength::RoundUp(32).target(998).unwrap(), 1024);
        assert_eq!(EatLength::RoundUp(32).target(298).unwrap(), 320);
        assert_eq!(EatLength::RoundUp(32).target(256).unwrap(), 256);
        assert_eq!(EatLength::default().target(1198).unwrap(), 1024);
        assert!(EatLength::Fixed(0).target(5).is_err());
        assert!(fbank(&[0.0; 399], FbankPreset::Beats).is_err());
    }

    #[test]
    fn mel_banks_match_torchaudio_properties() {
        let banks = kaldi_mel_banks(128, 512, 16000.0, 20.0, 8000.0);
        assert_eq!(banks.len(), 128);
        assert!(banks.iter().all(|r| r.len() == 256));
        // Band 3 is empty with these settings (documented torchaudio quirk).
        assert!(banks[3].iter().all(|&w| w == 0.0));
        let empty: Vec<usize> = (0..128).filter(|&b| banks[b].iter().all(|&w| w == 0.0)).collect();
        assert_eq!(empty, vec![3]);
        // Triangles peak at ≤ 1 and lie between 20 Hz and 8 kHz.
        for r in &banks {
            assert!(r.iter().all(|&w| (0.0..=1.0).contains(&w)));
        }
        assert_eq!(banks[0][0], 0.0); // bin 0 = 0 Hz < 20 Hz
    }

    #[test]
    fn silence_and_normalisation() {
        let x = vec![0.0f32; 16000];
        let f = fbank(&x, FbankPreset::Beats).unwrap();
        assert_eq!((f.rows, f.cols), (98, 128));
        let floor = f32::EPSILON.ln();
        assert!(f.data.iter().all(|&v| v == floor));
        let b = beats_input(&x).unwrap();
        assert!((b.data[0] - (floor - 15.41663) / 13.11164).abs() < 1e-6);
        let e = eat_input(&vec![0.0; 160_000], EatLength::default()).unwrap();
        assert_eq!((e.rows, e.cols), (1024, 128));
        // Padded rows: (0 + 4.268) / 9.138.
        assert_eq!(e.row(1023)[0], 0.467_060_66);
        let e = eat_input(&vec![0.0; 48_000], EatLength::RoundUp(32)).unwrap();
        assert_eq!(e.rows, 320);
    }

    #[test]
    fn tone_lands_in_its_band() {
        let x: Vec<f32> =
            (0..16000).map(|i| 0.5 * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / 16000.0).sin() as f32).collect();
        let f = fbank(&x, FbankPreset::Beats).unwrap();
        let row = f.row(50);
        let best = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        // Kaldi mel centre of band b: 20 Hz..8 kHz split into 129 mel steps.
        let mel = |f: f64| 1127.0 * (1.0 + f / 700.0).ln();
        let delta = (mel(8000.0) - mel(20.0)) / 129.0;
        let centre = 700.0 * (((mel(20.0) + (best as f64 + 1.0) * delta) / 1127.0).exp() - 1.0);
        assert!((centre - 1000.0).abs() < 60.0, "band {best} centre {centre}");
    }
}
