//! Attention without a bias as one differentiable operation on flex under
//! autodiff: forward and backward by [`super::heads`] (asd's matrix kernel,
//! the probabilities recomputed in the backward from the row log-sum-exp),
//! registered with burn's autodiff graph ([`crate::nn::flex_op`]) as a node
//! of three parents. burn records the composition as a dozen nodes, keeps
//! the [B, H, N, M] probabilities for the backward and multiplies through
//! the `gemm` crate, whose default build runs several times below this
//! kernel (BENCHMARKS.md, "Where the time goes: one Dual Branch CNN
//! training step").

use super::heads::{self, Head, Layout};
use crate::nn::flex_op::{self, values};
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::tensor::{Tensor, TensorData};

/// `softmax(q·kᵀ·scale)·v` of [B, H, N, d] f32 tensors on flex with
/// autodiff; `None` when the tensors are not `Autodiff<Flex>` ones.
pub(super) fn attention(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>, scale: f32) -> Option<Tensor<4>> {
    let [b, h, n, d] = q.dims();
    let shape = Head { n, m: k.dims()[2], d, dv: v.dims()[3] };
    let (nodes, inputs) = flex_op::inputs([q, k, v])?;
    let (out, lse) = heads::forward(Layout::Heads, inputs.each_ref().map(values), None, (b, h), shape, scale);
    let out = FlexTensor::from_data(TensorData::new(out, [b, h, n, shape.dv]));
    let saved = || {
        let lse = FlexTensor::from_data(TensorData::new(lse, [b, h, n]));
        Saved { inputs, out: out.clone(), lse, items: (b, h), shape, scale }
    };
    Some(flex_op::record(FusedAttention, nodes, out.clone(), saved))
}

#[derive(Debug)]
struct FusedAttention;

/// What the backward needs: q, k, v (contiguous), the output and its row
/// log-sum-exp; nothing of size N × M.
#[derive(Debug, Clone)]
struct Saved {
    inputs: [FlexTensor; 3],
    out: FlexTensor,
    lse: FlexTensor,
    items: (usize, usize),
    shape: Head,
    scale: f32,
}

impl Backward<Flex, 3> for FusedAttention {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        flex_op::backward(ops, grads, |s, grad| {
            let [q, k, v] = s.inputs.each_ref().map(values);
            let (o, lse) = (values(&s.out), values(&s.lse));
            let [dq, dk, dv] = heads::backward([q, k, v, o, grad], lse, s.items, s.shape, s.scale);
            let ((b, h), Head { n, m, d, dv: width }) = (s.items, s.shape);
            [(dq, [b, h, n, d]), (dk, [b, h, m, d]), (dv, [b, h, m, width])]
        });
    }
}
