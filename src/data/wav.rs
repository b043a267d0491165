//! Wav input and output (hound).
//!
//! Accepted: PCM integer 16/24/32 bit and IEEE float 32 bit, any channel
//! count (down-mixed by averaging the channels), 16 kHz only. Other rates are
//! an error rather than a silent resample: every front-end of the system is
//! defined at 16 kHz, and a hidden resampler would change the features.
//! Integer samples are scaled to [-1, 1) by 2^(bits-1), as soundfile and
//! torchaudio do (`int16 / 32768`).
//!
//! Length policy ([`fit_length`]): models with a fixed input (the Dual Branch
//! CNN's 10 s) keep the first N samples of longer clips (the 12 s clips lose
//! their last 2 s) and zero-pad shorter clips at the end. Zero padding is what
//! the spectral front-ends of the reference models see as silence; cropping at
//! the start keeps scoring deterministic.

use anyhow::{Context, Result, bail};
use std::path::Path;

/// The one sample rate of DCASE 2024 Task 2.
pub const SAMPLE_RATE: u32 = 16_000;

/// Loads a wav file as mono f32 samples at 16 kHz.
pub fn load(path: &Path) -> Result<Vec<f32>> {
    load_inner(path).with_context(|| format!("cannot load audio {}", path.display()))
}

fn load_inner(path: &Path) -> Result<Vec<f32>> {
    let meta = std::fs::metadata(path).context("file not found or unreadable")?;
    if meta.is_dir() {
        bail!("it is a folder, not a wav file");
    }
    if meta.len() == 0 {
        bail!("the file is empty");
    }
    let mut reader = hound::WavReader::open(path).map_err(describe)?;
    let spec = reader.spec();
    if spec.sample_rate != SAMPLE_RATE {
        bail!(
            "sample rate is {} Hz, expected {SAMPLE_RATE} Hz (resample it first, e.g. \
             `sox in.wav -r 16000 out.wav`)",
            spec.sample_rate
        );
    }
    let channels = spec.channels as usize;
    if channels == 0 {
        bail!("the header declares 0 channels");
    }
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, bits @ (16 | 24 | 32)) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f64;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| (v as f64 * scale) as f32))
                .collect::<std::result::Result<_, _>>()
                .map_err(describe)?
        }
        (hound::SampleFormat::Float, 32) => {
            reader.samples::<f32>().collect::<std::result::Result<_, _>>().map_err(describe)?
        }
        (hound::SampleFormat::Int, 8) => {
            bail!("8-bit PCM is not supported (use 16/24/32-bit integer or 32-bit float PCM)")
        }
        (fmt, bits) => bail!(
            "unsupported sample format {fmt:?} with {bits} bits (use 16/24/32-bit integer or \
             32-bit float PCM)"
        ),
    };
    if interleaved.is_empty() {
        bail!("the file holds no audio samples");
    }
    if !interleaved.len().is_multiple_of(channels) {
        bail!("the data is truncated mid-frame");
    }
    let mono: Vec<f32> = if channels == 1 {
        interleaved
    } else {
        let inv = 1.0 / channels as f32;
        interleaved.chunks_exact(channels).map(|f| f.iter().sum::<f32>() * inv).collect()
    };
    if let Some(i) = mono.iter().position(|v| !v.is_finite()) {
        bail!("sample {i} is not a finite number");
    }
    Ok(mono)
}

fn describe(e: hound::Error) -> anyhow::Error {
    match e {
        hound::Error::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            anyhow::anyhow!("the file is truncated (unexpected end of data)")
        }
        hound::Error::FormatError(m) => anyhow::anyhow!("not a valid wav file: {m}"),
        hound::Error::IoError(io) if io.to_string().contains("enough bytes") => {
            anyhow::anyhow!("the file is truncated (header or data cut short)")
        }
        hound::Error::Unsupported => anyhow::anyhow!("unsupported wav variant"),
        other => anyhow::anyhow!("{other}"),
    }
}

/// How [`fit_length`] fills clips shorter than the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PadMode {
    /// Zeros at the end.
    #[default]
    Zeros,
    /// Repeat the clip from its start (as Wilkinghoff's DCASE 2023 system tiles clips).
    Repeat,
}

/// Crops (keeping the first `n` samples) or pads a clip to exactly `n` samples.
pub fn fit_length(x: &[f32], n: usize, pad: PadMode) -> Vec<f32> {
    if x.len() >= n {
        return x[..n].to_vec();
    }
    match pad {
        PadMode::Zeros => {
            let mut y = x.to_vec();
            y.resize(n, 0.0);
            y
        }
        PadMode::Repeat if !x.is_empty() => x.iter().copied().cycle().take(n).collect(),
        PadMode::Repeat => vec![0.0; n],
    }
}

/// Every `*.wav` file below `dir` (recursively), sorted, as paths relative to `dir`.
pub fn files_below(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))? {
            let p = e.with_context(|| format!("cannot list {}", d.display()))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("wav")) {
                out.push(p.strip_prefix(dir).expect("below dir").to_path_buf());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Writes mono samples as 16-bit PCM at 16 kHz, atomically. Values are
/// clipped to [-1, 1] and rounded (`round(x * 32767)`).
pub fn write_pcm16(path: &Path, samples: &[f32]) -> Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut bytes = std::io::Cursor::new(Vec::with_capacity(44 + 2 * samples.len()));
    {
        let mut w = hound::WavWriter::new(&mut bytes, spec)?;
        let mut w16 = w.get_i16_writer(samples.len() as u32);
        for &s in samples {
            w16.write_sample((s.clamp(-1.0, 1.0) * 32767.0).round() as i16);
        }
        w16.flush()?;
        w.finalize()?;
    }
    crate::util::atomic::write_bytes(path, &bytes.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_spec(path: &Path, spec: hound::WavSpec, frames: &[Vec<f64>]) {
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for frame in frames {
            for &v in frame {
                match (spec.sample_format, spec.bits_per_sample) {
                    (hound::SampleFormat::Float, _) => w.write_sample(v as f32).unwrap(),
                    (_, bits) => w.write_sample((v * (1i64 << (bits - 1)) as f64) as i32).unwrap(),
                }
            }
        }
        w.finalize().unwrap();
    }

    fn spec(bits: u16, float: bool, ch: u16, rate: u32) -> hound::WavSpec {
        hound::WavSpec {
            channels: ch,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: if float { hound::SampleFormat::Float } else { hound::SampleFormat::Int },
        }
    }

    #[test]
    fn every_supported_format_loads_to_the_same_values() {
        let dir = tempfile::tempdir().unwrap();
        let frames: Vec<Vec<f64>> = vec![vec![0.5], vec![-0.25], vec![0.0], vec![-1.0]];
        for (bits, float) in [(16, false), (24, false), (32, false), (32, true)] {
            let p = dir.path().join(format!("x{bits}{float}.wav"));
            write_spec(&p, spec(bits, float, 1, 16000), &frames);
            let y = load(&p).unwrap();
            assert_eq!(y, vec![0.5, -0.25, 0.0, -1.0], "{bits} bit float={float}");
        }
    }

    #[test]
    fn stereo_is_downmixed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("st.wav");
        write_spec(&p, spec(16, false, 2, 16000), &[vec![0.5, 0.0], vec![-0.5, -0.25]]);
        assert_eq!(load(&p).unwrap(), vec![0.25, -0.375]);
    }

    fn err_of(p: &Path) -> String {
        format!("{:#}", load(p).unwrap_err())
    }

    #[test]
    fn bad_files_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ok = d.join("ok.wav");
        write_pcm16(&ok, &vec![0.1; 1000]).unwrap();
        let bytes = std::fs::read(&ok).unwrap();

        let empty = d.join("empty.wav");
        std::fs::write(&empty, b"").unwrap();
        assert!(err_of(&empty).contains("empty.wav") && err_of(&empty).contains("empty"));

        let trunc_header = d.join("trunc_header.wav");
        std::fs::write(&trunc_header, &bytes[..20]).unwrap();
        let e = err_of(&trunc_header);
        assert!(e.contains("trunc_header.wav") && (e.contains("truncated") || e.contains("not a valid wav")), "{e}");

        let trunc_data = d.join("trunc_data.wav");
        std::fs::write(&trunc_data, &bytes[..bytes.len() - 501]).unwrap();
        let e = err_of(&trunc_data);
        assert!(e.contains("trunc_data.wav") && e.contains("truncated"), "{e}");

        let text = d.join("notes.wav");
        std::fs::write(&text, b"this is not audio at all, just some text").unwrap();
        let e = err_of(&text);
        assert!(e.contains("notes.wav") && e.contains("not a valid wav"), "{e}");

        let eight = d.join("eight.wav");
        let mut w = hound::WavWriter::create(&eight, spec(8, false, 1, 16000)).unwrap();
        for _ in 0..10 {
            w.write_sample(3i8).unwrap();
        }
        w.finalize().unwrap();
        assert!(err_of(&eight).contains("8-bit PCM is not supported"));

        let rate = d.join("rate.wav");
        write_spec(&rate, spec(16, false, 1, 44100), &[vec![0.1]]);
        assert!(err_of(&rate).contains("44100 Hz, expected 16000 Hz"));

        let missing = d.join("missing.wav");
        assert!(err_of(&missing).contains("missing.wav"));

        let nan = d.join("nan.wav");
        write_spec(&nan, spec(32, true, 1, 16000), &[vec![0.0], vec![f64::NAN]]);
        assert!(err_of(&nan).contains("sample 1 is not a finite number"));
    }

    #[test]
    fn pcm16_round_trip_and_length_policy() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rt.wav");
        let x: Vec<f32> = (0..100).map(|i| (i as f32 / 50.0) - 1.0).collect();
        write_pcm16(&p, &x).unwrap();
        let y = load(&p).unwrap();
        // Written as round(x * 32767), read as int16 / 32768 (the soundfile convention).
        assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() <= 2.0 / 32768.0));
        assert_eq!(fit_length(&[1.0, 2.0, 3.0], 2, PadMode::Zeros), vec![1.0, 2.0]);
        assert_eq!(fit_length(&[1.0, 2.0], 5, PadMode::Zeros), vec![1.0, 2.0, 0.0, 0.0, 0.0]);
        assert_eq!(fit_length(&[1.0, 2.0], 5, PadMode::Repeat), vec![1.0, 2.0, 1.0, 2.0, 1.0]);
    }
}
