//! EAT (Chen et al., IJCAI 2024; cwx-worst-one/EAT) and its LoRA
//! fine-tuning for anomalous sound detection (THUEE report §2.4,
//! pretrained.md §2 and §4).
//!
//! * [`encoder`]: the EAT-base encoder as the original `extract_features`
//!   computes it (16×16 patch embedding with bias, fixed 2-D sin-cos
//!   positions, CLS token, pre-norm, post-LN blocks with a fused qkv).
//! * [`loader`]: both released layouts (fairseq `.pt`, Hugging Face
//!   `config.json` + `model.safetensors`), read without executing pickle
//!   code, through an explicit key map with strict checks.
//! * [`lora`]: adapters on the q and v slices of qkv and on fc1/fc2 (rank
//!   64), frozen base, merging.
//! * [`EatLora`]: encoder + the BEATs-LoRA head (attentive statistics
//!   pooling over the patch tokens, Linear to a 256-d embedding, ArcFace).
//!
//! Input: the EAT fbank (clip mean removed, Hann window, zero-padded to
//! ⌈frames/32⌉·32 frames, then normalised), see
//! [`crate::features::fbank::eat_input`]. Not applied in fine-tuning: EAT's
//! dropouts (0 in the released cfg) and ASDKit's drop-path 0.1 (the report
//! does not mention it).

pub mod config;
pub mod encoder;
pub mod loader;
pub mod lora;

pub use config::{EatConfig, EatLoraConfig, EatPooling, LoraConfig, LoraTarget};
pub use encoder::EatEncoder;
pub use loader::{EatCheckpoint, Layout, load_encoder, read_checkpoint, read_config};

use super::beats::{POOL_HIDDEN_RATIO, ParamCounts};
use super::spec::{BatchContext, InitContext, ModelInfo, ModelSpec, Scoring, frames_batch};
use crate::features::Frames;
use crate::features::fbank::FbankPreset;
use crate::features::frontend::FrontEnd;
use crate::nn::pooling::{AttnStatPool, mean_pool};
use crate::nn::util::{count_params, l2_normalize, labels_tensor, seeded_init};
use crate::nn::{Head, LossConfig};
use crate::train::StepOutput;
use crate::util::rng;
use anyhow::{Result, bail};
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor};
use rand_chacha::ChaCha8Rng;

/// The fine-tuning model.
#[derive(Module, Debug)]
pub struct EatLora {
    /// Pre-trained encoder (frozen) with LoRA adapters.
    pub encoder: EatEncoder,
    /// Attentive statistics pooling (None: mean or CLS, see `cls`).
    pub pool: Option<AttnStatPool>,
    /// Use the CLS token instead of pooling the patch tokens.
    pub cls: bool,
    /// Linear(D → embedding_dim).
    pub fc: Linear,
    pub head: Head,
}

#[derive(Module, Debug)]
struct Trainable {
    pool: Option<AttnStatPool>,
    fc: Linear,
    head: Head,
}

/// A batch of normalised, padded EAT fbank inputs.
pub struct EatBatch {
    /// [B, T, 128], T a multiple of 32.
    pub fbank: Tensor<3>,
    pub labels: Option<Tensor<1, Int>>,
    /// Keys the LoRA-dropout masks of this micro-batch.
    pub seed: u64,
}

impl EatLoraConfig {
    /// The model for `classes` classes. With `weights`, the encoder's
    /// weights are read from `pretrained`; without, only its configuration
    /// (the encoder stays lazy, to be filled from a saved run checkpoint).
    pub fn init(
        &self,
        loss: &LossConfig,
        classes: usize,
        seed: u64,
        device: &Device,
        weights: bool,
    ) -> Result<EatLora> {
        let (cfg, encoder) = if weights {
            let (cfg, enc, _) = load_encoder(&self.pretrained, device)?;
            (cfg, enc)
        } else {
            let cfg = read_config(&self.pretrained)?;
            let enc = EatEncoder::new(&cfg, device);
            (cfg, enc)
        };
        Ok(self.assemble(&cfg, encoder, loss, classes, seed, device))
    }

    /// Adds adapters and the seeded trainable head to an encoder of `cfg`.
    pub fn assemble(
        &self,
        cfg: &EatConfig,
        encoder: EatEncoder,
        loss: &LossConfig,
        classes: usize,
        seed: u64,
        device: &Device,
    ) -> EatLora {
        let encoder = lora::attach(encoder, &self.lora, seed, device);
        let d = cfg.embed_dim;
        let t = seeded_init(device, seed, || Trainable {
            pool: (self.pooling == EatPooling::AttentiveStats).then(|| AttnStatPool::new(d, POOL_HIDDEN_RATIO, device)),
            fc: LinearConfig::new(d, self.embedding_dim).init(device),
            head: Head::new(loss, self.embedding_dim, classes, device),
        });
        EatLora { encoder, pool: t.pool, cls: self.pooling == EatPooling::Cls, fc: t.fc, head: t.head }
    }
}

impl EatLora {
    /// Embedding (before normalisation) [B, embedding_dim]; `rng` drives
    /// LoRA dropout (training).
    pub fn embedding(&self, fbank: Tensor<3>, rng: Option<&mut ChaCha8Rng>) -> Tensor<2> {
        let z = self.encoder.forward(fbank, rng); // [B, 1 + N, D]
        let [b, n, d] = z.dims();
        let p = if self.cls {
            z.narrow(1, 0, 1).reshape([b, d])
        } else {
            let frames = z.narrow(1, 1, n - 1);
            match &self.pool {
                Some(pool) => pool.forward(frames),
                None => mean_pool(frames),
            }
        };
        self.fc.forward(p)
    }

    /// L2-normalised embeddings for kNN scoring (eval semantics).
    pub fn embed(&self, fbank: Tensor<3>) -> Tensor<2> {
        l2_normalize(self.embedding(fbank, None), 1)
    }

    /// The seeded stream of a training micro-batch's LoRA-dropout masks.
    pub fn train_rng(seed: u64) -> ChaCha8Rng {
        rng::stream(seed, &[0xea7])
    }

    /// Training loss of a labelled batch.
    pub fn loss(&self, batch: EatBatch) -> Tensor<1> {
        let labels = batch.labels.expect("training batch has labels");
        let e = self.embedding(batch.fbank, Some(&mut Self::train_rng(batch.seed)));
        self.head.loss(e, labels)
    }

    /// The same model with the adapters folded into the encoder weights.
    pub fn merged(self) -> EatLora {
        EatLora { encoder: lora::merge(self.encoder), ..self }
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

/// Checks one clip's EAT fbank against the model input size.
pub fn check_input(f: &Frames, frames: usize) -> Result<()> {
    if (f.rows, f.cols) != (frames, 128) {
        bail!("EAT fbank is {}×{}, expected {frames}×128", f.rows, f.cols);
    }
    Ok(())
}

/// The pipeline's view of the model: the cached EAT fbank padded (or cut)
/// to ⌈frames/32⌉·32 frames of `seconds`, SpecAugment per training sample,
/// one ArcFace term, kNN on the L2-normalised embedding; adapters merged
/// for scoring.
impl ModelInfo for EatLoraConfig {
    fn pretrained_files(&self) -> Vec<std::path::PathBuf> {
        vec![self.pretrained.clone()]
    }
    fn validate(&self) -> Result<()> {
        EatLoraConfig::validate(self)
    }
    fn loss_terms(&self) -> usize {
        1
    }
    fn scoring(&self) -> Scoring {
        Scoring::Embedding
    }
    fn frontends(&self) -> Vec<FrontEnd> {
        vec![FrontEnd::Fbank { preset: FbankPreset::Eat, eat_length: Some(self.eat_length()) }]
    }
}

/// SpecAugment stream salt of the EAT input.
pub const SPECAUG_SALT: u64 = 0x05ea_7a06;

impl ModelSpec for EatLoraConfig {
    type Model = EatLora;
    type Batch = EatBatch;

    fn init(&self, ctx: &InitContext, device: &Device) -> Result<EatLora> {
        EatLoraConfig::init(self, ctx.loss, ctx.classes, ctx.seed, device, ctx.pretrained)
    }

    fn fit(&self, inputs: Vec<Frames>) -> Result<Vec<Frames>> {
        check_input(&inputs[0], self.frames())?;
        Ok(inputs)
    }

    fn batch(&self, mut inputs: Vec<Vec<Frames>>, ctx: &BatchContext, device: &Device) -> Result<EatBatch> {
        Ok(EatBatch {
            fbank: frames_batch(&mut inputs, 0, ctx, SPECAUG_SALT, device),
            labels: ctx.labels.map(|l| labels_tensor(l, device)),
            seed: ctx.seed,
        })
    }

    fn step(&self, model: &EatLora, batch: EatBatch) -> StepOutput {
        StepOutput { loss: model.loss(batch), logs: Vec::new() }
    }

    fn for_inference(&self, model: EatLora) -> EatLora {
        model.valid().merged()
    }

    fn infer(&self, model: &EatLora, batch: EatBatch) -> Tensor<2> {
        model.embed(batch.fbank)
    }
}
