//! The broker's master key in an HSM (SoftHSM2 through PKCS#11): `ciel kbs
//! init --pkcs11-…` makes a non-extractable AES-256 key inside the token
//! (and no master.key); the broker seals registered keys with it, releases
//! them to an attested guest, and will not start with another token's key
//! of the same label, a wrong PIN or a missing token.
//!
//! Needs SoftHSM2 (Debian `softhsm2`): `./scripts/test.sh` runs it as
//!   CIEL_PKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so cargo test --test hsm_key_store -- --ignored
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use ciel_attestation::sim::SimSnpReport;
use ciel_enclave::kbs_client::sim::SimSnpSource;
use ciel_enclave::kbs_client::{Backoff, KbsClient};
use common::{Running, seal_registered, unsealed};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn module() -> PathBuf {
    std::env::var_os("CIEL_PKCS11_MODULE")
        .map(PathBuf::from)
        .expect("CIEL_PKCS11_MODULE is not set: see this test's header")
}

/// A SoftHSM2 configuration `name` with its own token directory, and a
/// token labelled `label` with user PIN `pin`.
fn softhsm(dir: &Path, name: &str, label: &str, pin: &str) -> PathBuf {
    let tokens = dir.join(format!("tokens-{name}"));
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join(format!("softhsm2-{name}.conf"));
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let out = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            "12345678",
            "--pin",
            pin,
        ])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    conf
}

fn ciel_with(conf: &Path, args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ciel"))
        .args(args)
        .env("SOFTHSM2_CONF", conf)
        .env("CIEL_DATA_DIR", common::data_dir())
        .output()
        .unwrap()
}

fn init(conf: &Path, kb: &Path, pin_file: &Path) -> Output {
    ciel_with(
        conf,
        &[
            "kbs".as_ref(),
            "init".as_ref(),
            kb.as_os_str(),
            "--pkcs11-module".as_ref(),
            module().as_os_str(),
            "--pkcs11-token".as_ref(),
            "ciel".as_ref(),
            "--pkcs11-pin-file".as_ref(),
            pin_file.as_os_str(),
        ],
    )
}

/// `ciel kbs serve` for `kb`, its HSM configuration in SOFTHSM2_CONF.
fn serve(conf: &Path, kb: &Path) -> Result<(Running, String), String> {
    common::kbs_serve(kb, &[("SOFTHSM2_CONF", conf.as_os_str())])
}

#[test]
#[ignore = "needs SoftHSM2: see the header"]
fn the_master_key_stays_in_the_hsm_and_keys_are_released_through_it() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = softhsm(tmp.path(), "a", "ciel", "87654321");
    let pin = tmp.path().join("pin");
    std::fs::write(&pin, "87654321\n").unwrap();
    let kb = tmp.path().join("kbs");
    let out = init(&conf, &kb, &pin);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !kb.join("master.key").exists(),
        "a master key file next to an HSM key"
    );
    let config = std::fs::read_to_string(kb.join("kbs.toml")).unwrap();
    assert!(
        config.contains("[master_key_pkcs11]") && !config.contains("master_key_file"),
        "{config}"
    );
    // A second init on the same token does not replace the key.
    let again = init(&conf, &tmp.path().join("kbs2"), &pin);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));

    // Trust the simulated guest, register a key, release it.
    let (sim, fp) = common::fresh_sim();
    let policy = format!(
        "danger_simulated_roots = [\"{fp}\"]\n[snp]\nmeasurements = [\"{}\"]\n",
        hex::encode(SimSnpReport::default().measurement)
    );
    std::fs::write(kb.join("demo.policy.toml"), policy).unwrap();
    let config = common::trust_simulated_root(&config, &fp)
        + "[[resource]]\npath = \"default/model-key/demo\"\npolicy_file = \"demo.policy.toml\"\n";
    std::fs::write(kb.join("kbs.toml"), config).unwrap();
    let (broker, url) = serve(&conf, &kb).unwrap_or_else(|e| panic!("{e}"));

    let model = tmp.path().join("model.gguf");
    let bytes = common::fake_model(&model, 100_000);
    let sealed = tmp.path().join("model.csm");
    seal_registered(&model, &sealed, "default/model-key/demo", &url, &kb);
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
    // The store holds the key sealed by the token, not the key.
    let store = std::fs::read_to_string(kb.join("keys.json")).unwrap();
    assert!(!store.contains(&hex::encode(&key)), "{store}");
    drop(broker);

    // Restarted, it opens the store through the token again.
    let (broker, url) = serve(&conf, &kb).unwrap_or_else(|e| panic!("{e}"));
    let client = KbsClient::with_pinned_ca(&url, &ca, Backoff::default()).unwrap();
    let again = client
        .fetch_resource("default/model-key/demo", &source)
        .unwrap();
    assert_eq!(again.as_slice(), key.as_slice());
    drop(broker);

    // A wrong PIN, another token (its own key under the same label), no
    // token at all: the broker does not start, and says why.
    std::fs::write(&pin, "00000000\n").unwrap();
    let e = serve(&conf, &kb).err().expect("started with a wrong PIN");
    assert!(e.contains("login"), "{e}");
    std::fs::write(&pin, "87654321\n").unwrap();
    let other = softhsm(tmp.path(), "b", "ciel", "87654321");
    let out = init(&other, &tmp.path().join("kbs3"), &pin);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = serve(&other, &kb)
        .err()
        .expect("started with another token's key");
    assert!(e.contains("does not decrypt"), "{e}");
    let empty = tmp.path().join("empty.conf");
    std::fs::create_dir_all(tmp.path().join("no-tokens")).unwrap();
    std::fs::write(
        &empty,
        format!(
            "directories.tokendir = {}\n",
            tmp.path().join("no-tokens").display()
        ),
    )
    .unwrap();
    let e = serve(&empty, &kb).err().expect("started without its token");
    assert!(e.contains("no such token"), "{e}");
}
