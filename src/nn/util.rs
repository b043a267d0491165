//! Small tensor helpers burn does not ship.

use burn::tensor::{DType, Device};
use burn::tensor::{Int, Tensor, TensorData};

/// `log Σ exp(x)` along `dim`, kept as a size-1 dimension.
pub fn logsumexp<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    let m = x.clone().max_dim(dim).detach();
    (x - m.clone()).exp().sum_dim(dim).log() + m
}

/// Mean cross-entropy of `logits` [B, C] against class indices [B].
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let picked = logits.clone().gather(1, labels.unsqueeze_dim(1)); // [B, 1]
    (logsumexp(logits, 1) - picked).mean()
}

/// Row-wise L2 normalisation with PyTorch's `F.normalize` floor (1e-12).
pub fn l2_normalize<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    let n = x.clone().powi_scalar(2).sum_dim(dim).sqrt().clamp_min(1e-12);
    x / n
}

/// An Int tensor of class indices.
pub fn labels_tensor(labels: &[usize], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    Tensor::from_data(TensorData::new(v, [labels.len()]), device)
}

/// Whether a tensor of `dtype` on `device` is f32 inference on flex: where
/// asd's own CPU kernels ([`super::gemm`], [`super::activation`]) may stand
/// in for burn's operations (autodiff needs burn's, with their backward).
pub fn flex_inference_f32(device: &Device, dtype: DType) -> bool {
    !device.is_autodiff() && *device == Device::flex() && dtype == DType::F32
}

/// Whether a tensor of `dtype` on `device` is f32 training on flex: where
/// asd's differentiable operations ([`super::flex_op`]) may stand in for
/// burn's.
pub fn flex_training_f32(device: &Device, dtype: DType) -> bool {
    device.is_autodiff() && *device == Device::flex() && dtype == DType::F32
}

/// The values of f32 tensor data, borrowed.
pub fn f32_slice(data: &TensorData) -> &[f32] {
    data.as_slice::<f32>().expect("f32 tensor data")
}

/// Reads a float tensor back as f32 values.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().expect("float tensor")
}

/// Builds a module deterministically: burn's CPU backends draw initial
/// weights from one process-wide generator, lazily, at first use. Seeding,
/// building and touching every parameter under one lock makes the weights a
/// function of `seed` alone, even when other threads build models too.
pub fn seeded_init<M: burn::module::Module>(device: &Device, seed: u64, build: impl FnOnce() -> M) -> M {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    device.seed(seed);
    let model = build();
    model.visit(&mut Touch);
    model
}

struct Touch;

impl burn::module::ModuleVisitor for Touch {
    fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
        let _ = p.val();
    }
}

/// Id and shape of one float tensor of a module.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamMeta {
    pub id: burn::module::ParamId,
    pub shape: Vec<usize>,
}

/// Every float tensor of a module (parameters and batch-norm running
/// statistics) by its dotted path. Lazy: nothing is initialised or read.
pub fn named_params<M: burn::module::Module>(m: &M) -> std::collections::BTreeMap<String, ParamMeta> {
    #[derive(Default)]
    struct Named {
        path: Vec<String>,
        out: std::collections::BTreeMap<String, ParamMeta>,
    }
    impl burn::module::ModuleVisitor for Named {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            self.out.insert(self.path.join("."), ParamMeta { id: p.id, shape: p.lazy_shape().to_vec() });
        }
    }
    let mut v = Named::default();
    m.visit(&mut v);
    v.out
}

/// Number of learnable scalars of a module, as PyTorch counts
/// `parameters()`: batch-norm running statistics are excluded (burn's
/// `num_params` includes them).
pub fn count_params<M: burn::module::Module>(m: &M) -> usize {
    named_params(m)
        .iter()
        .filter(|(path, _)| !matches!(path.rsplit('.').next(), Some("running_mean" | "running_var")))
        .map(|(_, p)| p.shape.iter().product::<usize>())
        .sum()
}

/// Number of scalars that train (parameters requiring gradients: frozen
/// encoder weights and running statistics excluded). Materialises lazy
/// parameters.
pub fn count_trainable<M: burn::module::Module>(m: &M) -> usize {
    struct Count(usize);
    impl burn::module::ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            let t = p.val();
            if t.is_require_grad() {
                self.0 += t.shape().num_elements();
            }
        }
    }
    let mut c = Count(0);
    m.visit(&mut c);
    c.0
}

/// A float tensor's new value, addressed by its module path.
pub struct ParamValue {
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
    /// Transpose after building (PyTorch stores Linear weights as [out, in]).
    pub transpose: bool,
}

/// Replaces the float tensors named in `values` (parameters and running
/// statistics), keeping their ids and gradient settings. Returns the module
/// and the names that matched no tensor.
pub fn assign_params<M: burn::module::Module>(
    m: M,
    values: std::collections::BTreeMap<String, ParamValue>,
) -> (M, Vec<String>) {
    struct Assign {
        path: Vec<String>,
        values: std::collections::BTreeMap<String, ParamValue>,
    }
    impl burn::module::ModuleMapper for Assign {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, p: burn::module::Param<Tensor<D>>) -> burn::module::Param<Tensor<D>> {
            match self.values.remove(&self.path.join(".")) {
                Some(v) => {
                    let t = Tensor::<D>::from_data(TensorData::new(v.data, v.shape), &p.lazy_device());
                    let t = if v.transpose { t.transpose() } else { t };
                    let id = p.id;
                    p.transform_for_load(t, id)
                }
                None => p,
            }
        }
    }
    let mut a = Assign { path: Vec::new(), values };
    let m = m.map(&mut a);
    (m, a.values.into_keys().collect())
}
