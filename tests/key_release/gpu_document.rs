//! The composite attestation document a serving guest hands clients: the
//! claims name every GPU (identity, versions, mode, report digest), the CPU
//! evidence binds the claims, and the document carries each GPU's report
//! and chain. What the client SDK accepts, and each way it refuses.

use super::*;
use ciel_attestation::nvidia::{CcMode, GpuEvidence};
use ciel_attestation::{Policy, UnixTime};
use ciel_client::attested::{Verification, verify_document};
use ciel_enclave::gpu::{GpuSource, SimGpus};
use ciel_enclave::serve::attested_tls::{IdentityError, attest};
use ciel_protocol::claims::AttestationDocument;

fn unix_now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
}

fn cpu() -> SimSnpSource<&'static SnpSim> {
    SimSnpSource {
        sim: sim(),
        template: SimSnpReport::default(),
    }
}

/// `n` simulated GPUs of the shared test hierarchy.
fn gpus(n: u32) -> SimGpus {
    let s = &gpu_sim().0;
    let sim = NvidiaSim::from_files(|f| {
        s.to_files()
            .unwrap()
            .into_iter()
            .find(|(name, _)| *name == f)
            .map(|(_, b)| b)
    })
    .unwrap();
    SimGpus::new(sim, n, unix_now()).unwrap()
}

/// Trusts both simulated roots, plus `extra` TOML.
fn policy(extra: &str) -> Policy {
    Policy::from_toml(&format!(
        "danger_simulated_roots = [\"{}\", \"{}\"]\n{extra}",
        hex::encode(sim().root_sha256()),
        hex::encode(gpu_sim().0.root_sha256())
    ))
    .unwrap()
}

fn verify(doc: &AttestationDocument, p: &Policy) -> Verification {
    verify_document(doc, GUEST_SPKI, p, unix_now(), None)
}

fn failed(v: &Verification) -> Vec<String> {
    v.checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect()
}

/// Reports made for another nonce than the claims' (a host replaying
/// another boot's GPU reports into a guest's document).
struct OtherNonce(SimGpus);

impl GpuSource for OtherNonce {
    fn collect(&self, _nonce: [u8; 32]) -> Result<Vec<GpuEvidence>, String> {
        self.0.collect([0x5a; 32])
    }
    fn set_ready(&self) -> Result<(), String> {
        Ok(())
    }
}

#[test]
fn guest_document_binds_every_gpu_and_the_client_checks_each() {
    let two = gpus(2);
    let doc = attest(&cpu(), &two, guest_claims()).unwrap();
    assert_eq!(doc.claims.gpus.len(), 2);
    let g = &doc.claims.gpus[1];
    assert_eq!((g.index, g.arch.as_str()), (1, "HOPPER"));
    assert_eq!(g.driver.as_deref(), Some("550.90.07"));
    assert_eq!(g.vbios.as_deref(), Some("96.00.9f.00.01"));
    assert_eq!(
        (g.cc_mode.as_deref(), g.protected_pcie),
        (Some("on"), Some(true))
    );

    let v = verify(
        &doc,
        &policy("[nvidia]\nmin_gpus = 2\nrequire_ocsp = true\nrequire_rims = true\n"),
    );
    assert!(v.accepted, "{:?}", failed(&v));
    let gpu_lines: Vec<_> = v.checks.iter().filter(|c| c.name == "gpu").collect();
    assert_eq!(gpu_lines.len(), 2);
    assert!(
        gpu_lines[0].detail.contains(&doc.claims.gpus[0].uuid)
            && gpu_lines[0].detail.contains("SIMULATED")
            && gpu_lines[0]
                .detail
                .contains("4 OCSP responses good; 2 RIMs matched"),
        "{}",
        gpu_lines[0].detail
    );
    assert!(v.checks.iter().any(|c| c.name == "gpus" && c.ok));
    assert!(v.to_json()["gpus"]["gpus"][1]["uuid"].is_string());
    let text = ciel_client::report::render_verification(&v);
    assert_eq!(text.matches("[ ok ] gpu: GPU ").count(), 2, "{text}");

    // The GPU root not named by the policy: both GPUs refused.
    let cpu_only = Policy::from_toml(&format!(
        "danger_simulated_roots = [\"{}\"]\n",
        hex::encode(sim().root_sha256())
    ))
    .unwrap();
    let v = verify(&doc, &cpu_only);
    assert!(!v.accepted);
    let f = failed(&v);
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(f.iter().all(|l| l.contains("untrusted_root")), "{f:?}");

    // The policy's allowlists and count.
    let v = verify(
        &doc,
        &policy("[nvidia]\nvbios_versions = [\"96.00.74.00.1c\"]\n"),
    );
    assert!(
        failed(&v)
            .iter()
            .any(|l| l.contains("gpu_vbios_not_allowed")),
        "{:?}",
        failed(&v)
    );
    let v = verify(&doc, &policy("[nvidia]\nmin_gpus = 3\n"));
    assert_eq!(
        failed(&v),
        vec!["gpus: 2 GPUs attested, the policy requires at least 3 (gpu_count_below_minimum)"]
    );

    // A guest without GPUs, under a policy requiring one.
    let none = attest(&cpu(), &ciel_enclave::gpu::NoGpus, guest_claims()).unwrap();
    assert!((none.claims.gpus.is_empty() && none.gpu_evidence.is_none()));
    assert!(verify(&none, &policy("")).accepted);
    let v = verify(&none, &policy("[nvidia]\nmin_gpus = 1\n"));
    assert!(
        failed(&v)
            .iter()
            .any(|l| l.contains("gpu_count_below_minimum")),
        "{:?}",
        failed(&v)
    );
}

#[test]
fn gpu_evidence_not_named_by_the_attested_claims_is_refused() {
    let p = policy("");
    let doc = attest(&cpu(), &gpus(2), guest_claims()).unwrap();
    let other = attest(&cpu(), &gpus(2), guest_claims()).unwrap();
    let unbound = |d: &AttestationDocument| {
        let v = verify(d, &p);
        assert!(!v.accepted);
        let f = failed(&v);
        assert!(
            f.iter()
                .any(|l| l.starts_with("gpu binding: ") && l.ends_with("(gpu_evidence_unbound)")),
            "{f:?}"
        );
        f
    };

    // Another document's reports of the same GPUs (another boot's TLS key,
    // so another GPU nonce): not the reports these claims name.
    let mut swapped = doc.clone();
    swapped.gpu_evidence = other.gpu_evidence.clone();
    assert!(unbound(&swapped)[0].contains("report SHA-256"));

    // One GPU dropped, or the two reordered.
    let mut list = GpuEvidence::decode_list(doc.gpu_evidence.as_ref().unwrap()).unwrap();
    let mut dropped = doc.clone();
    dropped.gpu_evidence = Some(GpuEvidence::encode_list(&list[..1]));
    assert!(unbound(&dropped)[0].contains("evidence of 1"));
    list.swap(0, 1);
    let mut reordered = doc.clone();
    reordered.gpu_evidence = Some(GpuEvidence::encode_list(&list));
    unbound(&reordered);

    // NVML's mode rewritten in the evidence (DEVTOOLS hidden as "on", or
    // the reverse): the claims the CPU evidence binds say otherwise.
    list.swap(0, 1);
    list[0].cc_mode = Some(CcMode::Devtools);
    let mut devtools = doc.clone();
    devtools.gpu_evidence = Some(GpuEvidence::encode_list(&list));
    assert!(unbound(&devtools)[0].contains("cc_mode"));

    // Evidence no claim names.
    let mut extra = attest(&cpu(), &ciel_enclave::gpu::NoGpus, guest_claims()).unwrap();
    extra.gpu_evidence = doc.gpu_evidence.clone();
    unbound(&extra);

    // The claims rewritten to match swapped evidence: the CPU evidence no
    // longer binds them.
    let mut rewritten = swapped.clone();
    rewritten.claims.gpus = other.claims.gpus.clone();
    let v = verify(&rewritten, &p);
    assert!(
        failed(&v).iter().any(|l| l.starts_with("claims binding")),
        "{:?}",
        failed(&v)
    );

    // Reports bound into the claims but made for another nonce.
    let replayed = attest(&cpu(), &OtherNonce(gpus(1)), guest_claims()).unwrap();
    let v = verify(&replayed, &p);
    assert!(
        failed(&v).iter().any(|l| l.contains("gpu_nonce_mismatch")),
        "{:?}",
        failed(&v)
    );
}

#[test]
fn gpus_that_cannot_keep_a_secret_get_no_document_and_missing_evidence_is_deferred() {
    let mut devtools = gpus(1);
    devtools.cc_mode = CcMode::Devtools;
    match attest(&cpu(), &devtools, guest_claims()) {
        Err(IdentityError::Gpu(m)) => assert!(m.contains("gpu_devtools_on"), "{m}"),
        other => panic!("expected a GPU refusal, got {other:?}"),
    }
    let mut off = gpus(1);
    off.cc_mode = CcMode::Off;
    assert!(matches!(
        attest(&cpu(), &off, guest_claims()),
        Err(IdentityError::Gpu(_))
    ));

    // A certificate's copy without the GPU evidence: everything else
    // verified, the client must fetch the rest before trusting it.
    let mut doc = attest(&cpu(), &gpus(2), guest_claims()).unwrap();
    doc.gpu_evidence = None;
    let v = verify(&doc, &policy(""));
    assert!(!v.accepted && v.awaits_fresh_document(), "{:?}", v.checks);
    // ... but not when something else failed too.
    let mut other_key = doc.clone();
    other_key.claims.tls_spki_sha256 = "11".repeat(32);
    let v = verify(&other_key, &policy(""));
    assert!(!v.awaits_fresh_document(), "{:?}", v.checks);
}

#[test]
fn evidence_older_than_the_policy_allows_needs_a_fresh_document() {
    let doc = attest(&cpu(), &ciel_enclave::gpu::NoGpus, guest_claims()).unwrap();
    let stamped = doc.claims.issued_at.unwrap();
    let now = unix_now();
    assert!(stamped <= now.secs() && now.secs() - stamped < 60);
    let p = policy("max_evidence_age_seconds = 600\n");
    let at = |secs: u64| verify_document(&doc, GUEST_SPKI, &p, UnixTime(secs), None);
    let v = at(now.secs());
    assert!(v.accepted, "{:?}", failed(&v));
    assert!(v.checks.iter().any(|c| c.name == "evidence age" && c.ok));
    // Twenty minutes later the certificate's evidence is too old: all that
    // is missing is a fresh document.
    let v = at(now.secs() + 1200);
    assert!(!v.accepted && v.awaits_fresh_document(), "{:?}", v.checks);
    assert!(
        failed(&v)[0].ends_with("(evidence_too_old)"),
        "{:?}",
        failed(&v)
    );
    // Fresh evidence carries the client's nonce: its age is not asked.
    let nonce = [7u8; 16];
    let fresh = attest(
        &cpu(),
        &ciel_enclave::gpu::NoGpus,
        guest_claims().with_nonce(&nonce),
    )
    .unwrap();
    let v = verify_document(
        &fresh,
        GUEST_SPKI,
        &p,
        UnixTime(now.secs() + 1200),
        Some(&nonce),
    );
    assert!(v.accepted, "{:?}", failed(&v));
    // Without the policy's bound, no age check at all.
    let v = verify_document(
        &doc,
        GUEST_SPKI,
        &policy(""),
        UnixTime(now.secs() + 1200),
        None,
    );
    assert!(v.accepted && !v.checks.iter().any(|c| c.name == "evidence age"));
}
