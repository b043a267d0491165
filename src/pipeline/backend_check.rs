//! `asd check-backend`: a model built once on a reference backend and copied
//! to another must give the same scoring outputs there, and the same outputs
//! again after one training step on each (float tolerance). This is what
//! `scripts/gpu-check.sh` runs on a GPU machine for every model.
//!
//! The copy goes through a checkpoint because random initialisation draws
//! from each backend's own generator. The step is plain SGD: Adam's first
//! step is `lr · sign(g)`, which turns a rounding difference in a near-zero
//! gradient into a full step the other way.

use crate::data::naming::Domain;
use crate::experiment::Experiment;
use crate::features::Frames;
use crate::models::{BatchContext, InitContext, ModelSpec, SpecVisitor};
use crate::nn::util::to_vec;
use crate::train::checkpoint::{self, TrainState};
use anyhow::{Context, Result, bail};
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::Device;
use rand::RngExt;
use serde::Serialize;

/// Classes of the check's labels (models with a classification head).
const CLASSES: usize = 4;
const SAMPLE_RATE: f32 = 16_000.0;
/// Forward passes that settle running statistics (momentum 0.1: 1 − 0.9³⁰ = 96 %).
const SETTLE_PASSES: usize = 30;

/// How much data the check runs and what it accepts.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Synthetic clips in the one batch.
    pub clips: usize,
    /// Their length (each model crops or tiles to its own input length).
    pub seconds: f32,
    /// Largest accepted `max |reference − other| / max |reference|`.
    pub tolerance: f64,
    /// SGD learning rate of the training step.
    pub lr: f64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions { clips: 8, seconds: 4.0, tolerance: 1e-3, lr: 0.05 }
    }
}

/// One model's comparison.
#[derive(Debug, Clone, Serialize)]
pub struct CheckRow {
    pub experiment: String,
    pub kind: String,
    /// Scoring outputs: `max |reference − other| / max |reference|`.
    pub infer_rel_diff: f64,
    pub loss_reference: f64,
    pub loss_other: f64,
    /// Scoring outputs after one SGD step on each backend, as above.
    pub step_rel_diff: f64,
    /// How far the step moved the reference's outputs (the step is not a no-op).
    pub step_moved: f64,
    pub ok: bool,
}

/// Runs the check of one experiment's model; `name` labels the row.
pub fn check(
    name: &str,
    exp: &Experiment,
    reference: &Device,
    other: &Device,
    opts: &CheckOptions,
) -> Result<CheckRow> {
    if opts.clips == 0 || opts.seconds <= 0.0 {
        bail!("check-backend needs at least one clip of positive length");
    }
    exp.model.visit(CheckVisitor { name, exp, reference, other, opts })
}

struct CheckVisitor<'a> {
    name: &'a str,
    exp: &'a Experiment,
    reference: &'a Device,
    other: &'a Device,
    opts: &'a CheckOptions,
}

/// What one backend gave.
struct Side {
    before: Vec<f32>,
    loss: f64,
    after: Vec<f32>,
}

impl SpecVisitor for CheckVisitor<'_> {
    type Out = Result<CheckRow>;

    fn visit<S: ModelSpec>(self, spec: &S) -> Result<CheckRow> {
        let inputs = synthetic_inputs(spec, self.opts, self.exp.seed)?;
        let init = InitContext { loss: &self.exp.loss, classes: CLASSES, seed: self.exp.seed, pretrained: true };
        let model = spec.init(&init, &self.reference.clone().autodiff())?;
        settle(spec, &model, &inputs, self.reference)?;
        let dir = std::env::temp_dir().join(format!("asd-check-{}-{}", std::process::id(), self.exp.name));
        checkpoint::save(&dir, &model, None, &TrainState::default())?;
        let copy = checkpoint::load_model(spec.init(&init, &self.other.clone().autodiff())?, &dir);
        let _ = std::fs::remove_dir_all(&dir);
        let copy = copy?;
        let a = side(spec, model, &inputs, self.reference, self.opts.lr).context("on the reference backend")?;
        let b = side(spec, copy, &inputs, self.other, self.opts.lr).context("on the checked backend")?;
        let (infer_rel_diff, step_rel_diff) = (rel_diff(&a.before, &b.before)?, rel_diff(&a.after, &b.after)?);
        let step_moved = rel_diff(&a.before, &a.after)?;
        let tol = self.opts.tolerance;
        Ok(CheckRow {
            experiment: self.name.to_string(),
            kind: self.exp.model.kind(),
            infer_rel_diff,
            loss_reference: a.loss,
            loss_other: b.loss,
            step_rel_diff,
            step_moved,
            ok: infer_rel_diff <= tol && step_rel_diff <= tol && rel_gap(a.loss, b.loss) <= tol && step_moved > 0.0,
        })
    }
}

/// Deterministic clips (a tone per clip over low noise) through the model's
/// front-ends, fitted to its input size.
fn synthetic_inputs<S: ModelSpec>(spec: &S, opts: &CheckOptions, seed: u64) -> Result<Vec<Vec<Frames>>> {
    let n = (opts.seconds * SAMPLE_RATE) as usize;
    (0..opts.clips)
        .map(|i| {
            let mut rng = crate::util::rng::stream(seed, &[0xc4ec, i as u64]);
            let f = 220.0 + 110.0 * i as f32;
            let wav: Vec<f32> = (0..n)
                .map(|t| {
                    let phase = std::f32::consts::TAU * f * t as f32 / SAMPLE_RATE;
                    0.3 * phase.sin() + 0.05 * (rng.random::<f32>() - 0.5)
                })
                .collect();
            let frames = spec.frontends().iter().map(|fe| fe.compute(&wav)).collect::<Result<Vec<_>>>()?;
            spec.fit(frames)
        })
        .collect()
}

/// Training-mode forward passes that bring running statistics (batch norm)
/// from their defaults to the batch's: an untrained model scored with the
/// defaults is ill-conditioned (NF-CDEE gives NLLs of 1e27), and the check
/// would compare rounding noise amplified by it.
fn settle<S: ModelSpec>(spec: &S, model: &S::Model, inputs: &[Vec<Frames>], device: &Device) -> Result<()> {
    for _ in 0..SETTLE_PASSES {
        let _ = spec.step(model, training_batch(spec, inputs, device)?).loss.into_scalar::<f32>();
    }
    Ok(())
}

/// The clips as a training batch on `device`'s autodiff twin, labelled
/// `i % CLASSES`, without augmentation.
fn training_batch<S: ModelSpec>(spec: &S, inputs: &[Vec<Frames>], device: &Device) -> Result<S::Batch> {
    let labels: Vec<usize> = (0..inputs.len()).map(|i| i % CLASSES).collect();
    let ctx = BatchContext { labels: Some(&labels), specaugment: None, seed: 0 };
    spec.batch(inputs.to_vec(), &ctx, &device.clone().autodiff())
}

fn side<S: ModelSpec>(spec: &S, model: S::Model, inputs: &[Vec<Frames>], device: &Device, lr: f64) -> Result<Side> {
    let before = outputs(spec, model.clone(), inputs, device)?;
    let loss = spec.step(&model, training_batch(spec, inputs, device)?).loss;
    let value = f64::from(loss.clone().into_scalar::<f32>());
    if !value.is_finite() {
        bail!("the training loss is {value}");
    }
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let model = SgdConfig::new().init().step(lr, model, grads);
    let after = outputs(spec, model, inputs, device)?;
    Ok(Side { before, loss: value, after })
}

/// The model's scoring outputs of the clips; a model whose score is fitted
/// on training clips (the official AE) fits its default score on them.
fn outputs<S: ModelSpec>(spec: &S, model: S::Model, inputs: &[Vec<Frames>], device: &Device) -> Result<Vec<f32>> {
    let ctx = BatchContext { labels: None, specaugment: None, seed: 0 };
    let mut model = spec.for_inference(model);
    if let Some(score) = spec.model_scores().first() {
        let train = spec.batch(inputs.to_vec(), &ctx, device)?;
        let domains = vec![Domain::Source; inputs.len()];
        model = spec.fit_score(model, score, &mut std::iter::once(Ok((train, domains))))?;
    }
    let out = to_vec(spec.infer(&model, spec.batch(inputs.to_vec(), &ctx, device)?));
    if let Some(bad) = out.iter().find(|v| !v.is_finite()) {
        bail!("the scoring output holds {bad}");
    }
    Ok(out)
}

/// `max |a − b| / max |a|` (0 when both are all zero).
fn rel_diff(a: &[f32], b: &[f32]) -> Result<f64> {
    if a.len() != b.len() {
        bail!("outputs of different sizes ({} and {})", a.len(), b.len());
    }
    let scale = a.iter().fold(0.0f64, |m, v| m.max(f64::from(v.abs())));
    let diff = a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max(f64::from((x - y).abs())));
    Ok(if diff == 0.0 { 0.0 } else { diff / scale.max(f64::MIN_POSITIVE) })
}

fn rel_gap(a: f64, b: f64) -> f64 {
    if a == b { 0.0 } else { (a - b).abs() / a.abs().max(b.abs()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_differences() {
        assert_eq!(rel_diff(&[0.0, 0.0], &[0.0, 0.0]).unwrap(), 0.0);
        assert!((rel_diff(&[2.0, -4.0], &[2.0, -3.0]).unwrap() - 0.25).abs() < 1e-12);
        assert!(rel_diff(&[1.0], &[1.0, 2.0]).is_err());
        assert_eq!(rel_gap(3.0, 3.0), 0.0);
        assert!((rel_gap(-2.0, -1.0) - 0.5).abs() < 1e-12);
    }
}
