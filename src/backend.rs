//! The one place that maps a backend name to a burn [`Device`].
//!
//! burn 0.22 dispatches at run time: models, losses and the training loop
//! take a `&Device` and never name a backend. Which backends exist in a
//! binary is decided by cargo features; asking for one that was not compiled
//! in is an error that names the feature to enable.

use anyhow::{Result, bail};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Backends a user can ask for with `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "snake_case")]
pub enum BackendName {
    /// Pure-Rust CPU backend (always compiled in; fast and deterministic).
    #[default]
    Flex,
    /// ndarray CPU backend (feature `ndarray`; deprecated upstream, slow for convolutions).
    Ndarray,
    /// Portable GPU backend over Vulkan/Metal/DX12 (feature `wgpu`).
    Wgpu,
    /// NVIDIA GPUs (feature `cuda`).
    Cuda,
    /// CubeCL's LLVM JIT on the CPU (feature `cpu`; needs the LLVM of `make setup-cuda`).
    Cpu,
}

impl BackendName {
    pub const ALL: [BackendName; 5] =
        [BackendName::Flex, BackendName::Ndarray, BackendName::Wgpu, BackendName::Cuda, BackendName::Cpu];

    pub fn as_str(self) -> &'static str {
        match self {
            BackendName::Flex => "flex",
            BackendName::Ndarray => "ndarray",
            BackendName::Wgpu => "wgpu",
            BackendName::Cuda => "cuda",
            BackendName::Cpu => "cpu",
        }
    }

    /// Whether this binary was built with the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            BackendName::Flex => true,
            BackendName::Ndarray => cfg!(feature = "ndarray"),
            BackendName::Wgpu => cfg!(feature = "wgpu"),
            BackendName::Cuda => cfg!(feature = "cuda"),
            BackendName::Cpu => cfg!(feature = "cpu"),
        }
    }

    /// Compiled-in backends, for help texts and the test suite.
    pub fn compiled() -> Vec<BackendName> {
        Self::ALL.into_iter().filter(|b| b.is_compiled()).collect()
    }
}

impl fmt::Display for BackendName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The inference device for a backend (no autodiff). Use
/// [`Device::autodiff`] on it for training.
pub fn device(name: BackendName) -> Result<Device> {
    if !name.is_compiled() {
        bail!(
            "backend '{name}' is not compiled into this binary; rebuild with \
             `cargo build --release --features {name}` (compiled in: {})",
            BackendName::compiled().iter().map(|b| b.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    let device = match name {
        BackendName::Flex => Device::flex(),
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        BackendName::Ndarray => Device::ndarray(),
        #[cfg(feature = "wgpu")]
        BackendName::Wgpu => Device::wgpu(burn::tensor::DeviceKind::default()),
        #[cfg(feature = "cuda")]
        BackendName::Cuda => Device::cuda(0),
        #[cfg(feature = "cpu")]
        BackendName::Cpu => Device::cpu(),
        #[allow(unreachable_patterns)]
        _ => unreachable!("checked by is_compiled"),
    };
    if matches!(name, BackendName::Wgpu | BackendName::Cuda) {
        return probed(name, device);
    }
    Ok(device)
}

/// `device` after one tiny operation on it (see [`probe`]).
fn probed(name: BackendName, device: Device) -> Result<Device> {
    probe(name, || {
        burn::tensor::Tensor::<1>::zeros([1], &device).into_data();
    })?;
    Ok(device)
}

/// The devices of a data-parallel run: `indices` of one backend (GPU
/// numbers as the backend counts them; empty: its one default device).
/// The first is the main device, which holds the model and optimizer.
pub fn devices(name: BackendName, indices: &[usize]) -> Result<Vec<Device>> {
    if indices.is_empty() {
        return Ok(vec![device(name)?]);
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(d) = indices.iter().find(|&&i| !seen.insert(i)) {
        bail!("--devices lists device {d} twice");
    }
    match name {
        BackendName::Cuda | BackendName::Wgpu => indices.iter().map(|&i| indexed(name, i)).collect(),
        _ if indices == [0] => Ok(vec![device(name)?]),
        _ => bail!("backend '{name}' has one device; --devices with several needs a GPU backend (cuda or wgpu)"),
    }
}

/// GPU number `index` of a backend (wgpu: the index-th discrete GPU, so
/// that `--devices 0,1` never names one GPU twice), probed like [`device`].
#[allow(unreachable_code, unused_variables)] // builds without a GPU feature
fn indexed(name: BackendName, index: usize) -> Result<Device> {
    if !name.is_compiled() {
        return device(name); // its error names the feature to build with
    }
    let device = match name {
        #[cfg(feature = "cuda")]
        BackendName::Cuda => Device::cuda(index),
        #[cfg(feature = "wgpu")]
        BackendName::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(index)),
        _ => bail!("backend '{name}' has no device {index}"),
    };
    probed(name, device).map_err(|e| anyhow::anyhow!("device {index}: {e}"))
}

/// What a GPU backend needs from the machine, for the probe's message.
fn requirement(name: BackendName) -> &'static str {
    match name {
        BackendName::Cuda => {
            "the NVIDIA driver (libcuda.so.1) and, for kernels, libdevice under CUDA_PATH (README \"Backends\")"
        }
        BackendName::Wgpu => {
            "a Vulkan, Metal or DX12 driver (on Linux libvulkan.so.1 and an ICD, e.g. mesa-vulkan-drivers)"
        }
        _ => "nothing",
    }
}

/// Runs `first_op` (a first tiny operation on a new device). A backend
/// whose driver is missing panics inside its runtime, often on a worker
/// thread with a second panic on the caller's side; here that becomes one
/// error line naming the backend, the first panic message and what the
/// backend needs. Panic messages are kept off stderr while it runs.
pub fn probe(name: BackendName, first_op: impl FnOnce()) -> Result<()> {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = Arc::clone(&seen);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let p = info.payload();
        let msg = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned());
        record.lock().unwrap_or_else(|e| e.into_inner()).push(msg.unwrap_or_else(|| "unknown panic".into()));
    }));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(first_op));
    std::panic::set_hook(previous);
    if outcome.is_ok() {
        return Ok(());
    }
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    let first = seen.first().map_or("unknown panic", |s| s.as_str()).lines().next().unwrap_or("").trim();
    // cudarc's message goes on to list 34 library names it tried.
    let first = first.split(" - searched for").next().unwrap_or(first);
    bail!("backend '{name}' cannot start on this machine ({first}); it needs {}; use --backend flex", requirement(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_backend_names_its_feature() {
        for b in BackendName::ALL {
            match device(b) {
                Ok(_) => assert!(b.is_compiled()),
                Err(e) => {
                    let e = e.to_string();
                    assert!(e.contains(&format!("--features {b}")), "{e}");
                }
            }
        }
        assert!(BackendName::compiled().contains(&BackendName::Flex));
    }

    #[test]
    fn cpu_backends_have_one_device() {
        assert_eq!(devices(BackendName::Flex, &[]).unwrap().len(), 1);
        assert_eq!(devices(BackendName::Flex, &[0]).unwrap().len(), 1);
        let err = devices(BackendName::Flex, &[0, 1]).unwrap_err().to_string();
        assert!(err.contains("has one device") && err.contains("cuda"), "{err}");
        assert!(devices(BackendName::Flex, &[1, 1]).unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn a_backend_that_panics_on_start_is_one_error_line() {
        // As cudarc without a driver: the runtime's thread panics, then the
        // caller's receive fails.
        let err = probe(BackendName::Cuda, || {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let worker = std::thread::spawn(move || {
                let _tx = tx;
                // cudarc 0.19's wording, cut short (it lists 34 names).
                panic!("Unable to dynamically load the \"cuda\" shared library - searched for library names: [\"libcuda.so\"]. Ensure that …\nmore detail");
            });
            let _ = worker.join();
            rx.recv().unwrap();
        })
        .unwrap_err()
        .to_string();
        assert!(!err.contains('\n') && !err.contains("searched"), "{err}");
        assert!(err.starts_with("backend 'cuda' cannot start on this machine (Unable to dynamically load"), "{err}");
        assert!(err.contains("libcuda.so.1") && err.contains("--backend flex"), "{err}");
        assert!(probe(BackendName::Wgpu, || {}).is_ok());
    }
}
