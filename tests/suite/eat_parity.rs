//! EAT parity with the original code (cwx-worst-one/EAT `Data2VecMultiModel`)
//! on the shared fixtures (`tests/fixtures/shared/eat/`, see the README
//! there): the tiny checkpoint in both released layouts, its reference
//! activations for the two fixture clips, and the full-size key manifests.
//!
//! Run with `--nocapture` to see the max abs difference per tensor.
//! Tolerances (fixtures README): everything computed from the reference
//! input 1e-4; the padded input from this project's fbank 2.5e-4 (the fbank
//! tolerance 2e-3 ÷ 2·4.569); the final output from this project's fbank
//! 1e-3; stored vs recomputed positions 2e-5.

use crate::common;

use asd::data::wav;
use asd::features::fbank::{EatLength, FbankPreset, eat_input, fbank};
use asd::models::eat::encoder::sincos_positions;
use asd::models::eat::loader::{self, Layout, check_keys, key_map, load_state};
use asd::models::eat::{EatConfig, EatEncoder};
use asd::models::state_dict::StateDict;
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::SafeTensors;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const CLIPS: [&str; 2] = ["clip_a_tone_noise", "clip_b_chirp_noise"];

type Values = (Vec<f64>, Vec<usize>);

fn eat(rel: &str) -> PathBuf {
    common::fixture(&format!("shared/eat/{rel}"))
}

/// Tensors of the reference file: name → (values, shape).
fn reference() -> BTreeMap<String, Values> {
    let bytes = std::fs::read(eat("eat_tiny_reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let v = view.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect();
            (name, (v, view.shape().to_vec()))
        })
        .collect()
}

/// The Hugging Face layout as released: a folder with config.json and
/// model.safetensors (the fixture stores them under other names).
fn hf_folder() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(eat("eat_tiny_hf.safetensors"), d.path().join("model.safetensors")).unwrap();
    std::fs::copy(eat("eat_tiny_hf_config.json"), d.path().join("config.json")).unwrap();
    d
}

fn fairseq() -> EatEncoder {
    loader::load_encoder(&eat("eat_tiny_fairseq.pt"), &Device::flex()).expect("fairseq layout loads").1
}

fn values<const D: usize>(t: Tensor<D>) -> Values {
    let shape = t.dims().to_vec();
    (t.into_data().try_into_vec_as::<f64>().unwrap(), shape)
}

/// Max abs difference after checking shapes (leading 1s ignored).
fn compare(name: &str, ours: Values, reference: &Values, tol: f64) -> f64 {
    let strip = |s: &[usize]| s.iter().copied().skip_while(|&d| d == 1).collect::<Vec<_>>();
    assert_eq!(strip(&ours.1), strip(&reference.1), "{name}: shape");
    let d = common::max_abs_diff(&ours.0, &reference.0);
    eprintln!("{name:<48} max abs {d:.3e}");
    assert!(d <= tol, "{name}: max abs difference {d:e} > {tol:e}");
    d
}

fn input(v: &[f64], shape: &[usize]) -> Tensor<3> {
    let (t, f) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let data: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(data, [1, t, f]), &Device::flex())
}

fn clip(name: &str) -> Vec<f32> {
    wav::load(&common::fixture(&format!("shared/audio/{name}.wav"))).unwrap()
}

#[test]
fn both_layouts_load_and_give_the_same_output() {
    let dev = Device::flex();
    let dir = hf_folder();
    let (hf_cfg, hf, hf_notes) = loader::load_encoder(dir.path(), &dev).expect("HF folder loads");
    let (fs_cfg, fs, fs_notes) = loader::load_encoder(&eat("eat_tiny_fairseq.pt"), &dev).unwrap();
    assert_eq!(hf_cfg, fs_cfg, "config.json and cfg.model describe one model");
    assert_eq!((fs_cfg.depth, fs_cfg.embed_dim, fs_cfg.num_heads, fs_cfg.ffn_dim()), (2, 64, 4, 128));
    assert!(hf_notes.is_empty(), "{hf_notes:?}");
    // The decoder (2 conv blocks + proj, weight and bias each) and the
    // 30-tensor EMA teacher are skipped, and the loader says so.
    assert_eq!(fs_notes.len(), 2, "{fs_notes:?}");
    assert!(fs_notes[0].contains("6 tensors modality_encoders.IMAGE.decoder."), "{fs_notes:?}");
    assert!(fs_notes[1].contains("30 tensors _ema."), "{fs_notes:?}");
    // The .safetensors file with config.json beside it is the same layout.
    let (_, by_file, _) = loader::load_encoder(&dir.path().join("model.safetensors"), &dev).unwrap();
    let r = reference();
    for c in CLIPS {
        let (x, s) = &r[&format!("{c}.input_norm_padded")];
        let a = values(fs.forward(input(x, s), None));
        assert_eq!(a.0, values(hf.forward(input(x, s), None)).0, "{c}: layouts differ");
        assert_eq!(a.0, values(by_file.forward(input(x, s), None)).0, "{c}: .safetensors path differs");
    }
}

#[test]
fn encoder_matches_the_original_from_the_reference_input() {
    let r = reference();
    let enc = fairseq();
    for c in CLIPS {
        let k = |n: &str| format!("{c}.{n}");
        let (x, s) = &r[&k("input_norm_padded")];
        let tr = enc.trace(input(x, s));
        compare(&k("patch_tokens"), values(tr.patch_tokens), &r[&k("patch_tokens")], 1e-4);
        compare(&k("patch_tokens_plus_pos"), values(tr.patch_tokens_plus_pos), &r[&k("patch_tokens_plus_pos")], 1e-4);
        compare(&k("context_encoder_out"), values(tr.context_encoder_out), &r[&k("context_encoder_out")], 1e-4);
        compare(&k("layer0_out"), values(tr.layers[0].clone()), &r[&k("layer0_out")], 1e-4);
        let last = tr.layers.last().unwrap().clone();
        let n = last.dims()[1];
        compare(&k("final"), values(last.clone()), &r[&k("final")], 1e-4);
        compare(&k("cls"), values(last.clone().narrow(1, 0, 1)), &r[&k("cls")], 1e-4);
        let frames = last.clone().narrow(1, 1, n - 1);
        compare(&k("frames"), values(frames.clone()), &r[&k("frames")], 1e-4);
        compare(&k("frames_mean"), values(frames.mean_dim(1)), &r[&k("frames_mean")], 1e-4);
        // forward() (what `asd embed` writes) is the traced computation.
        assert_eq!(values(enc.forward(input(x, s), None)).0, values(last).0, "{c}: forward differs from trace");
    }
}

#[test]
fn this_projects_fbank_gives_the_reference_input_and_output() {
    let r = reference();
    let enc = fairseq();
    for c in CLIPS {
        let k = |n: &str| format!("{c}.{n}");
        let x = clip(c);
        let raw = fbank(&x, FbankPreset::Eat).unwrap();
        let raw = (raw.data.iter().map(|&v| v as f64).collect(), vec![raw.rows, raw.cols]);
        compare(&k("fbank_raw_unpadded (own)"), raw, &r[&k("fbank_raw_unpadded")], 2e-3);
        // ASDKit's padding rule, ⌈frames/32⌉·32: 298 → 320, 248 → 256.
        let f = eat_input(&x, EatLength::RoundUp(32)).unwrap();
        let own = (f.data.iter().map(|&v| v as f64).collect::<Vec<_>>(), vec![f.rows, f.cols]);
        compare(&k("input_norm_padded (own)"), own.clone(), &r[&k("input_norm_padded")], 2.5e-4);
        let out = enc.forward(input(&own.0, &own.1), None);
        compare(&k("final (own fbank)"), values(out), &r[&k("final")], 1e-3);
    }
}

#[test]
fn the_stored_positions_are_the_fixed_sincos_table() {
    let ck = loader::read_checkpoint(&eat("eat_tiny_fairseq.pt")).unwrap();
    let key = "modality_encoders.IMAGE.fixed_positional_encoder.positions";
    let t = ck.state.get(key).unwrap();
    assert_eq!(t.shape, vec![1, 768 * 8, 64]);
    let stored: Vec<f64> = t.read(key).unwrap().into_iter().map(f64::from).collect();
    let ours: Vec<f64> = sincos_positions(768, 8, 64).into_iter().map(f64::from).collect();
    let d = common::max_abs_diff(&stored, &ours);
    eprintln!("positions: stored vs recomputed max abs {d:.3e}");
    assert!(d <= 2e-5, "{d}");
}

fn shape(v: &serde_json::Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

/// Names and shapes of a manifest's key list; nested dicts (`_ema`) are
/// flattened with dots, as the torch reader does.
fn manifest_state(keys: &serde_json::Value) -> StateDict {
    let mut items = Vec::new();
    for k in keys.as_array().unwrap() {
        let name = k["name"].as_str().unwrap();
        match k.get("entries") {
            Some(entries) => items.extend(
                entries
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| (format!("{name}.{}", e["name"].as_str().unwrap()), shape(&e["shape"]))),
            ),
            None => items.push((name.to_string(), shape(&k["shape"]))),
        }
    }
    StateDict::from_shapes(items)
}

#[test]
fn the_full_size_manifests_match_a_model_of_the_full_configuration() {
    let dev = Device::flex();
    let fs = common::json("shared/eat/eat_base_full_fairseq_state_dict_manifest.json");
    let cfg = EatConfig::from_fairseq_json(&fs["cfg_model"]).unwrap();
    let hf = common::json("shared/eat/eat_base_full_hf_state_dict_manifest.json");
    assert_eq!(EatConfig::from_hf_json(&hf["config_json"]).unwrap(), cfg);
    assert_eq!(cfg, EatConfig::default(), "EAT-base");
    let enc = EatEncoder::new(&cfg, &dev); // lazy: no weights
    let encoder_params = asd::nn::util::count_params(&enc);
    assert_eq!(encoder_params, 89_972_736);
    assert_eq!(encoder_params as u64, hf["num_params"].as_u64().unwrap());

    let ck = loader::checkpoint(cfg.clone(), Layout::Fairseq, manifest_state(&fs["keys"]));
    assert_eq!(
        ck.ignored.iter().map(|(p, _, n)| (p.as_str(), *n)).collect::<Vec<_>>(),
        [("modality_encoders.IMAGE.decoder.", 14), ("_ema.", 150)]
    );
    check_keys(&cfg, Layout::Fairseq, &enc, &ck.state).unwrap();
    assert_eq!(ck.state.len(), 150);

    let state = manifest_state(&hf["keys"]);
    assert_eq!(state.len(), 150);
    check_keys(&cfg, Layout::HuggingFace, &enc, &state).unwrap();
    assert_eq!(key_map(&cfg, Layout::HuggingFace).len(), 150);
}

fn expect_error(state: &StateDict, layout: Layout, needles: &[&str]) {
    let cfg = loader::read_config(&eat("eat_tiny_fairseq.pt")).unwrap();
    let err = match load_state(&cfg, layout, EatEncoder::new(&cfg, &Device::flex()), state) {
        Ok(_) => panic!("a bad checkpoint loaded"),
        Err(e) => format!("{e:#}"),
    };
    for n in needles {
        assert!(err.contains(n), "error lacks {n:?}:\n{err}");
    }
}

fn fresh(path: &Path) -> StateDict {
    loader::read_checkpoint(path).unwrap().state
}

#[test]
fn bad_checkpoints_are_errors_naming_the_key_and_shapes() {
    let pt = eat("eat_tiny_fairseq.pt");
    let mut s = fresh(&pt);
    s.remove("blocks.1.mlp.fc2.bias");
    expect_error(&s, Layout::Fairseq, &["missing key blocks.1.mlp.fc2.bias", "[64]"]);

    let mut s = fresh(&pt);
    s.insert("blocks.0.attn.qkv.weight", vec![128, 64], vec![0.0; 128 * 64]);
    s.insert("modality_encoders.IMAGE.extra_tokens", vec![1, 2, 64], vec![0.0; 128]);
    expect_error(
        &s,
        Layout::Fairseq,
        &[
            "blocks.0.attn.qkv.weight: checkpoint has shape [128, 64], the model expects [192, 64]",
            "modality_encoders.IMAGE.extra_tokens: checkpoint has shape [1, 2, 64], the model expects [1, 1, 64]",
            "2 problems",
        ],
    );

    let mut s = fresh(&pt);
    s.insert("blocks.2.norm1.weight", vec![64], vec![1.0; 64]);
    expect_error(&s, Layout::Fairseq, &["unexpected key blocks.2.norm1.weight (shape [64])"]);

    // The other layout's names are unexpected and its own are missing.
    let dir = hf_folder();
    let mut s = fresh(dir.path());
    s.insert("model.fc_norm.weight", vec![64], vec![1.0; 64]);
    s.remove("model.pre_norm.bias");
    expect_error(&s, Layout::HuggingFace, &["unexpected key model.fc_norm.weight", "missing key model.pre_norm.bias"]);
    expect_error(
        &fresh(dir.path()),
        Layout::Fairseq,
        &["× missing key: missing key", "× unexpected key: unexpected key model."],
    );

    // Not an EAT checkpoint at all, or a folder without config.json.
    let junk = dir.path().join("junk.pt");
    std::fs::write(&junk, b"not a zip").unwrap();
    assert!(format!("{:#}", loader::read_checkpoint(&junk).err().unwrap()).contains("junk.pt"));
    let bare = tempfile::tempdir().unwrap();
    std::fs::copy(eat("eat_tiny_hf.safetensors"), bare.path().join("model.safetensors")).unwrap();
    assert!(format!("{:#}", loader::read_checkpoint(bare.path()).err().unwrap()).contains("config.json"));
}

mod cli {
    use super::{common, eat, hf_folder};
    use std::process::Command;

    fn embed(args: &[&str]) {
        let out = Command::new(env!("CARGO_BIN_EXE_asd")).arg("embed").args(args).arg("--quiet").output().unwrap();
        assert!(out.status.success(), "asd embed {args:?}:\n{}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn embed_writes_cls_then_patch_tokens() {
        let d = tempfile::tempdir().unwrap();
        let wav = common::fixture("shared/audio/clip_b_chirp_noise.wav");
        let (seq, cls, mean) = (d.path().join("s.npy"), d.path().join("c.npy"), d.path().join("m.npy"));
        let pt = eat("eat_tiny_fairseq.pt");
        let base = ["--model", "eat", "--checkpoint", pt.to_str().unwrap(), "--wav", wav.to_str().unwrap()];
        embed(&[&base[..], &["--out", seq.to_str().unwrap()]].concat());
        let folder = hf_folder();
        let hf = ["--model", "eat", "--checkpoint", folder.path().to_str().unwrap(), "--wav", wav.to_str().unwrap()];
        embed(&[&hf[..], &["--out", cls.to_str().unwrap(), "--pool", "cls"]].concat());
        embed(&[&base[..], &["--out", mean.to_str().unwrap(), "--pool", "mean"]].concat());
        let (v, shape) = asd::util::npy::read(&seq).unwrap();
        assert_eq!(shape, vec![129, 64], "248 frames → 256 → 16·8 patches + CLS");
        let (c, cs) = asd::util::npy::read(&cls).unwrap();
        assert_eq!((cs, &v[..64]), (vec![1, 64], &c[..]));
        let (m, _) = asd::util::npy::read(&mean).unwrap();
        for j in 0..64 {
            let avg = (1..129).map(|r| v[r * 64 + j] as f64).sum::<f64>() / 128.0;
            assert!((avg - m[j] as f64).abs() < 1e-5);
        }
    }
}
