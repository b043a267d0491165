//! Scaled dot-product attention, `softmax(q·kᵀ·scale + bias)·v`, in the form
//! each situation runs fastest in (BENCHMARKS.md, "Where the time goes").
//!
//! * Inference on flex, on a CPU [`super::gemm`] has a kernel for
//!   ([`heads`]): per batch item and head, in parallel, the scores by that
//!   kernel, a vectorized row softmax, the value product by the kernel
//!   again. burn-flex's fused kernel multiplies through the `gemm` crate in
//!   64-key tiles and takes libm's scalar `exp`: it was 15 % of an EAT
//!   forward.
//! * Inference on flex elsewhere: burn's fused kernel (`module::attention`:
//!   tiled, online softmax). Only on flex: the CubeCL kernel panics on
//!   shapes it does not support instead of falling back.
//! * Training on flex without a bias, on such a CPU: one differentiable
//!   operation ([`flex_autodiff`]) whose forward and backward run per head on
//!   that kernel, keeping only q, k, v, the output and a row log-sum-exp for
//!   the backward.
//! * Otherwise (training with a bias, other backends): one composition with
//!   the fewest passes over the [B, H, N, N] scores. burn's `softmax` under autodiff is
//!   max, subtract, exp, sum and divide, each a recorded op whose backward
//!   makes more full passes; here the scale goes on q (N·d elements, not
//!   N·N), the row max is a constant (softmax does not depend on it, so its
//!   gradient is exactly zero and need not be recorded), and the division by
//!   the row sum comes after the value product, on [B, H, N, d_v].

mod flex_autodiff;
mod heads;

use super::gemm;
use super::util::{f32_slice as floats, flex_inference_f32, flex_training_f32};
use burn::tensor::module;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor, TensorData};
use heads::{Head, Layout};

/// `softmax(q·kᵀ·scale + bias)·v` over [B, H, N, d]; `bias` broadcasts from
/// [1 or B, H, N, N]. Returns [B, H, N, d_v].
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Option<Tensor<4>>, scale: f64) -> Tensor<4> {
    let device = q.device();
    if flex_inference_f32(&device, q.dtype()) && gemm::available() {
        let [b, h, n, d] = q.dims();
        let shape = Head { n, m: k.dims()[2], d, dv: v.dims()[3] };
        let out = per_head(Layout::Heads, [q, k, v], bias, (b, h), shape, scale);
        return Tensor::from_data(TensorData::new(out, [b, h, n, shape.dv]), &device);
    }
    if !device.is_autodiff() && device == Device::flex() {
        let options = AttentionModuleOptions { scale: Some(scale), softcap: None, is_causal: false };
        return module::attention(q, k, v, None, bias, options);
    }
    if bias.is_none()
        && flex_training_f32(&device, q.dtype())
        && gemm::available()
        && let Some(out) = flex_autodiff::attention(&q, &k, &v, scale as f32)
    {
        return out;
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

/// [`attention`] over token-major tensors, as Linear layers write them:
/// q [B, N, H·d], k [B, M, H·d], v [B, M, H·d_v], heads side by side in the
/// last dimension; returns [B, N, H·d_v]. The per-head path reads and writes
/// the heads in place: the split into [B, H, N, d] and back costs four
/// strided copies on flex (6–7 % of an EAT forward, BEATs alike).
pub fn attention_tokens(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    bias: Option<Tensor<4>>,
    scale: f64,
) -> Tensor<3> {
    let [b, n, hd] = q.dims();
    let [_, m, hdv] = v.dims();
    let device = q.device();
    if flex_inference_f32(&device, q.dtype()) && gemm::available() {
        let shape = Head { n, m, d: hd / heads, dv: hdv / heads };
        let out = per_head(Layout::Tokens, [q, k, v], bias, (b, heads), shape, scale);
        return Tensor::from_data(TensorData::new(out, [b, n, hdv]), &device);
    }
    let split = |t: Tensor<3>, len: usize, width: usize| t.reshape([b, len, heads, width / heads]).swap_dims(1, 2);
    let o = attention(split(q, n, hd), split(k, m, hd), split(v, m, hdv), bias, scale);
    o.swap_dims(1, 2).reshape([b, n, hdv])
}

/// The fast inference path ([`heads::forward`]) on tensors in `layout`:
/// the output in that layout.
fn per_head<const D: usize>(
    layout: Layout,
    qkv: [Tensor<D>; 3],
    bias: Option<Tensor<4>>,
    items: (usize, usize),
    shape: Head,
    scale: f64,
) -> Vec<f32> {
    // Fresh Linear outputs are read without a copy (flex hands over a
    // uniquely held contiguous buffer).
    let [q, k, v] = qkv.map(|t| t.into_data());
    let bias = bias.map(|t| (t.dims()[0], t.into_data()));
    let bias = bias.as_ref().map(|(batch, data)| (*batch, floats(data)));
    heads::forward(layout, [floats(&q), floats(&k), floats(&v)], bias, items, shape, scale as f32).0
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

    /// The token-major entry point equals [`attention`] on heads split out
    /// and merged back, bit for bit on each path, with and without a bias,
    /// for key and value widths that differ.
    #[test]
    fn token_major_equals_head_major() {
        for device in [Device::flex(), Device::flex().autodiff()] {
            let [q, k, v, bias] = qkv(&device, 37, 2); // d 8, d_v 5
            let merge = |t: Tensor<4>| {
                let [b, h, n, d] = t.dims();
                t.swap_dims(1, 2).reshape([b, n, h * d])
            };
            for bias in [None, Some(bias)] {
                let want = merge(attention(q.clone(), k.clone(), v.clone(), bias.clone(), 0.3));
                let got = attention_tokens(merge(q.clone()), merge(k.clone()), merge(v.clone()), 3, bias, 0.3);
                assert_eq!(got.dims(), [2, 37, 15]);
                assert_eq!(crate::nn::util::to_vec(got), crate::nn::util::to_vec(want));
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

    /// The gradients of every training path are those of the plain form:
    /// with a bias the composition (constant row max included), whole and in
    /// parts; without one, flex's fused operation (probabilities recomputed
    /// in the backward).
    #[test]
    fn gradients_equal_plain_softmax_attention() {
        for (n, bias_batch) in [(9, 1), (1200, 2)] {
            for bias in [true, false] {
                gradients_agree(n, bias_batch, bias);
            }
        }
    }

    fn gradients_agree(n: usize, bias_batch: usize, with_bias: bool) {
        let device = Device::flex().autodiff();
        let [q, k, v, b] = qkv(&device, n, bias_batch);
        let w = Tensor::<4>::random([2, 3, n, 5], Distribution::Default, &device).detach();
        type Attention<'a> = &'a dyn Fn(Tensor<4>, Tensor<4>, Tensor<4>, Option<Tensor<4>>) -> Tensor<4>;
        let grads = |f: Attention| {
            let [q, k, v, b] = [&q, &k, &v, &b].map(|t| t.clone().require_grad());
            let g = (f(q.clone(), k.clone(), v.clone(), with_bias.then(|| b.clone())) * w.clone()).sum().backward();
            [q, k, v, b].map(|t| t.grad(&g))
        };
        let got = grads(&|q, k, v, b| attention(q, k, v, b, 0.4));
        let want = grads(&|q, k, v, b| reference(q, k, v, b, 0.4));
        for (g, w) in got.into_iter().zip(want) {
            assert_eq!(g.is_some(), w.is_some());
            if let (Some(g), Some(w)) = (g, w) {
                let top = w.clone().abs().max().into_scalar::<f32>().max(1.0);
                let d = max_abs(g, w) / top;
                assert!(d < 1e-5, "n {n}, bias {with_bias}: {d}");
            }
        }
    }

    /// The fused operation's gradient where q, k and v are one tensor (the
    /// Dual Branch CNN's projection-free attention: three parents, one
    /// node), and for keys that outnumber the queries with values of
    /// another width.
    #[test]
    fn fused_gradients_for_shared_inputs_and_other_shapes() {
        let device = Device::flex().autodiff();
        let x = Tensor::<4>::random([2, 4, 50, 8], Distribution::Normal(0.0, 1.5), &device).require_grad();
        let shared = |f: &dyn Fn(Tensor<4>) -> Tensor<4>| {
            let x = x.clone().require_grad();
            let g = (f(x.clone()) * x.clone().detach()).sum().backward();
            x.grad(&g).expect("gradient")
        };
        let got = shared(&|x| attention(x.clone(), x.clone(), x, None, 0.35));
        let want = shared(&|x| reference(x.clone(), x.clone(), x, None, 0.35));
        let top = want.clone().abs().max().into_scalar::<f32>().max(1.0);
        assert!(max_abs(got, want) / top < 1e-5);

        let q = Tensor::<4>::random([1, 2, 30, 8], Distribution::Normal(0.0, 1.5), &device);
        let k = Tensor::<4>::random([1, 2, 70, 8], Distribution::Normal(0.0, 1.5), &device);
        let v = Tensor::<4>::random([1, 2, 70, 3], Distribution::Normal(0.0, 1.5), &device);
        let w = Tensor::<4>::random([1, 2, 30, 3], Distribution::Default, &device);
        let grads = |f: &dyn Fn(Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>| {
            let [q, k, v] = [&q, &k, &v].map(|t| t.clone().require_grad());
            let out = f(q.clone(), k.clone(), v.clone());
            assert_eq!(out.dims(), [1, 2, 30, 3]);
            let g = (out * w.clone()).sum().backward();
            [q, k, v].map(|t| t.grad(&g).expect("gradient"))
        };
        let got = grads(&|q, k, v| attention(q, k, v, None, 0.35));
        let want = grads(&|q, k, v| reference(q, k, v, None, 0.35));
        for (g, w) in got.into_iter().zip(want) {
            let top = w.clone().abs().max().into_scalar::<f32>().max(1.0);
            assert!(max_abs(g, w) / top < 1e-5);
        }
    }
}
