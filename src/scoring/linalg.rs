//! Small dense f64 linear algebra for the back-ends: means, covariances and
//! Cholesky solves of symmetric positive-definite matrices (at most the
//! embedding dimension, 768).

use anyhow::{Result, bail};

/// Row-major square matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Square {
    pub n: usize,
    pub a: Vec<f64>,
}

impl Square {
    pub fn zeros(n: usize) -> Square {
        Square { n, a: vec![0.0; n * n] }
    }

    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.a[i * self.n + j]
    }

    pub fn trace(&self) -> f64 {
        (0..self.n).map(|i| self.at(i, i)).sum()
    }

    /// Adds `v` to the diagonal.
    pub fn add_diagonal(&mut self, v: f64) {
        for i in 0..self.n {
            self.a[i * self.n + i] += v;
        }
    }
}

/// Column means of rows.
pub fn mean(rows: &[Vec<f64>]) -> Vec<f64> {
    let n = rows.len().max(1) as f64;
    let mut m = vec![0.0; rows.first().map_or(0, Vec::len)];
    for r in rows {
        m.iter_mut().zip(r).for_each(|(a, b)| *a += b);
    }
    m.iter_mut().for_each(|a| *a /= n);
    m
}

/// Scatter matrix `Σ w_i (x_i − m)(x_i − m)ᵀ` (unit weights when `w` is None).
pub fn scatter(rows: &[Vec<f64>], m: &[f64], w: Option<&[f64]>) -> Square {
    let p = m.len();
    let mut s = Square::zeros(p);
    for (k, r) in rows.iter().enumerate() {
        let wk = w.map_or(1.0, |w| w[k]);
        let d: Vec<f64> = r.iter().zip(m).map(|(a, b)| a - b).collect();
        for i in 0..p {
            let di = wk * d[i];
            let row = &mut s.a[i * p..(i + 1) * p];
            for j in 0..=i {
                row[j] += di * d[j];
            }
        }
    }
    for i in 0..p {
        for j in 0..i {
            s.a[j * p + i] = s.a[i * p + j];
        }
    }
    s
}

/// Column means, in f64, of the rows of a flat row-major f32 matrix with
/// `p` columns (zeros for no rows).
pub fn flat_mean(rows: &[f32], p: usize) -> Vec<f64> {
    let mut m = vec![0.0f64; p];
    for r in rows.chunks_exact(p) {
        m.iter_mut().zip(r).for_each(|(a, &b)| *a += b as f64);
    }
    let n = (rows.len() / p).max(1) as f64;
    m.iter_mut().for_each(|a| *a /= n);
    m
}

/// Count, column means and scatter around the means of the rows of a
/// flat row-major f32 matrix with `p` columns, in f64. Many rows (a
/// machine's frame-level errors): the rows of the scatter are computed in
/// parallel, each by one thread over the data rows in order, so the result
/// does not depend on the thread count.
pub fn flat_moments(rows: &[f32], p: usize) -> (usize, Vec<f64>, Square) {
    use rayon::prelude::*;
    let n = rows.len() / p;
    let m = flat_mean(rows, p);
    let c: Vec<f64> = rows.chunks_exact(p).flat_map(|r| r.iter().zip(&m).map(|(&a, b)| a as f64 - b)).collect();
    let mut s = Square::zeros(p);
    // Upper triangle, row i of the scatter: Σ_r c_ri · c_r[i..].
    s.a.par_chunks_mut(p).enumerate().for_each(|(i, out)| {
        for r in c.chunks_exact(p) {
            let a = r[i];
            out[i..].iter_mut().zip(&r[i..]).for_each(|(o, &b)| *o += a * b);
        }
    });
    for i in 0..p {
        for j in 0..i {
            s.a[i * p + j] = s.a[j * p + i];
        }
    }
    (n, m, s)
}

/// Lower Cholesky factor `L` (`A = L Lᵀ`) of a symmetric positive-definite matrix.
#[derive(Debug, Clone)]
pub struct Cholesky {
    l: Square,
}

impl Cholesky {
    pub fn new(a: &Square) -> Result<Cholesky> {
        let n = a.n;
        let mut l = Square::zeros(n);
        for i in 0..n {
            for j in 0..=i {
                let mut s = a.at(i, j);
                for k in 0..j {
                    s -= l.a[i * n + k] * l.a[j * n + k];
                }
                if i == j {
                    if !s.is_finite() || s <= 0.0 {
                        bail!(
                            "the covariance matrix is not positive definite (pivot {i}: {s:e}); raise the shrinkage or regularisation"
                        );
                    }
                    l.a[i * n + i] = s.sqrt();
                } else {
                    l.a[i * n + j] = s / l.a[j * n + j];
                }
            }
        }
        Ok(Cholesky { l })
    }

    /// `L⁻¹ x` (forward substitution).
    pub fn whiten(&self, x: &[f64]) -> Vec<f64> {
        let n = self.l.n;
        let mut y = vec![0.0; n];
        for i in 0..n {
            let row = &self.l.a[i * n..i * n + i];
            let s: f64 = row.iter().zip(&y[..i]).map(|(a, b)| a * b).sum();
            y[i] = (x[i] - s) / self.l.a[i * n + i];
        }
        y
    }

    /// `xᵀ A⁻¹ x`.
    pub fn quad(&self, x: &[f64]) -> f64 {
        self.whiten(x).iter().map(|v| v * v).sum()
    }

    /// `A = L Lᵀ` again.
    pub fn matrix(&self) -> Square {
        let n = self.l.n;
        let mut a = Square::zeros(n);
        for i in 0..n {
            for j in 0..=i {
                let s: f64 = (0..=j).map(|k| self.l.a[i * n + k] * self.l.a[j * n + k]).sum();
                a.a[i * n + j] = s;
                a.a[j * n + i] = s;
            }
        }
        a
    }

    /// `log det A`.
    pub fn log_det(&self) -> f64 {
        2.0 * (0..self.l.n).map(|i| self.l.at(i, i).ln()).sum::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_moments_equal_the_row_scatter() {
        let rows: Vec<Vec<f64>> =
            (0..7).map(|r| (0..3).map(|c| ((r * 5 + c * 3) % 11) as f64 - 4.0).collect()).collect();
        let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
        let (n, m, s) = flat_moments(&flat, 3);
        assert_eq!((n, m.clone()), (7, mean(&rows)));
        assert_eq!(s.a, scatter(&rows, &m, None).a);
    }

    #[test]
    fn cholesky_solves_and_log_det_match_a_hand_computed_matrix() {
        // A = [[4, 2], [2, 3]]: det 8, A⁻¹ = [[3, -2], [-2, 4]] / 8.
        let a = Square { n: 2, a: vec![4.0, 2.0, 2.0, 3.0] };
        let c = Cholesky::new(&a).unwrap();
        assert!((c.log_det() - 8f64.ln()).abs() < 1e-12);
        // xᵀA⁻¹x for x = (1, 2): (3 − 8 + 16) / 8.
        assert!((c.quad(&[1.0, 2.0]) - 11.0 / 8.0).abs() < 1e-12);
        let singular = Square { n: 2, a: vec![1.0, 1.0, 1.0, 1.0] };
        assert!(Cholesky::new(&singular).is_err());
    }

    #[test]
    fn scatter_is_the_sum_of_outer_products_about_the_mean() {
        let rows = vec![vec![1.0, 2.0], vec![3.0, 6.0], vec![2.0, 1.0]];
        let m = mean(&rows);
        assert_eq!(m, vec![2.0, 3.0]);
        let s = scatter(&rows, &m, None);
        assert_eq!(s.a, vec![2.0, 4.0, 4.0, 14.0]);
    }
}
