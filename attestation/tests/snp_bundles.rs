//! VCEK bundles as the clouds ship them: Azure's THIM serves the VCEK, the
//! ASK and the ARK in one PEM, in that order; a bundle's root is trusted
//! only if it is a pinned ARK (or a simulated root the policy names).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
use ciel_attestation::roots::AmdProduct;
use ciel_attestation::sim::SimSnpReport;
use ciel_attestation::{Collateral, Evidence, Policy, ReasonKind, Verdict, verify};
use common::{SNP_AT, sim, testdata};

fn pem_of(ders: &[&[u8]]) -> Vec<u8> {
    let blocks: Vec<pem::Pem> = ders
        .iter()
        .map(|d| pem::Pem::new("CERTIFICATE", d.to_vec()))
        .collect();
    pem::encode_many(&blocks).into_bytes()
}

fn milan(signer: Vec<u8>, policy: &Policy) -> Verdict {
    let report = testdata("snp/milan_oc_release.report.bin");
    let collateral = Collateral {
        snp_signer: Some(signer),
        snp_chain: None,
        ..Default::default()
    };
    verify(
        &Evidence::parse(&report).unwrap(),
        &collateral,
        policy,
        SNP_AT,
    )
}

#[test]
fn a_vcek_bundle_brings_its_chain_in_any_order() {
    let vcek = testdata("snp/milan_oc_release.vcek.der");
    let (ask, ark) = (AmdProduct::Milan.ask_der(), AmdProduct::Milan.ark_der());
    let any = Policy::authenticity_only();
    for (name, bundle) in [
        ("THIM order", pem_of(&[&vcek, ask, ark])),
        ("root first", pem_of(&[ark, ask, &vcek])),
        ("without the ARK", pem_of(&[&vcek, ask])),
        // A stray certificate of another chain changes nothing.
        (
            "with a stray Genoa ASK",
            pem_of(&[AmdProduct::Genoa.ask_der(), &vcek, ask, ark]),
        ),
    ] {
        let v = milan(bundle, &any);
        assert!(v.accepted, "{name}: {:?}", v.reasons);
    }
    // The VCEK alone still finds the built-in chain.
    assert!(milan(vcek.clone(), &any).accepted);

    // Two VCEKs: which one signed is not for the verifier to guess.
    let genoa = testdata("snp/genoa_oc.vcek.der");
    let v = milan(pem_of(&[&vcek, &genoa, ask, ark]), &any);
    assert!(v.has(ReasonKind::CertificateMalformed), "{:?}", v.reasons);
    assert!(
        v.reasons[0]
            .message
            .contains("found 2 with TCB extensions among 4"),
        "{}",
        v.reasons[0].message
    );
}

#[test]
fn a_bundled_root_is_trusted_only_if_pinned_or_named() {
    let report = sim().report(&SimSnpReport::default()).unwrap();
    let mut bundle =
        pem::encode(&pem::Pem::new("CERTIFICATE", sim().vcek_der().to_vec())).into_bytes();
    bundle.extend_from_slice(&sim().chain_pem());
    let collateral = Collateral {
        snp_signer: Some(bundle),
        snp_chain: None,
        ..Default::default()
    };
    let evidence = Evidence::parse(&report).unwrap();
    let v = verify(&evidence, &collateral, &Policy::authenticity_only(), SNP_AT);
    assert!(!v.accepted);
    assert!(v.has(ReasonKind::UntrustedRoot), "{:?}", v.reasons);
    let naming = Policy::from_toml(&format!(
        "danger_simulated_roots = [\"{}\"]",
        hex::encode(sim().root_sha256())
    ))
    .unwrap();
    let v = verify(&evidence, &collateral, &naming, SNP_AT);
    assert!(v.accepted, "{:?}", v.reasons);
}
