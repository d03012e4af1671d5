//! AMD's CRL: checked when given, required when the policy says so; a
//! revoked ASK or VCEK, a CRL past its nextUpdate, one not signed by the
//! chain's ARK or one edited each have their reason.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod common;
use ciel_attestation::sim::{SimSnpReport, SnpSim};
use ciel_attestation::{Collateral, Evidence, ReasonKind, UnixTime, Verdict, verify};
use common::{SNP_AT, sim, sim_collateral, trusting_policy};

const DAY: u64 = 86_400;

fn check(crl: Option<Vec<u8>>, extra: &str) -> Verdict {
    let report = sim().report(&SimSnpReport::default()).unwrap();
    let collateral = Collateral {
        snp_crl: crl,
        ..sim_collateral(sim().vcek_der())
    };
    verify(
        &Evidence::parse(&report).unwrap(),
        &collateral,
        &trusting_policy(extra),
        SNP_AT,
    )
}

fn crl(revoked: &[u32]) -> Vec<u8> {
    let (from, to) = (
        UnixTime(SNP_AT.secs() - DAY),
        UnixTime(SNP_AT.secs() + 7 * DAY),
    );
    sim().crl(from, to, revoked).unwrap()
}

fn kinds(v: &Verdict) -> Vec<ReasonKind> {
    v.reasons.iter().map(|r| r.kind).collect()
}

#[test]
fn a_current_crl_that_revokes_nothing_of_the_chain_passes() {
    // Serial 9 is nobody's in this chain.
    let v = check(Some(crl(&[9])), "");
    assert!(v.accepted, "{:?}", v.reasons);
    let pem = pem::encode(&pem::Pem::new("X509 CRL", crl(&[])));
    assert!(check(Some(pem.into_bytes()), "[snp]\nrequire_crl = true").accepted);
}

#[test]
fn revoked_certificates_are_refused_by_name() {
    // The simulated VCEK has serial 3 and the ASK serial 2.
    let v = check(Some(crl(&[3])), "");
    assert_eq!(
        kinds(&v),
        vec![ReasonKind::CertificateRevoked],
        "{:?}",
        v.reasons
    );
    assert!(
        v.reasons[0].message.starts_with("the VCEK/VLEK"),
        "{}",
        v.reasons[0].message
    );
    let v = check(Some(crl(&[2, 3])), "");
    assert_eq!(
        kinds(&v),
        vec![ReasonKind::CertificateRevoked; 2],
        "{:?}",
        v.reasons
    );
    assert!(
        v.reasons[0].message.starts_with("the ASK/ASVK"),
        "{}",
        v.reasons[0].message
    );
}

#[test]
fn a_crl_must_be_current_genuine_and_present_when_required() {
    // Past its nextUpdate, and not yet issued.
    let old = sim()
        .crl(
            UnixTime(SNP_AT.secs() - 30 * DAY),
            UnixTime(SNP_AT.secs() - DAY),
            &[],
        )
        .unwrap();
    let v = check(Some(old), "");
    assert_eq!(
        kinds(&v),
        vec![ReasonKind::CollateralExpired],
        "{:?}",
        v.reasons
    );
    assert!(
        v.reasons[0].message.contains("nextUpdate"),
        "{}",
        v.reasons[0].message
    );
    let future = sim()
        .crl(
            UnixTime(SNP_AT.secs() + DAY),
            UnixTime(SNP_AT.secs() + 9 * DAY),
            &[],
        )
        .unwrap();
    assert_eq!(
        kinds(&check(Some(future), "")),
        vec![ReasonKind::CollateralExpired]
    );

    // Signed by another ARK of the same name, or edited: not AMD's word.
    let other = SnpSim::generate(SNP_AT).unwrap();
    let forged = other
        .crl(
            UnixTime(SNP_AT.secs() - DAY),
            UnixTime(SNP_AT.secs() + DAY),
            &[],
        )
        .unwrap();
    let v = check(Some(forged), "");
    assert_eq!(
        kinds(&v),
        vec![ReasonKind::CollateralSignatureInvalid],
        "{:?}",
        v.reasons
    );
    let mut edited = crl(&[3]);
    // The revoked serial's INTEGER (02 01 03) becomes serial 4.
    // (The first match is in the signed part, before the 512-byte signature.)
    let at = edited.windows(3).position(|w| w == [2, 1, 3]).unwrap();
    assert!(at + 600 < edited.len(), "{at} of {}", edited.len());
    edited[at + 2] = 4;
    let v = check(Some(edited), "");
    assert_eq!(
        kinds(&v),
        vec![ReasonKind::CollateralSignatureInvalid],
        "{:?}",
        v.reasons
    );

    // Garbage, and a missing CRL the policy requires.
    let v = check(Some(b"not a crl".to_vec()), "");
    assert_eq!(
        kinds(&v),
        vec![ReasonKind::CollateralMalformed],
        "{:?}",
        v.reasons
    );
    let v = check(None, "[snp]\nrequire_crl = true");
    assert_eq!(
        kinds(&v),
        vec![ReasonKind::CollateralMissing],
        "{:?}",
        v.reasons
    );
    assert!(check(None, "").accepted);
}

#[test]
fn a_crl_older_than_the_policys_collateral_age_is_refused() {
    // crl() was issued a day before the verification instant.
    let v = check(Some(crl(&[])), "max_collateral_age_seconds = 172800");
    assert!(v.accepted, "{:?}", v.reasons);
    let v = check(Some(crl(&[])), "max_collateral_age_seconds = 3600");
    assert_eq!(kinds(&v), vec![ReasonKind::CollateralTooOld]);
    assert!(
        v.reasons[0].message.contains("AMD CRL"),
        "{}",
        v.reasons[0].message
    );
}
