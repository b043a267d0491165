//! BEATs LoRA fine-tuning on the tiny fixture checkpoint (CPU): what
//! trains, what stays frozen, merging, seeded training noise, and the
//! trainable parameter count of the full BEATs_iter3 configuration.

use crate::common;

use asd::models::beats::lora::{self, LoraAdapter};
use asd::models::beats::{BeatsBatch, BeatsConfig, BeatsEncoder, BeatsLora, BeatsLoraConfig, LoraConfig, Pooling};
use asd::nn::LossConfig;
use asd::nn::util::{labels_tensor, named_params};
use asd::train::checkpoint;
use burn::module::{Module, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use std::collections::BTreeMap;

fn tiny_config() -> BeatsLoraConfig {
    serde_json::from_value(serde_json::json!({
        "pretrained": common::fixture("shared/beats/beats_tiny.pt"),
        "seconds": 2.5,
        "lora": {"rank": 8, "v_rank_latter_half": 12, "alpha": 16.0},
        "layerdrop": 0.0
    }))
    .unwrap()
}

/// Two fixture clips (cropped to a common length), twice: [4, 240, 128].
fn fbank_batch(device: &Device) -> Tensor<3> {
    let mut data = Vec::new();
    for _ in 0..2 {
        for clip in ["clip_a_tone_noise", "clip_b_chirp_noise"] {
            let x = asd::data::wav::load(&common::fixture(&format!("shared/audio/{clip}.wav"))).unwrap();
            let f = asd::features::beats_input(&x).unwrap();
            data.extend_from_slice(&f.data[..240 * 128]);
        }
    }
    Tensor::from_data(TensorData::new(data, [4, 240, 128]), device)
}

/// Every float parameter: path → (id, is part of the frozen encoder).
fn params(m: &BeatsLora) -> BTreeMap<String, (ParamId, bool)> {
    named_params(m)
        .into_iter()
        .map(|(path, p)| {
            let frozen = path.starts_with("encoder.") && !path.contains("_lora.");
            (path, (p.id, frozen))
        })
        .collect()
}

fn max_abs(a: Tensor<3>, b: Tensor<3>) -> f64 {
    (a - b).abs().max().into_scalar::<f64>()
}

#[test]
fn a_training_step_moves_adapters_and_head_and_leaves_the_base_bit_identical() {
    let dev = Device::flex().autodiff();
    let cfg = tiny_config();
    let mut model = cfg.init(&LossConfig::default(), 2, 7, &dev, true).unwrap();
    let counts = model.param_counts();
    // q, v, out in both layers (64-d): q, out rank 8; v rank 8 then 12.
    assert_eq!(counts.lora, 2 * (2 * 64 * 8) + 2 * 64 * 8 + 2 * 64 * 12 + 2 * (2 * 64 * 8));
    let before = checkpoint::tensors(&model);
    let ids = params(&model);
    let shapes: BTreeMap<String, usize> = before.iter().map(|(k, (s, _))| (k.clone(), s.len())).collect();
    let mut optim = asd::train::AdamW { lr: 1e-3, ..Default::default() }.init();
    for step in 0..2u64 {
        let batch =
            BeatsBatch { fbank: fbank_batch(&dev), labels: Some(labels_tensor(&[0, 1, 0, 1], &dev)), seed: step };
        let loss = model.loss(batch);
        assert!(loss.clone().into_scalar::<f64>().is_finite());
        let gp = GradientsParams::from_grads(loss.backward(), &model);
        for (path, (id, frozen)) in &ids {
            if path.contains("running_") {
                continue;
            }
            let g = common::has_grad(&gp, *id, shapes[path]);
            assert_eq!(g, !frozen, "{path}: gradient entry {g} (frozen: {frozen})");
        }
        model = optim.step(1e-3, model, gp);
    }
    let after = checkpoint::tensors(&model);
    let mut moved = 0;
    for (path, (_, frozen)) in &ids {
        let (a, b) = (&before[path].1, &after[path].1);
        let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        if *frozen {
            assert!(same, "frozen {path} changed");
        } else if !path.contains("running_") {
            assert!(!same, "trainable {path} did not change");
            moved += 1;
        }
    }
    assert!(ids.keys().any(|p| p.ends_with("v_lora.b")) && moved > 20);

    // Merged (adapters folded into the weights) = unmerged, within 1e-5.
    let inf = dev.clone().inner();
    let valid = model.valid();
    let x = fbank_batch(&inf);
    let unmerged = valid.encoder.forward(x.clone(), None);
    let merged_model = valid.clone().merged();
    assert!(!lora::has_adapters(&merged_model.encoder));
    let d = max_abs(unmerged, merged_model.encoder.forward(x.clone(), None));
    eprintln!("merged vs unmerged after training: max abs {d:.3e}");
    assert!(d <= 1e-5);
    let e = (valid.embed(x.clone()) - merged_model.embed(x)).abs().max().into_scalar::<f64>();
    assert!(e <= 1e-5, "embeddings differ by {e}");
}

#[test]
fn merging_large_adapters_gives_the_same_function() {
    let dev = Device::flex();
    let cfg = tiny_config();
    let m = cfg.init(&LossConfig::default(), 3, 1, &dev, true).unwrap();
    let mut enc = m.encoder;
    for layer in enc.encoder.layers.iter_mut() {
        for slot in [&mut layer.self_attn.q_lora, &mut layer.self_attn.v_lora, &mut layer.self_attn.out_lora] {
            let a: &mut LoraAdapter = slot.as_mut().unwrap();
            let [r, o] = a.b.dims();
            a.b = Param::from_tensor(Tensor::random([r, o], Distribution::Normal(0.0, 0.5), &dev));
        }
    }
    let x = fbank_batch(&dev);
    let plain = BeatsEncoder::forward(&lora::merge(enc.clone()), x.clone(), None);
    let with = enc.forward(x.clone(), None);
    let base = cfg.init(&LossConfig::default(), 3, 1, &dev, true).unwrap().encoder.forward(x, None);
    let d = max_abs(with.clone(), plain);
    eprintln!("merged vs unmerged, random B: max abs {d:.3e}, change from the base {:.3e}", max_abs(with, base));
    assert!(d <= 1e-5);
}

#[test]
fn fresh_adapters_leave_the_pretrained_function_unchanged_and_are_seeded() {
    let dev = Device::flex();
    let cfg = tiny_config();
    let (_, plain) = asd::models::beats::load_encoder(&cfg.pretrained, &dev).unwrap();
    let m = cfg.init(&LossConfig::default(), 3, 5, &dev, true).unwrap();
    let x = fbank_batch(&dev);
    assert_eq!(max_abs(plain.forward(x.clone(), None), m.encoder.forward(x, None)), 0.0);
    let again = cfg.init(&LossConfig::default(), 3, 5, &dev, true).unwrap();
    assert_eq!(checkpoint::tensors(&m), checkpoint::tensors(&again), "same seed, same model");
    let other = cfg.init(&LossConfig::default(), 3, 6, &dev, true).unwrap();
    assert_ne!(checkpoint::tensors(&m), checkpoint::tensors(&other));
}

#[test]
fn layerdrop_and_lora_dropout_follow_the_batch_seed() {
    let dev = Device::flex().autodiff();
    let mut cfg = tiny_config();
    cfg.layerdrop = Some(0.5);
    cfg.lora.dropout = 0.1;
    let model = cfg.init(&LossConfig::default(), 2, 3, &dev, true).unwrap();
    let loss = |seed: u64| {
        let b = BeatsBatch { fbank: fbank_batch(&dev), labels: Some(labels_tensor(&[0, 1, 0, 1], &dev)), seed };
        model.loss(b).into_scalar::<f64>()
    };
    let l: Vec<f64> = (0..6).map(loss).collect();
    assert_eq!(l[0], loss(0), "same seed, same draws");
    assert!(l.iter().any(|&v| v != l[0]), "different seeds never changed LayerDrop or dropout: {l:?}");
}

#[test]
fn trainable_parameters_of_the_full_configuration() {
    let m = common::json("shared/beats/beats_iter3_full_state_dict_manifest.json");
    let cfg = BeatsConfig::from_json(&m["cfg"]).unwrap();
    let lc: BeatsLoraConfig = serde_json::from_value(serde_json::json!({"pretrained": "BEATs_iter3.pt"})).unwrap();
    assert_eq!(lc.lora, LoraConfig::default());
    assert_eq!(lc.pooling, Pooling::AttentiveStats);
    let dev = Device::flex();
    let enc = BeatsEncoder::new(&cfg, &dev); // lazy: no weights
    let classes = 1;
    let model = lc.assemble(&cfg, enc, &LossConfig::default(), classes, 0, &dev);
    let c = model.param_counts();
    eprintln!("full configuration: {c:?}, trainable {}", c.trainable());
    // LoRA: q and out rank 64 in 12 layers, v rank 64 in layers 0-5 and 96 in 6-11.
    assert_eq!(c.lora, 12 * 2 * (2 * 768 * 64) + 6 * (2 * 768 * 64) + 6 * (2 * 768 * 96));
    assert_eq!(c.lora, 3_833_856);
    assert_eq!(c.pooling, 1_333_392);
    assert_eq!(c.fc, 768 * 256 + 256);
    assert_eq!(c.frozen_encoder, 90_311_792);
}

#[test]
fn a_reloaded_checkpoint_keeps_the_base_frozen() {
    let dev = Device::flex().autodiff();
    let cfg = tiny_config();
    let model = cfg.init(&LossConfig::default(), 2, 7, &dev, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    checkpoint::save(&ck, &model, None, &Default::default()).unwrap();
    // What `--resume` and scoring do: a lazy model (no pre-trained weights
    // read) filled from the run checkpoint.
    let lazy = cfg.init(&LossConfig::default(), 2, 7, &dev, false).unwrap();
    let loaded = checkpoint::load_model(lazy, &ck).unwrap();
    assert_eq!(checkpoint::tensors(&loaded), checkpoint::tensors(&model));
    let b = BeatsBatch { fbank: fbank_batch(&dev), labels: Some(labels_tensor(&[0, 1, 0, 1], &dev)), seed: 0 };
    let gp = GradientsParams::from_grads(loaded.loss(b).backward(), &loaded);
    let shapes: BTreeMap<String, usize> =
        checkpoint::tensors(&loaded).into_iter().map(|(k, (s, _))| (k, s.len())).collect();
    for (path, (id, frozen)) in params(&loaded) {
        if !path.contains("running_") {
            assert_eq!(common::has_grad(&gp, id, shapes[&path]), !frozen, "{path}");
        }
    }
}

mod cli {
    use super::common;
    use std::path::Path;
    use std::process::Command;

    fn ok(args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_asd")).args(args).arg("--quiet").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "asd {args:?} failed:\n{err}");
        String::from_utf8_lossy(&out.stdout).into()
    }

    const TINY: &str = "experiments/demo/beats_lora_tiny.json";

    fn args(data: &Path, work: &Path) -> Vec<String> {
        let mut v = vec!["--checkpoints".to_string(), work.join("ckpt").display().to_string()];
        for s in [
            format!("data.root={}", data.display()),
            format!("features.cache_dir={}", work.join("features").display()),
            "train.max_steps=4".into(),
            "train.batch_size=4".into(),
            "train.grad_accum=2".into(),
        ] {
            v.extend(["--set".to_string(), s]);
        }
        v
    }

    #[test]
    fn tiny_experiment_trains_resumes_and_scores() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        let root = data.to_str().unwrap();
        ok(&["synth", "--out", root, "--split", "dev", "--machines", "fan,valve", "--seed", "2"]
            .into_iter()
            .chain(["--train-source", "6", "--train-target", "2", "--test-per-cell", "2", "--seconds", "2"])
            .collect::<Vec<_>>());
        let (w1, w2) = (d.path().join("full"), d.path().join("split"));
        let run = |verb: &str, w: &Path, extra: &[&str]| {
            let a = args(&data, w);
            let mut v: Vec<&str> = vec![verb, TINY];
            v.extend(a.iter().map(String::as_str));
            v.extend(extra);
            ok(&v)
        };
        run("train", &w1, &[]);
        run("train", &w2, &["--stop-after", "2"]);
        run("train", &w2, &["--resume"]);
        run("score", &w1, &[]);
        run("score", &w2, &[]);
        let rd = |w: &Path, f: &str| std::fs::read_to_string(w.join("ckpt/demo_beats_lora_tiny").join(f)).unwrap();
        for m in ["fan", "valve"] {
            let f = format!("scores/anomaly_score_{m}_section_00_test.csv");
            assert_eq!(rd(&w1, &f).lines().count(), 8, "{f}");
            assert_eq!(rd(&w1, &f), rd(&w2, &f), "{f}: resumed run differs");
        }
        let losses = |t: String| -> Vec<String> {
            t.lines().filter(|l| l.contains("\"loss\"")).map(|l| l.split("\"lr\"").next().unwrap().into()).collect()
        };
        assert_eq!(losses(rd(&w1, "metrics.jsonl")), losses(rd(&w2, "metrics.jsonl")));
        assert!(rd(&w1, "scores/evaluation.json").contains("official_score"));
    }

    #[test]
    fn embed_writes_the_encoder_output_as_npy() {
        let d = tempfile::tempdir().unwrap();
        let ck = common::fixture("shared/beats/beats_tiny.pt");
        let wav = common::fixture("shared/audio/clip_b_chirp_noise.wav");
        let out = d.path().join("b.npy");
        ok(&["embed", "--model", "beats", "--checkpoint", ck.to_str().unwrap(), "--wav", wav.to_str().unwrap()]
            .into_iter()
            .chain(["--out", out.to_str().unwrap()])
            .collect::<Vec<_>>());
        let (v, shape) = asd::util::npy::read(&out).unwrap();
        assert_eq!(shape, vec![120, 64]);
        let dir = d.path().join("dir");
        let audio = common::fixture("shared/audio");
        ok(&["embed", "--model", "beats", "--checkpoint", ck.to_str().unwrap(), "--wav", audio.to_str().unwrap()]
            .into_iter()
            .chain(["--out", dir.to_str().unwrap(), "--pool", "mean"])
            .collect::<Vec<_>>());
        let (m, s) = asd::util::npy::read(&dir.join("clip_b_chirp_noise.npy")).unwrap();
        assert_eq!(s, vec![1, 64]);
        for c in 0..64 {
            let mean = (0..120).map(|r| v[r * 64 + c] as f64).sum::<f64>() / 120.0;
            assert!((mean - m[c] as f64).abs() < 1e-5);
        }
        assert!(dir.join("clip_a_tone_noise.npy").is_file());
    }
}
