//! The guest's TLS identity: a fresh key generated at boot, never leaving
//! guest memory, and a self-signed certificate that carries the boot-time
//! attestation document in an X.509 extension
//! ([`ciel_protocol::claims::EXTENSION_OID`]), so a client verifies the
//! guest during the handshake without another round trip.

use crate::gpu::{GpuSource, refuse_unsafe_modes};
use crate::kbs_client::EvidenceSource;
use ciel_attestation::nvidia::{GpuEvidence, NvidiaReport};
use ciel_protocol::claims::{
    AttestationDocument, CLAIMS_VERSION, GpuClaims, ModelClaims, RuntimeClaims, encode_extension,
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
    #[error("GPU evidence: {0}")]
    Gpu(String),
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

/// Produces an attestation document for `claims` from `platform` and the
/// GPUs: each GPU's report carries the claims' [`RuntimeClaims::gpu_nonce`],
/// the claims gain each GPU's identity and report digest, and the CPU
/// evidence binds the whole. A GPU not in CC mode, or in DEVTOOLS, is
/// refused here: such a guest has nothing to attest to.
pub fn attest(
    platform: &dyn EvidenceSource,
    gpus: &dyn GpuSource,
    claims: RuntimeClaims,
) -> Result<AttestationDocument, IdentityError> {
    let mut claims = RuntimeClaims {
        gpus: Vec::new(),
        ..claims
    };
    let gpu_evidence = gpus
        .collect(claims.gpu_nonce()?)
        .map_err(IdentityError::Gpu)?;
    refuse_unsafe_modes(&gpu_evidence).map_err(IdentityError::Gpu)?;
    claims.gpus = gpu_evidence
        .iter()
        .zip(0u32..)
        .map(|(g, index)| gpu_claims(index, g))
        .collect::<Result<_, _>>()?;
    let evidence = platform
        .evidence(claims.report_data()?)
        .map_err(IdentityError::Evidence)?;
    Ok(AttestationDocument {
        claims,
        tee: platform.tee().to_string(),
        evidence,
        init_data: platform.init_data().map(|d| d.body().to_string()),
        gpu_evidence: (!gpu_evidence.is_empty()).then(|| GpuEvidence::encode_list(&gpu_evidence)),
    })
}

/// What the guest claims about GPU `index`: NVML's identity and mode, and
/// the versions its signed report states.
fn gpu_claims(index: u32, g: &GpuEvidence) -> Result<GpuClaims, IdentityError> {
    let report = NvidiaReport::parse(&g.report)
        .map_err(|e| IdentityError::Gpu(format!("GPU {index} ({}): report: {e}", g.uuid)))?;
    Ok(GpuClaims {
        index,
        uuid: g.uuid.clone(),
        arch: g.arch.clone(),
        driver: report.opaque.driver_version,
        vbios: report.opaque.vbios_version,
        evidence_sha256: g.report_sha256(),
        cc_mode: g.cc_mode.map(|m| m.name().to_string()),
        protected_pcie: g.protected_pcie,
    })
}

/// The largest attestation extension the certificate carries when it has
/// parts it can do without. TLS clients (rustls among them) refuse
/// handshake messages over 64 KiB, and the evidence (a TDX quote's
/// collateral is ~30 KiB) and the certificate need their share.
pub const CERTIFICATE_DOCUMENT_BUDGET: usize = 40 << 10;

/// The document for the certificate: the boot document, less what would
/// make the handshake too large — first the init-data (a Kata agent
/// policy can be tens of KiB; the evidence still binds its digest, which a
/// client pins in its policy), then the GPU evidence (several GPUs' reports
/// and chains; the claims still name every report's digest, and clients
/// fetch the reports from `/v1/attestation`, which always carries the
/// document whole).
fn certificate_document(document: &AttestationDocument) -> AttestationDocument {
    let fits = |d: &AttestationDocument| {
        encode_extension(d).is_ok_and(|e| e.len() <= CERTIFICATE_DOCUMENT_BUDGET)
    };
    let mut d = document.clone();
    if fits(&d) {
        return d;
    }
    if d.init_data.take().is_some() {
        tracing::warn!(
            budget = CERTIFICATE_DOCUMENT_BUDGET,
            "the init-data is too large for the TLS certificate: it is served at /v1/attestation only"
        );
        if fits(&d) {
            return d;
        }
    }
    if d.gpu_evidence.take().is_some() {
        tracing::warn!(
            budget = CERTIFICATE_DOCUMENT_BUDGET,
            gpus = d.claims.gpus.len(),
            "the GPU evidence is too large for the TLS certificate: clients fetch it from /v1/attestation"
        );
    }
    d
}

impl AttestedIdentity {
    /// Generates the TLS key (P-256), the claims for `model`, evidence bound
    /// to them, and the certificate that carries it. TLS 1.3 only.
    pub fn generate(
        platform: &dyn EvidenceSource,
        gpus: &dyn GpuSource,
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
            gpus: Vec::new(),
        };
        let document = attest(platform, gpus, claims)?;
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
            claims: document.claims.clone(),
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
                gpus: Vec::new(),
            },
            tee: "snp".into(),
            evidence: serde_json::json!({"report": "A".repeat(8 << 10)}),
            init_data: Some("#".repeat(init_data)),
            gpu_evidence: None,
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
        assert!(encode_extension(&cert).unwrap().len() < CERTIFICATE_DOCUMENT_BUDGET);
        // Eight GPUs' evidence does not fit either: it goes next.
        let mut gpus = document(4 << 10);
        gpus.gpu_evidence = Some(serde_json::json!({"device_evidence_list": "B".repeat(64 << 10)}));
        let cert = certificate_document(&gpus);
        assert_eq!((cert.init_data, cert.gpu_evidence), (None, None));
        let mut fits = document(1 << 10);
        fits.gpu_evidence = Some(serde_json::json!({"device_evidence_list": "B".repeat(16 << 10)}));
        assert_eq!(certificate_document(&fits), fits);
    }
}
