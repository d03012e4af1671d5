//! DCAP collateral JSON.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ciel_attestation::collateral::DcapCollateral::from_json(data);
});
