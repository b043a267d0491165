//! The front-end of a model as it appears in experiment JSON.
//!
//! ```json
//! {"kind": "spectrum", "seconds": 10.0}        // Dual Branch CNN, spectrum branch: 1 × 80000
//! {"kind": "spectrogram", "seconds": 10.0}     // Dual Branch CNN, spectrogram branch: 311 × 513
//! {"kind": "logmel", "preset": "nf_cdee"}      // NF-CDEE: frames × 256 dB
//! {"kind": "fbank", "preset": "beats"}         // BEATs input: frames × 128
//! {"kind": "fbank", "preset": "eat", "eat_length": {"round_up": 32}}  // EAT input
//! ```
//!
//! Every front-end maps one clip to one [`Frames`] (what `asd features`
//! writes), so each can be cached on its own ([`super::cache`]). The Dual
//! Branch CNN uses two of them (`spectrum` and `spectrogram` with the same
//! `seconds`), or [`super::spectrum::dual_branch_input`] directly.

use super::Frames;
use super::fbank::{EatLength, FbankPreset, beats_input, eat_input};
use super::mel::LogmelPreset;
use super::spectrum::{samples_for, spectrogram_input, spectrum_input};
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

fn ten_seconds() -> f32 {
    10.0
}

/// One model front-end (see module docs for the JSON form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FrontEnd {
    /// Hann-windowed magnitude spectrum of the clip fitted to `seconds`.
    Spectrum {
        #[serde(default = "ten_seconds")]
        seconds: f32,
    },
    /// Mean-normalised magnitude STFT (1024/512, Hann) of the clip fitted to `seconds`.
    Spectrogram {
        #[serde(default = "ten_seconds")]
        seconds: f32,
    },
    /// librosa log-mel in dB.
    Logmel { preset: LogmelPreset },
    /// Kaldi fbank after the pretrained model's normalisation (and, for EAT,
    /// padding to `eat_length`, default 1024 frames).
    Fbank {
        preset: FbankPreset,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        eat_length: Option<EatLength>,
    },
}

impl FrontEnd {
    /// Checks the parameters (called by [`FrontEnd::compute`]).
    pub fn validate(&self) -> Result<()> {
        match self {
            FrontEnd::Spectrum { seconds } | FrontEnd::Spectrogram { seconds } => {
                samples_for(*seconds)?;
            }
            FrontEnd::Logmel { .. } => {}
            FrontEnd::Fbank { preset, eat_length } => match (preset, eat_length) {
                (FbankPreset::Beats, Some(_)) => {
                    bail!("\"eat_length\" only applies to the \"eat\" fbank preset")
                }
                (FbankPreset::Eat, Some(l)) => {
                    l.target(1)?;
                }
                _ => {}
            },
        }
        Ok(())
    }

    /// The model input for one 16 kHz clip.
    pub fn compute(&self, wav: &[f32]) -> Result<Frames> {
        self.validate()?;
        match self {
            FrontEnd::Spectrum { seconds } => spectrum_input(wav, samples_for(*seconds)?),
            FrontEnd::Spectrogram { seconds } => spectrogram_input(wav, samples_for(*seconds)?),
            FrontEnd::Logmel { preset } => preset.extractor().compute(wav),
            FrontEnd::Fbank { preset: FbankPreset::Beats, .. } => beats_input(wav),
            FrontEnd::Fbank { preset: FbankPreset::Eat, eat_length } => eat_input(wav, eat_length.unwrap_or_default()),
        }
    }

    /// Stable JSON text of this configuration (the cache key input).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("front-end config serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_forms() {
        let cases = [
            (r#"{"kind":"logmel","preset":"nf_cdee"}"#, FrontEnd::Logmel { preset: LogmelPreset::NfCdee }),
            (r#"{"kind":"fbank","preset":"beats"}"#, FrontEnd::Fbank { preset: FbankPreset::Beats, eat_length: None }),
            (
                r#"{"kind":"fbank","preset":"eat","eat_length":{"round_up":32}}"#,
                FrontEnd::Fbank { preset: FbankPreset::Eat, eat_length: Some(EatLength::RoundUp(32)) },
            ),
            (r#"{"kind":"spectrum","seconds":10.0}"#, FrontEnd::Spectrum { seconds: 10.0 }),
            (r#"{"kind":"spectrogram","seconds":10.0}"#, FrontEnd::Spectrogram { seconds: 10.0 }),
        ];
        for (text, value) in cases {
            let parsed: FrontEnd = serde_json::from_str(text).unwrap();
            assert_eq!(parsed, value, "{text}");
            assert_eq!(parsed.to_json(), text);
        }
        let d: FrontEnd = serde_json::from_str(r#"{"kind":"spectrogram"}"#).unwrap();
        assert_eq!(d, FrontEnd::Spectrogram { seconds: 10.0 });
        for bad in [
            r#"{"kind":"logmel","preset":"nf_cdee","n_fft":512}"#,
            r#"{"kind":"logmel","preset":"beats"}"#,
            r#"{"kind":"mfcc"}"#,
        ] {
            assert!(serde_json::from_str::<FrontEnd>(bad).is_err(), "{bad}");
        }
        let beats_with_len = FrontEnd::Fbank { preset: FbankPreset::Beats, eat_length: Some(EatLength::Fixed(3)) };
        assert!(beats_with_len.compute(&[0.0; 16000]).is_err());
    }

    #[test]
    fn compute_shapes() {
        let x = vec![0.01f32; 160_000];
        let shape = |j: &str| {
            let f: FrontEnd = serde_json::from_str(j).unwrap();
            let out = f.compute(&x).unwrap();
            (out.rows, out.cols)
        };
        assert_eq!(shape(r#"{"kind":"spectrum"}"#), (1, 80_000));
        assert_eq!(shape(r#"{"kind":"spectrogram"}"#), (311, 513));
        assert_eq!(shape(r#"{"kind":"logmel","preset":"baseline"}"#), (313, 128));
        assert_eq!(shape(r#"{"kind":"fbank","preset":"beats"}"#), (998, 128));
        assert_eq!(shape(r#"{"kind":"fbank","preset":"eat"}"#), (1024, 128));
    }
}
