//! The Dual Branch CNN in the pipeline: cached spectrum/spectrogram inputs,
//! the training task, embedding for scoring and validation.

use super::{ModelKind, Prepared, TrainOptions, embed_in_batches, knn_validation, run_options};
use crate::cli::Progress;
use crate::data::Clip;
use crate::features::Frames;
use crate::features::cache::FeatureCache;
use crate::features::frontend::FrontEnd;
use crate::models::dual_branch_cnn::{DualBranchBatch, DualBranchCnn, DualBranchCnnConfig};
use crate::nn::util::labels_tensor;
use crate::train::{self, StepOutput, Task, checkpoint};
use anyhow::{Result, bail};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use std::path::{Path, PathBuf};

pub struct DualBranch {
    pub cfg: DualBranchCnnConfig,
}

/// Cached model inputs of clips.
pub struct Inputs {
    spectrum: (FrontEnd, FeatureCache),
    spectrogram: (FrontEnd, FeatureCache),
    shapes: (usize, usize, usize),
}

impl Inputs {
    pub fn new(cfg: &DualBranchCnnConfig, cache_dir: &Path) -> Result<Inputs> {
        let mk = |f: FrontEnd| -> Result<(FrontEnd, FeatureCache)> {
            let c = FeatureCache::new(cache_dir, &f.to_json())?;
            Ok((f, c))
        };
        Ok(Inputs {
            spectrum: mk(FrontEnd::Spectrum { seconds: cfg.seconds })?,
            spectrogram: mk(FrontEnd::Spectrogram { seconds: cfg.seconds })?,
            shapes: cfg.input_shapes(),
        })
    }

    /// Computes (or finds) every clip's inputs in parallel.
    pub fn prefetch(&self, clips: &[&Clip], quiet: bool) -> Result<()> {
        let paths: Vec<PathBuf> = clips.iter().map(|c| c.path.clone()).collect();
        let bar = Progress::new(2 * paths.len() as u64, "features", quiet);
        for (f, cache) in [&self.spectrum, &self.spectrogram] {
            cache.prefetch_many(&paths, |x| f.compute(x), &|_| bar.inc(1))?;
        }
        bar.finish();
        Ok(())
    }

    fn load(&self, which: &(FrontEnd, FeatureCache), clip: &Clip) -> Result<Frames> {
        which.1.get_or_compute(&clip.path, |x| which.0.compute(x))
    }

    /// A batch on `device` (labels for training).
    pub fn batch(&self, clips: &[&Clip], labels: Option<&[usize]>, device: &Device) -> Result<DualBranchBatch> {
        let (bins, frames, fbins) = self.shapes;
        let mut spec = Vec::with_capacity(clips.len() * bins);
        let mut gram = Vec::with_capacity(clips.len() * frames * fbins);
        for c in clips {
            let s = self.load(&self.spectrum, c)?;
            let g = self.load(&self.spectrogram, c)?;
            if s.data.len() != bins || (g.rows, g.cols) != (frames, fbins) {
                bail!("{}: cached inputs have unexpected shapes (stale cache?)", c.path.display());
            }
            spec.extend_from_slice(&s.data);
            gram.extend_from_slice(&g.data);
        }
        let b = clips.len();
        Ok(DualBranchBatch {
            spectrum: Tensor::from_data(TensorData::new(spec, [b, bins]), device),
            spectrogram: Tensor::from_data(TensorData::new(gram, [b, frames, fbins]), device),
            labels: labels.map(|l| labels_tensor(l, device)),
        })
    }

    /// L2-normalised embeddings of clips (inference).
    pub fn embed(
        &self,
        model: &DualBranchCnn,
        clips: &[&Clip],
        batch: usize,
        device: &Device,
        quiet: bool,
    ) -> Result<Vec<Vec<f32>>> {
        embed_in_batches(clips, batch, quiet, |chunk| Ok(model.embed(&self.batch(chunk, None, device)?)))
    }
}

/// The training task: items are the training clips.
struct DualBranchTask<'a> {
    inputs: &'a Inputs,
    clips: Vec<&'a Clip>,
    labels: Vec<usize>,
}

impl Task for DualBranchTask<'_> {
    type Model = DualBranchCnn;
    type Batch = DualBranchBatch;

    fn len(&self) -> usize {
        self.clips.len()
    }

    fn batch(&self, items: &[usize], _seed: u64, device: &Device) -> Result<DualBranchBatch> {
        let clips: Vec<&Clip> = items.iter().map(|&i| self.clips[i]).collect();
        let labels: Vec<usize> = items.iter().map(|&i| self.labels[i]).collect();
        self.inputs.batch(&clips, Some(&labels), device)
    }

    fn step(&self, model: &DualBranchCnn, batch: DualBranchBatch) -> StepOutput {
        let (loss, logs) = model.loss(&batch);
        StepOutput { loss, logs }
    }
}

impl DualBranch {
    fn model(&self, p: &Prepared, device: &Device) -> DualBranchCnn {
        self.cfg.init(&p.exp.loss, p.labels.len(), p.exp.seed, device)
    }
}

impl ModelKind for DualBranch {
    fn train(&self, p: &Prepared, device: &Device, opts: &TrainOptions) -> Result<()> {
        let inputs = Inputs::new(&self.cfg, &p.exp.features.cache_dir)?;
        let train_clips = p.train_clips();
        let all: Vec<&Clip> = p.dataset.clips.iter().collect();
        let validating = p.exp.train.validate_every > 0;
        inputs.prefetch(if validating { &all } else { &train_clips }, opts.quiet)?;
        let labels = train_clips.iter().map(|c| p.labels.index_of(c)).collect::<Result<Vec<_>>>()?;
        let task = DualBranchTask { inputs: &inputs, clips: train_clips, labels };
        let infer = device.clone().inner();
        let validator = |m: &DualBranchCnn| -> Result<f64> {
            let emb = inputs.embed(&m.valid(), &all, p.exp.scoring.batch_size, &infer, true)?;
            knn_validation(p, &all, &emb)?
                .ok_or_else(|| anyhow::anyhow!("train.validate_every is set but no machine has labelled test clips"))
        };
        let v: Option<train::Validator<DualBranchCnn>> = if validating { Some(&validator) } else { None };
        train::fit(&task, self.model(p, device), &p.exp.train, &p.run, device, run_options(p, opts, v))?;
        Ok(())
    }

    fn embed(&self, p: &Prepared, ckpt: &Path, clips: &[&Clip], device: &Device, quiet: bool) -> Result<Vec<Vec<f32>>> {
        let inputs = Inputs::new(&self.cfg, &p.exp.features.cache_dir)?;
        inputs.prefetch(clips, quiet)?;
        let model = checkpoint::load_model(self.model(p, device), ckpt)?;
        inputs.embed(&model.valid(), clips, p.exp.scoring.batch_size, device, quiet)
    }
}
