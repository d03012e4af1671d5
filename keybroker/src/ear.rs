//! The attestation token `/attest` returns, as Trustee issues it: an EAR
//! (Entity Attestation Result, draft-fv-rats-ear) JWT signed by the broker
//! with ES256, its public key in the header's `jwk`, one submodule per
//! attested TEE (`cpu0`) whose annotated evidence carries the runtime data
//! (`tee-pubkey`, `nonce`) at the path Trustee's token verifier reads
//! (`/submods/cpu0/ear.veraison.annotated-evidence/runtime_data_claims/tee-pubkey`).
//! Trustee-style clients can therefore parse its expiry and present it as
//! `Authorization: Bearer`; the broker itself recognises the exact token it
//! issued for a session and never trusts claims read back from one.
//!
//! The signing key is generated when the broker starts: tokens live no
//! longer than the in-memory sessions they stand for.

use crate::session::SessionEvidence;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ciel_protocol::kbs::Jwk;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

/// The EAR profile Trustee and Veraison use.
pub const EAR_PROFILE: &str = "tag:github.com,2023:veraison/ear";

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EarError {
    #[error("EAR signing key: {0}")]
    Key(String),
    #[error("signing the EAR token failed")]
    Sign,
    #[error("EAR claims: {0}")]
    Claims(#[from] serde_json::Error),
    #[error("EAR token: {0}")]
    Token(String),
}

/// What one token says.
#[derive(Debug)]
pub struct Appraisal<'a> {
    pub evidence: &'a SessionEvidence,
    pub nonce: &'a str,
    pub tee_pubkey: &'a Jwk,
    /// Issued at and expiry (Unix seconds).
    pub iat: u64,
    pub exp: u64,
    /// The verdict's parsed claims of the evidence (measurement, TCB, …),
    /// carried in the annotated evidence under the platform's name.
    pub evidence_claims: Option<Value>,
    /// Each GPU's verdict and claims (`gpu0`, `gpu1`, … submodules).
    pub gpu_claims: Vec<Value>,
    /// Init-data the evidence was checked to bind: its digest and entries
    /// join the token (`init_data`, `init_data_claims`, Trustee's names).
    pub init_data: Option<&'a ciel_protocol::initdata::InitData>,
}

/// The broker's token signer (ES256, P-256).
pub struct EarSigner {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    jwk: Value,
}

impl std::fmt::Debug for EarSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EarSigner")
            .field("jwk", &self.jwk)
            .finish_non_exhaustive()
    }
}

impl EarSigner {
    /// A fresh signing key.
    pub fn generate() -> Result<Self, EarError> {
        Self::from_pkcs8(&Self::generate_pkcs8()?)
    }

    /// A fresh P-256 private key as PKCS#8 (replicas share one, sealed in
    /// their shared store, so any replica's token verifies with one JWK).
    pub fn generate_pkcs8() -> Result<zeroize::Zeroizing<Vec<u8>>, EarError> {
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map(|d| zeroize::Zeroizing::new(d.as_ref().to_vec()))
            .map_err(|_| EarError::Key("generation failed".into()))
    }

    /// The signer for a P-256 private key in PKCS#8.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, EarError> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|e| EarError::Key(e.to_string()))?;
        // An uncompressed SEC1 point: 0x04 ‖ x ‖ y, 32 bytes each.
        let point = key.public_key().as_ref();
        let (x, y) = match (point.get(1..33), point.get(33..65)) {
            (Some(x), Some(y)) if point.len() == 65 => (x, y),
            _ => return Err(EarError::Key("unexpected public key encoding".into())),
        };
        let jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "alg": "ES256",
            "x": B64.encode(x),
            "y": B64.encode(y),
        });
        Ok(EarSigner { key, rng, jwk })
    }

    /// The public key tokens are signed with, as a JWK.
    pub fn public_jwk(&self) -> &Value {
        &self.jwk
    }

    /// The claims of a token this signer issued (ES256 under this key);
    /// any other token is an error.
    pub fn verify(&self, token: &str) -> Result<Value, EarError> {
        let bad = |m: &str| EarError::Token(m.to_string());
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("not three dot-separated parts"));
        };
        let sig = B64
            .decode(sig)
            .map_err(|_| bad("signature not base64url"))?;
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        )
        .verify(format!("{header}.{claims}").as_bytes(), &sig)
        .map_err(|_| bad("signature does not verify with this broker's key"))?;
        let claims = B64
            .decode(claims)
            .map_err(|_| bad("claims not base64url"))?;
        Ok(serde_json::from_slice(&claims)?)
    }

    /// A signed EAR token for an accepted `/attest`, and its claims.
    pub fn issue(&self, a: &Appraisal<'_>) -> Result<(String, Value), EarError> {
        let header = json!({ "alg": "ES256", "typ": "JWT", "jwk": self.jwk });
        let claims = claims(a);
        let signing_input = format!(
            "{}.{}",
            B64.encode(serde_json::to_vec(&header)?),
            B64.encode(serde_json::to_vec(&claims)?)
        );
        let sig = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| EarError::Sign)?;
        Ok((
            format!("{signing_input}.{}", B64.encode(sig.as_ref())),
            claims,
        ))
    }
}

/// The EAR claims for one appraisal.
fn claims(a: &Appraisal<'_>) -> Value {
    let (platform, measurement, sha256, status, hardware) = match a.evidence {
        SessionEvidence::Verified(d) => (
            d.platform(),
            d.evidence.measurement(),
            Some(d.sha256.clone()),
            // Checked at /attest: the evidence's signature chain to a
            // vendor root the policy trusts. Measurements are the resource
            // policies' (checked again at each release).
            "affirming",
            2,
        ),
        // Unsigned: nothing about the hardware is known (EAR's "no claim"
        // is 0; "warning" so that no policy reads it as affirmed).
        SessionEvidence::Sample(s) => (
            "sample".to_string(),
            Some(format!("svn {}", s.svn)),
            None,
            "warning",
            0,
        ),
    };
    let mut claims = json!({
        "eat_profile": EAR_PROFILE,
        "iat": a.iat,
        "exp": a.exp,
        "iss": "ciel-keybroker",
        "ear.verifier-id": {
            "developer": "ciel",
            "build": concat!("ciel-keybroker ", env!("CARGO_PKG_VERSION")),
        },
        "submods": {
            "cpu0": {
                "ear.status": status,
                "ear.trustworthiness-vector": { "hardware": hardware },
                "ear.appraisal-policy-id": "ciel:attest",
                "ear.veraison.annotated-evidence": {
                    "platform": platform,
                    "measurement": measurement,
                    "evidence_sha256": sha256,
                    "runtime_data_claims": {
                        "nonce": a.nonce,
                        "tee-pubkey": a.tee_pubkey,
                    },
                },
            },
        },
    });
    if let Some(evidence_claims) = &a.evidence_claims {
        claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"][platform.as_str()] =
            evidence_claims.clone();
    }
    for (i, gpu) in a.gpu_claims.iter().enumerate() {
        claims["submods"][format!("gpu{i}")] = json!({
            "ear.status": "affirming",
            "ear.trustworthiness-vector": { "hardware": 2 },
            "ear.appraisal-policy-id": "ciel:attest",
            "ear.veraison.annotated-evidence": { "nvidia": gpu },
        });
    }
    if let Some(init) = a.init_data {
        let annotated = &mut claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"];
        annotated["init_data"] = hex::encode(init.digest()).into();
        annotated["init_data_claims"] = json!(init.entries());
    }
    claims
}
