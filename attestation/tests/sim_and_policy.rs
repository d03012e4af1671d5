//! The simulated platform round-trips through the real verifier, is refused
//! unless the policy names its root, and the policy rules bite.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod common;
use ciel_attestation::sim::SimSnpReport;
use ciel_attestation::{Evidence, Policy, ReasonKind, TcbStatus, verify};
use common::{SNP_AT, check, shared_vectors, sim, sim_collateral, trusting_policy};

#[test]
fn simulated_report_is_accepted_only_when_the_policy_names_the_root() {
    let req = SimSnpReport {
        report_data: [7; 64],
        ..Default::default()
    };
    let default = check(&req, &Policy::authenticity_only());
    assert!(!default.accepted);
    assert!(
        default.has(ReasonKind::UntrustedRoot),
        "{:?}",
        default.reasons
    );
    assert!(!default.simulated);

    let trusted = check(&req, &trusting_policy(""));
    assert!(trusted.accepted, "{:?}", trusted.reasons);
    assert!(trusted.simulated, "callers must be told to warn");
    assert_eq!(trusted.tcb_status, TcbStatus::UpToDate);

    // Naming some other root does not help.
    let other = Policy::from_toml(&format!(
        "danger_simulated_roots = [\"{}\"]",
        "ab".repeat(32)
    ))
    .unwrap();
    assert!(check(&req, &other).has(ReasonKind::UntrustedRoot));
}

#[test]
fn simulated_reports_are_byte_exact_v3_and_v5() {
    for version in [3, 5] {
        let req = SimSnpReport {
            version,
            ..Default::default()
        };
        let report = sim().report(&req).unwrap();
        assert_eq!(report.len(), 1184);
        let v = verify(
            &Evidence::parse(&report).unwrap(),
            &sim_collateral(sim().vcek_der()),
            &trusting_policy(""),
            SNP_AT,
        );
        assert!(v.accepted, "v{version}: {:?}", v.reasons);
        let claims = serde_json::to_value(v.claims.unwrap()).unwrap();
        assert_eq!(claims["version"], version);
        assert_eq!(claims["signing_key"], "vcek");
    }
}

#[test]
fn vcek_whose_tcb_disagrees_with_the_report_is_rejected() {
    use p384::elliptic_curve::Generate;
    let key =
        p384::ecdsa::SigningKey::generate_from_rng(&mut rand_core::UnwrapErr(getrandom::SysRng));
    let report_tcb: u64 = 0x5419_0000_0000_000a;
    let cert_tcb: u64 = 0x5418_0000_0000_000a; // snp SPL 24 instead of 25
    let chip = {
        let real = sim().report(&SimSnpReport::default()).unwrap();
        let mut c = [0u8; 64];
        c.copy_from_slice(&real[0x1a0..0x1e0]);
        c
    };
    let vcek = sim().issue_vcek(&key, cert_tcb, &chip, SNP_AT).unwrap();
    let report = sim()
        .report_signed_by(&SimSnpReport::default(), &key, report_tcb)
        .unwrap();
    let v = verify(
        &Evidence::parse(&report).unwrap(),
        &sim_collateral(&vcek),
        &trusting_policy(""),
        SNP_AT,
    );
    assert!(!v.accepted);
    assert_eq!(
        v.reasons.iter().map(|r| r.kind).collect::<Vec<_>>(),
        vec![ReasonKind::VcekTcbMismatch],
        "{:?}",
        v.reasons
    );

    // Same key, a VCEK for another chip: hwID mismatch only.
    let vcek = sim()
        .issue_vcek(&key, report_tcb, &[9; 64], SNP_AT)
        .unwrap();
    let v = verify(
        &Evidence::parse(&report).unwrap(),
        &sim_collateral(&vcek),
        &trusting_policy(""),
        SNP_AT,
    );
    assert_eq!(
        v.reasons.iter().map(|r| r.kind).collect::<Vec<_>>(),
        vec![ReasonKind::VcekChipIdMismatch],
        "{:?}",
        v.reasons
    );
}

#[test]
fn policy_rules_reject_with_their_own_reason() {
    let base = SimSnpReport::default();
    let measurement = hex::encode(base.measurement);
    let debug = SimSnpReport {
        policy: 0x3_0000 | (1 << 19),
        ..base.clone()
    };
    let migration = SimSnpReport {
        policy: 0x3_0000 | (1 << 18),
        ..base.clone()
    };
    let cases: Vec<(SimSnpReport, String, ReasonKind)> = vec![
        (debug.clone(), String::new(), ReasonKind::DebugAllowed),
        (migration, String::new(), ReasonKind::MigrationAgentAllowed),
        (
            base.clone(),
            format!("[snp]\nmeasurements = [\"{}\"]", "00".repeat(48)),
            ReasonKind::MeasurementNotAllowed,
        ),
        (
            base.clone(),
            format!("[snp]\nhost_data = [\"{}\"]", "11".repeat(32)),
            ReasonKind::HostDataNotAllowed,
        ),
        (
            base.clone(),
            "[snp]\nmin_tcb = { snp = 26 }".into(),
            ReasonKind::TcbBelowMinimum,
        ),
        (
            base.clone(),
            "[snp]\nallow_smt = false".into(),
            ReasonKind::SmtAllowed,
        ),
        (
            base.clone(),
            "[snp]\nrequire_single_socket = true".into(),
            ReasonKind::SingleSocketRequired,
        ),
        (
            base.clone(),
            format!("[snp]\nchip_ids = [\"{}\"]", "22".repeat(64)),
            ReasonKind::ChipIdNotAllowed,
        ),
        (
            base.clone(),
            "[snp]\nvmpls = [1]".into(),
            ReasonKind::VmplNotAllowed,
        ),
        (
            base.clone(),
            format!("report_data = \"{}\"", "33".repeat(64)),
            ReasonKind::ReportDataMismatch,
        ),
        (
            base.clone(),
            "platforms = [\"tdx\"]".into(),
            ReasonKind::PlatformNotAllowed,
        ),
    ];
    for (req, extra, kind) in cases {
        let v = check(&req, &trusting_policy(&extra));
        assert!(!v.accepted, "{kind:?} accepted");
        assert!(v.has(kind), "{kind:?}: {:?}", v.reasons);
    }
    // The TCB minimum also sets the status.
    let v = check(&base, &trusting_policy("[snp]\nmin_tcb = { ucode = 85 }"));
    assert_eq!(v.tcb_status, TcbStatus::OutOfDate);
    // And a policy that allows exactly this guest accepts it.
    let ok = format!(
        "report_data = \"\"\n[snp]\nmeasurements = [\"{measurement}\"]\nmin_tcb = {{ bl = 10, tee = 0, snp = 25, ucode = 84 }}\nrequire_single_socket = false"
    );
    let v = check(
        &base,
        &trusting_policy(&ok.replace("report_data = \"\"\n", "")),
    );
    assert!(v.accepted, "{:?}", v.reasons);
    // Debug guests are refused by any policy file unless it says danger_allow_debug.
    assert!(check(&debug, &trusting_policy("[snp]\ndanger_allow_debug = true")).accepted);
}

#[test]
fn policy_files_are_validated_with_field_names() {
    for (text, needle) in [
        ("[snp]\nmeasurements = [\"zz\"]", "snp.measurements[0]"),
        ("[snp]\nmeasurements = [\"00\"]", "expected 48"),
        ("platforms = [\"sev\"]", "unknown platform"),
        (
            "danger_simulated_roots = [\"00\"]",
            "danger_simulated_roots",
        ),
        ("[tdx]\ntcb_status = [\"Fine\"]", "unknown TCB status"),
        ("unknown_field = 1", "unknown field"),
        ("[snp]\ndanger_allow_debug = \"yes\"", "invalid type"),
    ] {
        let err = Policy::from_toml(text).unwrap_err().to_string();
        assert!(err.contains(needle), "{text:?}: {err}");
    }
}

#[test]
fn stored_hierarchy_round_trips() {
    let files = sim().to_files().unwrap();
    let loaded = ciel_attestation::sim::SnpSim::from_files(|name| {
        files
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| b.clone())
    })
    .unwrap();
    assert_eq!(loaded.root_sha256(), sim().root_sha256());
    let report = loaded.report(&SimSnpReport::default()).unwrap();
    let v = verify(
        &Evidence::parse(&report).unwrap(),
        &sim_collateral(loaded.vcek_der()),
        &trusting_policy(""),
        SNP_AT,
    );
    assert!(v.accepted, "{:?}", v.reasons);
    // A corrupt stored file is an error naming it.
    let err = ciel_attestation::sim::SnpSim::from_files(|name| {
        if name == "ask.der" {
            Some(vec![1, 2, 3])
        } else {
            files
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, b)| b.clone())
        }
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("ask.der"), "{err}");
}

#[test]
fn documented_example_policy_parses() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/policy.example.toml"
    ))
    .unwrap();
    let p = Policy::from_toml(&text).unwrap();
    assert!(!p.snp.allow_debug);
    assert_eq!(
        p.tdx.tcb_status,
        vec![TcbStatus::UpToDate, TcbStatus::SWHardeningNeeded]
    );
}

fn fresh_key() -> p384::ecdsa::SigningKey {
    use p384::elliptic_curve::Generate;
    p384::ecdsa::SigningKey::generate_from_rng(&mut rand_core::UnwrapErr(getrandom::SysRng))
}

fn leaf_report(spec: &ciel_attestation::sim::LeafSpec, req: &SimSnpReport) -> (Vec<u8>, Vec<u8>) {
    let key = fresh_key();
    let leaf = sim().issue_leaf(&key, spec, SNP_AT).unwrap();
    let report = sim().report_signed_by(req, &key, spec.tcb).unwrap();
    (report, leaf)
}

#[test]
fn turin_layout_and_vlek_chains_verify() {
    use ciel_attestation::sim::LeafSpec;
    let tcb = 0x4800_0000_1703_0109u64; // Turin: fmc 9, bl 1, tee 3, snp 0x17, ucode 0x48
    let chip = sim().chip_id();
    for (turin, vlek) in [(true, false), (false, true), (true, true)] {
        let spec = LeafSpec {
            tcb,
            chip_id: chip,
            turin,
            vlek,
        };
        let (report, leaf) = leaf_report(
            &spec,
            &SimSnpReport {
                turin,
                vlek,
                ..Default::default()
            },
        );
        let v = verify(
            &Evidence::parse(&report).unwrap(),
            &sim_collateral(&leaf),
            &trusting_policy(""),
            SNP_AT,
        );
        assert!(v.accepted, "turin={turin} vlek={vlek}: {:?}", v.reasons);
        let claims = serde_json::to_value(v.claims.unwrap()).unwrap();
        assert_eq!(claims["signing_key"], if vlek { "vlek" } else { "vcek" });
        if turin {
            assert_eq!(claims["reported_tcb"]["fmc"], 9);
            assert_eq!(claims["reported_tcb"]["snp"], 0x17);
            assert_eq!(claims["reported_tcb"]["ucode"], 0x48);
            // Turin's minimum FMC is enforced.
            let v = verify(
                &Evidence::parse(&report).unwrap(),
                &sim_collateral(&leaf),
                &trusting_policy("[snp]\nmin_tcb = { fmc = 10 }"),
                SNP_AT,
            );
            assert!(v.has(ReasonKind::TcbBelowMinimum), "{:?}", v.reasons);
        }
    }
}

#[test]
fn a_report_naming_the_other_key_kind_is_rejected() {
    use ciel_attestation::sim::LeafSpec;
    let tcb = 0x5419_0000_0000_000a;
    let chip = sim().chip_id();
    // Report says VLEK, certificate is a VCEK.
    let spec = LeafSpec {
        tcb,
        chip_id: chip,
        turin: false,
        vlek: false,
    };
    let (report, leaf) = leaf_report(
        &spec,
        &SimSnpReport {
            vlek: true,
            ..Default::default()
        },
    );
    let v = verify(
        &Evidence::parse(&report).unwrap(),
        &sim_collateral(&leaf),
        &trusting_policy(""),
        SNP_AT,
    );
    assert_eq!(
        v.reasons.iter().map(|r| r.kind).collect::<Vec<_>>(),
        vec![ReasonKind::SigningKeyMismatch],
        "{:?}",
        v.reasons
    );
    // A Turin report checked against a VCEK carrying Milan-layout SPLs.
    let spec = LeafSpec {
        tcb,
        chip_id: chip,
        turin: false,
        vlek: false,
    };
    let (report, leaf) = leaf_report(
        &spec,
        &SimSnpReport {
            turin: true,
            ..Default::default()
        },
    );
    let v = verify(
        &Evidence::parse(&report).unwrap(),
        &sim_collateral(&leaf),
        &trusting_policy(""),
        SNP_AT,
    );
    assert!(v.has(ReasonKind::VcekTcbMismatch), "{:?}", v.reasons);
}

#[test]
fn real_turin_vcek_chains_to_the_pinned_turin_root() {
    use ciel_attestation::roots::AmdProduct;
    use ciel_attestation::x509::Cert;
    let dir = shared_vectors();
    let vcek =
        Cert::from_der(&std::fs::read(dir.join("snp/virtee-sev/vcek_turin.der")).unwrap()).unwrap();
    let ask = Cert::from_der(AmdProduct::Turin.ask_der()).unwrap();
    assert!(vcek.issued_by(&ask));
    vcek.verify_signed_by(&ask, "VCEK").unwrap();
    // Turin VCEKs carry the FMC SPL and an 8-byte hwID.
    let fmc = x509_cert::der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.9");
    assert!(vcek.extension(&fmc).is_some());
    let hwid = x509_cert::der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.4");
    let v = vcek.extension(&hwid).unwrap();
    assert!(v.len() == 8 || v.len() == 10, "hwID of {} bytes", v.len());
}
