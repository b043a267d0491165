//! Parity of the training machinery with the PyTorch references:
//! CosineAnnealingWarmupRestarts (katsura-jp scheduler driven by torch AdamW)
//! and ArcFace values and gradients (torch autograd, float64).

use crate::common;
use asd::nn::util::{labels_tensor, to_vec};
use asd::nn::{ArcFace, ArcFaceConfig};
use asd::train::CosineWarmupRestarts;
use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use common::*;

#[test]
fn schedule_matches_reference_vectors() {
    let fx = json("shared/schedules/cosine_annealing_warmup_restarts.json");
    for s in fx["settings"].as_array().unwrap() {
        let sched = CosineWarmupRestarts {
            first_cycle_steps: s["first_cycle_steps"].as_u64().unwrap(),
            cycle_mult: s["cycle_mult"].as_f64().unwrap(),
            max_lr: s["max_lr"].as_f64().unwrap(),
            min_lr: s["min_lr"].as_f64().unwrap(),
            warmup_steps: s["warmup_steps"].as_u64().unwrap(),
            gamma: s["gamma"].as_f64().unwrap(),
        };
        sched.validate().unwrap();
        let want = f64s(&s["lr"]);
        let got: Vec<f64> = (0..want.len() as u64).map(|k| sched.lr(k)).collect();
        let d = max_abs_diff(&got, &want);
        assert!(d <= 1e-12, "{}: max abs diff {d:e}", s["name"]);
    }
}

fn flat(m: &[Vec<f64>]) -> Vec<f32> {
    m.iter().flatten().map(|&v| v as f32).collect()
}

fn close(got: &[f32], want: &[f64], rel: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = rel * w.abs().max(1.0);
        assert!(((*g as f64) - w).abs() <= tol, "{what}[{i}]: got {g}, want {w}");
    }
}

#[test]
fn arcface_values_and_gradients_match_reference() {
    let fx = json("shared/losses/arcface.json");
    let x = matrix(&fx["x"]);
    let w = matrix(&fx["W_DxC"]);
    let y: Vec<usize> = fx["y"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let (b, d, c) = (x.len(), w.len(), w[0].len());
    let dev = Device::flex().autodiff();
    for case in fx["arcface"].as_array().unwrap() {
        let cfg = ArcFaceConfig {
            scale: case["s"].as_f64().unwrap(),
            margin: case["m"].as_f64().unwrap(),
            easy_margin: case["easy_margin"].as_bool().unwrap(),
        };
        let name = case["name"].as_str().unwrap();
        let mut head: ArcFace = cfg.init(d, c, &dev);
        head.weight = Param::from_tensor(Tensor::from_data(TensorData::new(flat(&w), [d, c]), &dev));
        let xt = Tensor::<2>::from_data(TensorData::new(flat(&x), [b, d]), &dev).require_grad();
        let out = head.forward(xt.clone(), labels_tensor(&y, &dev));
        close(&to_vec(out.cos.clone()), &matrix(&case["cos"]).concat(), 1e-5, &format!("{name} cos"));
        close(&to_vec(out.logits.clone()), &matrix(&case["logits"]).concat(), 1e-4, &format!("{name} logits"));
        close(&to_vec(out.loss.clone()), &[case["loss_mean"].as_f64().unwrap()], 1e-5, &format!("{name} loss"));
        if case.get("grad_x_of_loss_mean").is_some_and(|g| !g.is_null()) {
            let grads = out.loss.backward();
            let gx = to_vec(xt.grad(&grads).unwrap());
            let gw = to_vec(head.weight.grad(&grads).unwrap());
            close(&gx, &matrix(&case["grad_x_of_loss_mean"]).concat(), 1e-5, &format!("{name} grad x"));
            close(&gw, &matrix(&case["grad_W_of_loss_mean"]).concat(), 1e-5, &format!("{name} grad W"));
        }
    }
}
