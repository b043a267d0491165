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
}

impl BackendName {
    pub const ALL: [BackendName; 4] = [BackendName::Flex, BackendName::Ndarray, BackendName::Wgpu, BackendName::Cuda];

    pub fn as_str(self) -> &'static str {
        match self {
            BackendName::Flex => "flex",
            BackendName::Ndarray => "ndarray",
            BackendName::Wgpu => "wgpu",
            BackendName::Cuda => "cuda",
        }
    }

    /// Whether this binary was built with the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            BackendName::Flex => true,
            BackendName::Ndarray => cfg!(feature = "ndarray"),
            BackendName::Wgpu => cfg!(feature = "wgpu"),
            BackendName::Cuda => cfg!(feature = "cuda"),
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
    Ok(match name {
        BackendName::Flex => Device::flex(),
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        BackendName::Ndarray => Device::ndarray(),
        #[cfg(feature = "wgpu")]
        BackendName::Wgpu => Device::wgpu(burn::tensor::DeviceKind::default()),
        #[cfg(feature = "cuda")]
        BackendName::Cuda => Device::cuda(0),
        #[allow(unreachable_patterns)]
        _ => unreachable!("checked by is_compiled"),
    })
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
}
