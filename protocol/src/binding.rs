//! Binding a key-release session into attestation evidence, exactly as
//! Trustee's KBS checks it: `report_data = SHA-384(JCS(runtime-data))`,
//! zero-padded to 64 bytes, where runtime-data is `{nonce, tee-pubkey}`.

use crate::jcs::{JcsError, canonicalize};
use crate::kbs::RuntimeData;

/// The 64-byte `report_data` that binds `runtime` into evidence.
pub fn report_data(runtime: &RuntimeData) -> Result<[u8; 64], JcsError> {
    let value =
        serde_json::to_value(runtime).map_err(|e| JcsError::NonIntegerNumber(e.to_string()))?;
    let canonical = canonicalize(&value)?;
    let digest = ring::digest::digest(&ring::digest::SHA384, canonical.as_bytes());
    let mut out = [0u8; 64];
    for (o, d) in out.iter_mut().zip(digest.as_ref()) {
        *o = *d;
    }
    Ok(out)
}

/// Whether `report_data` binds `runtime`. (Nothing here is secret: the
/// nonce and public key are on the wire, so a plain comparison is fine.)
pub fn verify(report_data_field: &[u8], runtime: &RuntimeData) -> Result<bool, JcsError> {
    Ok(report_data_field == report_data(runtime)?.as_slice())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::kbs::Jwk;

    fn runtime(nonce: &str) -> RuntimeData {
        RuntimeData {
            nonce: nonce.into(),
            tee_pubkey: Jwk::ec_p256("x-coordinate".into(), "y-coordinate".into()),
        }
    }

    #[test]
    fn hashes_the_canonical_json_and_pads() {
        let r = runtime("n0nce");
        let rd = report_data(&r).unwrap();
        // Computed independently: the canonical text is fixed by RFC 8785.
        let canonical = r#"{"nonce":"n0nce","tee-pubkey":{"alg":"ES256","crv":"P-256","kty":"EC","x":"x-coordinate","y":"y-coordinate"}}"#;
        let d = ring::digest::digest(&ring::digest::SHA384, canonical.as_bytes());
        assert_eq!(&rd[..48], d.as_ref());
        assert_eq!(&rd[48..], &[0u8; 16]);
        assert!(verify(&rd, &r).unwrap());
        assert!(!verify(&rd, &runtime("other")).unwrap());
        assert!(!verify(&rd[..63], &r).unwrap());
    }
}
