//! A guest with more GPUs than its TLS certificate can carry the evidence
//! of: the certificate's document names every GPU report by digest, and
//! the client fetches the whole document on the same connection (a fresh
//! nonce, the same TLS key) before it sends anything.

use super::*;

pub fn gpu_evidence_too_large_for_a_certificate_is_fetched_first(
    sys: &System,
    rt: &tokio::runtime::Runtime,
    expected: &str,
) {
    let BootedGuest {
        host,
        mut guest,
        log,
        ..
    } = boot_guest(sys, "many-gpus", "guest.log", &["--gpus", "sim:12"]);

    let client = rt
        .block_on(Client::connect(&host.url, sys.policy()))
        .unwrap();
    let v = client.verification();
    assert!(v.accepted, "{:?}", v.checks);
    assert_eq!(v.claims.gpus.len(), 12);
    assert_eq!(
        v.checks.iter().filter(|c| c.name == "gpu" && c.ok).count(),
        12
    );
    // Verified from the document fetched after the handshake.
    assert!(
        v.checks.iter().any(|c| c.name == "freshness" && c.ok)
            && v.checks.iter().any(|c| c.name == "same guest" && c.ok),
        "{:?}",
        v.checks
    );
    assert_eq!(
        content(
            &rt.block_on(client.chat(&chat_request("What is the capital of France?", 16)))
                .unwrap()
        ),
        expected
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("GPU evidence is too large for the TLS certificate"),
        "{text}"
    );
    // A policy this guest's twelve GPUs do not meet is still a refusal.
    let strict = Policy::from_toml(
        &std::fs::read_to_string(sys.s("policy"))
            .unwrap()
            .replace("min_gpus = 2\n", "min_gpus = 13\n"),
    )
    .unwrap();
    match rt.block_on(Client::connect(&host.url, strict)) {
        Err(ClientError::Refused { verification, .. }) => assert!(
            verification
                .first_failure()
                .is_some_and(|c| c.detail.contains("gpu_count_below_minimum")),
            "{:?}",
            verification.checks
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let _ = Command::new("kill")
        .args(["-TERM", &guest.0.id().to_string()])
        .status();
    let _ = guest.0.wait();
}
