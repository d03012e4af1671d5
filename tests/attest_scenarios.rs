//! Every scenario of `../shared/vectors/scenarios.json`, through the CLI,
//! with its expected verdict, TCB status and field values.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
use common::{ciel, scenarios, vector};
use serde_json::Value;

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[test]
fn snp_scenarios_accept_with_expected_fields() {
    let sc = scenarios();
    let list = sc["snp"].as_array().expect("snp scenarios");
    assert!(!list.is_empty());
    for case in list {
        let id = s(&case["id"]);
        let run = ciel([
            "attest".as_ref(),
            "verify".as_ref(),
            vector(&s(&case["report"])).as_os_str(),
            "--vcek".as_ref(),
            vector(&s(&case["signer_cert"])).as_os_str(),
            "--cert-chain".as_ref(),
            vector(&s(&case["ca_chain"])).as_os_str(),
            "--at".as_ref(),
            s(&case["verify_at"]).as_ref(),
            "--json".as_ref(),
        ]);
        let expected_accept = s(&case["expected"]) == "ACCEPT";
        assert_eq!(
            run.code == 0,
            expected_accept,
            "{id}: exit {} {}",
            run.code,
            run.stdout
        );
        let j = run.json();
        assert_eq!(
            j["verdict"],
            if expected_accept { "accept" } else { "reject" },
            "{id}"
        );
        assert_eq!(j["platform"], "snp");
        assert_eq!(j["tcb_status"], "UpToDate", "{id}");
        let claims = &j["claims"];
        assert_eq!(claims["product"], s(&case["product"]), "{id}");
        let fields = case["fields"].as_object().expect("fields");
        for (k, want) in fields {
            let got = &claims[k.as_str()];
            match k.as_str() {
                "signing_key" => {
                    assert_eq!(got, if want == 0 { "vcek" } else { "vlek" }, "{id}.{k}")
                }
                "reported_tcb" | "current_tcb" | "committed_tcb" | "launch_tcb" => {
                    for part in ["bl", "tee", "snp", "ucode", "raw"] {
                        assert_eq!(s(&got[part]), s(&want[part]), "{id}.{k}.{part}");
                    }
                }
                "cpuid" => {
                    for part in ["family", "model", "stepping"] {
                        assert_eq!(got[part], want[part], "{id}.{k}.{part}");
                    }
                }
                _ => assert_eq!(s(got), s(want), "{id}.{k}"),
            }
        }
    }
}

/// Collateral JSON for a scenario: the file it names, or one assembled
/// from go-tdx-guest's separate files (the PCS responses wrap the signed
/// body; the signature covers the body's exact bytes).
fn collateral_file(case: &Value, dir: &std::path::Path) -> std::path::PathBuf {
    let col = &case["collateral"];
    if let Some(json) = col["json"].as_str() {
        return vector(json);
    }
    let read = |k: &str| std::fs::read(vector(&s(&col[k]))).expect(k);
    let text = |k: &str| String::from_utf8(read(k)).expect(k);
    let split = |body: String, key: &str| -> (String, String) {
        let prefix = format!("{{\"{key}\":");
        let start = body.find(&prefix).expect("wrapped body") + prefix.len();
        let sig_at = body.rfind(",\"signature\":\"").expect("signature");
        let sig = body[sig_at + 14..]
            .trim_end()
            .trim_end_matches('}')
            .trim_end_matches('"')
            .to_string();
        (body[start..sig_at].to_string(), sig)
    };
    let (tcb_info, tcb_sig) = split(text("tcb_info"), "tcbInfo");
    let (qe_identity, qe_sig) = split(text("qe_identity"), "enclaveIdentity");
    let j = serde_json::json!({
        "pck_crl_issuer_chain": text("pck_crl_issuer_chain"),
        "root_ca_crl": hex::encode(read("root_ca_crl")),
        "pck_crl": hex::encode(read("pck_crl")),
        "tcb_info_issuer_chain": text("tcb_info_issuer_chain"),
        "tcb_info": tcb_info,
        "tcb_info_signature": tcb_sig,
        "qe_identity_issuer_chain": text("qe_identity_issuer_chain"),
        "qe_identity": qe_identity,
        "qe_identity_signature": qe_sig,
    });
    let path = dir.join(format!("{}.json", s(&case["id"])));
    std::fs::write(&path, serde_json::to_vec(&j).expect("json")).expect("write");
    path
}

#[test]
fn tdx_and_sgx_scenarios_classify_tcb_status() {
    let sc = scenarios();
    let tmp = tempfile::tempdir().expect("tmp");
    let list = sc["tdx"].as_array().expect("tdx scenarios");
    assert!(!list.is_empty());
    for case in list {
        let id = s(&case["id"]);
        let col = collateral_file(case, tmp.path());
        let run = ciel([
            "attest".as_ref(),
            "verify".as_ref(),
            vector(&s(&case["quote"])).as_os_str(),
            "--collateral".as_ref(),
            col.as_os_str(),
            "--at".as_ref(),
            s(&case["verify_at"]).as_ref(),
            "--json".as_ref(),
        ]);
        let j = run.json();
        let expected = s(&case["expected_platform_tcb"]);
        let status = expected.split_whitespace().next().expect("status");
        if status == "NO_MATCHING_TCB_LEVEL" {
            assert_eq!(
                j["tcb_status"], "NoMatchingTcbLevel",
                "{id}: {}",
                run.stdout
            );
            let codes = run.reason_codes();
            assert!(
                codes.contains(&"tcb_no_matching_level".to_string()),
                "{id}: {codes:?}"
            );
            // Non-zero bytes after the signature data (go-tdx-guest appends text) are refused too.
            let nonzero_tail = id == "T8";
            assert_eq!(
                codes.contains(&"evidence_malformed".to_string()),
                nonzero_tail,
                "{id}: {codes:?}"
            );
            assert_eq!(run.code, 1, "{id}");
        } else {
            assert_eq!(j["tcb_status"], status, "{id}: {}", run.stdout);
            let adv: Vec<String> = case["computed_platform_tcb"][1]
                .as_array()
                .expect("advisories")
                .iter()
                .map(s)
                .collect();
            let got: Vec<String> = j["advisory_ids"]
                .as_array()
                .expect("advisory_ids")
                .iter()
                .map(s)
                .collect();
            assert_eq!(got, adv, "{id}");
            let accept = matches!(status, "UpToDate" | "SWHardeningNeeded");
            assert_eq!(run.code, if accept { 0 } else { 1 }, "{id}: {}", run.stdout);
            if !accept {
                assert_eq!(
                    run.reason_codes(),
                    vec!["tcb_status_not_allowed".to_string()],
                    "{id}"
                );
            }
        }
        let sgx = s(&case["fields"]["tee_type"]) == "0x0";
        assert_eq!(j["platform"], if sgx { "sgx" } else { "tdx" }, "{id}");
        let claims = &j["claims"];
        for (k, want) in case["fields"].as_object().expect("fields") {
            let key = match k.as_str() {
                "isv_prodid" => "isv_prod_id",
                "trailing_bytes" | "pck_sgx_ext" | "qe_report" | "body_type" => continue,
                "tee_type" if sgx => continue,
                other => other,
            };
            assert_eq!(s(&claims[key]), s(want), "{id}.{k}");
        }
    }
}

#[test]
fn nvidia_hopper_report_with_valid_chain_accepts_with_trustee_claims() {
    let run = ciel([
        "attest".as_ref(),
        "verify".as_ref(),
        vector("gpu/trustee/hopperAttestationReport.txt").as_os_str(),
        "--gpu-cert-chain".as_ref(),
        vector("gpu/trustee/hopper_cert_chain_case1.txt").as_os_str(),
        "--at".as_ref(),
        "2025-10-01T00:00:00Z".as_ref(),
        "--json".as_ref(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let j = run.json();
    assert_eq!(j["platform"], "nvidia");
    let expected: Value = serde_json::from_slice(
        &std::fs::read(vector("gpu/trustee/hopperAttestationReport-claims.txt")).expect("claims"),
    )
    .expect("claims json");
    let claims = &j["claims"];
    let config = &expected["config"];
    for key in [
        "driver_version",
        "vbios_version",
        "fwid",
        "project",
        "project_sku",
        "chip_sku",
        "board_id",
    ] {
        assert_eq!(claims[key], config[key], "{key}");
    }
    let got = claims["measurements"].as_object().expect("measurements");
    let want = expected["measurements"].as_object().expect("measurements");
    assert_eq!(got, want);
    assert_eq!(
        claims["nonce"],
        "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"
    );
}

#[test]
fn nvidia_broken_chains_are_rejected_with_their_reason() {
    for (case, code) in [
        ("hopper_cert_chain_case2.txt", "certificate_missing"),
        ("hopper_cert_chain_case3.txt", "chain_issuer_mismatch"),
        ("hopper_cert_chain_case4.txt", "certificate_missing"),
    ] {
        let run = ciel([
            "attest".as_ref(),
            "verify".as_ref(),
            vector("gpu/trustee/hopperAttestationReport.txt").as_os_str(),
            "--gpu-cert-chain".as_ref(),
            vector(&format!("gpu/trustee/{case}")).as_os_str(),
            "--at".as_ref(),
            "2025-10-01T00:00:00Z".as_ref(),
            "--json".as_ref(),
        ]);
        assert_eq!(run.code, 1, "{case}: {}", run.stdout);
        assert!(
            run.reason_codes().contains(&code.to_string()),
            "{case}: {:?}",
            run.reason_codes()
        );
    }
}

#[test]
fn nvidia_report_against_a_genuine_rim_of_another_vbios_is_a_measurement_mismatch() {
    // The shared RIMs are genuine but none matches this report's VBIOS
    // (MANIFEST.md), so the honest outcome is a mismatch, not an accept.
    let run = ciel([
        "attest".as_ref(),
        "verify".as_ref(),
        vector("gpu/trustee/hopperAttestationReport.txt").as_os_str(),
        "--gpu-cert-chain".as_ref(),
        vector("gpu/trustee/hopper_cert_chain_case1.txt").as_os_str(),
        "--rim".as_ref(),
        vector("gpu/nvtrust-local_gpu_verifier/g520_0200_885_9600740001_PROD.swidtag").as_os_str(),
        "--at".as_ref(),
        "2024-01-01T00:00:00Z".as_ref(),
        "--json".as_ref(),
    ]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(
        run.reason_codes(),
        vec!["gpu_measurement_mismatch".to_string()],
        "{}",
        run.stdout
    );
    // Once the RIM signer has expired, the RIM itself is refused.
    let run = ciel([
        "attest".as_ref(),
        "verify".as_ref(),
        vector("gpu/trustee/hopperAttestationReport.txt").as_os_str(),
        "--gpu-cert-chain".as_ref(),
        vector("gpu/trustee/hopper_cert_chain_case1.txt").as_os_str(),
        "--rim".as_ref(),
        vector("gpu/nvtrust-local_gpu_verifier/g520_0200_885_9600740001_PROD.swidtag").as_os_str(),
        "--at".as_ref(),
        "2026-11-01T00:00:00Z".as_ref(),
        "--json".as_ref(),
    ]);
    assert!(
        run.reason_codes()
            .contains(&"certificate_expired".to_string()),
        "{}",
        run.stdout
    );
}
