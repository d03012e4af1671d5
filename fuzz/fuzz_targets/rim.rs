//! NVIDIA RIMs: XML parsing, canonicalization, signature and chain checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let r = ciel_attestation::nvidia::rim::verify_rim(data, ciel_attestation::UnixTime(1_704_067_200));
    // Nothing but NVIDIA's signed documents can verify.
    if let Ok(rim) = r {
        let _ = rim.measurements.len();
    }
});
