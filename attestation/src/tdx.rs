//! Intel TDX and SGX DCAP quotes (v3, v4, v5), verified offline against
//! collateral with `dcap-qvl`, whose results and errors we translate into
//! our typed verdict. The trust anchor is the pinned Intel SGX Root CA, or
//! a simulated root the policy names.
//!
//! `dcap-qvl` implements Intel's verification steps (TCB info and QE
//! identity signatures and chains, CRLs, PCK chain, QE report signature and
//! binding, quote signature, TCB level matching). We add: choosing the
//! anchor, the policy's measurement and status rules, and error typing.

use crate::collateral::DcapCollateral;
use crate::evidence::ParseError;
use crate::policy::{Policy, allowed, apply_dcap_status};
use crate::roots::{INTEL_SGX_ROOT_CA_DER, INTEL_SGX_ROOT_CA_SHA256};
use crate::time::UnixTime;
use crate::verdict::{Claims, Platform, ReasonKind, TcbStatus, Verdict};
use crate::x509::Cert;
use dcap_qvl::quote::{Quote, Report};
use serde::Serialize;

/// A parsed (not yet verified) DCAP quote.
#[derive(Debug, Clone)]
pub struct DcapQuote {
    bytes: Vec<u8>,
    quote: Quote,
    trailing: Option<Trailing>,
}

/// Bytes after the signature data: tolerated when zero (padding), a
/// rejection reason otherwise. They are outside everything signed.
#[derive(Debug, Clone, Copy)]
struct Trailing {
    offset: usize,
    len: usize,
    nonzero: Option<usize>,
}

impl DcapQuote {
    /// Parses a v3 (SGX), v4 or v5 (TDX) quote. Bytes after the signature
    /// data are kept aside: zero padding (several real quotes carry it) is
    /// fine, anything else makes verification reject the quote.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let quote = Quote::parse(bytes).map_err(|e| ParseError::Field {
            what: "DCAP quote",
            field: "quote",
            offset: 0,
            message: format!("{e:#}"),
        })?;
        let version = u32::from(quote.header.version);
        let ok = match &quote.report {
            Report::SgxEnclave(_) => version == 3,
            _ => version == 4 || version == 5,
        };
        if !ok {
            return Err(ParseError::UnsupportedVersion {
                what: "DCAP quote",
                version,
                offset: 0,
            });
        }
        let trailing = quote_len(bytes, &quote)
            .and_then(|used| bytes.get(used..).map(|rest| (used, rest)))
            .map(|(used, rest)| Trailing {
                offset: used,
                len: rest.len(),
                nonzero: rest
                    .iter()
                    .position(|&b| b != 0)
                    .map(|p| used.saturating_add(p)),
            });
        Ok(DcapQuote {
            bytes: bytes.to_vec(),
            quote,
            trailing,
        })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn quote(&self) -> &Quote {
        &self.quote
    }

    pub fn platform(&self) -> Platform {
        if self.quote.report.is_sgx() {
            Platform::Sgx
        } else {
            Platform::Tdx
        }
    }

    /// The claims, for TDX or SGX.
    pub fn claims(&self) -> Claims {
        let version = self.quote.header.version;
        match &self.quote.report {
            Report::SgxEnclave(r) => Claims::Sgx(SgxClaims {
                version,
                mrenclave: hex::encode(r.mr_enclave),
                mrsigner: hex::encode(r.mr_signer),
                isv_prod_id: r.isv_prod_id,
                isv_svn: r.isv_svn,
                attributes: hex::encode(r.attributes),
                report_data: hex::encode(r.report_data),
            }),
            Report::TD10(r) => Claims::Tdx(TdxClaims::new(version, r)),
            Report::TD15(r) => Claims::Tdx(TdxClaims::new(version, &r.base)),
            Report::TD15Ex(r) => Claims::Tdx(TdxClaims::new(version, &r.base.base)),
        }
    }
}

/// The length of the quote proper: header (48) + body + u32 signature
/// data length + signature data.
fn quote_len(bytes: &[u8], quote: &Quote) -> Option<usize> {
    let body = match (&quote.report, quote.header.version) {
        (Report::SgxEnclave(_), _) => 384usize,
        (_, 4) => 584,
        (_, _) => {
            // v5: body type (u16) + body size (u32) + body.
            let size = bytes.get(50..54)?;
            6usize.checked_add(usize::try_from(u32::from_le_bytes(size.try_into().ok()?)).ok()?)?
        }
    };
    let sig_len_at = 48usize.checked_add(body)?;
    let sig_len = bytes.get(sig_len_at..sig_len_at.checked_add(4)?)?;
    let sig_len = usize::try_from(u32::from_le_bytes(sig_len.try_into().ok()?)).ok()?;
    sig_len_at.checked_add(4)?.checked_add(sig_len)
}

/// Claims of a TD quote (hex lowercase).
#[derive(Debug, Clone, Serialize)]
pub struct TdxClaims {
    pub version: u16,
    /// 0x81 for TDX.
    pub tee_type: String,
    pub mrtd: String,
    pub rtmr0: String,
    pub rtmr1: String,
    pub rtmr2: String,
    pub rtmr3: String,
    pub mrconfigid: String,
    pub mrowner: String,
    pub mrownerconfig: String,
    pub mrseam: String,
    pub report_data: String,
    pub tee_tcb_svn: String,
    pub td_attributes: String,
    pub xfam: String,
    pub debug: bool,
}

impl TdxClaims {
    fn new(version: u16, r: &dcap_qvl::quote::TDReport10) -> Self {
        TdxClaims {
            version,
            tee_type: "0x81".to_string(),
            mrtd: hex::encode(r.mr_td),
            rtmr0: hex::encode(r.rt_mr0),
            rtmr1: hex::encode(r.rt_mr1),
            rtmr2: hex::encode(r.rt_mr2),
            rtmr3: hex::encode(r.rt_mr3),
            mrconfigid: hex::encode(r.mr_config_id),
            mrowner: hex::encode(r.mr_owner),
            mrownerconfig: hex::encode(r.mr_owner_config),
            mrseam: hex::encode(r.mr_seam),
            report_data: hex::encode(r.report_data),
            tee_tcb_svn: hex::encode(r.tee_tcb_svn),
            td_attributes: hex::encode(r.td_attributes),
            xfam: hex::encode(r.xfam),
            // TUD.DEBUG is bit 0 of TDATTRIBUTES.
            debug: r.td_attributes[0] & 1 != 0,
        }
    }
}

/// Claims of an SGX enclave quote (hex lowercase).
#[derive(Debug, Clone, Serialize)]
pub struct SgxClaims {
    pub version: u16,
    pub mrenclave: String,
    pub mrsigner: String,
    pub isv_prod_id: u16,
    pub isv_svn: u16,
    pub attributes: String,
    pub report_data: String,
}

/// Verifies a DCAP quote; the result is in the returned verdict.
pub fn verify_dcap(
    quote: &DcapQuote,
    collateral: Option<&DcapCollateral>,
    policy: &Policy,
    now: UnixTime,
) -> Verdict {
    let mut v = Verdict::new(quote.platform());
    v.claims = Some(quote.claims());
    if let Some(Trailing {
        offset,
        len,
        nonzero: Some(at),
    }) = quote.trailing
    {
        v.reject(
            ReasonKind::EvidenceMalformed,
            format!("{len} bytes follow the quote's signature data at offset {offset}, non-zero from offset {at}"),
        );
    }
    let Some(col) = collateral else {
        v.reject(
            ReasonKind::CollateralMissing,
            "DCAP verification needs collateral (--collateral)",
        );
        return v;
    };
    let root = match choose_root(col, policy) {
        Ok(r) => r,
        Err((kind, msg)) => {
            v.reject(kind, msg);
            return v;
        }
    };
    v.simulated = root.1;
    let qvl_col = dcap_qvl::QuoteCollateralV3 {
        pck_crl_issuer_chain: col.pck_crl_issuer_chain.clone(),
        root_ca_crl: col.root_ca_crl.clone(),
        pck_crl: col.pck_crl.clone(),
        tcb_info_issuer_chain: col.tcb_info_issuer_chain.clone(),
        tcb_info: col.tcb_info.clone(),
        tcb_info_signature: col.tcb_info_signature.clone(),
        qe_identity_issuer_chain: col.qe_identity_issuer_chain.clone(),
        qe_identity: col.qe_identity.clone(),
        qe_identity_signature: col.qe_identity_signature.clone(),
        pck_certificate_chain: None,
    };
    // Debug TDs are our policy's call, not dcap-qvl's, so the verdict can
    // name the reason; everything cryptographic stays with dcap-qvl.
    let verifier = dcap_qvl::verify::QuoteVerifier::new(root.0).allow_debug(true);
    match verifier.verify(quote.bytes(), &qvl_col, now.secs()) {
        Ok(report) => {
            v.tcb_status = TcbStatus::from_intel(&report.status).unwrap_or(TcbStatus::Unknown);
            v.advisory_ids = report.advisory_ids.clone();
        }
        Err(e) => {
            let msg = format!("{e:#}");
            let kind = classify_dcap_error(&msg);
            if kind == ReasonKind::TcbNoMatchingLevel {
                v.tcb_status = TcbStatus::NoMatchingTcbLevel;
            } else if kind == ReasonKind::TcbRevoked {
                v.tcb_status = TcbStatus::Revoked;
            }
            v.reject(kind, msg);
        }
    }
    if let Some(max) = policy.max_collateral_age_seconds {
        check_collateral_age(col, max, now, &mut v);
    }
    apply_policy(quote, policy, &mut v);
    v
}

/// The trust anchor: the last certificate of the TCB info issuer chain
/// must be the pinned Intel root, or a simulated root the policy names.
fn choose_root(
    col: &DcapCollateral,
    policy: &Policy,
) -> Result<(Vec<u8>, bool), (ReasonKind, String)> {
    let chain = Cert::parse_bundle(col.tcb_info_issuer_chain.as_bytes()).map_err(|e| {
        (
            ReasonKind::CollateralMalformed,
            format!("tcb_info_issuer_chain: {e}"),
        )
    })?;
    let root = chain.iter().find(|c| c.self_issued()).ok_or((
        ReasonKind::CertificateMissing,
        "tcb_info_issuer_chain has no root certificate".to_string(),
    ))?;
    if hex::encode(root.sha256()) == INTEL_SGX_ROOT_CA_SHA256 {
        Ok((INTEL_SGX_ROOT_CA_DER.to_vec(), false))
    } else if policy.trusts_simulated_root(root) {
        Ok((root.der().to_vec(), true))
    } else {
        Err((
            ReasonKind::UntrustedRoot,
            format!(
                "collateral chains to {} (sha256 {}), not the pinned Intel SGX Root CA, and the policy does not name it",
                root.subject(),
                hex::encode(root.sha256())
            ),
        ))
    }
}

/// Maps dcap-qvl's error text onto our reason kinds. dcap-qvl reports
/// errors as `anyhow` chains; the phrases below are its own, and
/// `tests/dcap_errors.rs` pins the reason each real fault gets.
fn classify_dcap_error(msg: &str) -> ReasonKind {
    let m = msg.to_ascii_lowercase();
    let has = |s: &str| m.contains(s);
    if has("no matching tcb level") {
        ReasonKind::TcbNoMatchingLevel
    } else if has("revoked") && has("tcb status") {
        ReasonKind::TcbRevoked
    } else if has("revoked") {
        ReasonKind::CertificateRevoked
    } else if has("expired") && (has("tcbinfo") || has("qe identity") || has("tcb info"))
        || has("issue date is in the future")
        || has("crlexpired")
    {
        ReasonKind::CollateralExpired
    } else if has("signature is invalid for tcb_info")
        || has("signature is invalid for qe_identity")
        || has("invalidcrlsignature")
    {
        ReasonKind::CollateralSignatureInvalid
    } else if has("qe report hash mismatch") {
        ReasonKind::QeBindingInvalid
    } else if has("signature is invalid for qe_report") || has("isv enclave report signature") {
        ReasonKind::EvidenceSignatureInvalid
    } else if has("fmspc mismatch") || has("non-tdx tcb info") || has("non-sgx tcb info") {
        ReasonKind::CollateralMismatch
    } else if has("qe identity")
        && (has("mrsigner")
            || has("isvprodid")
            || has("below minimum")
            || has("unsupported qe identity"))
    {
        ReasonKind::QeIdentityMismatch
    } else if has("expired") || has("notvalidyet") || has("not valid yet") || has("certexpired") {
        ReasonKind::CertificateExpired
    } else if has("unknownissuer")
        || has("badsignature")
        || has("invalid signature")
        || has("certificate chain")
        || has("pck certificate")
    {
        ReasonKind::CertificateSignatureInvalid
    } else if has("decode") || has("parse") || has("json") || has("crl") {
        ReasonKind::CollateralMalformed
    } else if has("debug") {
        ReasonKind::DebugAllowed
    } else {
        ReasonKind::DcapVerificationFailed
    }
}

fn check_collateral_age(col: &DcapCollateral, max: u64, now: UnixTime, v: &mut Verdict) {
    #[derive(serde::Deserialize)]
    struct Dated {
        #[serde(rename = "issueDate")]
        issue_date: String,
    }
    for (name, doc) in [
        ("tcb_info", &col.tcb_info),
        ("qe_identity", &col.qe_identity),
    ] {
        let issued = serde_json::from_str::<Dated>(doc)
            .ok()
            .and_then(|d| parse_rfc3339(&d.issue_date));
        match issued {
            Some(t) if now.secs().saturating_sub(t) > max => v.reject(
                ReasonKind::CollateralTooOld,
                format!(
                    "{name} was issued at {}, older than the policy's {max} s",
                    UnixTime(t)
                ),
            ),
            Some(_) => {}
            None => v.reject(
                ReasonKind::CollateralMalformed,
                format!("{name}: no readable issueDate"),
            ),
        }
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` (Intel's collateral dates).
pub(crate) fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        std::str::from_utf8(b.get(r)?).ok()?.parse().ok()
    };
    if b.len() < 20 || b.get(4) != Some(&b'-') || b.get(10) != Some(&b'T') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Days from civil (Hinnant), inverse of time::civil_from_days.
    let (y, mo) = if mo <= 2 {
        (y.checked_sub(1)?, mo.checked_add(9)?)
    } else {
        (y, mo.checked_sub(3)?)
    };
    let era = y / 400;
    let yoe = y.checked_sub(era.checked_mul(400)?)?;
    let doy = (153u64.checked_mul(mo)?.checked_add(2)? / 5)
        .checked_add(d)?
        .checked_sub(1)?;
    let doe = yoe
        .checked_mul(365)?
        .checked_add(yoe / 4)?
        .checked_sub(yoe / 100)?
        .checked_add(doy)?;
    let days = era
        .checked_mul(146_097)?
        .checked_add(doe)?
        .checked_sub(719_468)?;
    days.checked_mul(86_400)?.checked_add(
        h.checked_mul(3600)?
            .checked_add(mi.checked_mul(60)?)?
            .checked_add(se)?,
    )
}

fn apply_policy(quote: &DcapQuote, policy: &Policy, v: &mut Verdict) {
    policy.check_platform(v);
    match &quote.quote().report {
        Report::SgxEnclave(r) => {
            let p = &policy.sgx;
            if !allowed(&p.mrenclave, &r.mr_enclave) {
                v.reject(
                    ReasonKind::EnclaveIdentityNotAllowed,
                    format!("MRENCLAVE {} is not allowed", hex::encode(r.mr_enclave)),
                );
            }
            if !allowed(&p.mrsigner, &r.mr_signer) {
                v.reject(
                    ReasonKind::EnclaveIdentityNotAllowed,
                    format!("MRSIGNER {} is not allowed", hex::encode(r.mr_signer)),
                );
            }
            // ATTRIBUTES.DEBUG is bit 1 of the first byte.
            if r.attributes[0] & 0b10 != 0 && !p.allow_debug {
                v.reject(ReasonKind::DebugAllowed, "the enclave is a debug enclave");
            }
            policy.check_report_data(&r.report_data, v);
            apply_dcap_status(&p.tcb_status, v);
        }
        Report::TD10(r) => apply_td(policy, r, v),
        Report::TD15(r) => apply_td(policy, &r.base, v),
        Report::TD15Ex(r) => apply_td(policy, &r.base.base, v),
    }
}

fn apply_td(policy: &Policy, r: &dcap_qvl::quote::TDReport10, v: &mut Verdict) {
    let p = &policy.tdx;
    if !allowed(&p.mrtd, &r.mr_td) {
        v.reject(
            ReasonKind::MeasurementNotAllowed,
            format!("MRTD {} is not allowed", hex::encode(r.mr_td)),
        );
    }
    for (i, (list, value)) in p
        .rtmr
        .iter()
        .zip([&r.rt_mr0, &r.rt_mr1, &r.rt_mr2, &r.rt_mr3])
        .enumerate()
    {
        if !allowed(list, value) {
            v.reject(
                ReasonKind::RtmrNotAllowed,
                format!("RTMR{i} {} is not allowed", hex::encode(value)),
            );
        }
    }
    if !allowed(&p.mrconfigid, &r.mr_config_id) {
        v.reject(
            ReasonKind::HostDataNotAllowed,
            format!("MRCONFIGID {} is not allowed", hex::encode(r.mr_config_id)),
        );
    }
    if !allowed(&p.mrowner, &r.mr_owner) {
        v.reject(
            ReasonKind::HostDataNotAllowed,
            format!("MROWNER {} is not allowed", hex::encode(r.mr_owner)),
        );
    }
    if r.td_attributes[0] & 1 != 0 && !p.allow_debug {
        v.reject(
            ReasonKind::DebugAllowed,
            "TD attributes allow debugging (TUD.DEBUG)",
        );
    }
    policy.check_report_data(&r.report_data, v);
    apply_dcap_status(&p.tcb_status, v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2025-10-01T08:00:00Z"), Some(1_759_305_600));
        assert_eq!(
            parse_rfc3339("2024-02-29T12:34:56Z").map(|t| UnixTime(t).to_string()),
            Some("2024-02-29T12:34:56Z".into())
        );
        assert_eq!(parse_rfc3339("garbage"), None);
    }
}
