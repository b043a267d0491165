//! Reading released BEATs checkpoints (`torch.save({'cfg': dict, 'model':
//! state_dict})`, zip pickle) without executing pickle code: burn-store's
//! `pytorch_reader` parses the pickle opcodes and reads tensor bytes from
//! the archive.
//!
//! Weights go into a [`BeatsEncoder`] through the explicit key map below
//! ([`key_map`]). Loading is strict: a checkpoint key the model does not
//! have, a model parameter the checkpoint lacks, a shape that differs and a
//! non-float dtype are all errors naming the key (and both shapes), in one
//! one-line error (many problems are counted per kind, the first named).
//!
//! Key map (torch key → burn parameter path; Linear weights are stored
//! [out, in] by torch and [in, out] by burn, hence transposed):
//!
//! | torch key | burn path | transform |
//! |---|---|---|
//! | `patch_embedding.weight` [E,1,p,p] (`.bias` if `conv_bias`) | same | — |
//! | `layer_norm.{weight,bias}` [E] | `layer_norm.{gamma,beta}` | — |
//! | `post_extract_proj.{weight,bias}` (E ≠ D) | same | weight transposed |
//! | `encoder.pos_conv.0.{weight_g [1,1,k], weight_v [D,D/G,k], bias [D]}` | `encoder.pos_conv.{weight_g,weight_v,bias}` | — (Sequential index 0 dropped) |
//! | `encoder.layer_norm.{weight,bias}` | `encoder.layer_norm.{gamma,beta}` | — |
//! | `encoder.layers.{i}.self_attn.{q,k,v,out}_proj.{weight,bias}` | same | weight transposed |
//! | `encoder.layers.{i}.self_attn.grep_linear.{weight [8,d],bias}` | same | weight transposed |
//! | `encoder.layers.{i}.self_attn.grep_a` [1,H,1,1] | same | — |
//! | `encoder.layers.0.self_attn.relative_attention_bias.weight` [NB,H] | same | — |
//! | `encoder.layers.{i>0}.self_attn.relative_attention_bias.weight` | — | alias of layer 0's table (see below) |
//! | `encoder.layers.{i}.{self_attn_layer_norm,final_layer_norm}.{weight,bias}` | `….{gamma,beta}` | — |
//! | `encoder.layers.{i}.fc{1,2}.{weight,bias}` | same | weight transposed |
//! | `predictor.{weight,bias}` (`finetuned_model`) | same | weight transposed |
//!
//! The relative-position table is one module shared by all layers in the
//! original (layers ≥ 1 hold a reference to layer 0's), so `state_dict()`
//! lists it under every layer with shared storage. Only layer 0's is loaded;
//! the copies of other layers may be absent, and when present must have the
//! same shape and values (a file where they differ is rejected, since no
//! torch model can have produced it).
//!
//! The weight-norm pair (`weight_g`, `weight_v`) is kept as two parameters
//! and the convolution weight computed from them in every forward pass, as
//! the original's `weight_norm` hook does.

use super::config::BeatsConfig;
use super::encoder::BeatsEncoder;
pub use crate::models::state_dict::{KeyMapEntry, StateDict, StateTensor, param_shapes};
use crate::models::state_dict::{assign_all, key_problems, mapped_values, report, unexpected_keys};
use anyhow::{Context, Result, bail};
use burn::store::pytorch_reader::PytorchReader;
use std::collections::BTreeSet;
use std::path::Path;

/// Every checkpoint key of a model of `cfg` and its burn parameter (the
/// table in the module docs, generated for `cfg`).
pub fn key_map(cfg: &BeatsConfig) -> Vec<KeyMapEntry> {
    let mut m = Vec::new();
    let mut add = |torch: String, burn: String, transpose: bool| m.push(KeyMapEntry { torch, burn, transpose });
    // torch LayerNorm weight/bias = burn gamma/beta.
    let layer_norm = |add: &mut dyn FnMut(String, String, bool), torch: &str, burn: &str| {
        add(format!("{torch}.weight"), format!("{burn}.gamma"), false);
        add(format!("{torch}.bias"), format!("{burn}.beta"), false);
    };
    // torch Linear weight [out, in] → burn [in, out]; bias as is.
    let linear = |add: &mut dyn FnMut(String, String, bool), name: &str, bias: bool| {
        add(format!("{name}.weight"), format!("{name}.weight"), true);
        if bias {
            add(format!("{name}.bias"), format!("{name}.bias"), false);
        }
    };
    // Patch embedding Conv2d(1, E, p, stride p): same [E, 1, p, p] layout in both.
    add("patch_embedding.weight".into(), "patch_embedding.weight".into(), false);
    if cfg.conv_bias {
        add("patch_embedding.bias".into(), "patch_embedding.bias".into(), false);
    }
    layer_norm(&mut add, "layer_norm", "layer_norm");
    if cfg.embed_dim != cfg.encoder_embed_dim {
        linear(&mut add, "post_extract_proj", true);
    }
    // pos_conv = nn.Sequential(weight_norm(Conv1d), SamePad, GELU): index 0
    // holds the conv's weight_g, weight_v and bias.
    for p in ["weight_g", "weight_v", "bias"] {
        add(format!("encoder.pos_conv.0.{p}"), format!("encoder.pos_conv.{p}"), false);
    }
    layer_norm(&mut add, "encoder.layer_norm", "encoder.layer_norm");
    for i in 0..cfg.encoder_layers {
        let l = format!("encoder.layers.{i}");
        for p in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            linear(&mut add, &format!("{l}.self_attn.{p}"), true);
        }
        if cfg.gru_rel_pos {
            linear(&mut add, &format!("{l}.self_attn.grep_linear"), true);
            add(format!("{l}.self_attn.grep_a"), format!("{l}.self_attn.grep_a"), false);
        }
        if cfg.relative_position_embedding && i == 0 {
            let k = format!("{l}.self_attn.relative_attention_bias.weight");
            add(k.clone(), k, false);
        }
        layer_norm(&mut add, &format!("{l}.self_attn_layer_norm"), &format!("{l}.self_attn_layer_norm"));
        linear(&mut add, &format!("{l}.fc1"), true);
        linear(&mut add, &format!("{l}.fc2"), true);
        layer_norm(&mut add, &format!("{l}.final_layer_norm"), &format!("{l}.final_layer_norm"));
    }
    if cfg.finetuned_model {
        linear(&mut add, "predictor", true);
    }
    m
}

/// Checkpoint keys that repeat layer 0's relative-position table:
/// (alias, canonical key).
pub fn shared_aliases(cfg: &BeatsConfig) -> Vec<(String, String)> {
    if !cfg.relative_position_embedding {
        return Vec::new();
    }
    let canon = "encoder.layers.0.self_attn.relative_attention_bias.weight".to_string();
    (1..cfg.encoder_layers)
        .map(|i| (format!("encoder.layers.{i}.self_attn.relative_attention_bias.weight"), canon.clone()))
        .collect()
}

/// A released-format BEATs checkpoint: configuration and weights.
pub struct BeatsCheckpoint {
    pub cfg: BeatsConfig,
    pub state: StateDict,
}

/// Reads only the `cfg` of a checkpoint (cheap: no tensor data is read).
pub fn read_config(path: &Path) -> Result<BeatsConfig> {
    if !path.is_file() {
        bail!("BEATs checkpoint {} not found", path.display());
    }
    let cfg = PytorchReader::read_pickle_data(path, Some("cfg")).map_err(|e| {
        anyhow::anyhow!(
            "cannot read 'cfg' of {}: {e} (expected a BEATs checkpoint: torch.save({{'cfg': dict, 'model': state_dict}}))",
            path.display()
        )
    })?;
    BeatsConfig::from_pickle(&cfg).with_context(|| format!("invalid BEATs configuration in {}", path.display()))
}

/// Reads a checkpoint's configuration and state dict (tensor data is read
/// when loaded into a model).
pub fn read_checkpoint(path: &Path) -> Result<BeatsCheckpoint> {
    let cfg = read_config(path)?;
    let state = StateDict::from_pt(path, Some("model"))?;
    Ok(BeatsCheckpoint { cfg, state })
}

/// Checks a state dict against `encoder` (built from `cfg`): names and
/// shapes, every key of both sides. The error lists every problem.
pub fn check_keys(cfg: &BeatsConfig, encoder: &BeatsEncoder, state: &StateDict) -> Result<()> {
    let params = param_shapes(encoder);
    let map = key_map(cfg);
    let aliases = shared_aliases(cfg);
    let mut problems = key_problems(&map, &params, state);
    for (alias, canon) in &aliases {
        if let (Some(a), Some(c)) = (state.get(alias), params.get(canon))
            && &a.shape != c
        {
            problems.push(format!(
                "{alias}: checkpoint has shape {:?}, the model expects {c:?} (the table shared with layer 0)",
                a.shape
            ));
        }
    }
    let known: BTreeSet<&str> =
        map.iter().map(|e| e.torch.as_str()).chain(aliases.iter().map(|(a, _)| a.as_str())).collect();
    problems.extend(unexpected_keys(state, |k| known.contains(k), "BEATs"));
    report(problems, "BEATs")
}

/// Loads a state dict into `encoder` (strict, see [`check_keys`]). The
/// parameters keep their ids and gradient settings.
pub fn load_state(cfg: &BeatsConfig, encoder: BeatsEncoder, state: &StateDict) -> Result<BeatsEncoder> {
    check_keys(cfg, &encoder, state)?;
    let values = mapped_values(&key_map(cfg), state)?;
    for (alias, canon) in shared_aliases(cfg) {
        if let Some(a) = state.get(&alias) {
            let v = a.read(&alias)?;
            let c = &values[&canon].data;
            if v.iter().zip(c).any(|(x, y)| x.to_bits() != y.to_bits()) {
                bail!(
                    "{alias} differs from {canon}: the original shares one relative position table between all \
                     layers, so the copies must be equal"
                );
            }
        }
    }
    assign_all(encoder, values)
}

/// Builds the encoder of a checkpoint and loads its weights (frozen
/// parameters are for the caller to decide; loaded ones are trainable on an
/// autodiff device unless frozen).
pub fn load_encoder(path: &Path, device: &burn::tensor::Device) -> Result<(BeatsConfig, BeatsEncoder)> {
    let ck = read_checkpoint(path)?;
    let enc = BeatsEncoder::new(&ck.cfg, device);
    let enc = load_state(&ck.cfg, enc, &ck.state).with_context(|| format!("cannot load {}", path.display()))?;
    Ok((ck.cfg, enc))
}
