//! Any bytes as evidence: detection, parsing and verification never panic.
#![no_main]
use ciel_attestation::{Collateral, Evidence, Policy, UnixTime, verify};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(e) = Evidence::parse(data) {
        let _ = e.report_data();
        let _ = e.measurement();
        let v = verify(&e, &Collateral::default(), &Policy::authenticity_only(), UnixTime(1_759_305_600));
        assert!(!v.accepted, "evidence without collateral must never be accepted");
    }
});
