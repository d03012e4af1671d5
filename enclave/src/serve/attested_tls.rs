//! The guest's TLS identity: a fresh key generated at boot, never leaving
//! guest memory, and a self-signed certificate that carries the boot-time
//! attestation document in an X.509 extension
//! ([`ciel_protocol::claims::EXTENSION_OID`]), so a client verifies the
//! guest during the handshake without another round trip.

use crate::kbs_client::EvidenceSource;
use ciel_protocol::claims::{
    AttestationDocument, CLAIMS_VERSION, ModelClaims, RuntimeClaims, encode_extension,
};
use rcgen::PublicKeyData;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;

/// Why the TLS identity could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    #[error("TLS key or certificate: {0}")]
    Certificate(String),
    #[error("claims: {0}")]
    Claims(#[from] ciel_protocol::claims::ClaimsError),
    #[error("evidence from the platform: {0}")]
    Evidence(String),
}

/// The guest's TLS configuration and the claims its certificate attests.
#[derive(Debug, Clone)]
pub struct AttestedIdentity {
    pub claims: RuntimeClaims,
    /// The boot-time document (the certificate carries it, less an
    /// init-data too large for a TLS handshake).
    pub document: AttestationDocument,
    pub server_config: Arc<rustls::ServerConfig>,
}

/// The runtime's name and version, as claimed.
pub fn runtime_version() -> String {
    format!("ciel-enclave {}", env!("CARGO_PKG_VERSION"))
}

/// Produces an attestation document for `claims` from `platform`.
pub fn attest(
    platform: &dyn EvidenceSource,
    claims: RuntimeClaims,
) -> Result<AttestationDocument, IdentityError> {
    let evidence = platform
        .evidence(claims.report_data()?)
        .map_err(IdentityError::Evidence)?;
    Ok(AttestationDocument {
        claims,
        tee: platform.tee().to_string(),
        evidence,
        init_data: platform.init_data().map(|d| d.body().to_string()),
    })
}

/// The largest attestation extension the certificate carries with the
/// init-data in it. TLS clients (rustls among them) refuse handshake
/// messages over 64 KiB, and the evidence (a TDX quote's collateral is
/// ~30 KiB) and the certificate need their share.
pub const CERTIFICATE_INIT_DATA_BUDGET: usize = 40 << 10;

/// The document for the certificate: the boot document, without its
/// init-data when that would make the handshake too large (a Kata agent
/// policy can be tens of KiB). The evidence still binds the init-data's
/// digest, which a client pins in its policy; `/v1/attestation` always
/// carries the document whole.
fn certificate_document(document: &AttestationDocument) -> AttestationDocument {
    let fits = encode_extension(document).is_ok_and(|e| e.len() <= CERTIFICATE_INIT_DATA_BUDGET);
    if document.init_data.is_none() || fits {
        return document.clone();
    }
    tracing::warn!(
        budget = CERTIFICATE_INIT_DATA_BUDGET,
        "the init-data is too large for the TLS certificate: it is served at /v1/attestation only"
    );
    AttestationDocument {
        init_data: None,
        ..document.clone()
    }
}

impl AttestedIdentity {
    /// Generates the TLS key (P-256), the claims for `model`, evidence bound
    /// to them, and the certificate that carries it. TLS 1.3 only.
    pub fn generate(
        platform: &dyn EvidenceSource,
        model: ModelClaims,
        embedding_model: Option<ModelClaims>,
    ) -> Result<Self, IdentityError> {
        let cert_err = |e: rcgen::Error| IdentityError::Certificate(e.to_string());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cert_err)?;
        let spki = key.subject_public_key_info();
        let claims = RuntimeClaims {
            version: CLAIMS_VERSION,
            platform: platform.tee().to_string(),
            runtime: runtime_version(),
            tls_spki_sha256: hex::encode(ring::digest::digest(&ring::digest::SHA256, &spki)),
            model,
            embedding_model,
            nonce: None,
        };
        let document = attest(platform, claims.clone())?;
        let in_certificate = certificate_document(&document);
        let mut params =
            rcgen::CertificateParams::new(vec!["ciel-enclave".to_string()]).map_err(cert_err)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ciel attested guest");
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                ciel_protocol::claims::EXTENSION_OID,
                encode_extension(&in_certificate)?,
            ));
        let cert = params.self_signed(&key).map_err(cert_err)?;
        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| IdentityError::Certificate(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(AttestedIdentity {
            claims,
            document,
            server_config: Arc::new(config),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn document(init_data: usize) -> AttestationDocument {
        AttestationDocument {
            claims: RuntimeClaims {
                version: CLAIMS_VERSION,
                platform: "snp".into(),
                runtime: runtime_version(),
                tls_spki_sha256: "00".repeat(32),
                model: ModelClaims {
                    name: "m".into(),
                    sha256: "00".repeat(32),
                },
                embedding_model: None,
                nonce: None,
            },
            tee: "snp".into(),
            evidence: serde_json::json!({"report": "A".repeat(8 << 10)}),
            init_data: Some("#".repeat(init_data)),
        }
    }

    #[test]
    fn init_data_too_large_for_a_handshake_stays_out_of_the_certificate() {
        let small = document(4 << 10);
        assert_eq!(certificate_document(&small), small);
        let large = document(48 << 10);
        let cert = certificate_document(&large);
        assert_eq!(cert.init_data, None);
        assert_eq!(cert.evidence, large.evidence);
        assert!(encode_extension(&cert).unwrap().len() < CERTIFICATE_INIT_DATA_BUDGET);
    }
}
