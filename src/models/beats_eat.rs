//! Dual Branch BEATs and EAT (THUEE report §2.5): the BEATs-LoRA and
//! EAT-LoRA models side by side, each with its adapters, pooling, embedding
//! Linear and ArcFace head; the joint embedding is the concatenation of the
//! two branch embeddings (256 + 256) with its own ArcFace head.
//!
//! Multi-backpropagation as in the Dual Branch CNN (§2.2): the loss is
//! `w₀·L(joint) + w₁·L(BEATs) + w₂·L(EAT)` (`loss.weights`, default all 1),
//! so one backward pass sends each branch its own weighted loss and the
//! joint loss through both. Scoring uses the L2-normalised joint embedding.
//!
//! Each branch is built exactly as its single model (same configs, same
//! code); the two adapter sets and heads draw from distinct seeds.

use super::beats::{BeatsLora, BeatsLoraConfig, ParamCounts};
use super::eat::{self, EatLora, EatLoraConfig};
use super::spec::{BatchContext, InitContext, ModelInfo, ModelSpec, Scoring, frames_batch};
use crate::features::Frames;
use crate::features::frontend::FrontEnd;
use crate::nn::util::{count_params, l2_normalize, labels_tensor, seeded_init};
use crate::nn::{Head, LossConfig};
use crate::train::StepOutput;
use anyhow::Result;
use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

/// The `model` section of a Dual Branch BEATs+EAT experiment: one section
/// per branch, as the single-model experiments write them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeatsEatConfig {
    pub beats: BeatsLoraConfig,
    pub eat: EatLoraConfig,
}

/// Seed offset of the EAT branch (its adapters and head), so the two
/// branches never share a random stream.
const EAT_SEED: u64 = 0xea7_0000;
/// Seed offset of the joint head.
const JOINT_SEED: u64 = 0x1011_7000;

#[derive(Module, Debug)]
pub struct BeatsEat {
    pub beats: BeatsLora,
    pub eat: EatLora,
    /// ArcFace (or softmax) head on the joint embedding.
    pub head: Head,
    /// Weights of the joint, BEATs and EAT losses.
    pub loss_weights: Vec<f64>,
}

/// One batch: both front-ends of the same clips.
pub struct BeatsEatBatch {
    /// [B, T_beats, 128]
    pub beats: Tensor<3>,
    /// [B, T_eat, 128]
    pub eat: Tensor<3>,
    pub labels: Option<Tensor<1, Int>>,
    pub seed: u64,
}

/// Trainable parameter counts of both branches and the joint head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DualCounts {
    pub beats: ParamCounts,
    pub eat: ParamCounts,
    pub joint_head: usize,
}

impl DualCounts {
    pub fn trainable(&self) -> usize {
        self.beats.trainable() + self.eat.trainable() + self.joint_head
    }
}

impl BeatsEatConfig {
    pub fn validate(&self) -> Result<()> {
        self.beats.validate()?;
        self.eat.validate()
    }

    /// The model for `classes` classes (see [`BeatsLoraConfig::init`]).
    pub fn init(
        &self,
        loss: &LossConfig,
        classes: usize,
        seed: u64,
        device: &Device,
        weights: bool,
    ) -> Result<BeatsEat> {
        let beats = self.beats.init(loss, classes, seed, device, weights)?;
        let eat = self.eat.init(loss, classes, seed.wrapping_add(EAT_SEED), device, weights)?;
        Ok(self.join(beats, eat, loss, classes, seed, device))
    }

    /// Adds the joint head to two branch models.
    pub fn join(
        &self,
        beats: BeatsLora,
        eat: EatLora,
        loss: &LossConfig,
        classes: usize,
        seed: u64,
        device: &Device,
    ) -> BeatsEat {
        let dim = self.beats.embedding_dim + self.eat.embedding_dim;
        let head = seeded_init(device, seed.wrapping_add(JOINT_SEED), || Head::new(loss, dim, classes, device));
        BeatsEat { beats, eat, head, loss_weights: loss.weights_for(3) }
    }
}

/// The branch and joint embeddings of one forward pass.
pub struct DualEmbeddings {
    pub beats: Tensor<2>,
    pub eat: Tensor<2>,
    pub joint: Tensor<2>,
}

impl BeatsEat {
    /// Embeddings of a batch; with `seed`, training noise of both branches.
    pub fn forward(&self, batch: &BeatsEatBatch, seed: Option<u64>) -> DualEmbeddings {
        let b = match seed {
            Some(s) => self.beats.embedding(batch.beats.clone(), Some(&mut self.beats.train_noise(s))),
            None => self.beats.embedding(batch.beats.clone(), None),
        };
        let e = match seed {
            Some(s) => self.eat.embedding(batch.eat.clone(), Some(&mut EatLora::train_rng(s))),
            None => self.eat.embedding(batch.eat.clone(), None),
        };
        let joint = Tensor::cat(vec![b.clone(), e.clone()], 1);
        DualEmbeddings { beats: b, eat: e, joint }
    }

    /// L2-normalised joint embeddings for kNN scoring (eval semantics).
    pub fn embed(&self, batch: &BeatsEatBatch) -> Tensor<2> {
        l2_normalize(self.forward(batch, None).joint, 1)
    }

    /// Weighted sum of the joint and branch losses, and the parts.
    pub fn loss(&self, batch: BeatsEatBatch) -> (Tensor<1>, Vec<(&'static str, Tensor<1>)>) {
        let labels = batch.labels.clone().expect("training batch has labels");
        let e = self.forward(&batch, Some(batch.seed));
        let w = &self.loss_weights;
        let joint = self.head.loss(e.joint, labels.clone());
        let lb = self.beats.head.loss(e.beats, labels.clone());
        let le = self.eat.head.loss(e.eat, labels);
        let total = joint.clone() * w[0] + lb.clone() * w[1] + le.clone() * w[2];
        (total, vec![("loss_joint", joint.detach()), ("loss_beats", lb.detach()), ("loss_eat", le.detach())])
    }

    /// Both encoders with their adapters folded in.
    pub fn merged(self) -> BeatsEat {
        BeatsEat { beats: self.beats.merged(), eat: self.eat.merged(), ..self }
    }

    pub fn param_counts(&self) -> DualCounts {
        DualCounts {
            beats: self.beats.param_counts(),
            eat: self.eat.param_counts(),
            joint_head: count_params(&self.head),
        }
    }
}

/// The pipeline's view: two cached front-ends (the BEATs fbank fitted to
/// the BEATs branch's `seconds`, the padded EAT fbank), three ArcFace
/// terms, kNN on the L2-normalised joint embedding, adapters merged for
/// scoring.
impl ModelInfo for BeatsEatConfig {
    fn pretrained_files(&self) -> Vec<std::path::PathBuf> {
        [self.beats.pretrained_files(), self.eat.pretrained_files()].concat()
    }
    fn validate(&self) -> Result<()> {
        BeatsEatConfig::validate(self)
    }
    fn loss_terms(&self) -> usize {
        3
    }
    fn scoring(&self) -> Scoring {
        Scoring::Embedding
    }
    fn frontends(&self) -> Vec<FrontEnd> {
        let mut f = self.beats.frontends();
        f.extend(self.eat.frontends());
        f
    }
}

impl ModelSpec for BeatsEatConfig {
    type Model = BeatsEat;
    type Batch = BeatsEatBatch;

    fn init(&self, ctx: &InitContext, device: &Device) -> Result<BeatsEat> {
        BeatsEatConfig::init(self, ctx.loss, ctx.classes, ctx.seed, device, ctx.pretrained)
    }

    fn fit(&self, inputs: Vec<Frames>) -> Result<Vec<Frames>> {
        let [b, e] = <[Frames; 2]>::try_from(inputs).map_err(|v| anyhow::anyhow!("{} inputs, expected 2", v.len()))?;
        // Each branch fits its own input as it does alone.
        let mut fitted = ModelSpec::fit(&self.beats, vec![b])?;
        fitted.extend(ModelSpec::fit(&self.eat, vec![e])?);
        Ok(fitted)
    }

    fn batch(&self, mut inputs: Vec<Vec<Frames>>, ctx: &BatchContext, device: &Device) -> Result<BeatsEatBatch> {
        Ok(BeatsEatBatch {
            beats: frames_batch(&mut inputs, 0, ctx, super::beats::SPECAUG_SALT, device),
            eat: frames_batch(&mut inputs, 1, ctx, eat::SPECAUG_SALT, device),
            labels: ctx.labels.map(|l| labels_tensor(l, device)),
            seed: ctx.seed,
        })
    }

    fn step(&self, model: &BeatsEat, batch: BeatsEatBatch) -> StepOutput {
        let (loss, logs) = model.loss(batch);
        StepOutput { loss, logs }
    }

    fn for_inference(&self, model: BeatsEat) -> BeatsEat {
        model.valid().merged()
    }

    fn infer(&self, model: &BeatsEat, batch: BeatsEatBatch) -> Tensor<2> {
        model.embed(&batch)
    }
}
