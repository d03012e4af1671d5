//! The SNP report's four TCBs: reported ≤ committed ≤ current, and a policy
//! minimum for each (the launch TCB included), each broken rule its own
//! typed reason naming the TCB and the component.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
use ciel_attestation::sim::{SIM_TCB, SimSnpReport};
use ciel_attestation::{Collateral, Evidence, Policy, ReasonKind, TcbStatus, Verdict, verify};
use common::{SNP_AT, shared_vector, snp_vectors, trusting_policy};

fn check(req: &SimSnpReport, extra: &str) -> Verdict {
    common::check(req, &trusting_policy(extra))
}

/// SIM_TCB with its SNP SPL (byte 6, Milan/Genoa layout) set to `spl`.
fn with_snp_spl(spl: u8) -> u64 {
    let mut b = SIM_TCB.to_le_bytes();
    b[6] = spl;
    u64::from_le_bytes(b)
}

fn reasons(v: &Verdict) -> Vec<(ReasonKind, String)> {
    v.reasons
        .iter()
        .map(|r| (r.kind, r.message.clone()))
        .collect()
}

#[test]
fn the_tcbs_must_be_reported_below_committed_below_current() {
    // SIM_TCB's snp SPL is 25 (the reported TCB, which the VCEK certifies).
    let committed_behind = SimSnpReport {
        committed_tcb: Some(with_snp_spl(24)),
        ..Default::default()
    };
    let v = check(&committed_behind, "");
    assert!(!v.accepted);
    let r = reasons(&v);
    assert!(
        r.iter().any(|(k, m)| *k == ReasonKind::TcbOrderViolated
            && m.starts_with("reported_tcb.snp = 25 is above committed_tcb.snp = 24")),
        "{r:?}"
    );
    // Committed 24 and current 23: both pairs broken, each named.
    let current_behind = SimSnpReport {
        committed_tcb: Some(with_snp_spl(24)),
        current_tcb: Some(with_snp_spl(23)),
        ..Default::default()
    };
    let v = check(&current_behind, "");
    let r = reasons(&v);
    assert_eq!(
        r.iter()
            .filter(|(k, _)| *k == ReasonKind::TcbOrderViolated)
            .count(),
        2,
        "{r:?}"
    );
    assert!(
        r.iter()
            .any(|(_, m)| m.starts_with("committed_tcb.snp = 24 is above current_tcb.snp = 23")),
        "{r:?}"
    );
    // Firmware updated and committed past the reported TCB: in order.
    let updated = SimSnpReport {
        committed_tcb: Some(with_snp_spl(27)),
        current_tcb: Some(with_snp_spl(28)),
        ..Default::default()
    };
    let v = check(&updated, "");
    assert!(v.accepted, "{:?}", v.reasons);
}

#[test]
fn each_tcb_has_its_own_minimum() {
    let launched_old = SimSnpReport {
        launch_tcb: Some(with_snp_spl(20)),
        ..Default::default()
    };
    // No minimum for the launch TCB: accepted (the launch TCB has no order).
    assert!(check(&launched_old, "").accepted);
    let v = check(&launched_old, "[snp]\nmin_launch_tcb = { snp = 25 }");
    assert!(!v.accepted);
    assert_eq!(v.tcb_status, TcbStatus::OutOfDate);
    assert_eq!(
        reasons(&v),
        vec![(
            ReasonKind::LaunchTcbBelowMinimum,
            "launch_tcb.snp = 20 is below the minimum 25".to_string()
        )]
    );
    // The same minimum on the other TCBs, which are all 25: met.
    let met = "[snp]\nmin_tcb = { snp = 25 }\nmin_committed_tcb = { snp = 25 }\nmin_current_tcb = { snp = 25 }";
    assert!(check(&SimSnpReport::default(), met).accepted);

    for (table, field) in [
        ("min_tcb", "reported_tcb"),
        ("min_committed_tcb", "committed_tcb"),
        ("min_current_tcb", "current_tcb"),
    ] {
        let v = check(
            &SimSnpReport::default(),
            &format!("[snp]\n{table} = {{ ucode = 85 }}"),
        );
        assert_eq!(v.tcb_status, TcbStatus::OutOfDate);
        assert_eq!(
            reasons(&v),
            vec![(
                ReasonKind::TcbBelowMinimum,
                format!("{field}.ucode = 84 is below the minimum 85")
            )],
            "{table}"
        );
    }
    // A minimum on a component this layout lacks (fmc is Turin's) is unmet.
    let v = check(
        &SimSnpReport::default(),
        "[snp]\nmin_launch_tcb = { fmc = 1 }",
    );
    assert_eq!(
        reasons(&v),
        vec![(
            ReasonKind::LaunchTcbBelowMinimum,
            "launch_tcb.fmc = absent is below the minimum 1".to_string()
        )]
    );
    assert!(
        Policy::from_toml("[snp]\nmin_launch_tcb = { microcode = 1 }").is_err(),
        "an unknown component must be refused"
    );
}

#[test]
fn real_reports_keep_the_order() {
    let mut seen = 0;
    for vector in snp_vectors() {
        let v = verify(
            &Evidence::parse(&vector.report).unwrap(),
            &vector.collateral(),
            &Policy::authenticity_only(),
            SNP_AT,
        );
        assert!(v.accepted, "{}: {:?}", vector.name, v.reasons);
        assert!(!v.has(ReasonKind::TcbOrderViolated), "{}", vector.name);
        seen += 1;
    }
    assert_eq!(seen, 3);
    // Trustee's Milan report runs newer microcode than it has committed
    // (current_tcb.ucode 0xce, committed 0x73): genuine, and in order.
    let report = shared_vector("snp/trustee/test-report.bin");
    let collateral = Collateral {
        snp_signer: Some(shared_vector("snp/trustee/test-vcek.der")),
        snp_chain: Some(shared_vector("snp/trustee/milan_ask_ark_asvk.pem")),
        ..Default::default()
    };
    let evidence = Evidence::parse(&report).unwrap();
    let v = verify(&evidence, &collateral, &Policy::authenticity_only(), SNP_AT);
    assert!(v.accepted, "{:?}", v.reasons);
    // Its launch TCB is the committed one; a minimum above it is refused by name.
    let strict = Policy::from_toml("[snp]\nmin_launch_tcb = { ucode = 0xce }").unwrap();
    let v = verify(&evidence, &collateral, &strict, SNP_AT);
    assert_eq!(
        reasons(&v),
        vec![(
            ReasonKind::LaunchTcbBelowMinimum,
            "launch_tcb.ucode = 115 is below the minimum 206".to_string()
        )]
    );
    let v = verify(
        &evidence,
        &collateral,
        &Policy::from_toml("[snp]\nmin_current_tcb = { ucode = 0xce }").unwrap(),
        SNP_AT,
    );
    assert!(v.accepted, "{:?}", v.reasons);
}
