//! BEATs parity with the original UNILM code on the shared fixtures
//! (`tests/fixtures/shared/beats/`, see the README there): the tiny
//! checkpoint in the released format, its reference activations for the two
//! fixture clips, and the full-size BEATs_iter3 key manifest.
//!
//! Run with `--nocapture` to see the max abs difference per tensor.
//! Tolerances: fbank_norm 1.5e-4 (the fbank tolerance ÷ 13.1); everything
//! computed from the reference fbank 1e-4; the final output from this
//! project's fbank 2e-3; buckets exact.

use crate::common;

use asd::data::wav;
use asd::features::fbank::beats_input;
use asd::models::beats::encoder::relative_position_bucket;
use asd::models::beats::loader::{self, StateDict, check_keys, key_map, load_state, read_checkpoint};
use asd::models::beats::{BeatsConfig, BeatsEncoder};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::PathBuf;

const CLIPS: [&str; 2] = ["clip_a_tone_noise", "clip_b_chirp_noise"];

fn beats(rel: &str) -> PathBuf {
    common::fixture(&format!("shared/beats/{rel}"))
}

/// Tensors of the reference file: name → (f64 values, shape).
fn reference() -> BTreeMap<String, (Vec<f64>, Vec<usize>)> {
    let bytes = std::fs::read(beats("beats_tiny_reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let d = view.data();
        let v: Vec<f64> = match view.dtype() {
            Dtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
            Dtype::I64 => d.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
            t => panic!("{name}: unexpected dtype {t:?}"),
        };
        out.insert(name, (v, view.shape().to_vec()));
    }
    out
}

fn tiny() -> (BeatsConfig, BeatsEncoder) {
    loader::load_encoder(&beats("beats_tiny.pt"), &Device::flex()).expect("tiny checkpoint loads")
}

fn values<const D: usize>(t: Tensor<D>) -> (Vec<f64>, Vec<usize>) {
    let shape = t.dims().to_vec();
    (t.into_data().try_into_vec_as::<f64>().unwrap(), shape)
}

/// Max abs difference after checking shapes (the reference may carry a
/// leading batch dimension of 1).
fn compare(name: &str, ours: (Vec<f64>, Vec<usize>), reference: &(Vec<f64>, Vec<usize>), tol: f64) -> f64 {
    let strip = |s: &[usize]| s.iter().copied().skip_while(|&d| d == 1).collect::<Vec<_>>();
    assert_eq!(strip(&ours.1), strip(&reference.1), "{name}: shape");
    let d = common::max_abs_diff(&ours.0, &reference.0);
    eprintln!("{name:<48} max abs {d:.3e}");
    assert!(d <= tol, "{name}: max abs difference {d:e} > {tol:e}");
    d
}

fn fbank_tensor(v: &[f64], shape: &[usize]) -> Tensor<3> {
    let (t, f) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let data: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(data, [1, t, f]), &Device::flex())
}

#[test]
fn normalised_fbank_matches_the_original_preprocess() {
    let r = reference();
    for clip in CLIPS {
        let x = wav::load(&common::fixture(&format!("shared/audio/{clip}.wav"))).unwrap();
        let f = beats_input(&x).unwrap();
        let ours = (f.data.iter().map(|&v| v as f64).collect(), vec![f.rows, f.cols]);
        compare(&format!("{clip}.fbank_norm"), ours, &r[&format!("{clip}.fbank_norm")], 1.5e-4);
    }
}

#[test]
fn encoder_matches_the_original_from_the_reference_fbank() {
    let r = reference();
    let (_, enc) = tiny();
    for clip in CLIPS {
        let (fb, shape) = &r[&format!("{clip}.fbank_norm")];
        let tr = enc.trace(fbank_tensor(fb, shape));
        let k = |n: &str| format!("{clip}.{n}");
        compare(&k("patch_conv_out"), values(tr.patch_conv_out), &r[&k("patch_conv_out")], 1e-4);
        compare(&k("patch_tokens"), values(tr.patch_tokens), &r[&k("patch_tokens")], 1e-4);
        compare(&k("patch_tokens_ln"), values(tr.patch_tokens_ln), &r[&k("patch_tokens_ln")], 1e-4);
        compare(&k("post_extract_proj"), values(tr.post_extract_proj), &r[&k("post_extract_proj")], 1e-4);
        compare(&k("pos_conv_out"), values(tr.pos_conv_out), &r[&k("pos_conv_out")], 1e-4);
        compare(&k("encoder_input_ln"), values(tr.encoder_input_ln), &r[&k("encoder_input_ln")], 1e-4);
        compare(&k("layer0_out"), values(tr.layers[0].clone()), &r[&k("layer0_out")], 1e-4);
        let last = tr.layers.last().unwrap().clone();
        compare(&k("final"), values(last.clone()), &r[&k("final")], 1e-4);
        // forward() (what `asd embed` writes) is the traced computation.
        let direct = values(enc.forward(fbank_tensor(fb, shape), None));
        assert_eq!(direct.0, values(last).0, "{clip}: forward differs from trace");
    }
}

#[test]
fn relative_position_buckets_and_bias_match_exactly() {
    let r = reference();
    let (cfg, enc) = tiny();
    for clip in CLIPS {
        let (want, shape) = &r[&format!("{clip}.rel_pos_bucket")];
        let n = shape[0];
        let ours: Vec<f64> =
            relative_position_bucket(n, n, cfg.num_buckets, cfg.max_distance).into_iter().map(|b| b as f64).collect();
        assert_eq!(&ours, want, "{clip}: buckets");
        let bias = enc.encoder.layers[0].self_attn.position_bias(n, cfg.num_buckets, cfg.max_distance).unwrap();
        compare(&format!("{clip}.rel_pos_bias_layer0"), values(bias), &r[&format!("{clip}.rel_pos_bias_layer0")], 0.0);
    }
}

#[test]
fn final_output_from_this_projects_fbank_is_within_2e_3() {
    let r = reference();
    let (_, enc) = tiny();
    for clip in CLIPS {
        let x = wav::load(&common::fixture(&format!("shared/audio/{clip}.wav"))).unwrap();
        let f = beats_input(&x).unwrap();
        let input = Tensor::from_data(TensorData::new(f.data, [1, f.rows, f.cols]), &Device::flex());
        let out = enc.forward(input, None);
        compare(&format!("{clip}.final (own fbank)"), values(out), &r[&format!("{clip}.final")], 2e-3);
    }
}

#[test]
fn the_fixture_checkpoint_is_read_as_released() {
    let ck = read_checkpoint(&beats("beats_tiny.pt")).unwrap();
    let manifest = common::json("shared/beats/beats_tiny_state_dict_manifest.json");
    assert_eq!(ck.cfg, BeatsConfig::from_json(&manifest["cfg"]).unwrap());
    assert_eq!((ck.cfg.encoder_layers, ck.cfg.encoder_embed_dim, ck.cfg.max_distance), (2, 64, 800));
    assert!(ck.cfg.gru_rel_pos && ck.cfg.deep_norm && !ck.cfg.conv_bias);
    // Every manifest key with its shape, including layer 1's copy of the
    // shared relative-position table.
    let keys = manifest["keys"].as_array().unwrap();
    assert_eq!(ck.state.len(), keys.len());
    for k in keys {
        let name = k["name"].as_str().unwrap();
        let shape: Vec<usize> = k["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(ck.state.get(name).unwrap_or_else(|| panic!("{name} missing")).shape, shape, "{name}");
    }
    assert!(ck.state.get("encoder.layers.1.self_attn.relative_attention_bias.weight").is_some());
    // The key map covers every checkpoint key but the shared copy.
    assert_eq!(key_map(&ck.cfg).len(), keys.len() - 1);
}

/// The full-size manifest: names and shapes of `BEATs_iter3.pt`.
fn full_manifest() -> (BeatsConfig, StateDict, usize) {
    let m = common::json("shared/beats/beats_iter3_full_state_dict_manifest.json");
    let cfg = BeatsConfig::from_json(&m["cfg"]).unwrap();
    let keys = m["keys"].as_array().unwrap();
    let state = StateDict::from_shapes(keys.iter().map(|k| {
        let shape = k["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        (k["name"].as_str().unwrap().to_string(), shape)
    }));
    (cfg, state, m["num_params_unique"].as_u64().unwrap() as usize)
}

#[test]
fn every_key_of_the_full_size_manifest_matches_a_model_of_the_full_configuration() {
    let (cfg, state, unique) = full_manifest();
    assert_eq!(state.len(), 250);
    assert_eq!((cfg.encoder_layers, cfg.encoder_embed_dim, cfg.num_buckets, cfg.max_distance), (12, 768, 320, 800));
    // Lazy: no weights are allocated.
    let enc = BeatsEncoder::new(&cfg, &Device::flex());
    check_keys(&cfg, &enc, &state).unwrap();
    assert_eq!(asd::nn::util::count_params(&enc), unique, "unique parameters of BEATs_iter3");
    assert_eq!(key_map(&cfg).len(), 250 - 11, "layers 1..11 repeat the shared table");
}

fn expect_error(state: &StateDict, cfg: &BeatsConfig, needles: &[&str]) {
    let enc = BeatsEncoder::new(cfg, &Device::flex());
    let err = match load_state(cfg, enc, state) {
        Ok(_) => panic!("a bad checkpoint loaded"),
        Err(e) => format!("{e:#}"),
    };
    for n in needles {
        assert!(err.contains(n), "error lacks {n:?}:\n{err}");
    }
}

#[test]
fn bad_checkpoints_are_errors_naming_the_key_and_shapes() {
    let path = beats("beats_tiny.pt");
    let cfg = loader::read_config(&path).unwrap();
    let fresh = || loader::StateDict::from_pt(&path, Some("model")).unwrap();

    let mut s = fresh();
    s.remove("encoder.layers.1.fc2.bias");
    expect_error(&s, &cfg, &["missing key encoder.layers.1.fc2.bias", "[64]"]);

    let mut s = fresh();
    s.insert("encoder.layers.0.self_attn.k_proj.weight", vec![64, 32], vec![0.0; 64 * 32]);
    expect_error(&s, &cfg, &["encoder.layers.0.self_attn.k_proj.weight", "[64, 32]", "[64, 64]"]);

    let mut s = fresh();
    s.insert("encoder.pos_conv.0.weight_g", vec![1, 1, 15], vec![1.0; 15]);
    expect_error(&s, &cfg, &["encoder.pos_conv.0.weight_g", "[1, 1, 15]", "[1, 1, 16]"]);

    let mut s = fresh();
    s.insert("encoder.layers.2.fc1.weight", vec![128, 64], vec![0.0; 128 * 64]);
    s.insert("predictor.weight", vec![527, 64], vec![0.0; 527 * 64]);
    expect_error(
        &s,
        &cfg,
        &["unexpected key encoder.layers.2.fc1.weight", "unexpected key predictor.weight", "2 problems"],
    );

    // A fine-tuned checkpoint's predictor is expected when its cfg says so.
    let mut s = fresh();
    s.insert("predictor.weight", vec![527, 64], vec![0.0; 527 * 64]);
    s.insert("predictor.bias", vec![527], vec![0.0; 527]);
    let ft = BeatsConfig { finetuned_model: true, ..cfg.clone() };
    let enc = load_state(&ft, BeatsEncoder::new(&ft, &Device::flex()), &s).expect("fine-tuned layout loads");
    assert_eq!(enc.predictor.unwrap().weight.dims(), [64, 527]);

    // The shared relative-position table: layer 1's copy may be absent …
    let mut s = fresh();
    s.remove("encoder.layers.1.self_attn.relative_attention_bias.weight");
    load_state(&cfg, BeatsEncoder::new(&cfg, &Device::flex()), &s).expect("layer 0's table suffices");
    // … but must not have another shape or other values.
    let mut s = fresh();
    s.insert("encoder.layers.1.self_attn.relative_attention_bias.weight", vec![320, 3], vec![0.0; 960]);
    expect_error(&s, &cfg, &["encoder.layers.1.self_attn.relative_attention_bias.weight", "[320, 3]", "[320, 4]"]);
    let mut s = fresh();
    s.insert("encoder.layers.1.self_attn.relative_attention_bias.weight", vec![320, 4], vec![0.5; 1280]);
    expect_error(&s, &cfg, &["relative_attention_bias", "differs"]);

    // Not a BEATs checkpoint at all.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pt");
    std::fs::write(&junk, b"not a zip").unwrap();
    let e = loader::read_checkpoint(&junk).err().expect("junk is rejected");
    assert!(format!("{e:#}").contains("junk.pt"), "{e:#}");
}
