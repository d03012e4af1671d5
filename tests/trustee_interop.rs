//! Interoperability with Trustee (confidential-containers/trustee): its own
//! `kbs-client`, built from Trustee's sources, gets a resource from `ciel
//! kbs serve` — through the RCAR handshake with guest-components'
//! `sample` attester (composite evidence, Trustee's binding), then again in
//! passport mode with the EAR token `attest` returned as a bearer token —
//! and the key it gets opens the model sealed under it. A resource without
//! `danger_accept_sample_evidence` is refused to it.
//!
//! Needs Trustee's kbs-client, which is not on the crate registries:
//! `scripts/trustee-build.sh` builds it from its public sources and prints
//! its path; `scripts/test.sh` runs this test with
//!   CIEL_TRUSTEE_KBS_CLIENT=… cargo test --test trustee_interop -- --ignored
//! and says loudly when it could not.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use base64::Engine;
use common::{ciel, kbs_serve, seal_registered, unsealed};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kbs_client() -> PathBuf {
    std::env::var_os("CIEL_TRUSTEE_KBS_CLIENT")
        .map(PathBuf::from)
        .expect("CIEL_TRUSTEE_KBS_CLIENT is not set: build it with scripts/trustee-build.sh")
}

fn run_kbs_client(url: &str, ca: &Path, args: &[&std::ffi::OsStr]) -> Output {
    Command::new(kbs_client())
        .args(["--url", url, "--cert-file"])
        .arg(ca)
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A TEE key as kbs-client reads one (P-256, PKCS#8 PEM).
fn tee_key(path: &Path) {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .unwrap();
    let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()));
    std::fs::write(path, pem).unwrap();
}

#[test]
#[ignore = "needs Trustee's kbs-client (CIEL_TRUSTEE_KBS_CLIENT): see the header"]
fn trustees_kbs_client_gets_a_resource_from_ciel() {
    let tmp = tempfile::tempdir().unwrap();
    let kb = tmp.path().join("kbs");
    let init = ciel(["kbs".as_ref(), "init".as_ref(), kb.as_os_str()]);
    assert_eq!(init.code, 0, "{}", init.stderr);
    // One resource for Trustee's sample TEE (dangerously), one that needs
    // hardware evidence.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sim = ciel_attestation::sim::SnpSim::generate(ciel_attestation::UnixTime(now)).unwrap();
    let fp = hex::encode(sim.root_sha256());
    std::fs::write(
        kb.join("hw.policy.toml"),
        format!("danger_simulated_roots = [\"{fp}\"]\n"),
    )
    .unwrap();
    let config = std::fs::read_to_string(kb.join("kbs.toml")).unwrap()
        + "[[resource]]\npath = \"default/interop/key\"\ndanger_accept_sample_evidence = true\n\
           [[resource]]\npath = \"default/interop/hw\"\npolicy_file = \"hw.policy.toml\"\n";
    std::fs::write(kb.join("kbs.toml"), config).unwrap();
    let (_broker, url) = kbs_serve(&kb, &[]).unwrap_or_else(|e| panic!("{e}"));

    let model = tmp.path().join("model.gguf");
    let bytes: Vec<u8> = b"GGUF"
        .iter()
        .copied()
        .chain((0..50_000u32).map(|i| (i % 241) as u8))
        .collect();
    std::fs::write(&model, &bytes).unwrap();
    let sealed = tmp.path().join("model.csm");
    seal_registered(&model, &sealed, "default/interop/key", &url, &kb);
    let hw_sealed = tmp.path().join("hw.csm");
    seal_registered(&model, &hw_sealed, "default/interop/hw", &url, &kb);
    let ca = kb.join("tls-ca.pem");
    let opens = |b64: &str| {
        let key = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .unwrap();
        assert_eq!(unsealed(&sealed, &key), bytes);
    };

    // Background check: kbs-client runs auth → attest (sample) → resource.
    let out = run_kbs_client(
        &url,
        &ca,
        &[
            "get-resource".as_ref(),
            "--path".as_ref(),
            "default/interop/key".as_ref(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    opens(&String::from_utf8_lossy(&out.stdout));

    // Passport: `attest` gives ciel's EAR token; kbs-client presents it.
    let key = tmp.path().join("tee.pem");
    tee_key(&key);
    let out = run_kbs_client(
        &url,
        &ca,
        &[
            "attest".as_ref(),
            "--tee-key-file".as_ref(),
            key.as_os_str(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let claims = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["platform"], "sample",
        "{claims}"
    );
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, &token).unwrap();
    let out = run_kbs_client(
        &url,
        &ca,
        &[
            "get-resource".as_ref(),
            "--path".as_ref(),
            "default/interop/key".as_ref(),
            "--attestation-token".as_ref(),
            token_file.as_os_str(),
            "--tee-key-file".as_ref(),
            key.as_os_str(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    opens(&String::from_utf8_lossy(&out.stdout));

    // The hardware-only resource is refused to sample evidence.
    let out = run_kbs_client(
        &url,
        &ca,
        &[
            "get-resource".as_ref(),
            "--path".as_ref(),
            "default/interop/hw".as_ref(),
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    let audit = std::fs::read_to_string(kb.join("audit.jsonl")).unwrap();
    assert!(audit.contains("sample_evidence_refused"), "{audit}");
    assert_eq!(
        audit
            .lines()
            .filter(|l| l.contains("\"release\"") && l.contains("danger_sample_evidence"))
            .count(),
        2,
        "{audit}"
    );
}
