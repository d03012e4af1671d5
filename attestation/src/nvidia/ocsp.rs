//! Stapled OCSP responses (RFC 6960) for NVIDIA's certificates: the
//! responses travel with the evidence (fetched by the untrusted host, or
//! stapled offline), so each is checked here as if it came from an
//! attacker: signed by the certificate's issuer or by a responder that
//! issuer authorised, about exactly this certificate (issuer name and key
//! hashes, serial), current at the instant, and no older than the policy's
//! maximum age.
//!
//! A delegated responder (RFC 6960 4.2.2.2, how NVIDIA's OCSP service and
//! most CAs sign) is believed only if the response names it (responder ID
//! by name or key hash), carries its certificate, and that certificate is
//! issued and signed by the very CA that issued the certificate in
//! question, valid at the instant, and has the OCSP-signing purpose. Its
//! own revocation is not checked (RFC 6960's id-pkix-ocsp-nocheck
//! practice; its lifetime is what bounds it).

use crate::time::UnixTime;
use crate::verdict::ReasonKind;
use crate::x509::{Cert, CertError, SignatureFailure, tbs_bytes, verify_signature};
use x509_cert_02::der::Decode as _;
use x509_cert_02::der::Encode as _;
use x509_ocsp::{
    BasicOcspResponse, CertStatus, OcspResponse, OcspResponseStatus, ResponderId, SingleResponse,
};

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

    /// When its single responses stop being current: the earliest
    /// `nextUpdate` (`None` when none states one). What a cache of
    /// responses refreshes by; nothing here is verified.
    pub fn next_update(&self) -> Option<UnixTime> {
        self.basic
            .tbs_response_data
            .responses
            .iter()
            .filter_map(|r| r.next_update.as_ref().map(secs))
            .min()
    }

    /// Whether it is about `cert` as issued by `issuer`.
    pub fn covers(&self, cert: &Cert, issuer: &Cert) -> bool {
        find_single(&self.basic, cert, issuer).is_some()
    }

    /// Checks it for `cert` (issued by `issuer`) at `now`: signed by the
    /// issuer or its delegated responder, about this certificate, good,
    /// current, young enough.
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
        let delegate = responder(basic, issuer, now, name)?;
        let signer = delegate.as_ref().unwrap_or(issuer);
        verify_signature(&alg, signer, tbs, sig).map_err(|f| match f {
            SignatureFailure::Invalid => invalid(format!(
                "{name}: the response's signature does not verify with its responder's key ({})",
                signer.subject()
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

/// `id-kp-OCSPSigning`, and the extended-key-usage extension.
const OCSP_SIGNING: &str = "1.3.6.1.5.5.7.3.9";
const EXT_KEY_USAGE: &str = "2.5.29.37";

/// Who signed `basic`, by its responder ID: `None` for the issuer itself,
/// else the delegated responder's certificate, checked (issued and signed
/// by `issuer`, valid at `now`, with the OCSP-signing purpose).
fn responder(
    basic: &BasicOcspResponse,
    issuer: &Cert,
    now: UnixTime,
    name: &str,
) -> Result<Option<Cert>, CertError> {
    let named = |c: &Cert| match &basic.tbs_response_data.responder_id {
        ResponderId::ByName(n) => n.to_der().is_ok_and(|d| d == c.subject_der()),
        ResponderId::ByKey(hash) => {
            hash.as_bytes()
                == ring::digest::digest(
                    &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
                    c.public_key_bytes(),
                )
                .as_ref()
        }
    };
    if named(issuer) {
        return Ok(None);
    }
    let carried = basic
        .certs
        .iter()
        .flatten()
        .map(|c| {
            c.to_der()
                .ok()
                .and_then(|d| Cert::from_der(&d).ok())
                .ok_or_else(|| {
                    invalid(format!(
                        "{name}: a certificate the response carries is malformed"
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let delegate = carried.into_iter().find(|c| named(c)).ok_or_else(|| {
        invalid(format!(
            "{name}: the responder is neither the certificate's issuer ({}) nor a certificate the response carries",
            issuer.subject()
        ))
    })?;
    let who = format!("{name}: delegated OCSP responder {}", delegate.subject());
    if !delegate.issued_by(issuer) {
        return Err(invalid(format!(
            "{who} is issued by {}, not by the certificate's issuer {}",
            delegate.issuer(),
            issuer.subject()
        )));
    }
    delegate
        .verify_signed_by(issuer, &who)
        .map_err(|e| invalid(e.message))?;
    delegate
        .check_validity(now, &who)
        .map_err(|e| invalid(e.message))?;
    let oid = |s: &str| x509_cert::der::oid::ObjectIdentifier::new(s).ok();
    let purposes = oid(EXT_KEY_USAGE)
        .and_then(|eku| delegate.extension(&eku))
        .and_then(|v| {
            <x509_cert::ext::pkix::ExtendedKeyUsage as x509_cert::der::Decode>::from_der(v).ok()
        });
    if !purposes.is_some_and(|p| oid(OCSP_SIGNING).is_some_and(|o| p.0.contains(&o))) {
        return Err(invalid(format!(
            "{who} lacks the OCSP-signing purpose (id-kp-OCSPSigning): its issuer did not authorise it to answer"
        )));
    }
    Ok(Some(delegate))
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
