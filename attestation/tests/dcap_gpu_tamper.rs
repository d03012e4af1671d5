//! Negative tests on real DCAP and NVIDIA evidence.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod common;
use ciel_attestation::collateral::DcapCollateral;
use ciel_attestation::evidence::decode_hex_text;
use ciel_attestation::{Collateral, Evidence, Policy, ReasonKind, UnixTime, verify};
use common::{DCAP_AT, testdata};

fn dcap(quote: &[u8], col: &DcapCollateral, policy: &Policy) -> Option<ciel_attestation::Verdict> {
    let e = Evidence::parse(quote).ok()?;
    Some(verify(
        &e,
        &Collateral {
            dcap: Some(col.clone()),
            ..Default::default()
        },
        policy,
        DCAP_AT,
    ))
}

#[test]
fn tdx_quote_accepts_and_every_signed_byte_matters() {
    let quote = testdata("tdx/tdx_quote");
    let col = DcapCollateral::from_json(&testdata("tdx/tdx_quote_collateral.json")).unwrap();
    let v = dcap(&quote, &col, &Policy::authenticity_only()).unwrap();
    assert!(v.accepted, "{:?}", v.reasons);
    // Header + TD report body (the region the attestation key signs), every 3rd byte.
    for i in (0..48 + 584).step_by(3) {
        let mut q = quote.clone();
        q[i] ^= 0x01;
        if let Some(v) = dcap(&q, &col, &Policy::authenticity_only()) {
            assert!(!v.accepted, "byte {i} flipped was accepted");
        }
    }
    // The ECDSA signature over it.
    for i in 48 + 584 + 4..48 + 584 + 4 + 64 {
        let mut q = quote.clone();
        q[i] ^= 0x80;
        let v = dcap(&q, &col, &Policy::authenticity_only()).unwrap();
        assert!(
            v.has(ReasonKind::EvidenceSignatureInvalid),
            "sig byte {i}: {:?}",
            v.reasons
        );
    }
}

#[test]
fn tampered_collateral_is_rejected() {
    let quote = testdata("tdx/tdx_quote");
    let col = DcapCollateral::from_json(&testdata("tdx/tdx_quote_collateral.json")).unwrap();
    let mut bad = col.clone();
    bad.tcb_info = bad.tcb_info.replacen("UpToDate", "OutOfDate", 1);
    let v = dcap(&quote, &bad, &Policy::authenticity_only()).unwrap();
    assert!(
        v.has(ReasonKind::CollateralSignatureInvalid),
        "{:?}",
        v.reasons
    );

    let mut bad = col.clone();
    bad.qe_identity_signature[5] ^= 1;
    let v = dcap(&quote, &bad, &Policy::authenticity_only()).unwrap();
    assert!(
        v.has(ReasonKind::CollateralSignatureInvalid),
        "{:?}",
        v.reasons
    );

    // Verified long after the collateral's nextUpdate.
    let e = Evidence::parse(&quote).unwrap();
    let v = verify(
        &e,
        &Collateral {
            dcap: Some(col.clone()),
            ..Default::default()
        },
        &Policy::authenticity_only(),
        UnixTime(1_900_000_000),
    );
    assert!(!v.accepted);

    // No collateral at all.
    let v = verify(
        &e,
        &Collateral::default(),
        &Policy::authenticity_only(),
        DCAP_AT,
    );
    assert!(v.has(ReasonKind::CollateralMissing));
}

#[test]
fn tdx_policy_rules_bite() {
    let quote = testdata("tdx/tdx_quote");
    let col = DcapCollateral::from_json(&testdata("tdx/tdx_quote_collateral.json")).unwrap();
    for (text, kind) in [
        (
            format!("[tdx]\nmrtd = [\"{}\"]", "00".repeat(48)),
            ReasonKind::MeasurementNotAllowed,
        ),
        (
            format!("[tdx]\nrtmr1 = [\"{}\"]", "00".repeat(48)),
            ReasonKind::RtmrNotAllowed,
        ),
        (
            format!("[tdx]\nmrconfigid = [\"{}\"]", "11".repeat(48)),
            ReasonKind::HostDataNotAllowed,
        ),
        (
            "[tdx]\ntcb_status = [\"SWHardeningNeeded\"]".to_string(),
            ReasonKind::TcbStatusNotAllowed,
        ),
        (
            "max_collateral_age_seconds = 60".to_string(),
            ReasonKind::CollateralTooOld,
        ),
        (
            "platforms = [\"snp\"]".to_string(),
            ReasonKind::PlatformNotAllowed,
        ),
    ] {
        let v = dcap(&quote, &col, &Policy::from_toml(&text).unwrap()).unwrap();
        assert!(v.has(kind), "{text}: {:?}", v.reasons);
    }
    let claims = serde_json::to_value(
        dcap(&quote, &col, &Policy::authenticity_only())
            .unwrap()
            .claims,
    )
    .unwrap();
    let ok = format!(
        "[tdx]\nmrtd = [\"{}\"]\nrtmr0 = [\"{}\"]",
        claims["mrtd"].as_str().unwrap(),
        claims["rtmr0"].as_str().unwrap()
    );
    assert!(
        dcap(&quote, &col, &Policy::from_toml(&ok).unwrap())
            .unwrap()
            .accepted
    );
}

#[test]
fn collateral_from_another_root_is_untrusted() {
    let quote = testdata("tdx/tdx_quote");
    let mut col = DcapCollateral::from_json(&testdata("tdx/tdx_quote_collateral.json")).unwrap();
    // Replace the chain with the AMD Milan ARK: parseable, self-signed, not Intel's.
    let ark = pem::encode(&pem::Pem::new(
        "CERTIFICATE",
        ciel_attestation::roots::AmdProduct::Milan
            .ark_der()
            .to_vec(),
    ));
    col.tcb_info_issuer_chain = ark;
    let v = dcap(&quote, &col, &Policy::authenticity_only()).unwrap();
    assert!(v.has(ReasonKind::UntrustedRoot), "{:?}", v.reasons);
}

#[test]
fn gpu_report_signature_and_nonce() {
    let report = decode_hex_text(&testdata("gpu/hopperAttestationReport.txt")).unwrap();
    let chain = testdata("gpu/hopper_cert_chain_case1.txt");
    let col = Collateral {
        gpu_cert_chain: Some(chain),
        ..Default::default()
    };
    let at = UnixTime(1_759_305_600);
    let run = |r: &[u8], p: &Policy| verify(&Evidence::parse(r).unwrap(), &col, p, at);
    assert!(run(&report, &Policy::authenticity_only()).accepted);
    // Flip bytes across the signed region (request nonce, measurements, opaque data).
    for i in (0..report.len() - 96).step_by(97) {
        let mut r = report.clone();
        r[i] ^= 0x01;
        if let Ok(e) = Evidence::parse(&r) {
            let v = verify(&e, &col, &Policy::authenticity_only(), at);
            assert!(!v.accepted, "byte {i}");
        }
    }
    let n = report.len();
    let mut r = report.clone();
    r[n - 10] ^= 1;
    assert!(run(&r, &Policy::authenticity_only()).has(ReasonKind::EvidenceSignatureInvalid));
    let wrong_nonce =
        Policy::from_toml(&format!("[nvidia]\nnonce = \"{}\"", "00".repeat(32))).unwrap();
    assert!(run(&report, &wrong_nonce).has(ReasonKind::GpuNonceMismatch));
    let right = Policy::from_toml(
        "[nvidia]\nnonce = \"931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb\"\ndriver_versions = [\"550.90.07\"]\nvbios_versions = [\"96.00.9F.00.01\"]",
    )
    .unwrap();
    assert!(run(&report, &right).accepted);
    let old_driver = Policy::from_toml("[nvidia]\ndriver_versions = [\"535.0\"]").unwrap();
    assert!(run(&report, &old_driver).has(ReasonKind::GpuDriverNotAllowed));
}
