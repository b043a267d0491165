//! Configuration: the checkpoint's `cfg` (the original `BEATsConfig`) and
//! the fine-tuning settings of an experiment (`"kind": "beats_lora"`).

pub use crate::nn::lora::{LoraConfig, LoraTarget};
use anyhow::{Result, bail};
use burn::store::pytorch_reader::PickleValue;
use serde::{Deserialize, Deserializer, Serialize};
use std::path::PathBuf;

/// The original `BEATsConfig` (UNILM `beats/BEATs.py`): every field starts
/// at the code default below and the checkpoint's `cfg` dict overrides it
/// (`self.__dict__.update(cfg)`); keys the code does not know are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BeatsConfig {
    /// Patch size of the patch embedding (code default -1: must be set).
    pub input_patch_size: i64,
    /// Patch-embedding channels E.
    pub embed_dim: usize,
    #[serde(deserialize_with = "py_bool")]
    pub conv_bias: bool,
    pub encoder_layers: usize,
    /// Transformer width D.
    pub encoder_embed_dim: usize,
    pub encoder_ffn_embed_dim: usize,
    pub encoder_attention_heads: usize,
    pub activation_fn: String,
    /// Backward-only `GradMultiply` ratio applied to each layer's input.
    pub layer_wise_gradient_decay_ratio: f64,
    #[serde(deserialize_with = "py_bool")]
    pub layer_norm_first: bool,
    #[serde(deserialize_with = "py_bool")]
    pub deep_norm: bool,
    /// Training-only dropouts (all 0 in BEATs_iter3; see the module docs).
    pub dropout: f64,
    pub attention_dropout: f64,
    pub activation_dropout: f64,
    pub encoder_layerdrop: f64,
    pub dropout_input: f64,
    /// Kernel size of the convolutional positional embedding.
    pub conv_pos: usize,
    pub conv_pos_groups: usize,
    #[serde(deserialize_with = "py_bool")]
    pub relative_position_embedding: bool,
    pub num_buckets: usize,
    pub max_distance: usize,
    #[serde(deserialize_with = "py_bool")]
    pub gru_rel_pos: bool,
    /// Fine-tuned checkpoints carry an AudioSet `predictor` head.
    #[serde(deserialize_with = "py_bool")]
    pub finetuned_model: bool,
    pub predictor_dropout: f64,
    pub predictor_class: usize,
}

impl Default for BeatsConfig {
    /// The code defaults of `BEATsConfig.__init__`.
    fn default() -> Self {
        BeatsConfig {
            input_patch_size: -1,
            embed_dim: 512,
            conv_bias: false,
            encoder_layers: 12,
            encoder_embed_dim: 768,
            encoder_ffn_embed_dim: 3072,
            encoder_attention_heads: 12,
            activation_fn: "gelu".into(),
            layer_wise_gradient_decay_ratio: 1.0,
            layer_norm_first: false,
            deep_norm: false,
            dropout: 0.1,
            attention_dropout: 0.1,
            activation_dropout: 0.0,
            encoder_layerdrop: 0.0,
            dropout_input: 0.0,
            conv_pos: 128,
            conv_pos_groups: 16,
            relative_position_embedding: false,
            num_buckets: 320,
            max_distance: 1280,
            gru_rel_pos: false,
            finetuned_model: false,
            predictor_dropout: 0.1,
            predictor_class: 527,
        }
    }
}

/// Python truthiness of a bool-or-int flag (`gru_rel_pos` is compared with
/// `== 1` in the original and may be stored as an int).
fn py_bool<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        Bool(bool),
        Int(i64),
    }
    Ok(match B::deserialize(d)? {
        B::Bool(b) => b,
        B::Int(i) => i != 0,
    })
}

/// A pickle value as JSON (for serde); values JSON cannot hold become strings
/// naming their Python type, so a field expecting a number reports them.
pub fn pickle_to_json(v: &PickleValue) -> serde_json::Value {
    use serde_json::Value;
    match v {
        PickleValue::None => Value::Null,
        PickleValue::Bool(b) => Value::Bool(*b),
        PickleValue::Int(i) => Value::from(*i),
        PickleValue::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        PickleValue::String(s) => Value::String(s.clone()),
        PickleValue::List(l) => Value::Array(l.iter().map(pickle_to_json).collect()),
        PickleValue::Dict(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), pickle_to_json(v))).collect()),
        PickleValue::Bytes(_) => Value::String("<bytes>".into()),
        PickleValue::Unsupported(t) => Value::String(format!("<python object {t}>")),
    }
}

impl BeatsConfig {
    /// The configuration of a checkpoint's `cfg` dict (code defaults for
    /// missing keys).
    pub fn from_pickle(cfg: &PickleValue) -> Result<BeatsConfig> {
        let PickleValue::Dict(_) = cfg else {
            bail!("'cfg' is not a dict (found {cfg:?})");
        };
        let json = pickle_to_json(cfg);
        let c: BeatsConfig = serde_path_to_error::deserialize(json).map_err(|e| anyhow::anyhow!("cfg.{e}"))?;
        c.validate()?;
        Ok(c)
    }

    /// The configuration from JSON (as in the full-size key manifest).
    pub fn from_json(v: &serde_json::Value) -> Result<BeatsConfig> {
        let c: BeatsConfig = serde_path_to_error::deserialize(v.clone()).map_err(|e| anyhow::anyhow!("cfg.{e}"))?;
        c.validate()?;
        Ok(c)
    }

    /// What this implementation supports (everything released BEATs
    /// checkpoints use).
    pub fn validate(&self) -> Result<()> {
        if self.input_patch_size <= 0 {
            bail!("cfg.input_patch_size must be positive (found {})", self.input_patch_size);
        }
        let (d, h) = (self.encoder_embed_dim, self.encoder_attention_heads);
        if d == 0 || h == 0 || d % h != 0 {
            bail!("cfg: encoder_embed_dim {d} must be a positive multiple of encoder_attention_heads {h}");
        }
        if self.conv_pos == 0 || self.conv_pos_groups == 0 || d % self.conv_pos_groups != 0 {
            bail!("cfg: conv_pos_groups {} must divide encoder_embed_dim {d}", self.conv_pos_groups);
        }
        if self.embed_dim == 0 || self.encoder_layers == 0 || self.encoder_ffn_embed_dim == 0 {
            bail!("cfg: embed_dim, encoder_layers and encoder_ffn_embed_dim must be positive");
        }
        if self.activation_fn != "gelu" {
            bail!("cfg.activation_fn '{}' is not supported (BEATs uses 'gelu')", self.activation_fn);
        }
        if self.layer_norm_first {
            bail!("cfg.layer_norm_first = True (pre-LN) is not supported: released BEATs models are post-LN");
        }
        if self.relative_position_embedding && (self.num_buckets < 4 || self.max_distance <= self.num_buckets / 4) {
            bail!("cfg: num_buckets {} / max_distance {} are not usable", self.num_buckets, self.max_distance);
        }
        if !(0.0..1.0).contains(&self.encoder_layerdrop) {
            bail!("cfg.encoder_layerdrop must be in [0, 1)");
        }
        Ok(())
    }

    pub fn patch(&self) -> usize {
        self.input_patch_size as usize
    }

    pub fn head_dim(&self) -> usize {
        self.encoder_embed_dim / self.encoder_attention_heads
    }

    /// DeepNorm residual scale α = (2L)^(1/4) (1 without deep norm).
    pub fn deep_norm_alpha(&self) -> f64 {
        if self.deep_norm { (2.0 * self.encoder_layers as f64).powf(0.25) } else { 1.0 }
    }
}

/// How token features become one vector before the embedding layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Attentive statistics pooling (ASDKit `AttnStatPool`), trainable.
    #[default]
    AttentiveStats,
    /// Mean over tokens (no parameters).
    Mean,
}

/// The `model` section of a BEATs-LoRA experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeatsLoraConfig {
    /// The pre-trained checkpoint in the released format
    /// (`torch.save({'cfg': ..., 'model': ...})`, e.g. `BEATs_iter3.pt`).
    pub pretrained: PathBuf,
    /// Clip length the model sees in seconds: longer clips are cropped to
    /// their start, shorter ones tiled (in fbank frames).
    #[serde(default = "ten")]
    pub seconds: f32,
    #[serde(default)]
    pub lora: LoraConfig,
    #[serde(default)]
    pub pooling: Pooling,
    /// Size of the embedding (final Linear).
    #[serde(default = "d256")]
    pub embedding_dim: usize,
    /// LayerDrop probability while fine-tuning; None = the checkpoint's
    /// `encoder_layerdrop` (what the original does in `train()` mode).
    #[serde(default)]
    pub layerdrop: Option<f64>,
    /// Layer-wise gradient decay ratio; None = the checkpoint's
    /// `layer_wise_gradient_decay_ratio`.
    #[serde(default)]
    pub gradient_decay: Option<f64>,
}

fn ten() -> f32 {
    10.0
}
fn d256() -> usize {
    256
}

impl BeatsLoraConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.seconds >= 0.2 && self.seconds.is_finite()) {
            bail!("beats_lora.seconds must be at least 0.2 (one 16-frame patch)");
        }
        if self.embedding_dim == 0 {
            bail!("beats_lora.embedding_dim must be at least 1");
        }
        if let Some(p) = self.layerdrop
            && !(0.0..1.0).contains(&p)
        {
            bail!("beats_lora.layerdrop must be in [0, 1)");
        }
        if let Some(r) = self.gradient_decay
            && !(r.is_finite() && r > 0.0)
        {
            bail!("beats_lora.gradient_decay must be positive");
        }
        self.lora.validate_for("BEATs", &super::lora::TARGETS)
    }

    /// Fbank frames of the model input (`seconds` of audio, Kaldi framing).
    pub fn frames(&self) -> usize {
        let n = (self.seconds as f64 * 16_000.0).round() as usize;
        crate::features::fbank::num_frames(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn dict(items: &[(&str, PickleValue)]) -> PickleValue {
        PickleValue::Dict(items.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<HashMap<_, _>>())
    }

    #[test]
    fn missing_keys_take_the_code_defaults() {
        let c = BeatsConfig::from_pickle(&dict(&[
            ("input_patch_size", PickleValue::Int(16)),
            ("gru_rel_pos", PickleValue::Int(1)),
            ("dropout", PickleValue::Int(0)),
            ("some_future_key", PickleValue::String("ignored".into())),
        ]))
        .unwrap();
        let d = BeatsConfig::default();
        assert!(c.gru_rel_pos && c.dropout == 0.0);
        assert_eq!((c.max_distance, c.num_buckets, c.encoder_layers), (1280, 320, 12));
        assert_eq!(BeatsConfig { input_patch_size: 16, gru_rel_pos: true, dropout: 0.0, ..d }, c);
        assert!((BeatsConfig { deep_norm: true, ..c.clone() }.deep_norm_alpha() - 24f64.powf(0.25)).abs() < 1e-15);
    }

    #[test]
    fn unsupported_or_malformed_configurations_are_named() {
        let err = |items: &[(&str, PickleValue)]| format!("{:#}", BeatsConfig::from_pickle(&dict(items)).unwrap_err());
        assert!(err(&[]).contains("input_patch_size"));
        let p = ("input_patch_size", PickleValue::Int(16));
        assert!(err(&[p.clone(), ("activation_fn", PickleValue::String("relu".into()))]).contains("relu"));
        assert!(err(&[p.clone(), ("layer_norm_first", PickleValue::Bool(true))]).contains("layer_norm_first"));
        assert!(err(&[p.clone(), ("encoder_layers", PickleValue::String("x".into()))]).contains("encoder_layers"));
        assert!(err(&[p, ("encoder_attention_heads", PickleValue::Int(7))]).contains("encoder_attention_heads"));
        assert!(BeatsConfig::from_pickle(&PickleValue::List(vec![])).is_err());
    }

    #[test]
    fn lora_ranks_follow_the_report() {
        let l = LoraConfig::default();
        assert_eq!(l.rank_of(LoraTarget::Q, 11, 12), Some(64));
        assert_eq!(l.rank_of(LoraTarget::V, 5, 12), Some(64));
        assert_eq!(l.rank_of(LoraTarget::V, 6, 12), Some(96));
        assert_eq!(l.rank_of(LoraTarget::Out, 6, 12), Some(64));
        assert_eq!(l.rank_of(LoraTarget::K, 0, 12), None);
        let parsed: std::result::Result<BeatsLoraConfig, _> =
            serde_json::from_value(serde_json::json!({"pretrained": "x.pt", "lora": {"rnak": 4}}));
        assert!(parsed.unwrap_err().to_string().contains("rnak"));
        let c: BeatsLoraConfig = serde_json::from_value(serde_json::json!({"pretrained": "x.pt"})).unwrap();
        assert_eq!(c.frames(), 998);
        c.validate().unwrap();
        let fc: BeatsLoraConfig =
            serde_json::from_value(serde_json::json!({"pretrained": "x.pt", "lora": {"targets": ["q", "fc1"]}}))
                .unwrap();
        let e = format!("{:#}", fc.validate().unwrap_err());
        assert!(e.contains("BEATs") && e.contains("Fc1"), "{e}");
    }
}
