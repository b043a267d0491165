//! The training loop on a small synthetic task: loss goes down, runs are
//! reproducible, resume is bit-exact, gradient accumulation equals one large
//! batch, frozen parameters stay untouched, checkpoints average correctly.

use anyhow::Result;
use asd::nn::util::{labels_tensor, seeded_init};
use asd::nn::{ArcFace, ArcFaceConfig};
use asd::train::checkpoint::{self, tensors};
use asd::train::{AdamW, CosineWarmupRestarts, RunDir, RunOptions, StepOutput, Task, TrainConfig, fit};
use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor, TensorData};
use rand::RngExt;

#[derive(Module, Debug)]
struct Net {
    fc: Linear,
    bn: BatchNorm,
    head: ArcFace,
}

impl Net {
    fn new(device: &Device) -> Net {
        seeded_init(device, 11, || Net {
            fc: LinearConfig::new(16, 8).init(device),
            bn: BatchNormConfig::new(8).init(device),
            head: ArcFaceConfig::default().init(8, 4, device),
        })
    }
}

struct Toy {
    x: Vec<Vec<f32>>,
    y: Vec<usize>,
    use_bn: bool,
}

impl Toy {
    fn new(n: usize) -> Toy {
        let mut r = asd::util::rng::stream(5, &[1]);
        let centres: Vec<Vec<f32>> = (0..4).map(|_| (0..16).map(|_| r.random::<f32>() * 2.0 - 1.0).collect()).collect();
        let y: Vec<usize> = (0..n).map(|i| i % 4).collect();
        let x = y.iter().map(|&c| centres[c].iter().map(|v| v + 0.3 * (r.random::<f32>() - 0.5)).collect()).collect();
        Toy { x, y, use_bn: true }
    }
}

impl Task for Toy {
    type Model = Net;
    type Batch = (Tensor<2>, Vec<usize>);
    fn len(&self) -> usize {
        self.x.len()
    }
    fn batch(&self, items: &[usize], _seed: u64, device: &Device) -> Result<Self::Batch> {
        let data: Vec<f32> = items.iter().flat_map(|&i| self.x[i].clone()).collect();
        Ok((
            Tensor::from_data(TensorData::new(data, [items.len(), 16]), device),
            items.iter().map(|&i| self.y[i]).collect(),
        ))
    }
    fn step(&self, m: &Net, (x, y): Self::Batch) -> StepOutput {
        let mut h = m.fc.forward(x);
        if self.use_bn {
            h = m.bn.forward(h);
        }
        let out = m.head.forward(h, labels_tensor(&y, &m.fc.weight.device()));
        StepOutput { loss: out.loss, logs: vec![] }
    }
}

fn cfg(steps: u64) -> TrainConfig {
    TrainConfig {
        batch_size: 8,
        grad_accum: 2,
        max_steps: steps,
        optimizer: AdamW { weight_decay: 1e-5, beta2: 0.98, ..AdamW::default() },
        schedule: Some(CosineWarmupRestarts {
            first_cycle_steps: 10,
            cycle_mult: 1.0,
            max_lr: 5e-2,
            min_lr: 1e-4,
            warmup_steps: 2,
            gamma: 1.0,
        }),
        grad_clip: Some(5.0),
        checkpoint_every: 0,
        save_last_every: 100,
        selection: Default::default(),
        log_every: 1,
    }
}

fn opts<'a>(resume: bool, stop_after: Option<u64>) -> RunOptions<'a, Net> {
    RunOptions { seed: 3, resume, quiet: true, stop_after, validator: None, replicas: &[] }
}

/// A fresh run folder `name` under `dir`.
fn run_dir(dir: &std::path::Path, name: &str) -> RunDir {
    let r = RunDir::new(dir.join(name));
    std::fs::create_dir_all(&r.root).unwrap();
    r
}

fn losses(run: &RunDir) -> Vec<f64> {
    std::fs::read_to_string(run.metrics())
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?.get("loss")?.as_f64())
        .collect()
}

#[test]
fn loss_decreases_and_runs_are_reproducible() {
    let dev = Device::flex().autodiff();
    let task = Toy::new(64);
    let d = tempfile::tempdir().unwrap();
    let (r1, r2) = (run_dir(d.path(), "a"), run_dir(d.path(), "b"));
    let m1 = fit(&task, Net::new(&dev), &cfg(30), &r1, &dev, opts(false, None)).unwrap();
    let m2 = fit(&task, Net::new(&dev), &cfg(30), &r2, &dev, opts(false, None)).unwrap();
    let l = losses(&r1);
    assert_eq!(l.len(), 30);
    let first: f64 = l[..3].iter().sum::<f64>() / 3.0;
    let last: f64 = l[27..].iter().sum::<f64>() / 3.0;
    assert!(last < 0.5 * first, "loss did not go down: {first} -> {last}");
    assert_eq!(tensors(&m1), tensors(&m2), "same seed, different weights");
    assert_eq!(losses(&r1), losses(&r2));
    // `last` holds the final weights.
    let back = checkpoint::load_model(Net::new(&dev), &r1.last()).unwrap();
    assert_eq!(tensors(&back), tensors(&m1));
}

#[test]
fn resume_is_bit_exact() {
    let dev = Device::flex().autodiff();
    let task = Toy::new(40);
    let d = tempfile::tempdir().unwrap();
    let (full, split) = (run_dir(d.path(), "full"), run_dir(d.path(), "split"));
    let whole = fit(&task, Net::new(&dev), &cfg(14), &full, &dev, opts(false, None)).unwrap();
    fit(&task, Net::new(&dev), &cfg(14), &split, &dev, opts(false, Some(5))).unwrap();
    assert_eq!(checkpoint::read_state(&split.last()).unwrap().step, 5);
    // A fresh process would build a new model with fresh ids: do the same.
    let resumed = fit(&task, Net::new(&dev), &cfg(14), &split, &dev, opts(true, None)).unwrap();
    assert_eq!(tensors(&resumed), tensors(&whole), "resumed run differs from the uninterrupted one");
    assert_eq!(losses(&split), losses(&full));
}

#[test]
fn accumulation_equals_one_large_batch() {
    // Without batch norm, 2 micro-batches of 8 give the same update as 1 batch of 16
    // (the micro-batch items are the same 16 clips either way).
    let dev = Device::flex().autodiff();
    let mut task = Toy::new(48);
    task.use_bn = false;
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (run_dir(d.path(), "a"), run_dir(d.path(), "b"));
    let mut c1 = cfg(1);
    c1.grad_clip = None;
    c1.schedule = None;
    c1.optimizer.lr = 1e-2;
    let mut c2 = c1.clone();
    c2.grad_accum = 1;
    c2.batch_size = 16;
    // Same 16 items: micro-batches 0 and 1 of size 8 are the first 16 of epoch 0's order.
    let m1 = fit(&task, Net::new(&dev), &c1, &a, &dev, opts(false, None)).unwrap();
    let m2 = fit(&task, Net::new(&dev), &c2, &b, &dev, opts(false, None)).unwrap();
    for (k, diff) in weight_diffs(&m1, &m2) {
        assert!(diff < 1e-6, "{k}: accumulated update differs by {diff}");
    }
}

/// Each named tensor of two models of one architecture with its largest
/// element difference.
fn weight_diffs(a: &Net, b: &Net) -> Vec<(String, f64)> {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    ta.iter()
        .map(|(k, (_, va))| (k.clone(), va.iter().zip(&tb[k].1).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)))
        .collect()
}

#[test]
fn frozen_parameters_are_untouched() {
    let dev = Device::flex().autodiff();
    let task = Toy::new(32);
    let d = tempfile::tempdir().unwrap();
    let run = RunDir::new(d.path());
    let mut net = Net::new(&dev);
    net.fc = net.fc.no_grad();
    let before = tensors(&net);
    let after = tensors(&fit(&task, net, &cfg(5), &run, &dev, opts(false, None)).unwrap());
    for k in ["fc.weight", "fc.bias"] {
        assert_eq!(before[k], after[k], "{k} changed although frozen");
    }
    assert_ne!(before["head.weight"], after["head.weight"]);
}

#[test]
fn checkpoint_average_is_elementwise_mean() {
    let dev = Device::flex();
    let d = tempfile::tempdir().unwrap();
    let a = Net::new(&dev);
    let b = Net { fc: seeded_init(&dev, 99, || LinearConfig::new(16, 8).init(&dev)), ..Net::new(&dev) };
    let state = asd::train::TrainState::default();
    checkpoint::save(&d.path().join("a"), &a, None, &state).unwrap();
    checkpoint::save(&d.path().join("b"), &b, None, &state).unwrap();
    let avg = checkpoint::average(Net::new(&dev), &[d.path().join("a"), d.path().join("b")]).unwrap();
    let (ta, tb, tm) = (tensors(&a), tensors(&b), tensors(&avg));
    for (k, (_, v)) in &tm {
        for (i, got) in v.iter().enumerate() {
            let want = (ta[k].1[i] + tb[k].1[i]) / 2.0;
            assert!((got - want).abs() < 1e-6, "{k}[{i}]");
        }
    }
    assert!(checkpoint::average(Net::new(&dev), &[d.path().join("missing")]).is_err());
}

#[test]
fn a_crash_between_the_two_renames_of_last_is_recovered_on_resume() {
    let dev = Device::flex().autodiff();
    let task = Toy::new(40);
    let d = tempfile::tempdir().unwrap();
    let (full, split) = (run_dir(d.path(), "full"), run_dir(d.path(), "split"));
    let whole = fit(&task, Net::new(&dev), &cfg(10), &full, &dev, opts(false, None)).unwrap();
    fit(&task, Net::new(&dev), &cfg(10), &split, &dev, opts(false, Some(4))).unwrap();
    // The state a crash after `last -> .last.old` and before `.last.tmp -> last` leaves.
    std::fs::rename(split.last(), split.root.join(".last.old")).unwrap();
    assert!(!split.last().exists());
    assert_eq!(split.steps_done().unwrap(), Some(4), "steps_done restores last");
    std::fs::rename(split.last(), split.root.join(".last.old")).unwrap();
    let resumed = fit(&task, Net::new(&dev), &cfg(10), &split, &dev, opts(true, None)).unwrap();
    assert_eq!(tensors(&resumed), tensors(&whole), "resume after recovery differs from the uninterrupted run");
    assert!(!split.root.join(".last.old").exists() && !split.root.join(".last.tmp").exists());
}

#[test]
fn average_last_averages_the_last_periodic_checkpoints() {
    let dev = Device::flex().autodiff();
    let task = Toy::new(40);
    let d = tempfile::tempdir().unwrap();
    let run = run_dir(d.path(), "r");
    let c = TrainConfig { checkpoint_every: 4, selection: asd::train::Selection::AverageLast { k: 3 }, ..cfg(10) };
    c.validate().unwrap();
    // Periodic steps 4 and 8, and the final step 10.
    assert_eq!(c.average_last_steps(3), vec![4, 8, 10]);
    assert_eq!(c.average_last_steps(2), vec![8, 10]);
    fit(&task, Net::new(&dev), &c, &run, &dev, opts(false, None)).unwrap();
    let dirs: Vec<_> = [4, 8, 10].iter().map(|&s| run.periodic(s)).collect();
    let want = checkpoint::average(Net::new(&dev), &dirs).unwrap();
    let got = checkpoint::load_model(Net::new(&dev), &run.select("averaged").unwrap()).unwrap();
    assert_eq!(tensors(&got), tensors(&want));
    assert_eq!(c.selection.checkpoint(), "averaged");
    assert!(!c.selection.reads_test_labels());
    // The rule needs periodic checkpoints.
    assert!(TrainConfig { checkpoint_every: 0, ..c }.validate().is_err());
}

#[test]
fn a_loaded_model_outlives_its_checkpoint_folder() {
    // burn-store's file reader defers reading tensors; a resumed run replaces
    // `last` while frozen weights loaded from it are still in use.
    let dev = Device::flex().autodiff();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("a");
    let a = Net::new(&dev);
    checkpoint::save(&dir, &a, None, &asd::train::TrainState::default()).unwrap();
    let back = checkpoint::load_model(Net::new(&dev), &dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(tensors(&back), tensors(&a));
}

/// Data parallelism: each micro-batch cut across devices, gradients summed
/// on the main device by share, equals one device on the same effective
/// batch. flex has one device, so the second device is flex again (the
/// replica code path, exact) and ndarray (another backend: host transfers,
/// other kernels; equal within float tolerance). Batch norm is off, as it
/// normalises per part by design.
#[test]
fn data_parallel_training_equals_one_device() {
    let dev = Device::flex().autodiff();
    let mut task = Toy::new(48);
    task.use_bn = false;
    let d = tempfile::tempdir().unwrap();
    // Adam's step hardly depends on the gradient's scale, and clipping
    // removes it: a large eps and no clipping make the step nearly
    // proportional to the gradient, so a part weighted wrongly shows.
    let mut c = cfg(5);
    c.optimizer.eps = 10.0;
    c.grad_clip = None;
    let single = fit(&task, Net::new(&dev), &c, &run_dir(d.path(), "one"), &dev, opts(false, None)).unwrap();
    let mut replicas = vec![(Device::flex().autodiff(), 1e-6)];
    #[cfg(feature = "ndarray")]
    replicas.push((asd::backend::device(asd::backend::BackendName::Ndarray).unwrap().autodiff(), 1e-5));
    for (i, (replica, tol)) in replicas.into_iter().enumerate() {
        let o = RunOptions { replicas: std::slice::from_ref(&replica), ..opts(false, None) };
        let run = run_dir(d.path(), &format!("dp{i}"));
        let parallel = fit(&task, Net::new(&dev), &c, &run, &dev, o).unwrap();
        for (k, diff) in weight_diffs(&single, &parallel) {
            assert!(diff < tol, "{replica:?} {k}: data-parallel weights differ by {diff}");
        }
        assert_ne!(tensors(&Net::new(&dev))["head.weight"], tensors(&parallel)["head.weight"], "training did nothing");
    }
}
