//! GPU-gated key release: the guest's GPUs in Trustee's
//! `additional_evidence` (bound by the CPU evidence), each report carrying
//! the session's nonce; the broker refuses a CC-off or DEVTOOLS GPU and a
//! report made for another session at `/attest`, and each resource's GPU
//! rules (VBIOS allowlist, OCSP freshness, GPU count) at release.

use super::*;
use ciel_attestation::nvidia::{CcMode, GpuEvidence};
use ciel_attestation::sim::{SimGpuReport, SimOcspStatus};
use ciel_attestation::tee_evidence::encode_additional;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// GPU `gpu`'s evidence for `nonce`, with OCSP responses `ocsp_age` old.
fn gpu_evidence(gpu: &SimGpu, nonce: [u8; 32], cc_mode: CcMode, ocsp_age: u64) -> GpuEvidence {
    let sim = &gpu_sim().0;
    let (this, next) = (now() - ocsp_age, now() + 86_400);
    GpuEvidence {
        arch: "HOPPER".into(),
        uuid: gpu.uuid.clone(),
        report: gpu
            .report(&SimGpuReport {
                nonce,
                ..Default::default()
            })
            .unwrap(),
        certificate: gpu.chain_pem(),
        cc_mode: Some(cc_mode),
        protected_pcie: Some(false),
        ocsp: (1..=2)
            .map(|pos| {
                sim.ocsp(
                    gpu,
                    pos,
                    SimOcspStatus::Good,
                    ciel_attestation::UnixTime(this),
                    ciel_attestation::UnixTime(next),
                )
                .unwrap()
            })
            .collect(),
        rims: Vec::new(),
    }
}

/// Attests a session whose guest has the GPUs `make` returns (given the
/// session's GPU nonce); the CPU evidence binds them. (cookie, status, body)
fn attest_with_gpus(
    base: &str,
    make: impl Fn([u8; 32]) -> Vec<GpuEvidence>,
) -> (String, u16, serde_json::Value) {
    let tee = TeeKeyPair::generate();
    let (cookie, nonce) = auth(base);
    let rt = RuntimeData {
        nonce,
        tee_pubkey: tee.public_jwk(),
    };
    let additional = encode_additional(&make(binding::device_nonce(&rt).unwrap()));
    let report_data = binding::report_data_with_additional(&rt, &additional).unwrap();
    let primary = genuine_guest().evidence(report_data).unwrap();
    let ev = serde_json::json!({"primary_evidence": primary, "additional_evidence": additional});
    let (s, body) = attest(base, Some(&cookie), &rt, ev);
    (cookie, s, body)
}

fn detail(p: &serde_json::Value) -> &str {
    p["detail"].as_str().unwrap_or_default()
}

#[test]
fn a_good_gpu_is_released_to_and_cc_off_devtools_or_another_sessions_report_are_refused() {
    let b = start(
        300,
        true,
        &[
            ("default/model-key/gpu", "[nvidia]\nmin_gpus = 1\n".into()),
            ("default/model-key/cpu", String::new()),
        ],
    );
    let (_, a, _) = gpu_sim();
    let (cookie, s, body) = attest_with_gpus(&b.base, |n| vec![gpu_evidence(a, n, CcMode::On, 60)]);
    assert_eq!(s, 200, "{body}");
    let claims = jwt_part(body["token"].as_str().unwrap(), 1);
    let gpu0 = &claims["submods"]["gpu0"]["ear.veraison.annotated-evidence"]["nvidia"];
    assert_eq!(gpu0["uuid"], a.uuid.as_str(), "{claims}");
    assert_eq!(gpu0["cc_mode"], "on");
    assert_eq!(gpu0["verdict"], "accept");
    let (s, jwe) = get_resource(&b.base, "default/model-key/gpu", Some(&cookie), None);
    assert_eq!(s, 200, "{jwe}");

    for (mode, code) in [
        (CcMode::Off, "gpu_cc_mode_off"),
        (CcMode::Devtools, "gpu_devtools_on"),
    ] {
        let (_, s, p) = attest_with_gpus(&b.base, |n| vec![gpu_evidence(a, n, mode, 60)]);
        assert_eq!(
            (s, p["type"].as_str()),
            (403, Some("urn:ciel:kbs:bad-evidence"))
        );
        assert!(detail(&p).contains(code), "{p}");
    }
    // A report made with another session's nonce (replayed).
    let (_, s, p) = attest_with_gpus(&b.base, |_| vec![gpu_evidence(a, [7; 32], CcMode::On, 60)]);
    assert_eq!(s, 403, "{p}");
    assert!(detail(&p).contains("gpu_nonce_mismatch"), "{p}");
    // Evidence for a device kind the broker does not know: refused by name.
    let tee = TeeKeyPair::generate();
    let (cookie2, nonce) = auth(&b.base);
    let rt = RuntimeData {
        nonce,
        tee_pubkey: tee.public_jwk(),
    };
    let additional = "{\"tpm\":{}}";
    let report_data = binding::report_data_with_additional(&rt, additional).unwrap();
    let ev = serde_json::json!({"primary_evidence": genuine_guest().evidence(report_data).unwrap(), "additional_evidence": additional});
    let (s, p) = attest(&b.base, Some(&cookie2), &rt, ev);
    assert_eq!(s, 403, "{p}");
    assert!(detail(&p).contains("\"tpm\""), "{p}");

    // A session without GPUs gets the CPU-only key, not the GPU-gated one.
    let (cookie, s, body) = attest_with_gpus(&b.base, |_| Vec::new());
    assert_eq!(s, 200, "{body}");
    let (s, _) = get_resource(&b.base, "default/model-key/cpu", Some(&cookie), None);
    assert_eq!(s, 200);
    let (s, p) = get_resource(&b.base, "default/model-key/gpu", Some(&cookie), None);
    assert_eq!(s, 403, "{p}");
    assert!(detail(&p).contains("gpu_count_below_minimum"), "{p}");

    let audit = b.audit();
    for code in [
        "gpu_cc_mode_off",
        "gpu_devtools_on",
        "gpu_nonce_mismatch",
        "gpu_count_below_minimum",
    ] {
        assert!(audit.contains(code), "{code} not audited");
    }
}

#[test]
fn each_resource_applies_its_own_gpu_rules_at_release() {
    let b = start(
        300,
        true,
        &[
            (
                "default/model-key/vbios",
                "[nvidia]\nvbios_versions = [\"96.00.74.00.1c\"]\n".into(),
            ),
            (
                "default/model-key/ocsp",
                "[nvidia]\nrequire_ocsp = true\nmax_ocsp_age_seconds = 3600\n".into(),
            ),
        ],
    );
    let (_, a, _) = gpu_sim();
    // Fresh OCSP, VBIOS 96.00.9f.00.01: the OCSP resource releases, the
    // VBIOS one does not.
    let (cookie, s, body) = attest_with_gpus(&b.base, |n| vec![gpu_evidence(a, n, CcMode::On, 60)]);
    assert_eq!(s, 200, "{body}");
    let (s, jwe) = get_resource(&b.base, "default/model-key/ocsp", Some(&cookie), None);
    assert_eq!(s, 200, "{jwe}");
    let (s, p) = get_resource(&b.base, "default/model-key/vbios", Some(&cookie), None);
    assert_eq!(
        (s, p["type"].as_str()),
        (403, Some("urn:ciel:kbs:policy-denied"))
    );
    assert!(detail(&p).contains("gpu_vbios_not_allowed"), "{p}");
    // OCSP responses two hours old: stale for the OCSP resource.
    let (cookie, s, body) =
        attest_with_gpus(&b.base, |n| vec![gpu_evidence(a, n, CcMode::On, 7200)]);
    assert_eq!(s, 200, "{body}");
    let (s, p) = get_resource(&b.base, "default/model-key/ocsp", Some(&cookie), None);
    assert_eq!(s, 403, "{p}");
    assert!(detail(&p).contains("ocsp_stale"), "{p}");
    let audit = b.audit();
    assert!(audit.contains("gpu_vbios_not_allowed") && audit.contains("ocsp_stale"));
}

/// The guest's GPUs, simulated from the broker's trusted GPU hierarchy.
fn guest_gpus(count: u32, mode: CcMode) -> ciel_enclave::gpu::SimGpus {
    let files = gpu_sim().0.to_files().unwrap();
    let sim =
        NvidiaSim::from_files(|n| files.iter().find(|(f, _)| *f == n).map(|(_, b)| b.clone()))
            .unwrap();
    let mut gpus =
        ciel_enclave::gpu::SimGpus::new(sim, count, ciel_attestation::UnixTime(now() - 3600))
            .unwrap();
    gpus.cc_mode = mode;
    gpus
}

#[test]
fn the_guest_sends_its_gpus_sets_them_ready_after_release_and_refuses_unsafe_ones_itself() {
    let b = start(
        300,
        true,
        &[(
            "default/model-key/demo",
            "[nvidia]\nmin_gpus = 2\nrequire_ocsp = true\n".into(),
        )],
    );
    let client = KbsClient::new(&b.base, Backoff::default());
    let two = guest_gpus(2, CcMode::On);
    let key = client
        .fetch_resource_with_gpus("default/model-key/demo", &genuine_guest(), &two)
        .unwrap();
    assert_eq!(key.as_slice(), &KEY);
    assert!(two.ready.load(std::sync::atomic::Ordering::SeqCst));
    // One GPU is not enough for this resource: refused, never set ready.
    let one = guest_gpus(1, CcMode::On);
    let e = client
        .fetch_resource_with_gpus("default/model-key/demo", &genuine_guest(), &one)
        .unwrap_err();
    assert!(e.to_string().contains("gpu_count_below_minimum"), "{e}");
    assert!(!one.ready.load(std::sync::atomic::Ordering::SeqCst));
    // A GPU in DEVTOOLS: the guest does not even ask.
    let before = b.audit().lines().count();
    let devtools = guest_gpus(2, CcMode::Devtools);
    let e = client
        .fetch_resource_with_gpus("default/model-key/demo", &genuine_guest(), &devtools)
        .unwrap_err();
    assert!(
        matches!(e, KbsClientError::Evidence(ref m) if m.contains("gpu_devtools_on")),
        "{e}"
    );
    assert_eq!(b.audit().lines().count(), before, "the guest asked anyway");
}
