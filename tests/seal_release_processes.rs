//! The owner's path across real processes: `ciel kbs init`, `ciel kbs
//! serve` (TLS), `ciel seal --kbs` registering the key, then a simulated
//! guest that attests, receives the key and unseals the model in memory.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use ciel_attestation::sim::SimSnpReport;
use ciel_enclave::kbs_client::sim::SimSnpSource;
use ciel_enclave::kbs_client::{Backoff, KbsClient};
use common::{ciel, seal_registered, start_kbs, unsealed};
use std::io::Read;
use std::process::Stdio;

#[test]
fn seal_register_attest_release_unseal() {
    let tmp = tempfile::tempdir().unwrap();
    let kb = tmp.path().join("kbs");

    // The guest is simulated; both the broker and the resource policy must name its root.
    let (sim, fp) = common::fresh_sim();
    let measurement = hex::encode(SimSnpReport::default().measurement);
    let mut server = start_kbs(
        &kb,
        &fp,
        &[("default/model-key/demo", &measurement)],
        Stdio::piped(),
    );
    let mut stderr = server.child.stderr.take().unwrap();
    let url = server.url.clone();

    // Seal a model and register its key.
    let model = tmp.path().join("model.gguf");
    let bytes = common::fake_model(&model, 200_000);
    let sealed = tmp.path().join("model.csm");
    let run = seal_registered(&model, &sealed, "default/model-key/demo", &url, &kb);
    assert!(run.stderr.contains("registered at"), "{}", run.stderr);

    // The guest: attest, receive the key, unseal in memory.
    let ca = std::fs::read(kb.join("tls-ca.pem")).unwrap();
    let client = KbsClient::with_pinned_ca(&url, &ca, Backoff::default()).unwrap();
    let source = SimSnpSource {
        sim: &sim,
        template: SimSnpReport::default(),
    };
    let key = client
        .fetch_resource("default/model-key/demo", &source)
        .unwrap();
    assert_eq!(unsealed(&sealed, &key), bytes);

    // A guest with another measurement gets nothing.
    let other = SimSnpSource {
        sim: &sim,
        template: SimSnpReport {
            measurement: [1; 48],
            ..Default::default()
        },
    };
    assert!(
        client
            .fetch_resource("default/model-key/demo", &other)
            .is_err()
    );

    // The admin CLI: the audit log from the running broker, then the key
    // version retired, after which no guest gets it.
    let admin = |args: &[&str]| {
        let mut all: Vec<std::ffi::OsString> = vec!["kbs".into()];
        all.extend(args.iter().map(std::ffi::OsString::from));
        all.extend([
            "--kbs".into(),
            url.clone().into(),
            "--kbs-ca".into(),
            kb.join("tls-ca.pem").into_os_string(),
            "--admin-key".into(),
            kb.join("admin.key").into_os_string(),
        ]);
        common::ciel(all)
    };
    let log = admin(&["audit"]);
    assert_eq!(log.code, 0, "{}", log.stderr);
    assert!(
        log.stdout.contains("admin-put") && log.stdout.contains("\"release\""),
        "{}",
        log.stdout
    );
    let retired = admin(&["retire", "default/model-key/demo", "1"]);
    assert_eq!(retired.code, 0, "{}", retired.stderr);
    let e = client
        .fetch_resource("default/model-key/demo", &source)
        .unwrap_err();
    assert!(e.to_string().contains("retired"), "{e}");
    let missing = admin(&["retire", "default/model-key/demo", "7"]);
    assert_ne!(missing.code, 0);
    assert!(
        missing.stderr.contains("no version 7"),
        "{}",
        missing.stderr
    );

    let audit = std::fs::read_to_string(kb.join("audit.jsonl")).unwrap();
    assert!(
        audit.contains("admin-retire")
            && audit.contains("\"release\"")
            && audit.contains("measurement_not_allowed")
            && audit.contains("admin-put"),
        "{audit}"
    );
    drop(server);
    let mut log = String::new();
    let _ = stderr.read_to_string(&mut log);
    assert!(
        log.contains("DANGER"),
        "the broker warns about simulated roots: {log}"
    );
    assert!(
        !log.contains(&hex::encode(key)),
        "key material in the broker log"
    );
    assert!(
        log.contains("audit log chain verified"),
        "the broker checks its audit log at start: {log}"
    );

    // The audit log's chain holds; an edited entry breaks it, and the
    // broker then refuses to start, naming the file and the line.
    let audit_path = kb.join("audit.jsonl");
    let check = common::ciel([
        "kbs".as_ref(),
        "verify-audit".as_ref(),
        audit_path.as_os_str(),
    ]);
    assert_eq!(check.code, 0, "{}", check.stderr);
    assert!(check.stdout.contains("chain intact"), "{}", check.stdout);
    // (The first entry: an edit of the last one shows only against a head
    // kept elsewhere.)
    let edited = audit.replacen("\"client\":\"", "\"client\":\"10.", 1);
    assert_ne!(edited, audit);
    std::fs::write(&audit_path, &edited).unwrap();
    let check = common::ciel([
        "kbs".as_ref(),
        "verify-audit".as_ref(),
        audit_path.as_os_str(),
    ]);
    assert_eq!(check.code, 2, "{}", check.stdout);
    assert!(check.stderr.contains("line"), "{}", check.stderr);
    let serve = |what: &str| {
        let run = common::ciel([
            "kbs".as_ref(),
            "serve".as_ref(),
            "--config".as_ref(),
            kb.join("kbs.toml").as_os_str(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
        ]);
        assert_ne!(run.code, 0, "the broker started with a {what}");
        run.stderr
    };
    let err = serve("broken audit chain");
    assert!(
        err.contains("audit.jsonl, line") && err.contains("edited, inserted or removed"),
        "{err}"
    );
    std::fs::write(&audit_path, &audit).unwrap();

    // A key store that does not decrypt also stops it, before any request.
    let store_path = kb.join("keys.json");
    let store = std::fs::read_to_string(&store_path).unwrap();
    let tampered = store.replacen("\"ciphertext\": \"", "\"ciphertext\": \"00", 1);
    assert_ne!(tampered, store);
    std::fs::write(&store_path, tampered).unwrap();
    let err = serve("tampered key store");
    assert!(
        err.contains("keys.json") && err.contains("does not decrypt"),
        "{err}"
    );
}

/// A connection cap of zero would refuse every client: each server's flag
/// refuses it, naming the flag, before anything starts.
#[test]
fn a_connection_cap_of_zero_is_refused() {
    for args in [
        &["kbs", "serve", "--config", "none.toml"][..],
        &["host", "serve", "--guest-api", "unix:/nonexistent"][..],
        &["enclave", "serve", "--sim"][..],
    ] {
        let run = ciel(args.iter().copied().chain(["--max-connections", "0"]));
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("--max-connections")
                && run
                    .stderr
                    .contains("not a connection count from 1 to 1000000"),
            "{args:?}: {}",
            run.stderr
        );
    }
}
