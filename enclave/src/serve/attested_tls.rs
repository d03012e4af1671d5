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
    /// The boot-time document, as in the certificate.
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
        let mut params =
            rcgen::CertificateParams::new(vec!["ciel-enclave".to_string()]).map_err(cert_err)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ciel attested guest");
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                ciel_protocol::claims::EXTENSION_OID,
                encode_extension(&document)?,
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
