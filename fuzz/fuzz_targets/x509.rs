//! Certificates (DER or PEM bundles) from untrusted sources.
#![no_main]
use ciel_attestation::x509::Cert;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(certs) = Cert::parse_bundle(data) {
        for c in &certs {
            let _ = c.subject();
            let _ = c.common_name();
            let _ = c.ec_curve();
            let _ = c.verify_signed_by(c, "fuzz");
            let _ = c.check_validity(ciel_attestation::UnixTime(0), "fuzz");
        }
    }
});
