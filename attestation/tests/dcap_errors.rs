//! dcap-qvl reports its errors as text; the verifier maps that text onto
//! typed reasons (`classify_dcap_error`). This table produces each error
//! from real evidence, one fault at a time, and pins the reason it gets:
//! a dcap-qvl upgrade that rewords a message fails here instead of
//! silently changing a verdict.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod common;
use ciel_attestation::collateral::DcapCollateral;
use ciel_attestation::{Collateral, Evidence, Policy, ReasonKind, UnixTime, verify};
use common::{DCAP_AT, testdata};

/// Offsets in a v4 TDX quote: header (48) + TD report (584), then the
/// signature data: its length (4), the ECDSA signature (64), the
/// attestation key (64), the certification data's type (2) and size (4),
/// the QE report (384), its signature (64) and the QE auth data.
const QUOTE_SIGNATURE: usize = 48 + 584 + 4;
const QE_REPORT: usize = QUOTE_SIGNATURE + 64 + 64 + 6;
const QE_REPORT_SIGNATURE: usize = QE_REPORT + 384;
const QE_AUTH_DATA: usize = QE_REPORT_SIGNATURE + 64 + 2;

struct Case {
    name: &'static str,
    quote: Vec<u8>,
    collateral: DcapCollateral,
    at: UnixTime,
    /// The reason dcap-qvl's error must become.
    want: ReasonKind,
}
fn cases() -> Vec<Case> {
    let quote = testdata("tdx/tdx_quote");
    let col = DcapCollateral::from_json(&testdata("tdx/tdx_quote_collateral.json")).unwrap();
    let sgx_col = DcapCollateral::from_json(&testdata("tdx/sgx_quote_collateral.json")).unwrap();
    let flip = |at: usize| {
        let mut q = quote.clone();
        q[at] ^= 0x01;
        q
    };
    let case = |name, quote: Vec<u8>, collateral: DcapCollateral, at, want| Case {
        name,
        quote,
        collateral,
        at,
        want,
    };
    let mut tcb_info = col.clone();
    tcb_info.tcb_info = tcb_info.tcb_info.replacen("UpToDate", "OutOfDate", 1);
    let mut qe_identity = col.clone();
    qe_identity.qe_identity_signature[5] ^= 1;
    let mut pck_crl = col.clone();
    pck_crl.pck_crl[20] ^= 1;
    let mut root_crl = col.clone();
    let n = root_crl.root_ca_crl.len();
    root_crl.root_ca_crl[n - 5] ^= 1;
    vec![
        case(
            "quote signature",
            flip(QUOTE_SIGNATURE + 7),
            col.clone(),
            DCAP_AT,
            ReasonKind::EvidenceSignatureInvalid,
        ),
        case(
            "QE report signature",
            flip(QE_REPORT + 40),
            col.clone(),
            DCAP_AT,
            ReasonKind::EvidenceSignatureInvalid,
        ),
        case(
            "QE auth data",
            flip(QE_AUTH_DATA),
            col.clone(),
            DCAP_AT,
            ReasonKind::QeBindingInvalid,
        ),
        case(
            "TCB info signature",
            quote.clone(),
            tcb_info,
            DCAP_AT,
            ReasonKind::CollateralSignatureInvalid,
        ),
        case(
            "QE identity signature",
            quote.clone(),
            qe_identity,
            DCAP_AT,
            ReasonKind::CollateralSignatureInvalid,
        ),
        // (A byte of its signature algorithm: it no longer parses as signed.)
        case(
            "PCK CRL",
            quote.clone(),
            pck_crl,
            DCAP_AT,
            ReasonKind::CollateralMalformed,
        ),
        case(
            "root CA CRL",
            quote.clone(),
            root_crl,
            DCAP_AT,
            ReasonKind::CollateralSignatureInvalid,
        ),
        case(
            "SGX collateral",
            quote.clone(),
            sgx_col,
            DCAP_AT,
            ReasonKind::QeIdentityMismatch,
        ),
        case(
            "after nextUpdate",
            quote.clone(),
            col.clone(),
            UnixTime(1_900_000_000),
            ReasonKind::CollateralExpired,
        ),
        case(
            "before issue",
            quote.clone(),
            col.clone(),
            UnixTime(1_600_000_000),
            ReasonKind::CollateralExpired,
        ),
    ]
}

#[test]
fn each_real_fault_gets_its_reason() {
    let mut failures = Vec::new();
    for c in cases() {
        let v = verify(
            &Evidence::parse(&c.quote).unwrap(),
            &Collateral {
                dcap: Some(c.collateral.clone()),
                ..Default::default()
            },
            &Policy::authenticity_only(),
            c.at,
        );
        // The first reason is dcap-qvl's; the status rule follows from it.
        match v.reasons.first() {
            Some(r) if r.kind == c.want => {}
            other => failures.push(format!("{}: want {:?}, got {other:?}", c.name, c.want)),
        }
        assert!(!v.accepted, "{}", c.name);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
