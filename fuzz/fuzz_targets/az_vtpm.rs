//! Azure vTPM evidence: the JSON (both encodings), the HCL report and the
//! TPM quote inside it, verified (never a panic).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(e) = ciel_attestation::azure::AzVtpm::from_json(data) {
        let _ = e.quoted();
        let _ = e.pcrs_match_quote();
        let _ = e.hardware_report();
        let _ = ciel_attestation::azure::verify_az_vtpm(
            &e,
            &ciel_attestation::Collateral::default(),
            &ciel_attestation::Policy::authenticity_only(),
            ciel_attestation::UnixTime(1_759_305_600),
        );
    }
});
