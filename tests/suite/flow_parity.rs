//! The normalizing flow against Pyro 1.9.2 (float64 reference,
//! tests/fixtures/shared/flows/pyro_tiny_flow.json, models.md §3.3).

use crate::common;
use asd::nn::flow::{Flow, FlowConfig, Permute};
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};
use common::*;

const FIXTURE: &str = "shared/flows/pyro_tiny_flow.json";

/// The fixture's flow: D = 4, split 2, hypernet [8], two blocks, with the
/// fixture's weights and permutations (moving stats start at 0 / 1).
fn pyro_flow(fx: &serde_json::Value, dev: &Device) -> Flow {
    let cfg = FlowConfig { split: Some(2), ..FlowConfig::new(4, 2, vec![8]) };
    let mut flow = cfg.init(0, dev);
    let vec32 = |v: &serde_json::Value| f64s(v).into_iter().map(|x| x as f32).collect::<Vec<f32>>();
    for (block, b) in flow.blocks.iter_mut().zip(fx["blocks"].as_array().unwrap()) {
        let ac = &b["affine_coupling"];
        assert_eq!(ac["split_dim"], 2);
        assert_eq!(ac["log_scale_clip"], serde_json::json!([-5.0, 3.0]));
        let layers = ac["hypernet_DenseNN"]["layers"].as_array().unwrap();
        assert_eq!(layers.len(), block.coupling.hypernet.layers.len());
        for (lin, l) in block.coupling.hypernet.layers.iter_mut().zip(layers) {
            // PyTorch [out, in] → burn [in, out].
            let w = matrix(&l["weight_out_in"]);
            let (o, i) = (w.len(), w[0].len());
            let t: Vec<f32> = (0..i).flat_map(|c| w.iter().map(move |r| r[c] as f32)).collect();
            lin.weight = Param::from_data(TensorData::new(t, [i, o]), dev);
            lin.bias = Some(Param::from_data(TensorData::new(vec32(&l["bias"]), [o]), dev));
        }
        block.permute = Permute::new(f64s(&b["permute"]).into_iter().map(|v| v as usize).collect());
        let bn = &b["batchnorm"];
        assert_eq!((bn["momentum"].as_f64(), bn["epsilon"].as_f64()), (Some(0.1), Some(1e-5)));
        block.bn.gamma = Param::from_data(TensorData::new(vec32(&bn["gamma"]), [4]), dev);
        block.bn.beta = Param::from_data(TensorData::new(vec32(&bn["beta"]), [4]), dev);
    }
    flow
}

fn to_f64<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data().try_into_vec_as::<f32>().unwrap().into_iter().map(f64::from).collect()
}

/// Largest |got − want| / |want|.
fn max_rel(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).map(|(g, w)| (g - w).abs() / w.abs()).fold(0.0, f64::max)
}

#[test]
fn flow_log_prob_matches_pyro_in_train_then_eval_mode() {
    let fx = json(FIXTURE);
    let dev = Device::flex().autodiff();
    let flow = pyro_flow(&fx, &dev);
    let x: Vec<f32> = matrix(&fx["x"]).into_iter().flatten().map(|v| v as f32).collect();
    let x = Tensor::<2>::from_data(TensorData::new(x, [6, 4]), &dev);

    // Train mode (autodiff device, training flag on): batch statistics.
    let lp = to_f64(flow.log_prob(x.clone()));
    let rel = max_rel(&lp, &f64s(&fx["log_prob_train_mode_first_call"]));
    eprintln!("train-mode log_prob max rel err {rel:e}");
    assert!(rel < 1e-5, "train log_prob {lp:?}");
    let nll: f64 = -lp.iter().sum::<f64>();
    assert!((nll / fx["nll_sum_train"].as_f64().unwrap() - 1.0).abs() < 1e-5);

    // That call updated the moving statistics once.
    let (means, vars) =
        (matrix(&fx["bn_moving_mean_after_train_call"]), matrix(&fx["bn_moving_variance_after_train_call"]));
    let mut stat_err = 0f64;
    for (k, block) in flow.blocks.iter().enumerate() {
        stat_err = stat_err.max(max_abs_diff(&to_f64(block.bn.running_mean.value_sync()), &means[k]));
        stat_err = stat_err.max(max_abs_diff(&to_f64(block.bn.running_var.value_sync()), &vars[k]));
    }
    eprintln!("moving stats max abs err {stat_err:e}");
    assert!(stat_err < 1e-5);

    // Eval mode: moving statistics.
    let eval = flow.valid();
    let lp = to_f64(eval.log_prob(x.inner()));
    let rel = max_rel(&lp, &f64s(&fx["log_prob_eval_mode_after"]));
    eprintln!("eval-mode log_prob max rel err {rel:e}");
    assert!(rel < 1e-5, "eval log_prob {lp:?}");
}

#[test]
fn flow_with_the_fixture_weights_inverts_in_eval_mode() {
    let fx = json(FIXTURE);
    let dev = Device::flex();
    let flow = pyro_flow(&fx, &dev);
    let x: Vec<f32> = matrix(&fx["x"]).into_iter().flatten().map(|v| v as f32).collect();
    let x = Tensor::<2>::from_data(TensorData::new(x.clone(), [6, 4]), &dev);
    let (u, ld_inv) = flow.inverse(x.clone());
    let (back, ld_fwd) = flow.forward(u);
    let err = max_abs_diff(&to_f64(back), &to_f64(x.clone()));
    assert!(err < 1e-5, "round trip {err}"); // measured 1.3e-6 on |x| ≤ 6.6
    let rel = max_rel(&to_f64(ld_fwd), &to_f64(ld_inv));
    assert!(rel < 1e-5, "log-det {rel}");
}
