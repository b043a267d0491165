//! `asd features`: writes what a model sees as a 2-D float32 `.npy`.

use crate::data::wav;
use crate::features::{EatLength, FbankPreset, FrontEnd, LogmelPreset};
use crate::util::Progress;
use crate::util::atomic::Batch;
use crate::util::npy;
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// Dual Branch CNN spectrum: |rfft(Hann · x)| of the clip fitted to --seconds, 1 × samples/2.
    Spectrum,
    /// Dual Branch CNN spectrogram: |STFT| 1024/512 Hann, no centring, minus its temporal mean.
    Spectrogram,
    /// librosa log-mel in dB (--preset nf_cdee, baseline or official_ae).
    Logmel,
    /// Kaldi fbank as the pretrained model sees it (--preset beats or eat).
    Fbank,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum PresetArg {
    /// log-mel n_fft 8192, hop 512, 256 mels.
    NfCdee,
    /// log-mel n_fft 1024, hop 512, 128 mels.
    Baseline,
    /// baseline with the official AE code's floor (f64 epsilon, not 1e-10).
    OfficialAe,
    /// BEATs: (fbank(x·2^15) − 15.41663) / (2·6.55582).
    Beats,
    /// EAT: fbank(x − mean) padded/cropped, then (f + 4.268) / (2·4.569).
    Eat,
}

#[derive(Debug, Args)]
#[command(
    about = "Compute model input features of wav clips and write them as float32 .npy (frames × bins)",
    long_about = "Compute model input features and write them as 2-D float32 .npy (frames × bins; a \
                  spectrum is 1 × bins), exactly what the model sees.\n\n\
                  --kind logmel --preset nf_cdee = librosa.power_to_db(librosa.feature.melspectrogram(\
                  y=x, sr=16000, n_fft=8192, hop_length=512, n_mels=256, power=2.0), ref=1.0, \
                  amin=1e-10, top_db=None).T (baseline: n_fft 1024, 128 mels; official_ae: baseline floored at \
                  the f64 epsilon as the official AE code does).\n\
                  --kind fbank --preset beats = (kaldi.fbank(x·2^15, 128 bins, 25/10 ms) − 15.41663) / \
                  (2·6.55582); --preset eat = EAT fbank padded/cropped to --eat-frames (or the next \
                  multiple of --eat-multiple-of), then (f + 4.268) / (2·4.569).\n\n\
                  --wav FILE --out FILE.npy, or --wav DIR --out DIR (every *.wav below DIR, one .npy \
                  per clip at the same relative path, computed in parallel)."
)]
pub struct FeaturesArgs {
    /// Which front-end.
    #[arg(long, value_enum)]
    pub kind: KindArg,
    /// Preset of the log-mel (nf_cdee, baseline, official_ae) or fbank (beats, eat) front-end.
    #[arg(long, value_enum)]
    pub preset: Option<PresetArg>,
    /// A wav file, or a folder searched recursively for *.wav.
    #[arg(long)]
    pub wav: PathBuf,
    /// The .npy file (for one wav) or the output folder (for a folder of wavs).
    #[arg(long)]
    pub out: PathBuf,
    /// Dual Branch CNN input length in seconds (spectrum, spectrogram).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f32,
    /// EAT: pad or crop the fbank to this many frames (EAT default 1024).
    #[arg(long)]
    pub eat_frames: Option<usize>,
    /// EAT: pad to the next multiple of this many frames instead (ASDKit: 32).
    #[arg(long, conflicts_with = "eat_frames")]
    pub eat_multiple_of: Option<usize>,
}

impl FeaturesArgs {
    fn frontend(&self) -> Result<FrontEnd> {
        let eat_opts = self.eat_frames.is_some() || self.eat_multiple_of.is_some();
        let fe = match (self.kind, self.preset) {
            (KindArg::Spectrum, None) => FrontEnd::Spectrum { seconds: self.seconds },
            (KindArg::Spectrogram, None) => FrontEnd::Spectrogram { seconds: self.seconds },
            (KindArg::Spectrum | KindArg::Spectrogram, Some(p)) => {
                bail!("--preset {p:?} does not apply to --kind {:?}", self.kind)
            }
            (KindArg::Logmel, Some(PresetArg::NfCdee)) => FrontEnd::Logmel { preset: LogmelPreset::NfCdee },
            (KindArg::Logmel, Some(PresetArg::Baseline)) => FrontEnd::Logmel { preset: LogmelPreset::Baseline },
            (KindArg::Logmel, Some(PresetArg::OfficialAe)) => FrontEnd::Logmel { preset: LogmelPreset::OfficialAe },
            (KindArg::Logmel, _) => {
                bail!("--kind logmel needs --preset nf_cdee, --preset baseline or --preset official_ae")
            }
            (KindArg::Fbank, Some(PresetArg::Beats)) => {
                FrontEnd::Fbank { preset: FbankPreset::Beats, eat_length: None }
            }
            (KindArg::Fbank, Some(PresetArg::Eat)) => {
                let eat_length = match (self.eat_frames, self.eat_multiple_of) {
                    (Some(n), _) => EatLength::Fixed(n),
                    (_, Some(m)) => EatLength::RoundUp(m),
                    _ => EatLength::default(),
                };
                FrontEnd::Fbank { preset: FbankPreset::Eat, eat_length: Some(eat_length) }
            }
            (KindArg::Fbank, _) => bail!("--kind fbank needs --preset beats or --preset eat"),
        };
        if eat_opts && !matches!(fe, FrontEnd::Fbank { preset: FbankPreset::Eat, .. }) {
            bail!("--eat-frames / --eat-multiple-of only apply to --kind fbank --preset eat");
        }
        fe.validate()?;
        Ok(fe)
    }
}

fn one(fe: &FrontEnd, wav_path: &Path, out: &Path) -> Result<(usize, usize)> {
    let x = wav::load(wav_path)?;
    let f = fe.compute(&x).with_context(|| format!("cannot compute features of {}", wav_path.display()))?;
    npy::write(out, &f.data, &[f.rows, f.cols])?;
    Ok((f.rows, f.cols))
}

pub fn run(a: FeaturesArgs, quiet: bool) -> Result<()> {
    let fe = a.frontend()?;
    let jobs = match super::npy_jobs(&a.wav, &a.out)? {
        super::NpyJobs::Single(wav, out) => {
            let (rows, cols) = one(&fe, &wav, &out)?;
            if !quiet {
                eprintln!("wrote {} ({rows} × {cols}, float32)", out.display());
            }
            return Ok(());
        }
        super::NpyJobs::Folder(jobs) => jobs,
    };
    // A folder is converted whole or not at all: one bad clip leaves no
    // half-converted mirror behind.
    let bar = Progress::new(jobs.len() as u64, "features", quiet);
    let batch = Batch::new();
    jobs.par_iter().try_for_each(|(wav, out)| -> Result<()> {
        one(&fe, wav, &batch.stage(out))?;
        bar.inc(1);
        Ok(())
    })?;
    batch.commit()?;
    bar.finish();
    if !quiet {
        eprintln!("wrote {} feature files ({}) under {}", jobs.len(), fe.to_json(), a.out.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: FeaturesArgs,
    }

    fn parse(args: &str) -> Result<FrontEnd> {
        let t = T::try_parse_from(format!("x --wav w --out o {args}").split_whitespace())?;
        t.a.frontend()
    }

    #[test]
    fn kinds_and_presets() {
        assert_eq!(parse("--kind logmel --preset nf_cdee").unwrap(), FrontEnd::Logmel { preset: LogmelPreset::NfCdee });
        assert_eq!(parse("--kind spectrum").unwrap(), FrontEnd::Spectrum { seconds: 10.0 });
        assert_eq!(
            parse("--kind logmel --preset official_ae").unwrap(),
            FrontEnd::Logmel { preset: LogmelPreset::OfficialAe }
        );
        assert_eq!(
            parse("--kind fbank --preset eat --eat-multiple-of 32").unwrap(),
            FrontEnd::Fbank { preset: FbankPreset::Eat, eat_length: Some(EatLength::RoundUp(32)) }
        );
        for bad in [
            "--kind logmel",
            "--kind logmel --preset beats",
            "--kind fbank --preset nf_cdee",
            "--kind spectrum --preset beats",
            "--kind fbank --preset beats --eat-frames 10",
            "--kind fbank --preset eat --eat-frames 10 --eat-multiple-of 32",
            "--kind spectrogram --seconds 0",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn folder_mode_mirrors_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in");
        wav::write_pcm16(&src.join("a.wav"), &vec![0.1; 3000]).unwrap();
        wav::write_pcm16(&src.join("sub/b.wav"), &vec![-0.1; 5000]).unwrap();
        let out = dir.path().join("out");
        let t = T::try_parse_from([
            "x",
            "--kind",
            "fbank",
            "--preset",
            "beats",
            "--wav",
            src.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .unwrap();
        run(t.a, true).unwrap();
        let (_, sa) = npy::read(&out.join("a.npy")).unwrap();
        let (_, sb) = npy::read(&out.join("sub/b.npy")).unwrap();
        assert_eq!(sa, vec![17, 128]);
        assert_eq!(sb, vec![29, 128]);
    }
}
