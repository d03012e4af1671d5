//! Evidence from an Azure confidential VM's vTPM (Trustee's `az-snp-vtpm`
//! and `az-tdx-vtpm` shapes, [`ciel_attestation::azure`]): the paravisor's
//! HCL report read
//! from its NV index, and a `TPM2_Quote` by the vTPM's attestation key over
//! the session's `report_data` (all 64 bytes, as the quote's nonce) and
//! PCRs 0 to 23, with the PCR values. The HCL report is read once per
//! evidence (the paravisor may refresh it); the PCRs are read after the
//! quote and again if one was extended in between.
//!
//! The VCEK is not in the vTPM: it comes from the host's collateral
//! service when one is configured (Azure's THIM serves the same
//! certificates), or the evidence leaves it out and verifiers take it from
//! their collateral source (a bundle).
//!
//! On TDX the HCL report holds a TDREPORT, MAC'd for this platform only:
//! the TD quote for it comes from Azure's instance metadata service
//! (`POST /acc/tdquote {"report": base64url}` → `{"quote": base64url}`),
//! and its DCAP collateral from the host's collateral service when one is
//! configured. The quote binds the HCL variable data, not the nonce, so it
//! is fetched once and reused while the HCL report is the same.

use super::EvidenceSource;
use crate::tpm::Transport;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ciel_attestation::azure::{AzVtpm, HclHardware, hcl};
use ciel_attestation::snp::SnpReport;
use ciel_collateral::Upstreams;
use std::sync::Mutex;
use std::time::Duration;

/// Where Azure's paravisor keeps the HCL report.
pub const HCL_REPORT_INDEX: u32 = 0x0140_0001;
/// Azure's vTPM attestation key (persistent handle).
pub const AK_HANDLE: u32 = 0x8100_0003;
/// How often the PCRs are read again when one changes between the quote
/// and the read.
const PCR_TRIES: usize = 3;

/// Azure's instance metadata service, as the guest reaches it.
pub const DEFAULT_IMDS: &str = "http://169.254.169.254";
/// Largest TD quote read from the metadata service.
const MAX_QUOTE: u64 = 64 << 10;

/// Azure vTPM evidence through a TPM transport.
#[derive(Debug)]
pub struct VtpmSource {
    tpm: Transport,
    hardware: HclHardware,
    collateral: Option<Upstreams>,
    imds: String,
    /// TDX: the last HCL report and the TD quote made for it.
    td_quote: Mutex<Option<(Vec<u8>, Vec<u8>)>>,
}

impl VtpmSource {
    /// Opens the vTPM at `tpm`: its HCL report is read, and says whether
    /// the VM is SEV-SNP or TDX (whose TD quotes come from the metadata
    /// service at `imds`, [`DEFAULT_IMDS`] on Azure).
    pub fn open(tpm: Transport, imds: &str) -> Result<Self, String> {
        let report = tpm
            .nv_read(HCL_REPORT_INDEX)
            .map_err(|e| format!("the HCL report (NV index {HCL_REPORT_INDEX:#010x}): {e}"))?;
        let hardware = hcl::parse(&report)
            .map_err(|e| format!("{tpm} NV index {HCL_REPORT_INDEX:#010x}: {e}"))?
            .hardware;
        let imds = imds.trim_end_matches('/').to_string();
        if hardware == HclHardware::Tdx && !imds.starts_with("http://") {
            return Err(format!(
                "the instance metadata service {imds:?}: an http:// URL is expected (Azure's is {DEFAULT_IMDS})"
            ));
        }
        Ok(VtpmSource {
            tpm,
            hardware,
            collateral: None,
            imds,
            td_quote: Mutex::new(None),
        })
    }

    /// The TD quote for `hcl_report`'s TDREPORT: the one already made for
    /// this HCL report, or a new one from the metadata service.
    fn td_quote(&self, hcl_report: &[u8]) -> Result<Vec<u8>, String> {
        let mut cached = self.td_quote.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((report, quote)) = cached.as_ref()
            && report == hcl_report
        {
            return Ok(quote.clone());
        }
        let td_report = hcl::parse(hcl_report)?.report;
        let url = format!("{}/acc/tdquote", self.imds);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let mut resp = agent
            .post(&url)
            .send_json(serde_json::json!({"report": B64URL.encode(td_report)}))
            .map_err(|e| format!("TD quote from {url}: {e}"))?;
        let status = resp.status();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_QUOTE)
            .read_to_vec()
            .map_err(|e| format!("TD quote from {url}: reading the answer: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "TD quote from {url}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ));
        }
        let quote = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("quote")?.as_str().map(str::to_owned))
            .ok_or_else(|| format!("TD quote from {url}: no `quote` string in the answer"))
            .and_then(|q| {
                B64URL
                    .decode(q.trim_end_matches('='))
                    .map_err(|e| format!("TD quote from {url}: `quote` is not base64url: {e}"))
            })?;
        *cached = Some((hcl_report.to_vec(), quote.clone()));
        Ok(quote)
    }

    /// Takes the VCEK (and AMD's chain) from the host's collateral service.
    pub fn with_collateral(mut self, service: Upstreams) -> Self {
        self.collateral = Some(service);
        self
    }

    /// The evidence for `nonce`, as the attestation crate reads it.
    pub fn collect(&self, nonce: &[u8; 64]) -> Result<AzVtpm, String> {
        let hcl_report = self
            .tpm
            .nv_read(HCL_REPORT_INDEX)
            .map_err(|e| e.to_string())?;
        for _ in 0..PCR_TRIES {
            let (quote_message, quote_signature) = self
                .tpm
                .quote(AK_HANDLE, nonce)
                .map_err(|e| format!("the quote by the attestation key {AK_HANDLE:#010x}: {e}"))?;
            let pcrs = self.tpm.pcrs().map_err(|e| e.to_string())?;
            let evidence = AzVtpm {
                version: 1,
                hcl_report: hcl_report.clone(),
                quote_message,
                quote_signature,
                pcrs,
                vcek: None,
                td_quote: match self.hardware {
                    HclHardware::Tdx => Some(self.td_quote(&hcl_report)?),
                    HclHardware::Snp => None,
                },
            };
            if evidence.pcrs_match_quote()? {
                return Ok(evidence);
            }
        }
        Err(format!(
            "{}: the PCRs changed between the quote and reading them, {PCR_TRIES} times",
            self.tpm
        ))
    }
}

impl EvidenceSource for VtpmSource {
    fn tee(&self) -> &str {
        match self.hardware {
            HclHardware::Snp => "az-snp-vtpm",
            HclHardware::Tdx => "az-tdx-vtpm",
        }
    }

    fn evidence(&self, report_data: [u8; 64]) -> Result<serde_json::Value, String> {
        let mut evidence = self.collect(&report_data)?;
        let Some(service) = &self.collateral else {
            return Ok(evidence.to_json());
        };
        // What the hardware report needs, from the host's service: the TD
        // quote's DCAP collateral, or the SNP report's VCEK and AMD chain.
        let (field, value) = match &evidence.td_quote {
            Some(quote) => ("collateral", super::dcap_from_service(service, quote)?),
            None => {
                let report = SnpReport::parse(evidence.hardware_report()?)
                    .map_err(|e| format!("the HCL report's SNP report: {e}"))?;
                let (vcek, chain) = super::snp_from_service(service, &report)
                    .map_err(|e| format!("the HCL report's SNP report: {e}"))?;
                evidence.vcek = Some(vcek);
                match chain {
                    Some(chain) => ("cert_chain", chain.into()),
                    None => return Ok(evidence.to_json()),
                }
            }
        };
        let mut doc = evidence.to_json();
        if let Some(obj) = doc.as_object_mut() {
            obj.insert(field.into(), value);
        }
        Ok(doc)
    }
}
