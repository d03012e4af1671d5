//! NVIDIA GPU verification steps (as NVIDIA's local verifier does them):
//!
//! 1. the device certificate chain, leaf first, each signed by the next,
//!    valid at the instant, ending in the pinned NVIDIA Device Identity CA;
//! 2. the leaf's FWID extension equals the report's FWID opaque field;
//! 3. the report signature (ECDSA P-384, SHA-384 over request || response);
//! 4. each reference integrity manifest given: authentic, and every active
//!    golden measurement matched by the report;
//! 5. the policy: nonce, driver and VBIOS versions.

use super::spdm::NvidiaReport;
use crate::policy::Policy;
use crate::roots::NVIDIA_DEVICE_ROOT_SHA256;
use crate::time::UnixTime;
use crate::verdict::{Claims, Platform, ReasonKind, TcbStatus, Verdict};
use crate::x509::{Cert, CertError, Curve};
use ring::signature::{ECDSA_P384_SHA384_FIXED, UnparsedPublicKey};
use serde::Serialize;
use std::collections::BTreeMap;
use x509_cert::der::oid::ObjectIdentifier;

/// TCG DICE FWID extension, which NVIDIA's leaf certificate carries.
const OID_TCG_DICE_FWID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.5.4.1");

/// Claims of a GPU report (hex lowercase).
#[derive(Debug, Clone, Serialize)]
pub struct NvidiaClaims {
    pub nonce: String,
    pub driver_version: Option<String>,
    pub vbios_version: Option<String>,
    /// Measurement index → value.
    pub measurements: BTreeMap<u8, String>,
    pub board_id: Option<String>,
    pub chip_sku: Option<String>,
    pub project: Option<String>,
    pub project_sku: Option<String>,
    pub fwid: Option<String>,
}

impl NvidiaClaims {
    fn from_report(r: &NvidiaReport) -> Self {
        NvidiaClaims {
            nonce: hex::encode(r.request_nonce),
            driver_version: r.opaque.driver_version.clone(),
            vbios_version: r.opaque.vbios_version.clone(),
            measurements: r
                .blocks
                .iter()
                .map(|b| (b.index, hex::encode(&b.value)))
                .collect(),
            board_id: r.opaque.board_id.as_ref().map(hex::encode),
            chip_sku: r.opaque.chip_sku.clone(),
            project: r.opaque.project.clone(),
            project_sku: r.opaque.project_sku.clone(),
            fwid: r.opaque.fwid.as_ref().map(hex::encode),
        }
    }
}

/// Verifies a GPU report against its device certificate chain.
pub fn verify_nvidia(
    report: &NvidiaReport,
    chain: Option<&[u8]>,
    rims: &[Vec<u8>],
    policy: &Policy,
    now: UnixTime,
) -> Verdict {
    let mut v = Verdict::new(Platform::Nvidia);
    v.claims = Some(Claims::Nvidia(NvidiaClaims::from_report(report)));
    v.tcb_status = TcbStatus::Unknown;
    match chain
        .ok_or_else(|| {
            CertError::new(
                ReasonKind::CertificateMissing,
                "no GPU certificate chain given (--gpu-cert-chain)",
            )
        })
        .and_then(|c| verify_chain(c, now))
    {
        Ok(leaf) => {
            if let Err(e) = check_fwid(report, &leaf) {
                v.reject(e.kind, e.message);
            }
            if let Err(e) = check_signature(report, &leaf) {
                v.reject(e.kind, e.message);
            }
        }
        Err(e) => v.reject(e.kind, e.message),
    }
    for (i, xml) in rims.iter().enumerate() {
        match super::rim::verify_rim(xml, now) {
            Err(e) => v.reject(e.kind, format!("RIM {i}: {}", e.message)),
            Ok(rim) => {
                let values: BTreeMap<u8, Vec<u8>> = report
                    .blocks
                    .iter()
                    .map(|b| (b.index, b.value.clone()))
                    .collect();
                let bad = super::rim::compare(&rim, &values);
                if !bad.is_empty() {
                    v.reject(
                        ReasonKind::GpuMeasurementMismatch,
                        format!(
                            "RIM {i} (version {}): measurements {bad:?} differ from its golden values",
                            rim.version.as_deref().unwrap_or("?")
                        ),
                    );
                }
            }
        }
    }
    apply_policy(report, policy, &mut v);
    v
}

/// Step 1; returns the leaf.
fn verify_chain(pem: &[u8], now: UnixTime) -> Result<Cert, CertError> {
    let certs = Cert::parse_bundle(pem)?;
    let (Some(leaf), Some(root)) = (certs.first(), certs.last()) else {
        return Err(CertError::new(
            ReasonKind::CertificateMissing,
            "empty GPU certificate chain",
        ));
    };
    if certs.len() < 2 {
        return Err(CertError::new(
            ReasonKind::CertificateMissing,
            "GPU certificate chain must hold at least the signing certificate and the root",
        ));
    }
    if hex::encode(root.sha256()) != NVIDIA_DEVICE_ROOT_SHA256 {
        return Err(CertError::new(
            ReasonKind::UntrustedRoot,
            format!(
                "GPU chain ends in {} (sha256 {}), not the pinned NVIDIA Device Identity CA",
                root.subject(),
                hex::encode(root.sha256())
            ),
        ));
    }
    root.verify_signed_by(root, "NVIDIA root")?;
    for (i, pair) in certs.windows(2).enumerate() {
        let [child, parent] = pair else { continue };
        if !child.issued_by(parent) {
            return Err(CertError::new(
                ReasonKind::ChainIssuerMismatch,
                format!(
                    "GPU chain certificate {i} ({}) is not issued by the next one ({})",
                    child.subject(),
                    parent.subject()
                ),
            ));
        }
        child.verify_signed_by(parent, &format!("GPU chain certificate {i}"))?;
    }
    for (i, c) in certs.iter().enumerate() {
        c.check_validity(now, &format!("GPU chain certificate {i} ({})", c.subject()))?;
    }
    Ok(leaf.clone())
}

/// Step 2.
fn check_fwid(report: &NvidiaReport, leaf: &Cert) -> Result<(), CertError> {
    let ext = leaf.extension(&OID_TCG_DICE_FWID).ok_or_else(|| {
        CertError::new(
            ReasonKind::CertificateMissing,
            "FWID extension not found in the GPU signing certificate",
        )
    })?;
    let fwid = report.opaque.fwid.as_deref().ok_or_else(|| {
        CertError::new(
            ReasonKind::EvidenceMalformed,
            "report has no FWID opaque field",
        )
    })?;
    // The extension's DER ends with the 48-byte SHA-384 digest.
    let tail = ext.len().checked_sub(fwid.len()).and_then(|s| ext.get(s..));
    if tail != Some(fwid) {
        return Err(CertError::new(
            ReasonKind::ChainIssuerMismatch,
            "GPU signing certificate FWID differs from the report's",
        ));
    }
    Ok(())
}

/// Step 3.
fn check_signature(report: &NvidiaReport, leaf: &Cert) -> Result<(), CertError> {
    if leaf.ec_curve() != Some(Curve::P384) {
        return Err(CertError::new(
            ReasonKind::UnsupportedAlgorithm,
            "GPU signing key is not ECDSA P-384",
        ));
    }
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, leaf.public_key_bytes())
        .verify(report.signed_bytes(), report.signature())
        .map_err(|_| {
            CertError::new(
                ReasonKind::EvidenceSignatureInvalid,
                "GPU report signature does not verify",
            )
        })
}

/// Step 5.
fn apply_policy(report: &NvidiaReport, policy: &Policy, v: &mut Verdict) {
    policy.check_platform(v);
    let p = &policy.nvidia;
    if let Some(nonce) = &p.nonce
        && report.request_nonce.as_slice() != nonce.as_slice()
    {
        v.reject(
            ReasonKind::GpuNonceMismatch,
            format!(
                "nonce {} is not the expected one",
                hex::encode(report.request_nonce)
            ),
        );
    }
    let drv = report.opaque.driver_version.as_deref().unwrap_or("");
    if !p.driver_versions.is_empty() && !p.driver_versions.iter().any(|d| d == drv) {
        v.reject(
            ReasonKind::GpuDriverNotAllowed,
            format!("driver version {drv:?} is not allowed"),
        );
    }
    let vb = report.opaque.vbios_version.as_deref().unwrap_or("");
    if !p.vbios_versions.is_empty() && !p.vbios_versions.iter().any(|d| d == vb) {
        v.reject(
            ReasonKind::GpuVbiosNotAllowed,
            format!("VBIOS version {vb:?} is not allowed"),
        );
    }
}
