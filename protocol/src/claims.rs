//! The runtime-claims document: what a serving guest says about itself,
//! bound into its attestation evidence.
//!
//! The guest writes one [`RuntimeClaims`] at boot (its TLS key, the model
//! it loaded, its version and platform) and asks the platform for evidence
//! whose 64-byte `report_data` is [`RuntimeClaims::report_data`]: SHA-512 of
//! the document's RFC 8785 canonical JSON. A client that verifies the
//! evidence and recomputes that hash knows the claims come from the attested
//! guest; comparing `tls_spki_sha256` with the certificate of its TLS session
//! proves it talks to that guest and nobody in between.
//!
//! The [`AttestationDocument`] (claims + evidence + what is needed to verify
//! it offline) travels in two places: an X.509 extension of the guest's TLS
//! certificate ([`EXTENSION_OID`], see [`encode_extension`]) and the body of
//! `GET /v1/attestation?nonce=HEX`, where the claims carry the client's
//! nonce so the evidence is fresh.

use crate::jcs;
use serde::{Deserialize, Serialize};

/// The document version this code writes and accepts.
pub const CLAIMS_VERSION: u32 = 1;

/// The certificate extension carrying an [`AttestationDocument`]:
/// `1.3.6.1.3.7390768.1` (provisional, in the IANA "experimental" arc,
/// until ciel has a private enterprise number; arcs are kept within `u32`
/// so every X.509 library can name it). Not critical: generic TLS clients
/// ignore it, ciel clients require it.
pub const EXTENSION_OID: &[u64] = &[1, 3, 6, 1, 3, 7390768, 1];

/// The same OID in dotted form.
pub const EXTENSION_OID_STR: &str = "1.3.6.1.3.7390768.1";

/// Largest document accepted (8 MiB): evidence with a certificate chain
/// is about 10 KiB, a TDX quote's collateral about 30 KiB, but each GPU
/// adds its report, chain, OCSP responses and two RIMs (NVIDIA's are ~20 KB
/// each, ~27 KB in base64): about 75 KB a GPU, 600 KB for an eight-GPU
/// board, 4.8 MB at the 64 GPUs a document may list.
pub const MAX_DOCUMENT: usize = 8 << 20;

/// The model a guest serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelClaims {
    /// The model's name as clients ask for it (`/v1/models`).
    pub name: String,
    /// SHA-256 of the plaintext weights (hex), as the sealed header states
    /// and as the guest recomputed while loading.
    pub sha256: String,
}

/// One GPU the guest attested with (its report is in the document's
/// `gpu_evidence`; `evidence_sha256` binds the two).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuClaims {
    /// The GPU's place in the document's `gpu_evidence` list.
    pub index: u32,
    pub uuid: String,
    /// `HOPPER`, `BLACKWELL` (NVML's spelling).
    pub arch: String,
    /// The driver and VBIOS versions the signed report states.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vbios: Option<String>,
    /// SHA-256 (hex) of the report exactly as the GPU returned it.
    pub evidence_sha256: String,
    /// The confidential-computing mode NVML reported (`on`, `off`,
    /// `devtools`): not signed by the GPU, believed because the CPU
    /// evidence binds these claims.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cc_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected_pcie: Option<bool>,
}

/// What the guest claims; hashed into the evidence's `report_data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeClaims {
    pub version: u32,
    /// The TEE the evidence comes from: `snp` or `tdx`.
    pub platform: String,
    /// The guest runtime, e.g. `ciel-enclave 0.1.0`.
    pub runtime: String,
    /// SHA-256 (hex) of the DER SubjectPublicKeyInfo of the guest's TLS key.
    pub tls_spki_sha256: String,
    pub model: ModelClaims,
    /// The sentence-embedding model it also serves (`/v1/embeddings`), if
    /// any. Absent, the claims (and so their hash) are as before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<ModelClaims>,
    /// The client's nonce (hex) when the evidence was made on request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The GPUs attested with the CPU, each report carrying
    /// [`RuntimeClaims::gpu_nonce`]. Absent on a guest without GPUs (its
    /// claims, and so their hash, are as before GPUs existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuClaims>,
    /// When the evidence was made, in seconds since the Unix epoch by the
    /// guest's clock (which the host can skew: a client that needs to know
    /// asks for fresh, nonce-bound evidence). Clients hold it to their
    /// policy's `max_evidence_age_seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<u64>,
}

/// Why a claims document or extension was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimsError {
    #[error("attestation document is {0} bytes, more than the {MAX_DOCUMENT}-byte limit")]
    TooLarge(usize),
    #[error("attestation extension at byte {offset}: {message}")]
    Der {
        offset: usize,
        message: &'static str,
    },
    #[error("attestation document: {0}")]
    Json(String),
    #[error("attestation document version {0} is not supported (expected {CLAIMS_VERSION})")]
    Version(u32),
    #[error("claims cannot be canonicalized: {0}")]
    Canonical(String),
}

impl RuntimeClaims {
    /// The evidence's `report_data`: SHA-512 of the canonical JSON.
    pub fn report_data(&self) -> Result<[u8; 64], ClaimsError> {
        let value =
            serde_json::to_value(self).map_err(|e| ClaimsError::Canonical(e.to_string()))?;
        let text = jcs::canonicalize(&value).map_err(|e| ClaimsError::Canonical(e.to_string()))?;
        let digest = ring::digest::digest(&ring::digest::SHA512, text.as_bytes());
        let mut out = [0u8; 64];
        out.copy_from_slice(digest.as_ref());
        Ok(out)
    }

    /// The same claims with a client's nonce, for fresh evidence (and no
    /// GPUs: fresh GPU reports are asked for with the new claims' nonce).
    pub fn with_nonce(&self, nonce: &[u8]) -> RuntimeClaims {
        RuntimeClaims {
            nonce: Some(hex::encode(nonce)),
            gpus: Vec::new(),
            ..self.clone()
        }
    }

    /// Whether `other` describes the same guest: the same claims but for
    /// the client's nonce, when the evidence was made, and the GPU reports'
    /// digests (fresh evidence holds fresh reports of the same GPUs).
    pub fn same_guest(&self, other: &RuntimeClaims) -> bool {
        let identity = |c: &RuntimeClaims| RuntimeClaims {
            nonce: None,
            issued_at: None,
            gpus: c
                .gpus
                .iter()
                .map(|g| GpuClaims {
                    evidence_sha256: String::new(),
                    ..g.clone()
                })
                .collect(),
            ..c.clone()
        };
        identity(self) == identity(other)
    }

    /// The nonce every GPU report bound into these claims carries: the
    /// first 32 bytes of the `report_data` of the same claims without
    /// GPUs. The claims cannot hold the digests of reports that carry
    /// their own hash, so the reports carry the hash of everything else:
    /// the TLS key (fresh at every boot) and the client's nonce, if any;
    /// the CPU evidence then binds the reports' digests.
    pub fn gpu_nonce(&self) -> Result<[u8; 32], ClaimsError> {
        let without = RuntimeClaims {
            gpus: Vec::new(),
            ..self.clone()
        };
        let full = without.report_data()?;
        let mut out = [0u8; 32];
        out.copy_from_slice(full.get(..32).unwrap_or(&[0u8; 32]));
        Ok(out)
    }
}

/// Claims, the evidence bound to them and its collateral: everything a
/// client needs to verify offline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationDocument {
    pub claims: RuntimeClaims,
    /// `snp` or `tdx`: how to read `evidence`.
    pub tee: String,
    /// A `tee-evidence` document in the shape the key broker accepts
    /// (SNP: `{report, vcek, cert_chain}`; TDX: `{quote, collateral}`).
    pub evidence: serde_json::Value,
    /// The VM's init-data (Kata Confidential Containers), exactly as the
    /// host was given it, when the guest was configured by one: the
    /// evidence's `HOST_DATA` / `MRCONFIGID` binds it
    /// ([`crate::initdata`]), so a client may believe its entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_data: Option<String>,
    /// Every GPU's report, certificate chain and stapled collateral, in
    /// Trustee's NVIDIA device-list shape (`{"device_evidence_list":
    /// [...]}`), in the order of the claims' `gpus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_evidence: Option<serde_json::Value>,
}

impl AttestationDocument {
    /// Parses and size-checks a JSON document.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ClaimsError> {
        if bytes.len() > MAX_DOCUMENT {
            return Err(ClaimsError::TooLarge(bytes.len()));
        }
        let doc: AttestationDocument =
            serde_json::from_slice(bytes).map_err(|e| ClaimsError::Json(e.to_string()))?;
        if doc.claims.version != CLAIMS_VERSION {
            return Err(ClaimsError::Version(doc.claims.version));
        }
        Ok(doc)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings and JSON values cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The extension's value: a DER OCTET STRING holding the document's JSON.
pub fn encode_extension(doc: &AttestationDocument) -> Result<Vec<u8>, ClaimsError> {
    let body = doc.to_json();
    if body.len() > MAX_DOCUMENT {
        return Err(ClaimsError::TooLarge(body.len()));
    }
    let mut out = vec![0x04];
    let len = body.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        let significant = bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads the extension's value back (strict DER: definite, minimal length,
/// nothing after the OCTET STRING).
pub fn decode_extension(der: &[u8]) -> Result<AttestationDocument, ClaimsError> {
    let bad = |offset, message| ClaimsError::Der { offset, message };
    if der.first() != Some(&0x04) {
        return Err(bad(0, "expected an OCTET STRING"));
    }
    let first = *der.get(1).ok_or(bad(1, "missing length"))?;
    let (len, header) = if first < 0x80 {
        (first as usize, 2usize)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return Err(bad(1, "unsupported length encoding"));
        }
        let header = n.saturating_add(2); // n <= 4
        let bytes = der.get(2..header).ok_or(bad(2, "truncated length"))?;
        if bytes.first() == Some(&0) {
            return Err(bad(2, "non-minimal length"));
        }
        let len = bytes.iter().fold(0usize, |acc, &b| (acc << 8) | b as usize);
        if len < 0x80 {
            return Err(bad(2, "non-minimal length"));
        }
        (len, header)
    };
    if len > MAX_DOCUMENT {
        return Err(ClaimsError::TooLarge(len));
    }
    let end = header
        .checked_add(len)
        .ok_or(bad(header, "length overflow"))?;
    let body = der.get(header..end).ok_or(bad(der.len(), "truncated"))?;
    if end != der.len() {
        return Err(bad(end, "bytes after the OCTET STRING"));
    }
    AttestationDocument::from_json(body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn claims() -> RuntimeClaims {
        RuntimeClaims {
            version: CLAIMS_VERSION,
            platform: "snp".into(),
            runtime: "ciel-enclave 0.1.0".into(),
            tls_spki_sha256: "ab".repeat(32),
            model: ModelClaims {
                name: "smollm2".into(),
                sha256: "cd".repeat(32),
            },
            embedding_model: None,
            nonce: None,
            gpus: Vec::new(),
            issued_at: None,
        }
    }

    #[test]
    fn report_data_is_sha512_of_the_canonical_json() {
        let c = claims();
        let canonical = format!(
            r#"{{"model":{{"name":"smollm2","sha256":"{}"}},"platform":"snp","runtime":"ciel-enclave 0.1.0","tls_spki_sha256":"{}","version":1}}"#,
            "cd".repeat(32),
            "ab".repeat(32)
        );
        let expected = ring::digest::digest(&ring::digest::SHA512, canonical.as_bytes());
        assert_eq!(&c.report_data().unwrap()[..], expected.as_ref());
        let fresh = c.with_nonce(&[1, 2]);
        assert_eq!(fresh.nonce.as_deref(), Some("0102"));
        assert_ne!(fresh.report_data().unwrap(), c.report_data().unwrap());
    }

    #[test]
    fn gpus_are_bound_but_their_nonce_is_the_claims_without_them() {
        let c = claims();
        let mut with_gpu = c.clone();
        with_gpu.gpus.push(GpuClaims {
            index: 0,
            uuid: "GPU-1".into(),
            arch: "HOPPER".into(),
            driver: Some("550.90.07".into()),
            vbios: None,
            evidence_sha256: "ef".repeat(32),
            cc_mode: Some("on".into()),
            protected_pcie: None,
        });
        assert_ne!(with_gpu.report_data().unwrap(), c.report_data().unwrap());
        let nonce = with_gpu.gpu_nonce().unwrap();
        assert_eq!(nonce, c.gpu_nonce().unwrap());
        assert_eq!(&nonce[..], &c.report_data().unwrap()[..32]);
        // Another TLS key or another client nonce: another GPU nonce.
        assert_ne!(c.with_nonce(&[7; 8]).gpu_nonce().unwrap(), nonce);
        let mut other_key = c.clone();
        other_key.tls_spki_sha256 = "00".repeat(32);
        assert_ne!(other_key.gpu_nonce().unwrap(), nonce);
        assert!(with_gpu.with_nonce(&[1]).gpus.is_empty());
        // Fresh reports of the same GPUs are the same guest; other GPUs not.
        let mut fresh = with_gpu.with_nonce(&[9; 8]);
        fresh.gpus = with_gpu.gpus.clone();
        fresh.gpus[0].evidence_sha256 = "01".repeat(32);
        assert!(fresh.same_guest(&with_gpu));
        fresh.gpus[0].uuid = "GPU-2".into();
        assert!(!fresh.same_guest(&with_gpu));
        assert!(!c.same_guest(&with_gpu));
    }

    #[test]
    fn an_eight_gpu_document_fits_and_the_bound_holds() {
        // About 75 KB of evidence a GPU (report, chain, OCSP, two RIMs).
        let doc = AttestationDocument {
            claims: claims(),
            tee: "snp".into(),
            evidence: serde_json::json!({"report": "AAAA"}),
            init_data: None,
            gpu_evidence: Some(
                serde_json::json!({"device_evidence_list": vec!["A".repeat(75_000); 8]}),
            ),
        };
        let json = doc.to_json();
        assert!(json.len() > 600_000);
        assert_eq!(AttestationDocument::from_json(&json).unwrap(), doc);
        let over = vec![b' '; MAX_DOCUMENT + 1];
        assert_eq!(
            AttestationDocument::from_json(&over),
            Err(ClaimsError::TooLarge(MAX_DOCUMENT + 1))
        );
    }

    #[test]
    fn extension_round_trips_and_rejects_bad_der() {
        let doc = AttestationDocument {
            claims: claims(),
            tee: "snp".into(),
            evidence: serde_json::json!({"report": "AAAA"}),
            init_data: Some("version = \"0.1.0\"\n".into()),
            gpu_evidence: Some(serde_json::json!({"device_evidence_list": []})),
        };
        let der = encode_extension(&doc).unwrap();
        assert_eq!(decode_extension(&der).unwrap(), doc);
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(matches!(
            decode_extension(&trailing),
            Err(ClaimsError::Der { .. })
        ));
        for cut in 0..der.len() {
            assert!(decode_extension(&der[..cut]).is_err(), "cut at {cut}");
        }
        let mut wrong_tag = der.clone();
        wrong_tag[0] = 0x0c;
        assert!(decode_extension(&wrong_tag).is_err());
        let mut v2 = doc.clone();
        v2.claims.version = 2;
        assert_eq!(
            decode_extension(&encode_extension(&v2).unwrap()),
            Err(ClaimsError::Version(2))
        );
    }
}
