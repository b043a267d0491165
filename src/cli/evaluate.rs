//! `asd evaluate`: the official DCASE 2024 Task 2 metrics of a submission
//! folder against ground truth.

use super::synth::SetArg;
use crate::data::machines::DataSet;
use crate::metrics::{self, Decisions, GroundTruth, Report, SummaryRow};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
#[command(
    about = "Score a submission folder with the official DCASE 2024 Task 2 metrics",
    long_about = "Score a submission folder with the official DCASE 2024 Task 2 metrics \
        (AUC per domain, pAUC, precision/recall/F1, official score = harmonic mean), \
        computed exactly as the official evaluator does but with rows joined to the \
        ground truth by clip name."
)]
pub struct EvaluateArgs {
    /// Folder with anomaly_score_<machine>_section_00_test.csv files.
    #[arg(long)]
    pub scores: PathBuf,
    /// Ground truth: a data root (dev: labels from the test file names; eval:
    /// <root>/eval_data/ground_truth/) or an official folder with
    /// ground_truth_data/ and ground_truth_domain/.
    #[arg(long)]
    pub ground_truth: PathBuf,
    /// Folder with decision_result_<machine>_section_00_test.csv files
    /// (default: the scores folder, used when it holds them).
    #[arg(long)]
    pub decisions: Option<PathBuf>,
    /// Which set of a data root holding both dev_data/ and eval_data/.
    #[arg(long, value_enum)]
    pub set: Option<SetArg>,
    /// Print {"official_score", "machines": {...}} as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: EvaluateArgs, quiet: bool) -> Result<()> {
    let set = a.set.map(|s| match s {
        SetArg::Dev => DataSet::Dev,
        SetArg::Eval => DataSet::Eval,
    });
    let truth = GroundTruth::load(&a.ground_truth, set)?;
    let decisions = match a.decisions {
        Some(d) => Decisions::Required(d),
        None => Decisions::IfPresent(a.scores.clone()),
    };
    let report = metrics::evaluate_dir(&truth, &a.scores, &decisions)?;
    if !quiet {
        let ignored: Vec<String> = metrics::submission::machines_with_scores(&a.scores)?
            .into_iter()
            .filter(|m| !truth.machines.contains_key(m))
            .collect();
        if !ignored.is_empty() {
            eprintln!("note: scores for {} are not in the ground truth and were ignored", ignored.join(", "));
        }
    }
    if a.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

fn pct(v: f64) -> String {
    format!("{:>7.2}", 100.0 * v)
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| format!("{:>7}", "-"), pct)
}

/// The human-readable result table (values in %).
pub fn table(r: &Report) -> String {
    let dec = r.has_decisions();
    let width = r.machines.keys().map(|m| m.len()).chain([26]).max().unwrap();
    let mut out = String::new();
    let mut header = format!("{:<width$} {:>7} {:>7} {:>7}", "machine (values in %)", "AUC-s", "AUC-t", "pAUC");
    if dec {
        for h in ["P-s", "P-t", "R-s", "R-t", "F1-s", "F1-t"] {
            header.push_str(&format!(" {h:>7}"));
        }
    }
    out.push_str(&header);
    out.push('\n');
    out.push_str(&"-".repeat(header.len()));
    out.push('\n');
    for (m, v) in &r.machines {
        out.push_str(&format!("{m:<width$} {} {} {}", pct(v.auc_source), pct(v.auc_target), pct(v.pauc)));
        if dec {
            for x in
                [v.precision_source, v.precision_target, v.recall_source, v.recall_target, v.f1_source, v.f1_target]
            {
                out.push_str(&format!(" {}", opt(x)));
            }
        }
        out.push('\n');
    }
    out.push_str(&"-".repeat(header.len()));
    out.push('\n');
    // The harmonic-mean row of the published tables: per-domain h-means of
    // AUC and the h-mean of pAUC; P/R/F1 as the evaluator's source/target rows.
    let rows = r.overall_rows();
    let (s, t): (SummaryRow, SummaryRow) = (rows.source_harmonic_mean, rows.target_harmonic_mean);
    out.push_str(&format!(
        "{:<width$} {} {} {}",
        "harmonic mean",
        pct(s.auc),
        pct(t.auc),
        pct(rows.harmonic_mean.pauc)
    ));
    if dec {
        for x in [s.precision, t.precision, s.recall, t.recall, s.f1, t.f1] {
            out.push_str(&format!(" {}", opt(x)));
        }
    }
    out.push('\n');
    let a = rows.arithmetic_mean;
    out.push_str(&format!(
        "{:<width$} AUC {} pAUC {}",
        "arithmetic mean",
        pct(a.auc).trim_start(),
        pct(a.pauc).trim_start()
    ));
    if dec {
        out.push_str(&format!(
            " precision {} recall {} F1 {}",
            opt(a.precision).trim_start(),
            opt(a.recall).trim_start(),
            opt(a.f1).trim_start()
        ));
    }
    out.push('\n');
    let n = 3 * r.machines.len();
    out.push_str(&format!(
        "official score (h-mean of {n} values: AUC-s, AUC-t, pAUC per machine): {:.2} % ({})\n",
        100.0 * r.official_score,
        r.official_score
    ));
    out
}
