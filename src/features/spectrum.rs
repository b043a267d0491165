//! Dual Branch CNN inputs (`models.md` §1.1–1.2): the magnitude spectrum of
//! the whole clip and the mean-normalised magnitude STFT.
//!
//! Both branches see the same 10 s clip, cropped (first 160 000 samples kept)
//! or zero-padded at the end ([`crate::data::wav::fit_length`]).
//! - Spectrum branch: `|rfft(hann_periodic(N) · x)|`, first N/2 bins (the
//!   Nyquist bin is dropped, as W23I's `[:, :raw_dim/2]`): 80 000 values for
//!   160 000 samples. Computed in f64 (one FFT per clip; the result matches
//!   scipy/numpy float64 to rounding) and returned as f32.
//! - Spectrogram branch: `tf.signal.stft(frame_length=1024, frame_step=512,
//!   pad_end=False)` with a periodic Hann window and no centring, magnitude,
//!   f32 (as torch.stft on f32) → 311 × 513 for 160 000 samples; then the
//!   temporal mean of every frequency bin is subtracted.

use super::Frames;
use super::fft::{Rfft, hann_periodic, to_f32};
use super::stft::{Framing, for_each_frame};
use crate::data::wav::{PadMode, SAMPLE_RATE, fit_length};
use anyhow::{Result, bail};

/// Samples per Dual Branch CNN input (10 s at 16 kHz).
pub const DUAL_BRANCH_SAMPLES: usize = 160_000;
/// STFT window (= FFT length) of the spectrogram branch.
pub const STFT_N_FFT: usize = 1024;
/// STFT hop of the spectrogram branch.
pub const STFT_HOP: usize = 512;

/// Magnitude of the Hann-windowed DFT of the whole signal, first `len/2` bins.
pub fn dft_magnitude(x: &[f32]) -> Vec<f32> {
    let n = x.len();
    if n < 2 {
        return Vec::new();
    }
    let window = hann_periodic(n);
    let mut fft = Rfft::<f64>::new(n);
    for ((b, &s), &w) in fft.input_mut().iter_mut().zip(x).zip(&window) {
        *b = s as f64 * w;
    }
    fft.process()[..n / 2].iter().map(|c| c.norm() as f32).collect()
}

/// Periodic-Hann magnitude STFT without centring (frames × (n_fft/2 + 1)), f32.
pub fn stft_magnitude(x: &[f32], n_fft: usize, hop: usize) -> Frames {
    let framing = Framing { n_fft, hop, center: false };
    let bins = n_fft / 2 + 1;
    let rows = framing.num_frames(x.len());
    let window = to_f32(&hann_periodic(n_fft));
    let mut data = vec![0.0f32; rows * bins];
    for_each_frame::<f32>(x, &window, framing, |t, spec| {
        for (o, c) in data[t * bins..(t + 1) * bins].iter_mut().zip(spec) {
            *o = (c.re * c.re + c.im * c.im).sqrt();
        }
    });
    Frames::new(data, rows, bins)
}

/// Subtracts the mean over time (rows) from every bin (column), in place.
pub fn temporal_mean_normalize(x: &mut Frames) {
    let mean = x.mean_over_rows();
    for row in x.data.chunks_exact_mut(x.cols.max(1)) {
        for (v, m) in row.iter_mut().zip(&mean) {
            *v -= m;
        }
    }
}

/// Both inputs of the Dual Branch CNN for one clip.
#[derive(Debug, Clone, PartialEq)]
pub struct DualBranchInput {
    /// 1 × samples/2 magnitude spectrum.
    pub spectrum: Frames,
    /// frames × 513 mean-normalised magnitude STFT.
    pub spectrogram: Frames,
}

/// Number of samples of a `seconds`-long input at 16 kHz.
pub fn samples_for(seconds: f32) -> Result<usize> {
    if !(seconds.is_finite() && seconds > 0.0) {
        bail!("input length must be a positive number of seconds, got {seconds}");
    }
    Ok((seconds as f64 * SAMPLE_RATE as f64).round() as usize)
}

/// The spectrum-branch input: `x` fitted to `samples`, then [`dft_magnitude`] (1 × samples/2).
pub fn spectrum_input(x: &[f32], samples: usize) -> Result<Frames> {
    if samples < 2 {
        bail!("the spectrum needs at least 2 samples, got {samples}");
    }
    let x = fit_length(x, samples, PadMode::Zeros);
    let s = dft_magnitude(&x);
    let cols = s.len();
    Ok(Frames::new(s, 1, cols))
}

/// The spectrogram-branch input: `x` fitted to `samples`, magnitude STFT
/// 1024/512, temporal mean normalisation (frames × 513).
pub fn spectrogram_input(x: &[f32], samples: usize) -> Result<Frames> {
    if samples < STFT_N_FFT {
        bail!("the spectrogram needs at least {STFT_N_FFT} samples, got {samples}");
    }
    let x = fit_length(x, samples, PadMode::Zeros);
    let mut s = stft_magnitude(&x, STFT_N_FFT, STFT_HOP);
    temporal_mean_normalize(&mut s);
    Ok(s)
}

/// Both Dual Branch CNN inputs for a clip fitted to `samples` (160 000 for 10 s).
pub fn dual_branch_input(x: &[f32], samples: usize) -> Result<DualBranchInput> {
    Ok(DualBranchInput { spectrum: spectrum_input(x, samples)?, spectrogram: spectrogram_input(x, samples)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_for_ten_seconds() {
        let x: Vec<f32> = (0..150_000).map(|i| ((i % 97) as f32 / 97.0) - 0.5).collect();
        let d = dual_branch_input(&x, DUAL_BRANCH_SAMPLES).unwrap();
        assert_eq!((d.spectrum.rows, d.spectrum.cols), (1, 80_000));
        assert_eq!((d.spectrogram.rows, d.spectrogram.cols), (311, 513));
        // Mean normalisation leaves every column with (near) zero mean.
        let m = d.spectrogram.mean_over_rows();
        assert!(m.iter().all(|v| v.abs() < 1e-3), "{:?}", &m[..4]);
        assert_eq!(samples_for(10.0).unwrap(), 160_000);
        assert!(samples_for(0.0).is_err() && samples_for(f32::NAN).is_err());
    }

    #[test]
    fn tone_peaks_in_its_bin() {
        // 1 kHz tone at 16 kHz over 1600 samples: bin 100, Hann main lobe ±1 bin.
        let n = 1600;
        let x: Vec<f32> =
            (0..n).map(|i| (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / 16000.0).sin() as f32).collect();
        let s = dft_magnitude(&x);
        assert_eq!(s.len(), 800);
        let peak = s.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert_eq!(peak, 100);
        // Periodic Hann coherent gain 0.5: |X| = 0.5 · N/2 for a unit sine.
        assert!((s[100] - 400.0).abs() < 1e-2, "{}", s[100]);
        assert!((s[99] - 200.0).abs() < 1e-2 && (s[101] - 200.0).abs() < 1e-2);
        assert!(s[103] < 1e-3);
        // The STFT of the same tone peaks at 1000/(16000/1024) = 64.
        let st = stft_magnitude(&x, 1024, 512);
        assert_eq!((st.rows, st.cols), (2, 513));
        let p = st.row(0).iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert_eq!(p, 64);
    }

    #[test]
    fn mean_normalisation() {
        let mut f = Frames::new(vec![1.0, 10.0, 3.0, 20.0], 2, 2);
        temporal_mean_normalize(&mut f);
        assert_eq!(f.data, vec![-1.0, -5.0, 1.0, 5.0]);
    }
}
