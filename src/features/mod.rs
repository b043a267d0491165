//! Audio front-ends: what each model of the system sees.
//!
//! All front-ends run on the CPU in f32 on top of `realfft` and return a
//! [`Frames`] matrix (frames × bins, row-major). They are pure functions of
//! the waveform, so features for training are computed in parallel and cached
//! on disk keyed by the front-end configuration ([`cache`]).
//!
//! - [`spectrum`]: Dual Branch CNN inputs (Hann DFT magnitude, mean-normalised STFT).
//! - [`mel`]: librosa log-mel (NF-CDEE 8192/512/256, baseline 1024/512/128).
//! - [`fbank`]: torchaudio Kaldi fbank with the BEATs and EAT preprocessing.
//! - [`specaugment`]: time/frequency masks for training.
//! - [`frontend`]: the serde front-end configuration of an experiment.
//! - [`cache`]: per-configuration on-disk feature cache, parallel fill.
//! - [`fft`], [`stft`]: cached real-FFT plans, windows, framing.

pub mod cache;
pub mod fbank;
pub mod fft;
pub mod frontend;
pub mod mel;
pub mod specaugment;
pub mod spectrum;
pub mod stft;

pub use cache::FeatureCache;
pub use fbank::{EatLength, FbankPreset, beats_input, eat_input};
pub use frontend::FrontEnd;
pub use mel::{LogmelPreset, logmel};
pub use specaugment::SpecAugment;
pub use spectrum::{DualBranchInput, dual_branch_input};

/// A row-major (frames × bins) f32 matrix: what `asd features` writes as `.npy`.
#[derive(Debug, Clone, PartialEq)]
pub struct Frames {
    pub data: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
}

impl Frames {
    pub fn new(data: Vec<f32>, rows: usize, cols: usize) -> Frames {
        assert_eq!(data.len(), rows * cols, "Frames: {rows}x{cols} needs {} values", rows * cols);
        Frames { data, rows, cols }
    }

    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// Mean over frames (one value per bin).
    pub fn mean_over_rows(&self) -> Vec<f32> {
        let mut m = vec![0.0f64; self.cols];
        for r in 0..self.rows {
            for (acc, v) in m.iter_mut().zip(self.row(r)) {
                *acc += *v as f64;
            }
        }
        m.into_iter().map(|v| (v / self.rows.max(1) as f64) as f32).collect()
    }
}
