//! Attention one (batch item, head) at a time on the CPU, every product by
//! [`gemm`]'s kernel: the forward (scores, a vectorized row softmax, the
//! value product) for inference and for training on flex, and the training
//! backward, which recomputes each head's probabilities from the saved row
//! log-sum-exp instead of keeping [B, H, N, M] of them (the flash-attention
//! backward: Dao et al., "FlashAttention", 2022, algorithm 4, here one whole
//! head per task, its N × M scores in cache-sized rows). Tasks run in
//! parallel; every value is computed in the same order whatever the thread
//! count.

use super::super::activation::exp_shifted_in_place;
use super::super::gemm::{self, Epilogue, PackedB};
use rayon::prelude::*;
use std::borrow::Cow;

/// Sizes of one head: queries, keys, key and value widths.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Head {
    pub n: usize,
    pub m: usize,
    pub d: usize,
    pub dv: usize,
}

/// Where the heads lie: [B, H, N, d] (head-major) or [B, N, H·d] (tokens).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Layout {
    Heads,
    Tokens,
}

impl Layout {
    /// Start and row stride of head `j` of batch item `i` in a tensor of
    /// `len` rows of `width` floats per head.
    fn place(self, i: usize, j: usize, heads: usize, len: usize, width: usize) -> (usize, usize) {
        match self {
            Layout::Heads => ((i * heads + j) * len * width, width),
            Layout::Tokens => (i * len * heads * width + j * width, heads * width),
        }
    }
}

/// `softmax(q·kᵀ·scale + bias)·v` for `b` batch items of `h` heads, q, k, v
/// in `layout`, `bias` [1 or B, H, N, M] with its batch size: the output in
/// `layout` and the row log-sum-exp of the scaled, biased scores [B, H, N]
/// (−∞ where the bias masks a whole row).
pub(super) fn forward(
    layout: Layout,
    [q, k, v]: [&[f32]; 3],
    bias: Option<(usize, &[f32])>,
    (b, h): (usize, usize),
    s: Head,
    scale: f32,
) -> (Vec<f32>, Vec<f32>) {
    let heads: Vec<(Vec<f32>, Vec<f32>)> = (0..b * h)
        .into_par_iter()
        .map(|t| {
            let (i, j) = (t / h, t % h);
            let bias = bias.map(|(items, data)| {
                let x = if items == 1 { j } else { t };
                &data[x * s.n * s.m..(x + 1) * s.n * s.m]
            });
            let at = |len, width| layout.place(i, j, h, len, width);
            let q = gather(q, at(s.n, s.d), s.n, s.d);
            let (k, v) = (gather(k, at(s.m, s.d), s.m, s.d), gather(v, at(s.m, s.dv), s.m, s.dv));
            head(&scaled(&q, scale), &k, &v, bias, s)
        })
        .collect();
    let mut out = vec![0f32; b * h * s.n * s.dv];
    let mut lse = Vec::with_capacity(b * h * s.n);
    for (t, (o, l)) in heads.iter().enumerate() {
        let (start, stride) = layout.place(t / h, t % h, h, s.n, s.dv);
        for (r, row) in o.chunks(s.dv).enumerate() {
            out[start + r * stride..][..s.dv].copy_from_slice(row);
        }
        lse.extend_from_slice(l);
    }
    (out, lse)
}

/// The gradients of q, k and v ([B, H, N or M, d], head-major) of
/// attention without a bias, from the forward's inputs, output `o`, row
/// log-sum-exp `lse` and the output's gradient `grad`.
pub(super) fn backward(
    [q, k, v, o, grad]: [&[f32]; 5],
    lse: &[f32],
    (b, h): (usize, usize),
    s: Head,
    scale: f32,
) -> [Vec<f32>; 3] {
    let heads: Vec<[Vec<f32>; 3]> = (0..b * h)
        .into_par_iter()
        .map(|t| {
            let (q, k, v) = (part(q, t, s.n * s.d), part(k, t, s.m * s.d), part(v, t, s.m * s.dv));
            let (o, grad, lse) = (part(o, t, s.n * s.dv), part(grad, t, s.n * s.dv), part(lse, t, s.n));
            head_backward([&scaled(q, scale), k, v, o, grad], lse, scale, s)
        })
        .collect();
    let mut out = [Vec::new(), Vec::new(), Vec::new()];
    for (all, part) in out.iter_mut().zip([b * h * s.n * s.d, b * h * s.m * s.d, b * h * s.m * s.dv]) {
        all.reserve_exact(part);
    }
    for grads in heads {
        for (all, g) in out.iter_mut().zip(grads) {
            all.extend_from_slice(&g);
        }
    }
    out
}

/// `x·scale`: the scale goes on q (N·d products) rather than on the N × M
/// scores, as the original BEATs and EAT code do.
fn scaled(x: &[f32], scale: f32) -> Vec<f32> {
    x.iter().map(|v| v * scale).collect()
}

/// Part `t` of `x`, in parts of `size`.
fn part(x: &[f32], t: usize, size: usize) -> &[f32] {
    &x[t * size..(t + 1) * size]
}

/// `len` rows of `width` floats from `start`, `stride` apart (a head's rows
/// as [`Layout::place`] gives them), borrowed when they are already
/// contiguous.
fn gather(data: &[f32], (start, stride): (usize, usize), len: usize, width: usize) -> Cow<'_, [f32]> {
    if stride == width {
        return Cow::Borrowed(&data[start..start + len * width]);
    }
    let mut out = Vec::with_capacity(len * width);
    (0..len).for_each(|r| out.extend_from_slice(&data[start + r * stride..][..width]));
    Cow::Owned(out)
}

/// `a·bᵀ` for row-major a [rows, w] and b [cols, w]: [rows, cols].
fn product_t(a: &[f32], b: &[f32], rows: usize, cols: usize, w: usize) -> Vec<f32> {
    gemm::matmul(a, &PackedB::new(&gemm::transpose(b, cols, w), w, cols), Epilogue::default(), rows)
}

/// One head's forward, row-major slices, q already scaled: the output
/// [n, d_v] and the row log-sum-exp [n].
fn head(q: &[f32], k: &[f32], v: &[f32], bias: Option<&[f32]>, s: Head) -> (Vec<f32>, Vec<f32>) {
    let mut p = product_t(q, k, s.n, s.m, s.d);
    let mut sums = vec![0f32; s.n];
    let mut lse = vec![f32::NEG_INFINITY; s.n];
    for (r, row) in p.chunks_mut(s.m).enumerate() {
        if let Some(b) = bias {
            row.iter_mut().zip(&b[r * s.m..(r + 1) * s.m]).for_each(|(x, b)| *x += b);
        }
        // f32::max passes over NaN; a NaN score still reaches the output
        // through its exponential, unless the row is NaN alone.
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            // Every key masked out: no weights, a zero output row (burn's
            // rule); NaN stays NaN.
            let nan = row.iter().any(|x| x.is_nan());
            row.fill(if nan { f32::NAN } else { 0.0 });
            lse[r] = if nan { f32::NAN } else { f32::NEG_INFINITY };
            continue;
        }
        sums[r] = exp_shifted_in_place(row, max);
        lse[r] = max + sums[r].ln();
    }
    let mut y = gemm::matmul(&p, &PackedB::new(v, s.m, s.dv), Epilogue::default(), s.n);
    for (o, sum) in y.chunks_mut(s.dv).zip(sums) {
        let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
        o.iter_mut().for_each(|o| *o *= inv);
    }
    (y, lse)
}

/// One head's backward (no bias), q already scaled: the gradients of the
/// unscaled q [n, d], k [m, d] and v [m, d_v]. With P the probabilities and
/// dO the output's gradient: dV = Pᵀ·dO, dP = dO·Vᵀ,
/// dS = P ∘ (dP − rowsum(dO ∘ O)), dQ = dS·K·scale, dK = dSᵀ·(q·scale).
fn head_backward([q, k, v, o, grad]: [&[f32]; 5], lse: &[f32], scale: f32, s: Head) -> [Vec<f32>; 3] {
    let mut p = product_t(q, k, s.n, s.m, s.d);
    for (row, &l) in p.chunks_mut(s.m).zip(lse) {
        if l.is_finite() {
            exp_shifted_in_place(row, l);
        } else {
            row.fill(if l.is_nan() { f32::NAN } else { 0.0 });
        }
    }
    let dv = gemm::matmul_transposed_a(&p, &PackedB::new(grad, s.n, s.dv), s.m);
    let mut ds = product_t(grad, v, s.n, s.m, s.dv);
    for (r, (ds, p)) in ds.chunks_mut(s.m).zip(p.chunks(s.m)).enumerate() {
        let (g, o) = (&grad[r * s.dv..(r + 1) * s.dv], &o[r * s.dv..(r + 1) * s.dv]);
        let delta: f32 = g.iter().zip(o).map(|(g, o)| g * o).sum();
        ds.iter_mut().zip(p).for_each(|(d, p)| *d = p * (*d - delta));
    }
    let mut dq = gemm::matmul(&ds, &PackedB::new(k, s.m, s.d), Epilogue::default(), s.n);
    dq.iter_mut().for_each(|x| *x *= scale);
    let dk = gemm::matmul_transposed_a(&ds, &PackedB::new(q, s.n, s.d), s.m);
    [dq, dk, dv]
}
