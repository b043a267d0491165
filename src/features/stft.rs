//! Short-time Fourier transform framing shared by the front-ends.
//!
//! Two framing conventions occur in the system:
//! - `center = false` (tf.signal.stft `pad_end=False`, torch.stft
//!   `center=False`): frame t covers samples `[t·hop, t·hop + n_fft)`; only
//!   whole frames, so `frames = 1 + (N − n_fft) / hop` (0 when N < n_fft).
//! - `center = true` (librosa ≥ 0.10 defaults, `pad_mode='constant'`): the
//!   signal is zero-padded by `n_fft / 2` samples on each side first, so frame
//!   t is centred on sample `t·hop` and `frames = 1 + N / hop` for even n_fft.
//!
//! Frames are windowed (window length = n_fft) and transformed with a cached
//! real FFT ([`super::fft::Rfft`]); the caller receives the n_fft/2 + 1 bins
//! of each frame in order.

use super::fft::{Real, Rfft};
use realfft::num_complex::Complex;

/// Where the frames of an STFT lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    pub n_fft: usize,
    pub hop: usize,
    /// Zero-pad `n_fft / 2` samples on both sides (librosa `center=True`).
    pub center: bool,
}

impl Framing {
    /// Number of frames for a signal of `n` samples.
    pub fn num_frames(&self, n: usize) -> usize {
        assert!(self.n_fft > 0 && self.hop > 0, "STFT needs n_fft > 0 and hop > 0");
        let padded = if self.center { n + 2 * (self.n_fft / 2) } else { n };
        if n == 0 || padded < self.n_fft { 0 } else { 1 + (padded - self.n_fft) / self.hop }
    }

    /// Offset of frame `t`'s first sample in the unpadded signal (may be negative).
    fn start(&self, t: usize) -> isize {
        let pad = if self.center { (self.n_fft / 2) as isize } else { 0 };
        (t * self.hop) as isize - pad
    }
}

/// Windows every frame of `x`, transforms it and calls `f(t, bins)` with the
/// n_fft/2 + 1 complex bins of frame `t`. The product `x · window` is formed
/// in precision `T` (librosa multiplies its f32 frames by an f64 window and
/// transforms in f64; torch works in f32). Returns the number of frames.
pub fn for_each_frame<T: Real>(
    x: &[f32],
    window: &[T],
    framing: Framing,
    mut f: impl FnMut(usize, &[Complex<T>]),
) -> usize {
    let n_fft = framing.n_fft;
    assert_eq!(window.len(), n_fft, "window length must equal n_fft");
    let frames = framing.num_frames(x.len());
    let mut fft = Rfft::<T>::new(n_fft);
    for t in 0..frames {
        let start = framing.start(t);
        let buf = fft.input_mut();
        // Samples of the frame that lie inside the signal: [lo, hi) in frame coordinates.
        let lo = (-start).max(0) as usize;
        let hi = ((x.len() as isize - start).max(0) as usize).min(n_fft);
        buf[..lo.min(n_fft)].fill(T::zero());
        if hi > lo {
            let src = &x[(start + lo as isize) as usize..(start + hi as isize) as usize];
            let (dst, win) = (&mut buf[lo..hi], &window[lo..hi]);
            for i in 0..dst.len() {
                dst[i] = T::from_sample(src[i]) * win[i];
            }
        }
        buf[hi.max(lo)..].fill(T::zero());
        f(t, fft.process());
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_counts() {
        let dual = Framing { n_fft: 1024, hop: 512, center: false };
        assert_eq!(dual.num_frames(160_000), 311);
        assert_eq!(dual.num_frames(1023), 0);
        assert_eq!(dual.num_frames(1024), 1);
        let nf = Framing { n_fft: 8192, hop: 512, center: true };
        assert_eq!(nf.num_frames(160_000), 313);
        assert_eq!(nf.num_frames(192_000), 376);
        assert_eq!(nf.num_frames(112_000), 219);
        assert_eq!(nf.num_frames(48_000), 94);
        assert_eq!(nf.num_frames(0), 0);
        let base = Framing { n_fft: 1024, hop: 512, center: true };
        assert_eq!(base.num_frames(160_000), 313);
    }

    #[test]
    fn centred_frames_see_zero_padding() {
        // A unit impulse at sample 0 with a rectangular window: centred frame 0
        // has the impulse at its middle (position n_fft/2), so |X_k| = 1 for
        // all k and the phase alternates; frame 1 (starting at hop − n_fft/2 > 0)
        // does not contain it.
        let framing = Framing { n_fft: 8, hop: 6, center: true };
        let mut x = vec![0.0f32; 12];
        x[0] = 1.0;
        let w = vec![1.0f64; 8];
        let mut seen = Vec::new();
        let n = for_each_frame(&x, &w, framing, |t, bins| {
            seen.push((t, bins.iter().map(|c| (c.re, c.im)).collect::<Vec<_>>()));
        });
        assert_eq!(n, 3);
        for (k, &(re, im)) in seen[0].1.iter().enumerate() {
            let sign = if k % 2 == 0 { 1.0 } else { -1.0 };
            assert!((re - sign).abs() < 1e-12 && im.abs() < 1e-12, "k={k}: {re} {im}");
        }
        assert!(seen[1].1.iter().all(|&(re, im)| re.abs() < 1e-12 && im.abs() < 1e-12));
    }
}
