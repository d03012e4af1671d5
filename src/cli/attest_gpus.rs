//! `ciel attest gpu-collect` and `gpu-verify`: a machine's GPU evidence
//! (through NVML, as the guest collects it, or simulated) for a nonce, in
//! Trustee's NVIDIA device-list shape, and its verification as a set — what
//! an operator runs to see whether the GPUs would be accepted before any
//! key depends on it.

use super::attest::{warn_simulated, write_stdout};
use super::enclave::{GpuChoice, gpu_source, parse_gpus};
use super::files;
use anyhow::{Context, Result, bail};
use ciel_attestation::nvidia::{GpuEvidence, verify_gpus};
use ciel_attestation::{Policy, UnixTime};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct GpuCollectArgs {
    /// Where the evidence comes from: `nvml` (this machine's GPUs, through
    /// the NVIDIA driver) or `sim:N` (N simulated GPUs: NO confidentiality).
    #[arg(long, value_parser = parse_gpus)]
    pub from: GpuChoice,
    /// The nonce every report carries, 32 bytes in hex (the key broker's
    /// device nonce, or any fresh value).
    #[arg(long)]
    pub nonce: String,
    /// Where to write the device list (JSON).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct GpuVerifyArgs {
    /// A device list from `gpu-collect` (or Trustee's attester).
    pub evidence: PathBuf,
    /// The nonce the reports must carry, 32 bytes in hex.
    #[arg(long)]
    pub nonce: String,
    /// Attestation policy (its `[nvidia]` table; TOML, or JSON if the name
    /// ends in .json). Default: genuine GPUs in CC mode, DEVTOOLS off.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Verification instant, RFC 3339 (default: now).
    #[arg(long)]
    pub at: Option<String>,
    /// Print one JSON object instead of a report for people.
    #[arg(long)]
    pub json: bool,
}

fn nonce(hex_text: &str) -> Result<[u8; 32]> {
    let bytes = hex::decode(hex_text).context("--nonce: not hex")?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("--nonce: {} bytes, expected 32", bytes.len()))
}

pub fn collect(a: GpuCollectArgs) -> Result<ExitCode> {
    if a.from == GpuChoice::None {
        bail!("--from: nvml or sim:N");
    }
    let nonce = nonce(&a.nonce)?;
    let source = gpu_source(a.from)?;
    let gpus = source
        .collect(nonce)
        .map_err(|e| anyhow::anyhow!(e))
        .context("collecting GPU evidence")?;
    let list = GpuEvidence::encode_list(&gpus);
    std::fs::write(&a.out, serde_json::to_vec_pretty(&list)?)
        .with_context(|| format!("writing {}", a.out.display()))?;
    for (i, g) in gpus.iter().enumerate() {
        eprintln!(
            "GPU {i}: {} {} CC mode {}, protected PCIe {}, report {} bytes, sha256 {}",
            g.uuid,
            g.arch,
            g.cc_mode.map_or("not stated", |m| m.name()),
            g.protected_pcie
                .map_or("not stated".into(), |p| p.to_string()),
            g.report.len(),
            g.report_sha256()
        );
    }
    eprintln!(
        "{} GPUs' evidence written to {}",
        gpus.len(),
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn verify(a: GpuVerifyArgs) -> Result<ExitCode> {
    let nonce = nonce(&a.nonce)?;
    let text = files::read("GPU evidence", &a.evidence)?;
    let value: serde_json::Value = serde_json::from_slice(&text)
        .with_context(|| format!("GPU evidence {}: not JSON", a.evidence.display()))?;
    let gpus = GpuEvidence::decode_list(&value)
        .map_err(|e| anyhow::anyhow!(e))
        .with_context(|| format!("GPU evidence {}", a.evidence.display()))?;
    let policy = match &a.policy {
        Some(p) => files::load_policy(p)?,
        None => Policy::default(),
    };
    let now = match &a.at {
        Some(s) => files::parse_instant(s)?,
        None => files::now(),
    };
    let set = verify_gpus(&gpus, &nonce, &policy, UnixTime(now));
    if set.simulated() {
        warn_simulated();
    }
    let out = if a.json {
        let mut s = serde_json::to_string_pretty(&set)?;
        s.push('\n');
        s
    } else {
        ciel_client::report::render_gpus(&set, UnixTime(now))
    };
    write_stdout(&out);
    Ok(if set.accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
