//! 2-D convolution as one differentiable operation on flex under autodiff,
//! on asd's matrix kernel ([`super::gemm`]): per batch item, the input
//! unfolded into columns (im2col, [C_in·k_h·k_w, H_out·W_out]) and
//! multiplied by the weight; the backward forms the weight gradient
//! dW = dY·colsᵀ and the input gradient as Wᵀ·dY folded back onto the input
//! (col2im, a gather in a fixed order per channel plane). burn-flex's own
//! convolution multiplies through the `gemm` crate's AVX2 kernels and takes
//! the input gradient as a scatter (`conv_transpose`); they were most of
//! the Dual Branch CNN's spectrogram branch (BENCHMARKS.md, "Where the time
//! goes: one Dual Branch CNN training step").
//!
//! Covers what the models use: any stride, valid or explicit padding
//! (Keras "same" padding is asymmetric), no dilation, no groups, no bias. Anything else,
//! inference, other backends and CPUs without a kernel take burn's
//! `Conv2d::forward`.

use super::flex_op::{self, values};
use super::gemm::{self, Epilogue, PackedB};
use super::util::flex_training_f32;
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

/// `conv.forward(x)`, by asd's operation where it applies.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let plain = conv.groups == 1 && conv.dilation == [1, 1] && conv.bias.is_none();
    if plain
        && flex_training_f32(&x.device(), x.dtype())
        && gemm::available()
        && let Some(y) = differentiable(conv, &x)
    {
        return y;
    }
    conv.forward(x)
}

/// Sizes of one convolution: batch, input channels and size, output
/// channels, kernel, stride, the padding before each axis, output size.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Geometry {
    batch: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    top: usize,
    left: usize,
    ho: usize,
    wo: usize,
}

impl Geometry {
    /// Rows of the column matrix: C_in·k_h·k_w.
    fn depth(&self) -> usize {
        self.cin * self.kh * self.kw
    }

    /// Output pixels of one channel.
    fn pixels(&self) -> usize {
        self.ho * self.wo
    }

    /// The output columns `ox` whose input column `ox·sw + j − left` lies
    /// inside the input, as a range.
    fn valid_columns(&self, j: usize) -> std::ops::Range<usize> {
        let first = self.left.saturating_sub(j).div_ceil(self.sw);
        let end = (self.w + self.left).saturating_sub(j).div_ceil(self.sw).min(self.wo);
        first..end.max(first)
    }

    /// The input row of output row `oy` and kernel row `i`, if inside.
    fn input_row(&self, oy: usize, i: usize) -> Option<usize> {
        (oy * self.sh + i).checked_sub(self.top).filter(|&y| y < self.h)
    }
}

fn differentiable(conv: &Conv2d, x: &Tensor<4>) -> Option<Tensor<4>> {
    let [batch, cin, h, w] = x.dims();
    let [cout, _, kh, kw] = conv.weight.dims();
    let [sh, sw] = conv.stride;
    let (top, left, bottom, right) = match conv.padding {
        PaddingConfig2d::Valid => (0, 0, 0, 0),
        PaddingConfig2d::Explicit(t, l, b, r) => (t, l, b, r),
        PaddingConfig2d::Same => return None,
    };
    let (hp, wp) = (h + top + bottom, w + left + right);
    if hp < kh || wp < kw || sh == 0 || sw == 0 {
        return None;
    }
    let (ho, wo) = ((hp - kh) / sh + 1, (wp - kw) / sw + 1);
    let g = Geometry { batch, cin, h, w, cout, kh, kw, sh, sw, top, left, ho, wo };
    let (nodes, inputs) = flex_op::inputs([x, &conv.weight.val()])?;
    let y = forward(values(&inputs[0]), values(&inputs[1]), g);
    let y = FlexTensor::from_data(TensorData::new(y, [batch, cout, ho, wo]));
    Some(flex_op::record(Convolution, nodes, y, || Saved { inputs, geometry: g }))
}

/// y [B, C_out, H_out, W_out] of x [B, C_in, H, W] and w [C_out, C_in, k_h, k_w].
fn forward(x: &[f32], w: &[f32], g: Geometry) -> Vec<f32> {
    let plane = g.cin * g.h * g.w;
    let items: Vec<Vec<f32>> = (0..g.batch)
        .into_par_iter()
        .map(|b| {
            let cols = im2col(&x[b * plane..][..plane], g);
            gemm::matmul(w, &PackedB::new(&cols, g.depth(), g.pixels()), Epilogue::default(), g.cout)
        })
        .collect();
    items.concat()
}

/// The gradients of x and w from the output's gradient `dy`.
fn backward(x: &[f32], w: &[f32], dy: &[f32], g: Geometry) -> [Vec<f32>; 2] {
    let (plane, out) = (g.cin * g.h * g.w, g.cout * g.pixels());
    let (depth, pixels) = (g.depth(), g.pixels());
    let items: Vec<(Vec<f32>, Vec<f32>)> = (0..g.batch)
        .into_par_iter()
        .map(|b| {
            let dy = &dy[b * out..][..out]; // [C_out, P]
            // dWᵀ = cols·dYᵀ [depth, C_out]: transposing dY, not the larger cols.
            let cols = im2col(&x[b * plane..][..plane], g);
            let dyt = gemm::transpose(dy, g.cout, pixels);
            let dwt = gemm::matmul(&cols, &PackedB::new(&dyt, pixels, g.cout), Epilogue::default(), depth);
            drop(cols);
            let dcols = gemm::matmul_transposed_a(w, &PackedB::new(dy, g.cout, pixels), depth);
            (col2im(&dcols, g), dwt)
        })
        .collect();
    let mut dx = Vec::with_capacity(g.batch * plane);
    let mut dwt = vec![0f32; depth * g.cout];
    // Items in order: the weight gradient's sum does not depend on the
    // thread count.
    for (dx_b, dwt_b) in items {
        dx.extend_from_slice(&dx_b);
        dwt.iter_mut().zip(&dwt_b).for_each(|(a, b)| *a += b);
    }
    [dx, gemm::transpose(&dwt, depth, g.cout)]
}

/// The column matrix of one item x [C_in, H, W]: row (c, i, j), column
/// (oy, ox) holds x[c, oy·sh + i − top, ox·sw + j − left], zero outside.
fn im2col(x: &[f32], g: Geometry) -> Vec<f32> {
    let mut cols = vec![0f32; g.depth() * g.pixels()];
    cols.par_chunks_mut(g.pixels()).enumerate().for_each(|(row, out)| {
        let (c, i, j) = (row / (g.kh * g.kw), row / g.kw % g.kh, row % g.kw);
        let valid = g.valid_columns(j);
        for oy in 0..g.ho {
            let Some(y) = g.input_row(oy, i) else { continue };
            let src = &x[(c * g.h + y) * g.w..][..g.w];
            let dst = &mut out[oy * g.wo..][..g.wo][valid.clone()];
            let src = src[valid.start * g.sw + j - g.left..].iter().step_by(g.sw);
            dst.iter_mut().zip(src).for_each(|(d, s)| *d = *s);
        }
    });
    cols
}

/// The input gradient of one item from the column gradient `dcols`
/// ([depth, P]): every column entry added back to the input pixel it was
/// read from, channel planes in parallel, each in a fixed order.
fn col2im(dcols: &[f32], g: Geometry) -> Vec<f32> {
    let mut dx = vec![0f32; g.cin * g.h * g.w];
    dx.par_chunks_mut(g.h * g.w).enumerate().for_each(|(c, plane)| {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &dcols[((c * g.kh + i) * g.kw + j) * g.pixels()..][..g.pixels()];
                let valid = g.valid_columns(j);
                for oy in 0..g.ho {
                    let Some(y) = g.input_row(oy, i) else { continue };
                    let dst = plane[y * g.w..][..g.w][valid.start * g.sw + j - g.left..].iter_mut().step_by(g.sw);
                    let src = &row[oy * g.wo..][..g.wo][valid.clone()];
                    dst.zip(src).for_each(|(d, s)| *d += s);
                }
            }
        }
    });
    dx
}

#[derive(Debug)]
struct Convolution;

/// What the backward needs: x and w (contiguous); the columns are
/// recomputed rather than kept.
#[derive(Debug, Clone)]
struct Saved {
    inputs: [FlexTensor; 2],
    geometry: Geometry,
}

impl Backward<Flex, 2> for Convolution {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        flex_op::backward(ops, grads, |s, dy| {
            let g = s.geometry;
            let [dx, dw] = backward(values(&s.inputs[0]), values(&s.inputs[1]), dy, g);
            [(dx, [g.batch, g.cin, g.h, g.w]), (dw, [g.cout, g.cin, g.kh, g.kw])]
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Device, Distribution};

    fn max_rel(a: Tensor<4>, b: Tensor<4>) -> f32 {
        let top = b.clone().abs().max().into_scalar::<f32>().max(1e-6);
        (a - b).abs().max().into_scalar::<f32>() / top
    }

    /// Output, input gradient and weight gradient equal burn's convolution
    /// for the models' shapes: 7×7 stride 2 and 3×3 stride 2 with Keras's
    /// asymmetric padding, 3×3 stride 1, 1×1, a kernel wider than tall, a
    /// non-square input.
    #[test]
    fn equals_burns_convolution_and_its_gradients() {
        let device = Device::flex().autodiff();
        let cases = [
            ([1, 4], [7, 7], [2, 2], PaddingConfig2d::Explicit(2, 3, 3, 3), [3, 1, 29, 33]),
            ([3, 5], [3, 3], [2, 2], PaddingConfig2d::Explicit(0, 1, 1, 1), [2, 3, 12, 9]),
            ([4, 4], [3, 3], [1, 1], PaddingConfig2d::Explicit(1, 1, 1, 1), [2, 4, 10, 11]),
            ([3, 6], [1, 1], [1, 1], PaddingConfig2d::Valid, [2, 3, 7, 5]),
            ([2, 3], [2, 5], [1, 3], PaddingConfig2d::Explicit(1, 0, 0, 2), [2, 2, 8, 16]),
        ];
        for (channels, kernel, stride, padding, shape) in cases {
            let conv = Conv2dConfig::new(channels, kernel)
                .with_stride(stride)
                .with_padding(padding.clone())
                .with_bias(false)
                .init(&device);
            let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let w = Tensor::<4>::random(conv.forward(x.clone()).dims(), Distribution::Default, &device);
            let run = |f: &dyn Fn(Tensor<4>) -> Tensor<4>| {
                let x = x.clone().require_grad();
                let y = f(x.clone());
                let g = (y.clone() * w.clone()).sum().backward();
                (y, x.grad(&g).expect("dx"), conv.weight.val().grad(&g).expect("dw"))
            };
            let ours = run(&|x| conv2d(&conv, x));
            let burns = run(&|x| conv.forward(x));
            let case = format!("{channels:?} {kernel:?} {stride:?} {padding:?} {shape:?}");
            assert_eq!(ours.0.dims(), burns.0.dims(), "{case}");
            assert!(max_rel(ours.0, burns.0) < 1e-5, "y, {case}");
            assert!(max_rel(ours.1, burns.1) < 1e-5, "dx, {case}");
            assert!(max_rel(ours.2, burns.2) < 1e-5, "dw, {case}");
        }
    }
}
