//! The back-ends against scikit-learn / imbalanced-learn references: kNN and
//! SMOTE (tests/fixtures/shared/backend/knn_smote.json, models.md §5.1–5.2),
//! kNN with local-density rescaling, k-means, (selective) Mahalanobis and
//! Gaussian mixtures (tests/fixtures/backends/, gen/backends_sklearn.py).

use crate::common;
use asd::scoring::smote::{self, Draw};
use asd::scoring::{KnnConfig, KnnMetric, KnnScorer, SmoteConfig};
use common::*;

fn f32s(m: &[Vec<f64>]) -> Vec<Vec<f32>> {
    m.iter().map(|r| r.iter().map(|&v| v as f32).collect()).collect()
}

fn close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    let d = max_abs_diff(got, want);
    assert!(d <= tol, "{what}: max abs diff {d:e}\n got {got:?}\nwant {want:?}");
}

#[test]
fn knn_scores_match_sklearn() {
    let fx = json("shared/backend/knn_smote.json");
    // The fixture's inputs are float64; ours are f32 embeddings, so values
    // agree to float32 input rounding (~1e-7), not 1e-12.
    let (src, tgt, test) =
        (f32s(&matrix(&fx["source_train"])), f32s(&matrix(&fx["target_train"])), f32s(&matrix(&fx["test"])));
    let r = &fx["results"];
    for (name, k) in [("asdkit_cosine_k1", 1), ("asdkit_cosine_k2", 2)] {
        let cfg = KnnConfig { k, metric: KnnMetric::Chord, ..Default::default() };
        let s = KnnScorer::fit(&cfg, &src, &tgt, 0).unwrap().score(&test).unwrap();
        close(
            &s.source.iter().map(|v| v / 1.0).collect::<Vec<_>>(),
            &f64s(&r[name]["score_source"]).iter().map(|v| v / 2.0).collect::<Vec<_>>(),
            1e-6,
            name,
        );
        close(&s.target, &f64s(&r[name]["score_target"]).iter().map(|v| v / 2.0).collect::<Vec<_>>(), 1e-6, name);
        close(&s.score, &f64s(&r[name]["score"]), 1e-6, name);
    }
    let cfg = KnnConfig { k: 1, metric: KnnMetric::Cosine, ..Default::default() };
    let s = KnnScorer::fit(&cfg, &src, &tgt, 0).unwrap().score(&test).unwrap();
    close(&s.score, &f64s(&r["one_minus_cos_k1_min"]["score"]), 1e-6, "1 - cos");
    let rm = &r["rmis_cosine_k1_znorm_min"];
    close(&s.source, &f64s(&rm["score_source_raw"]), 1e-6, "rmis raw source");
    close(&s.target, &f64s(&rm["score_target_raw"]), 1e-6, "rmis raw target");
    let z = KnnScorer::fit(&KnnConfig { domain_znorm: true, ..cfg }, &src, &tgt, 0).unwrap().score(&test).unwrap();
    close(&z.score, &f64s(&rm["score"]), 1e-5, "rmis z-normalised");
}

#[test]
fn knn_scores_match_sklearn_exactly_in_f64_arithmetic() {
    // The distance kernel itself, fed the float64 inputs, reproduces the
    // references to 1e-12.
    let fx = json("shared/backend/knn_smote.json");
    let norm = |m: Vec<Vec<f64>>| {
        m.into_iter()
            .map(|r| {
                let n = r.iter().map(|v| v * v).sum::<f64>().sqrt();
                r.into_iter().map(|v| v / n).collect::<Vec<f64>>()
            })
            .collect::<Vec<_>>()
    };
    let (src, tgt, test) =
        (norm(matrix(&fx["source_train"])), norm(matrix(&fx["target_train"])), norm(matrix(&fx["test"])));
    let g_src = asd::scoring::knn::gram(&test, &src);
    let g_tgt = asd::scoring::knn::gram(&test, &tgt);
    let best = |g: &[Vec<f64>]| {
        g.iter().map(|row| row.iter().map(|c| 1.0 - c).fold(f64::INFINITY, f64::min)).collect::<Vec<f64>>()
    };
    let (s, t) = (best(&g_src), best(&g_tgt));
    let score: Vec<f64> = s.iter().zip(&t).map(|(a, b)| a.min(*b)).collect();
    close(&score, &f64s(&fx["results"]["one_minus_cos_k1_min"]["score"]), 1e-12, "1 - cos (f64)");
}

#[test]
fn smote_follows_imbalanced_learn() {
    let fx = json("shared/backend/knn_smote.json");
    let sm = &fx["results"]["smote"];
    let x = matrix(&sm["X_normalised_input"]);
    let n_major = sm["n_majority"].as_u64().unwrap() as usize;
    let minority: Vec<Vec<f64>> = x[n_major..].to_vec();
    // Neighbour sets (k = 2, self excluded) and the interpolation rule, with
    // the draws recovered from imbalanced-learn's output.
    let nn = smote::neighbours(&minority, 2);
    let draws: Vec<Draw> = sm["recovered_draws"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let row = d["minority_row"].as_u64().unwrap() as usize;
            let col = d["neighbour_col"].as_u64().unwrap() as usize;
            let neighbour = d["neighbour_row"].as_u64().unwrap() as usize;
            assert_eq!(nn[row][col], neighbour, "neighbour order of row {row}");
            Draw { row, neighbour, u: d["step_u"].as_f64().unwrap() }
        })
        .collect();
    let got = smote::interpolate(&minority, &draws);
    for (g, w) in got.iter().zip(matrix(&sm["synthetic_rows"])) {
        close(g, &w, 1e-12, "synthetic row");
    }
    // Counts: floor(0.2 * 30) = 6 target rows after oversampling.
    let cfg = SmoteConfig { ratio: 0.2, k_neighbors: 2 };
    let synth = smote::oversample(&minority, n_major, &cfg, 0).unwrap();
    assert_eq!(minority.len() + synth.len(), sm["n_minority_after"].as_u64().unwrap() as usize);
    // A scorer with SMOTE has the larger target bank.
    let f = |m: &[Vec<f64>]| f32s(m);
    let s = KnnScorer::fit(&KnnConfig { smote: Some(cfg), ..Default::default() }, &f(&x[..n_major]), &f(&minority), 0)
        .unwrap();
    assert_eq!(s.target_len(), 6);
}

#[test]
fn train_scores_leave_each_clip_out() {
    let src: Vec<Vec<f32>> = vec![vec![1.0, 0.0], vec![0.9, 0.1], vec![0.0, 1.0]];
    let tgt: Vec<Vec<f32>> = vec![vec![0.7, 0.7], vec![0.6, 0.8]];
    let s = KnnScorer::fit(&KnnConfig::default(), &src, &tgt, 0).unwrap();
    let t = s.train_scores();
    assert_eq!(t.len(), 5);
    assert!(t.iter().all(|v| *v > 1e-6), "a clip matched itself: {t:?}");
}

fn rel_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * w.abs().max(1.0), "{what}[{i}]: {g} vs {w}\n got {got:?}\nwant {want:?}");
    }
}

mod zoo {
    use super::{common::*, rel_close};
    use asd::scoring::Fitted;
    use asd::scoring::gmm::{self, Covariance, GmmConfig};
    use asd::scoring::kmeans::lloyd;
    use asd::scoring::knn_rescale::{KnnRescale, KnnRescaleConfig, RescaleMetric};
    use asd::scoring::mahalanobis::{Mahalanobis, MahalanobisConfig};

    type Rows = Vec<Vec<f64>>;

    /// The fixture, and its source, target and test embeddings.
    fn data() -> (serde_json::Value, Rows, Rows, Rows) {
        let fx = json("backends/backends.json");
        let (s, t, x) = (matrix(&fx["source"]), matrix(&fx["target"]), matrix(&fx["test"]));
        (fx, s, t, x)
    }

    #[test]
    fn knn_with_local_density_rescaling_matches_asdkit() {
        let (fx, s, t, x) = data();
        for case in fx["knn_rescale"].as_array().unwrap() {
            let metric = if case["metric"] == "cosine" { RescaleMetric::Cosine } else { RescaleMetric::Euclidean };
            let cfg = KnnRescaleConfig {
                k: case["k"].as_u64().unwrap() as usize,
                k_ref: case["k_ref"].as_u64().unwrap() as usize,
                metric,
            };
            let got = KnnRescale::fit(&cfg, &s, &t).unwrap().score(&x);
            rel_close(&got, &f64s(&case["scores"]), 1e-9, &format!("knn_rescale {cfg:?}"));
        }
    }

    #[test]
    fn lloyd_iterations_match_sklearn_kmeans() {
        let (fx, s, _, _) = data();
        let init: Vec<Vec<f64>> = s[..3].to_vec();
        let (centers, _) = lloyd(&s, init, 300);
        let want = matrix(&fx["kmeans"]["centers"]);
        for (c, w) in centers.iter().zip(&want) {
            rel_close(c, w, 1e-12, "k-means centre");
        }
    }

    #[test]
    fn mahalanobis_and_selective_mahalanobis_match_sklearn_shrunk_covariance() {
        let (fx, s, t, x) = data();
        let m = &fx["mahalanobis"];
        let shrinkage = m["shrinkage"].as_f64().unwrap();
        let pooled = MahalanobisConfig { selective: false, shrinkage, normalize: false };
        let got = Mahalanobis::fit(&pooled, &s, &t).unwrap().score(&x);
        rel_close(&got, &f64s(&m["all"]), 1e-9, "mahalanobis, one Gaussian");
        let selective = MahalanobisConfig { selective: true, ..pooled };
        let got = Mahalanobis::fit(&selective, &s, &t).unwrap().score(&x);
        let want: Vec<f64> = f64s(&m["source"]).iter().zip(f64s(&m["target"])).map(|(a, b)| a.min(b)).collect();
        rel_close(&got, &want, 1e-9, "selective mahalanobis");
    }

    #[test]
    fn gmm_em_steps_match_sklearn_gaussian_mixture() {
        let (fx, s, t, x) = data();
        let g = &fx["gmm"];
        let train = [s, t].concat();
        for (kind, name) in [(Covariance::Diag, "diag"), (Covariance::Full, "full")] {
            // Initial covariances as matrices (diagonal ones for `diag`).
            let covs: Vec<Vec<Vec<f64>>> = g[name]["init_covariances"].as_array().unwrap().iter().map(matrix).collect();
            let init = gmm::components(&f64s(&g["weights_init"]), &matrix(&g["means_init"]), &covs, kind).unwrap();
            let cfg = GmmConfig {
                components: 3,
                covariance: kind,
                reg_covar: g["reg_covar"].as_f64().unwrap(),
                iterations: g["max_iter"].as_u64().unwrap() as usize,
                normalize: false,
            };
            let fitted = gmm::em(&train, init, &cfg).unwrap();
            let want: Vec<f64> = f64s(&g[name]["score_samples"]).iter().map(|v| -v).collect();
            rel_close(&gmm::nll(&x, &fitted), &want, 1e-9, &format!("gmm {name}"));
        }
    }
}
