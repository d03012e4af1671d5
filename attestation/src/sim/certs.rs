//! Issuing the simulated hierarchy's certificates with x509-cert's builder.

use super::{SimError, crypto};
use crate::time::UnixTime;
use std::str::FromStr;
use std::time::Duration;
use x509_cert::builder::{
    Builder, CertificateBuilder, Result as BuildResult, profile::BuilderProfile,
};
use x509_cert::certificate::TbsCertificate;
use x509_cert::der::{Encode, asn1::OctetString, oid::ObjectIdentifier};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoRef;
use x509_cert::time::{Time, Validity};

/// A profile that sets the names and exactly the extensions we give it.
pub(crate) struct Profile {
    pub subject: Name,
    pub issuer: Name,
    pub extensions: Vec<Extension>,
}

impl BuilderProfile for Profile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }
    fn get_subject(&self) -> Name {
        self.subject.clone()
    }
    fn build_extensions(
        &self,
        _spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        _tbs: &TbsCertificate,
    ) -> BuildResult<Vec<Extension>> {
        Ok(self.extensions.clone())
    }
}

pub(crate) fn name(dn: &str) -> Result<Name, SimError> {
    Name::from_str(dn).map_err(crypto)
}

/// A non-critical extension with a raw value.
pub(crate) fn ext(oid: &str, value: Vec<u8>) -> Result<Extension, SimError> {
    Ok(Extension {
        extn_id: ObjectIdentifier::new(oid).map_err(crypto)?,
        critical: false,
        extn_value: OctetString::new(value).map_err(crypto)?,
    })
}

/// A critical extension with a raw value.
pub(crate) fn ext_critical(oid: &str, value: Vec<u8>) -> Result<Extension, SimError> {
    Ok(Extension {
        critical: true,
        ..ext(oid, value)?
    })
}

/// DER INTEGER for a small unsigned value.
pub(crate) fn der_uint(v: u8) -> Vec<u8> {
    if v & 0x80 != 0 {
        vec![0x02, 0x02, 0x00, v]
    } else {
        vec![0x02, 0x01, v]
    }
}

/// DER IA5String.
pub(crate) fn der_ia5(s: &str) -> Vec<u8> {
    let mut out = vec![0x16, u8::try_from(s.len()).unwrap_or(0)];
    out.extend_from_slice(s.as_bytes());
    out
}

/// A certificate time for `t`.
pub(crate) fn x509_time(t: UnixTime) -> Result<Time, SimError> {
    let at = std::time::UNIX_EPOCH
        .checked_add(Duration::from_secs(t.secs()))
        .ok_or_else(|| crypto("time overflow"))?;
    Time::try_from(at).map_err(crypto)
}

/// Validity from a day before `now` for `years`.
pub(crate) fn validity(now: UnixTime, years: u64) -> Result<Validity, SimError> {
    let start = UnixTime(now.secs().saturating_sub(86_400));
    let end = UnixTime(
        now.secs()
            .saturating_add(years.saturating_mul(365 * 86_400)),
    );
    Ok(Validity::new(x509_time(start)?, x509_time(end)?))
}

pub(crate) fn serial(n: u32) -> SerialNumber {
    SerialNumber::from(n)
}

/// Issues a certificate for `subject_key`'s public key signed
/// (deterministically, ECDSA) by `issuer_key`, valid from a day before
/// `now` for `years`; `Sig` names the signature encoding (DER for X.509).
#[allow(clippy::too_many_arguments)]
pub(crate) fn issue_ecdsa<S, Sig>(
    subject_key: &S,
    issuer_key: &S,
    subject: &str,
    issuer: &str,
    serial_no: u32,
    extensions: Vec<Extension>,
    now: UnixTime,
    years: u64,
) -> Result<Vec<u8>, SimError>
where
    S: p384::ecdsa::signature::Signer<Sig>
        + p384::ecdsa::signature::Keypair
        + x509_cert::spki::DynSignatureAlgorithmIdentifier,
    S::VerifyingKey: x509_cert::spki::EncodePublicKey,
    Sig: x509_cert::spki::SignatureBitStringEncoding,
{
    let spki = x509_cert::spki::SubjectPublicKeyInfoOwned::from_key(&subject_key.verifying_key())
        .map_err(crypto)?;
    let profile = Profile {
        subject: name(subject)?,
        issuer: name(issuer)?,
        extensions,
    };
    let builder = CertificateBuilder::new(profile, serial(serial_no), validity(now, years)?, spki)
        .map_err(crypto)?;
    let cert = builder.build::<_, Sig>(issuer_key).map_err(crypto)?;
    cert.to_der().map_err(crypto)
}

/// Builds and signs with a randomized signer (RSA-PSS).
pub(crate) fn build_pss(
    builder: CertificateBuilder<Profile>,
    key: &rsa::pss::SigningKey<sha2::Sha384>,
) -> Result<Vec<u8>, SimError> {
    let mut rng = super::os_rng();
    let cert = builder
        .build_with_rng::<_, rsa::pss::Signature, _>(key, &mut rng)
        .map_err(crypto)?;
    cert.to_der().map_err(crypto)
}

/// A CRL as AMD's KDS serves one: issued by `issuer_dn`, signed RSA-PSS
/// SHA-384 with `key`, valid from `this_update` to `next_update`, listing
/// `revoked` serial numbers.
pub(crate) fn crl_pss(
    issuer_dn: &str,
    key: &rsa::PrivateKey,
    this_update: UnixTime,
    next_update: UnixTime,
    revoked: &[u32],
) -> Result<Vec<u8>, SimError> {
    use rsa::signature::{RandomizedSigner, SignatureEncoding};
    use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
    use x509_cert::der::asn1::BitString;
    use x509_cert::spki::DynSignatureAlgorithmIdentifier;
    let signer = rsa::pss::SigningKey::<sha2::Sha384>::new(key.clone());
    let algorithm = signer.signature_algorithm_identifier().map_err(crypto)?;
    let revoked = revoked
        .iter()
        .map(|&n| {
            Ok(RevokedCert {
                serial_number: serial(n),
                revocation_date: x509_time(this_update)?,
                crl_entry_extensions: None,
            })
        })
        .collect::<Result<Vec<_>, SimError>>()?;
    let tbs = TbsCertList {
        version: x509_cert::Version::V2,
        signature: algorithm.clone(),
        issuer: name(issuer_dn)?,
        this_update: x509_time(this_update)?,
        next_update: Some(x509_time(next_update)?),
        revoked_certificates: (!revoked.is_empty()).then_some(revoked),
        crl_extensions: None,
    };
    let tbs_der = tbs.to_der().map_err(crypto)?;
    let signature = signer.sign_with_rng(&mut super::os_rng(), &tbs_der);
    let list = CertificateList {
        tbs_cert_list: tbs,
        signature_algorithm: algorithm,
        signature: BitString::from_bytes(&signature.to_vec()).map_err(crypto)?,
    };
    list.to_der().map_err(crypto)
}
