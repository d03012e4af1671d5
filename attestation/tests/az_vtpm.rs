//! Azure confidential VMs' vTPM evidence (Trustee's `az-snp-vtpm` test
//! vectors, both encodings): genuine evidence verifies for its nonce, and
//! each thing a host could change is refused with its own reason — the
//! attestation key in the HCL variable data, a PCR, the nonce, the quote.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod common;
use ciel_attestation::azure::{AzVtpm, verify_az_vtpm};
use ciel_attestation::{Collateral, Policy, UnixTime};

/// 2025-10-01T08:00:00Z, when the vectors were checked (MANIFEST.md).
const AT: UnixTime = UnixTime(1_759_305_600);

fn evidence(version: &str) -> (Vec<u8>, AzVtpm) {
    let bytes = std::fs::read(
        common::shared_vectors().join(format!("snp/trustee-az-snp-vtpm/evidence-{version}.json")),
    )
    .expect("shared vectors (set CIEL_VECTORS)");
    assert!(AzVtpm::detect(&bytes));
    let e = AzVtpm::from_json(&bytes).unwrap();
    (bytes, e)
}

/// Authenticity, and the nonce the vectors' quotes carry ("challenge").
fn policy(extra: &str) -> Policy {
    let mut p = Policy::from_toml(&format!(
        "report_data = \"{}\"\n{extra}",
        hex::encode("challenge")
    ))
    .unwrap();
    // The vectors' SNP reports allow debug-free defaults; keep the rest
    // authenticity-only.
    let base = Policy::authenticity_only();
    p.snp = base.snp;
    p
}

fn codes(e: &AzVtpm, p: &Policy) -> Vec<String> {
    verify_az_vtpm(e, &Collateral::default(), p, AT).reason_codes()
}

#[test]
fn both_encodings_verify_for_their_nonce() {
    for version in ["v0", "v1"] {
        let (_, e) = evidence(version);
        assert_eq!(e.hcl_report.len(), 2600, "{version}");
        assert_eq!(e.pcrs.len(), 24, "{version}");
        let v = verify_az_vtpm(&e, &Collateral::default(), &policy(""), AT);
        assert!(v.accepted, "{version}: {}", v.summary());
        assert_eq!(v.platform.to_string(), "snp");
    }
    // Another nonce.
    let (_, e) = evidence("v1");
    let other =
        Policy::from_toml(&format!("report_data = \"{}\"", hex::encode("another"))).unwrap();
    let mut other_policy = other;
    other_policy.snp = Policy::authenticity_only().snp;
    assert_eq!(codes(&e, &other_policy), vec!["report_data_mismatch"]);
}

#[test]
fn a_changed_key_pcr_or_quote_is_refused_by_name() {
    let (_, e) = evidence("v1");
    let p = policy("");
    // The attestation key in the variable data: no longer what the SNP
    // report binds, and not the key that signed the quote.
    let mut key = e.clone();
    // (Byte offsets: the HCL report is binary, not text.)
    let needle = b"\"n\":\"";
    let at = key
        .hcl_report
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
        + 10;
    key.hcl_report[at] ^= 0x01;
    assert_eq!(
        codes(&key, &p),
        ["hcl_var_data_unbound", "tpm_quote_invalid"]
    );
    // A PCR value the quote does not cover.
    let mut pcr = e.clone();
    pcr.pcrs[7][0] ^= 0x80;
    assert_eq!(codes(&pcr, &p), vec!["tpm_pcr_digest_mismatch"]);
    // The quote's signed bytes, or its signature.
    for at in [12usize, 60, e.quote_message.len() - 1] {
        let mut q = e.clone();
        q.quote_message[at] ^= 0x01;
        let c = codes(&q, &p);
        assert!(
            c.contains(&"tpm_quote_invalid".to_string()),
            "byte {at}: {c:?}"
        );
    }
    let mut sig = e.clone();
    sig.quote_signature[100] ^= 0x01;
    assert_eq!(codes(&sig, &p), vec!["tpm_quote_invalid"]);
    // The SNP report inside the HCL report.
    let mut snp = e.clone();
    snp.hcl_report[32 + 0x90] ^= 0x01;
    assert!(!verify_az_vtpm(&snp, &Collateral::default(), &p, AT).accepted);
    // Truncated before the end of its variable data (the bytes after it
    // are padding, bound by nothing): malformed, not a panic.
    for cut in [0usize, 4, 500, 1216, 1230, 2000, 1236 + 1110 - 1] {
        let mut t = e.clone();
        t.hcl_report.truncate(cut);
        assert!(
            !verify_az_vtpm(&t, &Collateral::default(), &p, AT).accepted,
            "cut {cut}"
        );
    }
    for cut in 0..e.quote_message.len() {
        let mut t = e.clone();
        t.quote_message.truncate(cut);
        assert!(
            codes(&t, &p).contains(&"tpm_quote_invalid".to_string()),
            "cut {cut}"
        );
    }
}

#[test]
fn the_policy_holds_pcrs_to_its_values() {
    let (_, e) = evidence("v0");
    let pcr4 = hex::encode(e.pcrs[4]);
    let ok = policy(&format!(
        "[vtpm]\npcrs = {{ \"4\" = [\"{}\", \"{pcr4}\"] }}\n",
        "00".repeat(32)
    ));
    assert!(codes(&e, &ok).is_empty());
    let wrong = policy(&format!(
        "[vtpm]\npcrs = {{ \"4\" = [\"{}\"] }}\n",
        "00".repeat(32)
    ));
    assert_eq!(codes(&e, &wrong), vec!["pcr_not_allowed"]);
    assert!(Policy::from_toml("[vtpm]\npcrs = { \"24\" = [] }\n").is_err());
    assert!(Policy::from_toml("[vtpm]\npcrs = { \"1\" = [\"abcd\"] }\n").is_err());
}

/// Simulated vTPM evidence (`sim::AzVtpmSim`) in the real layouts: it
/// verifies through the same code for its fresh nonce where the policy
/// names the simulated root, and each thing a host could change is refused
/// by name — so the broker and the guest's collection can be tested with
/// nonces of their own.
#[test]
fn simulated_vtpm_evidence_verifies_for_its_nonce_and_nothing_else() {
    use ciel_attestation::sim::{AzVtpmSim, SimSnpReport};
    let snp = common::sim();
    let vtpm = AzVtpmSim::generate().unwrap();
    let pcrs: [[u8; 32]; 24] = std::array::from_fn(|i| [i as u8; 32]);
    let nonce: Vec<u8> = (0..48u8).map(|i| i.wrapping_mul(37)).collect();
    let e = vtpm
        .evidence(snp, &SimSnpReport::default(), &nonce, &pcrs)
        .unwrap();
    let collateral = Collateral {
        snp_chain: Some(snp.chain_pem()),
        ..Default::default()
    };
    let policy = |nonce: &[u8], extra: &str| {
        common::trusting_policy(&format!(
            "report_data = \"{}\"\n{extra}",
            hex::encode(nonce)
        ))
    };
    let codes =
        |e: &AzVtpm, p: &Policy| verify_az_vtpm(e, &collateral, p, common::SNP_AT).reason_codes();
    let v = verify_az_vtpm(&e, &collateral, &policy(&nonce, ""), common::SNP_AT);
    assert!(v.accepted, "{}", v.summary());
    // Trustee's v1 JSON, written and read back.
    let json = serde_json::to_vec(&e.to_json()).unwrap();
    assert_eq!(AzVtpm::from_json(&json).unwrap(), e);
    // Its PCRs are what a `[vtpm]` policy reads.
    let pcr7 = format!("[vtpm]\npcrs = {{ 7 = [\"{}\"] }}", hex::encode([7u8; 32]));
    assert!(codes(&e, &policy(&nonce, &pcr7)).is_empty());
    let wrong7 = format!("[vtpm]\npcrs = {{ 7 = [\"{}\"] }}", hex::encode([8u8; 32]));
    assert_eq!(codes(&e, &policy(&nonce, &wrong7)), ["pcr_not_allowed"]);

    // Evidence without a vTPM quote (the plain SNP report) does not meet
    // PCR rules.
    let plain_report =
        ciel_attestation::Evidence::parse(&snp.report(&SimSnpReport::default()).unwrap()).unwrap();
    let plain = ciel_attestation::verify(
        &plain_report,
        &common::sim_collateral(snp.vcek_der()),
        &common::trusting_policy(&pcr7),
        common::SNP_AT,
    );
    assert_eq!(plain.reason_codes(), ["pcr_not_allowed"]);
    // Another session's nonce.
    assert_eq!(codes(&e, &policy(b"another", "")), ["report_data_mismatch"]);
    // A policy that does not name the simulated root.
    let plain = Policy::from_toml(&format!("report_data = \"{}\"", hex::encode(&nonce))).unwrap();
    assert!(codes(&e, &plain).contains(&"untrusted_root".to_string()));
    // A PCR value that the quote's digest does not cover.
    let mut pcr = e.clone();
    pcr.pcrs[3][0] ^= 1;
    assert_eq!(
        codes(&pcr, &policy(&nonce, "")),
        ["tpm_pcr_digest_mismatch"]
    );
    // A quote signed by another vTPM's key, under this HCL report.
    let other = AzVtpmSim::generate()
        .unwrap()
        .evidence(snp, &SimSnpReport::default(), &nonce, &pcrs)
        .unwrap();
    let mut swapped = other.clone();
    swapped.hcl_report = e.hcl_report.clone();
    assert_eq!(codes(&swapped, &policy(&nonce, "")), ["tpm_quote_invalid"]);
    // The variable data changed after the SNP report bound it (the key
    // swapped for the other vTPM's): no longer bound.
    let at = e.hcl_report.len() - vtpm.var_data().len();
    let mut unbound = other.clone();
    unbound.hcl_report = e.hcl_report[..at].to_vec();
    unbound
        .hcl_report
        .extend_from_slice(&other.hcl_report[at..]);
    assert_eq!(
        codes(&unbound, &policy(&nonce, "")),
        ["hcl_var_data_unbound"]
    );
    // Nonces longer than a quote's 64 bytes are refused at generation.
    assert!(
        vtpm.evidence(snp, &SimSnpReport::default(), &[0; 65], &pcrs)
            .is_err()
    );
}
