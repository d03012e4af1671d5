//! NVIDIA RIMs from the shared vectors: genuine ones verify at a time their
//! signer certificates were valid; any edit breaks them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod common;
use ciel_attestation::nvidia::rim::verify_rim;
use ciel_attestation::{ReasonKind, UnixTime};
use std::path::PathBuf;

fn vectors() -> PathBuf {
    common::shared_vectors().join("gpu/nvtrust-local_gpu_verifier")
}

/// 2024-01-01T00:00:00Z: inside every RIM signer's validity (MANIFEST.md).
const AT: UnixTime = UnixTime(1_704_067_200);

fn rims() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(vectors())
        .expect("shared vectors (set CIEL_VECTORS)")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "swidtag"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_shared_rim_verifies() {
    let all = rims();
    assert!(all.len() >= 20, "found {} RIMs", all.len());
    for (name, xml) in &all {
        let rim = verify_rim(xml, AT).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!rim.measurements.is_empty(), "{name}");
    }
}

#[test]
fn rim_signers_have_expired_since() {
    let (name, xml) = &rims()[0];
    let e = verify_rim(xml, UnixTime(1_790_000_000)).unwrap_err();
    assert_eq!(e.kind, ReasonKind::CertificateExpired, "{name}: {e}");
}

#[test]
fn edited_rims_are_rejected() {
    let (name, xml) = rims()
        .into_iter()
        .find(|(n, _)| n.starts_with("1010_0200_882_96005E0001_PROD"))
        .unwrap();
    let text = String::from_utf8(xml).unwrap();
    // A golden value changed.
    let at = text.find("Hash0=\"").unwrap() + 7;
    let mut edited = text.clone().into_bytes();
    edited[at] = if edited[at] == b'0' { b'1' } else { b'0' };
    let e = verify_rim(&edited, AT).unwrap_err();
    assert_eq!(e.kind, ReasonKind::GpuRimInvalid, "{name}: {e}");
    // An entry turned inactive.
    let edited = text.replacen("active=\"True\"", "active=\"False\"", 1);
    assert_ne!(edited, text);
    assert_eq!(
        verify_rim(edited.as_bytes(), AT).unwrap_err().kind,
        ReasonKind::GpuRimInvalid
    );
    // The signature value changed.
    let at = text.find("<ds:SignatureValue>").unwrap() + 20;
    let mut edited = text.clone().into_bytes();
    edited[at] = if edited[at] == b'A' { b'B' } else { b'A' };
    assert!(verify_rim(&edited, AT).is_err());
    // Not XML, or a DTD (entity expansion) are refused.
    assert!(verify_rim(b"not xml", AT).is_err());
    assert!(verify_rim(b"<!DOCTYPE x [<!ENTITY a \"b\">]><x>&a;</x>", AT).is_err());
}
