//! Azure vTPM evidence beyond the SNP v0/v1 vectors: Trustee's
//! `az-snp-vtpm` v2 (the nonce also in the HCL variable data's
//! `user-data`) and `az-tdx-vtpm` (the HCL variable data bound by a TD
//! quote sent beside it), from Trustee's test data (`testdata/azure/`),
//! and simulated `az-tdx-vtpm` evidence verified end to end.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod common;
use ciel_attestation::azure::{AzVtpm, verify_az_vtpm};
use ciel_attestation::sim::{AzVtpmSim, SimTdxQuote, TdxSim};
use ciel_attestation::{Collateral, Policy, UnixTime};

fn vector(name: &str) -> AzVtpm {
    let bytes = common::testdata(&format!("azure/{name}.json"));
    assert!(AzVtpm::detect(&bytes));
    AzVtpm::from_json(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn nonce_policy(nonce: &[u8]) -> Policy {
    let mut p = Policy::from_toml(&format!("report_data = \"{}\"", hex::encode(nonce))).unwrap();
    p.snp = Policy::authenticity_only().snp;
    p
}

fn codes(e: &AzVtpm, p: &Policy, at: UnixTime) -> Vec<String> {
    verify_az_vtpm(e, &Collateral::default(), p, at).reason_codes()
}

/// Where `needle` starts in `hay` (byte offsets: an HCL report is binary).
fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("present")
}

/// The nonce Trustee's v2 vector was made for.
const V2_NONCE: &str = "982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9aa398f647caa2338748cd0fd9f5f819ef";

#[test]
fn snp_v2_binds_the_nonce_in_the_quote_and_the_user_data() {
    let e = vector("az-snp-vtpm-evidence-v2");
    assert_eq!((e.version, e.tee()), (2, "az-snp-vtpm"));
    let nonce = hex::decode(V2_NONCE).unwrap();
    let v = verify_az_vtpm(
        &e,
        &Collateral::default(),
        &nonce_policy(&nonce),
        common::SNP_AT,
    );
    assert!(v.accepted, "{}", v.summary());
    // Another nonce: refused by the quote and by the user-data.
    let c = codes(&e, &nonce_policy(b"another"), common::SNP_AT);
    assert_eq!(c, ["report_data_mismatch", "report_data_mismatch"]);
    // The same evidence read as v1 no longer checks user-data, and a
    // user-data changed in the HCL report is no longer what the SNP
    // report binds.
    let at = find(&e.hcl_report, b"\"user-data\":\"") + 13;
    let mut changed = e.clone();
    changed.hcl_report[at] = if changed.hcl_report[at] == b'0' {
        b'1'
    } else {
        b'0'
    };
    let c = codes(&changed, &nonce_policy(&nonce), common::SNP_AT);
    assert_eq!(c, ["hcl_var_data_unbound", "report_data_mismatch"]);
    // Written as Trustee's v2 and read back.
    let json = serde_json::to_vec(&e.to_json()).unwrap();
    assert_eq!(AzVtpm::from_json(&json).unwrap(), e);
}

#[test]
fn trustees_tdx_vectors_bind_the_key_and_nonce_and_need_the_quotes_collateral() {
    for version in ["v0", "v1"] {
        let e = vector(&format!("az-tdx-vtpm-evidence-{version}"));
        assert_eq!(e.tee(), "az-tdx-vtpm", "{version}");
        assert_eq!(e.hcl_report.len(), 2600);
        assert_eq!(e.td_quote.as_ref().map(Vec::len), Some(5006));
        let (nonce, pcrs) = e.quoted().unwrap();
        assert_eq!(nonce, b"challenge");
        assert_eq!(pcrs.len(), 24);
        // Everything but the TD quote's DCAP verification holds; no
        // collateral for its FMSPC (00806F050000) is in the vectors, and
        // without it the quote is refused, by name.
        let p = nonce_policy(b"challenge");
        let at = UnixTime(1_759_305_600);
        assert_eq!(codes(&e, &p, at), ["collateral_missing"], "{version}");
        let mut other = codes(&e, &nonce_policy(b"another"), at);
        other.sort();
        assert_eq!(other, ["collateral_missing", "report_data_mismatch"]);
        // The attestation key in the variable data.
        let n_at = find(&e.hcl_report, b"\"n\":\"") + 10;
        let mut key = e.clone();
        key.hcl_report[n_at] ^= 0x01;
        let c = codes(&key, &p, at);
        assert!(c.contains(&"hcl_var_data_unbound".to_string()), "{c:?}");
        assert!(c.contains(&"tpm_quote_invalid".to_string()), "{c:?}");
        // The TD quote's report_data (offset 48 + 520).
        let mut quote = e.clone();
        quote.td_quote.as_mut().unwrap()[48 + 520] ^= 0x01;
        assert!(codes(&quote, &p, at).contains(&"hcl_var_data_unbound".to_string()));
        // A PCR.
        let mut pcr = e.clone();
        pcr.pcrs[9][3] ^= 0x01;
        let mut c = codes(&pcr, &p, at);
        c.sort();
        assert_eq!(c, ["collateral_missing", "tpm_pcr_digest_mismatch"]);
    }
    // The quote left out, or sent with an SNP HCL report: malformed.
    let mut e = vector("az-tdx-vtpm-evidence-v1");
    e.td_quote = None;
    assert!(e.hardware_report().unwrap_err().contains("no td_quote"));
    let snp = vector("az-snp-vtpm-evidence-v2");
    let mut mixed = snp.clone();
    mixed.vcek = None;
    mixed.td_quote = vector("az-tdx-vtpm-evidence-v1").td_quote;
    assert_eq!(
        codes(&mixed, &nonce_policy(b"x"), common::SNP_AT),
        ["evidence_malformed"]
    );
    let mut json = snp.to_json();
    json["td_quote"] = serde_json::Value::String("AAAA".into());
    let err = AzVtpm::from_value(&json).unwrap_err();
    assert!(err.contains("both a VCEK"), "{err}");
    json["version"] = 3.into();
    assert!(AzVtpm::from_value(&json).unwrap_err().contains("version 3"));
}

const NOW: UnixTime = UnixTime(1_790_000_000);

#[test]
fn simulated_tdx_vtpm_evidence_verifies_end_to_end_for_its_nonce() {
    let tdx = TdxSim::generate(UnixTime(NOW.secs() - 86_400)).unwrap();
    let vtpm = AzVtpmSim::generate().unwrap();
    let pcrs: [[u8; 32]; 24] = std::array::from_fn(|i| [i as u8 ^ 0x5a; 32]);
    let nonce = [0x42u8; 64];
    let e = vtpm
        .evidence_tdx(&tdx, &SimTdxQuote::default(), &nonce, &pcrs)
        .unwrap();
    assert_eq!(e.tee(), "az-tdx-vtpm");
    let collateral = Collateral {
        dcap: Some(tdx.collateral(NOW).unwrap()),
        ..Default::default()
    };
    let policy = |nonce: &[u8], extra: &str| {
        Policy::from_toml(&format!(
            "danger_simulated_roots = [\"{}\"]\nreport_data = \"{}\"\n{extra}",
            hex::encode(tdx.root_sha256()),
            hex::encode(nonce)
        ))
        .unwrap()
    };
    let run = |e: &AzVtpm, p: &Policy| verify_az_vtpm(e, &collateral, p, NOW);
    let v = run(&e, &policy(&nonce, ""));
    assert!(v.accepted, "{}", v.summary());
    assert_eq!(v.platform.to_string(), "tdx");
    assert!(v.simulated);
    // The TD quote's own rules apply: its MRTD is what [tdx] names.
    let mrtd = hex::encode(SimTdxQuote::default().mrtd);
    assert!(run(&e, &policy(&nonce, &format!("[tdx]\nmrtd = [\"{mrtd}\"]"))).accepted);
    let wrong = policy(&nonce, &format!("[tdx]\nmrtd = [\"{}\"]", "00".repeat(48)));
    assert_eq!(run(&e, &wrong).reason_codes(), ["measurement_not_allowed"]);
    // Its PCRs, its nonce.
    let pcr8 = format!("[vtpm]\npcrs = {{ 8 = [\"{}\"] }}", hex::encode(pcrs[8]));
    assert!(run(&e, &policy(&nonce, &pcr8)).accepted);
    assert_eq!(
        run(&e, &policy(&[0x43; 64], "")).reason_codes(),
        ["report_data_mismatch"]
    );
    // Not trusted without the simulated root named.
    let mut authentic = Policy::authenticity_only();
    authentic.report_data = Some(nonce);
    assert!(
        run(&e, &authentic)
            .reason_codes()
            .contains(&"untrusted_root".to_string())
    );
    // Another vTPM's TD quote (binding its own attestation key).
    let other = AzVtpmSim::generate()
        .unwrap()
        .evidence_tdx(&tdx, &SimTdxQuote::default(), &nonce, &pcrs)
        .unwrap();
    let mut swapped = e.clone();
    swapped.td_quote = other.td_quote;
    assert_eq!(
        run(&swapped, &policy(&nonce, "")).reason_codes(),
        ["hcl_var_data_unbound"]
    );
    // Through the tee-evidence document a broker and a client read, with
    // the collateral inside, and its init-data anchor (PCR 8).
    let mut doc = e.to_json();
    doc["collateral"] = tdx.collateral(NOW).unwrap().to_json();
    let d = ciel_attestation::tee_evidence::decode("az-tdx-vtpm", &doc, None).unwrap();
    assert_eq!(d.platform(), "az-tdx-vtpm");
    assert_eq!(d.bound_report_data(), nonce);
    assert!(d.verify(&policy(&nonce, ""), NOW).accepted);
    assert_eq!(
        ciel_attestation::tee_evidence::init_data_anchor("az-tdx-vtpm", &doc).unwrap(),
        Some(ciel_attestation::tee_evidence::InitDataAnchor::Pcr8(
            pcrs[8]
        ))
    );
    let err = ciel_attestation::tee_evidence::decode("az-snp-vtpm", &doc, None).unwrap_err();
    assert!(err.contains("az-tdx-vtpm's"), "{err}");
    doc.as_object_mut().unwrap().remove("collateral");
    let err = ciel_attestation::tee_evidence::decode("az-tdx-vtpm", &doc, None).unwrap_err();
    assert!(err.contains("no DCAP collateral"), "{err}");
}
