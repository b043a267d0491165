//! Checkpoint state dicts and strict, key-mapped loading, shared by the
//! pre-trained encoders (BEATs, EAT).
//!
//! A [`StateDict`] holds tensor names and shapes, with the values read on
//! demand: from a torch zip pickle (burn-store's `pytorch_reader` parses the
//! pickle opcodes without executing any code), from a safetensors file, or
//! shapes only (key manifests). A model's loader lists its explicit key map
//! ([`KeyMapEntry`]: checkpoint name → burn parameter path), checks it with
//! [`key_problems`] and [`unexpected_keys`] (every problem of both sides,
//! each naming the key and both shapes) and assigns the values with
//! [`load_mapped`].

use crate::nn::util::{ParamValue, assign_params, named_params};
use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::store::pytorch_reader::{self, PytorchReader};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One row of a key map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMapEntry {
    /// Name in the original `state_dict`.
    pub torch: String,
    /// Parameter path in the burn module.
    pub burn: String,
    /// Stored [out, in] by torch, [in, out] by burn.
    pub transpose: bool,
}

enum Source {
    File(pytorch_reader::Tensor),
    Data(Vec<f32>),
    /// Shape only (key manifests); reading it is an error.
    None,
}

/// One tensor of a state dict.
pub struct StateTensor {
    pub shape: Vec<usize>,
    source: Source,
}

impl StateTensor {
    /// The values as f32 (f32 and f64 checkpoints are accepted).
    pub fn read(&self, name: &str) -> Result<Vec<f32>> {
        match &self.source {
            Source::Data(v) => Ok(v.clone()),
            Source::None => bail!("{name}: no data (shape-only state dict)"),
            Source::File(t) => {
                let bytes = t.read().with_context(|| format!("cannot read tensor {name}"))?;
                match t.dtype() {
                    pytorch_reader::DType::F32 => Ok(f32s(&bytes)),
                    pytorch_reader::DType::F64 => Ok(bytes
                        .chunks_exact(8)
                        .map(|c| f64::from_ne_bytes(c.try_into().expect("8 bytes")) as f32)
                        .collect()),
                    d => bail!("{name}: dtype {d:?} is not supported (expected float32)"),
                }
            }
        }
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// A checkpoint's tensors: name → shape and values.
#[derive(Default)]
pub struct StateDict {
    tensors: BTreeMap<String, StateTensor>,
}

impl StateDict {
    /// The tensors under `key` of a torch checkpoint (`None`: top level);
    /// nested dicts are flattened with dots (`_ema.blocks.0.…`).
    pub fn from_pt(path: &Path, key: Option<&str>) -> Result<StateDict> {
        let reader = match key {
            Some(k) => PytorchReader::with_top_level_key(path, k),
            None => PytorchReader::new(path),
        }
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let mut tensors = BTreeMap::new();
        for (name, t) in reader.into_tensors() {
            // PyTorch BatchNorm's int64 step counters are not weights and no
            // model here reads them.
            if name.ends_with(".num_batches_tracked") {
                continue;
            }
            if !matches!(t.dtype(), pytorch_reader::DType::F32 | pytorch_reader::DType::F64) {
                bail!(
                    "{}: tensor {name} has dtype {:?}; the checkpoint should hold float32 tensors",
                    path.display(),
                    t.dtype()
                );
            }
            tensors.insert(name, StateTensor { shape: t.shape().to_vec(), source: Source::File(t) });
        }
        Ok(StateDict { tensors })
    }

    /// Every tensor of a safetensors file (float32 or float64).
    pub fn from_safetensors(path: &Path) -> Result<StateDict> {
        use safetensors::{Dtype, SafeTensors};
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| anyhow::anyhow!("{} is not a safetensors file: {e}", path.display()))?;
        let mut out = StateDict::default();
        for (name, view) in st.tensors() {
            let data = match view.dtype() {
                Dtype::F32 => f32s(view.data()),
                Dtype::F64 => view
                    .data()
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                    .collect(),
                d => bail!("{}: tensor {name} has dtype {d:?}; expected float32", path.display()),
            };
            out.insert(&name, view.shape().to_vec(), data);
        }
        Ok(out)
    }

    /// Names and shapes without data (for checking key manifests).
    pub fn from_shapes(items: impl IntoIterator<Item = (String, Vec<usize>)>) -> StateDict {
        StateDict {
            tensors: items.into_iter().map(|(n, s)| (n, StateTensor { shape: s, source: Source::None })).collect(),
        }
    }

    /// Adds or replaces a tensor given by its values.
    pub fn insert(&mut self, name: &str, shape: Vec<usize>, data: Vec<f32>) {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "{name}: data does not fill the shape");
        self.tensors.insert(name.to_string(), StateTensor { shape, source: Source::Data(data) });
    }

    pub fn remove(&mut self, name: &str) -> Option<StateTensor> {
        self.tensors.remove(name)
    }

    pub fn get(&self, name: &str) -> Option<&StateTensor> {
        self.tensors.get(name)
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &StateTensor)> {
        self.tensors.iter()
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
}

/// Parameter paths and shapes of a module (lazy: nothing is initialised).
pub fn param_shapes<M: Module>(m: &M) -> BTreeMap<String, Vec<usize>> {
    named_params(m).into_iter().map(|(path, p)| (path, p.shape)).collect()
}

/// Whether a parameter path belongs to a LoRA adapter (never in checkpoints).
pub fn is_adapter(path: &str) -> bool {
    path.split('.').any(|s| s.ends_with("_lora"))
}

/// A shape with its last two dimensions swapped.
pub fn transposed(s: &[usize]) -> Vec<usize> {
    let mut t = s.to_vec();
    let n = t.len();
    t.swap(n - 2, n - 1);
    t
}

/// Missing and mis-shaped checkpoint keys of `map`, and model parameters
/// (other than adapters) no entry fills.
pub fn key_problems(map: &[KeyMapEntry], params: &BTreeMap<String, Vec<usize>>, state: &StateDict) -> Vec<String> {
    let mut problems = Vec::new();
    for e in map {
        let Some(model_shape) = params.get(&e.burn) else {
            problems.push(format!("key map names {} -> {}, which the model lacks (internal error)", e.torch, e.burn));
            continue;
        };
        let expected = if e.transpose { transposed(model_shape) } else { model_shape.clone() };
        match state.get(&e.torch) {
            None => problems.push(format!("missing key {} (the model expects shape {expected:?})", e.torch)),
            Some(t) if t.shape != expected => problems
                .push(format!("{}: checkpoint has shape {:?}, the model expects {expected:?}", e.torch, t.shape)),
            Some(_) => {}
        }
    }
    let mapped: BTreeSet<&str> = map.iter().map(|e| e.burn.as_str()).collect();
    for p in params.keys() {
        if !mapped.contains(p.as_str()) && !is_adapter(p) {
            problems.push(format!("model parameter {p} has no checkpoint key (internal error)"));
        }
    }
    problems
}

/// Checkpoint keys for which `known` is false, one problem each.
pub fn unexpected_keys(state: &StateDict, known: impl Fn(&str) -> bool, model: &str) -> Vec<String> {
    state
        .iter()
        .filter(|(k, _)| !known(k))
        .map(|(k, t)| {
            format!("unexpected key {k} (shape {:?}): a {model} model of this cfg has no such tensor", t.shape)
        })
        .collect()
}

/// One error listing every problem (Ok when there is none).
pub fn report(problems: Vec<String>, model: &str) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    bail!(
        "the checkpoint does not match the {model} model of its cfg ({} problem{}): {}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        summary(&problems)
    )
}

/// One line: up to eight problems in full; more are grouped by kind
/// (missing, unexpected, other) with each group counted and its first three named.
fn summary(problems: &[String]) -> String {
    if problems.len() <= 8 {
        return problems.join("; ");
    }
    let kind = |p: &String| ["missing key", "unexpected key"].into_iter().find(|k| p.starts_with(k));
    let mut parts = Vec::new();
    for k in [Some("missing key"), Some("unexpected key"), None] {
        let of: Vec<&String> = problems.iter().filter(|p| kind(p) == k).collect();
        if !of.is_empty() {
            let named: Vec<&str> = of.iter().take(3).map(|p| p.as_str()).collect();
            let more = if of.len() > 3 { "; …" } else { "" };
            parts.push(format!("{} × {}: {}{more}", of.len(), k.unwrap_or("other"), named.join("; ")));
        }
    }
    parts.join(" | ")
}

/// The values of every entry of `map`, read from `state` (keys checked
/// beforehand), by burn path.
pub fn mapped_values(map: &[KeyMapEntry], state: &StateDict) -> Result<BTreeMap<String, ParamValue>> {
    let mut values = BTreeMap::new();
    for e in map {
        let t = state.get(&e.torch).with_context(|| format!("missing key {}", e.torch))?;
        values.insert(
            e.burn.clone(),
            ParamValue { shape: t.shape.clone(), data: t.read(&e.torch)?, transpose: e.transpose },
        );
    }
    Ok(values)
}

/// Assigns `values` to `module` (ids and gradient settings kept); every
/// value must find its parameter.
pub fn assign_all<M: Module>(module: M, values: BTreeMap<String, ParamValue>) -> Result<M> {
    let (module, unassigned) = assign_params(module, values);
    if let Some(k) = unassigned.first() {
        bail!("parameter {k} was not assigned (internal error)");
    }
    Ok(module)
}
