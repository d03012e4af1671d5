//! `ciel image measure`: recompute the measurements the hardware reports.

use super::files;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Compute launch or runtime measurements.
    #[command(subcommand)]
    Measure(MeasureCommand),
}

#[derive(Debug, Subcommand)]
pub enum MeasureCommand {
    /// TDX: replay a CC event log (CCEL) into RTMR0..RTMR3.
    Tdx(TdxArgs),
}

#[derive(Debug, Args)]
pub struct TdxArgs {
    /// The CC event log (the ACPI CCEL table's log area).
    #[arg(long)]
    pub ccel: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Write the RTMRs as policy reference values (a JSON policy document).
    #[arg(long)]
    pub reference_values: Option<PathBuf>,
}

pub fn run(cmd: ImageCommand) -> Result<ExitCode> {
    match cmd {
        ImageCommand::Measure(MeasureCommand::Tdx(a)) => measure_tdx(a),
    }
}

fn measure_tdx(a: TdxArgs) -> Result<ExitCode> {
    let log = files::read("CC event log", &a.ccel)?;
    let r = ciel_images::ccel::replay(&log).with_context(|| format!("{}", a.ccel.display()))?;
    let rtmr: Vec<String> = r.rtmr.iter().map(hex::encode).collect();
    if let Some(out) = &a.reference_values {
        let doc = serde_json::json!({
            "platforms": ["tdx"],
            "tdx": { "rtmr0": [rtmr[0]], "rtmr1": [rtmr[1]], "rtmr2": [rtmr[2]], "rtmr3": [rtmr[3]] }
        });
        std::fs::write(out, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("write {}", out.display()))?;
        eprintln!(
            "wrote reference values to {} (use it as --policy, or merge it into a policy)",
            out.display()
        );
    }
    let text = if a.json {
        let events: Vec<serde_json::Value> = r
            .events
            .iter()
            .map(|e| {
                serde_json::json!({
                    "offset": e.offset, "mr_index": e.mr_index, "event_type": e.event_type,
                    "sha384": e.sha384.map(hex::encode), "data_len": e.data_len,
                })
            })
            .collect();
        format!(
            "{}\n",
            serde_json::to_string_pretty(&serde_json::json!({"rtmr": rtmr, "events": events}))?
        )
    } else {
        let mut s = format!("events: {}\n", r.events.len());
        for (i, v) in rtmr.iter().enumerate() {
            s.push_str(&format!("RTMR{i}: {v}\n"));
        }
        s
    };
    super::attest::write_stdout(&text);
    Ok(ExitCode::SUCCESS)
}
