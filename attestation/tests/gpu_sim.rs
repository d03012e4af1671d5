//! The simulated NVIDIA GPU through the real verifier: a GPU set accepted
//! only when the policy names the simulated root, and refused with its own
//! reason for each thing a guest or host could get wrong (another session's
//! nonce, CC off, DEVTOOLS, a VBIOS not allowed, OCSP missing, stale,
//! revoked, unknown or forged, several GPUs without protected PCIe, too few
//! GPUs, one GPU listed twice).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use ciel_attestation::nvidia::{CcMode, GpuEvidence, GpuSetVerdict, verify_gpus};
use ciel_attestation::sim::{
    NvidiaSim, SimGpu, SimGpuReport, SimOcspResponder, SimOcspStatus, SimRim,
};
use ciel_attestation::{Policy, UnixTime};
use std::sync::OnceLock;

const NOW: UnixTime = UnixTime(1_796_000_000);
const NONCE: [u8; 32] = [0x5a; 32];

fn sim() -> &'static (NvidiaSim, SimGpu, SimGpu) {
    static SIM: OnceLock<(NvidiaSim, SimGpu, SimGpu)> = OnceLock::new();
    SIM.get_or_init(|| {
        let sim = NvidiaSim::generate(UnixTime(NOW.secs() - 30 * 86_400)).unwrap();
        let a = sim
            .issue_gpu(0, UnixTime(NOW.secs() - 30 * 86_400))
            .unwrap();
        let b = sim
            .issue_gpu(1, UnixTime(NOW.secs() - 30 * 86_400))
            .unwrap();
        (sim, a, b)
    })
}

fn policy(extra: &str) -> Policy {
    let text = format!(
        "danger_simulated_roots = [\"{}\"]\n[nvidia]\n{extra}",
        hex::encode(sim().0.root_sha256())
    );
    Policy::from_toml(&text).unwrap()
}

fn ocsp(gpu: &SimGpu, status: SimOcspStatus, age: u64) -> Vec<Vec<u8>> {
    let this = UnixTime(NOW.secs() - age);
    let next = UnixTime(NOW.secs() + 86_400);
    (1..=2)
        .map(|pos| sim().0.ocsp(gpu, pos, status, this, next).unwrap())
        .collect()
}

fn evidence(gpu: &SimGpu, report: &SimGpuReport) -> GpuEvidence {
    GpuEvidence {
        arch: "HOPPER".into(),
        uuid: gpu.uuid.clone(),
        report: gpu.report(report).unwrap(),
        certificate: gpu.chain_pem(),
        cc_mode: Some(CcMode::On),
        protected_pcie: Some(report.protected_pcie),
        ocsp: ocsp(gpu, SimOcspStatus::Good, 600),
        rims: Vec::new(),
    }
}

fn good(gpu: &SimGpu) -> GpuEvidence {
    evidence(
        gpu,
        &SimGpuReport {
            nonce: NONCE,
            ..Default::default()
        },
    )
}

fn codes(v: &GpuSetVerdict) -> Vec<String> {
    v.reason_codes()
}

fn refused_with(gpus: &[GpuEvidence], policy: &Policy, code: &str) {
    let v = verify_gpus(gpus, &NONCE, policy, NOW);
    assert!(!v.accepted, "accepted, expected {code}");
    assert!(
        codes(&v).contains(&code.to_string()),
        "{code} not in {:?}",
        codes(&v)
    );
}

#[test]
fn a_simulated_gpu_is_accepted_only_when_the_policy_names_its_root() {
    let (_, a, _) = sim();
    let v = verify_gpus(&[good(a)], &NONCE, &policy("require_ocsp = true"), NOW);
    assert!(v.accepted, "{}", v.summary());
    assert!(v.simulated());
    assert_eq!(v.gpus[0].evidence_sha256.len(), 64);
    let v = verify_gpus(&[good(a)], &NONCE, &Policy::from_toml("").unwrap(), NOW);
    assert_eq!(codes(&v), vec!["untrusted_root"]);
}

#[test]
fn a_report_made_for_another_session_is_refused() {
    let (_, a, _) = sim();
    let other = evidence(
        a,
        &SimGpuReport {
            nonce: [0x11; 32],
            ..Default::default()
        },
    );
    refused_with(&[other], &policy(""), "gpu_nonce_mismatch");
}

#[test]
fn cc_off_devtools_and_an_unstated_mode_are_refused_unless_the_policy_allows_them() {
    let (_, a, _) = sim();
    for (mode, code) in [
        (Some(CcMode::Off), "gpu_cc_mode_off"),
        (None, "gpu_cc_mode_off"),
        (Some(CcMode::Devtools), "gpu_devtools_on"),
    ] {
        let g = GpuEvidence {
            cc_mode: mode,
            ..good(a)
        };
        refused_with(std::slice::from_ref(&g), &policy(""), code);
    }
    let devtools = GpuEvidence {
        cc_mode: Some(CcMode::Devtools),
        ..good(a)
    };
    let v = verify_gpus(
        &[devtools],
        &NONCE,
        &policy("danger_allow_devtools = true"),
        NOW,
    );
    assert!(v.accepted, "{}", v.summary());
}

#[test]
fn driver_vbios_and_architecture_allowlists_apply() {
    let (_, a, _) = sim();
    refused_with(
        &[good(a)],
        &policy("vbios_versions = [\"96.00.74.00.1c\"]"),
        "gpu_vbios_not_allowed",
    );
    refused_with(
        &[good(a)],
        &policy("driver_versions = [\"535.104.05\"]"),
        "gpu_driver_not_allowed",
    );
    refused_with(
        &[good(a)],
        &policy("architectures = [\"blackwell\"]"),
        "gpu_architecture_not_allowed",
    );
    refused_with(
        &[good(a)],
        &policy("require_rims = true"),
        "collateral_missing",
    );
    let ok = policy(
        "vbios_versions = [\"96.00.9F.00.01\"]\ndriver_versions = [\"550.90.07\"]\narchitectures = [\"hopper\"]",
    );
    assert!(verify_gpus(&[good(a)], &NONCE, &ok, NOW).accepted);
}

#[test]
fn ocsp_missing_stale_revoked_unknown_or_forged_is_refused() {
    let (_, a, b) = sim();
    let strict = policy("require_ocsp = true\nmax_ocsp_age_seconds = 3600");
    let none = GpuEvidence {
        ocsp: Vec::new(),
        ..good(a)
    };
    refused_with(std::slice::from_ref(&none), &strict, "ocsp_missing");
    assert!(verify_gpus(&[none], &NONCE, &policy(""), NOW).accepted);
    let old = GpuEvidence {
        ocsp: ocsp(a, SimOcspStatus::Good, 7200),
        ..good(a)
    };
    refused_with(std::slice::from_ref(&old), &strict, "ocsp_stale");
    // The policy-wide collateral bound applies where [nvidia] sets none.
    let text = format!(
        "danger_simulated_roots = [\"{}\"]\nmax_collateral_age_seconds = 3600\n[nvidia]\nrequire_ocsp = true",
        hex::encode(sim().0.root_sha256())
    );
    refused_with(
        std::slice::from_ref(&old),
        &Policy::from_toml(&text).unwrap(),
        "ocsp_stale",
    );
    let text = text.replace("3600", "86400");
    assert!(verify_gpus(&[old], &NONCE, &Policy::from_toml(&text).unwrap(), NOW).accepted);
    let expired = GpuEvidence {
        ocsp: (1..=2)
            .map(|pos| {
                sim()
                    .0
                    .ocsp(
                        a,
                        pos,
                        SimOcspStatus::Good,
                        UnixTime(NOW.secs() - 600),
                        UnixTime(NOW.secs() - 1),
                    )
                    .unwrap()
            })
            .collect(),
        ..good(a)
    };
    refused_with(&[expired], &strict, "ocsp_stale");
    let revoked = GpuEvidence {
        ocsp: ocsp(a, SimOcspStatus::Revoked, 600),
        ..good(a)
    };
    refused_with(
        std::slice::from_ref(&revoked),
        &strict,
        "certificate_revoked",
    );
    // A revoked status counts even when the policy does not require OCSP.
    refused_with(&[revoked], &policy(""), "certificate_revoked");
    let unknown = GpuEvidence {
        ocsp: ocsp(a, SimOcspStatus::Unknown, 600),
        ..good(a)
    };
    refused_with(&[unknown], &strict, "ocsp_status_unknown");
    // Signed by another hierarchy: not about this chain at all.
    let other = NvidiaSim::generate(UnixTime(NOW.secs() - 86_400)).unwrap();
    let other_gpu = other.issue_gpu(0, UnixTime(NOW.secs() - 86_400)).unwrap();
    let foreign = GpuEvidence {
        ocsp: (1..=2)
            .map(|pos| {
                other
                    .ocsp(
                        &other_gpu,
                        pos,
                        SimOcspStatus::Good,
                        NOW,
                        UnixTime(NOW.secs() + 60),
                    )
                    .unwrap()
            })
            .collect(),
        ..good(a)
    };
    refused_with(&[foreign], &strict, "ocsp_invalid");
    // Another GPU's (same issuer, another serial) does not cover this one.
    let swapped = GpuEvidence {
        ocsp: vec![
            ocsp(b, SimOcspStatus::Good, 600).remove(0),
            ocsp(a, SimOcspStatus::Good, 600).remove(1),
        ],
        ..good(a)
    };
    refused_with(std::slice::from_ref(&swapped), &strict, "ocsp_missing");
    refused_with(&[swapped], &strict, "ocsp_invalid");
    // One byte of a signed response changed (the status near its end is
    // followed by the times, then the signature: flip inside the signed part).
    let mut forged = good(a);
    let r = &mut forged.ocsp[0];
    let at = r.len() / 2;
    r[at] ^= 0x01;
    let v = verify_gpus(&[forged], &NONCE, &strict, NOW);
    assert!(!v.accepted, "a changed OCSP byte was accepted");
}

#[test]
fn delegated_ocsp_responders_are_believed_only_with_their_issuers_authority() {
    let (sim, a, _) = sim();
    let strict = policy("require_ocsp = true\nmax_ocsp_age_seconds = 3600");
    let day_ago = UnixTime(NOW.secs() - 86_400);
    let by = |responders: [&SimOcspResponder; 2], status| GpuEvidence {
        ocsp: (1..=2)
            .map(|pos| {
                sim.ocsp_by(
                    a,
                    pos,
                    responders[pos - 1],
                    status,
                    UnixTime(NOW.secs() - 600),
                    UnixTime(NOW.secs() + 86_400),
                )
                .unwrap()
            })
            .collect(),
        ..good(a)
    };
    let device_responder = sim.ocsp_responder(1, true, day_ago).unwrap();
    let ica_responder = sim.ocsp_responder(2, true, day_ago).unwrap();
    let v = verify_gpus(
        &[by([&device_responder, &ica_responder], SimOcspStatus::Good)],
        &NONCE,
        &strict,
        NOW,
    );
    assert!(v.accepted, "{}", v.summary());
    refused_with(
        &[by(
            [&device_responder, &ica_responder],
            SimOcspStatus::Revoked,
        )],
        &strict,
        "certificate_revoked",
    );
    let refused_saying = |e: GpuEvidence, words: &str| {
        let v = verify_gpus(&[e], &NONCE, &strict, NOW);
        assert!(
            codes(&v).contains(&"ocsp_invalid".to_string()) && v.summary().contains(words),
            "expected ocsp_invalid saying {words:?}: {}",
            v.summary()
        );
    };
    // Issued by the CA but not for OCSP signing.
    let no_purpose = sim.ocsp_responder(1, false, day_ago).unwrap();
    refused_saying(
        by([&no_purpose, &ica_responder], SimOcspStatus::Good),
        "lacks the OCSP-signing purpose",
    );
    // The root's responder answering for a certificate the provisioner CA issued.
    refused_saying(
        by([&ica_responder, &ica_responder], SimOcspStatus::Good),
        "not by the certificate's issuer",
    );
    // Another hierarchy's responder, however well formed (its CA has the
    // same name as ours: the signature, not the name, decides).
    let other = NvidiaSim::generate(day_ago).unwrap();
    let foreign = other.ocsp_responder(1, true, day_ago).unwrap();
    refused_saying(
        by([&foreign, &ica_responder], SimOcspStatus::Good),
        "does not verify",
    );
    // Expired (valid for a year, from three years ago).
    let expired = sim
        .ocsp_responder(1, true, UnixTime(NOW.secs() - 3 * 365 * 86_400))
        .unwrap();
    refused_saying(
        by([&expired, &ica_responder], SimOcspStatus::Good),
        "delegated OCSP responder",
    );
}

/// The report's default measurements as two RIMs (a driver's, blocks 1-5,
/// and a VBIOS's, blocks 6-10), signed by `sim`.
fn rims_of(sim: &NvidiaSim, change: Option<usize>) -> [SimRim; 2] {
    let mut golden: Vec<(u32, Vec<u8>)> = SimGpuReport::default()
        .measurements
        .into_iter()
        .zip(0u32..)
        .map(|(m, i)| (i, m))
        .collect();
    if let Some(i) = change {
        golden[i].1[0] ^= 1;
    }
    let at = UnixTime(NOW.secs() - 86_400);
    let vbios = golden.split_off(5);
    [
        sim.rim("driver", "550.90.07", &golden, at).unwrap(),
        sim.rim("vbios", "96.00.9f.00.01", &vbios, at).unwrap(),
    ]
}

#[test]
fn simulated_rims_and_their_signers_ocsp() {
    let (sim, a, _) = sim();
    let rims = rims_of(sim, None);
    let with = |rims: &[SimRim], ocsp: Vec<Vec<u8>>| GpuEvidence {
        rims: rims.iter().map(|r| r.xml.clone()).collect(),
        ocsp,
        ..good(a)
    };
    let fresh = |rim: &SimRim, status| {
        sim.rim_ocsp(
            rim,
            status,
            UnixTime(NOW.secs() - 600),
            UnixTime(NOW.secs() + 86_400),
        )
        .unwrap()
    };
    let rim_ocsp: Vec<Vec<u8>> = rims.iter().map(|r| fresh(r, SimOcspStatus::Good)).collect();
    let all_ocsp = [ocsp(a, SimOcspStatus::Good, 600), rim_ocsp.clone()].concat();
    let strict = policy("require_rims = true\nrequire_ocsp = true");
    let v = verify_gpus(&[with(&rims, all_ocsp.clone())], &NONCE, &strict, NOW);
    assert!(v.accepted, "{}", v.summary());
    // Without RIMs, or without the RIM signers' OCSP, under that policy.
    refused_with(&[good(a)], &strict, "collateral_missing");
    let v = verify_gpus(
        &[with(&rims, ocsp(a, SimOcspStatus::Good, 600))],
        &NONCE,
        &strict,
        NOW,
    );
    assert!(
        codes(&v) == ["ocsp_missing", "ocsp_missing"]
            && v.summary().contains("RIM 1 certificate 0"),
        "{}",
        v.summary()
    );
    // A revoked RIM signer.
    let revoked = [
        ocsp(a, SimOcspStatus::Good, 600),
        vec![fresh(&rims[0], SimOcspStatus::Revoked), rim_ocsp[1].clone()],
    ]
    .concat();
    refused_with(&[with(&rims, revoked)], &strict, "certificate_revoked");
    // A golden value the report does not have.
    let loose = policy("require_rims = true");
    refused_with(
        &[with(&rims_of(sim, Some(7)), Vec::new())],
        &loose,
        "gpu_measurement_mismatch",
    );
    // Signed by another hierarchy, or changed after signing.
    let other = NvidiaSim::generate(UnixTime(NOW.secs() - 86_400)).unwrap();
    refused_with(
        &[with(&rims_of(&other, None), Vec::new())],
        &loose,
        "untrusted_root",
    );
    let mut edited = rims_of(sim, None);
    let text = String::from_utf8(edited[0].xml.clone()).unwrap();
    let at = text.find("Hash0=\"").unwrap() + 7;
    let flipped = if &text[at..at + 1] == "0" { "1" } else { "0" };
    edited[0].xml = format!("{}{flipped}{}", &text[..at], &text[at + 1..]).into_bytes();
    refused_with(&[with(&edited, Vec::new())], &loose, "gpu_rim_invalid");
}

#[test]
fn several_gpus_need_protected_pcie_and_distinct_evidence() {
    let (_, a, b) = sim();
    let p = policy("min_gpus = 2");
    refused_with(&[good(a), good(b)], &p, "gpu_protected_pcie_off");
    let ppcie = |g: &SimGpu| {
        evidence(
            g,
            &SimGpuReport {
                nonce: NONCE,
                protected_pcie: true,
                ..Default::default()
            },
        )
    };
    let v = verify_gpus(&[ppcie(a), ppcie(b)], &NONCE, &p, NOW);
    assert!(v.accepted, "{}", v.summary());
    // NVML claims protected PCIe but the signed report says otherwise.
    let lying = GpuEvidence {
        protected_pcie: Some(true),
        ..good(b)
    };
    refused_with(&[ppcie(a), lying], &p, "gpu_protected_pcie_off");
    refused_with(&[ppcie(a)], &p, "gpu_count_below_minimum");
    refused_with(&[ppcie(a), ppcie(a)], &p, "evidence_malformed");
    // One GPU's report again under another UUID, unsigned bytes appended.
    let first = ppcie(a);
    let mut again = first.clone();
    again.uuid = b.uuid.clone();
    again.report.extend_from_slice(&[0; 16]);
    refused_with(&[first, again], &p, "evidence_malformed");
}

#[test]
fn bytes_after_the_signature_are_accepted_and_every_signed_byte_is_not() {
    let (_, a, _) = sim();
    let g = evidence(
        a,
        &SimGpuReport {
            nonce: NONCE,
            trailing: 40,
            ..Default::default()
        },
    );
    let v = verify_gpus(std::slice::from_ref(&g), &NONCE, &policy(""), NOW);
    assert!(v.accepted, "{}", v.summary());
    let signed = g.report.len() - 40;
    for i in (0..signed).step_by(7) {
        let mut t = g.clone();
        t.report[i] ^= 0x01;
        let v = verify_gpus(&[t], &NONCE, &policy(""), NOW);
        assert!(!v.accepted, "report byte {i} flipped was accepted");
    }
}

#[test]
fn the_device_list_round_trips_in_trustees_shape() {
    let (_, a, b) = sim();
    let list = vec![good(a), good(b)];
    let json = GpuEvidence::encode_list(&list);
    assert!(json["device_evidence_list"][0]["evidence"].is_string());
    assert_eq!(json["device_evidence_list"][0]["cc_mode"], "on");
    assert_eq!(GpuEvidence::decode_list(&json).unwrap(), list);
    // Trustee's attester: hex evidence, no mode, no staples.
    let trustee = serde_json::json!({"device_evidence_list": [{
        "arch": "HOPPER", "uuid": a.uuid, "evidence": hex::encode(&list[0].report),
        "certificate": json["device_evidence_list"][0]["certificate"]}]});
    let decoded = GpuEvidence::decode_list(&trustee).unwrap();
    assert_eq!(decoded[0].report, list[0].report);
    assert_eq!(decoded[0].cc_mode, None);
    let bad = serde_json::json!({"device_evidence_list": [{"arch": "HOPPER", "uuid": "x",
        "evidence": "!!", "certificate": "AA=="}]});
    let e = GpuEvidence::decode_list(&bad).unwrap_err();
    assert!(e.contains("device 0") && e.contains("evidence"), "{e}");
}
