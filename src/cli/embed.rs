//! `asd embed`: a pre-trained model's output features of wav clips as
//! float32 `.npy`.

use crate::backend::{self, BackendName};
use crate::data::wav;
use crate::features::fbank::{EatLength, beats_input, eat_input};
use crate::models::beats::{BeatsEncoder, load_for_inference};
use crate::models::eat::{self, EatEncoder};
use crate::nn::util::to_vec;
use crate::util::Progress;
use crate::util::atomic::Batch;
use crate::util::npy;
use anyhow::{Context, Result, bail};
use burn::tensor::{Device, Tensor, TensorData};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelArg {
    /// BEATs (released checkpoint format, e.g. BEATs_iter3.pt).
    Beats,
    /// EAT (fairseq .pt, or a Hugging Face folder / its model.safetensors with config.json beside it).
    Eat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PoolArg {
    /// Mean over tokens (EAT: over the patch tokens): one 1 × dim vector per clip.
    Mean,
    /// The CLS token (EAT only): one 1 × dim vector per clip.
    Cls,
}

#[derive(Debug, Args)]
#[command(
    about = "Write a pre-trained model's output features of wav clips as float32 .npy",
    long_about = "Run a pre-trained model on wav clips (16 kHz mono) and write its output as 2-D float32 .npy.\n\n\
                  --model beats: the encoder output of BEATs.extract_features (tokens × dim; token n = t·8 + f \
                  for ⌊frames/16⌋ time patches and 8 frequency patches; 10 s → 496 × 768), computed from the \
                  BEATs fbank of the whole clip. --pool mean writes the mean over tokens (1 × dim).\n\n\
                  --model eat: the final sequence of EAT's extract_features, CLS first then the patch tokens \
                  ((1 + N) × dim; N = frames/16 · 8 after zero-padding the EAT fbank to a multiple of 32 frames; \
                  10 s → 513 × 768). --pool cls writes the CLS token, --pool mean the mean of the patch tokens. \
                  --checkpoint is the fairseq .pt, or the Hugging Face folder (config.json + model.safetensors) \
                  or its .safetensors file.\n\n\
                  --wav FILE --out FILE.npy, or --wav DIR --out DIR (every *.wav below DIR, one .npy per clip at \
                  the same relative path)."
)]
pub struct EmbedArgs {
    /// Which model.
    #[arg(long, value_enum)]
    pub model: ModelArg,
    /// The pre-trained checkpoint (BEATs: torch.save({'cfg': ..., 'model': ...}) as released; EAT: fairseq .pt or Hugging Face folder).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// A wav file, or a folder searched recursively for *.wav.
    #[arg(long)]
    pub wav: PathBuf,
    /// The .npy file (for one wav) or the output folder (for a folder of wavs).
    #[arg(long)]
    pub out: PathBuf,
    /// Pool the token features into one vector.
    #[arg(long, value_enum)]
    pub pool: Option<PoolArg>,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendName::Flex)]
    pub backend: BackendName,
}

/// BEATs features of one waveform: (values, [rows, dim]).
pub fn beats_features(
    enc: &BeatsEncoder,
    x: &[f32],
    pool: Option<PoolArg>,
    device: &Device,
) -> Result<(Vec<f32>, [usize; 2])> {
    let f = beats_input(x)?;
    if f.rows < enc.patch {
        bail!("the clip has {} fbank frames; BEATs needs at least {} (about 0.17 s)", f.rows, enc.patch);
    }
    let input = Tensor::<3>::from_data(TensorData::new(f.data, [1, f.rows, f.cols]), device);
    let out = enc.forward(input, None); // [1, N, D]
    let [_, n, d] = out.dims();
    Ok(match pool {
        None => (to_vec(out), [n, d]),
        Some(PoolArg::Mean) => (to_vec(out.mean_dim(1)), [1, d]),
        Some(PoolArg::Cls) => bail!("BEATs has no CLS token"),
    })
}

/// EAT features of one waveform: (values, [rows, dim]); the fbank is
/// zero-padded to a multiple of 32 frames (ASDKit's rule, 1024 for 10 s).
pub fn eat_features(
    enc: &EatEncoder,
    x: &[f32],
    pool: Option<PoolArg>,
    device: &Device,
) -> Result<(Vec<f32>, [usize; 2])> {
    let f = eat_input(x, EatLength::RoundUp(32))?;
    let n = enc.tokens(f.rows, f.cols);
    if n > enc.max_tokens() {
        bail!("the clip gives {n} patch tokens; the EAT positional table holds {}", enc.max_tokens());
    }
    let input = Tensor::<3>::from_data(TensorData::new(f.data, [1, f.rows, f.cols]), device);
    let out = enc.forward(input, None); // [1, 1 + N, D]
    let [_, n, d] = out.dims();
    Ok(match pool {
        None => (to_vec(out), [n, d]),
        Some(PoolArg::Cls) => (to_vec(out.narrow(1, 0, 1)), [1, d]),
        Some(PoolArg::Mean) => (to_vec(out.narrow(1, 1, n - 1).mean_dim(1)), [1, d]),
    })
}

/// A loaded encoder of either model.
enum Encoder {
    Beats(Box<BeatsEncoder>),
    Eat(Box<EatEncoder>),
}

fn load(a: &EmbedArgs, device: &Device, quiet: bool) -> Result<Encoder> {
    Ok(match a.model {
        ModelArg::Beats => {
            if a.pool == Some(PoolArg::Cls) {
                bail!("--pool cls: BEATs has no CLS token (use --pool mean)");
            }
            Encoder::Beats(Box::new(load_for_inference(&a.checkpoint, device)?.1))
        }
        ModelArg::Eat => {
            let (_, enc, notes) = eat::load_encoder(&a.checkpoint, device)?;
            if !quiet {
                notes.iter().for_each(|n| eprintln!("{n}"));
            }
            Encoder::Eat(Box::new(enc))
        }
    })
}

pub fn run(a: EmbedArgs, quiet: bool) -> Result<()> {
    let device = backend::device(a.backend)?;
    let enc = load(&a, &device, quiet)?;
    let one = |wav_path: &Path, out: &Path| -> Result<[usize; 2]> {
        let x = wav::load(wav_path)?;
        let (v, shape) = match &enc {
            Encoder::Beats(e) => beats_features(e, &x, a.pool, &device),
            Encoder::Eat(e) => eat_features(e, &x, a.pool, &device),
        }
        .with_context(|| format!("cannot embed {}", wav_path.display()))?;
        npy::write(out, &v, &shape)?;
        Ok(shape)
    };
    let jobs = match super::npy_jobs(&a.wav, &a.out)? {
        super::NpyJobs::Single(wav, out) => {
            let [r, c] = one(&wav, &out)?;
            if !quiet {
                eprintln!("wrote {} ({r} × {c}, float32)", out.display());
            }
            return Ok(());
        }
        super::NpyJobs::Folder(jobs) => jobs,
    };
    // Whole folder or nothing, as `asd features`.
    let bar = Progress::new(jobs.len() as u64, "embed", quiet);
    let batch = Batch::new();
    // One encoder over the folder: its Linear weights are packed once.
    crate::nn::linear::with_frozen_weights(|| -> Result<()> {
        for (wav, out) in &jobs {
            one(wav, &batch.stage(out))?;
            bar.inc(1);
        }
        Ok(())
    })?;
    batch.commit()?;
    bar.finish();
    if !quiet {
        eprintln!("wrote {} embedding files under {}", jobs.len(), a.out.display());
    }
    Ok(())
}
