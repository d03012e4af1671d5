//! NVIDIA GPU verification steps (as NVIDIA's local verifier does them):
//!
//! 1. the device certificate chain, leaf first, each signed by the next,
//!    valid at the instant, ending in the pinned NVIDIA Device Identity CA;
//! 2. the leaf's FWID extension equals the report's FWID opaque field;
//! 3. the report signature (ECDSA P-384, SHA-384 over request || response);
//! 4. each stapled OCSP response: about a certificate of the chain, signed
//!    by its issuer, good and fresh; required for every certificate NVIDIA's
//!    CAs issued (all but the attestation certificate and the root) when
//!    the policy says `require_ocsp`;
//! 5. each reference integrity manifest given: authentic, and every active
//!    golden measurement matched by the report;
//! 6. the policy: nonce, driver and VBIOS versions.

use super::ocsp::Stapled;
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

/// What a GPU report is checked with besides the policy.
#[derive(Debug, Clone, Copy, Default)]
pub struct GpuCollateral<'a> {
    /// The device certificate chain (PEM or DER), attestation certificate first.
    pub chain: Option<&'a [u8]>,
    /// Reference integrity manifests (SWID tag XML).
    pub rims: &'a [Vec<u8>],
    /// Stapled OCSP responses (DER) for the chain's certificates.
    pub ocsp: &'a [Vec<u8>],
    /// The nonce the report must carry; `None`: the policy's, if any.
    pub nonce: Option<&'a [u8; 32]>,
}

/// Verifies a GPU report against its device certificate chain.
pub fn verify_nvidia(
    report: &NvidiaReport,
    chain: Option<&[u8]>,
    rims: &[Vec<u8>],
    policy: &Policy,
    now: UnixTime,
) -> Verdict {
    let collateral = GpuCollateral {
        chain,
        rims,
        ..Default::default()
    };
    verify_nvidia_with(report, &collateral, policy, now)
}

/// [`verify_nvidia`] with stapled OCSP responses and an expected nonce.
pub fn verify_nvidia_with(
    report: &NvidiaReport,
    collateral: &GpuCollateral<'_>,
    policy: &Policy,
    now: UnixTime,
) -> Verdict {
    let mut v = Verdict::new(Platform::Nvidia);
    v.claims = Some(Claims::Nvidia(NvidiaClaims::from_report(report)));
    v.tcb_status = TcbStatus::Unknown;
    let device_chain = match collateral
        .chain
        .ok_or_else(|| {
            CertError::new(
                ReasonKind::CertificateMissing,
                "no GPU certificate chain given (--gpu-cert-chain)",
            )
        })
        .and_then(|c| verify_chain(c, policy, now))
    {
        Ok((certs, simulated)) => {
            v.simulated = simulated;
            if let Some(leaf) = certs.first() {
                if let Err(e) = check_fwid(report, leaf) {
                    v.reject(e.kind, e.message);
                }
                if let Err(e) = check_signature(report, leaf) {
                    v.reject(e.kind, e.message);
                }
            }
            Some(certs)
        }
        Err(e) => {
            v.reject(e.kind, e.message);
            None
        }
    };
    let rims = collateral.rims;
    if policy.nvidia.require_rims && rims.is_empty() {
        v.reject(
            ReasonKind::CollateralMissing,
            "the policy requires reference integrity manifests (require_rims) and none were given",
        );
    }
    let values: BTreeMap<u8, Vec<u8>> = report
        .blocks
        .iter()
        .map(|b| (b.index, b.value.clone()))
        .collect();
    let mut rim_chains = Vec::new();
    for (i, xml) in rims.iter().enumerate() {
        match super::rim::verify_rim_with(xml, now, policy) {
            Err(e) => v.reject(e.kind, format!("RIM {i}: {}", e.message)),
            Ok(rim) => {
                v.simulated |= rim.simulated;
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
                rim_chains.push((i, rim.chain));
            }
        }
    }
    // OCSP for the device chain's certificates NVIDIA's CAs issued (not the
    // attestation certificate, which the device itself issues) and for
    // every RIM signer and its CAs.
    let mut chains: Vec<OcspChain<'_>> = Vec::new();
    if let Some(certs) = &device_chain {
        chains.push(OcspChain {
            certs,
            skip: 1,
            name: "GPU chain certificate".into(),
        });
    }
    for (i, certs) in &rim_chains {
        chains.push(OcspChain {
            certs,
            skip: 0,
            name: format!("RIM {i} certificate"),
        });
    }
    // Without a device chain there is nothing the responses could be about.
    if device_chain.is_some() {
        for e in check_ocsp(&chains, collateral.ocsp, policy, now) {
            v.reject(e.kind, e.message);
        }
    }
    apply_policy(report, collateral.nonce, policy, &mut v);
    v
}

/// Step 1; returns the chain (attestation certificate first) and whether
/// it ended in a simulated root the policy names.
fn verify_chain(
    pem: &[u8],
    policy: &Policy,
    now: UnixTime,
) -> Result<(Vec<Cert>, bool), CertError> {
    let certs = Cert::parse_bundle(pem)?;
    let Some(root) = certs.last() else {
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
    let simulated = policy.trusts_simulated_root(root);
    if hex::encode(root.sha256()) != NVIDIA_DEVICE_ROOT_SHA256 && !simulated {
        return Err(CertError::new(
            ReasonKind::UntrustedRoot,
            format!(
                "GPU chain ends in {} (sha256 {}), neither the pinned NVIDIA Device Identity CA nor a simulated root the policy names",
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
    Ok((certs, simulated))
}

/// A chain whose certificates' OCSP status is checked: those from `skip`
/// on, each with the next as its issuer (the root, last, is checked by
/// nobody).
struct OcspChain<'a> {
    certs: &'a [Cert],
    skip: usize,
    name: String,
}

/// Step 4: the OCSP status of the chains' certificates. Each response is
/// parsed once and must be about one of them.
fn check_ocsp(
    chains: &[OcspChain<'_>],
    responses: &[Vec<u8>],
    policy: &Policy,
    now: UnixTime,
) -> Vec<CertError> {
    let p = &policy.nvidia;
    // OCSP responses are collateral too: the policy-wide bound applies
    // where `[nvidia]` sets none of its own.
    let ocsp_max_age = p.max_ocsp_age_seconds.or(policy.max_collateral_age_seconds);
    let mut errors = Vec::new();
    let mut stapled = Vec::with_capacity(responses.len());
    for (i, r) in responses.iter().enumerate() {
        match Stapled::parse(r) {
            Ok(s) => stapled.push((i, s)),
            Err(m) => errors.push(CertError::new(
                ReasonKind::OcspInvalid,
                format!("OCSP response {i}: {m}"),
            )),
        }
    }
    let mut used = vec![false; stapled.len()];
    let pairs = chains.iter().flat_map(|c| {
        c.certs
            .windows(2)
            .enumerate()
            .skip(c.skip)
            .map(move |(i, pair)| (&c.name, i, pair))
    });
    for (chain, i, pair) in pairs {
        let [cert, issuer] = pair else { continue };
        let name = format!("{chain} {i} ({})", cert.subject());
        match stapled.iter().position(|(_, s)| s.covers(cert, issuer)) {
            Some(at) => {
                if let Some(u) = used.get_mut(at) {
                    *u = true;
                }
                let checked = stapled
                    .get(at)
                    .map(|(_, s)| s.check(cert, issuer, now, ocsp_max_age, &name));
                if let Some(Err(e)) = checked {
                    errors.push(e);
                }
            }
            None if p.require_ocsp => errors.push(CertError::new(
                ReasonKind::OcspMissing,
                format!("{name}: no stapled OCSP response, and the policy requires one"),
            )),
            None => {}
        }
    }
    // A response about nothing checked here is not evidence of anything.
    for ((i, _), _) in stapled.iter().zip(&used).filter(|(_, u)| !**u) {
        errors.push(CertError::new(
            ReasonKind::OcspInvalid,
            format!("OCSP response {i} is not about a certificate NVIDIA's CAs issued in this GPU's chain"),
        ));
    }
    errors
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

/// Step 6.
fn apply_policy(report: &NvidiaReport, nonce: Option<&[u8; 32]>, policy: &Policy, v: &mut Verdict) {
    policy.check_platform(v);
    let p = &policy.nvidia;
    if let Some(nonce) = nonce.map(|n| n.as_slice()).or(p.nonce.as_deref())
        && report.request_nonce.as_slice() != nonce
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
