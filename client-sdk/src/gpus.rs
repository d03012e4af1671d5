//! The GPU half of a guest's attestation document: the claims name every
//! GPU (identity, versions, mode, report digest) and the CPU evidence binds
//! the claims; the document carries each GPU's report and chain. The client
//! checks that the two agree, then verifies every report as the key broker
//! does (genuine, carrying the document's GPU nonce, CC on, DEVTOOLS off,
//! the policy's allowlists, OCSP) and the set (minimum count, protected
//! PCIe, no GPU twice).

use crate::attested::Check;
use ciel_attestation::nvidia::{GpuEvidence, GpuSetVerdict, NvidiaReport, verify_gpus};
use ciel_attestation::{Policy, ReasonKind, UnixTime};
use ciel_protocol::claims::{AttestationDocument, GpuClaims};

/// The check that fails, alone, when the claims name GPUs whose evidence
/// the document left out (a certificate's copy, when several GPUs' reports
/// do not fit a TLS handshake): the client then fetches the whole document
/// from `/v1/attestation` on the connection before anything else.
pub const EVIDENCE_ELSEWHERE: &str = "gpu evidence";

/// The checks of `doc`'s GPUs, and the set's verdict when the reports
/// were verified. Nothing when the guest claims no GPU and the policy
/// requires none.
pub fn gpu_checks(
    doc: &AttestationDocument,
    policy: &Policy,
    now: UnixTime,
) -> (Vec<Check>, Option<GpuSetVerdict>) {
    let claims = &doc.claims;
    if claims.gpus.is_empty() && doc.gpu_evidence.is_none() && policy.nvidia.min_gpus == 0 {
        return (Vec::new(), None);
    }
    let mut checks = Vec::new();
    let unbound = |detail: String| Check {
        name: "gpu binding",
        ok: false,
        detail: format!("{detail} ({})", ReasonKind::GpuEvidenceUnbound.code()),
    };
    let evidence = match &doc.gpu_evidence {
        None if claims.gpus.is_empty() => Vec::new(),
        None => {
            checks.push(Check {
                name: EVIDENCE_ELSEWHERE,
                ok: false,
                detail: format!(
                    "the claims name {} GPUs but this document carries none of their evidence (GET /v1/attestation carries it)",
                    claims.gpus.len()
                ),
            });
            return (checks, None);
        }
        Some(list) => match GpuEvidence::decode_list(list) {
            Ok(e) => e,
            Err(e) => {
                checks.push(unbound(format!("the GPU evidence cannot be read: {e}")));
                return (checks, None);
            }
        },
    };
    match binding_mismatch(&claims.gpus, &evidence) {
        Some(why) => {
            checks.push(unbound(why));
            return (checks, None);
        }
        None if !evidence.is_empty() => checks.push(Check {
            name: "gpu binding",
            ok: true,
            detail: format!(
                "the attested claims name these {} GPU reports by SHA-256",
                evidence.len()
            ),
        }),
        None => {}
    }
    let nonce = match claims.gpu_nonce() {
        Ok(n) => n,
        Err(e) => {
            checks.push(unbound(e.to_string()));
            return (checks, None);
        }
    };
    let set = verify_gpus(&evidence, &nonce, policy, now);
    for (g, c) in set.gpus.iter().zip(&claims.gpus) {
        let who = format!(
            "GPU {} ({}, {}, driver {}, VBIOS {}, CC {})",
            g.index,
            g.uuid,
            g.arch,
            c.driver.as_deref().unwrap_or("?"),
            c.vbios.as_deref().unwrap_or("?"),
            c.cc_mode.as_deref().unwrap_or("not stated"),
        );
        let detail = if g.verdict.accepted {
            let e = evidence.get(g.index);
            format!(
                "{who}: genuine{}; carries this document's GPU nonce; {} OCSP responses good; {} RIMs matched",
                if g.verdict.simulated {
                    " (SIMULATED root named by the policy)"
                } else {
                    ""
                },
                e.map_or(0, |e| e.ocsp.len()),
                e.map_or(0, |e| e.rims.len()),
            )
        } else {
            format!("{who}: {}", g.verdict.summary())
        };
        checks.push(Check {
            name: "gpu",
            ok: g.verdict.accepted,
            detail,
        });
    }
    checks.push(Check {
        name: "gpus",
        ok: set.reasons.is_empty(),
        detail: if set.reasons.is_empty() {
            format!(
                "{} GPUs (the policy requires at least {}){}",
                evidence.len(),
                policy.nvidia.min_gpus,
                if evidence.len() > 1 {
                    ", protected PCIe between them"
                } else {
                    ""
                }
            )
        } else {
            set.reasons
                .iter()
                .map(|r| format!("{} ({})", r.message, r.kind.code()))
                .collect::<Vec<_>>()
                .join("; ")
        },
    });
    (checks, Some(set))
}

/// Where the claims and the evidence disagree, if they do: the same GPUs
/// in the same order, each claim what its report and NVML's fields say.
fn binding_mismatch(claims: &[GpuClaims], evidence: &[GpuEvidence]) -> Option<String> {
    if claims.len() != evidence.len() {
        return Some(format!(
            "the claims name {} GPUs, the document carries evidence of {}",
            claims.len(),
            evidence.len()
        ));
    }
    for (i, (c, e)) in claims.iter().zip(evidence).enumerate() {
        let differs = |field: &str, claimed: &dyn std::fmt::Debug, actual: &dyn std::fmt::Debug| {
            Some(format!(
                "GPU {i}: the claims say {field} {claimed:?}, its evidence {actual:?}"
            ))
        };
        if usize::try_from(c.index).ok() != Some(i) {
            return differs("index", &c.index, &i);
        }
        if c.evidence_sha256 != e.report_sha256() {
            return differs("report SHA-256", &c.evidence_sha256, &e.report_sha256());
        }
        if c.uuid != e.uuid {
            return differs("uuid", &c.uuid, &e.uuid);
        }
        if c.arch != e.arch {
            return differs("arch", &c.arch, &e.arch);
        }
        let mode = e.cc_mode.map(|m| m.name().to_string());
        if c.cc_mode != mode {
            return differs("cc_mode", &c.cc_mode, &mode);
        }
        if c.protected_pcie != e.protected_pcie {
            return differs("protected_pcie", &c.protected_pcie, &e.protected_pcie);
        }
        // The report's digest matched: its versions are what it signed.
        if let Ok(r) = NvidiaReport::parse(&e.report) {
            if c.driver != r.opaque.driver_version {
                return differs("driver", &c.driver, &r.opaque.driver_version);
            }
            if c.vbios != r.opaque.vbios_version {
                return differs("vbios", &c.vbios, &r.opaque.vbios_version);
            }
        }
    }
    None
}
