//! TLS for the broker (rustls, TLS 1.3 and 1.2, ring): loading the server
//! certificate, and a small development PKI (CA + server certificate) that
//! guests can pin. The handshake itself runs in each connection's task on
//! the one server loop ([`ciel_transport::http`]).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("TLS {what} {path}: {message}")]
    File {
        what: &'static str,
        path: String,
        message: String,
    },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// A server configuration from PEM files (certificate chain, private key).
pub fn server_config(
    cert_pem: &Path,
    key_pem: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let file_err = |what, path: &Path, m: String| TlsError::File {
        what,
        path: path.display().to_string(),
        message: m,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_pem)
        .map_err(|e| file_err("certificate", cert_pem, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err("certificate", cert_pem, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err(
            "certificate",
            cert_pem,
            "no CERTIFICATE in PEM".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_pem)
        .map_err(|e| file_err("private key", key_pem, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(cfg))
}

/// A development PKI: a CA (what guests pin) and a server certificate for
/// `names` (DNS names or IP addresses), all PEM.
#[derive(Debug)]
pub struct DevPki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Generates a [`DevPki`] (ECDSA P-256).
pub fn generate_dev_pki(names: &[String]) -> Result<DevPki, TlsError> {
    let e = |x: rcgen::Error| TlsError::Config(x.to_string());
    let ca_key = rcgen::KeyPair::generate().map_err(e)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ciel key broker CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca = ca_params.self_signed(&ca_key).map_err(e)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().map_err(e)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(e)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ciel key broker");
    let cert = params.signed_by(&key, &issuer).map_err(e)?;
    Ok(DevPki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}
