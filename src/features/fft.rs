//! Real FFTs on `realfft` (rustfft underneath) with shared, cached plans, and
//! the analysis windows of the front-ends.
//!
//! Plans are built once per (precision, length) by one process-wide
//! [`RealFftPlanner`] behind a mutex and shared as `Arc`s; an [`Rfft`] bundles
//! a plan with its input, output and scratch buffers so that a loop over
//! frames allocates nothing.
//!
//! Windows are computed in f64 and rounded by the caller when it works in f32.
//! Conventions (all verified against the reference libraries in the tests):
//! - [`hann_periodic`]: `0.5 − 0.5·cos(2πn/N)`, `torch.hann_window(N)` (default
//!   `periodic=True`), `scipy.signal.get_window('hann', N)` and librosa's
//!   `get_window('hann', N, fftbins=True)`.
//! - [`hann_symmetric`]: `0.5 − 0.5·cos(2πn/(N−1))`,
//!   `torch.hann_window(N, periodic=False)`: Kaldi's `hanning` window.
//! - [`povey`]: `hann_symmetric(N)^0.85`, Kaldi's default window.

use realfft::num_complex::Complex;
use realfft::{FftNum, RealFftPlanner, RealToComplex};
use std::sync::{Arc, Mutex, OnceLock};

/// Float types the front-ends run their FFTs in (f32 or f64).
pub trait Real: FftNum + realfft::num_traits::Float {
    /// The process-wide planner of this precision.
    fn planner() -> &'static Mutex<RealFftPlanner<Self>>;
    /// Widens (or keeps) an f32 sample.
    fn from_sample(v: f32) -> Self;
    /// Rounds to f32 (`as f32`).
    fn narrow(self) -> f32;
}

macro_rules! impl_real {
    ($t:ty) => {
        impl Real for $t {
            fn planner() -> &'static Mutex<RealFftPlanner<$t>> {
                static PLANNER: OnceLock<Mutex<RealFftPlanner<$t>>> = OnceLock::new();
                PLANNER.get_or_init(|| Mutex::new(RealFftPlanner::new()))
            }
            #[inline(always)]
            fn from_sample(v: f32) -> Self {
                v as $t
            }
            #[inline(always)]
            fn narrow(self) -> f32 {
                self as f32
            }
        }
    };
}
impl_real!(f32);
impl_real!(f64);

/// The cached forward real-FFT plan of length `n` (any length; realfft
/// handles mixed radices and primes).
pub fn plan<T: Real>(n: usize) -> Arc<dyn RealToComplex<T>> {
    assert!(n > 0, "FFT length must be positive");
    // A poisoned lock only means another thread panicked while planning; the
    // planner's cache is still usable.
    let mut planner = T::planner().lock().unwrap_or_else(|e| e.into_inner());
    planner.plan_fft_forward(n)
}

/// A forward real FFT of one length with its own buffers, reused across calls.
pub struct Rfft<T: Real> {
    plan: Arc<dyn RealToComplex<T>>,
    input: Vec<T>,
    output: Vec<Complex<T>>,
    scratch: Vec<Complex<T>>,
}

impl<T: Real> Rfft<T> {
    pub fn new(n: usize) -> Rfft<T> {
        let plan = plan::<T>(n);
        let input = plan.make_input_vec();
        let output = plan.make_output_vec();
        let scratch = plan.make_scratch_vec();
        Rfft { plan, input, output, scratch }
    }

    /// FFT length N.
    pub fn len(&self) -> usize {
        self.input.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input.is_empty()
    }

    /// The N real input samples to fill before [`Rfft::process`]. Their
    /// content is destroyed by the transform: fill all N every time.
    pub fn input_mut(&mut self) -> &mut [T] {
        &mut self.input
    }

    /// Transforms the input buffer; returns the N/2 + 1 bins (DC … Nyquist).
    pub fn process(&mut self) -> &[Complex<T>] {
        self.plan
            .process_with_scratch(&mut self.input, &mut self.output, &mut self.scratch)
            .expect("buffer lengths come from the plan");
        &self.output
    }
}

/// Periodic Hann window of length `n` (torch/scipy/librosa default), f64.
pub fn hann_periodic(n: usize) -> Vec<f64> {
    cosine_window(n, n as f64)
}

/// Symmetric Hann window of length `n` (`torch.hann_window(n, periodic=False)`), f64.
pub fn hann_symmetric(n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![1.0];
    }
    cosine_window(n, (n - 1) as f64)
}

/// Kaldi's "povey" window: the symmetric Hann window raised to 0.85, f64.
pub fn povey(n: usize) -> Vec<f64> {
    hann_symmetric(n).into_iter().map(|w| w.powf(0.85)).collect()
}

fn cosine_window(n: usize, denom: f64) -> Vec<f64> {
    let step = 2.0 * std::f64::consts::PI / denom;
    (0..n).map(|i| 0.5 - 0.5 * (step * i as f64).cos()).collect()
}

/// Rounds a window to f32 (for the f32 front-ends).
pub fn to_f32(w: &[f64]) -> Vec<f32> {
    w.iter().map(|&v| v as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_formulas() {
        let p = hann_periodic(4);
        let expect = [0.0, 0.5, 1.0, 0.5];
        assert!(p.iter().zip(expect).all(|(a, b)| (a - b).abs() < 1e-15), "{p:?}");
        let s = hann_symmetric(5);
        let expect = [0.0, 0.5, 1.0, 0.5, 0.0];
        assert!(s.iter().zip(expect).all(|(a, b)| (a - b).abs() < 1e-15), "{s:?}");
        // Symmetric windows are symmetric; the periodic one is the first N of N+1.
        let s400 = hann_symmetric(400);
        assert!((0..400).all(|i| (s400[i] - s400[399 - i]).abs() < 1e-15));
        let p1024 = hann_periodic(1024);
        let s1025 = hann_symmetric(1025);
        assert!(p1024.iter().zip(&s1025).all(|(a, b)| (a - b).abs() < 1e-15));
        let pv = povey(400);
        assert!(pv.iter().zip(&s400).all(|(a, b)| (a - b.powf(0.85)).abs() < 1e-15));
        assert_eq!(pv[0], 0.0);
        assert_eq!(hann_symmetric(1), vec![1.0]);
    }

    #[test]
    fn rfft_matches_a_direct_dft() {
        for n in [8usize, 15, 400, 512] {
            let x: Vec<f64> = (0..n).map(|i| ((i * 7 + 3) % 11) as f64 - 5.0).collect();
            let mut f = Rfft::<f64>::new(n);
            f.input_mut().copy_from_slice(&x);
            let y = f.process().to_vec();
            assert_eq!(y.len(), n / 2 + 1);
            for (k, yk) in y.iter().enumerate() {
                let (mut re, mut im) = (0.0, 0.0);
                for (i, xi) in x.iter().enumerate() {
                    let a = -2.0 * std::f64::consts::PI * (k * i) as f64 / n as f64;
                    re += xi * a.cos();
                    im += xi * a.sin();
                }
                assert!((yk.re - re).abs() < 1e-9 && (yk.im - im).abs() < 1e-9, "n={n} k={k}");
            }
            // A second use of the same buffers gives the same answer.
            f.input_mut().copy_from_slice(&x);
            assert_eq!(f.process(), &y[..]);
        }
    }

    #[test]
    fn plans_are_shared() {
        let a = plan::<f32>(160_000);
        let b = plan::<f32>(160_000);
        assert!(Arc::ptr_eq(&a, &b));
    }
}
