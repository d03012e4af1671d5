//! Simulated TDX quotes and collateral go through the same dcap-qvl
//! verification as real ones; only a policy naming the simulated root
//! accepts them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use ciel_attestation::sim::{SimTdxQuote, TdxSim};
use ciel_attestation::{
    Collateral, Evidence, Platform, Policy, ReasonKind, TcbStatus, UnixTime, verify,
};
use std::sync::OnceLock;

const NOW: UnixTime = UnixTime(1_790_000_000);

fn sim() -> &'static TdxSim {
    static SIM: OnceLock<TdxSim> = OnceLock::new();
    SIM.get_or_init(|| TdxSim::generate(UnixTime(NOW.secs() - 86_400 * 10)).unwrap())
}

fn trusting(extra: &str) -> Policy {
    Policy::from_toml(&format!(
        "danger_simulated_roots = [\"{}\"]\n{extra}",
        hex::encode(sim().root_sha256())
    ))
    .unwrap()
}

fn run(quote: &[u8], policy: &Policy, at: UnixTime) -> ciel_attestation::Verdict {
    let col = Collateral {
        dcap: Some(sim().collateral(NOW).unwrap()),
        ..Default::default()
    };
    verify(&Evidence::parse(quote).unwrap(), &col, policy, at)
}

#[test]
fn simulated_quote_round_trips_only_with_the_named_root() {
    let req = SimTdxQuote {
        report_data: [0xab; 64],
        ..Default::default()
    };
    let quote = sim().quote(&req).unwrap();
    let v = run(&quote, &trusting(""), NOW);
    assert!(v.accepted, "{:?}", v.reasons);
    assert!(v.simulated);
    assert_eq!(v.platform, Platform::Tdx);
    assert_eq!(v.tcb_status, TcbStatus::UpToDate);
    let claims = serde_json::to_value(v.claims.unwrap()).unwrap();
    assert_eq!(claims["report_data"], "ab".repeat(64));
    assert_eq!(claims["version"], 4);

    let v = run(&quote, &Policy::authenticity_only(), NOW);
    assert!(!v.accepted);
    assert!(v.has(ReasonKind::UntrustedRoot), "{:?}", v.reasons);
}

#[test]
fn tampered_simulated_quote_is_rejected() {
    let quote = sim().quote(&SimTdxQuote::default()).unwrap();
    // MRTD byte, report_data byte, signature byte.
    for i in [48 + 136, 48 + 520, 48 + 584 + 4 + 3] {
        let mut q = quote.clone();
        q[i] ^= 1;
        let v = run(&q, &trusting(""), NOW);
        assert!(
            v.has(ReasonKind::EvidenceSignatureInvalid),
            "byte {i}: {:?}",
            v.reasons
        );
    }
}

#[test]
fn simulated_collateral_expires_and_policy_applies() {
    let quote = sim().quote(&SimTdxQuote::default()).unwrap();
    let late = UnixTime(NOW.secs() + 40 * 86_400);
    assert!(!run(&quote, &trusting(""), late).accepted);
    let debug = SimTdxQuote {
        td_attributes: [1, 0, 0, 0x10, 0, 0, 0, 0],
        ..Default::default()
    };
    let v = run(&sim().quote(&debug).unwrap(), &trusting(""), NOW);
    assert!(v.has(ReasonKind::DebugAllowed), "{:?}", v.reasons);
    let v = run(
        &quote,
        &trusting(&format!("[tdx]\nmrtd = [\"{}\"]", "00".repeat(48))),
        NOW,
    );
    assert!(v.has(ReasonKind::MeasurementNotAllowed), "{:?}", v.reasons);
}

#[test]
fn stored_pki_round_trips() {
    let files = sim().to_files().unwrap();
    let loaded =
        TdxSim::from_files(|n| files.iter().find(|(f, _)| *f == n).map(|(_, b)| b.clone()))
            .unwrap();
    assert_eq!(loaded.root_sha256(), sim().root_sha256());
    let quote = loaded.quote(&SimTdxQuote::default()).unwrap();
    let col = Collateral {
        dcap: Some(loaded.collateral(NOW).unwrap()),
        ..Default::default()
    };
    assert!(verify(&Evidence::parse(&quote).unwrap(), &col, &trusting(""), NOW).accepted);
}

/// A policy that pins an SNP guest's identity (and says nothing of
/// `platforms`) does not accept a TDX guest, however genuine; listing
/// `platforms`, or pinning the TDX guest too, does.
#[test]
fn a_policy_pinning_an_snp_guest_does_not_accept_a_tdx_guest() {
    let quote = sim().quote(&SimTdxQuote::default()).unwrap();
    let snp_only = trusting(&format!(
        "[snp]\nmeasurements = [\"{}\"]\n",
        "11".repeat(48)
    ));
    let v = run(&quote, &snp_only, NOW);
    assert_eq!(v.reason_codes(), vec!["platform_not_allowed"]);
    assert!(
        v.summary().contains("pins guest identities for snp only"),
        "{}",
        v.summary()
    );
    let host_data_only = trusting(&format!("[snp]\nhost_data = [\"{}\"]\n", "22".repeat(32)));
    assert_eq!(
        run(&quote, &host_data_only, NOW).reason_codes(),
        vec!["platform_not_allowed"]
    );
    // Both platforms listed: the TDX guest is held to the rest.
    let listed = trusting(&format!(
        "platforms = [\"snp\", \"tdx\"]\n[snp]\nmeasurements = [\"{}\"]\n",
        "11".repeat(48)
    ));
    assert!(run(&quote, &listed, NOW).accepted);
    // The TDX guest pinned beside the SNP one.
    let both = trusting(&format!(
        "[snp]\nmeasurements = [\"{}\"]\n[tdx]\nmrtd = [\"{}\"]\n",
        "11".repeat(48),
        hex::encode(SimTdxQuote::default().mrtd)
    ));
    assert!(run(&quote, &both, NOW).accepted);
    // A policy pinning nothing keeps accepting by authenticity.
    assert!(run(&quote, &trusting(""), NOW).accepted);
}
