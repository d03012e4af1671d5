//! X.509 certificates as the vendors issue them, and the checks we make on
//! them ourselves: issuer/subject linkage, signatures (RSA-PSS and ECDSA),
//! validity at an instant, and extension lookup.
//!
//! Certificates are parsed with the permissive `Raw` profile because AMD's
//! VCEKs carry serial number 0, which RFC 5280 forbids; everything that
//! matters for trust is checked explicitly here instead.

use crate::time::UnixTime;
use crate::verdict::ReasonKind;
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_cert::certificate::{CertificateInner, Raw};
use x509_cert::der::{Decode, Encode, oid::ObjectIdentifier};

/// A certificate: its DER bytes and the parsed structure.
#[derive(Debug, Clone)]
pub struct Cert {
    der: Vec<u8>,
    parsed: CertificateInner<Raw>,
}

/// Why a certificate check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CertError {
    pub kind: ReasonKind,
    pub message: String,
}

impl CertError {
    pub(crate) fn new(kind: ReasonKind, message: impl Into<String>) -> Self {
        CertError {
            kind,
            message: message.into(),
        }
    }
}

const OID_RSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const OID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// The curve of an EC public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

impl Cert {
    /// Parses one DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, CertError> {
        let parsed = CertificateInner::<Raw>::from_der(der).map_err(|e| {
            CertError::new(
                ReasonKind::CertificateMalformed,
                format!("certificate DER: {e}"),
            )
        })?;
        Ok(Cert {
            der: der.to_vec(),
            parsed,
        })
    }

    /// Parses a PEM bundle (one or more certificates), or a single DER
    /// certificate when the bytes are not PEM.
    pub fn parse_bundle(bytes: &[u8]) -> Result<Vec<Self>, CertError> {
        if !looks_like_pem(bytes) {
            return Ok(vec![Self::from_der(bytes)?]);
        }
        let blocks = pem::parse_many(bytes)
            .map_err(|e| CertError::new(ReasonKind::CertificateMalformed, format!("PEM: {e}")))?;
        let certs: Vec<Cert> = blocks
            .iter()
            .filter(|b| b.tag() == "CERTIFICATE")
            .map(|b| Self::from_der(b.contents()))
            .collect::<Result<_, _>>()?;
        if certs.is_empty() {
            return Err(CertError::new(
                ReasonKind::CertificateMissing,
                "no CERTIFICATE block in PEM",
            ));
        }
        Ok(certs)
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    pub fn parsed(&self) -> &CertificateInner<Raw> {
        &self.parsed
    }

    /// SHA-256 of the DER encoding, the fingerprint roots are pinned by.
    pub fn sha256(&self) -> [u8; 32] {
        sha256(&self.der)
    }

    /// The subject's distinguished name, RFC 4514 style.
    pub fn subject(&self) -> String {
        self.parsed.tbs_certificate().subject().to_string()
    }

    /// The issuer's distinguished name, RFC 4514 style.
    pub fn issuer(&self) -> String {
        self.parsed.tbs_certificate().issuer().to_string()
    }

    /// The common name of the subject, if any.
    pub fn common_name(&self) -> Option<String> {
        let subject = self.parsed.tbs_certificate().subject();
        subject
            .iter()
            .find(|atv| atv.oid == const_oid_cn())
            .map(|atv| {
                // CN is a DirectoryString; every vendor here uses UTF8 or printable.
                String::from_utf8_lossy(atv.value.value()).into_owned()
            })
    }

    /// Whether `self` names `issuer` as its issuer (DER-equal names).
    pub fn issued_by(&self, issuer: &Cert) -> bool {
        let a = self.parsed.tbs_certificate().issuer().to_der();
        let b = issuer.parsed.tbs_certificate().subject().to_der();
        matches!((a, b), (Ok(a), Ok(b)) if a == b)
    }

    /// Whether the certificate is self-issued (subject == issuer).
    pub fn self_issued(&self) -> bool {
        self.issued_by(self)
    }

    /// Checks the validity window at `now`.
    pub fn check_validity(&self, now: UnixTime, name: &str) -> Result<(), CertError> {
        let v = self.parsed.tbs_certificate().validity();
        let nb = UnixTime::from_x509(v.not_before);
        let na = UnixTime::from_x509(v.not_after);
        if now < nb {
            return Err(CertError::new(
                ReasonKind::CertificateNotYetValid,
                format!("{name} is not valid before {nb} (verifying at {now})"),
            ));
        }
        if now > na {
            return Err(CertError::new(
                ReasonKind::CertificateExpired,
                format!("{name} expired at {na} (verifying at {now})"),
            ));
        }
        Ok(())
    }

    /// The raw subject public key (RSAPublicKey DER, or an EC point).
    pub fn public_key_bytes(&self) -> &[u8] {
        self.parsed
            .tbs_certificate()
            .subject_public_key_info()
            .subject_public_key
            .raw_bytes()
    }

    /// The curve of an EC subject key, or `None` for other key types.
    pub fn ec_curve(&self) -> Option<Curve> {
        let spki = self.parsed.tbs_certificate().subject_public_key_info();
        if spki.algorithm.oid != OID_EC_PUBLIC_KEY {
            return None;
        }
        let param = spki
            .algorithm
            .parameters
            .as_ref()?
            .decode_as::<ObjectIdentifier>()
            .ok()?;
        match param {
            p if p == OID_P256 => Some(Curve::P256),
            p if p == OID_P384 => Some(Curve::P384),
            _ => None,
        }
    }

    /// Verifies that `self` was signed by `issuer`'s key.
    pub fn verify_signed_by(&self, issuer: &Cert, name: &str) -> Result<(), CertError> {
        let signed = Signed {
            der: &self.der,
            outer: self.parsed.signature_algorithm(),
            inner: self.parsed.tbs_certificate().signature(),
            signature: self.parsed.signature(),
        };
        signed.verify(issuer).map_err(|f| match f {
            SignatureFailure::Malformed(m) => {
                CertError::new(ReasonKind::CertificateMalformed, format!("{name}: {m}"))
            }
            SignatureFailure::Unsupported(m) => {
                CertError::new(ReasonKind::UnsupportedAlgorithm, format!("{name}: {m}"))
            }
            SignatureFailure::Invalid => CertError::new(
                ReasonKind::CertificateSignatureInvalid,
                format!("{name}: signature by {} does not verify", issuer.subject()),
            ),
        })
    }

    /// The DER of the subject name (what OCSP's issuer-name hash covers).
    pub fn subject_der(&self) -> Vec<u8> {
        use x509_cert::der::Encode;
        self.parsed
            .tbs_certificate()
            .subject()
            .to_der()
            .unwrap_or_default()
    }

    /// The serial number's bytes (DER INTEGER content).
    pub fn serial(&self) -> &[u8] {
        self.parsed.tbs_certificate().serial_number().as_bytes()
    }

    /// The value of the extension `oid`, if present.
    pub fn extension(&self, oid: &ObjectIdentifier) -> Option<&[u8]> {
        self.parsed
            .tbs_certificate()
            .extensions()?
            .iter()
            .find(|e| &e.extn_id == oid)
            .map(|e| e.extn_value.as_bytes())
    }
}

/// Why a signature over a signed structure (certificate or CRL) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SignatureFailure {
    Malformed(String),
    Unsupported(String),
    Invalid,
}

/// A signed X.509 structure: `SEQUENCE { tbs, signatureAlgorithm,
/// signatureValue }`, with the algorithm also named inside `tbs`.
pub(crate) struct Signed<'a> {
    /// The whole structure's DER (the signed bytes are its first element).
    pub der: &'a [u8],
    pub outer: &'a x509_cert::spki::AlgorithmIdentifierOwned,
    pub inner: &'a x509_cert::spki::AlgorithmIdentifierOwned,
    pub signature: &'a x509_cert::der::asn1::BitString,
}

impl Signed<'_> {
    /// Verifies the signature with `issuer`'s key.
    pub(crate) fn verify(&self, issuer: &Cert) -> Result<(), SignatureFailure> {
        let tbs = tbs_bytes(self.der)
            .ok_or_else(|| SignatureFailure::Malformed("cannot locate the signed part".into()))?;
        // RFC 5280 §4.1.1.2 / §5.1.1.2: the unsigned outer algorithm must
        // equal the signed inner one, or its parameters could be changed.
        if self.outer.to_der().ok() != self.inner.to_der().ok() {
            return Err(SignatureFailure::Malformed(
                "signatureAlgorithm differs from the signed one".into(),
            ));
        }
        let sig = self
            .signature
            .as_bytes()
            .ok_or_else(|| SignatureFailure::Malformed("signature has unused bits".into()))?;
        verify_signature(self.outer, issuer, tbs, sig)
    }
}

/// Verifies `sig` over `tbs` with `issuer`'s key under the X.509
/// signature algorithm `alg` (certificates, CRLs, OCSP responses).
pub(crate) fn verify_signature(
    alg: &x509_cert::spki::AlgorithmIdentifierOwned,
    issuer: &Cert,
    tbs: &[u8],
    sig: &[u8],
) -> Result<(), SignatureFailure> {
    let alg = signature_algorithm(alg, issuer).map_err(SignatureFailure::Unsupported)?;
    UnparsedPublicKey::new(alg, issuer.public_key_bytes())
        .verify(tbs, sig)
        .map_err(|_| SignatureFailure::Invalid)
}

fn const_oid_cn() -> ObjectIdentifier {
    ObjectIdentifier::new_unwrap("2.5.4.3")
}

pub(crate) fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// Chooses the ring algorithm for a certificate signature made by `issuer`.
fn signature_algorithm(
    sig_alg: &x509_cert::spki::AlgorithmIdentifierOwned,
    issuer: &Cert,
) -> Result<&'static dyn VerificationAlgorithm, String> {
    let oid = sig_alg.oid;
    if oid == OID_RSA_PSS {
        // AMD signs with RSASSA-PSS, SHA-384, MGF1-SHA-384, salt 48. ring
        // implements exactly that combination; check the parameters name it.
        let params = sig_alg
            .parameters
            .as_ref()
            .ok_or("RSA-PSS without parameters")?;
        let der = params
            .to_der()
            .map_err(|e| format!("RSA-PSS parameters: {e}"))?;
        if !contains_oid(&der, &OID_SHA384) {
            return Err("RSA-PSS with a hash other than SHA-384".into());
        }
        return Ok(&signature::RSA_PSS_2048_8192_SHA384);
    }
    let curve = issuer
        .ec_curve()
        .ok_or("ECDSA signature but the issuer key is not P-256/P-384")?;
    match (oid, curve) {
        (o, Curve::P256) if o == OID_ECDSA_SHA256 => Ok(&signature::ECDSA_P256_SHA256_ASN1),
        (o, Curve::P384) if o == OID_ECDSA_SHA256 => Ok(&signature::ECDSA_P384_SHA256_ASN1),
        (o, Curve::P256) if o == OID_ECDSA_SHA384 => Ok(&signature::ECDSA_P256_SHA384_ASN1),
        (o, Curve::P384) if o == OID_ECDSA_SHA384 => Ok(&signature::ECDSA_P384_SHA384_ASN1),
        (o, _) => Err(format!("unsupported signature algorithm {o}")),
    }
}

fn contains_oid(der: &[u8], oid: &ObjectIdentifier) -> bool {
    let needle = oid.as_bytes();
    der.windows(needle.len()).any(|w| w == needle)
}

/// The exact TBSCertificate (or TBSCertList) bytes as signed (not a re-encoding, which could
/// differ for certificates that are not strictly DER).
pub(crate) fn tbs_bytes(cert_der: &[u8]) -> Option<&[u8]> {
    let (_, outer_len, outer_hdr) = der_header(cert_der)?;
    let body = cert_der.get(outer_hdr..outer_hdr.checked_add(outer_len)?)?;
    let (_, tbs_len, tbs_hdr) = der_header(body)?;
    body.get(..tbs_hdr.checked_add(tbs_len)?)
}

/// Parses a DER tag and definite length: (tag, content length, header length).
fn der_header(b: &[u8]) -> Option<(u8, usize, usize)> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    if first < 0x80 {
        return Some((tag, usize::from(first), 2));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 {
        return None;
    }
    let mut len = 0usize;
    for i in 0..n {
        len = len.checked_shl(8)? | usize::from(*b.get(i.checked_add(2)?)?);
    }
    Some((tag, len, n.checked_add(2)?))
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub(crate) fn sha384(data: &[u8]) -> [u8; 48] {
    let d = ring::digest::digest(&ring::digest::SHA384, data);
    let mut out = [0u8; 48];
    out.copy_from_slice(d.as_ref());
    out
}

/// Decodes a DER INTEGER (as found in AMD's TCB extensions) to a u64.
pub(crate) fn der_small_uint(value: &[u8]) -> Option<u64> {
    let (tag, len, hdr) = der_header(value)?;
    if tag != 0x02 || len == 0 || len > 9 {
        return None;
    }
    let content = value.get(hdr..hdr.checked_add(len)?)?;
    if content.first().is_some_and(|b| b & 0x80 != 0) {
        return None; // negative
    }
    content
        .iter()
        .try_fold(0u64, |acc, &b| Some(acc.checked_shl(8)? | u64::from(b)))
}

/// Decodes a DER OCTET STRING to its content.
pub(crate) fn der_octets(value: &[u8]) -> Option<&[u8]> {
    let (tag, len, hdr) = der_header(value)?;
    if tag != 0x04 {
        return None;
    }
    value.get(hdr..hdr.checked_add(len)?)
}

/// Decodes a DER IA5String/UTF8String/PrintableString.
pub(crate) fn der_string(value: &[u8]) -> Option<String> {
    let (tag, len, hdr) = der_header(value)?;
    if !matches!(tag, 0x0c | 0x13 | 0x16) {
        return None;
    }
    let s = value.get(hdr..hdr.checked_add(len)?)?;
    String::from_utf8(s.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_helpers() {
        assert_eq!(der_small_uint(&[0x02, 0x01, 0x44]), Some(0x44));
        assert_eq!(der_small_uint(&[0x02, 0x02, 0x00, 0xdb]), Some(0xdb));
        assert_eq!(der_small_uint(&[0x02, 0x01, 0x80]), None);
        assert_eq!(der_small_uint(&[0x04, 0x01, 0x01]), None);
        assert_eq!(der_octets(&[0x04, 0x02, 1, 2]), Some(&[1u8, 2][..]));
        assert_eq!(der_octets(&[0x04, 0x03, 1, 2]), None);
        assert_eq!(der_header(&[0x30, 0x82, 0x01]), None);
    }
}
