//! Negative tests on real SNP evidence: any change to what is signed, to the
//! signature, or to any certificate must turn the verdict to reject, with a
//! reason that says why.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod common;
use ciel_attestation::snp::report::SIGNED_LEN;
use ciel_attestation::{Collateral, Evidence, Policy, ReasonKind, verify};
use common::{SNP_AT, snp_vectors};

fn verdict_for(
    report: &[u8],
    col: &Collateral,
) -> Result<ciel_attestation::Verdict, ciel_attestation::ParseError> {
    Evidence::parse(report).map(|e| verify(&e, col, &Policy::authenticity_only(), SNP_AT))
}

#[test]
fn real_reports_are_accepted_untouched() {
    for v in snp_vectors() {
        let verdict = verdict_for(&v.report, &v.collateral()).unwrap();
        assert!(verdict.accepted, "{}: {:?}", v.name, verdict.reasons);
        // And with the built-in chain.
        let col = Collateral {
            snp_signer: Some(v.vcek.clone()),
            ..Default::default()
        };
        assert!(
            verdict_for(&v.report, &col).unwrap().accepted,
            "{} (built-in chain)",
            v.name
        );
    }
}

#[test]
fn flipping_any_signed_byte_rejects_with_signature_invalid() {
    for v in snp_vectors() {
        let col = v.collateral();
        for i in 0..SIGNED_LEN {
            let mut r = v.report.clone();
            r[i] ^= 0x01;
            match verdict_for(&r, &col) {
                // Version or algorithm field no longer parses: refused before verification.
                Err(_) => assert!(
                    i < 4 || (0x34..0x38).contains(&i),
                    "{}: byte {i:#x} failed to parse",
                    v.name
                ),
                Ok(verdict) => {
                    assert!(
                        !verdict.accepted,
                        "{}: byte {i:#x} flipped was accepted",
                        v.name
                    );
                    assert!(
                        verdict.has(ReasonKind::EvidenceSignatureInvalid),
                        "{}: byte {i:#x}: {:?}",
                        v.name,
                        verdict.reasons
                    );
                }
            }
        }
    }
}

#[test]
fn flipping_any_signature_byte_rejects() {
    for v in snp_vectors() {
        let col = v.collateral();
        for i in SIGNED_LEN..v.report.len() {
            let mut r = v.report.clone();
            r[i] ^= 0x01;
            let verdict = verdict_for(&r, &col).unwrap();
            assert!(!verdict.accepted, "{}: signature byte {i:#x}", v.name);
            assert!(
                verdict.has(ReasonKind::EvidenceSignatureInvalid),
                "{}: {i:#x}: {:?}",
                v.name,
                verdict.reasons
            );
        }
    }
}

/// Reasons that may explain a tampered certificate.
const CERT_REASONS: [ReasonKind; 6] = [
    ReasonKind::CertificateMalformed,
    ReasonKind::CertificateSignatureInvalid,
    ReasonKind::ChainIssuerMismatch,
    ReasonKind::UntrustedRoot,
    ReasonKind::UnsupportedAlgorithm,
    ReasonKind::CertificateMissing,
];

#[test]
fn flipping_any_certificate_byte_rejects() {
    for v in snp_vectors() {
        // The VCEK.
        for i in 0..v.vcek.len() {
            let mut vcek = v.vcek.clone();
            vcek[i] ^= 0x01;
            let col = Collateral {
                snp_signer: Some(vcek),
                snp_chain: Some(v.chain.clone()),
                ..Default::default()
            };
            let verdict = verdict_for(&v.report, &col).unwrap();
            assert!(!verdict.accepted, "{}: VCEK byte {i}", v.name);
            assert!(
                verdict
                    .reasons
                    .iter()
                    .any(|r| CERT_REASONS.contains(&r.kind)
                        || r.kind == ReasonKind::EvidenceSignatureInvalid),
                "{}: VCEK byte {i}: {:?}",
                v.name,
                verdict.reasons
            );
        }
    }
    // The ASK and ARK, for one product (the same code path for each).
    let v = &snp_vectors()[0];
    let blocks = pem::parse_many(&v.chain).unwrap();
    for which in 0..2 {
        let der = blocks[which].contents().to_vec();
        for i in 0..der.len() {
            let mut bad = der.clone();
            bad[i] ^= 0x01;
            let mut certs: Vec<pem::Pem> = blocks.clone();
            certs[which] = pem::Pem::new("CERTIFICATE", bad);
            let col = Collateral {
                snp_signer: Some(v.vcek.clone()),
                snp_chain: Some(pem::encode_many(&certs).into_bytes()),
                ..Default::default()
            };
            let verdict = verdict_for(&v.report, &col).unwrap();
            assert!(!verdict.accepted, "{} byte {i}", ["ASK", "ARK"][which]);
            assert!(
                verdict
                    .reasons
                    .iter()
                    .any(|r| CERT_REASONS.contains(&r.kind)),
                "{} byte {i}: {:?}",
                ["ASK", "ARK"][which],
                verdict.reasons
            );
        }
    }
}

#[test]
fn another_products_chain_is_rejected() {
    let vs = snp_vectors();
    let (genoa, milan) = (&vs[0], &vs[1]);
    for (report, vcek, chain) in [(genoa, genoa, milan), (milan, milan, genoa)] {
        let col = Collateral {
            snp_signer: Some(vcek.vcek.clone()),
            snp_chain: Some(chain.chain.clone()),
            ..Default::default()
        };
        let verdict = verdict_for(&report.report, &col).unwrap();
        assert!(!verdict.accepted);
        assert!(
            verdict.has(ReasonKind::ChainIssuerMismatch),
            "{:?}",
            verdict.reasons
        );
    }
    // Another chip's VCEK (same product) does not sign this report.
    let col = Collateral {
        snp_signer: Some(vs[2].vcek.clone()),
        snp_chain: Some(milan.chain.clone()),
        ..Default::default()
    };
    let verdict = verdict_for(&milan.report, &col).unwrap();
    assert!(
        verdict.has(ReasonKind::EvidenceSignatureInvalid),
        "{:?}",
        verdict.reasons
    );
    assert!(
        verdict.has(ReasonKind::VcekChipIdMismatch),
        "{:?}",
        verdict.reasons
    );
}

#[test]
fn certificates_are_checked_at_the_given_instant() {
    let v = &snp_vectors()[0]; // Genoa VCEK valid 2025-08-07 .. 2032-08-07
    let e = Evidence::parse(&v.report).unwrap();
    let before = verify(
        &e,
        &v.collateral(),
        &Policy::authenticity_only(),
        ciel_attestation::UnixTime(1_754_000_000),
    );
    assert!(
        before.has(ReasonKind::CertificateNotYetValid),
        "{:?}",
        before.reasons
    );
    let after = verify(
        &e,
        &v.collateral(),
        &Policy::authenticity_only(),
        ciel_attestation::UnixTime(2_000_000_000),
    );
    assert!(
        after.has(ReasonKind::CertificateExpired),
        "{:?}",
        after.reasons
    );
}

#[test]
fn missing_vcek_is_a_clear_rejection() {
    let v = &snp_vectors()[0];
    let verdict = verdict_for(&v.report, &Collateral::default()).unwrap();
    assert!(verdict.has(ReasonKind::CertificateMissing));
    // Claims are still reported.
    assert!(verdict.claims.is_some());
}
