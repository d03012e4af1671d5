//! A man in the middle on the client's connection, impostor guests and
//! client policies that must refuse.

use super::*;

/// What the man in the middle does to one TLS record.
#[derive(Debug, Clone, Copy)]
pub enum Tamper {
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
pub fn hostile_relay(target: String, tamper: Tamper, nth: usize, downstream: bool) -> u16 {
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
pub fn relay_records(
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

pub fn a_hostile_host_cannot_alter_the_stream(sys: &System, rt: &tokio::runtime::Runtime) {
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

pub fn expect_refused(sys: &System, name: &str, policy: &str, failed_check: &str, detail: &str) {
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

pub fn clients_refuse_what_their_policy_does_not_allow(
    sys: &System,
    _rt: &tokio::runtime::Runtime,
) {
    let cpu_root = format!(
        "danger_simulated_roots = [\"{}\"]",
        sys.s("simulated_root_sha256")
    );
    let root = format!(
        "danger_simulated_roots = [\"{}\", \"{}\"]",
        sys.s("simulated_root_sha256"),
        sys.s("simulated_gpu_root_sha256")
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
    // Every GPU's checks, shown for the certificate's document and for
    // the fresh one.
    assert_eq!(
        run.stdout.matches("[ ok ] gpu: GPU ").count(),
        4,
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("[ ok ] gpus: 2 GPUs"), "{}", run.stdout);
    expect_refused(
        sys,
        "gpu-root.toml",
        &format!("{cpu_root}\n[snp]\nmeasurements = [\"{measurement}\"]\n"),
        "gpu: GPU 0",
        "untrusted_root",
    );
    expect_refused(
        sys,
        "vbios.toml",
        &format!("{root}\n[nvidia]\nvbios_versions = [\"96.00.74.00.1c\"]\n"),
        "gpu: GPU 0",
        "gpu_vbios_not_allowed",
    );
    expect_refused(
        sys,
        "gpu-count.toml",
        &format!("{root}\n[nvidia]\nmin_gpus = 4\n"),
        "gpus",
        "gpu_count_below_minimum",
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

/// The guest's attestation document for a fixed nonce, as it serves it.
pub fn attestation_document(
    rt: &tokio::runtime::Runtime,
    client: &Client,
) -> ciel_protocol::claims::AttestationDocument {
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
    ciel_protocol::claims::AttestationDocument::from_json(&body).unwrap()
}

/// A TLS server on loopback that presents `doc` in a certificate for a key
/// of its own (an impostor without the guest's key); returns its port.
pub fn impostor(doc: &ciel_protocol::claims::AttestationDocument) -> u16 {
    use ciel_protocol::claims::{EXTENSION_OID, encode_extension};
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
}

/// A guest's genuine attestation document served with another TLS key: the
/// evidence verifies, the binding does not.
pub fn evidence_not_bound_to_the_tls_key_is_refused(
    sys: &System,
    rt: &tokio::runtime::Runtime,
    client: &Client,
) {
    let genuine = attestation_document(rt, client);
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
