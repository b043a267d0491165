//! Front-end parity with the Python reference libraries on clips the code
//! never saw (`tests/fixtures/frontend/`, made by
//! `tests/fixtures/gen/frontend_refs.py` with librosa 0.11 / torchaudio 2.11,
//! and `tests/fixtures/shared/fbank/` from torchaudio 2.11).
//!
//! Run with `--nocapture` to see max / mean absolute differences per tensor.
//! Tolerances, and why:
//! - log-mel (dB): ≤ 1e-3 dB max (the issue asks 0.01 dB). The reference
//!   computes its FFT in f64 like we do; it agrees with an all-f64 pipeline
//!   to 1.4e-5 dB.
//! - Kaldi fbank: torchaudio runs in f32 and its own error vs an f64
//!   pipeline (ours) reaches ~1.5e-3 (BEATs, log domain) and 4.5e-3 (EAT,
//!   low-energy bins where the log is steep). Raw BEATs ≤ 2e-3 max / 1e-4 mean;
//!   normalised BEATs ≤ 1e-3 max (the target; the divisor is 13.1);
//!   EAT ≤ 5e-3 max / 1e-4 mean (raw), same ÷ 9.138 normalised.
//! - Spectrum and STFT magnitudes: ≤ 1e-5 × the largest reference value. The
//!   spectrum reference is f64 (ours too); the STFT reference is torch f32,
//!   whose FFT rounding is ~1e-7 × peak.

use asd::data::wav;
use asd::features::fbank::{self, EatLength, FbankPreset};
use asd::features::mel::LogmelPreset;
use asd::features::{Frames, spectrum};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Reference tensors: name → (data, shape).
type Refs = BTreeMap<String, (Vec<f32>, Vec<usize>)>;

/// All f32 tensors of a safetensors file.
fn load_refs(path: &Path) -> Refs {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            continue;
        }
        let data = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        out.insert(name, (data, view.shape().to_vec()));
    }
    out
}

struct Diff {
    max_abs: f64,
    mean_abs: f64,
    peak: f64,
}

fn diff(name: &str, ours: &Frames, reference: &(Vec<f32>, Vec<usize>)) -> Diff {
    let (data, shape) = reference;
    let rows = shape[..shape.len() - 1].iter().product::<usize>();
    let cols = *shape.last().unwrap();
    assert_eq!((ours.rows, ours.cols), (rows, cols), "{name}: shape");
    let (mut max_abs, mut sum, mut peak) = (0.0f64, 0.0f64, 0.0f64);
    for (&a, &b) in ours.data.iter().zip(data) {
        let d = (a as f64 - b as f64).abs();
        max_abs = max_abs.max(d);
        sum += d;
        peak = peak.max((b as f64).abs());
    }
    let d = Diff { max_abs, mean_abs: sum / data.len() as f64, peak };
    eprintln!(
        "{name:<42} {rows:>5}x{cols:<6} max|d| {:.3e}  mean|d| {:.3e}  peak {:.3e}",
        d.max_abs, d.mean_abs, d.peak
    );
    d
}

fn frontend_clips() -> Vec<(String, Vec<f32>, Refs)> {
    let dir = fixtures().join("frontend");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "safetensors").then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    assert!(names.len() >= 4, "expected the 4 reference clips in {}", dir.display());
    names
        .into_iter()
        .map(|n| {
            let x = wav::load(&dir.join(format!("{n}.wav"))).unwrap();
            let refs = load_refs(&dir.join(format!("{n}.safetensors")));
            (n, x, refs)
        })
        .collect()
}

#[test]
fn logmel_matches_librosa() {
    let mut checked = 0;
    for (clip, x, refs) in frontend_clips() {
        for (key, preset) in [("logmel_nf_cdee", LogmelPreset::NfCdee), ("logmel_baseline", LogmelPreset::Baseline)] {
            let Some(r) = refs.get(key) else { continue };
            let ours = asd::features::logmel(&x, preset).unwrap();
            let d = diff(&format!("{clip}.{key}"), &ours, r);
            assert!(d.max_abs <= 1e-3, "{clip}.{key}: max |d| {} dB", d.max_abs);
            // Values at the amin floor: 10·log10(1e-10) is -100.00001 in numpy's
            // float32 log10 and -100.0 in Rust's, one ulp apart.
            let at_floor = |v: &f32| *v <= -99.9999;
            let floor = r.0.iter().filter(|v| at_floor(v)).count();
            let ours_floor = ours.data.iter().filter(|v| at_floor(v)).count();
            if floor > 0 {
                eprintln!("    {floor} reference values at the amin floor (-100 dB); ours {ours_floor}");
            }
            assert_eq!(floor, ours_floor, "{clip}.{key}: values clamped at amin");
            checked += 1;
        }
    }
    assert_eq!(checked, 8);
}

#[test]
fn fbank_matches_torchaudio() {
    let mut checked = 0;
    for (clip, x, refs) in frontend_clips() {
        if let Some(r) = refs.get("fbank_beats") {
            let d = diff(&format!("{clip}.fbank_beats (normalised)"), &fbank::beats_input(&x).unwrap(), r);
            assert!(d.max_abs <= 1e-3 / 13.11164 * 2.0 && d.mean_abs <= 1e-5, "{clip}: beats");
            checked += 1;
        }
        if let Some(r) = refs.get("fbank_eat_raw") {
            let d = diff(&format!("{clip}.fbank_eat_raw"), &fbank::fbank(&x, FbankPreset::Eat).unwrap(), r);
            assert!(d.max_abs <= 5e-3 && d.mean_abs <= 1e-4, "{clip}: eat raw");
            checked += 1;
        }
        if let Some(r) = refs.get("fbank_eat_padded_norm") {
            let ours = fbank::eat_input(&x, EatLength::Fixed(1024)).unwrap();
            let d = diff(&format!("{clip}.fbank_eat_padded_norm"), &ours, r);
            assert!(d.max_abs <= 5e-3 / 9.138 && d.mean_abs <= 1e-4 / 9.138, "{clip}: eat input");
            checked += 1;
        }
    }
    assert_eq!(checked, 3 + 2 + 3);
}

#[test]
fn shared_fbank_fixture() {
    let base = fixtures().join("shared");
    let refs = load_refs(&base.join("fbank/fbank_parity.safetensors"));
    let mut checked = 0;
    for clip in ["clip_a_tone_noise", "clip_b_chirp_noise"] {
        let x = wav::load(&base.join(format!("audio/{clip}.wav"))).unwrap();
        let beats = fbank::fbank(&x, FbankPreset::Beats).unwrap();
        let d = diff(&format!("{clip}.beats_fbank_raw"), &beats, &refs[&format!("{clip}.beats_fbank_raw")]);
        assert!(d.max_abs <= 2e-3 && d.mean_abs <= 1e-4, "{clip}: beats raw");
        // Band 3 is the empty triangle: log(eps) exactly.
        assert!(beats.data.iter().skip(3).step_by(128).all(|&v| v == f32::EPSILON.ln()));
        let eat = fbank::fbank(&x, FbankPreset::Eat).unwrap();
        let d = diff(&format!("{clip}.eat_fbank_raw"), &eat, &refs[&format!("{clip}.eat_fbank_raw")]);
        assert!(d.max_abs <= 5e-3 && d.mean_abs <= 1e-4, "{clip}: eat raw");
        checked += 2;
    }
    assert_eq!(checked, 4);
}

#[test]
fn dual_branch_inputs_match_numpy_and_torch() {
    let mut checked = 0;
    for (clip, x, refs) in frontend_clips() {
        let x160 = wav::fit_length(&x, spectrum::DUAL_BRANCH_SAMPLES, wav::PadMode::Zeros);
        if let Some(r) = refs.get("spectrum_hann") {
            let ours = spectrum::spectrum_input(&x, spectrum::DUAL_BRANCH_SAMPLES).unwrap();
            let d = diff(&format!("{clip}.spectrum_hann"), &ours, r);
            assert!(d.max_abs <= 1e-5 * d.peak, "{clip}: spectrum");
            checked += 1;
        }
        if let Some(r) = refs.get("stft_mag") {
            let ours = spectrum::stft_magnitude(&x160, 1024, 512);
            let d = diff(&format!("{clip}.stft_mag"), &ours, r);
            assert!(d.max_abs <= 1e-5 * d.peak, "{clip}: stft");
            checked += 1;
        }
        if let Some(r) = refs.get("stft_mag_meannorm") {
            let ours = spectrum::spectrogram_input(&x, spectrum::DUAL_BRANCH_SAMPLES).unwrap();
            let d = diff(&format!("{clip}.stft_mag_meannorm"), &ours, r);
            assert!(d.max_abs <= 1e-5 * d.peak, "{clip}: spectrogram");
            checked += 1;
        }
    }
    assert_eq!(checked, 3 + 2 + 1);
}
