//! Element-wise functions of the inference fast path: GELU for
//! [`super::gemm`]'s epilogue, the softmax exponentials of
//! [`super::attention`]. burn-flex evaluates GELU with libm's scalar `erff`
//! on one thread below 4 M elements: about 25 ns an element here, 40 ms for
//! one 513 × 3072 MLP activation of EAT or BEATs, as long as the layer's
//! matrix product. These are branch-free, so the compiler vectorizes them (8
//! lanes with AVX2), and their callers run them on every thread.

use super::util::{flex_inference_f32, to_vec};
use burn::tensor::{Tensor, TensorData};

/// Exact GELU of a tensor: [`gelu_in_place`] in inference on flex (f32),
/// so a layer gives the same values whether or not its product took the
/// fused path; burn's own elsewhere (autodiff needs its backward).
pub fn gelu_tensor<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if !flex_inference_f32(&device, x.dtype()) {
        return burn::tensor::activation::gelu(x);
    }
    let dims = x.dims();
    let mut v = to_vec(x);
    gelu_in_place(&mut v);
    Tensor::from_data(TensorData::new(v, dims), &device)
}

/// Exact GELU, `x·Φ(x) = 0.5·x·(1 + erf(x/√2))`, in place.
///
/// erf is Abramowitz and Stegun's 7.1.26 (Handbook of Mathematical
/// Functions, 1964; |error| ≤ 1.5e-7, the size of one f32 rounding near 1),
/// the form PyTorch's vectorized CPU GELU also takes; the exponential is a
/// range reduction to |r| ≤ ln2/2 and a degree-6 polynomial. Every lane
/// computes the same IEEE operations in the same order, so the result does
/// not depend on the vector width or the thread count.
pub fn gelu_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present.
        return unsafe { gelu_avx2(x) };
    }
    x.iter_mut().for_each(|v| *v = gelu(*v));
}

/// # Safety
/// AVX2 is present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gelu_avx2(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = gelu(*v));
}

/// `x ← e^(x − shift)` for a row whose maximum is `shift`; returns the sum
/// of the new row. The sum runs over 8 interleaved partial sums combined in
/// a fixed order (vectorizable, and the same on any CPU).
pub fn exp_shifted_in_place(x: &mut [f32], shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present.
        return unsafe { exp_shifted_avx2(x, shift) };
    }
    exp_shifted(x, shift)
}

/// # Safety
/// AVX2 is present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn exp_shifted_avx2(x: &mut [f32], shift: f32) -> f32 {
    exp_shifted(x, shift)
}

#[inline(always)]
fn exp_shifted(x: &mut [f32], shift: f32) -> f32 {
    x.iter_mut().for_each(|v| *v = exp_nonpositive(*v - shift));
    let mut lanes = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        lanes.iter_mut().zip(c).for_each(|(l, v)| *l += v);
    }
    let tail: f32 = chunks.remainder().iter().sum();
    let [a, b, c, d, e, f, g, h] = lanes;
    (((a + b) + (c + d)) + ((e + f) + (g + h))) + tail
}

/// One element of [`gelu_in_place`].
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_8, -1.453_152, 1.061_405_4];
    let u = x * std::f32::consts::FRAC_1_SQRT_2;
    let a = u.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = ((((A[4] * t + A[3]) * t + A[2]) * t + A[1]) * t + A[0]) * t;
    let erf = (1.0 - poly * exp_nonpositive(-(a * a))).copysign(u);
    0.5 * x * (1.0 + erf)
}

/// `e^z` for z ≤ 0 (NaN passes through; below −87 it is about 1.6e-38).
#[inline(always)]
fn exp_nonpositive(z: f32) -> f32 {
    // Adding 1.5·2²³ rounds z·log₂e to the nearest integer n and leaves n
    // in the low mantissa bits: no float-to-int conversion, which would not
    // vectorize without SSE4.1.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const C: [f32; 6] = [0.5, 1.666_666_5e-1, 4.166_579_6e-2, 8.333_452e-3, 1.398_2e-3, 1.987_569_1e-4];
    let z = z.max(-87.0);
    let k = z * std::f32::consts::LOG2_E + ROUND;
    let n = k - ROUND;
    let r = (z - n * LN2_HI) - n * LN2_LO;
    let p = ((((C[5] * r + C[4]) * r + C[3]) * r + C[2]) * r + C[1]) * r + C[0];
    let er = (p * r) * r + r + 1.0;
    // 2ⁿ: n + 127 into the exponent field (n ≥ −126 after the clamp).
    let scale = f32::from_bits(k.to_bits().wrapping_add(127) << 23);
    er * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(x: f32) -> f64 {
        let x = x as f64;
        0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
    }

    /// Within a few f32 roundings of the f64 GELU from −12 to 12, and the
    /// vectorized slice path equals the scalar one bit for bit.
    #[test]
    fn matches_the_exact_gelu() {
        let xs: Vec<f32> = (-120_000..=120_000).map(|i| i as f32 * 1e-4).collect();
        let mut worst = 0f64;
        for &x in &xs {
            let err = (gelu(x) as f64 - exact(x)).abs() / (x.abs() as f64).max(1.0);
            worst = worst.max(err);
        }
        assert!(worst < 4e-7, "worst scaled error {worst}");
        let mut ys = xs.clone();
        gelu_in_place(&mut ys);
        assert!(ys.iter().zip(&xs).all(|(y, x)| y.to_bits() == gelu(*x).to_bits()));
    }

    /// The shifted exponentials and their sum against f64, for rows shorter
    /// and longer than the 8 lanes.
    #[test]
    fn exponentials_and_their_sum() {
        for len in [1, 7, 8, 9, 513] {
            let row: Vec<f32> = (0..len).map(|i| ((i * 37) % 101) as f32 * 0.2 - 20.0).collect();
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut got = row.clone();
            let sum = exp_shifted_in_place(&mut got, max);
            let want: Vec<f64> = row.iter().map(|&v| (v as f64 - max as f64).exp()).collect();
            for (g, w) in got.iter().zip(&want) {
                assert!((*g as f64 - w).abs() <= 3e-7 * w.max(1e-30), "{len}: {g} vs {w}");
            }
            let total: f64 = want.iter().sum();
            assert!((sum as f64 - total).abs() < 1e-6 * total, "{len}: {sum} vs {total}");
        }
    }

    /// The ends: ±∞, NaN, values where e^(−u²) underflows, and 0.
    #[test]
    fn handles_the_ends() {
        assert_eq!(gelu(f32::INFINITY), f32::INFINITY);
        assert!(gelu(f32::NEG_INFINITY).is_nan(), "−∞·0, as 0.5·x·(1 + erf x) gives everywhere");
        assert!(gelu(f32::NAN).is_nan());
        assert_eq!(gelu(0.0), 0.0);
        assert_eq!(gelu(30.0), 30.0);
        assert_eq!(gelu(-30.0), 0.0);
        for z in [-87.0f32, -50.0, -1.0, -0.3, 0.0] {
            let rel = (exp_nonpositive(z) as f64 - (z as f64).exp()).abs() / (z as f64).exp();
            assert!(rel < 3e-7, "exp({z}): {rel}");
        }
    }
}
