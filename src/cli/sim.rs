use super::attest::SimReportArgs;
use anyhow::Result;
use std::process::ExitCode;

pub fn run_sim_report(_a: SimReportArgs) -> Result<ExitCode> {
    anyhow::bail!("not yet")
}
