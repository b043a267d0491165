//! The one generic piece between cached features and any model: the
//! clips' front-end outputs read from the feature cache (computed in
//! parallel on first use), fitted to the model's input and batched; the
//! training [`Task`] of a model; batched inference.

use crate::data::Clip;
use crate::features::cache::FeatureCache;
use crate::features::frontend::FrontEnd;
use crate::features::{Frames, SpecAugment};
use crate::models::{BatchContext, ModelSpec};
use crate::train::{StepOutput, Task};
use crate::util::Progress;
use anyhow::{Context, Result};
use burn::tensor::Device;
use std::path::{Path, PathBuf};

/// The cached front-ends of one model.
pub struct Inputs {
    sources: Vec<(FrontEnd, FeatureCache)>,
}

impl Inputs {
    pub fn new(frontends: Vec<FrontEnd>, cache_dir: &Path) -> Result<Inputs> {
        let sources = frontends
            .into_iter()
            .map(|f| FeatureCache::new(cache_dir, &f.to_json()).map(|c| (f, c)))
            .collect::<Result<_>>()?;
        Ok(Inputs { sources })
    }

    /// Computes (or finds) every clip's inputs in parallel, keeping none in memory.
    pub fn prefetch(&self, clips: &[&Clip], quiet: bool) -> Result<()> {
        let paths: Vec<PathBuf> = clips.iter().map(|c| c.path.clone()).collect();
        let bar = Progress::new((self.sources.len() * paths.len()) as u64, "features", quiet);
        for (f, cache) in &self.sources {
            cache.prefetch_many(&paths, |x| f.compute(x), &|_| bar.inc(1))?;
        }
        bar.finish();
        Ok(())
    }

    /// One clip's inputs fitted by the model. A cached file the model
    /// rejects (stale or damaged) is recomputed once; a second rejection is
    /// an error naming the clip.
    pub fn fitted<S: ModelSpec>(&self, spec: &S, clip: &Clip) -> Result<Vec<Frames>> {
        let cached: Vec<Frames> =
            self.sources.iter().map(|(f, c)| c.get_or_compute(&clip.path, |x| f.compute(x))).collect::<Result<_>>()?;
        if let Ok(v) = spec.fit(cached) {
            return Ok(v);
        }
        let fresh: Vec<Frames> =
            self.sources.iter().map(|(f, c)| c.recompute(&clip.path, |x| f.compute(x))).collect::<Result<_>>()?;
        spec.fit(fresh).with_context(|| format!("model input of {}", clip.path.display()))
    }

    /// A batch of clips on `device`.
    pub fn batch<S: ModelSpec>(
        &self,
        spec: &S,
        clips: &[&Clip],
        ctx: &BatchContext,
        device: &Device,
    ) -> Result<S::Batch> {
        let x = clips.iter().map(|c| self.fitted(spec, c)).collect::<Result<Vec<_>>>()?;
        spec.batch(x, ctx, device)
    }

    /// The scoring outputs of clips (rows of [`ModelSpec::infer`]), `batch`
    /// clips per forward pass; `model` must already be in inference form.
    pub fn infer<S: ModelSpec>(
        &self,
        spec: &S,
        model: &S::Model,
        clips: &[&Clip],
        batch: usize,
        device: &Device,
        quiet: bool,
    ) -> Result<Vec<Vec<f32>>> {
        let bar = Progress::new(clips.len() as u64, "embed", quiet);
        let mut out = Vec::with_capacity(clips.len());
        let ctx = BatchContext { labels: None, specaugment: None, seed: 0 };
        // One model, unchanged, over every chunk: its Linear weights are
        // packed once.
        crate::nn::linear::with_frozen_weights(|| -> Result<()> {
            for chunk in clips.chunks(batch.max(1)) {
                let e = spec.infer(model, self.batch(spec, chunk, &ctx, device)?);
                let [n, d] = e.dims();
                let v = crate::nn::util::to_vec(e);
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    anyhow::bail!("the model's output for {} is {} (not finite)", chunk[i / d].path.display(), v[i]);
                }
                out.extend((0..n).map(|i| v[i * d..(i + 1) * d].to_vec()));
                bar.inc(chunk.len() as u64);
            }
            Ok(())
        })?;
        bar.finish();
        Ok(out)
    }
}

/// The training task of a model: items are the training clips.
pub struct SpecTask<'a, S: ModelSpec> {
    pub spec: &'a S,
    pub inputs: &'a Inputs,
    pub clips: Vec<&'a Clip>,
    pub labels: Vec<usize>,
    pub specaugment: Option<SpecAugment>,
}

impl<S: ModelSpec> Task for SpecTask<'_, S> {
    type Model = S::Model;
    type Batch = S::Batch;

    fn len(&self) -> usize {
        self.clips.len()
    }

    fn batch(&self, items: &[usize], seed: u64, device: &Device) -> Result<S::Batch> {
        let clips: Vec<&Clip> = items.iter().map(|&i| self.clips[i]).collect();
        let labels: Vec<usize> = items.iter().map(|&i| self.labels[i]).collect();
        let ctx = BatchContext { labels: Some(&labels), specaugment: self.specaugment.as_ref(), seed };
        self.inputs.batch(self.spec, &clips, &ctx, device)
    }

    fn step(&self, model: &S::Model, batch: S::Batch) -> StepOutput {
        self.spec.step(model, batch)
    }
}
