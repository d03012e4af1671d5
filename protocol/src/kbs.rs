//! Trustee KBS attestation protocol v0.4.0 (RCAR: Request, Challenge,
//! Attestation, Response) message bodies, with the field names Trustee
//! uses on the wire. See Trustee's `kbs/docs/kbs_attestation_protocol.md`.

use serde::{Deserialize, Serialize};

/// The protocol version we speak.
pub const PROTOCOL_VERSION: &str = "0.4.0";

/// `POST /kbs/v0/auth` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub version: String,
    /// "snp", "tdx", "sample", ...
    pub tee: String,
    #[serde(rename = "extra-params", default)]
    pub extra_params: serde_json::Value,
}

/// `POST /kbs/v0/auth` response body (the cookie carries the session).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub nonce: String,
    #[serde(rename = "extra-params", default)]
    pub extra_params: serde_json::Value,
}

/// A public key in JWK form (RFC 7517), as the TEE sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

impl Jwk {
    /// An EC P-256 public key (base64url coordinates), for ECDH-ES+A256KW:
    /// its `alg` says so, as Trustee's KBS requires of a TEE key (it
    /// refuses to encrypt to an EC key with any other `alg`).
    pub fn ec_p256(x: String, y: String) -> Self {
        Jwk {
            kty: "EC".into(),
            alg: Some("ECDH-ES+A256KW".into()),
            crv: Some("P-256".into()),
            x: Some(x),
            y: Some(y),
            n: None,
            e: None,
        }
    }
}

/// What the TEE binds into its evidence's `report_data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeData {
    pub nonce: String,
    #[serde(rename = "tee-pubkey")]
    pub tee_pubkey: Jwk,
}

/// `POST /kbs/v0/attest` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    #[serde(rename = "runtime-data")]
    pub runtime_data: RuntimeData,
    /// Platform evidence, a JSON document in the shape of the TEE's Trustee verifier.
    #[serde(rename = "tee-evidence")]
    pub tee_evidence: serde_json::Value,
    /// The pod's init-data (Kata Confidential Containers), which the
    /// evidence's `HOST_DATA` / `MRCONFIGID` must bind.
    #[serde(rename = "init-data", default, skip_serializing_if = "Option::is_none")]
    pub init_data: Option<crate::initdata::InitDataDocument>,
}

/// `POST /kbs/v0/attest` response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationToken {
    pub token: String,
}

/// An RFC 7807 problem document, the body of every KBS error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub detail: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn trustee_shaped_messages_round_trip() {
        // Shapes from Trustee's protocol document.
        let req: Request =
            serde_json::from_str(r#"{"version":"0.4.0","tee":"snp","extra-params":""}"#).unwrap();
        assert_eq!(req.tee, "snp");
        let att: Attestation = serde_json::from_str(
            r#"{"runtime-data":{"nonce":"abc","tee-pubkey":{"kty":"EC","crv":"P-256","alg":"ES256","x":"X","y":"Y"}},"tee-evidence":{"report":"..."}}"#,
        )
        .unwrap();
        assert_eq!(att.runtime_data.tee_pubkey.crv.as_deref(), Some("P-256"));
        let back: Attestation =
            serde_json::from_str(&serde_json::to_string(&att).unwrap()).unwrap();
        assert_eq!(back, att);
        assert!(
            serde_json::from_str::<Request>(r#"{"version":"0.4.0","tee":"snp","bogus":1}"#)
                .is_err()
        );
    }
}
