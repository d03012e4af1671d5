//! AMD's certificate revocation list (KDS `crl`): signed by the ARK, it
//! lists revoked ASKs/ASVKs and VCEKs/VLEKs. Checked when the collateral
//! carries one, and required when the policy says `require_crl`.

use crate::time::UnixTime;
use crate::verdict::ReasonKind;
use crate::x509::{Cert, CertError, SignatureFailure, Signed};
use x509_cert::certificate::Raw;
use x509_cert::crl::CertificateList;
use x509_cert::der::Decode;

fn malformed(m: impl Into<String>) -> CertError {
    CertError::new(ReasonKind::CollateralMalformed, m)
}

/// The CRL's DER, from DER or PEM (`X509 CRL`).
fn der_of(bytes: &[u8]) -> Result<Vec<u8>, CertError> {
    if crate::x509::looks_like_pem(bytes) {
        let p = pem::parse(bytes).map_err(|e| malformed(format!("AMD CRL PEM: {e}")))?;
        if p.tag() != "X509 CRL" {
            return Err(malformed(format!(
                "AMD CRL PEM holds a {:?}, not an X509 CRL",
                p.tag()
            )));
        }
        Ok(p.into_contents())
    } else {
        Ok(bytes.to_vec())
    }
}

/// Checks `crl` against the established chain at `now`: issued and signed
/// by the chain's ARK, current (`thisUpdate ≤ now < nextUpdate`), no older
/// than `max_age` seconds (the policy's `max_collateral_age_seconds`), and
/// revoking neither the intermediate nor the leaf.
pub(crate) fn check_crl(
    crl: &[u8],
    root: &Cert,
    chain: [(&Cert, &str); 2],
    now: UnixTime,
    max_age: Option<u64>,
) -> Vec<CertError> {
    let der = match der_of(crl) {
        Ok(d) => d,
        Err(e) => return vec![e],
    };
    let list = match CertificateList::<Raw>::from_der(&der) {
        Ok(l) => l,
        Err(e) => return vec![malformed(format!("AMD CRL DER: {e}"))],
    };
    let tbs = &list.tbs_cert_list;
    if tbs.issuer.to_string() != root.subject() {
        return vec![CertError::new(
            ReasonKind::CollateralSignatureInvalid,
            format!(
                "the AMD CRL is issued by {}, not by this chain's ARK ({})",
                tbs.issuer,
                root.subject()
            ),
        )];
    }
    let signed = Signed {
        der: &der,
        outer: &list.signature_algorithm,
        inner: &tbs.signature,
        signature: &list.signature,
    };
    if let Err(f) = signed.verify(root) {
        let e = match f {
            SignatureFailure::Malformed(m) => malformed(format!("AMD CRL: {m}")),
            SignatureFailure::Unsupported(m) => {
                CertError::new(ReasonKind::UnsupportedAlgorithm, format!("AMD CRL: {m}"))
            }
            SignatureFailure::Invalid => CertError::new(
                ReasonKind::CollateralSignatureInvalid,
                "the AMD CRL's signature does not verify with the ARK",
            ),
        };
        return vec![e];
    }
    let mut errors = Vec::new();
    let secs = |t: &x509_cert::time::Time| t.to_unix_duration().as_secs();
    let this = secs(&tbs.this_update);
    if now.secs() < this {
        errors.push(CertError::new(
            ReasonKind::CollateralExpired,
            format!(
                "the AMD CRL's thisUpdate {} is in the future",
                UnixTime(this)
            ),
        ));
    }
    if let Some(max) = max_age
        && now.secs().saturating_sub(this) > max
    {
        errors.push(CertError::new(
            ReasonKind::CollateralTooOld,
            format!(
                "the AMD CRL was issued at {}, older than the policy's max_collateral_age_seconds {max}",
                UnixTime(this)
            ),
        ));
    }
    match &tbs.next_update {
        Some(next) if now.secs() >= secs(next) => errors.push(CertError::new(
            ReasonKind::CollateralExpired,
            format!(
                "the AMD CRL expired at its nextUpdate {}; fetch a current one",
                UnixTime(secs(next))
            ),
        )),
        Some(_) => {}
        None => errors.push(malformed("the AMD CRL has no nextUpdate")),
    }
    for (cert, name) in chain {
        let serial = cert.serial();
        let revoked = tbs
            .revoked_certificates
            .iter()
            .flatten()
            .any(|r| r.serial_number.as_bytes() == serial);
        if revoked {
            errors.push(CertError::new(
                ReasonKind::CertificateRevoked,
                format!(
                    "the {name} ({}, serial {}) is revoked by AMD's CRL",
                    cert.subject(),
                    hex::encode(serial)
                ),
            ));
        }
    }
    errors
}
