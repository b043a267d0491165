//! Configuration: the encoder's sizes as either released layout states them
//! (Hugging Face `config.json`, fairseq `cfg.model`) and the fine-tuning
//! settings of an experiment (`"kind": "eat_lora"`).

use crate::features::fbank::EatLength;
use crate::models::beats::config::pickle_to_json;
pub use crate::nn::lora::{LoraConfig, LoraTarget};
use anyhow::{Result, bail};
use burn::store::pytorch_reader::PickleValue;
use serde::{Deserialize, Deserializer, Serialize};
use std::path::PathBuf;

/// The EAT encoder's sizes. Field names and defaults follow the Hugging
/// Face `EATConfig` (`configuration_eat.py` of `worstchan/EAT-base_*`),
/// whose defaults are EAT-base; the fairseq layout is translated into it
/// ([`EatConfig::from_fairseq`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EatConfig {
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    /// FFN width = ⌊embed_dim · mlp_ratio⌋.
    pub mlp_ratio: f64,
    pub patch_size: usize,
    pub stride: usize,
    pub in_chans: usize,
    pub mel_bins: usize,
    /// Time patches the fixed positional table covers (table rows =
    /// max_length · mel_bins / patch_size).
    pub max_length: usize,
    pub qkv_bias: bool,
    pub layer_norm_first: bool,
    pub norm_eps: f64,
    pub fixed_positions: bool,
    /// "pretrain", or "finetune" (adds an AudioSet head, not used here).
    pub model_variant: String,
    /// Tokens prepended to the patches (the CLS token).
    pub num_extra_tokens: usize,
}

impl Default for EatConfig {
    /// EAT-base (pretraining_AS2M.yaml).
    fn default() -> Self {
        EatConfig {
            embed_dim: 768,
            depth: 12,
            num_heads: 12,
            mlp_ratio: 4.0,
            patch_size: 16,
            stride: 16,
            in_chans: 1,
            mel_bins: 128,
            max_length: 768,
            qkv_bias: true,
            layer_norm_first: false,
            norm_eps: 1e-6,
            fixed_positions: true,
            model_variant: "pretrain".into(),
            num_extra_tokens: 1,
        }
    }
}

/// The fields of fairseq's `cfg.model` (data2vec_multi) this encoder needs:
/// the required sizes have no default, so a foreign cfg is an error, not a
/// silently different model.
#[derive(Deserialize)]
struct FairseqModel {
    depth: usize,
    embed_dim: usize,
    num_heads: usize,
    mlp_ratio: f64,
    norm_eps: f64,
    #[serde(default)]
    layer_norm_first: bool,
    modalities: FairseqModalities,
}

#[derive(Deserialize)]
struct FairseqModalities {
    image: FairseqImage,
}

#[derive(Deserialize)]
struct FairseqImage {
    patch_size: usize,
    #[serde(default = "one")]
    in_chans: usize,
    #[serde(default = "one")]
    num_extra_tokens: usize,
    #[serde(default = "d768")]
    max_length: usize,
    #[serde(default)]
    prenet_depth: usize,
    #[serde(default)]
    use_alibi_encoder: bool,
    #[serde(default = "yes")]
    fixed_positions: bool,
}

fn one() -> usize {
    1
}
fn d768() -> usize {
    768
}
fn yes() -> bool {
    true
}

impl EatConfig {
    /// From a Hugging Face `config.json` (missing fields: EAT-base values,
    /// as `EATConfig.__init__` defaults them).
    pub fn from_hf_json(v: &serde_json::Value) -> Result<EatConfig> {
        let c: EatConfig =
            serde_path_to_error::deserialize(v.clone()).map_err(|e| anyhow::anyhow!("config.json: {e}"))?;
        c.validate()?;
        Ok(c)
    }

    /// From a fairseq checkpoint's `cfg` (a plain dict, as fairseq stores
    /// it after `OmegaConf.to_container`): its `model` entry.
    pub fn from_fairseq(cfg: &PickleValue) -> Result<EatConfig> {
        let PickleValue::Dict(d) = cfg else {
            bail!("'cfg' is not a dict (found {cfg:?})");
        };
        let Some(model) = d.get("model") else {
            bail!("'cfg' has no 'model' entry (keys: {:?})", d.keys().collect::<Vec<_>>());
        };
        Self::from_fairseq_json(&pickle_to_json(model))
    }

    /// From the JSON form of fairseq's `cfg.model` (as in the key manifest).
    pub fn from_fairseq_json(model: &serde_json::Value) -> Result<EatConfig> {
        let m: FairseqModel =
            serde_path_to_error::deserialize(model.clone()).map_err(|e| anyhow::anyhow!("cfg.model.{e}"))?;
        let img = &m.modalities.image;
        if img.prenet_depth != 0 || img.use_alibi_encoder {
            bail!("cfg.model.modalities.image: prenet_depth > 0 and ALiBi are not supported (EAT uses neither)");
        }
        let c = EatConfig {
            embed_dim: m.embed_dim,
            depth: m.depth,
            num_heads: m.num_heads,
            mlp_ratio: m.mlp_ratio,
            patch_size: img.patch_size,
            stride: img.patch_size,
            in_chans: img.in_chans,
            max_length: img.max_length,
            layer_norm_first: m.layer_norm_first,
            norm_eps: m.norm_eps,
            fixed_positions: img.fixed_positions,
            num_extra_tokens: img.num_extra_tokens,
            ..EatConfig::default()
        };
        c.validate()?;
        Ok(c)
    }

    /// What this implementation supports (everything the released EAT
    /// checkpoints use).
    pub fn validate(&self) -> Result<()> {
        let (d, h, p) = (self.embed_dim, self.num_heads, self.patch_size);
        if d == 0 || h == 0 || d % h != 0 {
            bail!("EAT config: embed_dim {d} must be a positive multiple of num_heads {h}");
        }
        if p == 0 || self.stride != p || !self.mel_bins.is_multiple_of(p) {
            bail!("EAT config: patch_size {p} must equal stride {} and divide mel_bins {}", self.stride, self.mel_bins);
        }
        if self.depth == 0 || self.ffn_dim() == 0 || self.max_length == 0 {
            bail!("EAT config: depth, mlp_ratio and max_length must be positive");
        }
        if self.in_chans != 1 || self.num_extra_tokens != 1 {
            bail!("EAT config: only in_chans 1 and one extra (CLS) token are supported");
        }
        if self.layer_norm_first {
            bail!("EAT config: layer_norm_first = true (pre-LN) is not supported: EAT is post-LN");
        }
        if !self.fixed_positions {
            bail!("EAT config: fixed_positions = false is not supported");
        }
        if !(self.norm_eps > 0.0 && self.norm_eps.is_finite()) {
            bail!("EAT config: norm_eps must be positive");
        }
        Ok(())
    }

    pub fn ffn_dim(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio) as usize
    }

    /// Frequency patches per time patch (8 for 128 mel bins).
    pub fn freq_patches(&self) -> usize {
        self.mel_bins / self.patch_size
    }

    /// Rows of the fixed positional table.
    pub fn positions(&self) -> usize {
        self.max_length * self.freq_patches()
    }
}

/// How the token features become one vector before the embedding Linear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EatPooling {
    /// Attentive statistics pooling over the patch tokens (the BEATs-LoRA
    /// head, as the issue asks for the same head).
    #[default]
    AttentiveStats,
    /// Mean over the patch tokens.
    Mean,
    /// The CLS token (ASDKit's `prediction_mode: cls`).
    Cls,
}

/// The `model` section of an EAT-LoRA experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EatLoraConfig {
    /// The pre-trained checkpoint: a fairseq `.pt`, a Hugging Face folder
    /// (`config.json` + `model.safetensors`) or its `.safetensors` file.
    pub pretrained: PathBuf,
    /// Clip length in seconds: the fbank is zero-padded (or cut) to
    /// ⌈frames/32⌉·32 frames of this length (1024 for 10 s), as EAT pads.
    #[serde(default = "ten")]
    pub seconds: f32,
    /// Adapters; fields left out take the EAT values of [`eat_lora`] (not
    /// the BEATs defaults of `LoraConfig`).
    #[serde(default = "eat_lora", deserialize_with = "eat_lora_section")]
    pub lora: LoraConfig,
    #[serde(default)]
    pub pooling: EatPooling,
    #[serde(default = "d256")]
    pub embedding_dim: usize,
}

fn ten() -> f32 {
    10.0
}
fn d256() -> usize {
    256
}

/// Report §2.4: q and v and the feed-forward layers, rank 64 (no rank-96
/// exception: the report states it for BEATs only).
pub fn eat_lora() -> LoraConfig {
    LoraConfig {
        targets: vec![LoraTarget::Q, LoraTarget::V, LoraTarget::Fc1, LoraTarget::Fc2],
        v_rank_latter_half: None,
        ..LoraConfig::default()
    }
}

/// A `lora` section over the EAT defaults, field by field.
fn eat_lora_section<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<LoraConfig, D::Error> {
    use serde::de::Error;
    let given = serde_json::Value::deserialize(d)?;
    let serde_json::Value::Object(fields) = given else {
        return Err(D::Error::custom("lora must be an object"));
    };
    let mut v = serde_json::to_value(eat_lora()).map_err(D::Error::custom)?;
    v.as_object_mut().expect("struct serialises to an object").extend(fields);
    serde_json::from_value(v).map_err(D::Error::custom)
}

/// Every projection an EAT block can carry an adapter on.
pub const TARGETS: [LoraTarget; 6] =
    [LoraTarget::Q, LoraTarget::K, LoraTarget::V, LoraTarget::Out, LoraTarget::Fc1, LoraTarget::Fc2];

impl EatLoraConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.seconds >= 0.2 && self.seconds.is_finite()) {
            bail!("eat_lora.seconds must be at least 0.2 (one 16-frame patch)");
        }
        if self.embedding_dim == 0 {
            bail!("eat_lora.embedding_dim must be at least 1");
        }
        self.lora.validate_for("EAT", &TARGETS)
    }

    /// Fbank frames of the model input: `seconds` of audio, padded to a
    /// multiple of 32 frames (ASDKit's rule; 998 → 1024 for 10 s).
    pub fn frames(&self) -> usize {
        let n = (self.seconds as f64 * 16_000.0).round() as usize;
        crate::features::fbank::num_frames(n).div_ceil(32) * 32
    }

    /// The front-end length rule: every clip padded or cut to [`Self::frames`].
    pub fn eat_length(&self) -> EatLength {
        EatLength::Fixed(self.frames())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_defaults_are_eat_base_and_bad_sizes_are_named() {
        let c =
            EatConfig::from_hf_json(&serde_json::json!({"model_type": "eat", "architectures": ["EATModel"]})).unwrap();
        assert_eq!(c, EatConfig::default());
        assert_eq!((c.ffn_dim(), c.positions()), (3072, 6144));
        let e = EatConfig::from_hf_json(&serde_json::json!({"num_heads": 7})).unwrap_err();
        assert!(format!("{e:#}").contains("num_heads 7"));
        let e = EatConfig::from_hf_json(&serde_json::json!({"depth": "x"})).unwrap_err();
        assert!(format!("{e:#}").contains("depth"));
        let e = EatConfig::from_hf_json(&serde_json::json!({"layer_norm_first": true})).unwrap_err();
        assert!(format!("{e:#}").contains("layer_norm_first"));
    }

    #[test]
    fn lora_settings_follow_the_report() {
        let c: EatLoraConfig = serde_json::from_value(serde_json::json!({"pretrained": "x.pt"})).unwrap();
        assert_eq!(c.frames(), 1024);
        assert_eq!(c.lora.rank_of(LoraTarget::V, 11, 12), Some(64));
        assert_eq!(c.lora.rank_of(LoraTarget::Fc2, 0, 12), Some(64));
        assert_eq!(c.lora.rank_of(LoraTarget::K, 0, 12), None);
        c.validate().unwrap();
        let partial: EatLoraConfig =
            serde_json::from_value(serde_json::json!({"pretrained": "x.pt", "lora": {"rank": 8}})).unwrap();
        assert_eq!(partial.lora, LoraConfig { rank: 8, ..eat_lora() });
        let typo = serde_json::from_value::<EatLoraConfig>(serde_json::json!({"pretrained": "x", "lora": {"rnak": 8}}));
        assert!(typo.unwrap_err().to_string().contains("rnak"));
        let two = EatLoraConfig { seconds: 2.0, ..c };
        assert_eq!(two.frames(), 224); // 198 frames → 7·32
    }
}
