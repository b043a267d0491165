//! The official AE baseline port against the official code itself
//! (nttcslab/dcase2023_task2_baseline_ae v3.3.0): fixture
//! `tests/fixtures/official_ae/`, made by `tests/fixtures/gen/official_ae_refs.py`
//! (its docstring says how). One model saved by the official code's
//! `AENet`, eight training clips (four per domain) and three test clips.
//!
//! Tolerances:
//! - log-mel: ≤ 1e-3 dB, as for the other front-ends (librosa 0.9.2 here);
//! - MSE: 1e-5 relative (f32 forward passes in both);
//! - covariances: 1e-4 relative to the largest diagonal entry;
//! - selective Mahalanobis: TOL relative to the official functions run with
//!   the network in float32 and the covariance, its inverse and the
//!   quadratic forms in float64 (`mahala_f32fwd`), the split the port makes.
//!   The official code's all-float32 run is 4.1e-4 away from its float64
//!   run on these clips (torch's f32 inverse of a covariance whose smallest
//!   directions the distance weights most); the f32-network run is within
//!   3e-6 of the float64 one.

use asd::data::naming::Domain;
use asd::data::wav;
use asd::features::Frames;
use asd::features::frontend::FrontEnd;
use asd::features::mel::LogmelPreset;
use asd::models::ModelSpec;
use asd::models::official_ae::{OfficialAeConfig, ScoreState, load_official};
use asd::models::spec::BatchContext;
use burn::tensor::Device;
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/official_ae")
}

/// Every tensor of the reference file as f64.
fn refs() -> BTreeMap<String, Vec<f64>> {
    let bytes = std::fs::read(dir().join("refs.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, v)| {
            let data = match v.dtype() {
                Dtype::F32 => {
                    v.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect()
                }
                Dtype::F64 => v.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
                d => panic!("{name}: unexpected dtype {d:?}"),
            };
            (name, data)
        })
        .collect()
}

fn logmel(name: &str) -> Frames {
    let x = wav::load(&dir().join(format!("{name}.wav"))).unwrap();
    FrontEnd::Logmel { preset: LogmelPreset::OfficialAe }.compute(&x).unwrap()
}

#[test]
fn features_match_the_official_file_to_vectors() {
    let r = refs();
    for i in 0..3 {
        let ours = logmel(&format!("test_{i}"));
        let reference = &r[&format!("logmel_{i}")];
        assert_eq!(ours.data.len(), reference.len(), "test_{i}: shape");
        let max = ours.data.iter().zip(reference).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
        eprintln!("test_{i}: log-mel {}x{} max |d| {max:.2e} dB", ours.rows, ours.cols);
        assert!(max <= 1e-3, "test_{i}: log-mel differs by {max} dB");
    }
}

#[test]
fn covariances_and_scores_match_the_official_code() {
    let cfg = OfficialAeConfig::default();
    let dev = Device::flex();
    let model = load_official(&cfg, &dir().join("model.pth"), &dev).unwrap();
    let eval = BatchContext { labels: None, specaugment: None, seed: 0 };
    let batch = |names: &[String]| {
        let inputs = names.iter().map(|n| ModelSpec::fit(&cfg, vec![logmel(n)]).unwrap()).collect();
        ModelSpec::batch(&cfg, inputs, &eval, &dev).unwrap()
    };
    let names: Vec<String> =
        ["source", "target"].iter().flat_map(|d| (0..4).map(move |i| format!("train_{d}_{i}"))).collect();
    let domains: Vec<Domain> =
        names.iter().map(|n| if n.contains("source") { Domain::Source } else { Domain::Target }).collect();
    // Two batches that mix the domains: the result must not depend on the batching.
    let train = vec![
        Ok((batch(&[names[0].clone(), names[4].clone(), names[1].clone()]), vec![domains[0], domains[4], domains[1]])),
        Ok((batch(&[&names[2..4], &names[5..]].concat()), [&domains[2..4], &domains[5..]].concat())),
    ];
    let r = refs();
    let fitted = cfg.fit_score(model.clone(), "selective_mahalanobis", &mut train.into_iter()).unwrap();
    let ScoreState::SelectiveMahalanobis(chol) = &fitted.score else { panic!("not fitted") };
    for (k, d) in ["source", "target"].iter().enumerate() {
        let cov = chol[k].matrix();
        let diag = &r[&format!("cov_{d}_diag_f64")];
        let row0 = &r[&format!("cov_{d}_row0_f64")];
        let scale = diag.iter().cloned().fold(0.0, f64::max);
        let worst =
            (0..640).map(|j| (cov.at(j, j) - diag[j]).abs().max((cov.at(0, j) - row0[j]).abs())).fold(0.0, f64::max);
        eprintln!("{d} covariance: max |d| {:.2e} of the largest variance {scale:.3}", worst / scale);
        assert!(worst <= 1e-4 * scale, "{d} covariance differs by {worst}");
    }
    let test: Vec<String> = (0..3).map(|i| format!("test_{i}")).collect();
    let mse_model = cfg.fit_score(model, "mse", &mut std::iter::empty()).unwrap();
    let check = |what: &str, ours: Vec<f64>, reference: &[f64], rel: f64| {
        for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
            eprintln!("test_{i} {what}: ours {a:.6} official {b:.6} (rel {:.1e})", (a - b).abs() / b.abs());
            assert!((a - b).abs() <= rel * b.abs(), "test_{i} {what}: {a} vs {b}");
        }
    };
    check("mse", mse_model.scores(&batch(&test)), &r["mse_f64"], 1e-5);
    check("selective mahalanobis", fitted.scores(&batch(&test)), &r["mahala_f32fwd"], 1e-5);
    // The anomalous clip (a shifted harmonic) scores highest in both, as in the official run.
    assert!(r["mahala_f32"][1] > r["mahala_f32"][0] && r["mahala_f32"][1] > r["mahala_f32"][2]);
}

#[test]
fn the_official_loader_names_wrong_keys() {
    let cfg = OfficialAeConfig { hidden: 64, ..Default::default() };
    let err = load_official(&cfg, &dir().join("model.pth"), &Device::flex()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("model.pth") && msg.contains("encoder.0.weight") && msg.contains("[128, 640]"), "{msg}");
    let err = load_official(&OfficialAeConfig::default(), &dir().join("test_0.wav"), &Device::flex()).unwrap_err();
    assert_eq!(format!("{err:#}").matches("test_0.wav").count(), 1, "the file named once: {err:#}");
}
