//! Sums and means computed in the same floating-point order as numpy and
//! scipy, so that aggregated scores agree with the official evaluator to the
//! last bit where the inputs do.
//!
//! numpy reduces a contiguous float64 array with *pairwise summation*
//! (`pairwise_sum_DOUBLE`: plain loop below 8 elements, eight interleaved
//! accumulators up to 128, recursive halving above), starting from the
//! additive identity 0. `np.mean` divides that sum by the count, and
//! `scipy.stats.hmean` is `1 / mean(1 / a)`.

/// The evaluator's floor for every value entering a harmonic mean
/// (`sys.float_info.epsilon`).
pub const EPS: f64 = f64::EPSILON;

const BLOCK: usize = 128;

fn pairwise(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for &x in a {
            res += x;
        }
        res
    } else if n <= BLOCK {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - (n % 8) {
            for (j, acc) in r.iter_mut().enumerate() {
                *acc += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res += a[i];
            i += 1;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise(&a[..n2]) + pairwise(&a[n2..])
    }
}

/// `np.sum` of a contiguous float64 array.
pub fn np_sum(a: &[f64]) -> f64 {
    0.0 + pairwise(a)
}

/// `np.mean` (NaN for an empty slice, as numpy).
pub fn np_mean(a: &[f64]) -> f64 {
    np_sum(a) / a.len() as f64
}

/// `scipy.stats.hmean` of non-negative values: `1 / mean(1 / a)`
/// (a zero gives 0).
pub fn hmean(a: &[f64]) -> f64 {
    let inv: Vec<f64> = a.iter().map(|&x| 1.0 / x).collect();
    1.0 / np_mean(&inv)
}

/// `scipy.stats.hmean(numpy.maximum(a, sys.float_info.epsilon))`: the
/// evaluator's official-score formula.
pub fn hmean_floored(a: &[f64]) -> f64 {
    let floored: Vec<f64> = a.iter().map(|&x| x.max(EPS)).collect();
    hmean(&floored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_matches_plain_sum_on_exact_values() {
        for n in [0usize, 1, 7, 8, 9, 16, 127, 128, 129, 300, 1000] {
            let v: Vec<f64> = (0..n).map(|i| (i % 17) as f64).collect();
            let plain: f64 = v.iter().sum();
            assert_eq!(np_sum(&v), plain, "n={n}");
        }
    }

    #[test]
    fn pairwise_order_is_numpy_order() {
        // 20 values: eight interleaved accumulators over 16, then the tail.
        let v: Vec<f64> = (1..=20).map(|k| k as f64 * 0.1).collect();
        let mut r = [0.0; 8];
        r.copy_from_slice(&v[..8]);
        for j in 0..8 {
            r[j] += v[8 + j];
        }
        let expect = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7])) + v[16] + v[17] + v[18] + v[19];
        assert_eq!(np_sum(&v), expect);
    }

    #[test]
    fn hmean_floor() {
        assert_eq!(hmean_floored(&[0.0, 0.0]), EPS);
        assert!((hmean_floored(&[0.5, 0.75, 1.0]) - 0.6923076923076923).abs() < 1e-16);
        assert_eq!(hmean(&[0.0, 1.0]), 0.0);
    }
}
