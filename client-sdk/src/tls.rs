//! The TLS side of attestation: a rustls certificate verifier that accepts
//! a server certificate only if the attestation document in its extension
//! verifies against the client's policy *and* binds this certificate's key.
//! The handshake's signature (checked by rustls with the same key) then
//! proves the peer holds that key — the attested guest itself.
//!
//! Names and validity dates of the self-signed certificate mean nothing
//! here; the evidence is what is checked. TLS 1.3 only.

use crate::attested::{Verification, verify_document_with};
use ciel_attestation::collateral::CollateralLookup;
use ciel_attestation::{Policy, UnixTime};
use ciel_protocol::claims::{AttestationDocument, EXTENSION_OID_STR, decode_extension};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::{Arc, Mutex};
use x509_cert::der::Encode;
use x509_cert::der::oid::ObjectIdentifier;

/// The attestation document and SPKI (DER) of a guest certificate.
pub fn document_of(cert_der: &[u8]) -> Result<(AttestationDocument, Vec<u8>), String> {
    let cert = ciel_attestation::x509::Cert::from_der(cert_der)
        .map_err(|e| format!("server certificate: {e}"))?;
    let oid = ObjectIdentifier::new(EXTENSION_OID_STR).map_err(|e| e.to_string())?;
    let ext = cert.extension(&oid).ok_or_else(|| {
        format!("the server certificate carries no attestation (extension {EXTENSION_OID_STR}): not a ciel guest")
    })?;
    let doc = decode_extension(ext).map_err(|e| e.to_string())?;
    let spki = cert
        .parsed()
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|e| format!("server certificate key: {e}"))?;
    Ok((doc, spki))
}

/// Verifies one connection's certificate; keeps the outcome for the caller.
#[derive(Debug)]
pub struct AttestedVerifier {
    policy: Policy,
    collateral: Option<Arc<ciel_collateral::Bundle>>,
    provider: Arc<CryptoProvider>,
    outcome: Mutex<Option<Result<Verification, String>>>,
}

impl AttestedVerifier {
    pub fn new(policy: Policy) -> Arc<Self> {
        AttestedVerifier::with_collateral(policy, None)
    }

    /// A verifier that takes collateral the evidence does not carry from
    /// `bundle` (`ciel collateral bundle`).
    pub fn with_collateral(
        policy: Policy,
        bundle: Option<Arc<ciel_collateral::Bundle>>,
    ) -> Arc<Self> {
        Arc::new(AttestedVerifier {
            policy,
            collateral: bundle,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            outcome: Mutex::new(None),
        })
    }

    /// What the last handshake's certificate check decided.
    pub fn outcome(&self) -> Option<Result<Verification, String>> {
        self.outcome.lock().ok().and_then(|g| g.clone())
    }

    fn record(&self, r: Result<Verification, String>) {
        if let Ok(mut g) = self.outcome.lock() {
            *g = Some(r);
        }
    }

    /// A client configuration that uses this verifier (TLS 1.3, HTTP/1.1).
    pub fn client_config(self: &Arc<Self>) -> Result<Arc<rustls::ClientConfig>, String> {
        let mut cfg = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(self.clone())
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

impl ServerCertVerifier for AttestedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let (doc, spki) = match document_of(end_entity) {
            Ok(x) => x,
            Err(e) => {
                self.record(Err(e.clone()));
                return Err(rustls::Error::General(e));
            }
        };
        let v = verify_document_with(
            &doc,
            &spki,
            &self.policy,
            self.collateral
                .as_deref()
                .map(|b| b as &dyn CollateralLookup),
            UnixTime(now.as_secs()),
            None,
        );
        // A document whose GPU evidence did not fit the certificate passes
        // the handshake unaccepted: the caller fetches the rest on this
        // connection before it sends anything ([`crate::Endpoint::open`]).
        let refusal = v
            .first_failure()
            .filter(|_| !v.awaits_fresh_document())
            .map(|c| format!("attestation refused: {}: {}", c.name, c.detail));
        self.record(Ok(v));
        match refusal {
            None => Ok(ServerCertVerified::assertion()),
            Some(msg) => Err(rustls::Error::General(msg)),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
