//! OCSP responses (RFC 6960) as a CA's responder signs them, for the
//! simulated hierarchies: one single response naming the certificate by
//! SHA-256 hashes of its issuer's name and key and its serial, signed
//! ECDSA P-384 SHA-384 by the issuer itself or by a delegated responder
//! whose certificate the response carries.

use super::nvidia::SimOcspStatus;
use super::{SimError, crypto};
use crate::time::UnixTime;
use crate::x509::{Cert, sha256};
use p384::ecdsa::signature::Signer as _;
use p384::ecdsa::{DerSignature, SigningKey};
use x509_cert_02::der::asn1::{BitString, GeneralizedTime, Null, OctetString};
use x509_cert_02::der::oid::ObjectIdentifier;
use x509_cert_02::der::{Decode, Encode};
use x509_cert_02::serial_number::SerialNumber;
use x509_cert_02::spki::AlgorithmIdentifierOwned;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspResponse, ResponderId,
    ResponseData, RevokedInfo, SingleResponse, Version,
};

const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");

fn time(t: UnixTime) -> Result<OcspGeneralizedTime, SimError> {
    GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(t.secs()))
        .map(OcspGeneralizedTime)
        .map_err(crypto)
}

/// Who signs a response: the issuer's key (no certificate), or a delegated
/// responder's key and certificate.
pub(crate) struct Signer<'a> {
    pub key: &'a SigningKey,
    pub cert: Option<&'a [u8]>,
}

/// A successful OCSP response about `cert_der`, issued by `issuer_der`,
/// signed by `signer`.
pub(crate) fn response(
    cert_der: &[u8],
    issuer_der: &[u8],
    signer: &Signer<'_>,
    status: SimOcspStatus,
    this_update: UnixTime,
    next_update: UnixTime,
) -> Result<Vec<u8>, SimError> {
    let cert = Cert::from_der(cert_der).map_err(|e| crypto(e.message))?;
    let issuer = Cert::from_der(issuer_der).map_err(|e| crypto(e.message))?;
    let octets = |b: &[u8]| OctetString::new(b.to_vec()).map_err(crypto);
    let cert_id = CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: SHA256,
            parameters: None,
        },
        issuer_name_hash: octets(&sha256(&issuer.subject_der()))?,
        issuer_key_hash: octets(&sha256(issuer.public_key_bytes()))?,
        serial_number: SerialNumber::new(cert.serial()).map_err(crypto)?,
    };
    let cert_status = match status {
        SimOcspStatus::Good => CertStatus::Good(Null),
        SimOcspStatus::Revoked => CertStatus::Revoked(RevokedInfo {
            revocation_time: time(this_update)?,
            revocation_reason: None,
        }),
        SimOcspStatus::Unknown => CertStatus::Unknown(Null),
    };
    let responder = match signer.cert {
        Some(der) => Cert::from_der(der).map_err(|e| crypto(e.message))?,
        None => issuer.clone(),
    };
    let key_hash = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        responder.public_key_bytes(),
    );
    let tbs = ResponseData {
        version: Version::V1,
        responder_id: ResponderId::ByKey(octets(key_hash.as_ref())?),
        produced_at: time(this_update)?,
        responses: vec![SingleResponse {
            cert_id,
            cert_status,
            this_update: time(this_update)?,
            next_update: Some(time(next_update)?),
            single_extensions: None,
        }],
        response_extensions: None,
    };
    let signature: DerSignature = signer.key.sign(&tbs.to_der().map_err(crypto)?);
    let basic = BasicOcspResponse {
        tbs_response_data: tbs,
        signature_algorithm: AlgorithmIdentifierOwned {
            oid: ECDSA_SHA384,
            parameters: None,
        },
        signature: BitString::from_bytes(&signature.to_bytes()).map_err(crypto)?,
        certs: match signer.cert {
            Some(der) => Some(vec![
                x509_cert_02::Certificate::from_der(der).map_err(crypto)?,
            ]),
            None => None,
        },
    };
    OcspResponse::successful(basic)
        .and_then(|r| r.to_der())
        .map_err(crypto)
}
