//! Several admin keys with roles: a key stores a first version only with
//! `register`, later ones only with `rotate`, retires only with `retire`,
//! reads the audit log only with `audit`; a retired version is never
//! released again and stays in the store.

use super::*;
use ring::signature::{Ed25519KeyPair, KeyPair};

pub fn keypair() -> Ed25519KeyPair {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
}

/// Sends one signed admin request; returns the status and the body.
fn admin(b: &Broker, key: &Ed25519KeyPair, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let (status, body, _) = admin_at(&b.base, key, method, path, body, None);
    (status, body)
}

/// Sends one signed admin request to `base` (with `nonce`, else a fresh
/// one); returns the status, the body and the nonce used.
pub fn admin_at(
    base: &str,
    key: &Ed25519KeyPair,
    method: &str,
    path: &str,
    body: &[u8],
    nonce: Option<&str>,
) -> (u16, String, String) {
    static NONCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nonce = nonce.map(str::to_string).unwrap_or_else(|| {
        format!(
            "admin-test-nonce-{}-{}",
            std::process::id(),
            NONCES.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        )
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sig = key.sign(admin_message(method, path, now, &nonce, body).as_bytes());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header("x-ciel-admin-timestamp", now.to_string())
        .header("x-ciel-admin-nonce", &nonce)
        .header("x-ciel-admin-signature", B64.encode(sig.as_ref()))
        .body(body.to_vec())
        .unwrap();
    let mut r = agent.run(request).unwrap();
    (
        r.status().as_u16(),
        r.body_mut().read_to_string().unwrap(),
        nonce,
    )
}

#[test]
fn admin_roles_and_key_retirement() {
    let (registrar, rotator, retirer, auditor) = (keypair(), keypair(), keypair(), keypair());
    let table = |name: &str, k: &Ed25519KeyPair, roles: &str| {
        format!(
            "[[admin]]\nname = \"{name}\"\npublic_key = \"{}\"\nroles = [{roles}]\n",
            hex::encode(k.public_key().as_ref())
        )
    };
    let extra = [
        table("registrar", &registrar, "\"register\""),
        table("rotator", &rotator, "\"rotate\""),
        table("retirer", &retirer, "\"retire\""),
        table("auditor", &auditor, "\"audit\""),
    ]
    .concat();
    let resources = [(
        "default/model-key/demo",
        Policies {
            toml: Some(String::new()),
            rego: None,
        },
    )];
    let b = start_with_policies(300, true, &resources, &extra, |c| {
        AuditLog::open(files(c).1).unwrap()
    });
    // The harness stored version 1 of "demo"; "fresh" has no key yet.
    let new_key = [0x42u8; 32];
    let fresh = "/kbs/v0/admin/resource/default/model-key/fresh";
    let (status, body) = admin(&b, &rotator, "POST", fresh, &new_key);
    assert_eq!(status, 403, "rotate is not register: {body}");
    assert!(
        body.contains("rotator") && body.contains("the register role"),
        "{body}"
    );
    let (status, body) = admin(&b, &registrar, "POST", fresh, &new_key);
    assert_eq!(status, 200, "{body}");

    // A second version of an existing resource needs rotate.
    let demo = "/kbs/v0/admin/resource/default/model-key/demo";
    let v2 = [0x22u8; 32];
    assert_eq!(admin(&b, &registrar, "POST", demo, &v2).0, 403);
    let (status, body) = admin(&b, &rotator, "POST", demo, &v2);
    assert_eq!(
        (status, body.contains("\"version\":2")),
        (200, true),
        "{body}"
    );

    // Retiring version 2: only with retire; then version 1 is what is released.
    let retire = "/kbs/v0/admin/retire/default/model-key/demo/2";
    assert_eq!(admin(&b, &rotator, "POST", retire, b"").0, 403);
    let (status, body) = admin(&b, &retirer, "POST", retire, b"");
    assert_eq!(status, 200, "{body}");
    let good = genuine_guest();
    assert_eq!(
        client(&b)
            .fetch_resource("default/model-key/demo", &good)
            .unwrap()
            .as_slice(),
        &KEY
    );
    let e = client(&b)
        .fetch_resource("default/model-key/demo?version=2", &good)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("version 2 of default/model-key/demo is retired"),
        "{e}"
    );
    let (status, _) = admin(
        &b,
        &retirer,
        "POST",
        "/kbs/v0/admin/retire/default/model-key/demo/9",
        b"",
    );
    assert_eq!(status, 404);

    // The audit log: for the auditor only, with the admins' names.
    assert_eq!(
        admin(&b, &retirer, "GET", "/kbs/v0/admin/audit", b"").0,
        403
    );
    let (status, log) = admin(&b, &auditor, "GET", "/kbs/v0/admin/audit", b"");
    assert_eq!(status, 200, "{log}");
    for needle in [
        "admin:registrar",
        "admin:rotator",
        "admin:retirer",
        "admin-retire",
        "key_retired",
    ] {
        assert!(
            log.contains(needle),
            "{needle} not in the audit log:\n{log}"
        );
    }
    // A key nobody configured is refused before any role is looked at.
    let (status, body) = admin(&b, &keypair(), "GET", "/kbs/v0/admin/audit", b"");
    assert_eq!(status, 401, "{body}");
}

#[test]
fn admin_tables_are_validated() {
    let k = keypair();
    let pk = hex::encode(k.public_key().as_ref());
    for (table, needle) in [
        (
            format!("[[admin]]\nname = \"a\"\npublic_key = \"{pk}\"\nroles = [\"sudo\"]\n"),
            "unknown role \"sudo\"",
        ),
        (
            format!("[[admin]]\nname = \"a\"\npublic_key = \"{pk}\"\nroles = []\n"),
            "roles: empty",
        ),
        (
            "[[admin]]\nname = \"a\"\npublic_key = \"abcd\"\nroles = [\"audit\"]\n".to_string(),
            "not a 32-byte hex",
        ),
        (
            format!(
                "[[admin]]\nname = \"a\"\npublic_key = \"{pk}\"\nroles = [\"audit\"]\n[[admin]]\nname = \"a\"\npublic_key = \"{}\"\nroles = [\"audit\"]\n",
                hex::encode([3u8; 32])
            ),
            "unique",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("kbs.toml");
        std::fs::write(
            &cfg,
            format!("key_store = \"k.json\"\nmaster_key_file = \"m.key\"\naudit_log = \"a.jsonl\"\n{table}"),
        )
        .unwrap();
        let e = Config::load(&cfg).unwrap_err().to_string();
        assert!(e.contains(needle) && e.contains("admin["), "{needle}: {e}");
    }
}
