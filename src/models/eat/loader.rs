//! Reading the two released EAT layouts without executing pickle code:
//!
//! * **fairseq** (`EAT-base_epoch*_pt.pt`, cwx-worst-one/EAT README): a
//!   `torch.save` dict whose `cfg.model` gives the sizes and whose `model`
//!   holds the student (`modality_encoders.IMAGE.*`, `blocks.*`), the
//!   pre-training decoder (`modality_encoders.IMAGE.decoder.*`) and the EMA
//!   teacher (`_ema`, a nested dict). The decoder and the teacher are
//!   ignored on purpose: `extract_features` uses neither (the loader lists
//!   them in [`EatCheckpoint::ignored`]).
//! * **Hugging Face** (`worstchan/EAT-base_epoch30_pretrain`): `config.json`
//!   and `model.safetensors` with the student's encoder under `model.`; a
//!   fine-tuned variant's AudioSet head (`model.fc_norm.*`, `model.head.*`)
//!   is ignored the same way.
//!
//! Key map (checkpoint key → burn parameter path; Linear weights are
//! [out, in] in torch and [in, out] in burn, hence transposed), with
//! F = `modality_encoders.IMAGE.` (fairseq) or `model.` (HF) and
//! B = `blocks.` (fairseq) or `model.blocks.` (HF):
//!
//! | fairseq | Hugging Face | burn | transform |
//! |---|---|---|---|
//! | `F local_encoder.proj.{weight [D,1,16,16], bias}` | `model.local_encoder.proj.*` | `proj.{weight,bias}` | — |
//! | `F fixed_positional_encoder.positions` [1,P,D] | `model.fixed_positional_encoder.positions` | `positions` | — |
//! | `F extra_tokens` [1,1,D] | `model.extra_tokens` | `extra_tokens` | — |
//! | `F context_encoder.norm.{weight,bias}` | `model.pre_norm.*` | `pre_norm.{gamma,beta}` | — |
//! | `B{i}.{norm1,norm2}.{weight,bias}` | same under `model.` | `blocks.{i}.{norm1,norm2}.{gamma,beta}` | — |
//! | `B{i}.attn.{qkv,proj}.{weight,bias}` | same under `model.` | `blocks.{i}.attn.{qkv,proj}.*` | weight transposed |
//! | `B{i}.mlp.{fc1,fc2}.{weight,bias}` | same under `model.` | `blocks.{i}.mlp.{fc1,fc2}.*` | weight transposed |
//!
//! Loading is strict: a missing key, an unexpected key or a different
//! shape is an error naming the key and both shapes, in one one-line error
//! (many problems are counted per kind, the first named).

use super::config::EatConfig;
use super::encoder::EatEncoder;
use crate::models::state_dict::{
    KeyMapEntry, StateDict, assign_all, key_problems, mapped_values, param_shapes, report, unexpected_keys,
};
use anyhow::{Context, Result, bail};
use burn::store::pytorch_reader::PytorchReader;
use burn::tensor::Device;
use std::path::{Path, PathBuf};

/// Which released layout a checkpoint has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Fairseq,
    HuggingFace,
}

/// Prefixes of the checkpoint keys of `layout`: (modality encoder, pre-norm, blocks).
fn prefixes(layout: Layout) -> (&'static str, &'static str, &'static str) {
    match layout {
        Layout::Fairseq => ("modality_encoders.IMAGE.", "modality_encoders.IMAGE.context_encoder.norm", "blocks."),
        Layout::HuggingFace => ("model.", "model.pre_norm", "model.blocks."),
    }
}

/// Every checkpoint key of an encoder of `cfg` in `layout` and its burn
/// parameter (the table in the module docs, generated for `cfg`).
pub fn key_map(cfg: &EatConfig, layout: Layout) -> Vec<KeyMapEntry> {
    let (enc, norm, blocks) = prefixes(layout);
    let mut m = Vec::new();
    let mut add = |torch: String, burn: String, transpose: bool| m.push(KeyMapEntry { torch, burn, transpose });
    add(format!("{enc}local_encoder.proj.weight"), "proj.weight".into(), false);
    add(format!("{enc}local_encoder.proj.bias"), "proj.bias".into(), false);
    add(format!("{enc}fixed_positional_encoder.positions"), "positions".into(), false);
    add(format!("{enc}extra_tokens"), "extra_tokens".into(), false);
    add(format!("{norm}.weight"), "pre_norm.gamma".into(), false);
    add(format!("{norm}.bias"), "pre_norm.beta".into(), false);
    for i in 0..cfg.depth {
        let (t, b) = (format!("{blocks}{i}"), format!("blocks.{i}"));
        for n in ["norm1", "norm2"] {
            add(format!("{t}.{n}.weight"), format!("{b}.{n}.gamma"), false);
            add(format!("{t}.{n}.bias"), format!("{b}.{n}.beta"), false);
        }
        for l in ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"] {
            add(format!("{t}.{l}.weight"), format!("{b}.{l}.weight"), true);
            if l != "attn.qkv" || cfg.qkv_bias {
                add(format!("{t}.{l}.bias"), format!("{b}.{l}.bias"), false);
            }
        }
    }
    m
}

/// Key prefixes a layout carries on purpose and the encoder does not use,
/// with the reason.
fn ignored_prefixes(cfg: &EatConfig, layout: Layout) -> Vec<(&'static str, &'static str)> {
    match layout {
        Layout::Fairseq => vec![
            ("modality_encoders.IMAGE.decoder.", "the pre-training decoder"),
            ("_ema.", "the EMA teacher of pre-training"),
        ],
        Layout::HuggingFace if cfg.model_variant == "finetune" => vec![
            ("model.fc_norm.", "the fine-tuned AudioSet head's norm"),
            ("model.head.", "the fine-tuned AudioSet head"),
        ],
        Layout::HuggingFace => Vec::new(),
    }
}

/// A released EAT checkpoint: configuration and weights.
pub struct EatCheckpoint {
    pub cfg: EatConfig,
    pub layout: Layout,
    pub state: StateDict,
    /// What the loader skipped on purpose: (key prefix, reason, tensors).
    pub ignored: Vec<(String, String, usize)>,
}

impl EatCheckpoint {
    /// One line per ignored key group, for the user.
    pub fn notes(&self) -> Vec<String> {
        self.ignored
            .iter()
            .map(|(p, why, n)| format!("EAT loader: ignored {n} tensors {p}* ({why}; not used by extract_features)"))
            .collect()
    }
}

/// The files of a Hugging Face layout given its folder or its
/// `.safetensors` file: (weights, config.json beside them).
fn hf_files(path: &Path) -> (PathBuf, PathBuf) {
    if path.is_dir() {
        (path.join("model.safetensors"), path.join("config.json"))
    } else {
        (path.to_path_buf(), path.with_file_name("config.json"))
    }
}

/// The layout of `path`: a folder or a `.safetensors` file is Hugging Face,
/// anything else a fairseq torch file.
pub fn layout_of(path: &Path) -> Layout {
    if path.is_dir() || path.extension().is_some_and(|e| e == "safetensors") {
        Layout::HuggingFace
    } else {
        Layout::Fairseq
    }
}

/// Reads only the configuration of a checkpoint (no tensor data).
pub fn read_config(path: &Path) -> Result<EatConfig> {
    match layout_of(path) {
        Layout::HuggingFace => read_hf_config(&hf_files(path).1),
        Layout::Fairseq => read_fairseq_config(path),
    }
}

fn read_hf_config(config: &Path) -> Result<EatConfig> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read {} (a Hugging Face EAT folder has config.json)", config.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", config.display()))?;
    EatConfig::from_hf_json(&v).with_context(|| format!("invalid EAT configuration in {}", config.display()))
}

fn read_fairseq_config(path: &Path) -> Result<EatConfig> {
    if !path.is_file() {
        bail!("EAT checkpoint {} not found", path.display());
    }
    let cfg = PytorchReader::read_pickle_data(path, Some("cfg")).map_err(|e| {
        anyhow::anyhow!(
            "cannot read 'cfg' of {}: {e} (expected a fairseq EAT checkpoint, or a Hugging Face folder)",
            path.display()
        )
    })?;
    EatConfig::from_fairseq(&cfg).with_context(|| format!("invalid EAT configuration in {}", path.display()))
}

/// Reads a Hugging Face layout from its weights file and config.json.
pub fn read_hf(weights: &Path, config: &Path) -> Result<EatCheckpoint> {
    let cfg = read_hf_config(config)?;
    let state = StateDict::from_safetensors(weights)?;
    Ok(checkpoint(cfg, Layout::HuggingFace, state))
}

/// Reads a checkpoint of either layout (see [`layout_of`]).
pub fn read_checkpoint(path: &Path) -> Result<EatCheckpoint> {
    match layout_of(path) {
        Layout::HuggingFace => {
            let (w, c) = hf_files(path);
            read_hf(&w, &c)
        }
        Layout::Fairseq => {
            let cfg = read_fairseq_config(path)?;
            let state = StateDict::from_pt(path, Some("model"))?;
            Ok(checkpoint(cfg, Layout::Fairseq, state))
        }
    }
}

/// A checkpoint of `state`, the key groups `layout` carries on purpose
/// (decoder, EMA teacher) split off and counted.
pub fn checkpoint(cfg: EatConfig, layout: Layout, mut state: StateDict) -> EatCheckpoint {
    let mut ignored = Vec::new();
    for (prefix, why) in ignored_prefixes(&cfg, layout) {
        let keys: Vec<String> = state.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
        for k in &keys {
            state.remove(k);
        }
        if !keys.is_empty() {
            ignored.push((prefix.to_string(), why.to_string(), keys.len()));
        }
    }
    EatCheckpoint { cfg, layout, state, ignored }
}

/// Checks a state dict (ignored groups removed) against `encoder`: names
/// and shapes, every key of both sides, all problems in one error.
pub fn check_keys(cfg: &EatConfig, layout: Layout, encoder: &EatEncoder, state: &StateDict) -> Result<()> {
    let map = key_map(cfg, layout);
    let mut problems = key_problems(&map, &param_shapes(encoder), state);
    problems.extend(unexpected_keys(state, |k| map.iter().any(|e| e.torch == k), "EAT"));
    report(problems, "EAT")
}

/// Loads a state dict into `encoder` (strict, see [`check_keys`]).
pub fn load_state(cfg: &EatConfig, layout: Layout, encoder: EatEncoder, state: &StateDict) -> Result<EatEncoder> {
    check_keys(cfg, layout, &encoder, state)?;
    assign_all(encoder, mapped_values(&key_map(cfg, layout), state)?)
}

/// Builds the encoder of a checkpoint and loads its weights; also returns
/// the checkpoint's notes (ignored key groups).
pub fn load_encoder(path: &Path, device: &Device) -> Result<(EatConfig, EatEncoder, Vec<String>)> {
    let ck = read_checkpoint(path)?;
    let enc = EatEncoder::new(&ck.cfg, device);
    let enc =
        load_state(&ck.cfg, ck.layout, enc, &ck.state).with_context(|| format!("cannot load {}", path.display()))?;
    let notes = ck.notes();
    Ok((ck.cfg, enc, notes))
}
