//! Policy documents (TOML and JSON).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = ciel_attestation::Policy::from_toml(s);
        let _ = ciel_attestation::Policy::from_json(s);
    }
});
