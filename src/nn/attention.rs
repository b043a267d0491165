//! Scaled dot-product attention, `softmax(q·kᵀ·scale + bias)·v`, in the form
//! each situation runs fastest in (BENCHMARKS.md, "Where the time goes").
//!
//! * Inference on flex: burn's fused kernel (`module::attention`: tiled, online
//!   softmax, no score matrix in memory). Only on flex: the CubeCL kernel
//!   panics on shapes it does not support instead of falling back.
//! * Otherwise (training, other backends): one composition with the fewest
//!   passes over the [B, H, N, N] scores. burn's `softmax` under autodiff is
//!   max, subtract, exp, sum and divide, each a recorded op whose backward
//!   makes more full passes; here the scale goes on q (N·d elements, not
//!   N·N), the row max is a constant (softmax does not depend on it, so its
//!   gradient is exactly zero and need not be recorded), and the division by
//!   the row sum comes after the value product, on [B, H, N, d_v].

use burn::tensor::module;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor};

/// `softmax(q·kᵀ·scale + bias)·v` over [B, H, N, d]; `bias` broadcasts from
/// [1 or B, H, N, N]. Returns [B, H, N, d_v].
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Option<Tensor<4>>, scale: f64) -> Tensor<4> {
    let device = q.device();
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

    /// Both the fused path (flex inference; 600 tokens take its tiled kernel)
    /// and the composition (1 200 tokens: one batch item per part) agree with
    /// the textbook softmax form, without a bias, with a broadcast one and
    /// with one per batch item.
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
