//! RTMR replay matches every expected value in the shared Trustee vectors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use ciel_images::ccel::replay;
use std::path::PathBuf;

fn dir() -> PathBuf {
    std::env::var_os("CIEL_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"))
        .join("measure/trustee-eventlog")
}

#[test]
fn every_expected_rtmr_is_reproduced() {
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir().join("expected_rtmrs.json")).unwrap()).unwrap();
    let cases = expected.as_object().unwrap();
    assert_eq!(cases.len(), 5);
    for (name, case) in cases {
        let log = std::fs::read(dir().join(name)).unwrap();
        let r = replay(&log).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want: Vec<&str> = case["expected_rtmr0_3"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let got: Vec<String> = r.rtmr.iter().map(hex::encode).collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn event_digests_match_trustees_parse() {
    for name in ["CCEL_data_ovmf", "CCEL_data_grub"] {
        let log = std::fs::read(dir().join(name)).unwrap();
        let out: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir().join(format!("{name}_out.json"))).unwrap())
                .unwrap();
        let theirs = out["uefi_event_logs"].as_array().unwrap();
        let ours = replay(&log).unwrap().events;
        // Trustee's list omits the Spec ID header event, as ours does.
        assert_eq!(ours.len(), theirs.len(), "{name}");
        for (a, b) in ours.iter().zip(theirs) {
            assert_eq!(
                u64::from(a.mr_index),
                b["index"].as_u64().unwrap(),
                "{name}"
            );
            assert_eq!(
                hex::encode(a.sha384.unwrap()),
                b["digests"][0]["digest"].as_str().unwrap(),
                "{name}"
            );
        }
    }
}

#[test]
fn truncated_logs_fail_with_an_offset() {
    let log = std::fs::read(dir().join("CCEL_data_grub")).unwrap();
    let full = replay(&log).unwrap();
    let last = full.events.last().unwrap().offset;
    let err = replay(&log[..last + 30]).unwrap_err().to_string();
    assert!(err.contains("offset"), "{err}");
    for cut in (0..last).step_by(97) {
        let _ = replay(&log[..cut]);
    }
}
