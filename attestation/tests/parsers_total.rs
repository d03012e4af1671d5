//! Every parser of untrusted bytes is total: truncation at every length and
//! random bytes give an error or a value, never a panic.
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
use ciel_attestation::nvidia::NvidiaReport;
use ciel_attestation::snp::SnpReport;
use ciel_attestation::tdx::DcapQuote;
use ciel_attestation::x509::Cert;
use ciel_attestation::{Collateral, Evidence, Policy, UnixTime, verify};
use common::testdata;
use proptest::prelude::*;

fn real_inputs() -> Vec<Vec<u8>> {
    vec![
        testdata("snp/genoa_oc.report.bin"),
        testdata("snp/milan_v2.report.bin"),
        testdata("tdx/tdx_quote"),
        testdata("tdx/sgx_quote"),
        decode_hex_text(&testdata("gpu/hopperAttestationReport.txt")).unwrap(),
    ]
}

/// Parsing and verifying must not panic, whatever the bytes.
fn exercise(bytes: &[u8]) {
    let _ = SnpReport::parse(bytes);
    let _ = DcapQuote::parse(bytes);
    let _ = NvidiaReport::parse(bytes);
    let _ = Cert::from_der(bytes);
    let _ = Cert::parse_bundle(bytes);
    let _ = ciel_attestation::nvidia::rim::verify_rim(bytes, UnixTime(0));
    if let Ok(e) = Evidence::parse(bytes) {
        let _ = verify(
            &e,
            &Collateral::default(),
            &Policy::authenticity_only(),
            UnixTime(0),
        );
    }
}

#[test]
fn truncation_at_every_length_is_an_error_not_a_panic() {
    for input in real_inputs() {
        for len in 0..input.len() {
            let cut = &input[..len];
            exercise(cut);
            // Only cutting trailing zero padding (DCAP) may still parse.
            let only_padding_cut = input[len..].iter().all(|&b| b == 0);
            assert!(
                Evidence::parse(cut).is_err() || only_padding_cut,
                "truncated to {len} parsed"
            );
        }
    }
    for der in [
        testdata("snp/genoa_oc.vcek.der"),
        ciel_attestation::roots::AmdProduct::Milan
            .ark_der()
            .to_vec(),
    ] {
        for len in 0..der.len() {
            assert!(
                Cert::from_der(&der[..len]).is_err(),
                "certificate truncated to {len} parsed"
            );
        }
    }
    let col = testdata("tdx/tdx_quote_collateral.json");
    for len in (0..col.len()).step_by(7) {
        assert!(DcapCollateral::from_json(&col[..len]).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..6000)) {
        exercise(&bytes);
    }

    #[test]
    fn mutated_real_evidence_never_panics(which in 0usize..5, edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..16)) {
        let mut input = real_inputs().swap_remove(which);
        for (pos, val) in edits {
            let n = input.len();
            input[pos % n] = val;
        }
        exercise(&input);
    }

    #[test]
    fn random_policies_never_panic(text in "[a-z_\\[\\]=\" 0-9\n]{0,200}") {
        let _ = Policy::from_toml(&text);
    }
}
