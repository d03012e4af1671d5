//! Evidence from an Azure confidential VM's vTPM (Trustee's `az-snp-vtpm`
//! shape, [`ciel_attestation::azure`]): the paravisor's HCL report read
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
//! `az-tdx-vtpm` (an HCL report made on TDX) needs a TD quote for the HCL
//! report's TDREPORT from the paravisor's host (Azure's IMDS); that is not
//! collected here yet, and such a vTPM is refused when the source opens.

use super::EvidenceSource;
use crate::tpm::Transport;
use ciel_attestation::azure::{AzVtpm, HclHardware, hcl};
use ciel_attestation::snp::SnpReport;
use ciel_collateral::{Upstreams, lookup};

/// Where Azure's paravisor keeps the HCL report.
pub const HCL_REPORT_INDEX: u32 = 0x0140_0001;
/// Azure's vTPM attestation key (persistent handle).
pub const AK_HANDLE: u32 = 0x8100_0003;
/// How often the PCRs are read again when one changes between the quote
/// and the read.
const PCR_TRIES: usize = 3;

/// Azure vTPM evidence through a TPM transport.
#[derive(Debug)]
pub struct VtpmSource {
    tpm: Transport,
    collateral: Option<Upstreams>,
}

impl VtpmSource {
    /// Opens the vTPM at `tpm`: its HCL report is read and must be one made
    /// on SEV-SNP.
    pub fn open(tpm: Transport) -> Result<Self, String> {
        let report = tpm
            .nv_read(HCL_REPORT_INDEX)
            .map_err(|e| format!("the HCL report (NV index {HCL_REPORT_INDEX:#010x}): {e}"))?;
        let parsed = hcl::parse(&report)
            .map_err(|e| format!("{tpm} NV index {HCL_REPORT_INDEX:#010x}: {e}"))?;
        if parsed.hardware != HclHardware::Snp {
            return Err(format!(
                "{tpm}: the HCL report was made on TDX; az-tdx-vtpm evidence needs a TD quote from the paravisor's host, which this guest does not collect yet (use configfs-tsm on a TDX guest)"
            ));
        }
        Ok(VtpmSource {
            tpm,
            collateral: None,
        })
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
                td_quote: None,
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
        "az-snp-vtpm"
    }

    fn evidence(&self, report_data: [u8; 64]) -> Result<serde_json::Value, String> {
        let mut evidence = self.collect(&report_data)?;
        let mut chain = None;
        if let Some(service) = &self.collateral {
            let report = SnpReport::parse(evidence.hardware_report()?)
                .map_err(|e| format!("the HCL report's SNP report: {e}"))?;
            evidence.vcek = Some(lookup::snp_vcek(service, &report).map_err(|e| {
                format!("the VCEK for the HCL report from the host's collateral service: {e}")
            })?);
            chain = lookup::snp_chain(service, &report);
        }
        let mut doc = evidence.to_json();
        if let (Some(chain), Some(obj)) = (chain, doc.as_object_mut()) {
            obj.insert(
                "cert_chain".into(),
                String::from_utf8_lossy(&chain).into_owned().into(),
            );
        }
        Ok(doc)
    }
}
