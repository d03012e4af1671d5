//! Broker replicas on one PostgreSQL database: a guest whose `auth`,
//! `attest` and `resource` land on different replicas gets its key; a
//! replica killed mid-flow loses nothing; nonces (the handshake's and the
//! admins') are spent once across replicas; one audit chain, one token key;
//! rows edited behind the brokers' backs are caught.
//!
//! Needs a PostgreSQL server: `CIEL_POSTGRES_URL` (and
//! `CIEL_POSTGRES_PASSWORD_FILE`), which `scripts/test.sh` sets after
//! starting one (`scripts/postgres.sh`). Run with
//! `cargo test --test key_release replicas -- --ignored`.

use super::admin::{admin_at, keypair};
use super::*;
use ciel_keybroker::server::AppState;
use ring::signature::{Ed25519KeyPair, KeyPair};
use std::path::Path;

const RESOURCE: &str = "default/model-key/replicated";

fn postgres() -> (String, Option<String>) {
    let url = std::env::var("CIEL_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "CIEL_POSTGRES_URL is not set: these tests need a PostgreSQL server; scripts/test.sh starts one (scripts/postgres.sh)"
        )
    });
    (url, std::env::var("CIEL_POSTGRES_PASSWORD_FILE").ok())
}

/// A schema of its own for each test (they run in parallel).
fn fresh_schema(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("t_{name}_{}_{nanos}", std::process::id())
}

/// Writes the replicas' shared configuration into `dir`: the simulated
/// root trusted, one resource, `admin` with every role, the master key
/// `master` (the same file for every replica).
fn configure(dir: &Path, schema: &str, admin: &Ed25519KeyPair, master: [u8; 32]) {
    let (url, password_file) = postgres();
    let fp = hex::encode(sim().root_sha256());
    std::fs::write(dir.join("master.key"), hex::encode(master)).unwrap();
    std::fs::write(
        dir.join("policy.toml"),
        format!(
            "danger_simulated_roots = [\"{fp}\"]\n[snp]\nmeasurements = [\"{}\"]\n",
            measurement()
        ),
    )
    .unwrap();
    let password = password_file
        .map(|p| format!("password_file = {p:?}\n"))
        .unwrap_or_default();
    std::fs::write(
        dir.join("kbs.toml"),
        format!(
            "master_key_file = \"master.key\"\nadmin_public_key = \"{}\"\ndanger_simulated_roots = [\"{fp}\"]\n\
             [postgres]\nurl = {url:?}\nschema = \"{schema}\"\npool_size = 4\n{password}\
             [[resource]]\npath = \"{RESOURCE}\"\npolicy_file = \"policy.toml\"\n",
            hex::encode(admin.public_key().as_ref())
        ),
    )
    .unwrap();
}

/// One replica, serving on loopback until killed.
struct Replica {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Replica {
    fn start(dir: &Path) -> Result<Replica, String> {
        let config = Config::load(&dir.join("kbs.toml")).map_err(|e| e.to_string())?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let state: AppState = match ciel_keybroker::backend::open(config).await {
                    Ok(s) => s,
                    Err(e) => {
                        tx.send(Err(e.to_string())).unwrap();
                        return;
                    }
                };
                let ep = ciel_transport::Endpoint::Tcp("127.0.0.1:0".into());
                let listener = ciel_transport::Listener::bind(&ep).await.unwrap();
                tx.send(Ok(listener.tcp_addr().unwrap())).unwrap();
                let options = ServeOptions::new(None);
                serve(listener, Arc::new(state), options, async move {
                    let _ = stopped.await;
                })
                .await;
            });
            // The runtime is dropped here: every task and pooled
            // connection of this replica goes with it.
        });
        let addr = rx.recv().unwrap()?;
        Ok(Replica {
            base: format!("http://{addr}"),
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn kill(mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// The key in a released JWE.
fn opened(tee: &TeeKeyPair, jwe: serde_json::Value) -> Vec<u8> {
    let jwe: ciel_protocol::jwe::Jwe = serde_json::from_value(jwe).unwrap();
    tee.decrypt(&jwe).unwrap().to_vec()
}

/// A session started at `auth_at` and attested at `attest_at`: (cookie, token).
fn attested(auth_at: &str, attest_at: &str, tee: &TeeKeyPair) -> (String, String) {
    let (cookie, nonce) = auth(auth_at);
    let rt = RuntimeData {
        nonce,
        tee_pubkey: tee.public_jwk(),
    };
    let (s, body) = attest(attest_at, Some(&cookie), &rt, evidence_for(&rt));
    assert_eq!(s, 200, "{body}");
    (cookie, body["token"].as_str().unwrap().to_string())
}

async fn sql(schema: &str, statement: &str) -> u64 {
    let (url, password_file) = postgres();
    let mut config: tokio_postgres::Config = url.parse().unwrap();
    if let Some(f) = password_file {
        config.password(std::fs::read_to_string(f).unwrap().trim_end());
    }
    config.options(format!("-c search_path={schema}"));
    let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.execute(statement, &[]).await.unwrap()
}

/// Runs one SQL statement in `schema` behind the brokers' backs.
fn tamper(schema: &str, statement: &str) -> u64 {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(sql(schema, statement))
}

#[test]
#[ignore = "needs PostgreSQL (CIEL_POSTGRES_URL): run by scripts/test.sh"]
fn a_guest_whose_steps_land_on_different_replicas_gets_its_key_and_a_killed_replica_loses_nothing()
{
    let dir = tempfile::tempdir().unwrap();
    let schema = fresh_schema("flow");
    let admin = keypair();
    configure(dir.path(), &schema, &admin, [7; 32]);
    let a = Replica::start(dir.path()).unwrap();
    let b = Replica::start(dir.path()).unwrap();

    // The key registered through A is released by B.
    let put = format!("/kbs/v0/admin/resource/{RESOURCE}");
    let (s, body, nonce) = admin_at(&a.base, &admin, "POST", &put, &KEY, None);
    assert_eq!(s, 200, "{body}");
    // The same signed request replayed at the other replica: refused.
    let (s, body, _) = admin_at(&b.base, &admin, "POST", &put, &KEY, Some(&nonce));
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("replayed"), "{body}");

    // auth on A, attest on B, resource on A (cookie) and on B (token).
    let tee = TeeKeyPair::generate();
    let (cookie, token) = attested(&a.base, &b.base, &tee);
    let (s, jwe) = get_resource(&a.base, RESOURCE, Some(&cookie), None);
    assert_eq!(s, 200, "{jwe}");
    assert_eq!(opened(&tee, jwe), KEY);
    let (s, jwe) = get_resource(&b.base, RESOURCE, None, Some(&token));
    assert_eq!(s, 200, "{jwe}");
    assert_eq!(opened(&tee, jwe), KEY);
    // The nonce that B spent cannot be spent again at A.
    let (cookie2, nonce2) = auth(&b.base);
    let rt = RuntimeData {
        nonce: nonce2,
        tee_pubkey: tee.public_jwk(),
    };
    let ev = evidence_for(&rt);
    assert_eq!(attest(&a.base, Some(&cookie2), &rt, ev.clone()).0, 200);
    let (s, p) = attest(&b.base, Some(&cookie2), &rt, ev);
    assert_eq!(
        (s, p["type"].as_str()),
        (403, Some("urn:ciel:kbs:bad-nonce"))
    );

    // One token signing key for every replica.
    let (_, token_a) = attested(&a.base, &a.base, &tee);
    assert_eq!(jwt_part(&token_a, 0)["jwk"], jwt_part(&token, 0)["jwk"]);

    // A killed mid-flow: its session goes on at B, then at a new replica.
    let (cookie3, nonce3) = auth(&a.base);
    a.kill();
    let rt = RuntimeData {
        nonce: nonce3,
        tee_pubkey: tee.public_jwk(),
    };
    let (s, body) = attest(&b.base, Some(&cookie3), &rt, evidence_for(&rt));
    assert_eq!(s, 200, "{body}");
    b.kill();
    let c = Replica::start(dir.path()).unwrap();
    let (s, jwe) = get_resource(&c.base, RESOURCE, Some(&cookie3), None);
    assert_eq!(s, 200, "{jwe}");
    assert_eq!(opened(&tee, jwe), KEY);

    // One audit chain, written by all three, checked as it is read.
    let (s, log, _) = admin_at(&c.base, &admin, "GET", "/kbs/v0/admin/audit", b"", None);
    assert_eq!(s, 200, "{log}");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let count = |event: &str, decision: &str| {
        lines
            .iter()
            .filter(|l| l["event"] == event && l["decision"] == decision)
            .count()
    };
    assert_eq!(count("resource", "release"), 3, "{log}");
    assert_eq!(count("attest", "accept"), 4, "{log}");
    assert_eq!(count("admin-put", "stored"), 1, "{log}");
    let file = dir.path().join("exported.jsonl");
    std::fs::write(&file, &log).unwrap();
    let chain = ciel_keybroker::audit::verify(&file).unwrap();
    assert_eq!(chain.entries as usize, lines.len());
    assert!(
        !log.contains(&hex::encode(KEY)),
        "key material in the audit log"
    );

    // An audit row edited behind the brokers' backs: the read refuses.
    let edited = tamper(
        &schema,
        "UPDATE audit_log SET line = replace(line, '\"release\"', '\"deny\"') WHERE seq = (SELECT min(seq) FROM audit_log WHERE line LIKE '%\"release\"%')",
    );
    assert_eq!(edited, 1);
    let (s, body, _) = admin_at(&c.base, &admin, "GET", "/kbs/v0/admin/audit", b"", None);
    assert_eq!(s, 500, "{body}");
    assert!(body.contains("audit_log"), "{body}");
    c.kill();
}

#[test]
#[ignore = "needs PostgreSQL (CIEL_POSTGRES_URL): run by scripts/test.sh"]
fn replicas_refuse_a_wrong_master_key_and_keys_edited_in_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let schema = fresh_schema("keys");
    let admin = keypair();
    configure(dir.path(), &schema, &admin, [7; 32]);
    let a = Replica::start(dir.path()).unwrap();
    let put = format!("/kbs/v0/admin/resource/{RESOURCE}");
    assert_eq!(admin_at(&a.base, &admin, "POST", &put, &KEY, None).0, 200);
    assert_eq!(
        admin_at(&a.base, &admin, "POST", &put, &[0x43; 32], None).0,
        200
    );
    let retire = format!("/kbs/v0/admin/retire/{RESOURCE}/2");
    assert_eq!(admin_at(&a.base, &admin, "POST", &retire, b"", None).0, 200);
    // Version 2 retired: version 1 is released.
    let tee = TeeKeyPair::generate();
    let (cookie, _) = attested(&a.base, &a.base, &tee);
    let (s, jwe) = get_resource(&a.base, RESOURCE, Some(&cookie), None);
    assert_eq!(s, 200, "{jwe}");
    assert_eq!(opened(&tee, jwe), KEY);
    // Rows edited behind the brokers' backs: each edit (one row), then the
    // request that would use it, refused with `why`.
    let id = |c: &str| c.trim_start_matches("kbs-session-id=").to_string();
    let refused_after = |edit: String, cookie: Option<&str>, bearer: Option<&str>, why: &str| {
        assert_eq!(tamper(&schema, &edit), 1, "{edit}");
        let (s, p) = get_resource(&a.base, RESOURCE, cookie, bearer);
        assert_eq!(s, 500, "{p}");
        assert!(p["detail"].as_str().unwrap().contains(why), "{p}");
    };
    // Another session's token (its claims are what Rego policies read).
    let (cookie2, _) = attested(&a.base, &a.base, &TeeKeyPair::generate());
    refused_after(
        format!(
            "UPDATE sessions SET token = (SELECT token FROM sessions WHERE id = '{}') WHERE id = '{}'",
            id(&cookie),
            id(&cookie2)
        ),
        Some(&cookie2),
        None,
        "another session",
    );
    // A bearer token of the attacker's choosing pointed at the session.
    refused_after(
        format!(
            "UPDATE sessions SET token_sha256 = encode(sha256('forged'::bytea), 'hex') WHERE id = '{}'",
            id(&cookie)
        ),
        None,
        Some("forged"),
        "not the bearer token",
    );
    // The session's TEE key swapped for an attacker's: the evidence no
    // longer binds it, and nothing is released to it.
    let swapped = serde_json::to_string(&TeeKeyPair::generate().public_jwk()).unwrap();
    refused_after(
        format!(
            "UPDATE sessions SET tee_pubkey = '{swapped}' WHERE id = '{}'",
            id(&cookie)
        ),
        Some(&cookie),
        None,
        "does not bind",
    );
    a.kill();

    // A replica with another master key does not start.
    let other = tempfile::tempdir().unwrap();
    configure(other.path(), &schema, &admin, [8; 32]);
    let e = Replica::start(other.path())
        .err()
        .expect("a wrong master key");
    assert!(e.contains("does not decrypt"), "{e}");

    // The retired flag set back in the database: the row no longer opens.
    assert_eq!(
        tamper(&schema, "UPDATE keys SET retired = false WHERE version = 2"),
        1
    );
    let e = Replica::start(dir.path()).err().expect("an edited key row");
    assert!(e.contains("does not decrypt"), "{e}");
}

#[test]
fn a_plain_connection_to_a_remote_database_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("master.key"), hex::encode([7u8; 32])).unwrap();
    let write = |extra: &str| {
        std::fs::write(
            dir.path().join("kbs.toml"),
            format!("master_key_file = \"master.key\"\n{extra}"),
        )
        .unwrap();
        Config::load(&dir.path().join("kbs.toml"))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let e = write("[postgres]\nurl = \"postgresql://ciel@db.internal/ciel\"\n").unwrap_err();
    assert!(e.contains("ca_file"), "{e}");
    let e = write("key_store = \"k.json\"\naudit_log = \"a.jsonl\"\n[postgres]\nurl = \"postgresql://ciel@127.0.0.1/ciel\"\n")
        .unwrap_err();
    assert!(e.contains("leave key_store and audit_log out"), "{e}");
    let e = write("key_store = \"k.json\"\n").unwrap_err();
    assert!(e.contains("[postgres]"), "{e}");
}

#[test]
#[ignore = "needs PostgreSQL (CIEL_POSTGRES_URL): run by scripts/test.sh"]
fn the_session_cap_holds_across_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let schema = fresh_schema("cap");
    configure(dir.path(), &schema, &keypair(), [7; 32]);
    let config = dir.path().join("kbs.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("max_sessions = 2\n{text}")).unwrap();
    let (a, b) = (
        Replica::start(dir.path()).unwrap(),
        Replica::start(dir.path()).unwrap(),
    );
    auth(&a.base);
    auth(&b.base);
    for base in [&a.base, &b.base] {
        let (s, body) = auth_as(base, "snp").unwrap_err();
        assert_eq!(s, 503, "{body}");
        assert!(body.contains("urn:ciel:kbs:busy"), "{body}");
    }
    a.kill();
    b.kill();
}
