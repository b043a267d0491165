//! `y = x·W + b` for burn's [`Linear`], through [`super::gemm`] where that
//! is faster: inference (no autodiff) on flex, on an x86-64 CPU with AVX2 and
//! FMA or with AVX-512. Every other case is burn's own `Linear::forward`. The
//! product is the same up to f32 rounding (a different summation order);
//! scores stay deterministic, and independent of the thread count, on either
//! path.
//!
//! Reading a weight out of a burn tensor copies it (twice, inside flex) and
//! the kernel wants it packed: 340 MB each way per EAT forward, a sixth of
//! the pass on two threads. [`with_frozen_weights`] keeps the packed weights
//! for the length of a scoring loop.

use super::activation::gelu_tensor;
use super::gemm::{self, Epilogue, PackedB};
use super::util::{f32_slice as floats, flex_inference_f32};
use burn::module::ParamId;
use burn::nn::Linear;
use burn::tensor::{Tensor, TensorData};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A weight ready for the kernel, with its bias.
struct Packed {
    weight: PackedB,
    bias: Option<Vec<f32>>,
}

thread_local! {
    /// The packed weights of the current [`with_frozen_weights`] scope on
    /// this thread, by parameter id; `None` outside a scope.
    static FROZEN: RefCell<Option<HashMap<ParamId, Rc<Packed>>>> = const { RefCell::new(None) };
}

/// Runs `f` with each Linear's packed weight kept from its first call on the
/// fast path to the end of `f`, on this thread, instead of read and packed
/// on every call. The weights are looked up by parameter id, so inside `f`
/// no parameter may change, and no two modules may share a parameter id but
/// not its value (a LoRA model and its merged copy do): scoring one model in
/// inference form over many clips. The cache costs one more copy of the
/// Linear weights in memory.
///
/// A scope inside another starts empty and puts the outer one back when it
/// ends: a rayon worker waiting inside a product may run another caller's
/// scope (another model) on the same thread.
pub fn with_frozen_weights<R>(f: impl FnOnce() -> R) -> R {
    type Cache = Option<HashMap<ParamId, Rc<Packed>>>;
    struct Restore(Cache);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            FROZEN.with(|c| *c.borrow_mut() = outer);
        }
    }
    let _restore = Restore(FROZEN.with(|c| c.replace(Some(HashMap::new()))));
    f()
}

/// `lin` applied to the last dimension of `x`.
pub fn forward<const D: usize>(lin: &Linear, x: Tensor<D>) -> Tensor<D> {
    if !fast_path(&x) {
        return lin.forward(x);
    }
    product(lin, x, false)
}

/// `gelu(lin(x))` (exact GELU); on the fast path in one pass.
pub fn forward_gelu<const D: usize>(lin: &Linear, x: Tensor<D>) -> Tensor<D> {
    if !fast_path(&x) {
        return gelu_tensor(lin.forward(x));
    }
    product(lin, x, true)
}

fn fast_path<const D: usize>(x: &Tensor<D>) -> bool {
    x.dims()[D - 1] > 0 && flex_inference_f32(&x.device(), x.dtype()) && gemm::available()
}

fn product<const D: usize>(lin: &Linear, x: Tensor<D>, gelu: bool) -> Tensor<D> {
    let device = x.device();
    let mut dims = x.dims();
    let m = dims[..D - 1].iter().product();
    let packed = packed(lin);
    let x = x.into_data();
    let epilogue = Epilogue { bias: packed.bias.as_deref(), gelu };
    let y = gemm::matmul(floats(&x), &packed.weight, epilogue, m);
    dims[D - 1] = packed.weight.cols();
    Tensor::from_data(TensorData::new(y, dims), &device)
}

/// `lin`'s weight and bias, from the scope's cache when there is one.
fn packed(lin: &Linear) -> Rc<Packed> {
    let id = lin.weight.id;
    let shape = lin.weight.lazy_shape();
    let (k, n) = (shape[0], shape[1]);
    let hit = FROZEN.with(|c| c.borrow().as_ref().and_then(|m| m.get(&id).cloned()));
    // A shape that differs is another module under the same id: repack.
    if let Some(p) = hit.filter(|p| (p.weight.rows(), p.weight.cols()) == (k, n)) {
        return p;
    }
    let p = Rc::new(Packed {
        weight: PackedB::new(floats(&lin.weight.val().into_data()), k, n),
        bias: lin.bias.as_ref().map(|b| floats(&b.val().into_data()).to_vec()),
    });
    FROZEN.with(|c| c.borrow_mut().as_mut().map(|m| m.insert(id, p.clone())));
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LinearConfig;
    use burn::tensor::{Device, Distribution};

    /// The gemm path equals burn's Linear (and Linear then GELU) within f32
    /// rounding, with and without a bias, for a batched 3-D input.
    #[test]
    fn equals_burns_linear() {
        let device = Device::flex();
        for bias in [true, false] {
            let lin = LinearConfig::new(300, 70).with_bias(bias).init(&device);
            let x = Tensor::<3>::random([2, 37, 300], Distribution::Normal(0.0, 1.0), &device);
            let got = forward(&lin, x.clone());
            let want = lin.forward(x.clone());
            assert_eq!(got.dims(), [2, 37, 70]);
            let err = (got - want.clone()).abs().max().into_scalar::<f32>();
            assert!(err < 1e-4, "bias {bias}: {err}");
            let err = (forward_gelu(&lin, x) - burn::tensor::activation::gelu(want)).abs().max().into_scalar::<f32>();
            assert!(err < 1e-4, "gelu, bias {bias}: {err}");
        }
    }

    /// Inside a scope the result is the same, bit for bit, on the first call
    /// and on later ones; the cache holds each weight once, an inner scope
    /// has its own, and it is gone after.
    #[test]
    fn frozen_weights_give_the_same_product() {
        let device = Device::flex();
        let lin = LinearConfig::new(64, 40).init(&device);
        let x = Tensor::<2>::random([9, 64], Distribution::Normal(0.0, 1.0), &device);
        let plain = forward(&lin, x.clone()).into_data();
        let cached = |()| FROZEN.with(|c| c.borrow().as_ref().map(HashMap::len));
        let one = usize::from(gemm::available());
        with_frozen_weights(|| {
            for _ in 0..2 {
                assert_eq!(forward(&lin, x.clone()).into_data(), plain);
            }
            assert_eq!(cached(()), Some(one));
            with_frozen_weights(|| assert_eq!(cached(()), Some(0)));
            assert_eq!(cached(()), Some(one), "the outer scope is back");
        });
        assert_eq!(cached(()), None);
    }
}
