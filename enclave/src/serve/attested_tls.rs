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
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::{Arc, RwLock};

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
/// The certificate is re-issued with fresh evidence by [`Self::refresh`];
/// the TLS key stays (clients bound to it stay bound).
pub struct AttestedIdentity {
    pub claims: RuntimeClaims,
    /// The boot-time document (the certificate carries it, less an
    /// init-data too large for a TLS handshake).
    pub document: AttestationDocument,
    pub server_config: Arc<rustls::ServerConfig>,
    key: rcgen::KeyPair,
    signing: Arc<dyn rustls::sign::SigningKey>,
    current: Arc<CurrentCertificate>,
}

impl std::fmt::Debug for AttestedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttestedIdentity")
            .field("tls_spki_sha256", &self.claims.tls_spki_sha256)
            .finish_non_exhaustive()
    }
}

/// The certificate handshakes present: the latest one issued.
#[derive(Debug)]
struct CurrentCertificate(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|c| Arc::clone(&c))
    }
}

/// The runtime's name and version, as claimed.
pub fn runtime_version() -> String {
    format!("ciel-enclave {}", env!("CARGO_PKG_VERSION"))
}

/// Produces an attestation document for `claims` from `platform` and the
/// GPUs, stamped with the guest's clock (`issued_at`): each GPU's report
/// carries the claims' [`RuntimeClaims::gpu_nonce`],
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
        issued_at: Some(crate::unix_now()),
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
            issued_at: None,
        };
        let document = attest(platform, gpus, claims)?;
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = rustls::crypto::ring::sign::any_ecdsa_type(&private)
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        let current = Arc::new(CurrentCertificate(RwLock::new(Arc::new(
            CertifiedKey::new(vec![certificate(&key, &document)?], Arc::clone(&signing)),
        ))));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| IdentityError::Certificate(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(AttestedIdentity {
            claims: document.claims.clone(),
            document,
            server_config: Arc::new(config),
            key,
            signing,
            current,
        })
    }

    /// New evidence for the same claims (and fresh GPU reports), stamped
    /// now, in a new certificate for the same key: what handshakes from
    /// now on present. On an error the certificate keeps its evidence.
    pub fn refresh(
        &self,
        platform: &dyn EvidenceSource,
        gpus: &dyn GpuSource,
    ) -> Result<AttestationDocument, IdentityError> {
        let document = attest(platform, gpus, self.claims.clone())?;
        let certified = CertifiedKey::new(
            vec![certificate(&self.key, &document)?],
            Arc::clone(&self.signing),
        );
        if let Ok(mut current) = self.current.0.write() {
            *current = Arc::new(certified);
        }
        Ok(document)
    }

    /// The certificate handshakes present now (DER).
    pub fn current_certificate(&self) -> Option<CertificateDer<'static>> {
        let current = self.current.0.read().ok()?;
        current.cert.first().cloned()
    }
}

/// The self-signed certificate for `key` carrying `document` (less what a
/// handshake cannot hold).
fn certificate(
    key: &rcgen::KeyPair,
    document: &AttestationDocument,
) -> Result<CertificateDer<'static>, IdentityError> {
    let cert_err = |e: rcgen::Error| IdentityError::Certificate(e.to_string());
    let mut params =
        rcgen::CertificateParams::new(vec!["ciel-enclave".to_string()]).map_err(cert_err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ciel attested guest");
    params
        .custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(
            ciel_protocol::claims::EXTENSION_OID,
            encode_extension(&certificate_document(document))?,
        ));
    let cert = params.self_signed(key).map_err(cert_err)?;
    Ok(CertificateDer::from(cert.der().to_vec()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
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
                issued_at: None,
            },
            tee: "snp".into(),
            evidence: serde_json::json!({"report": "A".repeat(8 << 10)}),
            init_data: Some("#".repeat(init_data)),
            gpu_evidence: None,
        }
    }

    /// Evidence that is its report_data (what the certificate binds is what
    /// is checked here, not a platform's signature).
    struct Echo;

    impl EvidenceSource for Echo {
        fn tee(&self) -> &str {
            "snp"
        }
        fn evidence(&self, report_data: [u8; 64]) -> Result<serde_json::Value, String> {
            Ok(serde_json::json!({"report_data": hex::encode(report_data)}))
        }
    }

    /// The certificate's attestation document, its extension found by the
    /// OID's DER bytes (`1.3.6.1.3.7390768.1`; rcgen writes no criticality
    /// flag, so the extension's value, an OCTET STRING, follows).
    fn certificate_document_of(der: &[u8]) -> AttestationDocument {
        let oid = [
            0x06, 0x09, 0x2b, 0x06, 0x01, 0x03, 0x83, 0xc3, 0x8c, 0x30, 0x01,
        ];
        let at = der
            .windows(oid.len())
            .position(|w| w == oid)
            .expect("the attestation extension's OID")
            + oid.len();
        // OCTET STRING (extnValue) holding the OCTET STRING of the document.
        let rest = &der[at..];
        assert_eq!(rest[0], 0x04);
        let (len, header) = match rest[1] {
            n if n < 0x80 => (n as usize, 2),
            n => {
                let k = (n & 0x7f) as usize;
                (
                    rest[2..2 + k]
                        .iter()
                        .fold(0usize, |a, &b| (a << 8) | b as usize),
                    2 + k,
                )
            }
        };
        ciel_protocol::claims::decode_extension(&rest[header..header + len]).unwrap()
    }

    #[test]
    fn refresh_reissues_the_certificate_with_new_evidence_for_the_same_key() {
        let model = ModelClaims {
            name: "m".into(),
            sha256: "00".repeat(32),
        };
        let id = AttestedIdentity::generate(&Echo, &crate::gpu::NoGpus, model, None).unwrap();
        let first = id.current_certificate().unwrap();
        let boot = certificate_document_of(&first);
        assert_eq!(boot.claims, id.claims);
        assert!(boot.claims.issued_at.is_some());
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let doc = id.refresh(&Echo, &crate::gpu::NoGpus).unwrap();
        let second = id.current_certificate().unwrap();
        assert_ne!(first, second);
        let now = certificate_document_of(&second);
        assert_eq!(now, doc);
        assert!(now.claims.issued_at > boot.claims.issued_at);
        assert!(now.claims.same_guest(&boot.claims));
        assert_eq!(now.claims.tls_spki_sha256, boot.claims.tls_spki_sha256);
        // The evidence binds the new claims.
        assert_eq!(
            now.evidence["report_data"],
            hex::encode(now.claims.report_data().unwrap())
        );
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
