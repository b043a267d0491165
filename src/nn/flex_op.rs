//! The seam between asd's own differentiable operations on flex
//! ([`super::attention`], [`super::conv2d`]) and burn's autodiff graph,
//! reached through burn's `extension` feature: the inputs as contiguous
//! flex tensors with their graph nodes, the output recorded as one node
//! whose backward is asd's, and that backward's gradients handed to the
//! parents.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::tensor::{Tensor, TensorData};

/// The autodiff backend of a flex device without gradient checkpointing
/// (a device with checkpointing has another type, and [`inputs`] declines
/// it).
type FlexAutodiff = burn::backend::Autodiff<Flex, NoCheckpointing>;

/// The values of a contiguous f32 flex tensor, borrowed.
pub fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32 tensor")
}

/// The tensors' graph nodes and contiguous values; `None` unless all are
/// `Autodiff<Flex>` tensors.
pub fn inputs<const D: usize, const N: usize>(tensors: [&Tensor<D>; N]) -> Option<([NodeGuard; N], [FlexTensor; N])> {
    let mut primitives = Vec::with_capacity(N);
    for t in tensors {
        primitives.push(t.clone().try_into_primitive::<FlexAutodiff>().ok()?);
    }
    let nodes = std::array::from_fn(|i| primitives[i].node());
    let mut values = primitives.into_iter().map(|p| p.into_primitive().to_contiguous());
    Some((nodes, std::array::from_fn(|_| values.next().expect("N tensors"))))
}

/// `out` as the output of `op` over the input `nodes`, with the state its
/// backward needs when any input is tracked (`state` is not called
/// otherwise).
pub fn record<O: Backward<Flex, N>, const D: usize, const N: usize>(
    op: O,
    nodes: [NodeGuard; N],
    out: FlexTensor,
    state: impl FnOnce() -> O::State,
) -> Tensor<D> {
    let out = match op.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(state(), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive::<FlexAutodiff>(out)
}

/// A backward step: `gradients` maps the state and the output's gradient
/// (contiguous) to each parent's gradient and shape, which go to the
/// parents that are tracked.
pub fn backward<S, const N: usize>(
    ops: Ops<S, N>,
    grads: &mut Gradients,
    gradients: impl FnOnce(&S, &[f32]) -> [(Vec<f32>, [usize; 4]); N],
) {
    let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
    let each = gradients(&ops.state, values(&grad));
    for (parent, (g, shape)) in ops.parents.into_iter().zip(each) {
        if let Some(node) = parent {
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(g, shape)));
        }
    }
}
