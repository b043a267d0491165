//! BEATs + LoRA in the pipeline: cached BEATs fbank inputs fitted to the
//! configured length, SpecAugment per training sample, the training task
//! (ArcFace on the pooled embedding), embedding for kNN scoring.

use super::{ModelKind, Prepared, TrainOptions, embed_in_batches, knn_validation, run_options};
use crate::cli::Progress;
use crate::data::Clip;
use crate::features::cache::FeatureCache;
use crate::features::fbank::FbankPreset;
use crate::features::frontend::FrontEnd;
use crate::features::{Frames, SpecAugment};
use crate::models::beats::{BeatsBatch, BeatsLora, BeatsLoraConfig};
use crate::nn::util::labels_tensor;
use crate::train::{self, StepOutput, Task, checkpoint};
use crate::util::rng;
use anyhow::{Result, bail};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use std::path::{Path, PathBuf};

pub struct Beats {
    pub cfg: BeatsLoraConfig,
}

/// The first `n` frames of `f`, tiling the clip from its start when it is
/// shorter.
pub fn fit_frames(f: &Frames, n: usize) -> Result<Frames> {
    if f.rows == 0 {
        bail!("empty fbank (clip shorter than one 25 ms frame)");
    }
    let data: Vec<f32> = (0..n).flat_map(|r| f.row(r % f.rows).iter().copied()).collect();
    Ok(Frames::new(data, n, f.cols))
}

/// Cached BEATs fbank inputs of clips.
pub struct Inputs {
    frontend: FrontEnd,
    cache: FeatureCache,
    frames: usize,
}

impl Inputs {
    pub fn new(cfg: &BeatsLoraConfig, cache_dir: &Path) -> Result<Inputs> {
        let frontend = FrontEnd::Fbank { preset: FbankPreset::Beats, eat_length: None };
        let cache = FeatureCache::new(cache_dir, &frontend.to_json())?;
        Ok(Inputs { frontend, cache, frames: cfg.frames() })
    }

    /// Computes (or finds) every clip's fbank in parallel.
    pub fn prefetch(&self, clips: &[&Clip], quiet: bool) -> Result<()> {
        let paths: Vec<PathBuf> = clips.iter().map(|c| c.path.clone()).collect();
        let bar = Progress::new(paths.len() as u64, "features", quiet);
        self.cache.prefetch_many(&paths, |x| self.frontend.compute(x), &|_| bar.inc(1))?;
        bar.finish();
        Ok(())
    }

    /// A batch [B, frames, 128] on `device`; `augment` = SpecAugment and the
    /// micro-batch seed (sample i draws from the stream (seed, i)).
    pub fn batch(
        &self,
        clips: &[&Clip],
        labels: Option<&[usize]>,
        augment: Option<(&SpecAugment, u64)>,
        seed: u64,
        device: &Device,
    ) -> Result<BeatsBatch> {
        let mut data = Vec::with_capacity(clips.len() * self.frames * 128);
        for (i, c) in clips.iter().enumerate() {
            let full = self.cache.get_or_compute(&c.path, |x| self.frontend.compute(x))?;
            let mut f = fit_frames(&full, self.frames).map_err(|e| e.context(c.path.display().to_string()))?;
            if let Some((aug, s)) = augment {
                aug.apply(&mut f, &mut rng::stream(s, &[0x05be_ca06, i as u64]));
            }
            data.extend_from_slice(&f.data);
        }
        let b = clips.len();
        Ok(BeatsBatch {
            fbank: Tensor::from_data(TensorData::new(data, [b, self.frames, 128]), device),
            labels: labels.map(|l| labels_tensor(l, device)),
            seed,
        })
    }

    /// L2-normalised embeddings of clips (inference).
    pub fn embed(
        &self,
        model: &BeatsLora,
        clips: &[&Clip],
        batch: usize,
        device: &Device,
        quiet: bool,
    ) -> Result<Vec<Vec<f32>>> {
        embed_in_batches(clips, batch, quiet, |chunk| Ok(model.embed(self.batch(chunk, None, None, 0, device)?.fbank)))
    }
}

/// The training task: items are the training clips.
struct BeatsTask<'a> {
    inputs: &'a Inputs,
    clips: Vec<&'a Clip>,
    labels: Vec<usize>,
    specaugment: Option<SpecAugment>,
}

impl Task for BeatsTask<'_> {
    type Model = BeatsLora;
    type Batch = BeatsBatch;

    fn len(&self) -> usize {
        self.clips.len()
    }

    fn batch(&self, items: &[usize], seed: u64, device: &Device) -> Result<BeatsBatch> {
        let clips: Vec<&Clip> = items.iter().map(|&i| self.clips[i]).collect();
        let labels: Vec<usize> = items.iter().map(|&i| self.labels[i]).collect();
        self.inputs.batch(&clips, Some(&labels), self.specaugment.as_ref().map(|a| (a, seed)), seed, device)
    }

    fn step(&self, model: &BeatsLora, batch: BeatsBatch) -> StepOutput {
        StepOutput { loss: model.loss(batch), logs: Vec::new() }
    }
}

impl Beats {
    /// The model; `weights` reads the pre-trained encoder weights (not
    /// needed when a run checkpoint is loaded over it).
    fn model(&self, p: &Prepared, device: &Device, weights: bool) -> Result<BeatsLora> {
        self.cfg.init(&p.exp.loss, p.labels.len(), p.exp.seed, device, weights)
    }
}

impl ModelKind for Beats {
    fn train(&self, p: &Prepared, device: &Device, opts: &TrainOptions) -> Result<()> {
        let inputs = Inputs::new(&self.cfg, &p.exp.features.cache_dir)?;
        let train_clips = p.train_clips();
        let all: Vec<&Clip> = p.dataset.clips.iter().collect();
        let validating = p.exp.train.validate_every > 0;
        inputs.prefetch(if validating { &all } else { &train_clips }, opts.quiet)?;
        let labels = train_clips.iter().map(|c| p.labels.index_of(c)).collect::<Result<Vec<_>>>()?;
        let task =
            BeatsTask { inputs: &inputs, clips: train_clips, labels, specaugment: p.exp.features.specaugment.clone() };
        let infer = device.clone().inner();
        let validator = |m: &BeatsLora| -> Result<f64> {
            let emb = inputs.embed(&m.valid(), &all, p.exp.scoring.batch_size, &infer, true)?;
            knn_validation(p, &all, &emb)?
                .ok_or_else(|| anyhow::anyhow!("train.validate_every is set but no machine has labelled test clips"))
        };
        let v: Option<crate::train::Validator<BeatsLora>> = if validating { Some(&validator) } else { None };
        let model = self.model(p, device, !opts.resume)?;
        train::fit(&task, model, &p.exp.train, &p.run, device, run_options(p, opts, v))?;
        Ok(())
    }

    fn embed(&self, p: &Prepared, ckpt: &Path, clips: &[&Clip], device: &Device, quiet: bool) -> Result<Vec<Vec<f32>>> {
        let inputs = Inputs::new(&self.cfg, &p.exp.features.cache_dir)?;
        inputs.prefetch(clips, quiet)?;
        let model = checkpoint::load_model(self.model(p, device, false)?, ckpt)?;
        inputs.embed(&model.valid().merged(), clips, p.exp.scoring.batch_size, device, quiet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cropped_or_tiled() {
        let f = Frames::new((0..6).map(|v| v as f32).collect(), 3, 2);
        assert_eq!(fit_frames(&f, 2).unwrap().data, vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(fit_frames(&f, 5).unwrap().data, vec![0., 1., 2., 3., 4., 5., 0., 1., 2., 3.]);
        assert!(fit_frames(&Frames::new(vec![], 0, 2), 4).is_err());
    }
}
