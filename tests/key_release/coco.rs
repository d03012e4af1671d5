//! Inside a Kata Confidential Containers pod: evidence from the pod's
//! attestation agent (its REST API, imitated on the simulated platform as
//! the real one behaves), init-data bound by `HOST_DATA`, checked by the
//! guest before it starts, by the broker at `/attest` (and carried in the
//! EAR token) and by clients in the attestation document.

use super::*;
use ciel_enclave::platform::WithInitData;
use ciel_enclave::platform::coco::CocoAgentSource;
use ciel_enclave::platform::coco_sim::{SimAgent, router};
use ciel_protocol::initdata::{InitData, InitDataDocument};

const INIT_DATA: &str = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n\n[data]\n\"ciel.toml\" = '''\nkbs = \"https://kbs.ciel.svc:8443\"\n'''\n\"policy.rego\" = \"package agent_policy\\n\"\n";

fn init_data() -> InitData {
    InitData::parse(INIT_DATA).unwrap()
}

/// An imitation agent whose reports carry `host_data`; its base URL.
fn agent(host_data: [u8; 32]) -> (String, tokio::sync::oneshot::Sender<()>) {
    let agent = Arc::new(SimAgent {
        sim: sim(),
        template: SimSnpReport {
            host_data,
            ..SimSnpReport::default()
        },
    });
    let (addr, stop) = serve_in_background(move |listener, stop| async move {
        tokio::select! {
            _ = ciel_transport::http::serve_metrics(listener, router(agent)) => {}
            _ = stop => {}
        }
    });
    (format!("http://{addr}"), stop)
}

#[test]
fn a_pod_guest_gets_its_key_with_agent_evidence_and_bound_init_data() {
    let b = start(
        300,
        true,
        &[(
            "default/model-key/demo",
            format!(
                "[snp]\nmeasurements = [\"{}\"]\nhost_data = [\"{}\"]\n",
                measurement(),
                hex::encode(init_data().host_data())
            ),
        )],
    );
    let (url, _stop) = agent(init_data().host_data());
    let source = CocoAgentSource::connect(&url).unwrap();
    assert_eq!(source.tee(), "snp");

    // The agent signs the binding's text form; the broker accepts it.
    let runtime = RuntimeData {
        nonce: "n".into(),
        tee_pubkey: TeeKeyPair::generate().public_jwk(),
    };
    let expected = binding::report_data(&runtime).unwrap();
    let ev = source.evidence(expected).unwrap();
    let decoded = ciel_attestation::tee_evidence::decode("snp", &ev, None).unwrap();
    assert_eq!(
        decoded.evidence.report_data(),
        binding::text_form(&expected)
    );
    assert!(binding::matching_form(&decoded.evidence.report_data(), &expected).is_some());

    // The whole release, init-data sent beside the evidence.
    let pod = WithInitData::bind(source, init_data()).unwrap();
    let key = client(&b)
        .fetch_resource("default/model-key/demo", &pod)
        .unwrap();
    assert_eq!(key.as_slice(), &KEY);
    let audit = b.audit();
    assert!(audit.contains("\"release\""), "{audit}");

    // Without the init-data the same evidence passes the binding but the
    // resource policy pins HOST_DATA, so a pod launched without init-data
    // is refused.
    let (bare_url, _stop2) = agent([0u8; 32]);
    let bare = CocoAgentSource::connect(&bare_url).unwrap();
    let e = client(&b)
        .fetch_resource("default/model-key/demo", &bare)
        .unwrap_err();
    assert_eq!(refused_kind(e), "urn:ciel:kbs:policy-denied");
    assert!(b.audit().contains("host_data_not_allowed"));

    // The guest refuses init-data its hardware does not bind, naming both.
    let e = WithInitData::bind(bare, init_data()).unwrap_err();
    assert!(e.contains("HOST_DATA is 0000"), "{e}");
    assert!(e.contains(&hex::encode(init_data().digest())), "{e}");
}

#[test]
fn the_broker_checks_init_data_against_the_evidence_and_puts_it_in_the_token() {
    let b = start(300, true, &[("default/model-key/demo", String::new())]);
    let (url, _stop) = agent(init_data().host_data());
    let source = CocoAgentSource::connect(&url).unwrap();
    let tee = TeeKeyPair::generate();

    let attest_with = |init: Option<InitDataDocument>| {
        let (cookie, nonce) = auth(&b.base);
        let runtime = RuntimeData {
            nonce,
            tee_pubkey: tee.public_jwk(),
        };
        let ev = source
            .evidence(binding::report_data(&runtime).unwrap())
            .unwrap();
        let mut body = serde_json::json!({"runtime-data": runtime, "tee-evidence": ev});
        if let Some(init) = init {
            body["init-data"] = serde_json::to_value(init).unwrap();
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent
            .post(&format!("{}/kbs/v0/attest", b.base))
            .header("cookie", &cookie)
            .send_json(body)
            .unwrap();
        let status = r.status().as_u16();
        (
            status,
            r.body_mut().read_json::<serde_json::Value>().unwrap(),
        )
    };

    // The init-data the pod was launched with: accepted, and its digest and
    // entries are in the token where Trustee puts them.
    let (s, body) = attest_with(Some(InitDataDocument::toml(&init_data())));
    assert_eq!(s, 200, "{body}");
    let token = body["token"].as_str().unwrap();
    let claims = jwt_part(token, 1);
    let annotated = &claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"];
    assert_eq!(annotated["init_data"], hex::encode(init_data().digest()));
    assert_eq!(
        annotated["init_data_claims"]["ciel.toml"],
        "kbs = \"https://kbs.ciel.svc:8443\"\n"
    );

    // Other init-data (one byte more): the evidence does not bind it.
    let other = InitDataDocument {
        format: "toml".into(),
        body: format!("{INIT_DATA}\n"),
    };
    let (s, p) = attest_with(Some(other));
    assert_eq!(
        (s, p["type"].as_str()),
        (403, Some("urn:ciel:kbs:bad-evidence")),
        "{p}"
    );
    assert!(p["detail"].as_str().unwrap().contains("HOST_DATA"), "{p}");
    // Malformed init-data and another format: bad requests, named.
    let (s, p) = attest_with(Some(InitDataDocument {
        format: "toml".into(),
        body: "version = \"9\"\nalgorithm = \"sha384\"\n".into(),
    }));
    assert_eq!(s, 400, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("version"), "{p}");
    let (s, p) = attest_with(Some(InitDataDocument {
        format: "json".into(),
        body: "{}".into(),
    }));
    assert_eq!(s, 400, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("json"), "{p}");
    let audit = b.audit();
    for code in ["init_data_mismatch", "init_data_malformed"] {
        assert!(audit.contains(code), "audit lacks {code}");
    }
}

#[test]
fn clients_check_the_init_data_in_the_attestation_document() {
    let (url, _stop) = agent(init_data().host_data());
    let pod = WithInitData::bind(CocoAgentSource::connect(&url).unwrap(), init_data()).unwrap();
    let spki = GUEST_SPKI.to_vec();
    let claims = guest_claims();
    let doc = ciel_enclave::serve::attested_tls::attest(&pod, &ciel_enclave::gpu::NoGpus, claims)
        .unwrap();
    assert_eq!(doc.init_data.as_deref(), Some(INIT_DATA));
    let policy = ciel_attestation::Policy::from_toml(&format!(
        "danger_simulated_roots = [\"{}\"]\n",
        hex::encode(sim().root_sha256())
    ))
    .unwrap();
    let now = ciel_attestation::UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    );
    let v = ciel_client::attested::verify_document(&doc, &spki, &policy, now, None);
    assert!(v.accepted, "{:?}", v.checks);
    let check = |v: &ciel_client::attested::Verification, name: &str| {
        v.checks.iter().find(|c| c.name == name).cloned().unwrap()
    };
    assert!(
        check(&v, "evidence").detail.contains("text form"),
        "{:?}",
        v.checks
    );
    assert!(check(&v, "init-data").detail.contains("ciel.toml"));

    // A host that swaps the document's init-data is caught.
    let mut swapped = doc.clone();
    swapped.init_data = Some(INIT_DATA.replace("kbs.ciel.svc", "kbs.evil.example"));
    let v = ciel_client::attested::verify_document(&swapped, &spki, &policy, now, None);
    assert!(!v.accepted);
    assert!(!check(&v, "init-data").ok, "{:?}", v.checks);
}
