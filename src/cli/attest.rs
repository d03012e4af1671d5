//! `ciel attest verify` and `ciel attest sim-report`.
//!
//! Exit codes: 0 accept, 1 reject, 2 bad usage or unreadable input.

use super::files;
use anyhow::{Context, Result};
use ciel_attestation::azure::{AzVtpm, verify_az_vtpm};
use ciel_attestation::collateral::DcapCollateral;
use ciel_attestation::{Collateral, Evidence, Policy, UnixTime, verify};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum AttestCommand {
    /// Verify attestation evidence (SNP report, DCAP quote or NVIDIA report).
    ///
    /// Without --policy, evidence is accepted iff it is authentic: signed by a
    /// chain that ends in a pinned vendor root, valid at --at, not revoked and,
    /// for DCAP, with a TCB status of UpToDate or SWHardeningNeeded.
    Verify(VerifyArgs),
    /// Produce simulated evidence (no confidentiality: for development only).
    SimReport(SimReportArgs),
    /// Serve an imitation of the Kata Confidential Containers attestation
    /// agent's REST API (`/aa/evidence`) on the SIMULATED SEV-SNP platform,
    /// to run `ciel enclave serve --coco-agent` without a Kata pod
    /// (development only: NO confidentiality).
    SimAgent(SimAgentArgs),
    /// Collect this machine's GPU evidence for a nonce (through NVML, as the
    /// guest does, or simulated), in Trustee's NVIDIA device-list shape.
    GpuCollect(super::attest_gpus::GpuCollectArgs),
    /// Verify a GPU set's evidence (each report, its chain, stapled OCSP,
    /// RIMs, CC mode; the set's count and protected PCIe) for a nonce.
    GpuVerify(super::attest_gpus::GpuVerifyArgs),
}

#[derive(Debug, Args)]
pub struct SimAgentArgs {
    /// Where to listen (the real agent's REST API is on 127.0.0.1:8006).
    #[arg(long, default_value = "127.0.0.1:8006")]
    pub listen: String,
    /// The init-data the simulated host launched the VM with: its digest
    /// becomes the reports' HOST_DATA, as Kata's runtime sets it.
    #[arg(long, value_name = "FILE")]
    pub init_data: Option<PathBuf>,
}

/// Fills what `collateral` lacks for `evidence` from `bundle`.
fn from_bundle(
    bundle: &ciel_collateral::Bundle,
    evidence: &Input,
    collateral: &mut Collateral,
) -> Result<()> {
    use ciel_attestation::collateral::CollateralLookup;
    let report = match evidence {
        Input::Raw(e) => match e.as_ref() {
            Evidence::Dcap(q) => {
                if collateral.dcap.is_none() {
                    collateral.dcap = Some(bundle.dcap(q.bytes()).map_err(anyhow::Error::msg)?);
                }
                return Ok(());
            }
            Evidence::Snp(r) => r.clone(),
            Evidence::Nvidia(_) => anyhow::bail!("GPU evidence: give its RIMs with --rim"),
        },
        Input::AzureVtpm(e) => {
            match Evidence::parse(e.hardware_report().map_err(anyhow::Error::msg)?)? {
                Evidence::Snp(r) => r,
                Evidence::Dcap(q) => {
                    if collateral.dcap.is_none() {
                        collateral.dcap = Some(bundle.dcap(q.bytes()).map_err(anyhow::Error::msg)?);
                    }
                    return Ok(());
                }
                Evidence::Nvidia(_) => anyhow::bail!("{}: not a CPU's report", e.tee()),
            }
        }
    };
    if collateral.snp_signer.is_none() && matches!(evidence, Input::Raw(_)) {
        collateral.snp_signer = Some(bundle.snp_vcek(&report).map_err(anyhow::Error::msg)?);
    }
    if collateral.snp_chain.is_none() {
        collateral.snp_chain = bundle.snp_chain(&report);
    }
    if collateral.snp_crl.is_none() {
        collateral.snp_crl = bundle.snp_crl(&report);
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Evidence file: raw SNP report, DCAP quote or NVIDIA SPDM report (binary or hex text),
    /// or an Azure confidential VM's vTPM evidence (Trustee's az-snp-vtpm or az-tdx-vtpm
    /// JSON, v0 to v2: HCL report, TPM quote, and the VCEK or the TD quote, whose DCAP
    /// collateral --collateral or --collateral-bundle gives; the policy's report_data is the
    /// quote's nonce).
    pub evidence: PathBuf,
    /// SNP: the VCEK or VLEK certificate (DER or PEM), or a PEM bundle with
    /// its chain as clouds serve it (Azure THIM: VCEK, ASK, ARK).
    #[arg(long)]
    pub vcek: Option<PathBuf>,
    /// SNP: PEM bundle with the ASK or ASVK and the ARK (default: built-in for the product).
    #[arg(long)]
    pub cert_chain: Option<PathBuf>,
    /// SNP: AMD's CRL for the product (KDS `crl`, DER or PEM), checked for
    /// the ASK/ASVK and VCEK/VLEK (a policy with `snp.require_crl` needs it).
    #[arg(long)]
    pub crl: Option<PathBuf>,
    /// DCAP: collateral JSON (TCB info, QE identity, CRLs and issuer chains).
    #[arg(long)]
    pub collateral: Option<PathBuf>,
    /// A collateral bundle (`ciel collateral bundle`) for what the options
    /// above do not give: a quote's DCAP collateral, a report's VCEK, chain
    /// and CRL.
    #[arg(long)]
    pub collateral_bundle: Option<PathBuf>,
    /// NVIDIA: the GPU's device certificate chain (PEM, leaf first).
    #[arg(long)]
    pub gpu_cert_chain: Option<PathBuf>,
    /// NVIDIA: reference integrity manifest (signed SWID tag XML); repeat for driver and VBIOS RIMs.
    #[arg(long)]
    pub rim: Vec<PathBuf>,
    /// Verification instant, RFC 3339 (default: now).
    #[arg(long)]
    pub at: Option<String>,
    /// Attestation policy (TOML, or JSON if the name ends in .json). See docs/policy.example.toml.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Print one JSON object instead of a report for people.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SimReportArgs {
    /// Platform to simulate.
    #[arg(long, value_parser = ["snp", "tdx"])]
    pub platform: String,
    /// report_data, hex, at most 64 bytes (zero-padded).
    #[arg(long)]
    pub report_data: String,
    /// Where to write the evidence; the certificates or collateral go beside it.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(cmd: AttestCommand) -> Result<ExitCode> {
    match cmd {
        AttestCommand::Verify(a) => run_verify(a),
        AttestCommand::SimReport(a) => super::sim::run_sim_report(a),
        AttestCommand::SimAgent(a) => super::sim::run_sim_agent(a),
        AttestCommand::GpuCollect(a) => super::attest_gpus::collect(a),
        AttestCommand::GpuVerify(a) => super::attest_gpus::verify(a),
    }
}

/// What `ciel attest verify` was given.
enum Input {
    Raw(Box<Evidence>),
    AzureVtpm(AzVtpm),
}

fn run_verify(a: VerifyArgs) -> Result<ExitCode> {
    let bytes = files::read("evidence", &a.evidence)?;
    // Azure vTPM evidence (JSON) or one raw report or quote.
    let evidence = if AzVtpm::detect(&bytes) {
        Input::AzureVtpm(
            AzVtpm::from_json(&bytes)
                .map_err(|e| anyhow::anyhow!(e))
                .with_context(|| format!("evidence {}", a.evidence.display()))?,
        )
    } else {
        Input::Raw(Box::new(
            Evidence::parse(&bytes)
                .with_context(|| format!("evidence {}", a.evidence.display()))?,
        ))
    };
    let mut collateral = Collateral::default();
    if let Some(p) = &a.vcek {
        collateral.snp_signer = Some(files::read("VCEK", p)?);
    }
    if let Some(p) = &a.cert_chain {
        collateral.snp_chain = Some(files::read("certificate chain", p)?);
    }
    if let Some(p) = &a.crl {
        collateral.snp_crl = Some(files::read("CRL", p)?);
    }
    if let Some(p) = &a.collateral {
        let text = files::read("collateral", p)?;
        collateral.dcap = Some(
            DcapCollateral::from_json(&text)
                .with_context(|| format!("collateral {}", p.display()))?,
        );
    }
    if let Some(p) = &a.gpu_cert_chain {
        collateral.gpu_cert_chain = Some(files::read("GPU certificate chain", p)?);
    }
    for p in &a.rim {
        collateral.gpu_rims.push(files::read("RIM", p)?);
    }
    if let Some(p) = &a.collateral_bundle {
        let bundle = ciel_collateral::Bundle::from_json(&files::read("collateral bundle", p)?)
            .with_context(|| p.display().to_string())?;
        from_bundle(&bundle, &evidence, &mut collateral)
            .with_context(|| format!("collateral bundle {}", p.display()))?;
    }
    let policy = match &a.policy {
        Some(p) => files::load_policy(p)?,
        None => Policy::authenticity_only(),
    };
    let now = match &a.at {
        Some(s) => files::parse_instant(s)?,
        None => files::now(),
    };
    let verdict = match &evidence {
        Input::Raw(e) => verify(e, &collateral, &policy, UnixTime(now)),
        Input::AzureVtpm(e) => verify_az_vtpm(e, &collateral, &policy, UnixTime(now)),
    };
    if verdict.simulated {
        warn_simulated();
    }
    // What a vTPM quote states (nonce, PCRs), beside the SNP report's claims.
    let quoted = match &evidence {
        Input::AzureVtpm(e) => e.quoted().ok(),
        Input::Raw(_) => None,
    };
    let text = if a.json {
        let mut json = verdict.to_json();
        if let Some((nonce, pcrs)) = &quoted {
            json["vtpm"] = serde_json::json!({
                "nonce": hex::encode(nonce),
                "pcrs": pcrs
                    .iter()
                    .map(|(i, v)| (i.to_string(), serde_json::Value::String(hex::encode(v))))
                    .collect::<serde_json::Map<_, _>>(),
            });
        }
        let mut s = serde_json::to_string_pretty(&json)?;
        s.push('\n');
        s
    } else {
        let mut s = ciel_client::report::render(&verdict, UnixTime(now));
        if let Some((nonce, pcrs)) = &quoted {
            s.push_str(&format!("vtpm quote:\n  nonce: {}\n", hex::encode(nonce)));
            for (i, v) in pcrs {
                s.push_str(&format!("  pcr{i:02}: {}\n", hex::encode(v)));
            }
        }
        s
    };
    write_stdout(&text);
    Ok(if verdict.accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Printed every time simulated evidence is accepted.
pub fn warn_simulated() {
    eprintln!(
        "WARNING: this evidence is from the SIMULATED platform, trusted only because the policy names the simulated root.\n\
         WARNING: it proves nothing about hardware and gives NO confidentiality. Never use it in production."
    );
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a panic.
pub fn write_stdout(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
