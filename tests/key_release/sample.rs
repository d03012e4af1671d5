//! Trustee's current client shapes: composite evidence
//! (`{primary_evidence, additional_evidence}`, the binding over the
//! additional-evidence string too), and the unsigned `sample` TEE, taken
//! only where a resource dangerously asks for it. (Trustee's own
//! kbs-client runs the same exchange in `tests/trustee_interop.rs`.)

use super::*;
use base64::engine::general_purpose::STANDARD;

/// Sample evidence as guest-components' attester makes it.
fn sample_evidence(report_data: &[u8]) -> serde_json::Value {
    serde_json::json!({"svn": "1", "report_data": STANDARD.encode(report_data)})
}

fn composite(primary: serde_json::Value, additional: &str) -> serde_json::Value {
    serde_json::json!({"primary_evidence": primary, "additional_evidence": additional})
}

#[test]
fn sample_evidence_is_refused_unless_a_resource_dangerously_accepts_it() {
    let plain = start(300, true, &[("default/model-key/demo", String::new())]);
    let (s, body) = auth_as(&plain.base, "sample").unwrap_err();
    assert_eq!(s, 400);
    assert!(body.contains("danger_accept_sample_evidence"), "{body}");

    let b = start_with_policies(
        300,
        true,
        &[
            (
                "default/model-key/demo",
                Policies {
                    toml: Some(String::new()),
                    rego: None,
                },
            ),
            (
                "default/interop/key",
                Policies {
                    toml: None,
                    rego: None,
                },
            ),
        ],
        "",
        |c| AuditLog::open(files(c).1).unwrap(),
    );
    let tee = TeeKeyPair::generate();
    let attest_sample = |report_data: &dyn Fn(&RuntimeData) -> Vec<u8>, additional: &str| {
        let (cookie, nonce) = auth_as(&b.base, "sample").unwrap();
        let rt = RuntimeData {
            nonce,
            tee_pubkey: tee.public_jwk(),
        };
        let ev = composite(sample_evidence(&report_data(&rt)), additional);
        let answer = attest(&b.base, Some(&cookie), &rt, ev);
        (cookie, answer)
    };
    let bound =
        |rt: &RuntimeData| binding::report_data_with_additional(rt, "").unwrap()[..48].to_vec();
    // Bound (the digest over the additional-evidence string too): a token
    // that says what it is, and the danger resource only.
    let (cookie, (s, body)) = attest_sample(&bound, "");
    assert_eq!(s, 200, "{body}");
    let claims = jwt_part(body["token"].as_str().unwrap(), 1);
    let cpu0 = &claims["submods"]["cpu0"];
    assert_eq!(cpu0["ear.status"], "warning", "{claims}");
    assert_eq!(
        cpu0["ear.veraison.annotated-evidence"]["platform"],
        "sample"
    );
    let (s, jwe) = get_resource(&b.base, "default/interop/key", Some(&cookie), None);
    assert_eq!(s, 200, "{jwe}");
    let jwe: ciel_protocol::jwe::Jwe = serde_json::from_value(jwe).unwrap();
    assert_eq!(tee.decrypt(&jwe).unwrap().as_slice(), &KEY);
    let (s, p) = get_resource(&b.base, "default/model-key/demo", Some(&cookie), None);
    assert_eq!(
        (s, p["type"].as_str()),
        (403, Some("urn:ciel:kbs:policy-denied"))
    );
    assert!(p["detail"].as_str().unwrap().contains("sample"), "{p}");

    // The binding without the additional-evidence string (the older
    // shape's digest) does not bind the composite request.
    let old = |rt: &RuntimeData| binding::report_data(rt).unwrap()[..48].to_vec();
    let (_, (s, p)) = attest_sample(&old, "");
    assert_eq!(
        (s, p["type"].as_str()),
        (403, Some("urn:ciel:kbs:bad-evidence"))
    );
    // Device evidence beside unsigned evidence: refused, not ignored (no
    // signed CPU evidence binds it).
    let with_gpu = |rt: &RuntimeData| {
        binding::report_data_with_additional(rt, "{\"nvidia\":{}}").unwrap()[..48].to_vec()
    };
    let (_, (s, p)) = attest_sample(&with_gpu, "{\"nvidia\":{}}");
    assert_eq!(s, 403, "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("device evidence"),
        "{p}"
    );

    let audit = b.audit();
    assert!(audit.contains("danger_sample_evidence"), "{audit}");
    assert!(audit.contains("evidence_malformed"), "{audit}");
}

#[test]
fn hardware_evidence_in_the_composite_shape_is_bound_with_the_additional_string() {
    let b = start(300, true, &[("default/model-key/demo", String::new())]);
    let tee = TeeKeyPair::generate();
    let (cookie, nonce) = auth(&b.base);
    let rt = RuntimeData {
        nonce,
        tee_pubkey: tee.public_jwk(),
    };
    let report_data = binding::report_data_with_additional(&rt, "").unwrap();
    let ev = genuine_guest().evidence(report_data).unwrap();
    let (s, body) = attest(&b.base, Some(&cookie), &rt, composite(ev, ""));
    assert_eq!(s, 200, "{body}");
    let (s, jwe) = get_resource(&b.base, "default/model-key/demo", Some(&cookie), None);
    assert_eq!(s, 200, "{jwe}");
    // The same evidence (bound without the string) in the composite shape:
    // refused.
    let (cookie, nonce) = auth(&b.base);
    let rt = RuntimeData {
        nonce,
        tee_pubkey: tee.public_jwk(),
    };
    let (s, p) = attest(
        &b.base,
        Some(&cookie),
        &rt,
        composite(evidence_for(&rt), ""),
    );
    assert_eq!(
        (s, p["type"].as_str()),
        (403, Some("urn:ciel:kbs:bad-evidence"))
    );
}
