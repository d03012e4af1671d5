//! Attested key release over loopback with the simulated platform: the
//! whole flow, and a refusal (with its RFC 7807 type and an audit entry)
//! for each way it must fail.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod admin;
mod az_vtpm;
mod broker;
mod coco;
mod collateral_bundle;
mod ear_token;
mod faults;
mod gpu_document;
mod gpus;
mod replicas;
mod sample;
mod slow_clients;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use broker::*;
use ciel_attestation::sim::{NvidiaSim, SimGpu, SimSnpReport, SnpSim};
use ciel_enclave::kbs_client::sim::SimSnpSource;
use ciel_enclave::kbs_client::{Backoff, EvidenceSource, KbsClient, KbsClientError};
use ciel_keybroker::ResourcePath;
use ciel_keybroker::admin::admin_message;
use ciel_keybroker::audit::{AuditLog, AuditSink, verify};
use ciel_keybroker::config::Config;
use ciel_keybroker::server::{AppState, ServeOptions, serve};
use ciel_keybroker::store::KeyStore;
use ciel_protocol::binding;
use ciel_protocol::jwe::TeeKeyPair;
use ciel_protocol::kbs::RuntimeData;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

#[test]
fn release_flow_and_policy_refusals() {
    let m = measurement();
    let b = start(
        300,
        true,
        &[
            (
                "default/model-key/demo",
                format!("[snp]\nmeasurements = [\"{m}\"]\n"),
            ),
            (
                "default/model-key/other",
                format!("[snp]\nmeasurements = [\"{}\"]\n", "00".repeat(48)),
            ),
            (
                "default/model-key/newtcb",
                "[snp]\nmin_tcb = { snp = 26 }\n".into(),
            ),
        ],
    );
    let good = genuine_guest();
    let key = client(&b)
        .fetch_resource("default/model-key/demo", &good)
        .unwrap();
    assert_eq!(key.as_slice(), &KEY);

    // Wrong measurement and TCB below the minimum: policy-denied.
    let e = client(&b)
        .fetch_resource("default/model-key/other", &good)
        .unwrap_err();
    assert_eq!(refused_kind(e), "urn:ciel:kbs:policy-denied");
    let e = client(&b)
        .fetch_resource("default/model-key/newtcb", &good)
        .unwrap_err();
    assert_eq!(refused_kind(e), "urn:ciel:kbs:policy-denied");
    // A debuggable guest: refused by a policy that does not say danger_allow_debug.
    let debug = SimSnpSource {
        sim: sim(),
        template: SimSnpReport {
            policy: 0x3_0000 | (1 << 19),
            ..Default::default()
        },
    };
    let e = client(&b)
        .fetch_resource("default/model-key/demo", &debug)
        .unwrap_err();
    assert_eq!(refused_kind(e), "urn:ciel:kbs:policy-denied");
    // Unknown resource.
    let e = client(&b)
        .fetch_resource("default/model-key/nope", &good)
        .unwrap_err();
    assert_eq!(refused_kind(e), "urn:ciel:kbs:unknown-resource");

    let audit = b.audit();
    for code in [
        "measurement_not_allowed",
        "tcb_below_minimum",
        "debug_allowed",
        "unknown_resource",
        "\"release\"",
    ] {
        assert!(audit.contains(code), "audit lacks {code}:\n{audit}");
    }
    assert!(
        !audit.contains(&hex::encode(KEY)),
        "key material in the audit log"
    );
    assert!(
        audit
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
    );
}

/// A hand-driven client for the refusals the real client never provokes.
fn auth(base: &str) -> (String, String) {
    auth_as(base, "snp").unwrap_or_else(|(s, body)| panic!("/auth: {s} {body}"))
}

/// `/kbs/v0/auth` as TEE `tee`: (cookie, nonce), or the refusal.
fn auth_as(base: &str, tee: &str) -> Result<(String, String), (u16, String)> {
    let mut r = agent()
        .post(&format!("{base}/kbs/v0/auth"))
        .send_json(serde_json::json!({"version": "0.4.0", "tee": tee, "extra-params": ""}))
        .unwrap();
    if r.status() != 200 {
        return Err((r.status().as_u16(), r.body_mut().read_to_string().unwrap()));
    }
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let v: serde_json::Value = r.body_mut().read_json().unwrap();
    Ok((cookie, v["nonce"].as_str().unwrap().to_string()))
}

fn attest(
    base: &str,
    cookie: Option<&str>,
    runtime: &RuntimeData,
    evidence: serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut req = agent().post(&format!("{base}/kbs/v0/attest"));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let mut r = req
        .send_json(serde_json::json!({"runtime-data": runtime, "tee-evidence": evidence}))
        .unwrap();
    (
        r.status().as_u16(),
        r.body_mut().read_json().unwrap_or(serde_json::Value::Null),
    )
}

fn evidence_for(runtime: &RuntimeData) -> serde_json::Value {
    let good = genuine_guest();
    good.evidence(binding::report_data(runtime).unwrap())
        .unwrap()
}

#[test]
fn protocol_refusals_have_distinct_types() {
    let b = start(300, true, &[("default/model-key/demo", String::new())]);
    let tee = TeeKeyPair::generate();

    // Wrong nonce.
    let (cookie, _nonce) = auth(&b.base);
    let rt = RuntimeData {
        nonce: "not-the-nonce".into(),
        tee_pubkey: tee.public_jwk(),
    };
    let (s, p) = attest(&b.base, Some(&cookie), &rt, evidence_for(&rt));
    assert_eq!(
        (s, p["type"].as_str()),
        (403, Some("urn:ciel:kbs:bad-nonce"))
    );

    // Reused nonce: the first attest succeeds, the second is refused.
    let (cookie, nonce) = auth(&b.base);
    let rt = RuntimeData {
        nonce,
        tee_pubkey: tee.public_jwk(),
    };
    let ev = evidence_for(&rt);
    assert_eq!(attest(&b.base, Some(&cookie), &rt, ev.clone()).0, 200);
    let (s, p) = attest(&b.base, Some(&cookie), &rt, ev.clone());
    assert_eq!(
        (s, p["type"].as_str()),
        (403, Some("urn:ciel:kbs:bad-nonce"))
    );

    // Evidence replayed from that session into a new one.
    let (cookie2, nonce2) = auth(&b.base);
    let rt2 = RuntimeData {
        nonce: nonce2,
        tee_pubkey: tee.public_jwk(),
    };
    let (s, p) = attest(&b.base, Some(&cookie2), &rt2, ev);
    assert_eq!(
        (s, p["type"].as_str()),
        (403, Some("urn:ciel:kbs:bad-evidence")),
        "{p}"
    );

    // tee-pubkey not the one bound in report_data.
    let (cookie, nonce) = auth(&b.base);
    let bound = RuntimeData {
        nonce: nonce.clone(),
        tee_pubkey: TeeKeyPair::generate().public_jwk(),
    };
    let sent = RuntimeData {
        nonce,
        tee_pubkey: tee.public_jwk(),
    };
    let (s, p) = attest(&b.base, Some(&cookie), &sent, evidence_for(&bound));
    assert_eq!(
        (s, p["type"].as_str()),
        (403, Some("urn:ciel:kbs:bad-evidence"))
    );

    // Missing cookie at /attest and at /resource.
    let (s, p) = attest(&b.base, None, &sent, evidence_for(&sent));
    assert_eq!(
        (s, p["type"].as_str()),
        (401, Some("urn:ciel:kbs:missing-session"))
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(&format!(
            "{}/kbs/v0/resource/default/model-key/demo",
            b.base
        ))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let p: serde_json::Value = r.body_mut().read_json().unwrap();
    assert_eq!(p["type"], "urn:ciel:kbs:missing-session");
    assert_eq!(
        r.headers().get("content-type").unwrap(),
        "application/problem+json"
    );

    // Garbage evidence.
    let (cookie, nonce) = auth(&b.base);
    let rt = RuntimeData {
        nonce,
        tee_pubkey: tee.public_jwk(),
    };
    let (s, p) = attest(
        &b.base,
        Some(&cookie),
        &rt,
        serde_json::json!({"report": B64.encode([1u8; 10]), "vcek": ""}),
    );
    assert_eq!(
        (s, p["type"].as_str()),
        (403, Some("urn:ciel:kbs:bad-evidence"))
    );

    let audit = b.audit();
    for code in ["bad_nonce", "binding_mismatch", "evidence_malformed"] {
        assert!(audit.contains(code), "audit lacks {code}");
    }
}

#[test]
fn expired_sessions_and_untrusted_roots_are_refused() {
    let b = start(1, true, &[("default/model-key/demo", String::new())]);
    let tee = TeeKeyPair::generate();
    let (cookie, nonce) = auth(&b.base);
    std::thread::sleep(Duration::from_millis(1300));
    let rt = RuntimeData {
        nonce,
        tee_pubkey: tee.public_jwk(),
    };
    let (s, p) = attest(&b.base, Some(&cookie), &rt, evidence_for(&rt));
    assert_eq!(
        (s, p["type"].as_str()),
        (401, Some("urn:ciel:kbs:expired-session"))
    );

    // A broker that does not name the simulated root refuses simulated evidence outright.
    let strict = start(300, false, &[("default/model-key/demo", String::new())]);
    let good = genuine_guest();
    let e = client(&strict)
        .fetch_resource("default/model-key/demo", &good)
        .unwrap_err();
    assert_eq!(refused_kind(e), "urn:ciel:kbs:bad-evidence");
    assert!(strict.audit().contains("untrusted_root"));
}

#[test]
fn admin_puts_need_a_valid_signature_and_rotation_keeps_old_versions() {
    let b = start(300, true, &[("default/model-key/demo", String::new())]);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let path = "/kbs/v0/admin/resource/default/model-key/demo";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body = [0x77u8; 32];
    let nonce = "a-fresh-nonce-0001";
    let sig = b
        .admin
        .sign(admin_message("POST", path, now, nonce, &body).as_bytes());
    let send = |nonce: &str, body: &[u8]| {
        agent
            .post(&format!("{}{path}", b.base))
            .header("x-ciel-admin-timestamp", now.to_string())
            .header("x-ciel-admin-nonce", nonce)
            .header("x-ciel-admin-signature", B64.encode(sig.as_ref()))
            .send(body)
            .unwrap()
    };
    let mut r = send(nonce, &body);
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.body_mut().read_json().unwrap();
    assert_eq!(v["version"], 2);
    // The newest version is released; guests can still ask for the old one.
    let good = genuine_guest();
    assert_eq!(
        client(&b)
            .fetch_resource("default/model-key/demo", &good)
            .unwrap()
            .as_slice(),
        &body
    );
    assert_eq!(
        client(&b)
            .fetch_resource("default/model-key/demo?version=1", &good)
            .unwrap()
            .as_slice(),
        &KEY
    );
    // A signature over another body, or another nonce, is refused.
    assert_eq!(send("another-nonce-0002", &body).status().as_u16(), 401);
    let mut r = send(nonce, &[1u8; 32]);
    assert_eq!(r.status().as_u16(), 401);
    let p: serde_json::Value = r.body_mut().read_json().unwrap();
    assert!(
        p["detail"].as_str().unwrap().contains("does not verify"),
        "{p}"
    );
    // The same signed request again, inside the timestamp window: refused
    // as a replay, and no third version is stored.
    let mut r = send(nonce, &body);
    assert_eq!(r.status().as_u16(), 401);
    let p: serde_json::Value = r.body_mut().read_json().unwrap();
    assert!(p["detail"].as_str().unwrap().contains("replayed"), "{p}");
    assert_eq!(
        b.state
            .local()
            .unwrap()
            .store
            .lock()
            .unwrap()
            .get(
                &ResourcePath::parse("default/model-key/demo").unwrap(),
                None
            )
            .unwrap()
            .unwrap()
            .0,
        2
    );
}

#[test]
fn tls_broker_is_reached_only_with_its_pinned_ca() {
    use ciel_keybroker::tls::generate_dev_pki;
    let b = start(300, true, &[("default/model-key/demo", String::new())]);
    let t = start_tls(&b, |_| {});
    let (base, pki_ca) = (t.base.clone(), t.ca_pem.clone());
    let good = genuine_guest();
    let backoff = Backoff {
        attempts: 1,
        first: Duration::from_millis(10),
        max: Duration::from_millis(10),
        attempt_timeout: Duration::from_secs(30),
    };
    let c = KbsClient::with_pinned_ca(&base, pki_ca.as_bytes(), backoff).unwrap();
    assert_eq!(
        c.fetch_resource("default/model-key/demo", &good)
            .unwrap()
            .as_slice(),
        &KEY
    );
    // Another CA (a substituted broker certificate) is refused before any evidence leaves.
    let other = generate_dev_pki(&["127.0.0.1".to_string()]).unwrap();
    let c = KbsClient::with_pinned_ca(&base, other.ca_pem.as_bytes(), backoff).unwrap();
    let e = c
        .fetch_resource("default/model-key/demo", &good)
        .unwrap_err();
    assert!(matches!(e, KbsClientError::Unreachable { .. }), "{e}");
    // Plain HTTP to the TLS port fails too.
    assert!(
        KbsClient::new(&base.replace("https://", "http://"), backoff)
            .fetch_resource("default/model-key/demo", &good)
            .is_err()
    );
}

/// Evidence in Trustee's SNP shape: raw report bytes and a certificate table.
struct TrusteeShapedSnp;

impl EvidenceSource for TrusteeShapedSnp {
    fn tee(&self) -> &str {
        "snp"
    }
    fn evidence(&self, report_data: [u8; 64]) -> Result<serde_json::Value, String> {
        let report = sim()
            .report(&SimSnpReport {
                report_data,
                ..Default::default()
            })
            .map_err(|e| e.to_string())?;
        let mut table = vec![serde_json::json!({"cert_type": "VCEK", "data": sim().vcek_der()})];
        for (i, block) in pem::parse_many(sim().chain_pem())
            .map_err(|e| e.to_string())?
            .iter()
            .enumerate()
        {
            let kind = ["ASK", "ASVK", "ARK"][i.min(2)];
            table.push(serde_json::json!({"cert_type": kind, "data": block.contents()}));
        }
        Ok(serde_json::json!({"attestation_report": report, "cert_chain": table}))
    }
}

#[test]
fn trustee_shaped_snp_evidence_is_accepted() {
    let b = start(300, true, &[("default/model-key/demo", String::new())]);
    let key = client(&b)
        .fetch_resource("default/model-key/demo", &TrusteeShapedSnp)
        .unwrap();
    assert_eq!(key.as_slice(), &KEY);
}
