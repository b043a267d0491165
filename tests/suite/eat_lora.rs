//! EAT-LoRA and the Dual Branch BEATs+EAT model on the tiny fixture
//! checkpoints (CPU): one training step moves the adapters and heads and
//! leaves every frozen tensor bit-identical; merged and unmerged forward
//! passes agree; the trainable counts of the full configurations next to
//! the report's (EAT-LoRA 11.25 M, BEATs+EAT 14.98 M).

use crate::common;

use asd::features::fbank::{EatLength, eat_input};
use asd::models::beats::{BeatsConfig, BeatsEncoder};
use asd::models::beats_eat::{BeatsEat, BeatsEatBatch, BeatsEatConfig};
use asd::models::eat::lora as eat_lora;
use asd::models::eat::{EatBatch, EatConfig, EatEncoder, EatLora, EatLoraConfig};
use asd::nn::LossConfig;
use asd::nn::util::{labels_tensor, named_params};
use asd::train::checkpoint;
use burn::module::{Module, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use std::collections::BTreeMap;

const CLIPS: [&str; 2] = ["clip_a_tone_noise", "clip_b_chirp_noise"];

fn eat_tiny() -> EatLoraConfig {
    serde_json::from_value(serde_json::json!({
        "pretrained": common::fixture("shared/eat/eat_tiny_fairseq.pt"),
        "seconds": 2.0,
        "lora": {"targets": ["q", "v", "fc1", "fc2"], "rank": 8, "alpha": 16.0}
    }))
    .unwrap()
}

fn dual_tiny() -> BeatsEatConfig {
    serde_json::from_value(serde_json::json!({
        "beats": {
            "pretrained": common::fixture("shared/beats/beats_tiny.pt"),
            "seconds": 2.0,
            "lora": {"rank": 8, "v_rank_latter_half": 12, "alpha": 16.0},
            "layerdrop": 0.0
        },
        "eat": {
            "pretrained": common::fixture("shared/eat/eat_tiny_fairseq.pt"),
            "seconds": 2.0,
            "lora": {"targets": ["q", "v", "fc1", "fc2"], "rank": 8, "alpha": 16.0}
        }
    }))
    .unwrap()
}

fn wav(clip: &str) -> Vec<f32> {
    asd::data::wav::load(&common::fixture(&format!("shared/audio/{clip}.wav"))).unwrap()
}

/// The two fixture clips, twice: EAT input [4, 224, 128] (cut to 2 s as the model sees it).
fn eat_batch(device: &Device) -> Tensor<3> {
    let mut data = Vec::new();
    for _ in 0..2 {
        for c in CLIPS {
            data.extend(eat_input(&wav(c), EatLength::Fixed(224)).unwrap().data);
        }
    }
    Tensor::from_data(TensorData::new(data, [4, 224, 128]), device)
}

/// BEATs input of the same clips [4, 198, 128] (2 s).
fn beats_batch(device: &Device) -> Tensor<3> {
    let mut data = Vec::new();
    for _ in 0..2 {
        for c in CLIPS {
            data.extend_from_slice(&asd::features::beats_input(&wav(c)).unwrap().data[..198 * 128]);
        }
    }
    Tensor::from_data(TensorData::new(data, [4, 198, 128]), device)
}

fn labels(device: &Device) -> Option<Tensor<1, burn::tensor::Int>> {
    Some(labels_tensor(&[0, 1, 0, 1], device))
}

/// Every float parameter: path → (id, frozen (pre-trained encoder weight)).
fn params<M: Module>(m: &M) -> BTreeMap<String, (ParamId, bool)> {
    named_params(m)
        .into_iter()
        .map(|(path, p)| {
            let frozen = path.split('.').any(|s| s == "encoder") && !path.contains("_lora.");
            (path, (p.id, frozen))
        })
        .collect()
}

/// One optimiser step through `loss`; checks gradient entries (trainable
/// only), then that frozen tensors kept every bit and trainable ones moved.
/// Returns the number of trainable tensors that moved.
fn step_and_check<M: Module + Clone>(model: M, loss: impl Fn(&M) -> Tensor<1>) -> (M, usize) {
    let before = checkpoint::tensors(&model);
    let ids = params(&model);
    let dims: BTreeMap<String, usize> = before.iter().map(|(k, (s, _))| (k.clone(), s.len())).collect();
    let l = loss(&model);
    assert!(l.clone().into_scalar::<f64>().is_finite());
    let gp = GradientsParams::from_grads(l.backward(), &model);
    for (path, (id, frozen)) in &ids {
        if !path.contains("running_") {
            assert_eq!(common::has_grad(&gp, *id, dims[path]), !frozen, "{path}: gradient entry (frozen: {frozen})");
        }
    }
    let mut optim = asd::train::AdamW { lr: 1e-3, ..Default::default() }.init();
    let model = optim.step(1e-3, model, gp);
    let after = checkpoint::tensors(&model);
    let mut moved = 0;
    for (path, (_, frozen)) in &ids {
        let same = before[path].1.iter().zip(&after[path].1).all(|(x, y)| x.to_bits() == y.to_bits());
        if *frozen {
            assert!(same, "frozen {path} changed");
        } else if !path.contains("running_") {
            assert!(!same, "trainable {path} did not change");
            moved += 1;
        }
    }
    (model, moved)
}

fn max_abs<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f64 {
    (a - b).abs().max().into_scalar::<f64>()
}

#[test]
fn an_eat_training_step_moves_adapters_and_head_only_and_merging_keeps_the_function() {
    let dev = Device::flex().autodiff();
    let cfg = eat_tiny();
    let model = cfg.init(&LossConfig::default(), 2, 7, &dev, true).unwrap();
    // q, v slices (64 → 64), fc1 (64 → 128), fc2 (128 → 64), rank 8, 2 blocks.
    assert_eq!(model.param_counts().lora, 2 * 8 * (2 * (64 + 64) + (64 + 128) + (128 + 64)));
    let (model, moved) =
        step_and_check(model, |m: &EatLora| m.loss(EatBatch { fbank: eat_batch(&dev), labels: labels(&dev), seed: 0 }));
    assert!(moved >= 2 * 8 + 6, "{moved} trainable tensors moved");

    let inf = dev.clone().inner();
    let valid = model.valid();
    let x = eat_batch(&inf);
    let merged = valid.clone().merged();
    assert!(!eat_lora::has_adapters(&merged.encoder));
    let d = max_abs(valid.encoder.forward(x.clone(), None), merged.encoder.forward(x.clone(), None));
    let e = max_abs(valid.embed(x.clone()), merged.embed(x));
    eprintln!("EAT merged vs unmerged after one step: encoder {d:.3e}, embedding {e:.3e}");
    assert!(d <= 1e-5 && e <= 1e-5);
}

#[test]
fn merged_slice_adapters_leave_k_untouched_and_keep_the_function() {
    let dev = Device::flex();
    let cfg = eat_tiny();
    let mut enc = cfg.init(&LossConfig::default(), 3, 1, &dev, true).unwrap().encoder;
    let base_qkv = enc.blocks[0].attn.qkv.weight.val();
    for b in enc.blocks.iter_mut() {
        let slots = [&mut b.attn.q_lora, &mut b.attn.v_lora, &mut b.mlp.fc1_lora, &mut b.mlp.fc2_lora];
        for a in slots.into_iter().map(|s| s.as_mut().unwrap()) {
            let [r, o] = a.b.dims();
            a.b = Param::from_tensor(Tensor::random([r, o], Distribution::Normal(0.0, 0.5), &dev));
        }
    }
    let x = eat_batch(&dev);
    let with = enc.forward(x.clone(), None);
    let merged = eat_lora::merge(enc);
    let qkv = merged.blocks[0].attn.qkv.weight.val();
    let cols = |t: Tensor<2>, c: std::ops::Range<usize>| t.slice([0..64, c]);
    assert_eq!(max_abs(cols(qkv.clone(), 64..128), cols(base_qkv.clone(), 64..128)), 0.0, "k columns");
    assert!(max_abs(cols(qkv.clone(), 0..64), cols(base_qkv.clone(), 0..64)) > 1e-3, "q columns");
    assert!(max_abs(cols(qkv, 128..192), cols(base_qkv, 128..192)) > 1e-3, "v columns");
    let d = max_abs(with, merged.forward(x, None));
    eprintln!("EAT merged vs unmerged, random B: max abs {d:.3e}");
    assert!(d <= 1e-5);
}

#[test]
fn fresh_eat_adapters_leave_the_pretrained_function_unchanged_and_are_seeded() {
    let dev = Device::flex();
    let cfg = eat_tiny();
    let (_, plain, _) = asd::models::eat::load_encoder(&cfg.pretrained, &dev).unwrap();
    let m = cfg.init(&LossConfig::default(), 3, 5, &dev, true).unwrap();
    let x = eat_batch(&dev);
    assert_eq!(max_abs(plain.forward(x.clone(), None), m.encoder.forward(x, None)), 0.0);
    let again = cfg.init(&LossConfig::default(), 3, 5, &dev, true).unwrap();
    assert_eq!(checkpoint::tensors(&m), checkpoint::tensors(&again), "same seed, same model");
}

#[test]
fn a_dual_training_step_moves_both_branches_and_merging_keeps_the_joint_embedding() {
    let dev = Device::flex().autodiff();
    let cfg = dual_tiny();
    let model = cfg.init(&LossConfig::default(), 2, 3, &dev, true).unwrap();
    let batch = |d: &Device| BeatsEatBatch { beats: beats_batch(d), eat: eat_batch(d), labels: labels(d), seed: 1 };
    let (loss, parts) = model.loss(batch(&dev));
    let p: Vec<f64> = parts.into_iter().map(|(_, t)| t.into_scalar::<f64>()).collect();
    let total = loss.into_scalar::<f64>();
    assert!((total - p.iter().sum::<f64>()).abs() < 1e-4 * total.abs(), "weights 1: {total} = Σ {p:?}");
    let (model, moved) = step_and_check(model, |m: &BeatsEat| m.loss(batch(&dev)).0);
    assert!(moved > 40, "{moved}");

    let inf = dev.clone().inner();
    let valid = model.valid();
    let b = batch(&inf);
    let merged = valid.clone().merged();
    let e = max_abs(valid.embed(&b), merged.embed(&b));
    eprintln!("dual merged vs unmerged after one step: joint embedding {e:.3e}");
    assert!(e <= 1e-5);
    assert_eq!(valid.embed(&b).dims(), [4, 512]);
}

#[test]
fn branch_weights_scale_the_branch_losses() {
    let dev = Device::flex().autodiff();
    let cfg = dual_tiny();
    let batch = BeatsEatBatch { beats: beats_batch(&dev), eat: eat_batch(&dev), labels: labels(&dev), seed: 0 };
    let w = LossConfig { weights: vec![1.0, 0.5, 2.0], ..Default::default() };
    let m = cfg.init(&w, 2, 3, &dev, true).unwrap();
    let (loss, parts) = m.loss(batch);
    let p: Vec<f64> = parts.into_iter().map(|(_, t)| t.into_scalar::<f64>()).collect();
    let want = p[0] + 0.5 * p[1] + 2.0 * p[2];
    assert!((loss.into_scalar::<f64>() - want).abs() < 1e-4 * want.abs());
}

#[test]
fn trainable_parameters_of_the_full_configurations() {
    let dev = Device::flex();
    let (loss, classes) = (LossConfig::default(), 1);
    let eat_cfg = EatConfig::default();
    let eat_lc: EatLoraConfig = serde_json::from_value(serde_json::json!({"pretrained": "EAT.pt"})).unwrap();
    let eat = eat_lc.assemble(&eat_cfg, EatEncoder::new(&eat_cfg, &dev), &loss, classes, 0, &dev);
    let c = eat.param_counts();
    eprintln!("EAT-LoRA full configuration: {c:?}, trainable {} (report: 11.25 M)", c.trainable());
    // q and v slices (768 → 768), fc1 (768 → 3072), fc2 (3072 → 768), rank 64, 12 blocks.
    assert_eq!(c.lora, 12 * 64 * (2 * (768 + 768) + 2 * (768 + 3072)));
    assert_eq!(c.lora, 8_257_536);
    assert_eq!(c.frozen_encoder, 89_972_736);
    assert_eq!((c.pooling, c.fc), (1_333_392, 768 * 256 + 256));

    let m = common::json("shared/beats/beats_iter3_full_state_dict_manifest.json");
    let beats_cfg = BeatsConfig::from_json(&m["cfg"]).unwrap();
    let dual_lc: BeatsEatConfig = serde_json::from_value(serde_json::json!({
        "beats": {"pretrained": "BEATs_iter3.pt"}, "eat": {"pretrained": "EAT.pt"}
    }))
    .unwrap();
    let beats = dual_lc.beats.assemble(&beats_cfg, BeatsEncoder::new(&beats_cfg, &dev), &loss, classes, 0, &dev);
    let eat = dual_lc.eat.assemble(&eat_cfg, EatEncoder::new(&eat_cfg, &dev), &loss, classes, 1, &dev);
    let dual = dual_lc.join(beats, eat, &loss, classes, 0, &dev);
    let d = dual.param_counts();
    eprintln!(
        "BEATs+EAT full configuration: trainable {} = BEATs {} + EAT {} + joint head {} (report: 14.98 M)",
        d.trainable(),
        d.beats.trainable(),
        d.eat.trainable(),
        d.joint_head
    );
    assert_eq!(d.beats.lora + d.eat.lora, 3_833_856 + 8_257_536);
    assert_eq!(d.joint_head, 512 * classes);
}
