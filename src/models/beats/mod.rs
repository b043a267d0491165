//! BEATs (Chen et al., ICML 2023; microsoft/unilm `beats/`) and its LoRA
//! fine-tuning for anomalous sound detection (THUEE report §2.3,
//! pretrained.md §1 and §4).
//!
//! * [`encoder`]: the BEATs encoder exactly as the original `extract_features`
//!   computes it (16×16 patch embedding, LayerNorm, projection, weight-normed
//!   grouped convolutional positional embedding, 12 post-LN DeepNorm layers
//!   with the bucketed, gated relative position bias).
//! * [`loader`]: the released checkpoint format (`BEATs_iter3.pt`), read in
//!   Rust without executing pickle code, through an explicit key map with
//!   strict checks.
//! * [`lora`]: adapters on q/v/out (rank 64, 96 for v in the latter half of
//!   the layers), frozen base, merging.
//! * [`BeatsLora`]: encoder + attentive statistics pooling + Linear to a
//!   256-d embedding + ArcFace (or softmax) head, the trainable parts being
//!   the adapters, the pooling, the Linear and the head.
//!
//! Training-time choices (the original's `train()` behaviour), applied only
//! in [`BeatsLora::loss`] and driven by the micro-batch seed:
//! * LayerDrop with the checkpoint's `encoder_layerdrop` (0.05 in the
//!   BEATs_iter3 cfg copies that set it) unless `layerdrop` overrides it —
//!   the original skips a layer when a uniform draw is ≤ p; here the draw
//!   comes from the run's seeded stream, so runs are reproducible and
//!   resumable;
//! * layer-wise gradient decay (`GradMultiply`, ratio 0.6 in the cfg): a
//!   backward-only scaling of each layer's input gradient, exact identity
//!   in the forward pass;
//! * LoRA dropout (default 0), masks from the same stream.
//!
//! The transformer's own dropouts (`dropout`, `attention_dropout`,
//! `activation_dropout`, `dropout_input`) are not applied: they are 0 in
//! every released BEATs cfg.

pub mod config;
pub mod encoder;
pub mod loader;
pub mod lora;

pub use config::{BeatsConfig, BeatsLoraConfig, LoraConfig, LoraTarget, Pooling};
pub use encoder::{BeatsEncoder, TrainNoise};
pub use loader::{BeatsCheckpoint, StateDict, load_encoder, read_checkpoint, read_config};

use super::spec::{BatchContext, InitContext, ModelInfo, ModelSpec, Scoring, fit_rows, frames_batch};
use crate::features::Frames;
use crate::features::fbank::FbankPreset;
use crate::features::frontend::FrontEnd;
use crate::nn::pooling::{AttnStatPool, mean_pool};
use crate::nn::util::{count_params, l2_normalize, labels_tensor, seeded_init};
use crate::nn::{Head, LossConfig};
use crate::train::StepOutput;
use crate::util::rng;
use anyhow::Result;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor};

/// SpecAugment stream salt of the BEATs input.
pub const SPECAUG_SALT: u64 = 0x05be_ca06;

/// Hidden-size divisor of the attentive statistics pooling (ASDKit: 16).
pub const POOL_HIDDEN_RATIO: usize = 16;

/// The fine-tuning model.
#[derive(Module, Debug)]
pub struct BeatsLora {
    /// Pre-trained encoder (frozen) with LoRA adapters.
    pub encoder: BeatsEncoder,
    /// Attentive statistics pooling; None = mean pooling.
    pub pool: Option<AttnStatPool>,
    /// Linear(D → embedding_dim).
    pub fc: Linear,
    pub head: Head,
    /// LayerDrop probability in training.
    pub layerdrop: f64,
    /// GradMultiply ratio in training.
    pub gradient_decay: f64,
}

/// Trainable parts, built under one seed.
#[derive(Module, Debug)]
struct Trainable {
    pool: Option<AttnStatPool>,
    fc: Linear,
    head: Head,
}

/// A batch of normalised BEATs fbank inputs.
pub struct BeatsBatch {
    /// [B, T, 128]
    pub fbank: Tensor<3>,
    pub labels: Option<Tensor<1, Int>>,
    /// Keys LayerDrop / LoRA-dropout draws of this micro-batch.
    pub seed: u64,
}

/// Parameter counts (PyTorch convention: BN running statistics excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCounts {
    pub frozen_encoder: usize,
    pub lora: usize,
    pub pooling: usize,
    pub fc: usize,
    pub head: usize,
}

impl ParamCounts {
    /// Everything that trains: adapters, pooling, embedding Linear, head.
    pub fn trainable(&self) -> usize {
        self.lora + self.pooling + self.fc + self.head
    }
}

impl BeatsLoraConfig {
    /// The model for `classes` classes. With `weights`, the encoder's
    /// weights are read from `pretrained`; without, only its cfg is read and
    /// the encoder stays lazy (to be filled from a saved run checkpoint).
    pub fn init(
        &self,
        loss: &LossConfig,
        classes: usize,
        seed: u64,
        device: &Device,
        weights: bool,
    ) -> Result<BeatsLora> {
        let (cfg, encoder) = if weights {
            load_encoder(&self.pretrained, device)?
        } else {
            let cfg = read_config(&self.pretrained)?;
            let enc = BeatsEncoder::new(&cfg, device);
            (cfg, enc)
        };
        Ok(self.assemble(&cfg, encoder, loss, classes, seed, device))
    }

    /// Adds adapters and the seeded trainable head to an encoder of `cfg`.
    pub fn assemble(
        &self,
        cfg: &BeatsConfig,
        encoder: BeatsEncoder,
        loss: &LossConfig,
        classes: usize,
        seed: u64,
        device: &Device,
    ) -> BeatsLora {
        let encoder = lora::attach(encoder, &self.lora, seed, device);
        let d = cfg.encoder_embed_dim;
        let t = seeded_init(device, seed, || Trainable {
            pool: (self.pooling == Pooling::AttentiveStats).then(|| AttnStatPool::new(d, POOL_HIDDEN_RATIO, device)),
            fc: LinearConfig::new(d, self.embedding_dim).init(device),
            head: Head::new(loss, self.embedding_dim, classes, device),
        });
        BeatsLora {
            encoder,
            pool: t.pool,
            fc: t.fc,
            head: t.head,
            layerdrop: self.layerdrop.unwrap_or(cfg.encoder_layerdrop),
            gradient_decay: self.gradient_decay.unwrap_or(cfg.layer_wise_gradient_decay_ratio),
        }
    }
}

impl BeatsLora {
    /// Embedding (before normalisation) [B, embedding_dim].
    pub fn embedding(&self, fbank: Tensor<3>, noise: Option<&mut TrainNoise>) -> Tensor<2> {
        let z = self.encoder.forward(fbank, noise); // [B, N, D]
        let p = match &self.pool {
            Some(pool) => pool.forward(z),
            None => mean_pool(z),
        };
        self.fc.forward(p)
    }

    /// L2-normalised embeddings for kNN scoring (eval semantics).
    pub fn embed(&self, fbank: Tensor<3>) -> Tensor<2> {
        l2_normalize(self.embedding(fbank, None), 1)
    }

    /// Training loss of a labelled batch (LayerDrop, gradient decay and
    /// LoRA dropout drawn from the batch seed).
    pub fn loss(&self, batch: BeatsBatch) -> Tensor<1> {
        let labels = batch.labels.expect("training batch has labels");
        let e = self.embedding(batch.fbank, Some(&mut self.train_noise(batch.seed)));
        self.head.loss(e, labels)
    }

    /// The training noise of a micro-batch (LayerDrop and LoRA-dropout
    /// draws from the stream of its seed).
    pub fn train_noise(&self, seed: u64) -> TrainNoise {
        TrainNoise {
            rng: rng::stream(seed, &[0xbea75]),
            layerdrop: self.layerdrop,
            gradient_decay: self.gradient_decay,
        }
    }

    /// The same model with the adapters folded into the encoder weights.
    pub fn merged(self) -> BeatsLora {
        BeatsLora { encoder: lora::merge(self.encoder), ..self }
    }

    pub fn param_counts(&self) -> ParamCounts {
        let lora = lora::adapter_params(&self.encoder);
        ParamCounts {
            frozen_encoder: count_params(&self.encoder) - lora,
            lora,
            pooling: self.pool.as_ref().map_or(0, count_params),
            fc: count_params(&self.fc),
            head: count_params(&self.head),
        }
    }
}

/// The pipeline's view of the model: the cached BEATs fbank fitted to
/// `seconds` (cropped, or tiled from the start), SpecAugment per training
/// sample, one ArcFace term, kNN on the L2-normalised embedding; the
/// adapters are merged for scoring.
impl ModelInfo for BeatsLoraConfig {
    fn pretrained_files(&self) -> Vec<std::path::PathBuf> {
        vec![self.pretrained.clone()]
    }
    fn validate(&self) -> Result<()> {
        BeatsLoraConfig::validate(self)
    }
    fn loss_terms(&self) -> usize {
        1
    }
    fn scoring(&self) -> Scoring {
        Scoring::Embedding
    }
    fn frontends(&self) -> Vec<FrontEnd> {
        vec![FrontEnd::Fbank { preset: FbankPreset::Beats, eat_length: None }]
    }
}

impl ModelSpec for BeatsLoraConfig {
    type Model = BeatsLora;
    type Batch = BeatsBatch;

    fn init(&self, ctx: &InitContext, device: &Device) -> Result<BeatsLora> {
        BeatsLoraConfig::init(self, ctx.loss, ctx.classes, ctx.seed, device, ctx.pretrained)
    }

    fn fit(&self, inputs: Vec<Frames>) -> Result<Vec<Frames>> {
        let f = &inputs[0];
        if f.cols != 128 {
            anyhow::bail!("BEATs fbank has {} mel bins, expected 128", f.cols);
        }
        Ok(vec![fit_rows(f, self.frames())?])
    }

    fn batch(&self, mut inputs: Vec<Vec<Frames>>, ctx: &BatchContext, device: &Device) -> Result<BeatsBatch> {
        Ok(BeatsBatch {
            fbank: frames_batch(&mut inputs, 0, ctx, SPECAUG_SALT, device),
            labels: ctx.labels.map(|l| labels_tensor(l, device)),
            seed: ctx.seed,
        })
    }

    fn step(&self, model: &BeatsLora, batch: BeatsBatch) -> StepOutput {
        StepOutput { loss: model.loss(batch), logs: Vec::new() }
    }

    fn for_inference(&self, model: BeatsLora) -> BeatsLora {
        model.valid().merged()
    }

    fn infer(&self, model: &BeatsLora, batch: BeatsBatch) -> Tensor<2> {
        model.embed(batch.fbank)
    }
}

/// Loads a released checkpoint for inference (`asd embed`).
pub fn load_for_inference(path: &std::path::Path, device: &Device) -> Result<(BeatsConfig, BeatsEncoder)> {
    // Every error of the loader names the file already.
    load_encoder(path, device)
}
