//! Binding a key-release session into attestation evidence, exactly as
//! Trustee's KBS checks it: `report_data = SHA-384(JCS(runtime-data))`,
//! zero-padded to 64 bytes, where runtime-data is `{nonce, tee-pubkey}`.
//!
//! Evidence gathered through a text-only interface carries the same value
//! in its [`text_form`]: the Confidential Containers attestation agent's
//! REST API (`/aa/evidence?runtime_data=…`) takes `runtime_data` as a URL
//! query string, decodes it as UTF-8 (replacing bytes that are not) and
//! signs those bytes, so raw digests do not survive it. The text form is
//! base64url (no padding) of the value's first 48 bytes: 64 ASCII bytes,
//! exactly a `report_data`. Verifiers accept either form
//! ([`matching_form`]): both are functions of the one expected value, and no
//! text form (ASCII, never NUL) equals a raw form padded with zeros or,
//! for SHA-512 values, anything but by a hash collision.

use crate::jcs::{JcsError, canonicalize};
use crate::kbs::RuntimeData;

/// The 64-byte `report_data` that binds `runtime` into evidence.
pub fn report_data(runtime: &RuntimeData) -> Result<[u8; 64], JcsError> {
    padded_digest(
        &serde_json::to_value(runtime).map_err(|e| JcsError::NonIntegerNumber(e.to_string()))?,
    )
}

/// The nonce every GPU report of the session carries (Trustee's rule): the
/// first 32 bytes of the binding of `{nonce, tee-pubkey}` alone. The CPU
/// evidence binds the GPU evidence itself (through the
/// `additional-evidence` string, [`report_data_with_additional`]), so the
/// GPUs need only the session.
pub fn device_nonce(runtime: &RuntimeData) -> Result<[u8; 32], JcsError> {
    let full = report_data(runtime)?;
    let mut out = [0u8; 32];
    out.copy_from_slice(full.get(..32).unwrap_or(&[0u8; 32]));
    Ok(out)
}

/// SHA-384 of `value`'s canonical JSON, zero-padded to 64 bytes.
fn padded_digest(value: &serde_json::Value) -> Result<[u8; 64], JcsError> {
    let canonical = canonicalize(value)?;
    let digest = ring::digest::digest(&ring::digest::SHA384, canonical.as_bytes());
    let mut out = [0u8; 64];
    for (o, d) in out.iter_mut().zip(digest.as_ref()) {
        *o = *d;
    }
    Ok(out)
}

/// The binding for `runtime` as the request sent it: with Trustee's
/// composite evidence (`additional_evidence` present, even empty) the
/// additional-evidence string is bound too.
pub fn report_data_for(
    runtime: &RuntimeData,
    additional_evidence: Option<&str>,
) -> Result<[u8; 64], JcsError> {
    match additional_evidence {
        Some(a) => report_data_with_additional(runtime, a),
        None => report_data(runtime),
    }
}

/// The binding Trustee's current clients compute (kbs-types 0.15): the
/// runtime data with the `additional-evidence` string beside the nonce and
/// the key, so the primary evidence binds the devices' evidence too.
pub fn report_data_with_additional(
    runtime: &RuntimeData,
    additional_evidence: &str,
) -> Result<[u8; 64], JcsError> {
    let mut value =
        serde_json::to_value(runtime).map_err(|e| JcsError::NonIntegerNumber(e.to_string()))?;
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "additional-evidence".into(),
            serde_json::Value::String(additional_evidence.into()),
        );
    }
    padded_digest(&value)
}

/// `value` as 64 ASCII bytes: base64url, without padding, of its first 48
/// bytes (a SHA-384 digest whole; a SHA-512 digest cut to 384 bits).
pub fn text_form(value: &[u8; 64]) -> [u8; 64] {
    use base64::Engine;
    let text =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.get(..48).unwrap_or(value));
    let mut out = [0u8; 64];
    for (o, b) in out.iter_mut().zip(text.as_bytes()) {
        *o = *b;
    }
    out
}

/// The form of `expected` that `field` holds — `expected` itself or its
/// [`text_form`] — or None when it holds neither.
pub fn matching_form(field: &[u8], expected: &[u8; 64]) -> Option<[u8; 64]> {
    if field == expected.as_slice() {
        return Some(*expected);
    }
    let text = text_form(expected);
    (field == text.as_slice()).then_some(text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::kbs::Jwk;

    /// Whether `field` binds `runtime` in either form.
    fn verify(field: &[u8], runtime: &RuntimeData) -> Result<bool, JcsError> {
        Ok(matching_form(field, &report_data(runtime)?).is_some())
    }

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
        let canonical = r#"{"nonce":"n0nce","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"x-coordinate","y":"y-coordinate"}}"#;
        let d = ring::digest::digest(&ring::digest::SHA384, canonical.as_bytes());
        assert_eq!(&rd[..48], d.as_ref());
        assert_eq!(&rd[48..], &[0u8; 16]);
        assert!(verify(&rd, &r).unwrap());
        assert!(!verify(&rd, &runtime("other")).unwrap());
        assert!(!verify(&rd[..63], &r).unwrap());
    }

    #[test]
    fn trustee_composite_binding_adds_the_additional_evidence_string() {
        let r = runtime("n0nce");
        let rd = report_data_with_additional(&r, "").unwrap();
        let canonical = r#"{"additional-evidence":"","nonce":"n0nce","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"x-coordinate","y":"y-coordinate"}}"#;
        let d = ring::digest::digest(&ring::digest::SHA384, canonical.as_bytes());
        assert_eq!(&rd[..48], d.as_ref());
        assert_eq!(&rd[48..], &[0u8; 16]);
        assert_ne!(rd, report_data(&r).unwrap());
        assert_ne!(rd, report_data_with_additional(&r, "{}").unwrap());
    }

    #[test]
    fn the_text_form_is_base64url_of_48_bytes_and_binds_the_same_value() {
        let r = runtime("n0nce");
        let rd = report_data(&r).unwrap();
        let text = text_form(&rd);
        assert!(
            text.iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        );
        use base64::Engine;
        let back = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .unwrap();
        assert_eq!(back, rd[..48]);
        assert!(verify(&text, &r).unwrap());
        assert_eq!(matching_form(&text, &rd), Some(text));
        assert_eq!(matching_form(&rd, &rd), Some(rd));
        // Another session's value in text form does not bind this one.
        assert!(!verify(&text_form(&report_data(&runtime("other")).unwrap()), &r).unwrap());
        let mut flipped = text;
        flipped[63] ^= 1;
        assert_eq!(matching_form(&flipped, &rd), None);
    }
}
