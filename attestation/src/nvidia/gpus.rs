//! A guest's GPUs as one set: every GPU's evidence in the shape Trustee's
//! attester sends (`{"device_evidence_list": [{arch, uuid, evidence,
//! certificate}]}`) plus what ciel's guest adds to each entry (the CC mode
//! NVML reported, stapled OCSP responses and RIMs), and the checks that
//! need the whole set: the nonce they all carry, how many there are, and
//! protected PCIe between them.
//!
//! The mode fields are not signed by the GPU (Hopper's report does not
//! carry its CC mode); they are what the measured guest read from NVML,
//! believed because the CPU evidence binds the document that carries them.
//! A document without them (Trustee's attester) states no mode, and a
//! policy that requires CC mode refuses it.

use super::NvidiaReport;
use super::verify::{GpuCollateral, verify_nvidia_with};
use crate::policy::{NvidiaPolicy, Policy};
use crate::time::UnixTime;
use crate::verdict::{Reason, ReasonKind, Verdict};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

/// Most GPUs one document may list (an HGX board has eight).
pub const MAX_GPUS: usize = 64;

/// The confidential-computing mode NVML reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CcMode {
    On,
    Off,
    /// CC with developer tools: the GPU's memory can be inspected.
    Devtools,
}

impl CcMode {
    /// The mode as the evidence and the claims spell it.
    pub fn name(self) -> &'static str {
        match self {
            CcMode::On => "on",
            CcMode::Off => "off",
            CcMode::Devtools => "devtools",
        }
    }
}

/// One GPU's evidence as the guest collected it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuEvidence {
    /// `HOPPER`, `BLACKWELL` (NVML's spelling).
    pub arch: String,
    pub uuid: String,
    /// The SPDM request and response, as NVML returned them.
    pub report: Vec<u8>,
    /// The attestation certificate chain (PEM), attestation certificate first.
    pub certificate: Vec<u8>,
    pub cc_mode: Option<CcMode>,
    /// Whether NVML says the GPUs run in protected-PCIe (multi-GPU) mode.
    pub protected_pcie: Option<bool>,
    /// Stapled OCSP responses (DER).
    pub ocsp: Vec<Vec<u8>>,
    /// Reference integrity manifests (SWID tag XML).
    pub rims: Vec<Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
struct WireList {
    device_evidence_list: Vec<WireDevice>,
}

#[derive(Serialize, Deserialize)]
struct WireDevice {
    arch: String,
    uuid: String,
    evidence: String,
    certificate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cc_mode: Option<CcMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    protected_pcie: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ocsp: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    rims: Vec<String>,
}

impl GpuEvidence {
    /// SHA-256 (hex) of the report: what the guest's claims bind.
    pub fn report_sha256(&self) -> String {
        hex::encode(crate::x509::sha256(&self.report))
    }

    /// Reads the device list (Trustee's shape; `evidence` hex or base64 as
    /// Trustee's verifier accepts it, everything else base64).
    pub fn decode_list(v: &serde_json::Value) -> Result<Vec<GpuEvidence>, String> {
        let list = WireList::deserialize(v).map_err(|e| format!("NVIDIA device evidence: {e}"))?;
        if list.device_evidence_list.len() > MAX_GPUS {
            return Err(format!(
                "NVIDIA device evidence: {} devices, at most {MAX_GPUS}",
                list.device_evidence_list.len()
            ));
        }
        list.device_evidence_list
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                let b64 = |what: &str, s: &str| {
                    B64.decode(s.trim())
                        .map_err(|e| format!("NVIDIA device {i}: {what} is not base64: {e}"))
                };
                let report = match hex::decode(d.evidence.trim()) {
                    Ok(r) => r,
                    Err(_) => b64("evidence", &d.evidence)?,
                };
                Ok(GpuEvidence {
                    arch: d.arch,
                    uuid: d.uuid,
                    report,
                    certificate: b64("certificate", &d.certificate)?,
                    cc_mode: d.cc_mode,
                    protected_pcie: d.protected_pcie,
                    ocsp: d
                        .ocsp
                        .iter()
                        .map(|o| b64("ocsp", o))
                        .collect::<Result<_, _>>()?,
                    rims: d
                        .rims
                        .iter()
                        .map(|r| b64("rims", r))
                        .collect::<Result<_, _>>()?,
                })
            })
            .collect()
    }

    /// Writes the device list (base64 everywhere).
    pub fn encode_list(gpus: &[GpuEvidence]) -> serde_json::Value {
        let list = WireList {
            device_evidence_list: gpus
                .iter()
                .map(|g| WireDevice {
                    arch: g.arch.clone(),
                    uuid: g.uuid.clone(),
                    evidence: B64.encode(&g.report),
                    certificate: B64.encode(&g.certificate),
                    cc_mode: g.cc_mode,
                    protected_pcie: g.protected_pcie,
                    ocsp: g.ocsp.iter().map(|o| B64.encode(o)).collect(),
                    rims: g.rims.iter().map(|r| B64.encode(r)).collect(),
                })
                .collect(),
        };
        serde_json::to_value(list).unwrap_or_default()
    }
}

/// One GPU's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct GpuVerdict {
    pub index: usize,
    pub uuid: String,
    pub arch: String,
    pub cc_mode: Option<CcMode>,
    pub evidence_sha256: String,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// The set's outcome: each GPU's verdict and the set's own reasons.
#[derive(Debug, Clone, Serialize)]
pub struct GpuSetVerdict {
    #[serde(serialize_with = "ser_accept")]
    pub accepted: bool,
    pub gpus: Vec<GpuVerdict>,
    pub reasons: Vec<Reason>,
}

fn ser_accept<S: serde::Serializer>(accepted: &bool, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if *accepted { "accept" } else { "reject" })
}

impl GpuSetVerdict {
    /// Every reason code, the set's first, then each GPU's.
    pub fn reason_codes(&self) -> Vec<String> {
        self.reasons
            .iter()
            .map(|r| r.kind.code().to_string())
            .chain(self.gpus.iter().flat_map(|g| g.verdict.reason_codes()))
            .collect()
    }

    /// One line per reason, naming the GPU.
    pub fn summary(&self) -> String {
        let mut lines: Vec<String> = self
            .reasons
            .iter()
            .map(|r| format!("GPUs: {} ({})", r.message, r.kind.code()))
            .collect();
        for g in &self.gpus {
            for r in &g.verdict.reasons {
                lines.push(format!(
                    "GPU {} ({}): {} ({})",
                    g.index,
                    g.uuid,
                    r.message,
                    r.kind.code()
                ));
            }
        }
        lines.join("; ")
    }

    /// Whether any GPU's chain ended in a simulated root.
    pub fn simulated(&self) -> bool {
        self.gpus.iter().any(|g| g.verdict.simulated)
    }

    fn reject(&mut self, kind: ReasonKind, message: impl Into<String>) {
        self.accepted = false;
        self.reasons.push(Reason::new(kind, message));
    }
}

/// Verifies every GPU of a guest: each report against its chain, OCSP,
/// RIMs and the policy, all carrying `nonce`; then the set's rules.
pub fn verify_gpus(
    gpus: &[GpuEvidence],
    nonce: &[u8; 32],
    policy: &Policy,
    now: UnixTime,
) -> GpuSetVerdict {
    let p = &policy.nvidia;
    let mut set = GpuSetVerdict {
        accepted: true,
        gpus: Vec::with_capacity(gpus.len()),
        reasons: Vec::new(),
    };
    // Each report parsed once: verified, then compared with the others.
    let reports: Vec<Result<NvidiaReport, _>> = gpus
        .iter()
        .map(|g| NvidiaReport::parse(&g.report))
        .collect();
    for (index, (g, report)) in gpus.iter().zip(&reports).enumerate() {
        let verdict = verify_one(g, report.as_ref(), nonce, policy, now);
        set.accepted &= verdict.accepted;
        set.gpus.push(GpuVerdict {
            index,
            uuid: g.uuid.clone(),
            arch: g.arch.clone(),
            cc_mode: g.cc_mode,
            evidence_sha256: g.report_sha256(),
            verdict,
        });
    }
    let count = u32::try_from(gpus.len()).unwrap_or(u32::MAX);
    if count < p.min_gpus {
        set.reject(
            ReasonKind::GpuCountBelowMinimum,
            format!(
                "{count} GPUs attested, the policy requires at least {}",
                p.min_gpus
            ),
        );
    }
    // The same GPU twice: its UUID, or its signed report (whatever unsigned
    // bytes follow it), listed again.
    let signed = |i: usize| {
        reports
            .get(i)
            .and_then(|r| r.as_ref().ok())
            .map(|r| r.signed_bytes())
    };
    for (i, g) in gpus.iter().enumerate() {
        let repeated = (0..i).find(|&j| {
            gpus.get(j).is_some_and(|h| h.uuid == g.uuid)
                || signed(i).is_some_and(|s| signed(j) == Some(s))
        });
        if let Some(j) = repeated {
            set.reject(
                ReasonKind::EvidenceMalformed,
                format!("GPU {i} repeats GPU {j} (same UUID or the same signed report)"),
            );
        }
    }
    if gpus.len() > 1 && !p.allow_unprotected_pcie {
        let unprotected: Vec<usize> = gpus
            .iter()
            .zip(&reports)
            .enumerate()
            .filter(|(_, (g, report))| !protected_pcie(g, report.as_ref().ok()))
            .map(|(i, _)| i)
            .collect();
        if !unprotected.is_empty() {
            set.reject(
                ReasonKind::GpuProtectedPcieOff,
                format!(
                    "{} GPUs without protected PCIe (GPUs {unprotected:?} neither report nor state it)",
                    gpus.len()
                ),
            );
        }
    }
    set
}

/// Protected PCIe: NVML says so and, when the report carries the signed
/// status field, it agrees.
fn protected_pcie(g: &GpuEvidence, report: Option<&NvidiaReport>) -> bool {
    let signed = report.and_then(|r| r.opaque.protected_pcie_status);
    g.protected_pcie == Some(true) && signed != Some(0)
}

/// Why a GPU in `mode` cannot be trusted with secrets under `p`, if it
/// cannot: CC off (or not stated), or DEVTOOLS. The guest applies the
/// same rule to itself with the strict defaults before asking for keys.
pub fn mode_refusal(mode: Option<CcMode>, p: &NvidiaPolicy) -> Option<Reason> {
    match mode {
        Some(CcMode::On) => None,
        Some(CcMode::Devtools) if !p.allow_devtools => Some(Reason::new(
            ReasonKind::GpuDevtoolsOn,
            "the GPU runs CC in developer-tools mode (its memory can be inspected)",
        )),
        Some(CcMode::Off) if !p.allow_cc_off => Some(Reason::new(
            ReasonKind::GpuCcModeOff,
            "the GPU's confidential-computing mode is off",
        )),
        None if !p.allow_cc_off => Some(Reason::new(
            ReasonKind::GpuCcModeOff,
            "the evidence does not state the GPU's CC mode (cc_mode), and the policy requires it on",
        )),
        Some(CcMode::Devtools | CcMode::Off) | None => None,
    }
}

fn verify_one(
    g: &GpuEvidence,
    report: Result<&NvidiaReport, &crate::ParseError>,
    nonce: &[u8; 32],
    policy: &Policy,
    now: UnixTime,
) -> Verdict {
    let p = &policy.nvidia;
    let mut v = match report {
        Ok(report) => {
            let collateral = GpuCollateral {
                chain: Some(&g.certificate),
                rims: &g.rims,
                ocsp: &g.ocsp,
                nonce: Some(nonce),
            };
            verify_nvidia_with(report, &collateral, policy, now)
        }
        Err(e) => {
            let mut v = Verdict::new(crate::verdict::Platform::Nvidia);
            v.reject(ReasonKind::EvidenceMalformed, e.to_string());
            v
        }
    };
    if !p.architectures.is_empty() && !p.architectures.contains(&g.arch.to_ascii_lowercase()) {
        v.reject(
            ReasonKind::GpuArchitectureNotAllowed,
            format!("architecture {:?} is not allowed", g.arch),
        );
    }
    if let Some(r) = mode_refusal(g.cc_mode, p) {
        v.reject(r.kind, r.message);
    }
    v
}
