//! `ciel image measure tdx`: replay → reference values → policy, with no
//! hand copying, checked against a (simulated) TD quote.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]

mod common;
use ciel_attestation::sim::{SimTdxQuote, TdxSim};
use ciel_attestation::{Collateral, Evidence, Policy, ReasonKind, UnixTime, Verdict, verify};
use common::{ciel, vector};

/// The verdict on a simulated TD's quote under the reference values in
/// `rv`, plus (for a simulated quote) the simulated root.
fn simulated_td_under(rv: &std::path::Path) -> impl Fn(SimTdxQuote) -> Verdict {
    let now = UnixTime(1_790_000_000);
    let sim = TdxSim::generate(UnixTime(now.0 - 86_400)).unwrap();
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(rv).unwrap()).unwrap();
    doc["danger_simulated_roots"] = serde_json::json!([hex::encode(sim.root_sha256())]);
    let policy = Policy::from_json(&doc.to_string()).unwrap();
    let col = Collateral {
        dcap: Some(sim.collateral(now).unwrap()),
        ..Default::default()
    };
    move |q| {
        let quote = sim.quote(&q).unwrap();
        verify(&Evidence::parse(&quote).unwrap(), &col, &policy, now)
    }
}

#[test]
fn replayed_rtmrs_become_a_policy_that_a_matching_quote_satisfies() {
    let tmp = tempfile::tempdir().unwrap();
    let rv = tmp.path().join("rv.json");
    let log = vector("measure/trustee-eventlog/CCEL_data_grub");
    let run = ciel([
        "image".as_ref(),
        "measure".as_ref(),
        "tdx".as_ref(),
        "--ccel".as_ref(),
        log.as_os_str(),
        "--json".as_ref(),
        "--reference-values".as_ref(),
        rv.as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = run.json();
    assert_eq!(
        out["rtmr"][0],
        "cec0a104f691f60da2387fea3c2de00c4ac035e2bb479ff02edcce69039d9e9907f0b3e55031da3dc7038f423adebd79"
    );
    assert_eq!(out["events"].as_array().unwrap().len(), 37);

    let mut rtmr = [[0u8; 48]; 4];
    for (i, r) in rtmr.iter_mut().enumerate() {
        r.copy_from_slice(&hex::decode(out["rtmr"][i].as_str().unwrap()).unwrap());
    }
    let verdict = simulated_td_under(&rv);
    let v = verdict(SimTdxQuote {
        rtmr,
        ..Default::default()
    });
    assert!(v.accepted, "{:?}", v.reasons);

    // A TD whose boot chain differs (one event more in RTMR1) is refused.
    rtmr[1][0] ^= 1;
    let v = verdict(SimTdxQuote {
        rtmr,
        ..Default::default()
    });
    assert!(v.has(ReasonKind::RtmrNotAllowed), "{:?}", v.reasons);

    // And a garbage log is a clear error.
    let bad = tmp.path().join("bad.log");
    std::fs::write(&bad, [0u8; 10]).unwrap();
    let run = ciel([
        "image".as_ref(),
        "measure".as_ref(),
        "tdx".as_ref(),
        "--ccel".as_ref(),
        bad.as_os_str(),
    ]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("bad.log"), "{}", run.stderr);
}

#[test]
fn snp_launch_digest_matches_sev_snp_measure_and_feeds_a_policy() {
    use ciel_attestation::sim::{SimSnpReport, SnpSim};
    let tmp = tempfile::tempdir().unwrap();
    let rv = tmp.path().join("rv.json");
    let ovmf = vector("measure/sev-snp-measure/ovmf_AmdSev_suffix.bin");
    let empty = tmp.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let run = ciel([
        "image".as_ref(),
        "measure".as_ref(),
        "snp".as_ref(),
        "--ovmf".as_ref(),
        ovmf.as_os_str(),
        "--kernel".as_ref(),
        empty.as_os_str(),
        "--initrd".as_ref(),
        empty.as_os_str(),
        "--append".as_ref(),
        "console=ttyS0 loglevel=7".as_ref(),
        "--vcpus".as_ref(),
        "1".as_ref(),
        "--vcpu-type".as_ref(),
        "EPYC-v4".as_ref(),
        "--guest-features".as_ref(),
        "0x21".as_ref(),
        "--json".as_ref(),
        "--reference-values".as_ref(),
        rv.as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // sev-snp-measure's test_snp_default.
    let want = "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977";
    assert_eq!(run.json()["measurement"], want);

    // A guest launched with that measurement satisfies the generated policy.
    let sim = SnpSim::generate(UnixTime(1_790_000_000)).unwrap();
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&rv).unwrap()).unwrap();
    doc["danger_simulated_roots"] = serde_json::json!([hex::encode(sim.root_sha256())]);
    let policy = Policy::from_json(&doc.to_string()).unwrap();
    let col = Collateral {
        snp_signer: Some(sim.vcek_der().to_vec()),
        snp_chain: Some(sim.chain_pem()),
        ..Default::default()
    };
    let measurement: [u8; 48] = hex::decode(want).unwrap().try_into().unwrap();
    let report = sim
        .report(&SimSnpReport {
            measurement,
            ..Default::default()
        })
        .unwrap();
    assert!(
        verify(
            &Evidence::parse(&report).unwrap(),
            &col,
            &policy,
            UnixTime(1_790_000_000)
        )
        .accepted
    );
    let other = sim.report(&SimSnpReport::default()).unwrap();
    let v = verify(
        &Evidence::parse(&other).unwrap(),
        &col,
        &policy,
        UnixTime(1_790_000_000),
    );
    assert!(v.has(ReasonKind::MeasurementNotAllowed));

    // Direct boot needs an OVMF with the kernel-hashes section.
    let plain = vector("measure/sev-snp-measure/ovmf_OvmfX64_suffix.bin");
    let run = ciel([
        "image".as_ref(),
        "measure".as_ref(),
        "snp".as_ref(),
        "--ovmf".as_ref(),
        plain.as_os_str(),
        "--kernel".as_ref(),
        empty.as_os_str(),
    ]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("SNP_KERNEL_HASHES"), "{}", run.stderr);
}

#[test]
fn image_build_is_reproducible_and_launchable() {
    let tmp = tempfile::tempdir().unwrap();
    let enclave = tmp.path().join("enclave");
    let kernel = tmp.path().join("vmlinuz");
    let mods = tmp.path().join("mods");
    std::fs::create_dir(&mods).unwrap();
    std::fs::write(&enclave, b"\x7fELF static enclave").unwrap();
    std::fs::write(&kernel, b"MZ kernel").unwrap();
    std::fs::write(mods.join("vsock.ko"), b"vsock").unwrap();
    std::fs::write(mods.join("vmw_vsock_virtio_transport.ko"), b"transport").unwrap();
    std::fs::write(
        mods.join("load-order"),
        "vsock.ko\nvmw_vsock_virtio_transport.ko\n",
    )
    .unwrap();
    let build = |out: &std::path::Path| {
        ciel([
            "image".as_ref(),
            "build".as_ref(),
            "--enclave".as_ref(),
            enclave.as_os_str(),
            "--kernel".as_ref(),
            kernel.as_os_str(),
            "--modules".as_ref(),
            mods.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ])
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    assert_eq!(build(&a).code, 0);
    assert_eq!(build(&b).code, 0);
    for f in ["initrd", "kernel", "cmdline", "manifest.json"] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs between two builds"
        );
    }
    let initrd = std::fs::read(a.join("initrd")).unwrap();
    assert!(initrd.starts_with(b"070701"));
    // Not into a non-empty directory.
    assert_eq!(build(&a).code, 2);
    // The host can launch it.
    let run = ciel([
        "host".as_ref(),
        "launch".as_ref(),
        "--platform".as_ref(),
        "snp".as_ref(),
        "--image".as_ref(),
        a.as_os_str(),
        "--firmware".as_ref(),
        "OVMF.fd".as_ref(),
        "--dry-run".as_ref(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("kernel-hashes=on")
            && run.stdout.contains("-append 'console=ttyS0 panic=-1'"),
        "{}",
        run.stdout
    );
}

#[test]
fn gce_and_svsm_launches_from_the_command_line() {
    let dir = vector("measure/sev-snp-measure");
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    // sev-snp-measure's test_snp_gce_with_multiple_vcpus_default.
    let run = ciel([
        "image".as_ref(),
        "measure".as_ref(),
        "snp".as_ref(),
        "--ovmf".as_ref(),
        dir.join("ovmf_AmdSev_suffix.bin").as_os_str(),
        "--kernel".as_ref(),
        empty.as_os_str(),
        "--initrd".as_ref(),
        empty.as_os_str(),
        "--append".as_ref(),
        "".as_ref(),
        "--vcpus".as_ref(),
        "4".as_ref(),
        "--vmm-type".as_ref(),
        "gce".as_ref(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout.trim(),
        "5c5debf100fc339f90276e761ee1f1658d08922c3b20e2a2e6c7a6c3370b2452a15a00eae11886a93d6fd1e7ab81e29d"
    );
    // test_snp_svsm_2_vcpus.
    let svsm = |vars: &str| {
        ciel([
            "image".as_ref(),
            "measure".as_ref(),
            "snp".as_ref(),
            "--ovmf".as_ref(),
            dir.join("svsm_ovmf.fd").as_os_str(),
            "--svsm".as_ref(),
            dir.join("svsm.bin").as_os_str(),
            "--ovmf-vars-size".as_ref(),
            vars.as_ref(),
            "--vcpus".as_ref(),
            "2".as_ref(),
            "--vcpu-type".as_ref(),
            "EPYC-v4".as_ref(),
            "--guest-features".as_ref(),
            "0x21".as_ref(),
        ])
    };
    let run = svsm("540672");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout.trim(),
        "9b94745036aafddf4f7f8b00c7513abb5b7703178cb95aaa57928bd963d68d3bfcb715d6019b9167ee2517b11b0d9be7"
    );
    // Another variable-store size moves the SVSM, and so the digest.
    let moved = svsm("528384");
    assert_eq!(moved.code, 0, "{}", moved.stderr);
    assert_ne!(moved.stdout, run.stdout);
    // A store that leaves no room below 4 GiB is an error, not a digest.
    let absurd = svsm("5000000000");
    assert_eq!(absurd.code, 2, "{}", absurd.stdout);
    assert!(
        absurd.stderr.contains("ovmf-vars-size"),
        "{}",
        absurd.stderr
    );
}

#[test]
fn tdx_measure_needs_an_input_and_names_a_bad_tdvf() {
    let run = ciel(["image", "measure", "tdx"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("--ccel") && run.stderr.contains("--tdvf"),
        "{}",
        run.stderr
    );

    // The last 4 KiB of a real OVMF: its TDVF metadata names firmware
    // volumes that are not there.
    let suffix = vector("measure/sev-snp-measure/ovmf_AmdSev_suffix.bin");
    let run = ciel([
        "image".as_ref(),
        "measure".as_ref(),
        "tdx".as_ref(),
        "--tdvf".as_ref(),
        suffix.as_os_str(),
    ]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stderr.contains("ovmf_AmdSev_suffix.bin") && run.stderr.contains("TDVF metadata"),
        "{}",
        run.stderr
    );
}

#[test]
fn mrtd_from_a_tdvf_becomes_a_policy_that_a_matching_quote_satisfies() {
    // The synthetic TDVF the ovmf fuzz target starts from (no real TDVF
    // with a known MRTD is among the shared vectors; the value itself is
    // checked against the definition in images/tests/tdvf.rs).
    let tdvf = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus/ovmf/synthetic-tdvf.bin");
    let tmp = tempfile::tempdir().unwrap();
    let rv = tmp.path().join("rv.json");
    let run = ciel([
        "image".as_ref(),
        "measure".as_ref(),
        "tdx".as_ref(),
        "--tdvf".as_ref(),
        tdvf.as_os_str(),
        "--json".as_ref(),
        "--reference-values".as_ref(),
        rv.as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mrtd_hex = run.json()["mrtd"].as_str().unwrap().to_string();

    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&rv).unwrap()).unwrap();
    assert_eq!(doc["tdx"]["mrtd"][0], mrtd_hex.as_str());
    let under_policy = simulated_td_under(&rv);
    let verdict = |mrtd| {
        under_policy(SimTdxQuote {
            mrtd,
            ..Default::default()
        })
    };
    let mut mrtd: [u8; 48] = hex::decode(&mrtd_hex).unwrap().try_into().unwrap();
    let v = verdict(mrtd);
    assert!(v.accepted, "{:?}", v.reasons);
    mrtd[0] ^= 1;
    assert!(verdict(mrtd).has(ReasonKind::MeasurementNotAllowed));
}

/// `ciel image init-data --reference-values`: a policy that accepts a TD
/// launched with that init-data (its MRCONFIGID) and no other; the same
/// document's HOST_DATA for SEV-SNP.
#[test]
fn init_data_becomes_reference_values_that_pin_the_launch_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let doc = tmp.path().join("initdata.toml");
    let text = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"ciel.toml\" = \"kbs = 'https://kbs:8443'\\n\"\n";
    std::fs::write(&doc, text).unwrap();
    let rv = tmp.path().join("rv.json");
    let run = ciel([
        "image".as_ref(),
        "init-data".as_ref(),
        doc.as_os_str(),
        "--json".as_ref(),
        "--reference-values".as_ref(),
        rv.as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let digest = ring::digest::digest(&ring::digest::SHA384, text.as_bytes());
    let out = run.json();
    assert_eq!(out["tdx_mrconfigid"], hex::encode(digest.as_ref()));
    assert_eq!(out["snp_host_data"], hex::encode(&digest.as_ref()[..32]));
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&rv).unwrap()).unwrap();
    assert_eq!(written["snp"]["host_data"][0], out["snp_host_data"]);

    let verdict = simulated_td_under(&rv);
    let mut mrconfigid = [0u8; 48];
    mrconfigid.copy_from_slice(digest.as_ref());
    let v = verdict(SimTdxQuote {
        mrconfigid,
        ..Default::default()
    });
    assert!(v.accepted, "{:?}", v.reasons);
    // Launched with other init-data (or none): refused.
    let v = verdict(SimTdxQuote::default());
    assert!(!v.accepted);

    // The annotation Kata takes is the document, gzip then base64.
    let annotation = out["annotation"][ciel_protocol::initdata::KATA_ANNOTATION]
        .as_str()
        .unwrap();
    use base64::Engine;
    let gz = base64::engine::general_purpose::STANDARD
        .decode(annotation)
        .unwrap();
    let mut back = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut back).unwrap();
    assert_eq!(back, text);
}
