//! Every compiled backend runs the same model code: forward passes agree
//! across CPU backends and the training loop takes a step on each.

use asd::backend::{self, BackendName};
use asd::models::dual_branch_cnn::{DualBranchBatch, DualBranchCnnConfig};
use asd::nn::LossConfig;
use asd::nn::util::{labels_tensor, to_vec};
use asd::train::checkpoint;
use asd::train::{AdamW, RunDir, RunOptions, StepOutput, Task, TrainConfig, fit};
use burn::tensor::{Device, Tensor, TensorData};

fn cfg() -> DualBranchCnnConfig {
    DualBranchCnnConfig { seconds: 2.0, ..Default::default() }
}

fn inputs(b: usize, dev: &Device, labels: bool) -> DualBranchBatch {
    let (bins, frames, fbins) = cfg().input_shapes();
    let spec: Vec<f32> = (0..b * bins).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
    let gram: Vec<f32> = (0..b * frames * fbins).map(|i| (((i * 104729) % 2001) as f32 - 1000.0) / 500.0).collect();
    DualBranchBatch {
        spectrum: Tensor::from_data(TensorData::new(spec, [b, bins]), dev),
        spectrogram: Tensor::from_data(TensorData::new(gram, [b, frames, fbins]), dev),
        labels: labels.then(|| labels_tensor(&[0, 1, 2][..b], dev)),
    }
}

/// Backends to compare with flex: ndarray always, wgpu where a Vulkan driver
/// is present (CI sets ASD_TEST_WGPU after installing Mesa's lavapipe).
fn others() -> Vec<BackendName> {
    BackendName::compiled()
        .into_iter()
        .filter(|b| *b != BackendName::Flex && (*b != BackendName::Wgpu || std::env::var_os("ASD_TEST_WGPU").is_some()))
        .collect()
}

#[test]
fn forward_agrees_between_flex_and_the_other_backends() {
    let d = tempfile::tempdir().unwrap();
    let flex = backend::device(BackendName::Flex).unwrap();
    let loss = LossConfig::default();
    let a = cfg().init(&loss, 4, 3, &flex);
    checkpoint::save(d.path(), &a, None, &Default::default()).unwrap();
    let ea = to_vec(a.forward(&inputs(2, &flex, false)).concat);
    assert!(ea.iter().any(|v| v.abs() > 1e-3), "degenerate output");
    for name in others() {
        let dev = backend::device(name).unwrap();
        let b = checkpoint::load_model(cfg().init(&loss, 4, 9, &dev), d.path()).unwrap();
        let eb = to_vec(b.forward(&inputs(2, &dev, false)).concat);
        let diff = ea.iter().zip(&eb).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-4, "flex and {name} differ by {diff}");
    }
}

struct OneBatch;

impl Task for OneBatch {
    type Model = asd::models::dual_branch_cnn::DualBranchCnn;
    type Batch = DualBranchBatch;
    fn len(&self) -> usize {
        3
    }
    fn batch(&self, _: &[usize], _: u64, device: &Device) -> anyhow::Result<DualBranchBatch> {
        Ok(inputs(3, device, true))
    }
    fn step(&self, m: &Self::Model, b: DualBranchBatch) -> StepOutput {
        let (loss, logs) = m.loss(&b);
        StepOutput { loss, logs }
    }
}

#[test]
fn the_training_loop_steps_on_every_compiled_backend() {
    for name in std::iter::once(BackendName::Flex).chain(others()) {
        let dev = backend::device(name).unwrap().autodiff();
        let d = tempfile::tempdir().unwrap();
        let run = RunDir::new(d.path());
        let model = cfg().init(&LossConfig::default(), 3, 1, &dev);
        let before = checkpoint::tensors(&model);
        let c = TrainConfig {
            batch_size: 3,
            grad_accum: 1,
            max_steps: 1,
            optimizer: AdamW::default(),
            schedule: None,
            grad_clip: Some(1.0),
            checkpoint_every: 0,
            save_last_every: 1,
            selection: Default::default(),
            log_every: 1,
        };
        let opts = RunOptions { seed: 0, resume: false, quiet: true, stop_after: None, validator: None, replicas: &[] };
        let after = checkpoint::tensors(&fit(&OneBatch, model, &c, &run, &dev, opts).unwrap());
        let changed = before.iter().filter(|(k, v)| after[*k] != **v).count();
        assert!(changed > 10, "{name}: only {changed} tensors changed");
        let log = std::fs::read_to_string(run.metrics()).unwrap();
        assert!(log.contains("\"step\":1"), "{name}: {log}");
    }
}

/// What `asd check-backend` (and scripts/gpu-check.sh on a GPU) runs: every
/// model, built once on flex and copied over, gives the same scoring outputs,
/// loss and outputs after one SGD step on each other backend. The Dual
/// Branch CNN is covered above at a cheaper size.
#[test]
fn every_model_agrees_between_flex_and_the_other_backends() {
    use asd::experiment::Experiment;
    use asd::pipeline::backend_check::{CheckOptions, check};
    let flex = backend::device(BackendName::Flex).unwrap();
    let files: [(&str, &[&str]); 5] = [
        ("nf_cdee", &[]),
        // 6 clips of 2 s give the AE fewer error vectors than its 640 dimensions.
        ("official_ae", &["model.ridge=0.01"]),
        ("beats_lora_tiny", &[]),
        ("eat_lora_tiny", &[]),
        ("beats_eat_tiny", &[]),
    ];
    let opts = CheckOptions { clips: 6, seconds: 2.0, ..Default::default() };
    for name in others() {
        let dev = backend::device(name).unwrap();
        for (file, sets) in files {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            let path = std::path::PathBuf::from(format!("experiments/demo/{file}.json"));
            let exp = Experiment::load(&path, &sets).unwrap();
            let row = check(file, &exp, &flex, &dev, &opts).unwrap();
            assert!(row.ok, "{name}: {row:?}");
            assert!(row.step_moved > 1e-4, "{name}: the step did not move {file}: {row:?}");
        }
    }
}
