//! Stapled OCSP responses (RFC 6960) for NVIDIA's certificates: the
//! responses travel with the evidence (fetched by the untrusted host, or
//! stapled offline), so each is checked here as if it came from an
//! attacker: signed by the certificate's issuer, about exactly this
//! certificate (issuer name and key hashes, serial), current at the
//! instant, and no older than the policy's maximum age.
//!
//! A response signed by a delegated responder (a certificate with the
//! OCSP-signing purpose, issued by the CA) is refused with a reason that
//! says so: the simulated responder and the tests sign with the issuer.

use crate::time::UnixTime;
use crate::verdict::ReasonKind;
use crate::x509::{Cert, CertError, SignatureFailure, tbs_bytes, verify_signature};
use x509_cert_02::der::Decode as _;
use x509_cert_02::der::Encode as _;
use x509_ocsp::{BasicOcspResponse, CertStatus, OcspResponse, OcspResponseStatus, SingleResponse};

/// `id-pkix-ocsp-basic`.
const OCSP_BASIC: &str = "1.3.6.1.5.5.7.48.1.1";

fn invalid(m: impl Into<String>) -> CertError {
    CertError::new(ReasonKind::OcspInvalid, m)
}

/// One stapled response, parsed once (it is matched against every
/// certificate of a chain, then checked).
pub struct Stapled {
    basic: BasicOcspResponse,
    der: Vec<u8>,
}

impl std::fmt::Debug for Stapled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stapled")
            .field("responses", &self.basic.tbs_response_data.responses.len())
            .finish_non_exhaustive()
    }
}

impl Stapled {
    /// Parses a DER `OCSPResponse` (successful, basic).
    pub fn parse(response: &[u8]) -> Result<Self, String> {
        basic(response).map(|(basic, der)| Stapled { basic, der })
    }

    /// Whether it is about `cert` as issued by `issuer`.
    pub fn covers(&self, cert: &Cert, issuer: &Cert) -> bool {
        find_single(&self.basic, cert, issuer).is_some()
    }

    /// Checks it for `cert` (issued by `issuer`) at `now`: signed by the
    /// issuer, about this certificate, good, current, young enough.
    pub fn check(
        &self,
        cert: &Cert,
        issuer: &Cert,
        now: UnixTime,
        max_age_seconds: Option<u64>,
        name: &str,
    ) -> Result<(), CertError> {
        let basic = &self.basic;
        // The signature first: nothing unsigned is believed.
        let tbs = tbs_bytes(&self.der).ok_or_else(|| invalid(format!("{name}: no signed part")))?;
        let alg = basic
            .signature_algorithm
            .to_der()
            .ok()
            .and_then(|d| {
                // The other `spki` version's type, through its DER.
                <x509_cert::spki::AlgorithmIdentifierOwned as x509_cert::der::Decode>::from_der(&d)
                    .ok()
            })
            .ok_or_else(|| invalid(format!("{name}: unreadable signature algorithm")))?;
        let sig = basic
            .signature
            .as_bytes()
            .ok_or_else(|| invalid(format!("{name}: signature has unused bits")))?;
        verify_signature(&alg, issuer, tbs, sig).map_err(|f| match f {
            SignatureFailure::Invalid => invalid(format!(
                "{name}: the response is not signed by the certificate's issuer ({}); delegated OCSP responders are not accepted",
                issuer.subject()
            )),
            SignatureFailure::Malformed(m) | SignatureFailure::Unsupported(m) => {
                invalid(format!("{name}: {m}"))
            }
        })?;
        let single = find_single(basic, cert, issuer).ok_or_else(|| {
            invalid(format!(
                "{name}: the response is not about this certificate (serial {})",
                hex::encode(cert.serial())
            ))
        })?;
        match &single.cert_status {
            CertStatus::Good(_) => {}
            CertStatus::Revoked(info) => {
                return Err(CertError::new(
                    ReasonKind::CertificateRevoked,
                    format!(
                        "{name} ({}) is revoked since {} (OCSP)",
                        cert.subject(),
                        secs(&info.revocation_time)
                    ),
                ));
            }
            CertStatus::Unknown(_) => {
                return Err(CertError::new(
                    ReasonKind::OcspStatusUnknown,
                    format!("{name}: the OCSP responder does not know this certificate"),
                ));
            }
        }
        let this_update = secs(&single.this_update);
        if this_update > now {
            return Err(invalid(format!(
                "{name}: OCSP response issued at {this_update}, after the verification instant {now}"
            )));
        }
        if let Some(next) = single.next_update.as_ref().map(secs)
            && now >= next
        {
            return Err(CertError::new(
                ReasonKind::OcspStale,
                format!("{name}: OCSP response expired at {next} (nextUpdate)"),
            ));
        }
        if let Some(max) = max_age_seconds {
            let age = now.secs().saturating_sub(this_update.secs());
            if age > max {
                return Err(CertError::new(
                    ReasonKind::OcspStale,
                    format!(
                        "{name}: OCSP response from {this_update} is {age} s old, more than the policy's {max} s"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The basic response inside `response`, and its DER (for the signed bytes).
fn basic(response: &[u8]) -> Result<(BasicOcspResponse, Vec<u8>), String> {
    let outer = OcspResponse::from_der(response).map_err(|e| format!("OCSP response DER: {e}"))?;
    if outer.response_status != OcspResponseStatus::Successful {
        return Err(format!(
            "OCSP response status is {:?}, not successful",
            outer.response_status
        ));
    }
    let bytes = outer
        .response_bytes
        .ok_or("OCSP response without response bytes")?;
    if bytes.response_type.to_string() != OCSP_BASIC {
        return Err(format!(
            "OCSP response type {} is not id-pkix-ocsp-basic",
            bytes.response_type
        ));
    }
    let der = bytes.response.as_bytes().to_vec();
    let basic =
        BasicOcspResponse::from_der(&der).map_err(|e| format!("basic OCSP response DER: {e}"))?;
    Ok((basic, der))
}

/// The single response whose CertID names `cert` as issued by `issuer`.
fn find_single<'a>(
    basic: &'a BasicOcspResponse,
    cert: &Cert,
    issuer: &Cert,
) -> Option<&'a SingleResponse> {
    let subject = issuer.subject_der();
    basic.tbs_response_data.responses.iter().find(|r| {
        let id = &r.cert_id;
        let Some(hash) = digest_for(&id.hash_algorithm.oid.to_string()) else {
            return false;
        };
        let name_hash = ring::digest::digest(hash, &subject);
        let key_hash = ring::digest::digest(hash, issuer.public_key_bytes());
        id.issuer_name_hash.as_bytes() == name_hash.as_ref()
            && id.issuer_key_hash.as_bytes() == key_hash.as_ref()
            && id.serial_number.as_bytes() == cert.serial()
    })
}

fn digest_for(oid: &str) -> Option<&'static ring::digest::Algorithm> {
    match oid {
        "1.3.14.3.2.26" => Some(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY),
        "2.16.840.1.101.3.4.2.1" => Some(&ring::digest::SHA256),
        "2.16.840.1.101.3.4.2.2" => Some(&ring::digest::SHA384),
        "2.16.840.1.101.3.4.2.3" => Some(&ring::digest::SHA512),
        _ => None,
    }
}

fn secs(t: &x509_ocsp::OcspGeneralizedTime) -> UnixTime {
    UnixTime(t.0.to_unix_duration().as_secs())
}
