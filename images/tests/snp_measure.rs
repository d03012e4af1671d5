//! Every SNP case of sev-snp-measure's test suite (shared vectors) gives
//! its expected launch digest, OVMF hash, or error.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use ciel_images::snp_measure::{
    MeasureError, Ovmf, SnpLaunch, Vmm, cpu_sig, launch_digest, ovmf_hash,
};
use std::path::PathBuf;

fn dir() -> PathBuf {
    std::env::var_os("CIEL_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"))
        .join("measure/sev-snp-measure")
}

fn fixture(arg: &serde_json::Value) -> Vec<u8> {
    let s = arg.as_str().unwrap();
    let name = s
        .rsplit(['/', '\''])
        .find(|p| !p.is_empty() && *p != " ")
        .unwrap();
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn sev_snp_measure_cases() {
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir().join("test_guest_cases.json")).unwrap())
            .unwrap();
    let mut checked = 0;
    let mut svsm_cases = 0;
    let mut failures = Vec::new();
    for case in doc["cases"].as_array().unwrap() {
        let a = &case["args"];
        let name = case["test"].as_str().unwrap();
        // SEV and SEV-ES are not SNP; the VMSA dumps have no digest.
        let svsm_mode = a["mode"] == "SevMode.SEV_SNP_SVSM";
        if !(a["mode"] == "SevMode.SEV_SNP" || svsm_mode)
            || a.get("dump_vmsa").is_some_and(|d| d == true)
        {
            continue;
        }
        let ovmf = Ovmf::parse(fixture(&a["ovmf_file"])).unwrap();
        // The SVSM sits below OVMF and OVMF's variable store.
        let svsm = svsm_mode.then(|| {
            svsm_cases += 1;
            let vars = a["ovmf_vars_size"].as_u64().unwrap();
            Ovmf::parse_ending_at(fixture(&a["svsm_file"]), ovmf.gpa() - vars).unwrap()
        });
        let empty: Vec<u8> = Vec::new();
        let kernel = a["kernel"].as_str().map(|_| empty.as_slice());
        let initrd = a["initrd"].as_str().map(|_| empty.as_slice());
        let vmm = match a.get("vmm_type").and_then(|v| v.as_str()) {
            Some(v) if v.ends_with("ec2") => Vmm::Ec2,
            Some(v) if v.ends_with("gce") => Vmm::Gce,
            Some(v) if v.ends_with("QEMU") => Vmm::Qemu,
            None => Vmm::Qemu,
            Some(v) => panic!("{name}: VMM type {v}"),
        };
        let mut precomputed = None;
        if let Some(h) = a.get("snp_ovmf_hash_str").and_then(|h| h.as_str()) {
            if h.starts_with('<') {
                let ours = ovmf_hash(&ovmf);
                if let Some(want) = case.get("expected_ovmf_hash").and_then(|w| w.as_str())
                    && hex::encode(ours) != want
                {
                    failures.push(format!("{name}: ovmf hash {} != {want}", hex::encode(ours)));
                }
                precomputed = Some(ours);
            } else {
                precomputed = Some(hex::decode(h).unwrap().try_into().unwrap());
            }
        }
        let launch = SnpLaunch {
            ovmf: &ovmf,
            kernel,
            initrd,
            append: a["append"].as_str(),
            vcpus: a["vcpus"].as_u64().unwrap() as u32,
            vcpu_sig: if a["vcpu_sig"].is_null() {
                0
            } else {
                cpu_sig(23, 1, 2)
            },
            guest_features: u64::from_str_radix(
                a["guest_features"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("0x"),
                16,
            )
            .unwrap(),
            vmm,
            ovmf_hash: precomputed,
            svsm: svsm.as_ref(),
        };
        let got = launch_digest(&launch);
        match (
            case["expect_error"].as_str(),
            case["expected_launch_digest"].as_str(),
            got,
        ) {
            (Some(_), _, Err(MeasureError::NoKernelHashes)) => {}
            (None, Some(want), Ok(d)) if hex::encode(d) == want => {}
            (_, want, got) => failures.push(format!(
                "{name}: want {want:?}, got {:?}",
                got.map(hex::encode)
            )),
        }
        checked += 1;
    }
    // 17 SNP cases (2 of them GCE) and 2 SVSM cases, none left out.
    assert_eq!(checked, 19, "SNP cases checked");
    assert_eq!(svsm_cases, 2);
    assert!(
        failures.is_empty(),
        "{} of {checked} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_vcpu_count_outside_1_to_512_is_refused() {
    let ovmf = Ovmf::parse(std::fs::read(dir().join("ovmf_AmdSev_suffix.bin")).unwrap()).unwrap();
    for (vcpus, ok) in [
        (0, false),
        (1, true),
        (ciel_images::snp_measure::MAX_VCPUS, true),
        (ciel_images::snp_measure::MAX_VCPUS + 1, false),
        (u32::MAX, false),
    ] {
        let launch = SnpLaunch {
            ovmf: &ovmf,
            kernel: None,
            initrd: None,
            append: None,
            vcpus,
            vcpu_sig: cpu_sig(23, 1, 2),
            guest_features: 1,
            vmm: Vmm::Qemu,
            ovmf_hash: None,
            svsm: None,
        };
        match launch_digest(&launch) {
            Ok(_) => assert!(ok, "{vcpus} vCPUs measured"),
            Err(e) => assert!(!ok && matches!(e, MeasureError::Input(_)), "{vcpus}: {e}"),
        }
    }
}
