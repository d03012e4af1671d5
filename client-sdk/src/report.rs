//! A verification report for people: the verdict, why, and what the
//! evidence claims, one line each.

use ciel_attestation::{UnixTime, Verdict};
use std::fmt::Write;

/// Renders `verdict` (verified at `now`) as aligned text lines.
pub fn render(v: &Verdict, now: UnixTime) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "verdict:     {}",
        if v.accepted { "ACCEPT" } else { "REJECT" }
    );
    let _ = writeln!(o, "platform:    {}", v.platform);
    let _ = writeln!(o, "verified at: {now}");
    let _ = writeln!(o, "tcb status:  {}", v.tcb_status);
    if v.simulated {
        let _ = writeln!(
            o,
            "trust root:  SIMULATED (no hardware, no confidentiality)"
        );
    }
    if !v.advisory_ids.is_empty() {
        let _ = writeln!(o, "advisories:  {}", v.advisory_ids.join(", "));
    }
    for r in &v.reasons {
        let _ = writeln!(o, "reason:      [{}] {}", r.kind.code(), r.message);
    }
    if let Some(claims) = &v.claims
        && let Ok(serde_json::Value::Object(map)) = serde_json::to_value(claims)
    {
        let _ = writeln!(o, "claims:");
        for (k, val) in map {
            let s = match val {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            let _ = writeln!(o, "  {k}: {s}");
        }
    }
    o
}

/// Renders a GPU set's verification: the decision, each GPU's verdict and
/// reasons, the set's own reasons.
pub fn render_gpus(set: &ciel_attestation::nvidia::GpuSetVerdict, now: UnixTime) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "verdict:     {} ({} GPUs)",
        if set.accepted { "ACCEPT" } else { "REJECT" },
        set.gpus.len()
    );
    let _ = writeln!(o, "verified at: {now}");
    if set.simulated() {
        let _ = writeln!(
            o,
            "trust root:  SIMULATED (no hardware, no confidentiality)"
        );
    }
    for g in &set.gpus {
        let (driver, vbios) = match &g.verdict.claims {
            Some(ciel_attestation::Claims::Nvidia(c)) => {
                (c.driver_version.as_deref(), c.vbios_version.as_deref())
            }
            _ => (None, None),
        };
        let _ = writeln!(
            o,
            "gpu {}:       [{}] {} {}, driver {}, VBIOS {}, CC {}",
            g.index,
            if g.verdict.accepted { " ok " } else { "FAIL" },
            g.uuid,
            g.arch,
            driver.unwrap_or("?"),
            vbios.unwrap_or("?"),
            g.cc_mode.map_or("not stated", |m| m.name()),
        );
        for r in &g.verdict.reasons {
            let _ = writeln!(o, "  reason:    [{}] {}", r.kind.code(), r.message);
        }
    }
    for r in &set.reasons {
        let _ = writeln!(o, "reason:      [{}] {}", r.kind.code(), r.message);
    }
    o
}

/// Renders a guest verification ([`crate::attested`]): the decision, what
/// the guest claims, each check, then the attestation verdict's details.
pub fn render_verification(v: &crate::attested::Verification) -> String {
    let mut o = String::new();
    let c = &v.claims;
    let _ = writeln!(
        o,
        "guest:       {}",
        if v.accepted { "VERIFIED" } else { "REFUSED" }
    );
    let _ = writeln!(o, "runtime:     {} on {}", c.runtime, c.platform);
    let _ = writeln!(
        o,
        "model:       {} (sha256 {})",
        c.model.name, c.model.sha256
    );
    if let Some(e) = &c.embedding_model {
        let _ = writeln!(o, "embeddings:  {} (sha256 {})", e.name, e.sha256);
    }
    let _ = writeln!(o, "tls key:     sha256 {}", c.tls_spki_sha256);
    let _ = writeln!(o, "checks:");
    for check in &v.checks {
        let _ = writeln!(
            o,
            "  [{}] {}: {}",
            if check.ok { " ok " } else { "FAIL" },
            check.name,
            check.detail
        );
    }
    if let Some(verdict) = &v.verdict {
        let _ = writeln!(o, "evidence:");
        for line in render(verdict, v.at).lines() {
            let _ = writeln!(o, "  {line}");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use ciel_attestation::{Collateral, Evidence, Policy, verify};

    #[test]
    fn report_names_verdict_reasons_and_claims() {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../attestation/testdata/snp/genoa_oc.report.bin"
        ))
        .unwrap_or_default();
        let Ok(e) = Evidence::parse(&bytes) else {
            panic!("testdata report")
        };
        let v = verify(
            &e,
            &Collateral::default(),
            &Policy::authenticity_only(),
            UnixTime(0),
        );
        let text = render(&v, UnixTime(0));
        assert!(
            text.starts_with(
                "verdict:     REJECT\nplatform:    snp\nverified at: 1970-01-01T00:00:00Z\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("reason:      [certificate_missing]"),
            "{text}"
        );
        assert!(text.contains("  measurement: c57729018b0a6fb9"), "{text}");
    }
}
