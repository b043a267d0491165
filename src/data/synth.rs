//! Synthetic machine sounds in the exact DCASE 2024 Task 2 layout.
//!
//! Each machine type has its own physically motivated voice: rotating
//! harmonic series (motors, fans, bearings), gear-mesh tones with shaft
//! sidebands, blade-pass tones, periodic or random impacts rendered as damped
//! resonances, motion cycles (slider, robotic arm, scanner carriage), pass-by
//! envelopes (toy train / circuit) and rotor flutter (drone). Attribute
//! strings are the real ones (`car_B1_spd_31V_mic_1`, `weight15_BckgF`, ...)
//! and they drive the voice (speed sets the fundamental, `mic`/`Bckg`/`n`
//! change the background and the microphone's band), so target-domain clips
//! are shifted away from the source domain as in the real data. Machines with
//! concealed attributes still have hidden operating conditions per domain;
//! their names say `noAttribute`.
//!
//! Anomalies are drawn per clip from the kinds that make sense for the
//! machine (impacts from a defect, detuning, imbalance modulation, an extra
//! whine, rough broadband noise, irregular timing), each with a random
//! severity between barely audible and clear, so a good detector does not
//! reach 100 %. Everything is a pure function of (seed, machine, clip):
//! clips are rendered in parallel and the output is identical run after run.

use super::machines::{self, DataSet, MachineInfo};
use super::naming::{ClipName, Domain, Label, NO_ATTRIBUTE, Split};
use super::wav::{self, SAMPLE_RATE};
use crate::util::{atomic, rng};
use anyhow::{Context, Result, bail};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use std::f32::consts::TAU;
use std::path::{Path, PathBuf};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub out: PathBuf,
    pub set: DataSet,
    /// Machine types; empty = every machine type of `set`.
    pub machines: Vec<String>,
    pub seed: u64,
    pub train_source: usize,
    pub train_target: usize,
    /// Test clips per (domain, label) cell.
    pub test_per_cell: usize,
    pub seconds: f32,
}

impl SynthConfig {
    /// Small defaults: a full dev set in seconds.
    pub fn new(out: impl Into<PathBuf>, set: DataSet) -> SynthConfig {
        SynthConfig {
            out: out.into(),
            set,
            machines: Vec::new(),
            seed: 0,
            train_source: 24,
            train_target: 4,
            test_per_cell: 6,
            seconds: 10.0,
        }
    }
}

/// Summary of a synthesis run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SynthReport {
    pub machines: Vec<String>,
    pub clips: usize,
    pub seconds_of_audio: f64,
}

/// Generates the dataset. `progress` is called after each clip.
pub fn generate(cfg: &SynthConfig, progress: &(dyn Fn() + Sync)) -> Result<SynthReport> {
    if cfg.seconds < 0.5 || cfg.seconds > 60.0 || !cfg.seconds.is_finite() {
        bail!("--seconds must be between 0.5 and 60, got {}", cfg.seconds);
    }
    if cfg.train_source == 0 || cfg.test_per_cell == 0 {
        bail!("--train-source and --test-per-cell must be at least 1");
    }
    if cfg.train_source > 9999 || cfg.train_target > 9999 || cfg.test_per_cell > 2499 {
        bail!("clip counts must fit the four-digit index");
    }
    let infos: Vec<&MachineInfo> = if cfg.machines.is_empty() {
        machines::of_set(cfg.set)
    } else {
        cfg.machines.iter().map(|m| machines::lookup(m)).collect::<Result<_>>()?
    };
    let jobs: Vec<Job> = infos.iter().flat_map(|m| plan_machine(m, cfg)).collect();
    let n_samples = (cfg.seconds * SAMPLE_RATE as f32).round() as usize;
    jobs.par_iter().try_for_each(|job| -> Result<()> {
        let audio = render_clip(job, cfg.seed, n_samples);
        wav::write_pcm16(&job.path, &audio)?;
        progress();
        Ok(())
    })?;
    if cfg.set == DataSet::Eval {
        write_ground_truth(cfg, &infos, &jobs)?;
    }
    Ok(SynthReport {
        machines: infos.iter().map(|m| m.name.to_string()).collect(),
        clips: jobs.len(),
        seconds_of_audio: jobs.len() as f64 * cfg.seconds as f64,
    })
}

/// Where the evaluation ground truth is written, in the official evaluator's
/// layout (`ground_truth_data/`, `ground_truth_domain/`, `ground_truth_attributes/`).
pub fn ground_truth_dir(root: &Path) -> PathBuf {
    root.join("eval_data").join("ground_truth")
}

/// One clip to render.
#[derive(Debug, Clone)]
struct Job {
    machine: &'static MachineInfo,
    /// Full (non-anonymised) name: what the ground truth calls the clip.
    name: ClipName,
    /// Attribute string with the hidden conditions (equals the name's unless concealed).
    true_attributes: String,
    path: PathBuf,
    /// Stable per-clip key for the random stream.
    key: u64,
}

fn plan_machine(m: &'static MachineInfo, cfg: &SynthConfig) -> Vec<Job> {
    let spec = spec_of(m.name);
    let dir = cfg.out.join(cfg.set.dir_name()).join("raw").join(m.name);
    let mut jobs = Vec::new();
    let numbering = numbering_of(m.name);
    let mut r = rng::stream(cfg.seed, &[rng::hash_str(m.name), 1]);
    let offset: usize = r.random_range(0..12);
    let mut push = |domain: Domain, split: Split, label: Label, index: u32, k: usize| {
        let attrs = if domain == Domain::Source { spec.source } else { spec.target };
        // Cycle through the attribute settings so every one is represented.
        let true_attr = attrs[(k + offset) % attrs.len()].to_string();
        let shown = if m.concealed_attributes && !(m.name == "BrushlessMotor" && split == Split::Test) {
            NO_ATTRIBUTE.to_string()
        } else {
            true_attr.clone()
        };
        let name = ClipName {
            section: "00".into(),
            domain: Some(domain),
            split: Some(split),
            label: Some(label),
            index,
            attributes: Some(shown),
        };
        let key = rng::hash_str(&format!("{}/{}", m.name, name.file_name()));
        let folder = dir.join(split.as_str());
        jobs.push(Job { machine: m, path: folder.join(name.file_name()), name, true_attributes: true_attr, key });
    };
    for k in 0..cfg.train_source {
        push(Domain::Source, Split::Train, Label::Normal, numbering.train(Domain::Source, k, cfg.train_source), k);
    }
    for k in 0..cfg.train_target {
        push(Domain::Target, Split::Train, Label::Normal, numbering.train(Domain::Target, k, cfg.train_source), k);
    }
    let cells = [
        (Domain::Source, Label::Normal),
        (Domain::Source, Label::Anomaly),
        (Domain::Target, Label::Normal),
        (Domain::Target, Label::Anomaly),
    ];
    for (c, (domain, label)) in cells.into_iter().enumerate() {
        for k in 0..cfg.test_per_cell {
            push(domain, Split::Test, label, numbering.test(c, k, cfg.test_per_cell), k);
        }
    }
    if cfg.set == DataSet::Eval {
        anonymise(&mut jobs, m, &dir, cfg.seed);
    }
    jobs
}

/// How a machine type numbers its clips (dcase2024.md §2.5).
#[derive(Debug, Clone, Copy)]
enum Numbering {
    /// Dev style: each cell counts from `base` (0001..).
    PerCell { base: u32 },
    /// RoboticArm / BrushlessMotor: train numbered 0000.. across domains,
    /// test source 0000.. then target after it.
    Continuous,
    /// 3DPrinter / AirCompressor / Scanner: test indices run 0001.. across cells.
    AcrossTest,
}

impl Numbering {
    fn train(self, d: Domain, k: usize, n_source: usize) -> u32 {
        match (self, d) {
            (Numbering::PerCell { base }, _) => base + k as u32,
            (Numbering::Continuous, Domain::Source) => k as u32,
            (Numbering::Continuous, Domain::Target) => (n_source + k) as u32,
            (Numbering::AcrossTest, _) => 1 + k as u32,
        }
    }

    fn test(self, cell: usize, k: usize, per_cell: usize) -> u32 {
        match self {
            Numbering::PerCell { base } => base + k as u32,
            // Source cells share 0000.., target cells continue after them.
            Numbering::Continuous => ((cell / 2) * per_cell + k) as u32,
            Numbering::AcrossTest => 1 + (cell * per_cell + k) as u32,
        }
    }
}

fn numbering_of(machine: &str) -> Numbering {
    match machine {
        "RoboticArm" | "BrushlessMotor" => Numbering::Continuous,
        "3DPrinter" | "AirCompressor" | "Scanner" => Numbering::AcrossTest,
        "HairDryer" | "HoveringDrone" | "ToothBrush" | "ToyCircuit" => Numbering::PerCell { base: 0 },
        _ => Numbering::PerCell { base: 1 },
    }
}

/// Evaluation test clips get anonymised names `section_00_XXXX.wav` in a
/// shuffled order; numbering starts at 0001 for the three machine types that
/// do so in the real data, 0000 otherwise.
fn anonymise(jobs: &mut [Job], m: &MachineInfo, dir: &Path, seed: u64) {
    let mut test: Vec<&mut Job> = jobs.iter_mut().filter(|j| j.name.split == Some(Split::Test)).collect();
    let mut r = rng::stream(seed, &[rng::hash_str(m.name), 2]);
    for i in (1..test.len()).rev() {
        test.swap(i, r.random_range(0..=i));
    }
    let base = if matches!(m.name, "3DPrinter" | "AirCompressor" | "Scanner") { 1 } else { 0 };
    for (i, job) in test.into_iter().enumerate() {
        let anon = format!("section_00_{:04}.wav", base + i);
        job.path = dir.join("test").join(anon);
    }
}

fn write_ground_truth(cfg: &SynthConfig, infos: &[&MachineInfo], jobs: &[Job]) -> Result<()> {
    let gt = ground_truth_dir(&cfg.out);
    for m in infos {
        let mut rows: Vec<&Job> =
            jobs.iter().filter(|j| j.machine.name == m.name && j.name.split == Some(Split::Test)).collect();
        rows.sort_by_key(|j| j.path.clone());
        let file = format!("ground_truth_{}_section_00_test.csv", m.name);
        let (mut data, mut domain, mut attrs) = (String::new(), String::new(), String::new());
        for j in rows {
            let anon = j.path.file_name().unwrap().to_string_lossy();
            let is_anomaly = (j.name.label == Some(Label::Anomaly)) as u8;
            let is_target = (j.name.domain == Some(Domain::Target)) as u8;
            data.push_str(&format!("{anon},{is_anomaly}\n"));
            domain.push_str(&format!("{anon},{is_target}\n"));
            let shown = j.name.file_name();
            let shown = shown.trim_end_matches(".wav");
            if j.machine.concealed_attributes {
                let real = ClipName { attributes: Some(j.true_attributes.clone()), ..j.name.clone() };
                attrs.push_str(&format!("{anon},{shown},{}\n", real.file_name()));
            } else {
                attrs.push_str(&format!("{anon},{shown}\n"));
            }
        }
        atomic::write_string(&gt.join("ground_truth_data").join(&file), &data)?;
        atomic::write_string(&gt.join("ground_truth_domain").join(&file), &domain)?;
        atomic::write_string(&gt.join("ground_truth_attributes").join(&file), &attrs)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Machine specifications: real attribute strings per domain.

struct Spec {
    source: &'static [&'static str],
    target: &'static [&'static str],
}

fn spec_of(machine: &str) -> Spec {
    let (source, target): (&[&str], &[&str]) = match machine {
        "ToyCar" => (
            &["car_A1_spd_28V_mic_1", "car_A1_spd_31V_mic_1", "car_B1_spd_28V_mic_1", "car_B1_spd_31V_mic_1"],
            &["car_A1_spd_34V_mic_2", "car_B1_spd_34V_mic_2"],
        ),
        // Hidden conditions of concealed machines (never shown in train names).
        "ToyTrain" => (&["trn_A_spd_1", "trn_A_spd_2"], &["trn_B_spd_3"]),
        "bearing" => (
            &["pro_A_vel_4_loc_A", "pro_A_vel_6_loc_A", "pro_B_vel_4_loc_A", "pro_B_vel_6_loc_A"],
            &["pro_A_vel_8_loc_E", "pro_B_vel_8_loc_E"],
        ),
        "fan" => (&["n_A", "n_B", "n_C"], &["n_X"]),
        "gearbox" => (&["wt_100_volt_1", "wt_150_volt_1"], &["wt_200_volt_2"]),
        "slider" => (&["vel_600_ac_1", "vel_800_ac_1"], &["vel_1100_ac_2"]),
        "valve" => (&["v1pat_A_v2pat_none", "v1pat_B_v2pat_none"], &["v1pat_A_v2pat_B", "v1pat_B_v2pat_A"]),
        "3DPrinter" => (&["mdl_A_spd_1", "mdl_A_spd_2"], &["mdl_B_spd_1", "mdl_B_spd_2"]),
        "AirCompressor" => (&["fl_1_nos_1", "fl_2_nos_1"], &["fl_2_nos_3"]),
        "Scanner" => (&["res_1_len_1", "res_1_len_2", "res_2_len_1"], &["res_2_len_2", "res_3_len_2"]),
        "ToyCircuit" => (
            &["id_A1_spd_1_mic_1", "id_A1_spd_2_mic_1", "id_B1_spd_1_mic_1"],
            &["id_C1_spd_1_mic_2", "id_C1_spd_2_mic_2"],
        ),
        "HoveringDrone" => (&["prop_A_spd_1", "prop_A_spd_2"], &["prop_B_spd_3"]),
        "HairDryer" => (
            &["id_A1_spd_2_mic_1", "id_A1_spd_1_mic_1", "id_B1_spd_2_mic_1"],
            &["id_C1_spd_1_mic_2", "id_C1_spd_2_mic_2"],
        ),
        "ToothBrush" => (&["mode_1_head_A", "mode_2_head_A"], &["mode_3_head_B"]),
        "RoboticArm" => {
            (&["weight00_BckgA", "weight05_BckgA", "weight10_BckgB"], &["weight15_BckgF", "weight20_BckgF"])
        }
        "BrushlessMotor" => (&["spd1000_BckgA", "spd1500_BckgA", "spd1000_BckgB"], &["spd2500_BckgC"]),
        other => unreachable!("no synth spec for {other}"),
    };
    Spec { source, target }
}

/// Number in an attribute string after `key`, as `key_31V` or packed `key15`.
fn attr_num(attrs: &str, key: &str) -> Option<f32> {
    let toks: Vec<&str> = attrs.split('_').collect();
    let digits = |s: &str| -> Option<f32> {
        let d: String = s.chars().skip_while(|c| !c.is_ascii_digit()).take_while(|c| c.is_ascii_digit()).collect();
        d.parse().ok()
    };
    for (i, t) in toks.iter().enumerate() {
        if *t == key {
            return toks.get(i + 1).and_then(|v| digits(v));
        }
        if let Some(rest) = t.strip_prefix(key)
            && rest.starts_with(|c: char| c.is_ascii_digit())
        {
            return digits(rest);
        }
    }
    None
}

/// Letter code after `key` mapped to 0, 1, 2, ... (`car_B1` -> 1, `BckgF` -> 5).
fn attr_letter(attrs: &str, key: &str) -> f32 {
    let toks: Vec<&str> = attrs.split('_').collect();
    for (i, t) in toks.iter().enumerate() {
        let v = if *t == key { toks.get(i + 1).copied() } else { t.strip_prefix(key).filter(|r| !r.is_empty()) };
        if let Some(c) = v.and_then(|v| v.chars().next()).filter(|c| c.is_ascii_uppercase()) {
            return (c as u8 - b'A') as f32;
        }
    }
    0.0
}

// ---------------------------------------------------------------------------
// The voice model.

#[derive(Debug, Clone, Copy)]
struct Band {
    lo: f32,
    hi: f32,
    level: f32,
}

#[derive(Debug, Clone, Copy)]
struct Impacts {
    /// Events per second.
    rate: f32,
    /// 0 = strictly periodic, 1 = Poisson-like.
    jitter: f32,
    /// Resonance excited by each impact (Hz).
    freq: f32,
    /// Decay time constant (s).
    decay: f32,
    level: f32,
}

#[derive(Debug, Clone, Copy)]
enum Envelope {
    Steady,
    /// Motion cycles: on for `duty` of each period, smooth ramps.
    Cycle {
        period: f32,
        duty: f32,
    },
    /// A vehicle passing the microphone once per lap.
    PassBy {
        period: f32,
    },
    /// Slow random fluctuation of level and speed (rotors in air).
    Flutter {
        rate: f32,
        depth: f32,
    },
    /// Carriage sweeps: speed ramps up and down each period.
    Sweep {
        period: f32,
    },
}

#[derive(Debug, Clone)]
struct Voice {
    /// Fundamental (shaft or motor) frequency in Hz.
    f0: f32,
    /// (multiple of f0, amplitude).
    partials: Vec<(f32, f32)>,
    /// Slow frequency wobble (rate Hz, relative depth).
    wobble: (f32, f32),
    /// Amplitude modulation (rate Hz, depth).
    am: (f32, f32),
    noise: Band,
    impacts: Option<Impacts>,
    /// A second impact train added by a defect.
    defect: Option<Impacts>,
    envelope: Envelope,
    /// Timing irregularity of cycles (fraction of the period).
    cycle_jitter: f32,
    background: Band,
    gain: f32,
}

fn harmonic_series(n: usize, tilt: f32) -> Vec<(f32, f32)> {
    (1..=n).map(|k| (k as f32, (k as f32).powf(-tilt))).collect()
}

/// The normal voice of a machine under an attribute setting.
fn base_voice(machine: &str, attrs: &str, r: &mut ChaCha8Rng) -> Voice {
    let j = |r: &mut ChaCha8Rng, rel: f32| 1.0 + rel * (r.random::<f32>() * 2.0 - 1.0);
    let mut v = Voice {
        f0: 100.0,
        partials: harmonic_series(6, 1.0),
        wobble: (0.3, 0.003),
        am: (0.0, 0.0),
        noise: Band { lo: 200.0, hi: 4000.0, level: 0.02 },
        impacts: None,
        defect: None,
        envelope: Envelope::Steady,
        cycle_jitter: 0.02,
        background: Band { lo: 50.0, hi: 6000.0, level: 0.01 },
        gain: 0.3,
    };
    let mic = attr_num(attrs, "mic").unwrap_or(1.0);
    match machine {
        "ToyCar" => {
            let volts = attr_num(attrs, "spd").unwrap_or(31.0);
            v.f0 = volts * 3.1 * j(r, 0.015);
            v.partials = harmonic_series(10, 0.8 + 0.4 * attr_letter(attrs, "car"));
            v.partials.push((6.5, 0.15)); // gear mesh of the drive train
            v.noise = Band { lo: 300.0, hi: 5000.0, level: 0.03 };
            v.background = Band { lo: 80.0, hi: if mic > 1.0 { 2500.0 } else { 6000.0 }, level: 0.012 * mic };
        }
        "ToyTrain" | "ToyCircuit" => {
            let spd = attr_num(attrs, "spd").unwrap_or(1.0);
            let model = attr_letter(attrs, if machine == "ToyTrain" { "trn" } else { "id" });
            v.f0 = (180.0 + 40.0 * spd + 25.0 * model) * j(r, 0.02);
            v.partials = harmonic_series(8, 1.2);
            v.envelope = Envelope::PassBy { period: (6.0 - spd) * j(r, 0.05) };
            // Rail joints: clicks at a rate that grows with speed.
            v.impacts = Some(Impacts {
                rate: 3.0 + 2.0 * spd,
                jitter: 0.05,
                freq: 2500.0 + 300.0 * model,
                decay: 0.004,
                level: 0.25,
            });
            v.noise = Band { lo: 500.0, hi: 6000.0, level: 0.02 };
            v.background = Band { lo: 60.0, hi: if mic > 1.0 { 3000.0 } else { 7000.0 }, level: 0.01 * mic };
        }
        "bearing" => {
            let vel = attr_num(attrs, "vel").unwrap_or(4.0);
            v.f0 = 6.0 * vel * j(r, 0.01);
            v.partials = harmonic_series(4, 0.6);
            // Structural resonance excited by rolling elements; the microphone
            // location (loc) changes which band dominates.
            let loc = attr_letter(attrs, "loc");
            v.noise = Band { lo: 1500.0 + 250.0 * loc, hi: 3500.0 + 300.0 * loc, level: 0.05 };
            v.partials.push((23.0 + 3.0 * attr_letter(attrs, "pro"), 0.3));
            v.background = Band { lo: 50.0, hi: 5000.0, level: 0.01 };
        }
        "fan" => {
            let rpm_hz = 24.0 * j(r, 0.01);
            v.f0 = rpm_hz;
            // Blade-pass tone (7 blades) and its harmonics over turbulence.
            v.partials = vec![(1.0, 0.08), (7.0, 1.0), (14.0, 0.45), (21.0, 0.2), (28.0, 0.1)];
            v.noise = Band { lo: 100.0, hi: 3000.0, level: 0.08 };
            let n = attr_letter(attrs, "n");
            // Factory background type: A-C similar, X (target) much stronger and brighter.
            v.background = if n >= 20.0 {
                Band { lo: 800.0, hi: 7000.0, level: 0.05 }
            } else {
                Band { lo: 60.0 + 40.0 * n, hi: 2000.0 + 500.0 * n, level: 0.015 }
            };
        }
        "gearbox" => {
            let wt = attr_num(attrs, "wt").unwrap_or(100.0);
            let volt = attr_num(attrs, "volt").unwrap_or(1.0);
            v.f0 = 11.0 * volt * j(r, 0.01);
            // Gear mesh (27 teeth) with shaft-rate sidebands; load raises them.
            let side = 0.1 + wt / 1000.0;
            v.partials = vec![(1.0, 0.1), (26.0, side), (27.0, 1.0), (28.0, side), (54.0, 0.4), (81.0, 0.15)];
            v.am = (v.f0, 0.1);
            v.noise = Band { lo: 200.0, hi: 3000.0, level: 0.02 };
        }
        "slider" => {
            let vel = attr_num(attrs, "vel").unwrap_or(600.0);
            let ac = attr_num(attrs, "ac").unwrap_or(1.0);
            v.f0 = vel / 6.0 * j(r, 0.02);
            v.partials = harmonic_series(6, 1.0);
            v.envelope = Envelope::Cycle { period: 1200.0 / vel * ac.sqrt() * j(r, 0.03), duty: 0.6 };
            v.noise = Band { lo: 1000.0, hi: 6000.0, level: 0.06 }; // rail friction
            v.impacts = Some(Impacts { rate: vel / 1200.0 * 2.0, jitter: 0.02, freq: 1800.0, decay: 0.01, level: 0.3 });
        }
        "valve" => {
            // Solenoid valves: the sound is the opening/closing clicks.
            let p1 = attr_letter(attrs, "v1pat");
            let v2 = attrs.contains("v2pat_none");
            v.f0 = 50.0;
            v.partials = vec![(1.0, 0.05), (2.0, 0.03)];
            v.noise = Band { lo: 2000.0, hi: 7000.0, level: 0.005 };
            v.impacts = Some(Impacts { rate: 2.0 + 1.5 * p1, jitter: 0.03, freq: 3200.0, decay: 0.006, level: 0.6 });
            if !v2 {
                let p2 = attr_letter(attrs, "v2pat");
                v.defect = None;
                v.partials.push((30.0 + 7.0 * p2, 0.02));
                v.impacts.as_mut().unwrap().rate += 1.0 + p2;
            }
        }
        "3DPrinter" => {
            let spd = attr_num(attrs, "spd").unwrap_or(1.0);
            v.f0 = (300.0 + 150.0 * spd + 80.0 * attr_letter(attrs, "mdl")) * j(r, 0.03);
            v.partials = harmonic_series(5, 1.3);
            v.wobble = (0.8, 0.08); // head moves: stepper pitch changes
            v.noise = Band { lo: 200.0, hi: 2500.0, level: 0.03 }; // cooling fan
        }
        "AirCompressor" => {
            let fl = attr_num(attrs, "fl").unwrap_or(1.0);
            v.f0 = 50.0 * j(r, 0.005);
            v.partials = vec![(1.0, 0.6), (2.0, 1.0), (3.0, 0.3), (4.0, 0.2)];
            v.impacts = Some(Impacts { rate: 13.0 + 2.0 * fl, jitter: 0.01, freq: 900.0, decay: 0.02, level: 0.3 });
            v.noise = Band { lo: 2000.0, hi: 7500.0, level: 0.04 }; // air hiss
            v.background = Band { lo: 80.0, hi: 4000.0, level: 0.01 * attr_num(attrs, "nos").unwrap_or(1.0) };
        }
        "Scanner" => {
            let res = attr_num(attrs, "res").unwrap_or(1.0);
            let len = attr_num(attrs, "len").unwrap_or(1.0);
            v.f0 = (400.0 + 200.0 * res) * j(r, 0.02);
            v.partials = harmonic_series(4, 1.5);
            v.envelope = Envelope::Sweep { period: 2.0 + 1.5 * len };
            v.impacts =
                Some(Impacts { rate: 1.0 / (2.0 + 1.5 * len), jitter: 0.0, freq: 1500.0, decay: 0.03, level: 0.5 });
            v.noise = Band { lo: 300.0, hi: 3000.0, level: 0.01 };
        }
        "HoveringDrone" => {
            let spd = attr_num(attrs, "spd").unwrap_or(1.0);
            v.f0 = (80.0 + 15.0 * spd + 10.0 * attr_letter(attrs, "prop")) * j(r, 0.02);
            // Four rotors at slightly different speeds (2-blade props).
            v.partials = vec![(2.0, 1.0), (2.04, 0.8), (1.97, 0.8), (2.07, 0.6), (4.0, 0.4), (6.0, 0.2)];
            v.envelope = Envelope::Flutter { rate: 0.7, depth: 0.25 };
            v.noise = Band { lo: 100.0, hi: 5000.0, level: 0.06 };
        }
        "HairDryer" => {
            let spd = attr_num(attrs, "spd").unwrap_or(1.0);
            v.f0 = (250.0 + 120.0 * spd + 30.0 * attr_letter(attrs, "id")) * j(r, 0.01);
            v.partials = harmonic_series(3, 1.5);
            v.noise = Band { lo: 300.0, hi: 7000.0, level: 0.12 + 0.05 * spd }; // airflow
            v.background = Band { lo: 60.0, hi: if mic > 1.0 { 3000.0 } else { 7000.0 }, level: 0.01 * mic };
        }
        "ToothBrush" => {
            let mode = attr_num(attrs, "mode").unwrap_or(1.0);
            v.f0 = (240.0 + 20.0 * mode) * j(r, 0.01);
            v.partials = harmonic_series(12, 0.7 + 0.3 * attr_letter(attrs, "head"));
            v.am = (2.0 + mode, 0.3); // brushing strokes
            v.noise = Band { lo: 1000.0, hi: 6000.0, level: 0.02 };
        }
        "RoboticArm" => {
            let w = attr_num(attrs, "weight").unwrap_or(0.0);
            v.f0 = (600.0 + 12.0 * w) * j(r, 0.02); // servo whine rises with load
            v.partials = harmonic_series(4, 1.2);
            v.envelope = Envelope::Cycle { period: 2.5, duty: 0.55 };
            v.impacts = Some(Impacts { rate: 0.8, jitter: 0.02, freq: 1200.0, decay: 0.02, level: 0.2 });
            let b = attr_letter(attrs, "Bckg");
            v.background = Band { lo: 60.0 + 60.0 * b, hi: 2000.0 + 800.0 * b, level: 0.01 + 0.006 * b };
        }
        "BrushlessMotor" => {
            let spd = attr_num(attrs, "spd").unwrap_or(1000.0);
            v.f0 = spd / 60.0 * 4.0 * j(r, 0.01); // 4 pole pairs: electrical frequency
            v.partials = vec![(1.0, 1.0), (2.0, 0.3), (6.0, 0.35), (12.0, 0.15), (4000.0 / v.f0, 0.08)];
            v.noise = Band { lo: 200.0, hi: 3000.0, level: 0.01 };
            let b = attr_letter(attrs, "Bckg");
            v.background = Band { lo: 60.0 + 60.0 * b, hi: 2500.0 + 900.0 * b, level: 0.01 + 0.006 * b };
        }
        other => unreachable!("no synth voice for {other}"),
    }
    v.gain *= j(r, 0.1);
    v
}

/// Anomaly kinds and the machines they apply to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Anomaly {
    Impacts,
    Detune,
    Imbalance,
    Whine,
    Rough,
    Irregular,
}

fn anomaly_kinds(machine: &str) -> &'static [Anomaly] {
    use Anomaly::*;
    match machine {
        "bearing" | "gearbox" => &[Impacts, Imbalance, Rough],
        "fan" | "HairDryer" | "HoveringDrone" => &[Imbalance, Detune, Whine, Rough],
        "slider" | "RoboticArm" | "Scanner" => &[Impacts, Irregular, Whine, Rough],
        "valve" | "AirCompressor" => &[Irregular, Impacts, Rough],
        "ToyTrain" | "ToyCircuit" => &[Impacts, Detune, Irregular],
        _ => &[Detune, Whine, Imbalance, Impacts, Rough],
    }
}

fn apply_anomaly(v: &mut Voice, kind: Anomaly, severity: f32, r: &mut ChaCha8Rng) {
    match kind {
        Anomaly::Impacts => {
            v.defect = Some(Impacts {
                rate: v.f0.min(60.0) * (0.3 + 0.4 * r.random::<f32>()),
                jitter: 0.05,
                freq: 1500.0 + 3000.0 * r.random::<f32>(),
                decay: 0.003,
                level: 0.08 + 0.25 * severity,
            });
        }
        Anomaly::Detune => v.f0 *= 1.0 + (0.02 + 0.06 * severity) * if r.random::<bool>() { 1.0 } else { -1.0 },
        Anomaly::Imbalance => v.am = (v.f0.min(40.0), 0.1 + 0.4 * severity),
        Anomaly::Whine => {
            let mult = 2.3 + 5.0 * r.random::<f32>();
            v.partials.push((mult, 0.05 + 0.3 * severity));
        }
        Anomaly::Rough => {
            v.noise.level *= 1.3 + 1.2 * severity;
            v.noise.hi = (v.noise.hi * 1.3).min(7800.0);
        }
        Anomaly::Irregular => {
            v.cycle_jitter = 0.1 + 0.3 * severity;
            if let Some(i) = v.impacts.as_mut() {
                i.jitter = 0.3 + 0.7 * severity;
                i.level *= 0.7 + 0.6 * r.random::<f32>();
            }
        }
    }
}

/// Renders one clip.
fn render_clip(job: &Job, seed: u64, n: usize) -> Vec<f32> {
    let mut r = rng::stream(seed, &[job.key, 3]);
    let mut v = base_voice(job.machine.name, &job.true_attributes, &mut r);
    if job.name.label == Some(Label::Anomaly) {
        let kinds = anomaly_kinds(job.machine.name);
        let kind = kinds[r.random_range(0..kinds.len())];
        // Severity skewed towards subtle: u^1.5 on [0.15, 1].
        let severity = 0.15 + 0.85 * r.random::<f32>().powf(1.5);
        apply_anomaly(&mut v, kind, severity, &mut r);
    }
    render(&v, n, &mut r)
}

fn render(v: &Voice, n: usize, r: &mut ChaCha8Rng) -> Vec<f32> {
    let sr = SAMPLE_RATE as f32;
    let dt = 1.0 / sr;
    let wobble_phase = TAU * r.random::<f32>();
    let am_phase = TAU * r.random::<f32>();
    let phases: Vec<f32> = v.partials.iter().map(|_| TAU * r.random::<f32>()).collect();
    let env = envelope(v.envelope, v.cycle_jitter, n, r);
    // Tonal part: integrate instantaneous frequency so wobble and sweeps stay continuous.
    let mut out = vec![0.0f32; n];
    let mut phase = 0.0f64;
    for (i, o) in out.iter_mut().enumerate() {
        let t = i as f32 * dt;
        let speed = env.speed[i];
        let f = v.f0 * speed * (1.0 + v.wobble.1 * (TAU * v.wobble.0 * t + wobble_phase).sin());
        phase += (f * dt) as f64;
        let base = (TAU as f64 * (phase % 1e6)) as f32;
        let mut s = 0.0;
        for (&(mult, amp), &ph) in v.partials.iter().zip(&phases) {
            if v.f0 * mult < sr * 0.45 {
                s += amp * (mult * base + ph).sin();
            }
        }
        let am = 1.0 + v.am.1 * (TAU * v.am.0 * t + am_phase).sin();
        *o = 0.2 * s * am * env.level[i];
    }
    let noise = band_noise(v.noise, n, r);
    for ((o, x), e) in out.iter_mut().zip(&noise).zip(&env.level) {
        *o += x * e;
    }
    for imp in [v.impacts, v.defect].into_iter().flatten() {
        add_impacts(&mut out, imp, &env.level, r);
    }
    let g = v.gain;
    for o in out.iter_mut() {
        *o *= g;
    }
    let bg = band_noise(v.background, n, r);
    for (o, b) in out.iter_mut().zip(&bg) {
        *o = (*o + b).clamp(-1.0, 1.0);
    }
    out
}

struct EnvelopeTrack {
    level: Vec<f32>,
    speed: Vec<f32>,
}

fn envelope(e: Envelope, jitter: f32, n: usize, r: &mut ChaCha8Rng) -> EnvelopeTrack {
    let sr = SAMPLE_RATE as f32;
    let mut level = vec![1.0f32; n];
    let mut speed = vec![1.0f32; n];
    match e {
        Envelope::Steady => {}
        Envelope::Cycle { .. } | Envelope::Sweep { .. } => {
            let (period, duty, sweep) = match e {
                Envelope::Cycle { period, duty } => (period, duty, false),
                Envelope::Sweep { period } => (period, 0.75, true),
                _ => unreachable!(),
            };
            let mut start = -period * r.random::<f32>();
            while start < n as f32 / sr {
                let p = period * (1.0 + jitter * (2.0 * r.random::<f32>() - 1.0));
                let on = p * duty;
                let ramp = 0.08 * p;
                let (a, b) = ((start.max(0.0) * sr) as usize, (((start + p) * sr) as usize).min(n));
                for i in a..b {
                    let t = i as f32 / sr - start;
                    if sweep {
                        // Carriage forward (slow, scanning) then a fast return.
                        speed[i] = if t < on { 1.0 } else { 1.6 };
                        level[i] = if t < on { 1.0 } else { 0.7 };
                    } else {
                        let l = if t < on { (t / ramp).min((on - t) / ramp).clamp(0.0, 1.0) } else { 0.0 };
                        level[i] = 0.1 + 0.9 * l;
                    }
                }
                start += p;
            }
        }
        Envelope::PassBy { period } => {
            let offset = period * r.random::<f32>();
            for (i, l) in level.iter_mut().enumerate() {
                let t = (i as f32 / sr + offset) % period / period;
                let d = (t - 0.5) * 6.0;
                *l = 0.25 + 0.75 / (1.0 + d * d);
            }
            // Doppler-like pitch change around the pass.
            for (i, s) in speed.iter_mut().enumerate() {
                let t = (i as f32 / sr + offset) % period / period;
                *s = 1.0 + 0.03 * (-(t - 0.5) * 8.0).tanh();
            }
        }
        Envelope::Flutter { rate, depth } => {
            let slow = smooth_noise(n, rate, r);
            for i in 0..n {
                level[i] = 1.0 + depth * slow[i];
                speed[i] = 1.0 + 0.2 * depth * slow[i];
            }
        }
    }
    EnvelopeTrack { level, speed }
}

/// Low-frequency noise in [-1, 1] with the given bandwidth (linear interpolation of random knots).
fn smooth_noise(n: usize, rate: f32, r: &mut ChaCha8Rng) -> Vec<f32> {
    let step = (SAMPLE_RATE as f32 / rate.max(0.05)) as usize;
    let knots: Vec<f32> = (0..n / step + 2).map(|_| 2.0 * r.random::<f32>() - 1.0).collect();
    (0..n)
        .map(|i| {
            let k = i / step;
            let f = (i % step) as f32 / step as f32;
            knots[k] * (1.0 - f) + knots[k + 1] * f
        })
        .collect()
}

/// White Gaussian noise through a band-pass (RBJ biquad), scaled to `level` RMS.
fn band_noise(b: Band, n: usize, r: &mut ChaCha8Rng) -> Vec<f32> {
    let sr = SAMPLE_RATE as f32;
    let f_c = (b.lo * b.hi).sqrt().min(sr * 0.45);
    let q = (f_c / (b.hi - b.lo).max(1.0)).max(0.3);
    let w0 = TAU * f_c / sr;
    let alpha = w0.sin() / (2.0 * q);
    let a0 = 1.0 + alpha;
    let (b0, b2) = (alpha / a0, -alpha / a0);
    let (a1, a2) = (-2.0 * w0.cos() / a0, (1.0 - alpha) / a0);
    let (mut x1, mut x2, mut y1, mut y2) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
    let mut y: Vec<f32> = (0..n)
        .map(|_| {
            let x: f32 = StandardNormal.sample(r);
            let out = b0 * x + b2 * x2 - a1 * y1 - a2 * y2;
            x2 = x1;
            x1 = x;
            y2 = y1;
            y1 = out;
            out
        })
        .collect();
    let rms = (y.iter().map(|v| v * v).sum::<f32>() / n.max(1) as f32).sqrt().max(1e-12);
    let s = b.level / rms;
    y.iter_mut().for_each(|v| *v *= s);
    y
}

fn add_impacts(out: &mut [f32], imp: Impacts, env: &[f32], r: &mut ChaCha8Rng) {
    let sr = SAMPLE_RATE as f32;
    let n = out.len();
    let len = ((imp.decay * 6.0) * sr) as usize;
    let mut t = r.random::<f32>() / imp.rate;
    while ((t * sr) as usize) < n {
        let start = (t * sr) as usize;
        let amp = imp.level * (0.8 + 0.4 * r.random::<f32>()) * env[start];
        let ph = TAU * r.random::<f32>();
        for k in 0..len.min(n - start) {
            let tk = k as f32 / sr;
            out[start + k] += amp * (-tk / imp.decay).exp() * (TAU * imp.freq * tk + ph).sin();
        }
        let jit = imp.jitter * (2.0 * r.random::<f32>() - 1.0);
        t += (1.0 + jit).max(0.05) / imp.rate;
    }
}

/// Checks that `out` looks like a place to write a dataset.
pub fn check_output(out: &Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        bail!("{} exists and is not a folder", out.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_parsing_helpers() {
        assert_eq!(attr_num("car_B1_spd_31V_mic_1", "spd"), Some(31.0));
        assert_eq!(attr_num("weight15_BckgF", "weight"), Some(15.0));
        assert_eq!(attr_num("spd1000_BckgC", "spd"), Some(1000.0));
        assert_eq!(attr_letter("weight15_BckgF", "Bckg"), 5.0);
        assert_eq!(attr_letter("car_B1_spd_31V_mic_1", "car"), 1.0);
        assert_eq!(attr_num("noAttribute", "spd"), None);
    }

    #[test]
    fn every_machine_renders_finite_bounded_audio() {
        for m in machines::MACHINES.iter() {
            let spec = spec_of(m.name);
            for (attrs, anomalous) in [(spec.source[0], false), (spec.target[0], true)] {
                let job = Job {
                    machine: m,
                    name: ClipName::parse("section_00_source_test_anomaly_0001_x.wav").unwrap(),
                    true_attributes: attrs.into(),
                    path: PathBuf::new(),
                    key: 7,
                };
                let mut job = job;
                job.name.label = Some(if anomalous { Label::Anomaly } else { Label::Normal });
                let x = render_clip(&job, 1, 16000);
                assert_eq!(x.len(), 16000);
                let rms = (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt();
                assert!(x.iter().all(|v| v.is_finite() && v.abs() <= 1.0), "{}", m.name);
                assert!(rms > 1e-3 && rms < 0.7, "{} rms {rms}", m.name);
            }
        }
    }
}
