//! Key broker protocol bodies, and the evidence documents inside them.
#![no_main]
use ciel_protocol::kbs::{Attestation, Challenge, Request};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<Request>(data);
    let _ = serde_json::from_slice::<Challenge>(data);
    if let Ok(a) = serde_json::from_slice::<Attestation>(data) {
        let _ = ciel_protocol::binding::report_data(&a.runtime_data);
        for tee in ["snp", "tdx", "other"] {
            let _ = ciel_attestation::tee_evidence::decode(tee, &a.tee_evidence, None);
        }
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = ciel_protocol::jcs::canonicalize(&v);
    }
});
