//! The seam between a model and the pipeline. A model is one module that
//! implements [`ModelSpec`] on its experiment config, plus one variant of
//! [`super::ModelConfig`]; the pipeline (training, validation, scoring,
//! the run manifest) asks it for everything through this trait and never
//! names a model.

use crate::data::naming::Domain;
use crate::features::frontend::FrontEnd;
use crate::features::{Frames, SpecAugment};
use crate::nn::LossConfig;
use crate::train::StepOutput;
use anyhow::Result;
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::Serialize;

/// How a trained model turns clips into anomaly scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scoring {
    /// Embeddings scored by a back-end fitted on the training clips (kNN).
    Embedding,
    /// The model's own anomaly score (a likelihood model's negative log-likelihood).
    Likelihood,
}

/// What a model needs to be built.
pub struct InitContext<'a> {
    pub loss: &'a LossConfig,
    /// Auxiliary classes of the run (ignored by models without a head).
    pub classes: usize,
    pub seed: u64,
    /// Read pre-trained weights (false when a run checkpoint is loaded over the model).
    pub pretrained: bool,
}

/// What a batch is built with, besides the clips' inputs.
pub struct BatchContext<'a> {
    /// Class indices (training).
    pub labels: Option<&'a [usize]>,
    /// SpecAugment for training inputs, if the experiment enables it.
    pub specaugment: Option<&'a SpecAugment>,
    /// Keys every random draw of this micro-batch.
    pub seed: u64,
}

/// The kind-independent facts about a model (object safe, for validation and manifests).
pub trait ModelInfo {
    /// Checks the settings.
    fn validate(&self) -> Result<()>;
    /// Number of loss terms `loss.weights` may weight (0: the model has no classification head).
    fn loss_terms(&self) -> usize;
    fn scoring(&self) -> Scoring;
    /// The front-ends whose outputs make one clip's input, in order.
    fn frontends(&self) -> Vec<FrontEnd>;
    /// Released checkpoints the model loads (BEATs, EAT); a system skips an
    /// optional member whose files are absent instead of training a frozen
    /// random encoder.
    fn pretrained_files(&self) -> Vec<std::path::PathBuf> {
        Vec::new()
    }
    /// The scores a likelihood-scored model offers for `scoring.model_score`,
    /// its default first (empty: one score, nothing to choose). A model
    /// offering any is scored machine by machine, each after
    /// [`ModelSpec::fit_score`].
    fn model_scores(&self) -> &'static [&'static str] {
        &[]
    }
    /// Fields of the model's config read only when scoring (the official
    /// AE's covariance ridge): changing one neither retrains nor refuses a
    /// trained run.
    fn scoring_fields(&self) -> &'static [&'static str] {
        &[]
    }
}

/// A model as the pipeline drives it.
pub trait ModelSpec: ModelInfo {
    type Model: Module;
    type Batch;

    fn init(&self, ctx: &InitContext, device: &Device) -> Result<Self::Model>;

    /// Fits one clip's front-end outputs to the model's input size (crop,
    /// tile) and checks their shapes; an error is reported with the clip's
    /// path, and a cached input failing it is recomputed once.
    fn fit(&self, inputs: Vec<Frames>) -> Result<Vec<Frames>>;

    /// A batch on `device` from fitted per-clip inputs (clip-major).
    fn batch(&self, inputs: Vec<Vec<Frames>>, ctx: &BatchContext, device: &Device) -> Result<Self::Batch>;

    /// Forward pass and loss of a training batch.
    fn step(&self, model: &Self::Model, batch: Self::Batch) -> StepOutput;

    /// The model as scored (eval mode; adapters merged where a model has them).
    fn for_inference(&self, model: Self::Model) -> Self::Model {
        model.valid()
    }

    /// Readies a model in inference form to score one machine's clips with
    /// `score` (one of [`ModelInfo::model_scores`]). A score fitted on
    /// training clips (the official AE's error covariances per domain)
    /// reads `train`: that machine's training clips, in batches, with each
    /// clip's domain. Default: the model unchanged.
    fn fit_score(
        &self,
        model: Self::Model,
        score: &str,
        train: &mut dyn Iterator<Item = Result<(Self::Batch, Vec<Domain>)>>,
    ) -> Result<Self::Model> {
        let _ = (score, train);
        Ok(model)
    }

    /// Scoring output of a batch: L2-normalised embeddings [B, D]
    /// ([`Scoring::Embedding`]) or anomaly scores [B, 1] ([`Scoring::Likelihood`]).
    fn infer(&self, model: &Self::Model, batch: Self::Batch) -> Tensor<2>;
}

/// A generic operation over the typed model of a config (see
/// `visit` of [`super::ModelConfig`]).
pub trait SpecVisitor {
    type Out;
    fn visit<S: ModelSpec>(self, spec: &S) -> Self::Out;
}

/// Copies the first `n` rows of `f`, tiling the clip from its start when it
/// is shorter (the pad/crop rule of the fixed-length models).
pub fn fit_rows(f: &Frames, n: usize) -> Result<Frames> {
    if f.rows == 0 {
        anyhow::bail!("empty input (clip shorter than one frame)");
    }
    let data: Vec<f32> = (0..n).flat_map(|r| f.row(r % f.rows).iter().copied()).collect();
    Ok(Frames::new(data, n, f.cols))
}

/// A [B, rows, cols] batch of the fitted inputs `inputs[i][slot]` (all of
/// one shape), each augmented with SpecAugment when training, its masks
/// drawn from the stream (batch seed, `salt`, clip index).
pub fn frames_batch(
    inputs: &mut [Vec<Frames>],
    slot: usize,
    ctx: &BatchContext,
    salt: u64,
    device: &Device,
) -> Tensor<3> {
    let b = inputs.len();
    let (rows, cols) = inputs.first().map_or((0, 0), |c| (c[slot].rows, c[slot].cols));
    let mut data = Vec::with_capacity(b * rows * cols);
    for (i, clip) in inputs.iter_mut().enumerate() {
        let f = &mut clip[slot];
        assert_eq!((f.rows, f.cols), (rows, cols), "fitted inputs share one shape");
        if let Some(aug) = ctx.specaugment {
            aug.apply(f, &mut crate::util::rng::stream(ctx.seed, &[salt, i as u64]));
        }
        data.extend_from_slice(&f.data);
    }
    Tensor::from_data(burn::tensor::TensorData::new(data, [b, rows, cols]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_cropped_or_tiled() {
        let f = Frames::new((0..6).map(|v| v as f32).collect(), 3, 2);
        assert_eq!(fit_rows(&f, 2).unwrap().data, vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(fit_rows(&f, 5).unwrap().data, vec![0., 1., 2., 3., 4., 5., 0., 1., 2., 3.]);
        assert!(fit_rows(&Frames::new(vec![], 0, 2), 4).is_err());
    }
}
