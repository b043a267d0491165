//! Attention without a bias as one differentiable operation on flex under
//! autodiff: forward and backward by [`super::heads`] (asd's matrix kernel,
//! the probabilities recomputed in the backward from the row log-sum-exp),
//! registered with burn's autodiff graph as a node of three parents.
//! burn records the composition as a dozen nodes, keeps the [B, H, N, M]
//! probabilities for the backward and multiplies through the `gemm` crate,
//! whose default build runs several times below this kernel
//! (BENCHMARKS.md, "Where the time goes: one Dual Branch CNN training step").
//!
//! Reached through burn's `extension` feature (`Tensor::try_into_primitive`
//! to the `Autodiff<Flex>` primitive and back). A device with gradient
//! checkpointing has another autodiff type; [`attention`] declines it.

use super::heads::{self, Head, Layout};
use crate::nn::util::{FlexAutodiff as Ad, flex_values as values};
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::tensor::{Tensor, TensorData};
use std::sync::Arc;

/// `softmax(q·kᵀ·scale)·v` of [B, H, N, d] f32 tensors on flex with
/// autodiff; `None` when the tensors are not `Autodiff<Flex>` ones.
pub(super) fn attention(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>, scale: f32) -> Option<Tensor<4>> {
    let [b, h, n, d] = q.dims();
    let shape = Head { n, m: k.dims()[2], d, dv: v.dims()[3] };
    let primitive = |t: &Tensor<4>| t.clone().try_into_primitive::<Ad>().ok();
    let (q, k, v) = (primitive(q)?, primitive(k)?, primitive(v)?);
    let nodes = [q.node(), k.node(), v.node()];
    let inputs = [q.into_primitive(), k.into_primitive(), v.into_primitive()].map(|t| t.to_contiguous());
    let (out, lse) = heads::forward(Layout::Heads, inputs.each_ref().map(values), None, (b, h), shape, scale);
    let out = FlexTensor::from_data(TensorData::new(out, [b, h, n, shape.dv]));
    let out = match FusedAttention.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let saved = Saved { inputs, out: out.clone(), lse: Arc::new(lse), items: (b, h), shape, scale };
            prep.finish(saved, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Some(Tensor::from_primitive::<Ad>(out))
}

#[derive(Debug)]
struct FusedAttention;

/// What the backward needs: q, k, v (contiguous), the output and its row
/// log-sum-exp; nothing of size N × M.
#[derive(Clone)]
struct Saved {
    inputs: [FlexTensor; 3],
    out: FlexTensor,
    lse: Arc<Vec<f32>>,
    items: (usize, usize),
    shape: Head,
    scale: f32,
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saved").field("items", &self.items).field("shape", &self.shape).finish()
    }
}

impl Backward<Flex, 3> for FusedAttention {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let s = ops.state;
        let [q, k, v] = s.inputs.each_ref().map(values);
        let (o, g) = (values(&s.out), values(&grad));
        let (b, h) = s.items;
        let shapes = [[b, h, s.shape.n, s.shape.d], [b, h, s.shape.m, s.shape.d], [b, h, s.shape.m, s.shape.dv]];
        let gradients = heads::backward([q, k, v, o, g], &s.lse, s.items, s.shape, s.scale);
        for ((parent, g), shape) in ops.parents.into_iter().zip(gradients).zip(shapes) {
            if let Some(node) = parent {
                grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(g, shape)));
            }
        }
    }
}
