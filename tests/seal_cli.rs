//! `ciel seal`, `unseal` and `inspect` across processes.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
use common::ciel;

#[test]
fn seal_inspect_unseal_round_trip_and_refusals() {
    let tmp = tempfile::tempdir().expect("tmp");
    let model = tmp.path().join("model.gguf");
    let bytes = common::fake_model(&model, 300_000);
    let sealed = tmp.path().join("model.csm");
    let key = tmp.path().join("model.key");
    let run = ciel([
        "seal".as_ref(),
        "--in".as_ref(),
        model.as_os_str(),
        "--out".as_ref(),
        sealed.as_os_str(),
        "--resource".as_ref(),
        "default/model-key/demo".as_ref(),
        "--key-out".as_ref(),
        key.as_os_str(),
        "--chunk-size".as_ref(),
        "65536".as_ref(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).expect("key").permissions().mode() & 0o777,
        0o600
    );

    let run = ciel(["inspect".as_ref(), sealed.as_os_str(), "--json".as_ref()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let j = run.json();
    assert_eq!(j["model"]["format"], "gguf");
    assert_eq!(j["resource"], "default/model-key/demo");
    assert_eq!(j["chunks"], 5);
    assert_eq!(j["plaintext_len"], bytes.len());

    let out = tmp.path().join("plain");
    let run = ciel([
        "unseal".as_ref(),
        "--in".as_ref(),
        sealed.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(std::fs::read(&out).expect("out"), bytes);

    // Existing outputs are not overwritten without --force.
    let run = ciel([
        "unseal".as_ref(),
        "--in".as_ref(),
        sealed.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--force"), "{}", run.stderr);

    // A tampered chunk: exit 2, the chunk named, no plaintext file left.
    let mut t = std::fs::read(&sealed).expect("sealed");
    let n = t.len();
    t[n - 70_000] ^= 1;
    let tampered = tmp.path().join("tampered.csm");
    std::fs::write(&tampered, t).expect("write");
    let out2 = tmp.path().join("plain2");
    let run = ciel([
        "unseal".as_ref(),
        "--in".as_ref(),
        tampered.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
        "--out".as_ref(),
        out2.as_os_str(),
    ]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("failed authentication") && run.stderr.contains("chunk 3"),
        "{}",
        run.stderr
    );
    assert!(!out2.exists());
    assert!(!tmp.path().join("plain2.partial").exists());

    // A bad resource path and a malformed key file are clear errors.
    let run = ciel([
        "seal".as_ref(),
        "--in".as_ref(),
        model.as_os_str(),
        "--out".as_ref(),
        tmp.path().join("x.csm").as_os_str(),
        "--resource".as_ref(),
        "../etc/passwd".as_ref(),
        "--key-out".as_ref(),
        tmp.path().join("x.key").as_os_str(),
    ]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("resource path"), "{}", run.stderr);
    let bad_key = tmp.path().join("bad.key");
    std::fs::write(&bad_key, "abcd\n").expect("write");
    let run = ciel([
        "unseal".as_ref(),
        "--in".as_ref(),
        sealed.as_os_str(),
        "--key".as_ref(),
        bad_key.as_os_str(),
        "--out".as_ref(),
        tmp.path().join("p3").as_os_str(),
    ]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("expected 32"), "{}", run.stderr);
    let run = ciel(["inspect".as_ref(), model.as_os_str()]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("bad magic"), "{}", run.stderr);
}
