//! The serving path across real processes — `ciel demo --serve` starts the
//! key broker, the host shim and the guest (simulated platform, Unix
//! sockets for vsock) — and what a client, a hostile host and a tampered
//! model can and cannot do to it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use ciel_attestation::Policy;
use ciel_client::{Client, ClientError};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The whole system, stopped (SIGTERM) when dropped.
struct System {
    child: Child,
    info: Value,
    dir: tempfile::TempDir,
}

impl System {
    fn start() -> System {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("demo.log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ciel"))
            .args(["demo", "--serve", "--boot-timeout", "300", "--workdir"])
            .arg(dir.path().join("w"))
            .arg("--model")
            .arg(ciel_enclave::engine::demo_model_path())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with('{') {
                    let _ = tx.send(line);
                }
            }
        });
        let info = match rx.recv_timeout(Duration::from_secs(400)) {
            Ok(line) => serde_json::from_str::<Value>(&line).unwrap(),
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(dir.path().join("demo.log")).unwrap_or_default();
                panic!("ciel demo --serve did not become ready:\n{log}");
            }
        };
        assert_eq!(info["ready"], true);
        System { child, info, dir }
    }

    fn s(&self, key: &str) -> String {
        self.info[key].as_str().unwrap().to_string()
    }

    fn policy(&self) -> Policy {
        Policy::from_toml(&std::fs::read_to_string(self.s("policy")).unwrap()).unwrap()
    }

    fn write_policy(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for System {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

fn chat_request(prompt: &str, max_tokens: usize) -> Value {
    json!({
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
    })
}

fn content(v: &Value) -> String {
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn serving_system_end_to_end() {
    let sys = System::start();
    let rt = rt();
    let url = sys.s("url");
    let client = rt.block_on(Client::connect(&url, sys.policy())).unwrap();
    let v = client.verification();
    assert!(v.accepted);
    assert_eq!(v.claims.model.sha256, sys.s("model_sha256"));
    assert!(v.verdict.as_ref().unwrap().simulated);

    // The model list, and a fresh attestation bound to a client nonce.
    let models = rt.block_on(client.models()).unwrap();
    assert_eq!(models["data"][0]["id"], "smollm2-135m-instruct");
    let fresh = rt.block_on(client.fresh_attestation()).unwrap();
    assert!(fresh.checks.iter().any(|c| c.name == "freshness" && c.ok));

    // Streaming gives exactly the non-streamed answer (greedy).
    let req = chat_request("What is the capital of France?", 16);
    let whole = content(&rt.block_on(client.chat(&req)).unwrap());
    assert!(!whole.is_empty());
    let mut streamed = String::new();
    let finish = rt
        .block_on(client.chat_stream(&req, |t| streamed.push_str(t)))
        .unwrap();
    assert_eq!(streamed, whole);
    assert!(finish == "length" || finish == "stop", "{finish}");

    // Plain completions.
    let c = rt
        .block_on(client.completions(&json!({"prompt": "One, two, three,", "max_tokens": 4})))
        .unwrap();
    assert_eq!(c["object"], "text_completion");
    assert!(c["usage"]["completion_tokens"].as_u64().unwrap() >= 1);

    // OpenAI-style errors.
    let err = |body: Value| match rt.block_on(client.chat(&body)) {
        Err(ClientError::Api { status, message }) => (status, message),
        other => panic!("expected an API error, got {other:?}"),
    };
    let (status, msg) =
        err(json!({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}));
    assert_eq!(status, 404, "{msg}");
    let (status, msg) =
        err(json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}));
    assert_eq!(status, 400);
    assert!(msg.contains("max_tokens"), "{msg}");
    let (status, msg) = err(json!({"messages": [{"role": "wizard", "content": "x"}]}));
    assert_eq!(status, 400);
    assert!(msg.contains("role"), "{msg}");
    let (status, msg) = err(json!({"messages": [{"role": "user", "content": "x"}], "top_p": 0.0}));
    assert_eq!(status, 400);
    assert!(msg.contains("top_p"), "{msg}");
    let (status, _) = err(json!({"messages": "not a list"}));
    assert_eq!(status, 422);

    sixteen_concurrent_clients_each_get_their_own_answer(&sys, &rt);
    thirty_two_clients_under_load_for_a_bounded_time(&sys, &rt);
    a_hostile_host_cannot_alter_the_stream(&sys, &rt);
    clients_refuse_what_their_policy_does_not_allow(&sys, &rt);
    evidence_not_bound_to_the_tls_key_is_refused(&sys, &rt, &client);
    the_local_proxy_serves_unmodified_openai_clients(&sys, &whole);
    ciel_chat_answers_one_shot_and_interactively(&sys, &whole);
    a_tampered_model_is_never_served(&sys);
    a_key_broker_that_is_down_is_a_clear_final_error(&sys);

    // No prompt or completion text in any log.
    let work = PathBuf::from(sys.s("workdir"));
    for log in ["guest.log", "host.log", "kbs.log"] {
        let text = std::fs::read_to_string(work.join(log)).unwrap();
        assert!(!text.is_empty(), "{log} is empty");
        for secret in ["capital of France", "short sentence about", whole.trim()] {
            assert!(!text.contains(secret), "{log} contains {secret:?}");
        }
    }

    // The host only ever counted bytes.
    let metrics = ureq::get(sys.s("metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(metrics.contains("ciel_host_bytes_from_guest_total{service=\"api\"}"));
}

fn sixteen_concurrent_clients_each_get_their_own_answer(
    sys: &System,
    rt: &tokio::runtime::Runtime,
) {
    let topics = [
        "cats",
        "the sea",
        "winter",
        "bread",
        "music",
        "trains",
        "the moon",
        "rain",
        "chess",
        "coffee",
        "bees",
        "mountains",
        "paper",
        "fire",
        "clocks",
        "salt",
    ];
    let client = rt
        .block_on(Client::connect(&sys.s("url"), sys.policy()))
        .unwrap();
    let reqs: Vec<Value> = topics
        .iter()
        .map(|t| chat_request(&format!("Write one short sentence about {t}."), 10))
        .collect();
    // Alone, one after the other: the reference answers.
    let alone: Vec<String> = reqs
        .iter()
        .map(|r| content(&rt.block_on(client.chat(r)).unwrap()))
        .collect();
    let distinct: std::collections::BTreeSet<&String> = alone.iter().collect();
    assert!(
        distinct.len() >= 12,
        "the prompts should give different answers: {alone:?}"
    );
    // All at once, each on its own verified connection.
    let together: Vec<String> = rt.block_on(async {
        let mut tasks = Vec::new();
        for r in reqs.clone() {
            let c = client.clone();
            tasks.push(tokio::spawn(
                async move { content(&c.chat(&r).await.unwrap()) },
            ));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    assert_eq!(together, alone);
}

/// What the man in the middle does to one TLS record.
#[derive(Debug, Clone, Copy)]
enum Tamper {
    Flip,
    Drop,
    Inject,
    /// The whole record sent twice.
    Duplicate,
    /// The record held back and sent after the next one.
    Reorder,
}

/// A TCP relay in front of the host that alters the `nth` TLS
/// application-data record going to the client (or to the guest).
fn hostile_relay(target: String, tamper: Tamper, nth: usize, downstream: bool) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(client) = conn else { return };
            let Ok(server) = std::net::TcpStream::connect(target.trim_start_matches("https://"))
            else {
                return;
            };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (up_t, down_t) = if downstream {
                (None, Some(tamper))
            } else {
                (Some(tamper), None)
            };
            std::thread::spawn(move || relay_records(client, server, up_t, nth));
            std::thread::spawn(move || relay_records(s2, c2, down_t, nth));
        }
    });
    port
}

/// Copies TLS records from `from` to `to`, altering the `nth` record of
/// type application_data (23) when asked.
fn relay_records(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    tamper: Option<Tamper>,
    nth: usize,
) {
    let mut seen = 0usize;
    let mut held: Option<Vec<u8>> = None;
    loop {
        let mut head = [0u8; 5];
        if from.read_exact(&mut head).is_err() {
            let _ = to.shutdown(std::net::Shutdown::Write);
            return;
        }
        let len = u16::from_be_bytes([head[3], head[4]]) as usize;
        let mut body = vec![0u8; len];
        if from.read_exact(&mut body).is_err() {
            let _ = to.shutdown(std::net::Shutdown::Write);
            return;
        }
        let mut copies = 1;
        if head[0] == 23 {
            seen += 1;
            if seen == nth {
                match tamper {
                    Some(Tamper::Flip) => body[len / 2] ^= 0x01,
                    Some(Tamper::Drop) => {
                        body.remove(len / 2);
                    }
                    Some(Tamper::Inject) => body.insert(len / 2, 0x42),
                    Some(Tamper::Duplicate) => copies = 2,
                    Some(Tamper::Reorder) => {
                        held = Some([&head[..], &body].concat());
                        continue;
                    }
                    None => {}
                }
            }
        }
        let record = [&head[..], &body].concat();
        for _ in 0..copies {
            if to.write_all(&record).is_err() {
                return;
            }
        }
        if let Some(r) = held.take()
            && to.write_all(&r).is_err()
        {
            return;
        }
    }
}

fn a_hostile_host_cannot_alter_the_stream(sys: &System, rt: &tokio::runtime::Runtime) {
    let policy = sys.policy();
    let req = chat_request("Name three colours.", 24);
    let reference = {
        let c = rt
            .block_on(Client::connect(&sys.s("url"), policy.clone()))
            .unwrap();
        let mut s = String::new();
        rt.block_on(c.chat_stream(&req, |t| s.push_str(t))).unwrap();
        s
    };
    for tamper in [
        Tamper::Flip,
        Tamper::Drop,
        Tamper::Inject,
        Tamper::Duplicate,
        Tamper::Reorder,
    ] {
        // Downstream: record 1 is inside the handshake, record 12 inside the
        // streamed answer. Upstream: record 1 is the client's Finished,
        // record 2 its request (a held-back request would just stall, so
        // the reordering case swaps Finished and request).
        let upstream = if matches!(tamper, Tamper::Reorder) {
            1
        } else {
            2
        };
        for (nth, downstream) in [(1, true), (12, true), (upstream, false)] {
            let port = hostile_relay(sys.s("url"), tamper, nth, downstream);
            let url = format!("https://127.0.0.1:{port}");
            let mut received = String::new();
            let outcome = rt.block_on(async {
                let c = Client::connect(&url, policy.clone()).await?;
                c.chat_stream(&req, |t| received.push_str(t)).await
            });
            assert!(
                outcome.is_err(),
                "{tamper:?} on record {nth} (downstream {downstream}) went unnoticed: {outcome:?}"
            );
            assert!(
                reference.starts_with(&received),
                "{tamper:?}: the client saw text that is not the guest's: {received:?}"
            );
        }
    }
}

fn expect_refused(sys: &System, name: &str, policy: &str, failed_check: &str, detail: &str) {
    let path = sys.write_policy(name, policy);
    let run = common::ciel([
        "verify".as_ref(),
        sys.s("url").as_ref(),
        "--policy".as_ref(),
        path.as_os_str(),
    ]);
    assert_eq!(run.code, 1, "{name}: {}\n{}", run.stdout, run.stderr);
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("[FAIL]"))
        .unwrap_or_else(|| panic!("{name}: no failed check in\n{}", run.stderr));
    assert!(
        line.contains(failed_check) && line.contains(detail),
        "{name}: {line}"
    );
}

fn clients_refuse_what_their_policy_does_not_allow(sys: &System, _rt: &tokio::runtime::Runtime) {
    let root = format!(
        "danger_simulated_roots = [\"{}\"]",
        sys.s("simulated_root_sha256")
    );
    let measurement = sys.s("measurement");
    let ok = format!("{root}\n[snp]\nmeasurements = [\"{measurement}\"]\n");
    let run = common::ciel([
        "verify".as_ref(),
        sys.s("url").as_ref(),
        "--policy".as_ref(),
        sys.write_policy("ok.toml", &ok).as_os_str(),
        "--fresh".as_ref(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("guest:       VERIFIED"),
        "{}",
        run.stdout
    );
    expect_refused(
        sys,
        "measurement.toml",
        &format!("{root}\n[snp]\nmeasurements = [\"{}\"]\n", "00".repeat(48)),
        "evidence",
        "measurement",
    );
    expect_refused(
        sys,
        "model.toml",
        &format!("{root}\nmodel_sha256 = [\"{}\"]\n", "11".repeat(32)),
        "model",
        "not in the policy",
    );
    expect_refused(
        sys,
        "noroot.toml",
        "[snp]\nmeasurements = []\n",
        "evidence",
        "untrusted_root",
    );
}

/// A guest's genuine attestation document served with another TLS key: the
/// evidence verifies, the binding does not.
fn evidence_not_bound_to_the_tls_key_is_refused(
    sys: &System,
    rt: &tokio::runtime::Runtime,
    client: &Client,
) {
    use ciel_protocol::claims::{AttestationDocument, EXTENSION_OID, encode_extension};
    let resp = rt
        .block_on(client.send(
            hyper::Method::GET,
            &format!("/v1/attestation?nonce={}", "ab".repeat(16)),
            None,
        ))
        .unwrap();
    let body = rt.block_on(async {
        use http_body_util::BodyExt;
        resp.into_body().collect().await.unwrap().to_bytes()
    });
    let genuine = AttestationDocument::from_json(&body).unwrap();

    let impostor = |doc: &AttestationDocument| -> u16 {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["ciel-enclave".into()]).unwrap();
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                EXTENSION_OID,
                encode_extension(doc).unwrap(),
            ));
        let cert = params.self_signed(&key).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let cfg = std::sync::Arc::new(cfg);
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let mut tls = rustls::ServerConnection::new(cfg.clone()).unwrap();
                let mut conn = conn;
                let _ = tls.complete_io(&mut conn);
            }
        });
        port
    };
    // The genuine document, another key.
    let port = impostor(&genuine);
    match rt.block_on(Client::connect(
        &format!("https://127.0.0.1:{port}"),
        sys.policy(),
    )) {
        Err(ClientError::Refused { verification, .. }) => {
            let failed = verification.first_failure().unwrap();
            assert_eq!(failed.name, "tls binding", "{failed:?}");
            assert!(
                verification
                    .checks
                    .iter()
                    .any(|c| c.name == "evidence" && c.ok)
            );
        }
        other => panic!("an impostor key was accepted: {other:?}"),
    }
    // Claims rewritten to name the impostor's key: the evidence no longer matches them.
    let mut forged = genuine.clone();
    forged.claims.tls_spki_sha256 = "00".repeat(32);
    let port = impostor(&forged);
    match rt.block_on(Client::connect(
        &format!("https://127.0.0.1:{port}"),
        sys.policy(),
    )) {
        Err(ClientError::Refused { verification, .. }) => {
            let evidence = verification
                .checks
                .iter()
                .find(|c| c.name == "evidence")
                .unwrap();
            assert!(
                !evidence.ok && evidence.detail.contains("report_data"),
                "{evidence:?}"
            );
        }
        other => panic!("forged claims were accepted: {other:?}"),
    }
}

/// A host shim serving `dir` as its model directory on `dir/blobs.sock`,
/// then `ciel enclave serve` against it with `kbs` as the broker; returns
/// the guest's exit status and stderr, and where its API would have been.
fn boot_guest_against(sys: &System, dir: &Path, kbs: &str) -> (std::process::Output, PathBuf) {
    let work = PathBuf::from(sys.s("workdir"));
    let blobs = format!("unix:{}", dir.join("blobs.sock").display());
    let api = dir.join("api.sock");
    let mut host = Command::new(env!("CARGO_BIN_EXE_ciel"))
        .args([
            "host",
            "serve",
            "--listen",
            "tcp://127.0.0.1:0",
            "--guest-api",
        ])
        .arg(format!("unix:{}", api.display()))
        .arg("--models")
        .arg(dir)
        .args(["--blob-listen", &blobs])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("blobs.sock").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let guest = Command::new(env!("CARGO_BIN_EXE_ciel"))
        .args([
            "enclave",
            "serve",
            "--sim",
            "--kbs",
            kbs,
            "--kbs-ca",
            &sys.s("kbs_ca"),
        ])
        .args([
            "--model-from",
            &blobs,
            "--model-blob",
            "smollm2.csm",
            "--listen",
        ])
        .arg(format!("unix:{}", api.display()))
        .env("CIEL_DATA_DIR", work.join("data"))
        .output()
        .unwrap();
    let _ = host.kill();
    let _ = host.wait();
    (guest, api)
}

/// The host serves a sealed model with one flipped byte: the guest stops
/// with an error naming the chunk and never opens its API.
fn a_tampered_model_is_never_served(sys: &System) {
    let work = PathBuf::from(sys.s("workdir"));
    let dir = sys.dir.path().join("tampered");
    std::fs::create_dir_all(&dir).unwrap();
    let mut bytes = std::fs::read(work.join("models/smollm2.csm")).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x80;
    std::fs::write(dir.join("smollm2.csm"), &bytes).unwrap();
    let (guest, api) = boot_guest_against(sys, &dir, &sys.s("kbs_url"));
    let stderr = String::from_utf8_lossy(&guest.stderr);
    assert!(
        !guest.status.success(),
        "the guest served a tampered model:\n{stderr}"
    );
    assert!(
        stderr.contains("chunk"),
        "the error should name the chunk:\n{stderr}"
    );
    assert!(
        !api.exists(),
        "the guest opened its API with a tampered model"
    );
}

/// No broker at boot: the guest retries with backoff, then stops with an
/// error saying so, and never serves.
fn a_key_broker_that_is_down_is_a_clear_final_error(sys: &System) {
    let work = PathBuf::from(sys.s("workdir"));
    let dir = sys.dir.path().join("nobroker");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(work.join("models/smollm2.csm"), dir.join("smollm2.csm")).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let started = Instant::now();
    let (guest, api) = boot_guest_against(sys, &dir, &format!("https://127.0.0.1:{port}"));
    let stderr = String::from_utf8_lossy(&guest.stderr);
    assert_eq!(guest.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unreachable after 6 attempts"), "{stderr}");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "no backoff between attempts"
    );
    assert!(!api.exists());
}

/// `ciel proxy`: plain HTTP on loopback for unmodified OpenAI clients, each
/// request forwarded on its own verified connection; a proxy whose policy
/// refuses the guest never starts.
fn the_local_proxy_serves_unmodified_openai_clients(sys: &System, expected: &str) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_ciel"))
        .args([
            "proxy",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--upstream",
        ])
        .arg(sys.s("url"))
        .arg("--policy")
        .arg(sys.s("policy"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "ciel proxy did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    let answer: Value = ureq::post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .send_json(chat_request("What is the capital of France?", 16))
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(content(&answer), expected);
    let models: Value = ureq::get(format!("http://127.0.0.1:{port}/v1/models"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(models["data"][0]["id"], "smollm2-135m-instruct");
    let _ = proxy.kill();
    let _ = proxy.wait();

    let refusing = sys.write_policy("proxy-refuses.toml", "[snp]\nmeasurements = []\n");
    let out = Command::new(env!("CARGO_BIN_EXE_ciel"))
        .args(["proxy", "--listen", "127.0.0.1:0", "--upstream"])
        .arg(sys.s("url"))
        .arg("--policy")
        .arg(&refusing)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("untrusted_root"));
}

/// 32 clients, each asking its own question again and again for a bounded
/// time: no errors (429s would be counted; the queue holds 64), every
/// answer the one that question gets alone; latency percentiles and the
/// guest's peak memory printed for the record.
fn thirty_two_clients_under_load_for_a_bounded_time(sys: &System, rt: &tokio::runtime::Runtime) {
    let client = rt
        .block_on(Client::connect(&sys.s("url"), sys.policy()))
        .unwrap();
    let reqs: Vec<Value> = (0..32)
        .map(|i| chat_request(&format!("Count from {i} to {}.", i + 3), 6))
        .collect();
    let alone: Vec<String> = reqs
        .iter()
        .map(|r| content(&rt.block_on(client.chat(r)).unwrap()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let results: Vec<(Vec<Duration>, usize)> = rt.block_on(async {
        let tasks: Vec<_> = reqs
            .iter()
            .cloned()
            .zip(alone.iter().cloned())
            .map(|(req, want)| {
                let c = client.clone();
                tokio::spawn(async move {
                    let (mut lat, mut busy) = (Vec::new(), 0usize);
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        match c.chat(&req).await {
                            Ok(v) => {
                                assert_eq!(content(&v), want, "a client got another answer");
                                lat.push(t.elapsed());
                            }
                            Err(ClientError::Api { status: 429, .. }) => busy += 1,
                            Err(e) => panic!("request failed under load: {e}"),
                        }
                    }
                    (lat, busy)
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let mut all: Vec<Duration> = results.iter().flat_map(|(l, _)| l.clone()).collect();
    let busy: usize = results.iter().map(|(_, b)| b).sum();
    assert!(
        results.iter().all(|(l, _)| !l.is_empty()),
        "a client never got an answer"
    );
    assert_eq!(busy, 0, "429s with a queue larger than the client count");
    all.sort();
    let pct = |p: usize| all[(all.len() - 1) * p / 100];
    let guest = sys.info["pids"]["guest"].as_u64().unwrap();
    let hwm = std::fs::read_to_string(format!("/proc/{guest}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        .unwrap_or_default();
    eprintln!(
        "load: 32 clients, 20 s: {} answers, p50 {:?}, p99 {:?}, guest peak RSS {hwm} kB",
        all.len(),
        pct(50),
        pct(99)
    );
}

/// `ciel chat`: one-shot prints the streamed answer; interactive reads one
/// question per line and keeps the conversation.
fn ciel_chat_answers_one_shot_and_interactively(sys: &System, expected: &str) {
    let url = sys.s("url");
    let policy = sys.s("policy");
    let args = [
        "chat",
        url.as_str(),
        "--policy",
        policy.as_str(),
        "--max-tokens",
        "16",
    ];
    let one = common::ciel(
        args.iter()
            .copied()
            .chain(["What is the capital of France?"]),
    );
    assert_eq!(one.code, 0, "{}", one.stderr);
    assert_eq!(one.stdout.trim_end(), expected.trim_end());
    assert!(one.stderr.contains("SIMULATED"), "{}", one.stderr);

    let mut child = Command::new(env!("CARGO_BIN_EXE_ciel"))
        .args(args)
        .env("CIEL_DATA_DIR", common::data_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"What is the capital of France?\nAnd of Italy?\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    // The first turn's answer, then the second's after it.
    let rest = text
        .strip_prefix(expected.trim_end())
        .unwrap_or_else(|| panic!("the first answer should be {expected:?}: {text:?}"));
    assert!(!rest.trim().is_empty(), "no second answer: {text:?}");
}
