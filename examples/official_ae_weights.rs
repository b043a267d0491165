//! Scores one machine type with a model trained by the official AE baseline
//! code, through this project's features and scores, and prints the
//! official metrics of both scores: a check that a gap between our AE and
//! the official one comes from training, not from features or scoring.
//!
//! ```text
//! cargo build --example official_ae_weights
//! target/debug/examples/official_ae_weights \
//!     'OFFICIAL_RUN/models/saved_model/baseline/DCASE2023T2-AE_DCASE2024T2bearing_id(0_)_seed13711.pth' \
//!     DATA_ROOT/dev_data/raw/bearing
//! ```
//!
//! The covariances are refitted on the folder's training clips (the saved
//! `cov_source` / `cov_target` are ignored, as `load_official` documents).

use asd::data::naming::{ClipName, Domain};
use asd::features::Frames;
use asd::features::frontend::FrontEnd;
use asd::features::mel::LogmelPreset;
use asd::metrics::official::{MachineInput, machine_metrics};
use asd::models::ModelSpec;
use asd::models::official_ae::{AeBatch, OfficialAeConfig, load_official};
use asd::models::spec::BatchContext;
use burn::tensor::Device;
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, pth, dir] = args.as_slice() else {
        anyhow::bail!("usage: official_ae_weights MODEL.pth MACHINE_FOLDER (with train/ and test/)");
    };
    let cfg = OfficialAeConfig::default();
    let dev = Device::flex();
    let model = load_official(&cfg, Path::new(pth), &dev)?;
    let frontend = FrontEnd::Logmel { preset: LogmelPreset::OfficialAe };
    let clips = |split: &str| -> anyhow::Result<Vec<(ClipName, Vec<Frames>)>> {
        let folder = Path::new(dir).join(split);
        let mut paths = asd::data::wav::files_below(&folder)?;
        paths.sort();
        paths
            .into_iter()
            .map(|p| {
                let p = folder.join(p);
                let name = ClipName::parse(&p.file_name().unwrap_or_default().to_string_lossy())?;
                let x = asd::data::wav::load(&p)?;
                Ok((name, ModelSpec::fit(&cfg, vec![frontend.compute(&x)?])?))
            })
            .collect()
    };
    let (train, test) = (clips("train")?, clips("test")?);
    let ctx = BatchContext { labels: None, specaugment: None, seed: 0 };
    let batch =
        |c: &[(ClipName, Vec<Frames>)]| ModelSpec::batch(&cfg, c.iter().map(|x| x.1.clone()).collect(), &ctx, &dev);
    let train_batches: Vec<(AeBatch, Vec<Domain>)> = train
        .chunks(16)
        .map(|c| Ok((batch(c)?, c.iter().map(|x| x.0.domain.unwrap_or(Domain::Source)).collect())))
        .collect::<anyhow::Result<_>>()?;
    let is_anomaly: Vec<bool> = test.iter().map(|x| x.0.label == Some(asd::data::Label::Anomaly)).collect();
    let is_target: Vec<bool> = test.iter().map(|x| x.0.domain == Some(Domain::Target)).collect();
    for score in ["mse", "selective_mahalanobis"] {
        let fitted = cfg.fit_score(model.clone(), score, &mut train_batches.clone().into_iter().map(Ok))?;
        let mut scores = Vec::new();
        for c in test.chunks(16) {
            scores.extend(fitted.scores(&batch(c)?));
        }
        let input = MachineInput { is_anomaly: &is_anomaly, is_target: &is_target, scores: &scores, decisions: None };
        let r = machine_metrics(&input)?;
        println!("{score:<22} AUC-s {:.4}  AUC-t {:.4}  pAUC {:.4}", r.auc_source, r.auc_target, r.pauc);
    }
    Ok(())
}
