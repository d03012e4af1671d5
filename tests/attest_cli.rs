//! The CLI contract of `ciel attest`: exit codes, errors that name the
//! file, and the simulated platform round trip across processes.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
use common::{ciel, sim_report, vector};

#[test]
fn unreadable_or_unknown_input_exits_2_naming_the_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let junk = tmp.path().join("junk.bin");
    std::fs::write(&junk, b"definitely not evidence").expect("write");
    let run = ciel(["attest".as_ref(), "verify".as_ref(), junk.as_os_str()]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("junk.bin") && run.stderr.contains("unknown evidence kind"),
        "{}",
        run.stderr
    );

    let run = ciel(["attest", "verify", "/nonexistent/report.bin"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("/nonexistent/report.bin"),
        "{}",
        run.stderr
    );

    let report = vector("snp/oak/genoa_oc.report.bin");
    let run = ciel([
        "attest".as_ref(),
        "verify".as_ref(),
        report.as_os_str(),
        "--at".as_ref(),
        "yesterday".as_ref(),
    ]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--at"), "{}", run.stderr);

    let policy = tmp.path().join("policy.toml");
    std::fs::write(&policy, "[snp]\nmeasurements = [\"xyz\"]\n").expect("write");
    let run = ciel([
        "attest".as_ref(),
        "verify".as_ref(),
        report.as_os_str(),
        "--policy".as_ref(),
        policy.as_os_str(),
    ]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("policy.toml") && run.stderr.contains("snp.measurements[0]"),
        "{}",
        run.stderr
    );

    let run = ciel(["attest", "verify"]);
    assert_eq!(run.code, 2, "missing argument is a usage error");
}

#[test]
fn a_1183_byte_report_is_refused_not_misread() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut b = std::fs::read(vector("snp/oak/genoa_oc.report.bin")).expect("read");
    b.pop();
    let f = tmp.path().join("short.bin");
    std::fs::write(&f, b).expect("write");
    let run = ciel(["attest".as_ref(), "verify".as_ref(), f.as_os_str()]);
    assert_eq!(run.code, 2);
}

#[test]
fn simulated_evidence_round_trips_and_warns() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("sim.bin");
    let run = sim_report("snp", "c0ffee", &out);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let fp_line = run
        .stderr
        .lines()
        .find(|l| l.contains("danger_simulated_roots"))
        .expect("policy hint")
        .trim()
        .to_string();
    let vcek = tmp.path().join("sim.bin.vcek.der");
    let chain = tmp.path().join("sim.bin.chain.pem");
    let verify = |extra: &[&std::ffi::OsStr]| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "attest".as_ref(),
            "verify".as_ref(),
            out.as_os_str(),
            "--vcek".as_ref(),
            vcek.as_os_str(),
            "--cert-chain".as_ref(),
            chain.as_os_str(),
            "--json".as_ref(),
        ];
        args.extend_from_slice(extra);
        ciel(args)
    };
    // Default: authentic chain, but the root is not pinned.
    let run = verify(&[]);
    assert_eq!(run.code, 1);
    assert_eq!(run.reason_codes(), vec!["untrusted_root".to_string()]);
    assert!(!run.stderr.contains("WARNING"));

    // A policy naming the simulated root accepts, with a warning every time.
    let policy = tmp.path().join("p.toml");
    std::fs::write(&policy, format!("{fp_line}\nreport_data = \"c0ffee\"\n")).expect("write");
    let run = verify(&["--policy".as_ref(), policy.as_os_str()]);
    assert_eq!(run.code, 0, "{} {}", run.stdout, run.stderr);
    assert!(run.stderr.contains("SIMULATED"), "{}", run.stderr);
    let j = run.json();
    assert_eq!(j["simulated"], true);
    assert!(
        j["claims"]["report_data"]
            .as_str()
            .expect("report_data")
            .starts_with("c0ffee00")
    );

    // The same policy with another expected report_data rejects.
    std::fs::write(&policy, format!("{fp_line}\nreport_data = \"c0ffef\"\n")).expect("write");
    let run = verify(&["--policy".as_ref(), policy.as_os_str()]);
    assert_eq!(run.code, 1);
    assert_eq!(run.reason_codes(), vec!["report_data_mismatch".to_string()]);
}

#[test]
fn sim_report_validates_its_arguments() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("x.bin");
    let too_long = "00".repeat(65);
    let run = ciel([
        "attest".as_ref(),
        "sim-report".as_ref(),
        "--platform".as_ref(),
        "snp".as_ref(),
        "--report-data".as_ref(),
        too_long.as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("at most 64"), "{}", run.stderr);
    let run = sim_report("sev", "00", &out);
    assert_eq!(run.code, 2);
}

#[test]
fn simulated_tdx_quote_round_trips_with_its_collateral() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("td.quote");
    let run = sim_report("tdx", "ab", &out);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let fp_line = run
        .stderr
        .lines()
        .find(|l| l.contains("danger_simulated_roots"))
        .expect("policy hint")
        .trim()
        .to_string();
    let col = tmp.path().join("td.quote.collateral.json");
    let args = |policy: Option<&std::path::Path>| {
        let mut a: Vec<std::ffi::OsString> = vec![
            "attest".into(),
            "verify".into(),
            out.clone().into(),
            "--collateral".into(),
            col.clone().into(),
            "--json".into(),
        ];
        if let Some(p) = policy {
            a.push("--policy".into());
            a.push(p.into());
        }
        a
    };
    let run = ciel(args(None));
    assert_eq!(run.code, 1);
    assert_eq!(run.reason_codes(), vec!["untrusted_root".to_string()]);
    let policy = tmp.path().join("p.toml");
    std::fs::write(&policy, format!("{fp_line}\nplatforms = [\"tdx\"]\n")).expect("write");
    let run = ciel(args(Some(&policy)));
    assert_eq!(run.code, 0, "{} {}", run.stdout, run.stderr);
    assert!(run.stderr.contains("SIMULATED"));
    let j = run.json();
    assert_eq!(j["platform"], "tdx");
    assert_eq!(j["tcb_status"], "UpToDate");
    assert!(
        j["claims"]["report_data"]
            .as_str()
            .expect("report_data")
            .starts_with("ab00")
    );
}

/// `--vcek` takes the bundle Azure's THIM serves (VCEK, then ASK and ARK,
/// one PEM): the chain comes from it, and its ARK is still the pinned one.
#[test]
fn a_cloud_vcek_bundle_verifies() {
    let tmp = tempfile::tempdir().expect("tmp");
    let vcek = std::fs::read(vector("snp/oak/milan_oc_release.vcek.der")).expect("vcek");
    let mut bundle = pem::encode(&pem::Pem::new("CERTIFICATE", vcek)).into_bytes();
    bundle.extend(std::fs::read(vector("snp/go-sev-guest/ask_ark_milan.pem")).expect("chain"));
    let path = tmp.path().join("thim.pem");
    std::fs::write(&path, &bundle).expect("write");
    let report = vector("snp/oak/milan_oc_release.report.bin");
    let run = ciel([
        "attest".as_ref(),
        "verify".as_ref(),
        report.as_os_str(),
        "--vcek".as_ref(),
        path.as_os_str(),
        "--at".as_ref(),
        "2025-10-01T08:00:00Z".as_ref(),
    ]);
    assert_eq!(run.code, 0, "{} {}", run.stdout, run.stderr);
    assert!(run.stdout.contains("verdict:     ACCEPT"), "{}", run.stdout);

    // `--crl` reaches the verifier: a file that is no CRL is a refusal
    // naming it (AMD's real CRL is not among the shared vectors).
    let junk = tmp.path().join("junk.crl");
    std::fs::write(&junk, b"not a CRL").expect("write");
    let run = ciel([
        "attest".as_ref(),
        "verify".as_ref(),
        report.as_os_str(),
        "--vcek".as_ref(),
        path.as_os_str(),
        "--crl".as_ref(),
        junk.as_os_str(),
        "--at".as_ref(),
        "2025-10-01T08:00:00Z".as_ref(),
    ]);
    assert_eq!(run.code, 1, "{} {}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("[collateral_malformed] AMD CRL DER"),
        "{}",
        run.stdout
    );
}

/// `gpu-collect` then `gpu-verify` across processes with simulated GPUs:
/// refused until the policy names the simulated root, then each GPU shown
/// accepted; another nonce, or a GPU count the policy does not meet, is a
/// refusal (exit 1) naming its reason; bad arguments exit 2.
#[test]
fn simulated_gpus_collect_and_verify_as_a_set() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("gpus.json");
    let nonce = "5a".repeat(32);
    let run = ciel([
        "attest".as_ref(),
        "gpu-collect".as_ref(),
        "--from".as_ref(),
        "sim:2".as_ref(),
        "--nonce".as_ref(),
        nonce.as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("SIMULATED GPUs"), "{}", run.stderr);
    let verify = |nonce: &str, policy: Option<&std::path::Path>| {
        let mut args = vec![
            "attest".as_ref(),
            "gpu-verify".as_ref(),
            out.as_os_str(),
            "--nonce".as_ref(),
            std::ffi::OsStr::new(nonce),
        ];
        if let Some(p) = policy {
            args.extend(["--policy".as_ref(), p.as_os_str()]);
        }
        ciel(args)
    };
    let run = verify(&nonce, None);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(
        run.stdout
            .matches("[untrusted_root] GPU chain ends in")
            .count(),
        2,
        "{}",
        run.stdout
    );

    let root = std::fs::read(common::data_dir().join("sim/nvidia/root.der")).expect("root");
    let root = hex::encode(ring::digest::digest(&ring::digest::SHA256, &root));
    let policy = tmp.path().join("p.toml");
    std::fs::write(
        &policy,
        format!(
            "danger_simulated_roots = [\"{root}\"]\n[nvidia]\nrequire_ocsp = true\nmin_gpus = 2\n"
        ),
    )
    .expect("write");
    let run = verify(&nonce, Some(&policy));
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.starts_with("verdict:     ACCEPT (2 GPUs)"),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.stdout.matches("[ ok ] GPU-").count(),
        2,
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("SIMULATED"), "{}", run.stderr);

    let run = verify(&"11".repeat(32), Some(&policy));
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("[gpu_nonce_mismatch]"),
        "{}",
        run.stdout
    );
    std::fs::write(
        &policy,
        format!("danger_simulated_roots = [\"{root}\"]\n[nvidia]\nmin_gpus = 3\n"),
    )
    .expect("write");
    let run = verify(&nonce, Some(&policy));
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("[gpu_count_below_minimum]"),
        "{}",
        run.stdout
    );

    let run = verify("abcd", Some(&policy));
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("--nonce: 2 bytes, expected 32"),
        "{}",
        run.stderr
    );
    let run = ciel([
        "attest",
        "gpu-collect",
        "--from",
        "sim:0",
        "--nonce",
        "00",
        "--out",
        "/tmp/x",
    ]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("sim:N takes N from 1 to 64"),
        "{}",
        run.stderr
    );
}

/// An Azure confidential VM's vTPM evidence (Trustee's JSON) through
/// `ciel attest verify`: accepted for its quote's nonce with the quote's
/// PCRs shown; a PCR changed in the file, or another nonce, refused with
/// its reason; a PCR the policy pins to another value refused.
#[test]
fn azure_vtpm_evidence_verifies_through_the_cli() {
    let tmp = tempfile::tempdir().expect("tmp");
    let file = vector("snp/trustee-az-snp-vtpm/evidence-v1.json");
    let policy = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    };
    let nonce = format!("report_data = \"{}\"\n", hex::encode("challenge"));
    let verify = |evidence: &std::path::Path, policy: &std::path::Path| {
        ciel([
            "attest".as_ref(),
            "verify".as_ref(),
            evidence.as_os_str(),
            "--at".as_ref(),
            "2025-10-01T08:00:00Z".as_ref(),
            "--policy".as_ref(),
            policy.as_os_str(),
            "--json".as_ref(),
        ])
    };
    let good = policy("good.toml", &nonce);
    let run = verify(&file, &good);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let out = run.json();
    assert_eq!(out["vtpm"]["nonce"], hex::encode("challenge"));
    let pcr4 = out["vtpm"]["pcrs"]["4"].as_str().unwrap().to_string();
    assert_eq!(pcr4.len(), 64);

    let run = verify(&file, &policy("other.toml", "report_data = \"00aa\"\n"));
    assert_eq!(run.code, 1);
    assert_eq!(run.reason_codes(), vec!["report_data_mismatch"]);
    let pinned = policy(
        "pinned.toml",
        &format!(
            "{nonce}[vtpm]\npcrs = {{ \"4\" = [\"{}\"] }}\n",
            "00".repeat(32)
        ),
    );
    let run = verify(&file, &pinned);
    assert_eq!(run.code, 1);
    assert_eq!(run.reason_codes(), vec!["pcr_not_allowed"]);

    // The file with one PCR value changed.
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("json");
    json["tpm_quote"]["pcrs"][4] = serde_json::Value::String("11".repeat(32));
    let edited = tmp.path().join("edited.json");
    std::fs::write(&edited, serde_json::to_vec(&json).expect("json")).expect("write");
    let run = verify(&edited, &good);
    assert_eq!(run.code, 1);
    assert_eq!(run.reason_codes(), vec!["tpm_pcr_digest_mismatch"]);

    // JSON that is not this evidence: a usage error naming the file.
    let other = tmp.path().join("other.json");
    std::fs::write(&other, "{\"report_data\": \"00\"}").expect("write");
    let run = verify(&other, &good);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("other.json") && run.stderr.contains("not Azure vTPM evidence"),
        "{}",
        run.stderr
    );
}

/// Azure TDX vTPM evidence (`az-tdx-vtpm`) through `ciel attest verify`:
/// simulated evidence accepted with the TD quote's collateral for its
/// nonce (and the simulated root named), refused without that collateral
/// or for another nonce; Trustee's real vector refused only for the
/// collateral of its FMSPC, which the vectors lack.
#[test]
fn azure_tdx_vtpm_evidence_verifies_through_the_cli() {
    use ciel_attestation::UnixTime;
    use ciel_attestation::sim::{AzVtpmSim, SimTdxQuote, TdxSim};
    let tmp = tempfile::tempdir().expect("tmp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let tdx = TdxSim::generate(UnixTime(now - 86_400)).expect("sim");
    let pcrs: [[u8; 32]; 24] = std::array::from_fn(|i| [i as u8; 32]);
    let evidence = AzVtpmSim::generate()
        .expect("vtpm")
        .evidence_tdx(&tdx, &SimTdxQuote::default(), b"fresh nonce", &pcrs)
        .expect("evidence");
    let write = |name: &str, bytes: Vec<u8>| {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).expect("write");
        p
    };
    let file = write(
        "az-tdx.json",
        serde_json::to_vec(&evidence.to_json()).expect("json"),
    );
    let collateral = write(
        "collateral.json",
        serde_json::to_vec(&tdx.collateral(UnixTime(now)).expect("collateral").to_json())
            .expect("json"),
    );
    let policy = |nonce: &[u8]| {
        write(
            &format!("{}.toml", hex::encode(nonce)),
            format!(
                "danger_simulated_roots = [\"{}\"]\nreport_data = \"{}\"\n",
                hex::encode(tdx.root_sha256()),
                hex::encode(nonce)
            )
            .into_bytes(),
        )
    };
    let verify =
        |evidence: &std::path::Path, policy: &std::path::Path, extra: &[&std::ffi::OsStr]| {
            let mut args: Vec<&std::ffi::OsStr> = vec![
                "attest".as_ref(),
                "verify".as_ref(),
                evidence.as_os_str(),
                "--policy".as_ref(),
                policy.as_os_str(),
                "--json".as_ref(),
            ];
            args.extend_from_slice(extra);
            ciel(args)
        };
    let with_collateral = ["--collateral".as_ref(), collateral.as_os_str()];
    let run = verify(&file, &policy(b"fresh nonce"), &with_collateral);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let out = run.json();
    assert_eq!(out["platform"], "tdx");
    assert_eq!(out["vtpm"]["nonce"], hex::encode("fresh nonce"));
    assert_eq!(out["vtpm"]["pcrs"]["8"], hex::encode([8u8; 32]));
    let run = verify(&file, &policy(b"another"), &with_collateral);
    assert_eq!(run.reason_codes(), vec!["report_data_mismatch"]);
    let run = verify(&file, &policy(b"fresh nonce"), &[]);
    assert_eq!(run.code, 1);
    assert_eq!(run.reason_codes(), vec!["collateral_missing"]);

    // Trustee's real az-tdx-vtpm vector: bound, signed and for its nonce;
    // the TD quote's collateral is not in the vectors.
    let real = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("attestation/testdata/azure/az-tdx-vtpm-evidence-v1.json");
    let nonce = write(
        "challenge.toml",
        format!("report_data = \"{}\"\n", hex::encode("challenge")).into_bytes(),
    );
    let run = verify(&real, &nonce, &[]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.reason_codes(), vec!["collateral_missing"]);
    assert_eq!(run.json()["vtpm"]["nonce"], hex::encode("challenge"));
}

/// `ciel enclave serve --vtpm`: a TPM that is not there, or not an
/// address, is refused before anything starts, naming it.
#[test]
fn enclave_serve_names_the_vtpm_it_cannot_use() {
    let run = ciel([
        "enclave",
        "serve",
        "--vtpm",
        "unix:/nonexistent/swtpm.sock",
        "--kbs",
        "https://127.0.0.1:9",
        "--listen",
        "tcp://127.0.0.1:9",
    ]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("--vtpm unix:/nonexistent/swtpm.sock")
            && run.stderr.contains("NV index 0x01400001"),
        "{}",
        run.stderr
    );
    let run = ciel(["enclave", "serve", "--vtpm", "tpmrm0"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("unix:/path/to/swtpm.sock"),
        "{}",
        run.stderr
    );
}
