//! `asd report`: redraws the report of a system run.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
#[command(about = "Redraw the report (report.md, plots/) of a system run folder from its scores")]
pub struct ReportArgs {
    /// The run folder of `asd run SYSTEM` (holds run_record.json).
    pub run: PathBuf,
}

pub fn run(a: ReportArgs, quiet: bool) -> Result<()> {
    let record = crate::report::load_record(&a.run)?;
    let summary = crate::report::write(&a.run, &record)?;
    if !quiet {
        eprintln!("report in {}", a.run.join("report.md").display());
    }
    if let Some(table) = summary {
        println!("{table}");
    }
    Ok(())
}
