//! Interoperability with Trustee (confidential-containers/trustee), both
//! directions, built from Trustee's sources:
//! - its own `kbs-client` gets a resource from `ciel kbs serve` — through
//!   the RCAR handshake with guest-components' `sample` attester (composite
//!   evidence, Trustee's binding), then again in passport mode with the EAR
//!   token `attest` returned as a bearer token — and the key it gets opens
//!   the model sealed under it; a resource without
//!   `danger_accept_sample_evidence` is refused to it;
//! - ciel's guest key-release client gets its key from Trustee's KBS (with
//!   Trustee's sample TEE: its default resource policy refuses it, a policy
//!   that allows it releases);
//! - Trustee's own resource policies (its `kbs/sample_policies/*.rego`, as
//!   its sources hold them) decide in ciel's broker as they do in Trustee's,
//!   for simulated SNP and for sample evidence.
//!
//! Needs Trustee's kbs-client and KBS, which are not on the crate
//! registries: `scripts/trustee-build.sh [kbs-client|kbs|policies]` builds
//! them (or exports the policies) from their public sources and prints
//! their paths; `scripts/test.sh` runs this test with
//!   CIEL_TRUSTEE_KBS_CLIENT=… CIEL_TRUSTEE_KBS=… CIEL_TRUSTEE_POLICIES=… cargo test --test trustee_interop -- --ignored
//! and says loudly which part it could not run.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use base64::Engine;
use common::{kbs_serve, seal_registered, unsealed};
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

/// `kbs-client get-resource --path PATH [extra…]` against `url`.
fn kbs_client_get(url: &str, ca: &Path, path: &str, extra: &[&std::ffi::OsStr]) -> Output {
    let mut args: Vec<&std::ffi::OsStr> =
        vec!["get-resource".as_ref(), "--path".as_ref(), path.as_ref()];
    args.extend_from_slice(extra);
    run_kbs_client(url, ca, &args)
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
    let config = common::kbs_init(&kb);
    // One resource for Trustee's sample TEE (dangerously), one that needs
    // hardware evidence.
    let (_sim, fp) = common::fresh_sim();
    std::fs::write(
        kb.join("hw.policy.toml"),
        format!("danger_simulated_roots = [\"{fp}\"]\n"),
    )
    .unwrap();
    let config = config
        + "[[resource]]\npath = \"default/interop/key\"\ndanger_accept_sample_evidence = true\n\
           [[resource]]\npath = \"default/interop/hw\"\npolicy_file = \"hw.policy.toml\"\n";
    std::fs::write(kb.join("kbs.toml"), config).unwrap();
    let (_broker, url) = kbs_serve(&kb, &[]).unwrap_or_else(|e| panic!("{e}"));

    let model = tmp.path().join("model.gguf");
    let bytes = common::fake_model(&model, 50_000);
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
    let out = kbs_client_get(&url, &ca, "default/interop/key", &[]);
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
    let out = kbs_client_get(
        &url,
        &ca,
        "default/interop/key",
        &[
            "--attestation-token".as_ref(),
            token_file.as_os_str(),
            "--tee-key-file".as_ref(),
            key.as_os_str(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    opens(&String::from_utf8_lossy(&out.stdout));

    // The hardware-only resource is refused to sample evidence.
    let out = kbs_client_get(&url, &ca, "default/interop/hw", &[]);
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

/// Trustee's KBS on a free loopback port (plain HTTP, admin API open: a
/// test instance), its state under `dir`; its URL.
fn trustee_kbs(dir: &Path) -> (common::Running, String) {
    let kbs = std::env::var_os("CIEL_TRUSTEE_KBS")
        .map(PathBuf::from)
        .expect("CIEL_TRUSTEE_KBS is not set: build it with scripts/trustee-build.sh kbs");
    let port = common::free_port();
    let config = dir.join("kbs-config.toml");
    std::fs::write(
        &config,
        format!(
            "[http_server]\nsockets = [\"127.0.0.1:{port}\"]\ninsecure_http = true\n\n\
             [attestation_token]\ninsecure_header_jwk = true\n\n\
             [attestation_service]\ntype = \"coco_as_builtin\"\n\n\
             [attestation_service.attestation_token_broker]\nduration_min = 5\n\n\
             [attestation_service.rvps_config]\ntype = \"BuiltIn\"\n\n\
             [admin]\nauthorization_mode = \"InsecureAllowAll\"\n\n\
             [storage_backend]\nstorage_type = \"LocalFs\"\n\n\
             [storage_backend.backends.local_fs]\ndir_path = {:?}\n\n\
             [[plugins]]\nname = \"resource\"\nstorage_backend_type = \"kvstorage\"\n",
            dir.join("storage").display().to_string()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("kbs.log")).unwrap();
    let child = Command::new(kbs)
        .arg("--config-file")
        .arg(&config)
        .current_dir(dir)
        .stderr(log.try_clone().unwrap())
        .stdout(log)
        .spawn()
        .unwrap();
    let running = common::Running(child);
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < end,
            "Trustee's KBS did not start:\n{}",
            std::fs::read_to_string(dir.join("kbs.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    (running, format!("http://127.0.0.1:{port}"))
}

/// `kbs-client config …` against Trustee's KBS (its admin API is open).
fn configure_trustee(url: &str, args: &[&std::ffi::OsStr]) {
    let out = Command::new(kbs_client())
        .args(["--url", url, "config"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
#[ignore = "needs Trustee's KBS and kbs-client (CIEL_TRUSTEE_KBS, CIEL_TRUSTEE_KBS_CLIENT): see the header"]
fn ciels_guest_client_gets_its_key_from_trustees_kbs() {
    use ciel_enclave::kbs_client::sim::SampleSource;
    use ciel_enclave::kbs_client::{Backoff, KbsClient};
    let tmp = tempfile::tempdir().unwrap();
    let (_kbs, url) = trustee_kbs(tmp.path());
    let key_file = tmp.path().join("key");
    std::fs::write(&key_file, [0x5a; 32]).unwrap();
    configure_trustee(
        &url,
        &[
            "set-resource".as_ref(),
            "--path".as_ref(),
            "default/interop/key".as_ref(),
            "--resource-file".as_ref(),
            key_file.as_os_str(),
        ],
    );
    // Trustee's default resource policy refuses sample evidence: so does
    // it refuse ciel's guest client.
    configure_trustee(
        &url,
        &["set-resource-policy".as_ref(), "--default".as_ref()],
    );
    let client = KbsClient::new(&url, Backoff::default());
    let refused = client.fetch_resource("default/interop/key", &SampleSource);
    assert!(refused.is_err(), "released under the default policy");
    // A policy that lets it through: ciel's client speaks Trustee's
    // protocol end to end (auth, composite evidence, token, JWE).
    configure_trustee(
        &url,
        &["set-resource-policy".as_ref(), "--allow-all".as_ref()],
    );
    let key = client
        .fetch_resource("default/interop/key", &SampleSource)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(key.as_slice(), &[0x5a; 32]);
}

#[test]
#[ignore = "needs Trustee's sample policies (CIEL_TRUSTEE_POLICIES): see the header"]
fn trustees_own_resource_policies_decide_unchanged_in_ciels_broker() {
    use ciel_attestation::sim::SimSnpReport;
    use ciel_enclave::kbs_client::sim::{SampleSource, SimSnpSource};
    use ciel_enclave::kbs_client::{Backoff, EvidenceSource, KbsClient};
    let policies = std::env::var_os("CIEL_TRUSTEE_POLICIES")
        .map(PathBuf::from)
        .expect("CIEL_TRUSTEE_POLICIES is not set: scripts/trustee-build.sh policies");
    let tmp = tempfile::tempdir().unwrap();
    let kb = tmp.path().join("kbs");
    let (sim, fp) = common::fresh_sim();
    // Each of Trustee's policies, as its file is, decides one resource
    // alone (no TOML policy); sample evidence may reach them.
    let names = ["default", "affirming", "allow_all", "deny_all"];
    let mut config = common::trust_simulated_root(&common::kbs_init(&kb), &fp);
    for name in names {
        config.push_str(&format!(
            "[[resource]]\npath = \"default/trustee/{name}\"\nrego_policy_file = {:?}\ndanger_accept_sample_evidence = true\n",
            policies.join(format!("{name}.rego")).display().to_string()
        ));
    }
    std::fs::write(kb.join("kbs.toml"), config).unwrap();
    let (_broker, url) = kbs_serve(&kb, &[]).unwrap_or_else(|e| panic!("{e}"));
    let model = tmp.path().join("model.gguf");
    std::fs::write(&model, b"GGUF-policy-test").unwrap();
    for name in names {
        let sealed = tmp.path().join(format!("{name}.csm"));
        seal_registered(
            &model,
            &sealed,
            &format!("default/trustee/{name}"),
            &url,
            &kb,
        );
    }
    let ca = std::fs::read(kb.join("tls-ca.pem")).unwrap();
    let client = KbsClient::with_pinned_ca(&url, &ca, Backoff::default()).unwrap();
    let hardware = SimSnpSource {
        sim: &sim,
        template: SimSnpReport::default(),
    };
    let guests: [(&str, &dyn EvidenceSource); 2] = [("snp", &hardware), ("sample", &SampleSource)];
    // Trustee's own expectations: `default` refuses sample evidence,
    // `affirming` wants every submodule affirming, the others as named.
    for (name, expected) in [
        ("default", [true, false]),
        ("affirming", [true, false]),
        ("allow_all", [true, true]),
        ("deny_all", [false, false]),
    ] {
        for ((what, guest), allowed) in guests.iter().zip(expected) {
            let got = client.fetch_resource(&format!("default/trustee/{name}"), *guest);
            assert_eq!(
                got.is_ok(),
                allowed,
                "{name}.rego, {what} evidence: {got:?}"
            );
            if let Err(e) = got {
                assert!(e.to_string().contains("policy"), "{name}.rego, {what}: {e}");
            }
        }
    }
    let audit = std::fs::read_to_string(kb.join("audit.jsonl")).unwrap();
    assert_eq!(audit.matches("rego_denied").count(), 4, "{audit}");
}
