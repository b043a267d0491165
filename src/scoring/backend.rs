//! The back-end plug-in seam: an experiment's `scoring.backend` picks how
//! embeddings become anomaly scores, fitted on one machine type's training
//! clips only. Every back-end also scores the training clips (left out of
//! their own fit where the method allows), which calibration, decision
//! thresholds and back-end fusion use.

use super::gmm::{Gmm, GmmConfig};
use super::kmeans::{KmeansKnn, KmeansKnnConfig};
use super::knn::{KnnConfig, KnnScorer, check_training, znorm_with};
use super::knn_rescale::{KnnRescale, KnnRescaleConfig};
use super::mahalanobis::{Mahalanobis, MahalanobisConfig};
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// A back-end fitted on one machine type's training embeddings.
pub trait Fitted: Send + Sync {
    /// Anomaly scores of test embeddings (higher is more anomalous).
    fn score(&self, test: &[Vec<f64>]) -> Vec<f64>;
    /// Scores of the training clips: source clips, then target clips.
    fn train_scores(&self) -> Vec<f64>;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BackendConfig {
    /// kNN with source and target banks, configured by `scoring.knn`.
    Knn(KnnFromScoring),
    /// kNN over all clips with local-density rescaling (no domain labels).
    KnnRescale(KnnRescaleConfig),
    /// kNN against k-means centres of each domain (`scoring.knn` settings).
    KmeansKnn(KmeansKnnConfig),
    /// (Selective) Mahalanobis distance.
    Mahalanobis(MahalanobisConfig),
    /// Gaussian mixture negative log-likelihood.
    Gmm(GmmConfig),
    /// Several back-ends, each z-normalised by its training-clip scores, combined.
    Fusion(FusionConfig),
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig::Knn(KnnFromScoring {})
    }
}

/// The `knn` back-end has no fields of its own: its settings are
/// `scoring.knn`, and a field given here (`{"kind": "knn", "k": 3}`) is an
/// error rather than silently ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KnnFromScoring {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusionConfig {
    pub members: Vec<BackendConfig>,
    #[serde(default)]
    pub combine: Combine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// The mean of the z-normalised scores.
    #[default]
    Mean,
    /// The smallest z-normalised score (normal if any back-end says so).
    Min,
}

impl BackendConfig {
    pub fn validate(&self) -> Result<()> {
        match self {
            BackendConfig::Fusion(f) if f.members.len() < 2 => bail!("backend fusion needs at least 2 members"),
            BackendConfig::Fusion(f) => f.members.iter().try_for_each(BackendConfig::validate),
            BackendConfig::Mahalanobis(m) => m.validate(),
            _ => Ok(()),
        }
    }

    /// Fits the back-end on one machine type's training embeddings. `seed`
    /// drives SMOTE and k-means.
    pub fn fit(&self, knn: &KnnConfig, source: &[Vec<f32>], target: &[Vec<f32>], seed: u64) -> Result<Box<dyn Fitted>> {
        check_training(source, target)?;
        let wide = |rows: &[Vec<f32>]| -> Vec<Vec<f64>> {
            rows.iter().map(|r| r.iter().map(|&v| v as f64).collect()).collect()
        };
        let (s, t) = (wide(source), wide(target));
        Ok(match self {
            BackendConfig::Knn(_) => Box::new(KnnScorer::fit(knn, source, target, seed)?),
            BackendConfig::KnnRescale(c) => Box::new(KnnRescale::fit(c, &s, &t)?),
            BackendConfig::KmeansKnn(c) => Box::new(KmeansKnn::fit(c, knn, &s, &t, seed)?),
            BackendConfig::Mahalanobis(c) => Box::new(Mahalanobis::fit(c, &s, &t)?),
            BackendConfig::Gmm(c) => Box::new(Gmm::fit(c, &s, &t, seed)?),
            BackendConfig::Fusion(f) => {
                let members = f
                    .members
                    .iter()
                    .enumerate()
                    .map(|(i, m)| m.fit(knn, source, target, seed ^ (i as u64 + 1)))
                    .collect::<Result<Vec<_>>>()?;
                Box::new(Fusion::new(members, f.combine))
            }
        })
    }
}

/// Scores test embeddings (checked for NaN) with a fitted back-end.
pub fn score(fitted: &dyn Fitted, test: &[Vec<f32>]) -> Result<Vec<f64>> {
    if test.iter().flatten().any(|v| !v.is_finite()) {
        bail!("test embeddings contain NaN or infinite values");
    }
    let t: Vec<Vec<f64>> = test.iter().map(|r| r.iter().map(|&v| v as f64).collect()).collect();
    Ok(fitted.score(&t))
}

/// Back-end fusion: each member's scores standardised by the mean and
/// standard deviation of its own training-clip scores, then combined.
struct Fusion {
    members: Vec<(Box<dyn Fitted>, f64, f64)>,
    combine: Combine,
    train: Vec<f64>,
}

impl Fusion {
    fn new(members: Vec<Box<dyn Fitted>>, combine: Combine) -> Fusion {
        let mut train_z = Vec::new();
        let members: Vec<(Box<dyn Fitted>, f64, f64)> = members
            .into_iter()
            .map(|m| {
                let t = m.train_scores();
                // Statistics of the finite scores: a clip without a
                // leave-one-out fit scores +inf and must not poison them.
                let mut finite: Vec<f64> = t.iter().copied().filter(|v| v.is_finite()).collect();
                let (mean, std) = znorm_with(&mut finite);
                train_z.push(t.iter().map(|v| (v - mean) / std).collect());
                (m, mean, std)
            })
            .collect();
        let train = combine_rows(&train_z, combine);
        Fusion { members, combine, train }
    }
}

fn combine_rows(z: &[Vec<f64>], combine: Combine) -> Vec<f64> {
    (0..z[0].len())
        .map(|i| {
            let col = z.iter().map(|m| m[i]);
            match combine {
                Combine::Mean => col.sum::<f64>() / z.len() as f64,
                Combine::Min => col.fold(f64::INFINITY, f64::min),
            }
        })
        .collect()
}

impl Fitted for Fusion {
    fn score(&self, test: &[Vec<f64>]) -> Vec<f64> {
        let z: Vec<Vec<f64>> = self
            .members
            .iter()
            .map(|(m, mean, std)| m.score(test).into_iter().map(|v| (v - mean) / std).collect())
            .collect();
        combine_rows(&z, self.combine)
    }

    fn train_scores(&self) -> Vec<f64> {
        self.train.clone()
    }
}

impl Fitted for KnnScorer {
    fn score(&self, test: &[Vec<f64>]) -> Vec<f64> {
        let t: Vec<Vec<f32>> = test.iter().map(|r| r.iter().map(|&v| v as f32).collect()).collect();
        KnnScorer::score(self, &t).expect("inputs checked when fitting").score
    }

    fn train_scores(&self) -> Vec<f64> {
        KnnScorer::train_scores(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_parse_strictly_and_fusion_standardises_its_members() {
        let c: BackendConfig = serde_json::from_str(
            r#"{"kind": "fusion", "combine": "min", "members": [{"kind": "knn"}, {"kind": "mahalanobis", "shrinkage": 0.5}]}"#,
        )
        .unwrap();
        c.validate().unwrap();
        assert!(serde_json::from_str::<BackendConfig>(r#"{"kind": "mahalanobis", "shrink": 0.5}"#).is_err());
        assert!(serde_json::from_str::<BackendConfig>(r#"{"kind": "isolation_forest"}"#).is_err());
        // kNN's settings live in scoring.knn: a field here is refused, not ignored.
        assert!(serde_json::from_str::<BackendConfig>(r#"{"kind": "knn", "k": 3}"#).is_err());
        assert_eq!(serde_json::to_string(&BackendConfig::default()).unwrap(), r#"{"kind":"knn"}"#);
        let lone: BackendConfig = serde_json::from_str(r#"{"kind": "fusion", "members": [{"kind": "knn"}]}"#).unwrap();
        assert!(lone.validate().is_err());

        let rows = |n: usize, off: f32| -> Vec<Vec<f32>> {
            (0..n).map(|i| vec![1.0 + off, (i as f32 * 0.7).sin() * 0.3, (i as f32 * 1.3).cos() * 0.3]).collect()
        };
        let fitted = c.fit(&KnnConfig::default(), &rows(12, 0.0), &rows(4, 0.5), 3).unwrap();
        let train = fitted.train_scores();
        assert_eq!(train.len(), 16);
        let far = score(fitted.as_ref(), &[vec![-1.0, 0.0, 0.0]]).unwrap()[0];
        assert!(far > train.iter().copied().fold(f64::NEG_INFINITY, f64::max), "{far} vs {train:?}");
        assert!(score(fitted.as_ref(), &[vec![f32::NAN, 0.0, 0.0]]).is_err());
    }
}
