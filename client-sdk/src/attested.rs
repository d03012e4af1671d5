//! Deciding whether a guest's attestation document is acceptable: pure, so
//! the TLS verifier, `/v1/attestation` checks, `ciel verify` and tests all
//! run the same code.
//!
//! Checks, each reported on its own line:
//! 1. **evidence**: genuine (chain to a root the policy trusts) and allowed
//!    by the policy (measurement, TCB, debug, …), with `report_data`
//!    required to equal SHA-512 of the claims' canonical JSON — so every
//!    claim below is the attested guest's own;
//! 2. **tls binding**: the claims' TLS key is the key of this session's
//!    certificate (no one in between);
//! 3. **model**: the served model's digest is one the policy allows;
//! 4. **nonce** (fresh evidence only): the claims carry the client's nonce;
//! 5. **init-data** (when the guest was configured by one, as in a Kata
//!    Confidential Containers pod): the evidence's `HOST_DATA` /
//!    `MRCONFIGID` is the digest of the document's exact bytes;
//! 6. **evidence age** (certificate evidence, when the policy sets
//!    `max_evidence_age_seconds`): the claims' `issued_at` is recent enough;
//! 7. **GPUs** (when the guest claims any, or the policy requires some):
//!    the document's GPU reports are the ones the claims name, each
//!    verified, and the set as a whole ([`crate::gpus`]).

use ciel_attestation::collateral::CollateralLookup;
use ciel_attestation::nvidia::GpuSetVerdict;
use ciel_attestation::tee_evidence;
use ciel_attestation::{Policy, ReasonKind, UnixTime, Verdict};
use ciel_protocol::binding;
use ciel_protocol::claims::{AttestationDocument, RuntimeClaims};
use ciel_protocol::initdata::InitData;

/// One check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// The outcome of verifying one attestation document.
#[derive(Debug, Clone)]
pub struct Verification {
    pub accepted: bool,
    pub checks: Vec<Check>,
    /// The attestation verdict (absent if the evidence could not be decoded).
    pub verdict: Option<Verdict>,
    /// The GPUs' verdicts, when there were GPU reports to verify.
    pub gpus: Option<GpuSetVerdict>,
    pub claims: RuntimeClaims,
    /// The TLS key (DER SubjectPublicKeyInfo) the document was checked for.
    pub tls_spki_der: Vec<u8>,
    pub at: UnixTime,
}

impl Verification {
    /// Whether all that is missing is a fresh document: the GPUs' evidence
    /// left out of a certificate too small for it, or evidence older than
    /// the policy's `max_evidence_age_seconds`; everything else verified.
    pub fn awaits_fresh_document(&self) -> bool {
        !self.accepted
            && self
                .checks
                .iter()
                .filter(|c| !c.ok)
                .all(|c| c.name == crate::gpus::EVIDENCE_ELSEWHERE || c.name == EVIDENCE_AGE)
    }

    /// The first failed check, for error messages.
    pub fn first_failure(&self) -> Option<&Check> {
        self.checks.iter().find(|c| !c.ok)
    }

    /// A JSON object for `--json`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "accepted": self.accepted,
            "verified_at": self.at.to_string(),
            "checks": self.checks,
            "claims": self.claims,
            "attestation": self.verdict.as_ref().map(Verdict::to_json),
            "gpus": self.gpus,
        })
    }
}

/// Verifies `doc` for a TLS session whose certificate key is `spki_der`.
/// `nonce`: the client's nonce when the evidence was requested fresh.
pub fn verify_document(
    doc: &AttestationDocument,
    spki_der: &[u8],
    policy: &Policy,
    now: UnixTime,
    nonce: Option<&[u8]>,
) -> Verification {
    verify_document_with(doc, spki_der, policy, None, now, nonce)
}

/// [`verify_document`], with a source of collateral the evidence does not
/// carry (a bundle: a TDX quote's DCAP collateral, AMD's CRL).
pub fn verify_document_with(
    doc: &AttestationDocument,
    spki_der: &[u8],
    policy: &Policy,
    collateral: Option<&dyn CollateralLookup>,
    now: UnixTime,
    nonce: Option<&[u8]>,
) -> Verification {
    let mut checks = Vec::new();
    let mut check = |name, ok, detail: String| checks.push(Check { name, ok, detail });
    let claims = doc.claims.clone();
    let verdict = match (
        tee_evidence::decode(&doc.tee, &doc.evidence, collateral),
        claims.report_data(),
    ) {
        (Ok(decoded), Ok(report_data)) => {
            // The evidence holds the claims' hash raw or, when it came
            // through a text-only interface (the CoCo attestation agent),
            // in its text form; either binds the same claims.
            let held = binding::matching_form(&decoded.bound_report_data(), &report_data);
            let mut p = policy.clone();
            p.report_data = Some(held.unwrap_or(report_data));
            let v = decoded.verify(&p, now);
            let detail = if v.accepted {
                format!(
                    "{} evidence accepted{}; report_data = {}",
                    v.platform,
                    if v.simulated {
                        " (SIMULATED root named by the policy: no confidentiality)"
                    } else {
                        ""
                    },
                    if held == Some(report_data) {
                        "SHA-512(claims)"
                    } else {
                        "SHA-512(claims) in text form (base64url of 48 bytes)"
                    }
                )
            } else {
                v.summary()
            };
            check("evidence", v.accepted, detail);
            if v.has(ReasonKind::ReportDataMismatch) {
                check(
                    "claims binding",
                    false,
                    "the evidence's report_data is not SHA-512 of these claims".into(),
                );
            }
            Some(v)
        }
        (Err(e), _) => {
            check("evidence", false, format!("cannot decode: {e}"));
            None
        }
        (_, Err(e)) => {
            check("evidence", false, e.to_string());
            None
        }
    };
    if let Some(body) = &doc.init_data {
        let (ok, detail) = init_data_check(body, doc);
        check("init-data", ok, detail);
    }
    if claims.platform != doc.tee {
        check(
            "platform",
            false,
            format!(
                "claims say {:?} but the evidence is {:?}",
                claims.platform, doc.tee
            ),
        );
    }
    let spki_hash = hex::encode(ring::digest::digest(&ring::digest::SHA256, spki_der));
    let bound = claims.tls_spki_sha256.eq_ignore_ascii_case(&spki_hash);
    check(
        "tls binding",
        bound,
        if bound {
            format!("TLS key SHA-256 {spki_hash} is the attested one")
        } else {
            format!(
                "this session's TLS key is {spki_hash}, the attested one is {}",
                claims.tls_spki_sha256
            )
        },
    );
    // Every model the guest serves (its chat model, and its embedding
    // model if it has one) must be one the policy allows.
    let allowed = |sha256: &str| {
        policy.model_sha256.is_empty()
            || policy
                .model_sha256
                .iter()
                .any(|m| hex::encode(m).eq_ignore_ascii_case(sha256))
    };
    for (what, m) in std::iter::once(("model", &claims.model)).chain(
        claims
            .embedding_model
            .iter()
            .map(|m| ("embedding model", m)),
    ) {
        let ok = allowed(&m.sha256);
        check(
            what,
            ok,
            if policy.model_sha256.is_empty() {
                format!(
                    "{} sha256 {} (the policy allows any model)",
                    m.name, m.sha256
                )
            } else if ok {
                format!("{} sha256 {} is allowed", m.name, m.sha256)
            } else {
                format!(
                    "{} sha256 {} is not in the policy's model_sha256",
                    m.name, m.sha256
                )
            },
        );
    }
    if let Some(n) = nonce {
        let want = hex::encode(n);
        let ok = claims.nonce.as_deref() == Some(want.as_str());
        check(
            "freshness",
            ok,
            if ok {
                "the evidence carries this client's nonce".into()
            } else {
                format!("expected nonce {want}, got {:?}", claims.nonce)
            },
        );
    }
    // Evidence from a certificate (no nonce of the client's): no older than
    // the policy allows, by the time the guest stamped it.
    if let (None, Some(max)) = (nonce, policy.max_evidence_age_seconds) {
        let (ok, detail) = evidence_age(claims.issued_at, max, now);
        check(EVIDENCE_AGE, ok, detail);
    }
    let (gpu_checks, gpus) = crate::gpus::gpu_checks(doc, policy, now);
    checks.extend(gpu_checks);
    let accepted = checks.iter().all(|c| c.ok);
    Verification {
        accepted,
        checks,
        verdict,
        gpus,
        claims,
        tls_spki_der: spki_der.to_vec(),
        at: now,
    }
}

/// The check that fails, alone or with [`crate::gpus::EVIDENCE_ELSEWHERE`],
/// when a certificate's evidence is older than the policy's
/// `max_evidence_age_seconds`: the client then fetches fresh evidence.
pub const EVIDENCE_AGE: &str = "evidence age";

/// Clocks may disagree by this much before a time is "in the future".
const CLOCK_SKEW_SECONDS: u64 = 300;

/// Whether evidence stamped `issued_at` is at most `max` seconds old at `now`.
fn evidence_age(issued_at: Option<u64>, max: u64, now: UnixTime) -> (bool, String) {
    let code = ReasonKind::EvidenceTooOld.code();
    let Some(at) = issued_at else {
        return (
            false,
            format!(
                "the claims state no time (issued_at); the policy takes evidence at most {max} s old ({code})"
            ),
        );
    };
    let at_time = UnixTime(at);
    if at > now.secs().saturating_add(CLOCK_SKEW_SECONDS) {
        return (
            false,
            format!("made at {at_time} by the guest's clock, after this client's {now} ({code})"),
        );
    }
    let age = now.secs().saturating_sub(at);
    if age > max {
        (
            false,
            format!("made at {at_time}, {age} s ago: older than the policy's {max} s ({code})"),
        )
    } else {
        (
            true,
            format!("made at {at_time}, {age} s ago (at most {max} s)"),
        )
    }
}

/// Whether the evidence of `doc` binds the init-data `body`.
fn init_data_check(body: &str, doc: &AttestationDocument) -> (bool, String) {
    let init = match InitData::parse(body) {
        Ok(i) => i,
        Err(e) => return (false, e.to_string()),
    };
    let anchor = tee_evidence::init_data_anchor(&doc.tee, &doc.evidence)
        .ok()
        .flatten();
    let Some(anchor) = anchor else {
        return (
            false,
            "the evidence has no HOST_DATA, MRCONFIGID or quoted PCR 8 to bind init-data".into(),
        );
    };
    match anchor.binds(&init) {
        Ok(what) => (
            true,
            format!(
                "{what}; entries: {}",
                init.entries()
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Err(why) => (false, why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_age_is_bounded_both_ways_and_must_be_stated() {
        let now = UnixTime(1_800_000_000);
        let (ok, detail) = evidence_age(Some(now.secs() - 60), 3600, now);
        assert!(ok, "{detail}");
        assert!(detail.contains("60 s ago"), "{detail}");
        for (at, words) in [
            (Some(now.secs() - 7200), "older than the policy's 3600 s"),
            (Some(now.secs() + 3600), "after this client's"),
            (None, "state no time"),
        ] {
            let (ok, detail) = evidence_age(at, 3600, now);
            assert!(!ok, "{at:?}: {detail}");
            assert!(
                detail.contains(words) && detail.ends_with("(evidence_too_old)"),
                "{detail}"
            );
        }
        // A guest clock a little ahead is not a lie.
        assert!(evidence_age(Some(now.secs() + 120), 3600, now).0);
    }
}
