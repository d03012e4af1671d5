//! The attestation token `/attest` returns is an EAR JWT as Trustee issues
//! it: signed by the broker (ES256, the key in the header), its expiry
//! readable, the TEE key at the path Trustee's verifier reads, and good as
//! `Authorization: Bearer` for exactly the session it was issued to.

use super::*;

#[test]
fn the_attestation_token_is_a_signed_ear_that_works_as_a_bearer() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let b = start(300, true, &[("default/model-key/demo", String::new())]);
    let tee = TeeKeyPair::generate();
    let (cookie, nonce) = auth(&b.base);
    let rt = RuntimeData {
        nonce: nonce.clone(),
        tee_pubkey: tee.public_jwk(),
    };
    let (status, body) = attest(&b.base, Some(&cookie), &rt, evidence_for(&rt));
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let (header, claims) = (jwt_part(&token, 0), jwt_part(&token, 1));

    // Signed by the key in the header, which is the broker's.
    assert_eq!(header["alg"], "ES256");
    assert_eq!(&header["jwk"], b.state.tokens.public_jwk());
    let coord = |c: &str| {
        URL_SAFE_NO_PAD
            .decode(header["jwk"][c].as_str().unwrap())
            .unwrap()
    };
    let point = [vec![4u8], coord("x"), coord("y")].concat();
    let key =
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point);
    let signed = format!("{}.{}", parts[0], parts[1]);
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    key.verify(signed.as_bytes(), &sig).unwrap();
    // One changed claim and the signature no longer holds.
    let mut forged = claims.clone();
    forged["exp"] = serde_json::json!(u64::MAX);
    let forged_part = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
    assert!(
        key.verify(format!("{}.{forged_part}", parts[0]).as_bytes(), &sig)
            .is_err()
    );

    // The EAR claims Trustee-style clients read.
    assert_eq!(claims["eat_profile"], "tag:github.com,2023:veraison/ear");
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 300, "the token lives as long as the session");
    let cpu0 = &claims["submods"]["cpu0"];
    assert_eq!(cpu0["ear.status"], "affirming");
    let annotated = &cpu0["ear.veraison.annotated-evidence"];
    assert_eq!(annotated["platform"], "snp");
    assert_eq!(annotated["measurement"], measurement());
    assert_eq!(
        claims
            .pointer("/submods/cpu0/ear.veraison.annotated-evidence/runtime_data_claims/tee-pubkey")
            .unwrap(),
        &serde_json::to_value(tee.public_jwk()).unwrap()
    );
    assert_eq!(annotated["runtime_data_claims"]["nonce"], nonce.as_str());

    // As a bearer (no cookie), the token gets the key, encrypted to the TEE key.
    let (status, jwe) = get_resource(&b.base, "default/model-key/demo", None, Some(&token));
    assert_eq!(status, 200, "{jwe}");
    let jwe: ciel_protocol::jwe::Jwe = serde_json::from_value(jwe).unwrap();
    assert_eq!(tee.decrypt(&jwe).unwrap().as_slice(), &KEY);
    // A token with a forged claim (the signature kept) is no session's token.
    let (status, problem) = get_resource(
        &b.base,
        "default/model-key/demo",
        None,
        Some(&format!("{}.{forged_part}.{}", parts[0], parts[2])),
    );
    assert_eq!(
        (status, problem["type"].as_str()),
        (401, Some("urn:ciel:kbs:expired-session"))
    );
}

/// A Trustee-style Rego resource policy decides over the token's claims
/// (the EAR above, with the evidence's parsed claims under `snp`) and the
/// resource path, alone or beside a TOML policy; a refusal is audited.
#[test]
fn a_rego_resource_policy_decides_over_the_token_claims() {
    let m = measurement();
    let rego = |want: &str| {
        format!(
            "package policy\n\nimport rego.v1\n\ndefault allow := false\n\n\
             allow if {{\n    input.submods.cpu0[\"ear.status\"] == \"affirming\"\n    \
             input.submods.cpu0[\"ear.veraison.annotated-evidence\"].snp.measurement == \"{want}\"\n    \
             split(data[\"resource-path\"], \"/\")[1] == \"model-key\"\n}}\n"
        )
    };
    let policies = [
        // Rego alone, satisfied.
        ("default/model-key/demo", None, Some(rego(&m))),
        // Rego alone, another measurement.
        (
            "default/model-key/other",
            None,
            Some(rego(&"00".repeat(48))),
        ),
        // TOML refuses even though the Rego policy allows.
        (
            "default/model-key/both",
            Some(format!("[snp]\nmeasurements = [\"{}\"]\n", "11".repeat(48))),
            Some(rego(&m)),
        ),
    ];
    let resources: Vec<(&str, Policies)> = policies
        .iter()
        .map(|(p, toml, rego)| {
            (
                *p,
                Policies {
                    toml: toml.clone(),
                    rego: rego.clone(),
                },
            )
        })
        .collect();
    let b = start_with_policies(300, true, &resources, "", |c| {
        AuditLog::open(files(c).1).unwrap()
    });
    let tee = TeeKeyPair::generate();
    let (cookie, nonce) = auth(&b.base);
    let rt = RuntimeData {
        nonce,
        tee_pubkey: tee.public_jwk(),
    };
    let (status, body) = attest(&b.base, Some(&cookie), &rt, evidence_for(&rt));
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap();
    let get = |path: &str| {
        let mut r = ureq::get(&format!("{}/kbs/v0/resource/{path}", b.base))
            .header("authorization", &format!("Bearer {token}"))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap();
        (
            r.status().as_u16(),
            r.body_mut().read_json::<serde_json::Value>().unwrap(),
        )
    };
    let (status, jwe) = get("default/model-key/demo");
    assert_eq!(status, 200, "{jwe}");
    let jwe: ciel_protocol::jwe::Jwe = serde_json::from_value(jwe).unwrap();
    assert_eq!(tee.decrypt(&jwe).unwrap().as_slice(), &KEY);

    let (status, problem) = get("default/model-key/other");
    assert_eq!(status, 403, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("policy1.rego"),
        "{problem}"
    );
    let (status, problem) = get("default/model-key/both");
    assert_eq!(status, 403, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("measurement"),
        "{problem}"
    );
    let audit = b.audit();
    assert!(audit.contains("rego_denied"), "{audit}");
}
