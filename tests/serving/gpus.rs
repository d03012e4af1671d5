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

/// The demo on the simulated TDX platform: the guest's document carries a
/// quote with the collateral that verifies it, so the client needs nothing
/// else; its two GPUs are checked as on SNP; the answer is the SNP guest's;
/// a policy for an SNP guest refuses it.
pub fn the_system_serves_on_tdx_too(rt: &tokio::runtime::Runtime, expected: &str) {
    let sys = System::start_on("tdx");
    assert_eq!(sys.s("platform"), "tdx");
    let client = rt
        .block_on(Client::connect(&sys.s("url"), sys.policy()))
        .unwrap();
    let v = client.verification();
    assert!(v.accepted, "{:?}", v.checks);
    assert_eq!(v.claims.platform, "tdx");
    let verdict = v.verdict.as_ref().unwrap();
    assert!(verdict.simulated);
    assert_eq!(verdict.platform.to_string(), "tdx");
    assert_eq!(
        v.checks.iter().filter(|c| c.name == "gpu" && c.ok).count(),
        2
    );
    let fresh = rt.block_on(client.fresh_attestation()).unwrap();
    assert!(fresh.checks.iter().any(|c| c.name == "freshness" && c.ok));
    assert_eq!(
        content(
            &rt.block_on(client.chat(&chat_request("What is the capital of France?", 16)))
                .unwrap()
        ),
        expected
    );
    // A policy for SNP guests (the TDX root still named) refuses it.
    let snp_policy = std::fs::read_to_string(sys.s("policy"))
        .unwrap()
        .replace("platforms = [\"tdx\", ", "platforms = [\"snp\", ")
        .replace("[tdx]\nmrtd", "[snp]\nmeasurements");
    match rt.block_on(Client::connect(
        &sys.s("url"),
        Policy::from_toml(&snp_policy).unwrap(),
    )) {
        Err(ClientError::Refused { verification, .. }) => {
            let failed = verification.first_failure().unwrap();
            assert!(
                failed.name == "evidence" && failed.detail.contains("platform_not_allowed"),
                "{failed:?}"
            );
        }
        other => panic!("an SNP policy accepted a TDX guest: {other:?}"),
    }
    // A policy that takes evidence at most a second old: the certificate's
    // is older by now, so the client fetches a fresh document on the same
    // connection before anything else, and the session is accepted on it.
    let young = sys.write_policy(
        "young.toml",
        &format!(
            "max_evidence_age_seconds = 1\n{}",
            std::fs::read_to_string(sys.s("policy")).unwrap()
        ),
    );
    std::thread::sleep(Duration::from_millis(2100));
    let client = rt
        .block_on(Client::connect(
            &sys.s("url"),
            Policy::from_toml(&std::fs::read_to_string(&young).unwrap()).unwrap(),
        ))
        .unwrap();
    let checks = &client.verification().checks;
    assert!(
        checks.iter().any(|c| c.name == "freshness" && c.ok)
            && checks.iter().any(|c| c.name == "same guest" && c.ok)
            && !checks.iter().any(|c| c.name == "evidence age"),
        "{checks:?}"
    );
    // `ciel verify` shows it.
    let path = sys.write_policy(
        "tdx.toml",
        &std::fs::read_to_string(sys.s("policy")).unwrap(),
    );
    let run = crate::common::ciel([
        "verify".as_ref(),
        sys.s("url").as_ref(),
        "--policy".as_ref(),
        path.as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("runtime:     ciel-enclave")
            && run.stdout.contains(" on tdx")
            && run.stdout.contains("platform:    tdx"),
        "{}",
        run.stdout
    );
}

/// A guest whose certificate's evidence is made anew every second: a later
/// handshake presents evidence stamped later, for the same TLS key (the
/// certificate's own document, read in the handshake, before any fetch).
pub fn the_certificate_evidence_is_refreshed(sys: &System) {
    let BootedGuest {
        host, mut guest, ..
    } = boot_guest(sys, "refresh", "guest.log", &["--evidence-refresh", "1"]);
    let certificate_stamp = || {
        let verifier = ciel_client::tls::AttestedVerifier::new(sys.policy());
        let config = verifier.client_config().unwrap();
        let mut sock =
            std::net::TcpStream::connect(host.url.trim_start_matches("https://")).unwrap();
        let mut tls =
            rustls::ClientConnection::new(config, "ciel-enclave".try_into().unwrap()).unwrap();
        while tls.is_handshaking() {
            tls.complete_io(&mut sock).unwrap();
        }
        let v = verifier.outcome().unwrap().unwrap();
        // Everything but the GPUs' evidence (too large for it) verified.
        assert!(v.accepted || v.awaits_fresh_document(), "{:?}", v.checks);
        (v.claims.issued_at.unwrap(), v.claims.tls_spki_sha256)
    };
    let (first, key) = certificate_stamp();
    std::thread::sleep(Duration::from_millis(2500));
    let (later, same_key) = certificate_stamp();
    assert!(later > first, "issued at {first}, then {later}");
    assert_eq!(same_key, key);
    let _ = Command::new("kill")
        .args(["-TERM", &guest.0.id().to_string()])
        .status();
    let _ = guest.0.wait();
}
