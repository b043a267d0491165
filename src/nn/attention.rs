//! Scaled dot-product attention, `softmax(q·kᵀ·scale + bias)·v`, in the form
//! each situation runs fastest in (BENCHMARKS.md, "Where the time goes").
//!
//! * Inference on flex, on a CPU [`super::gemm`] has a kernel for: per batch
//!   item and head, in parallel, the scores by that kernel, a vectorized
//!   row softmax, the value product by the kernel again. burn-flex's fused
//!   kernel multiplies through the `gemm` crate in 64-key tiles and takes
//!   libm's scalar `exp`: it was 15 % of an EAT forward.
//! * Inference on flex elsewhere: burn's fused kernel (`module::attention`:
//!   tiled, online softmax). Only on flex: the CubeCL kernel panics on
//!   shapes it does not support instead of falling back.
//! * Otherwise (training, other backends): one composition with the fewest
//!   passes over the [B, H, N, N] scores. burn's `softmax` under autodiff is
//!   max, subtract, exp, sum and divide, each a recorded op whose backward
//!   makes more full passes; here the scale goes on q (N·d elements, not
//!   N·N), the row max is a constant (softmax does not depend on it, so its
//!   gradient is exactly zero and need not be recorded), and the division by
//!   the row sum comes after the value product, on [B, H, N, d_v].

use super::activation::exp_shifted_in_place;
use super::gemm::{self, Epilogue, PackedB};
use super::util::{f32_slice as floats, flex_inference_f32};
use burn::tensor::module;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;

/// `softmax(q·kᵀ·scale + bias)·v` over [B, H, N, d]; `bias` broadcasts from
/// [1 or B, H, N, N]. Returns [B, H, N, d_v].
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Option<Tensor<4>>, scale: f64) -> Tensor<4> {
    let device = q.device();
    if flex_inference_f32(&device, q.dtype()) && gemm::available() {
        return per_head(q, k, v, bias, scale as f32);
    }
    if !device.is_autodiff() && device == Device::flex() {
        let options = AttentionModuleOptions { scale: Some(scale), softcap: None, is_causal: false };
        return module::attention(q, k, v, None, bias, options);
    }
    let [b, h, n, _] = q.dims();
    let m = k.dims()[2];
    // Whole batch items per part, each part's scores at most CHUNK elements
    // (one item when even that is more).
    let items = (CHUNK / (h * n * m).max(1)).clamp(1, b);
    if items == b {
        return composed(q, k, v, bias, scale);
    }
    let parts = (0..b)
        .step_by(items)
        .map(|s| {
            let len = items.min(b - s);
            let part = |t: &Tensor<4>| t.clone().narrow(0, s, len);
            let bias = bias.as_ref().map(|x| if x.dims()[0] == 1 { x.clone() } else { part(x) });
            composed(part(&q), part(&k), part(&v), bias, scale)
        })
        .collect();
    Tensor::cat(parts, 0)
}

/// Score elements per part of the composition (16 MiB). The parts' transient
/// tensors (scores, exponentials, their gradients) stay this small: peak
/// memory is what autodiff keeps rather than several full [B, H, N, N]
/// copies, and the element-wise passes run in cache. Measured on the Dual
/// Branch CNN's spectrum branch (BENCHMARKS.md): whole batch 4.2 s and
/// 1.7 GiB, parts of 2 items 4.1 s and 1.06 GiB, of 1 item 3.3 s and 1.0 GiB
/// per step; splitting the query rows instead was slower (3.9 s).
const CHUNK: usize = 1 << 22;

/// The fast inference path: one task per (batch item, head).
fn per_head(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Option<Tensor<4>>, scale: f32) -> Tensor<4> {
    let device = q.device();
    let [b, h, n, d] = q.dims();
    let (m, dv) = (k.dims()[2], v.dims()[3]);
    let bias = bias.map(|t| (t.dims()[0], t.into_data()));
    let (q, k, v) = (q.into_data(), k.into_data(), v.into_data());
    let (q, k, v) = (floats(&q), floats(&k), floats(&v));
    let mut out = vec![0f32; b * h * n * dv];
    out.par_chunks_mut(n * dv).enumerate().for_each(|(i, out)| {
        let bias = bias.as_ref().map(|(items, data)| {
            let j = if *items == 1 { i % h } else { i };
            &floats(data)[j * n * m..(j + 1) * n * m]
        });
        let shape = Head { n, m, d, dv };
        head(&q[i * n * d..][..n * d], &k[i * m * d..][..m * d], &v[i * m * dv..][..m * dv], bias, scale, shape, out);
    });
    Tensor::from_data(TensorData::new(out, [b, h, n, dv]), &device)
}

/// Sizes of one head: queries, keys, key and value widths.
#[derive(Clone, Copy)]
struct Head {
    n: usize,
    m: usize,
    d: usize,
    dv: usize,
}

/// `softmax(q·kᵀ·scale + bias)·v` for one head, row-major slices, into `out`.
fn head(q: &[f32], k: &[f32], v: &[f32], bias: Option<&[f32]>, scale: f32, s: Head, out: &mut [f32]) {
    let mut kt = vec![0f32; s.d * s.m];
    for (j, row) in k.chunks(s.d).enumerate() {
        row.iter().enumerate().for_each(|(c, &x)| kt[c * s.m + j] = x);
    }
    let mut p = gemm::matmul(q, &PackedB::new(&kt, s.d, s.m), Epilogue::default(), s.n);
    let mut sums = vec![0f32; s.n];
    for (r, row) in p.chunks_mut(s.m).enumerate() {
        match bias {
            Some(b) => row.iter_mut().zip(&b[r * s.m..(r + 1) * s.m]).for_each(|(x, b)| *x = *x * scale + b),
            None => row.iter_mut().for_each(|x| *x *= scale),
        }
        // f32::max passes over NaN; a NaN score still reaches the output
        // through its exponential, unless the row is NaN alone.
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            // Every key masked out: no weights, a zero output row (burn's
            // rule); NaN stays NaN.
            let nan = row.iter().any(|x| x.is_nan());
            row.fill(if nan { f32::NAN } else { 0.0 });
            continue;
        }
        sums[r] = exp_shifted_in_place(row, max);
    }
    let y = gemm::matmul(&p, &PackedB::new(v, s.m, s.dv), Epilogue::default(), s.n);
    for ((o, y), sum) in out.chunks_mut(s.dv).zip(y.chunks(s.dv)).zip(sums) {
        let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
        o.iter_mut().zip(y).for_each(|(o, y)| *o = y * inv);
    }
}

fn composed(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Option<Tensor<4>>, scale: f64) -> Tensor<4> {
    let mut logits = (q * scale).matmul(k.swap_dims(2, 3));
    if let Some(bias) = bias {
        logits = logits + bias;
    }
    let max = logits.clone().detach().max_dim(3);
    let e = (logits - max).exp();
    let sum = e.clone().sum_dim(3);
    e.matmul(v) / sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::softmax;
    use burn::tensor::{Distribution, TensorData};
    use rand_distr::{Distribution as _, StandardNormal};

    fn max_abs(a: Tensor<4>, b: Tensor<4>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    fn reference(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Option<Tensor<4>>, scale: f64) -> Tensor<4> {
        let mut logits = q.matmul(k.swap_dims(2, 3)) * scale;
        if let Some(b) = bias {
            logits = logits + b;
        }
        softmax(logits, 3).matmul(v)
    }

    /// q, k, v of batch 2, and a bias of batch `bias_batch` (1 broadcasts):
    /// N(0, 2²) draws from a private stream (the device's generator is shared
    /// by the tests that run at the same time).
    fn qkv(device: &Device, n: usize, bias_batch: usize) -> [Tensor<4>; 4] {
        let mut rng = crate::util::rng::stream(n as u64, &[bias_batch as u64]);
        let mut r = |s: [usize; 4]| {
            let v: Vec<f32> = (0..s.iter().product::<usize>())
                .map(|_| {
                    2.0 * {
                        let x: f32 = StandardNormal.sample(&mut rng);
                        x
                    }
                })
                .collect();
            Tensor::<4>::from_data(TensorData::new(v, s), device)
        };
        [r([2, 3, n, 8]), r([2, 3, n, 8]), r([2, 3, n, 5]), r([bias_batch, 3, n, n])]
    }

    /// Flex inference (the per-head kernel path on x86-64 with AVX2, burn's
    /// fused kernel elsewhere) and the composition (1 200 tokens: one batch
    /// item per part) agree with the textbook softmax form, without a bias,
    /// with a broadcast one and with one per batch item.
    #[test]
    fn every_path_equals_plain_softmax_attention() {
        for device in [Device::flex(), Device::flex().autodiff()] {
            for (n, bias_batch) in [(7, 1), (600, 2), (1200, 1), (1200, 2)] {
                let [q, k, v, b] = qkv(&device, n, bias_batch);
                for bias in [None, Some(b)] {
                    let got = attention(q.clone(), k.clone(), v.clone(), bias.clone(), 0.3);
                    let want = reference(q.clone(), k.clone(), v.clone(), bias, 0.3);
                    // Relative to the largest output (about 6 here): f32 rounding over 1 200 terms.
                    let top = want.clone().abs().max().into_scalar::<f32>().max(1.0);
                    let d = max_abs(got, want) / top;
                    assert!(d < 1e-5, "n {n}, bias batch {bias_batch}, autodiff {}: {d}", device.is_autodiff());
                }
            }
        }
    }

    /// The per-head path gives a zero row where the bias masks every key
    /// (burn's rule), and passes NaN on.
    #[test]
    fn masked_rows_and_nan() {
        let device = Device::flex();
        let [q, k, v, _] = qkv(&device, 5, 1);
        let mut mask = vec![0f32; 2 * 3 * 5 * 5];
        mask[..5].fill(f32::NEG_INFINITY); // item 0, head 0, query 0
        let bias = Tensor::<4>::from_data(TensorData::new(mask, [2, 3, 5, 5]), &device);
        let out = crate::nn::util::to_vec(attention(q.clone(), k.clone(), v.clone(), Some(bias), 0.3));
        assert!(out[..5].iter().all(|&x| x == 0.0), "{:?}", &out[..5]);
        assert!(out[5..].iter().all(|x| x.is_finite()));
        let nan = q.clone().slice_assign(
            [0..1, 0..1, 0..1, 0..1],
            Tensor::from_data(TensorData::new(vec![f32::NAN], [1, 1, 1, 1]), &device),
        );
        let out = crate::nn::util::to_vec(attention(nan, k, v, None, 0.3));
        assert!(out[..5].iter().all(|x| x.is_nan()), "{:?}", &out[..5]);
    }

    /// The composition's gradients (constant row max included) are those of
    /// the plain form, whole and in parts.
    #[test]
    fn gradients_equal_plain_softmax_attention() {
        for (n, bias_batch) in [(9, 1), (1200, 2)] {
            gradients_agree(n, bias_batch);
        }
    }

    fn gradients_agree(n: usize, bias_batch: usize) {
        let device = Device::flex().autodiff();
        let [q, k, v, b] = qkv(&device, n, bias_batch);
        let w = Tensor::<4>::random([2, 3, n, 5], Distribution::Default, &device).detach();
        let grads = |f: &dyn Fn(Tensor<4>, Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>| {
            let (q, k, v, b) = (
                q.clone().require_grad(),
                k.clone().require_grad(),
                v.clone().require_grad(),
                b.clone().require_grad(),
            );
            let g = (f(q.clone(), k.clone(), v.clone(), b.clone()) * w.clone()).sum().backward();
            [q, k, v, b].map(|t| t.grad(&g).expect("gradient"))
        };
        let got = grads(&|q, k, v, b| attention(q, k, v, Some(b), 0.4));
        let want = grads(&|q, k, v, b| reference(q, k, v, Some(b), 0.4));
        for (g, w) in got.into_iter().zip(want) {
            let top = w.clone().abs().max().into_scalar::<f32>().max(1.0);
            let d = max_abs(g, w) / top;
            assert!(d < 1e-5, "n {n}: {d}");
        }
    }
}
