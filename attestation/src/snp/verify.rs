//! SEV-SNP verification, as the steps of AMD's "Attestation" flow:
//!
//! 1. establish the chain VCEK→ASK→ARK (or VLEK→ASVK→ARK), ARK pinned;
//! 2. check every certificate's validity at the instant;
//! 3. check the certificate is the kind of key the report names;
//! 4. check the report's CPU is the chain's product;
//! 5. verify the report signature with the VCEK/VLEK;
//! 6. check the certificate's TCB and hwID extensions against the report;
//! 7. check AMD's CRL, when given (required by `snp.require_crl`), for the
//!    ASK/ASVK and VCEK/VLEK;
//! 8. apply the policy (guest policy bits, measurements, TCB rules...).

use super::claims::SnpClaims;
use super::report::{SigningKey, SnpReport};
use crate::policy::Policy;
use crate::roots::{AmdProduct, amd_product_for_ark};
use crate::time::UnixTime;
use crate::verdict::{Claims, Platform, ReasonKind, TcbStatus, Verdict};
use crate::x509::{Cert, CertError, Curve, der_octets, der_small_uint, der_string};
use ring::signature::{ECDSA_P384_SHA384_FIXED, UnparsedPublicKey};
use x509_cert::der::oid::ObjectIdentifier;

/// What SNP verification needs besides the report.
#[derive(Debug, Clone, Default)]
pub struct SnpCollateral {
    /// The VCEK or VLEK certificate (DER or PEM).
    pub signer: Option<Vec<u8>>,
    /// A PEM bundle with the ASK or ASVK and the ARK. Default: the built-in
    /// chain of the report's product.
    pub chain: Option<Vec<u8>>,
    /// The ARK's CRL (DER or PEM).
    pub crl: Option<Vec<u8>>,
}

// AMD's VCEK extension OIDs (AMD "Versioned Chip Endorsement Key" spec).
const OID_PRODUCT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.2");
const OID_BL_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.1");
const OID_TEE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.2");
const OID_SNP_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.3");
const OID_UCODE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.8");
const OID_FMC_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.9");
const OID_HW_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.4");
const OID_CSP_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.5");

/// The established chain.
struct Chain {
    leaf: Cert,
    intermediate: Cert,
    root: Cert,
    /// `None` for a simulated root named by the policy.
    product: Option<AmdProduct>,
}

/// Verifies an SNP report; the result is in the returned verdict.
pub fn verify_snp(
    report: &SnpReport,
    collateral: &SnpCollateral,
    policy: &Policy,
    now: UnixTime,
) -> Verdict {
    let mut v = Verdict::new(Platform::Snp);
    let chain = match establish_chain(report, collateral, policy) {
        Ok(c) => Some(c),
        Err(e) => {
            v.reject(e.kind, e.message);
            None
        }
    };
    let turin = chain
        .as_ref()
        .and_then(|c| c.product)
        .map_or(report.is_turin(), |p| p == AmdProduct::Turin);
    let product_name = match &chain {
        Some(Chain {
            product: Some(p), ..
        }) => Some(p.name().to_string()),
        Some(Chain { product: None, .. }) => Some("Simulated".to_string()),
        None => report.product().map(|p| p.name().to_string()),
    };
    v.claims = Some(Claims::Snp(SnpClaims::from_report(
        report,
        turin,
        product_name,
    )));
    let Some(chain) = chain else {
        return v;
    };
    v.simulated = chain.product.is_none();

    for (cert, name) in [
        (&chain.root, "ARK"),
        (&chain.intermediate, "ASK/ASVK"),
        (&chain.leaf, "VCEK/VLEK"),
    ] {
        if let Err(e) = cert.check_validity(now, name) {
            v.reject(e.kind, e.message);
        }
    }
    match &collateral.crl {
        Some(crl) => {
            let certs = [(&chain.intermediate, "ASK/ASVK"), (&chain.leaf, "VCEK/VLEK")];
            let max_age = policy.max_collateral_age_seconds;
            for e in super::crl::check_crl(crl, &chain.root, certs, now, max_age) {
                v.reject(e.kind, e.message);
            }
        }
        None if policy.snp.require_crl => v.reject(
            ReasonKind::CollateralMissing,
            "the policy requires AMD's CRL (snp.require_crl) and none was given (KDS: /vcek/v1/{product}/crl)",
        ),
        None => {}
    }
    if let Err(e) = check_key_kind(report, &chain) {
        v.reject(e.kind, e.message);
    }
    if let (Some(chain_product), Some(report_product)) = (chain.product, report.product())
        && chain_product != report_product
    {
        v.reject(
            ReasonKind::ProductMismatch,
            format!(
                "report is from a {} CPU but the chain is {}'s",
                report_product.name(),
                chain_product.name()
            ),
        );
    }
    if let Err(e) = check_report_signature(report, &chain.leaf) {
        v.reject(e.kind, e.message);
    }
    for e in check_extensions(report, &chain.leaf, turin) {
        v.reject(e.kind, e.message);
    }
    // A TCB status is only meaningful for evidence shown to be authentic.
    let authentic = v.reasons.is_empty();
    let status = crate::policy::apply_snp(policy, report, turin, chain.product, &mut v);
    v.tcb_status = if authentic {
        status
    } else {
        TcbStatus::Unknown
    };
    v
}

fn establish_chain(
    report: &SnpReport,
    col: &SnpCollateral,
    policy: &Policy,
) -> Result<Chain, CertError> {
    let signer = col.signer.as_deref().ok_or_else(|| {
        CertError::new(
            ReasonKind::CertificateMissing,
            "no VCEK/VLEK certificate given (fetch it from AMD KDS for this chip_id and reported_tcb)",
        )
    })?;
    // A bundle as the clouds ship it (Azure's THIM: VCEK, then ASK and
    // ARK) brings its chain along; the ARK must still be a pinned one.
    let (leaf, bundled) = split_leaf(Cert::parse_bundle(signer)?)?;
    let candidates: Vec<Cert> = match (&col.chain, bundled.is_empty()) {
        (Some(bundle), _) => bundled
            .into_iter()
            .chain(Cert::parse_bundle(bundle)?)
            .collect(),
        (None, true) => builtin_candidates(report, &leaf)?,
        (None, false) => bundled.into_iter().chain(builtin_certs(report)?).collect(),
    };
    let intermediate = candidates
        .iter()
        .find(|c| leaf.issued_by(c) && !c.self_issued())
        .cloned()
        .ok_or_else(|| {
            CertError::new(
                ReasonKind::ChainIssuerMismatch,
                format!(
                    "no certificate in the chain is the VCEK/VLEK issuer ({})",
                    leaf.issuer()
                ),
            )
        })?;
    let root = candidates
        .iter()
        .find(|c| intermediate.issued_by(c) && c.self_issued())
        .cloned()
        .ok_or_else(|| {
            CertError::new(
                ReasonKind::ChainIssuerMismatch,
                format!(
                    "no self-signed root in the chain issued the ASK/ASVK ({})",
                    intermediate.issuer()
                ),
            )
        })?;
    let product = match amd_product_for_ark(&root) {
        Some(p) => Some(p),
        None if policy.trusts_simulated_root(&root) => None,
        None => {
            return Err(CertError::new(
                ReasonKind::UntrustedRoot,
                format!(
                    "root {} (sha256 {}) is not a pinned AMD ARK and the policy does not name it",
                    root.subject(),
                    hex::encode(root.sha256())
                ),
            ));
        }
    };
    root.verify_signed_by(&root, "ARK")?;
    intermediate.verify_signed_by(&root, "ASK/ASVK")?;
    leaf.verify_signed_by(&intermediate, "VCEK/VLEK")?;
    Ok(Chain {
        leaf,
        intermediate,
        root,
        product,
    })
}

/// The VCEK/VLEK of a bundle and the other certificates. A lone
/// certificate is the signer whatever it holds (its checks come later); in
/// a bundle the signer is the one certificate with AMD's TCB extensions.
fn split_leaf(mut certs: Vec<Cert>) -> Result<(Cert, Vec<Cert>), CertError> {
    if certs.len() == 1 {
        return Ok((certs.remove(0), Vec::new()));
    }
    let total = certs.len();
    let (mut leaves, others): (Vec<Cert>, Vec<Cert>) = certs
        .into_iter()
        .partition(|c| c.extension(&OID_BL_SPL).is_some());
    let found = leaves.len();
    match leaves.pop() {
        Some(leaf) if found == 1 => Ok((leaf, others)),
        _ => Err(CertError::new(
            ReasonKind::CertificateMalformed,
            format!(
                "expected exactly one VCEK/VLEK certificate, found {found} with TCB extensions among {total}"
            ),
        )),
    }
}

/// The built-in ASKs/ASVKs and ARKs of the report's product (every
/// product for v2 reports, which carry no CPUID).
fn builtin_certs(report: &SnpReport) -> Result<Vec<Cert>, CertError> {
    let products: Vec<AmdProduct> = match report.product() {
        Some(p) => vec![p],
        None => AmdProduct::ALL.to_vec(),
    };
    let mut out = Vec::new();
    for p in products {
        for der in [p.ask_der(), p.asvk_der(), p.ark_der()] {
            out.push(Cert::from_der(der)?);
        }
    }
    Ok(out)
}

/// The built-in chain candidates for `leaf`, chosen from the report's CPUID
/// (v3+) or, for v2 reports, from the leaf's issuer.
fn builtin_candidates(report: &SnpReport, leaf: &Cert) -> Result<Vec<Cert>, CertError> {
    let out = builtin_certs(report)?;
    if !out.iter().any(|c| leaf.issued_by(c)) {
        return Err(CertError::new(
            ReasonKind::ChainIssuerMismatch,
            format!(
                "no built-in AMD chain issued this certificate ({}); pass --cert-chain",
                leaf.issuer()
            ),
        ));
    }
    Ok(out)
}

fn check_key_kind(report: &SnpReport, chain: &Chain) -> Result<(), CertError> {
    let is_vlek = chain.leaf.extension(&OID_CSP_ID).is_some()
        || chain
            .intermediate
            .common_name()
            .is_some_and(|cn| cn.starts_with("SEV-VLEK"));
    match (report.signing_key(), is_vlek) {
        (SigningKey::Vcek, false) | (SigningKey::Vlek, true) => Ok(()),
        (SigningKey::None, _) => Err(CertError::new(
            ReasonKind::SigningKeyMismatch,
            "report has SIGNING_KEY = none (unsigned report)",
        )),
        (want, _) => Err(CertError::new(
            ReasonKind::SigningKeyMismatch,
            format!(
                "report says it is signed by the {want:?} but a {} was supplied",
                if is_vlek { "VLEK" } else { "VCEK" }
            ),
        )),
    }
}

fn check_report_signature(report: &SnpReport, leaf: &Cert) -> Result<(), CertError> {
    if leaf.ec_curve() != Some(Curve::P384) {
        return Err(CertError::new(
            ReasonKind::UnsupportedAlgorithm,
            "VCEK/VLEK key is not ECDSA P-384",
        ));
    }
    let sig = report.signature_p1363().ok_or_else(|| {
        CertError::new(
            ReasonKind::EvidenceSignatureInvalid,
            "signature r/s exceed 384 bits",
        )
    })?;
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, leaf.public_key_bytes())
        .verify(report.signed_bytes(), &sig)
        .map_err(|_| {
            CertError::new(
                ReasonKind::EvidenceSignatureInvalid,
                "report signature does not verify with the VCEK/VLEK",
            )
        })
}

/// Step 6: the certificate must be for exactly this TCB and chip.
fn check_extensions(report: &SnpReport, leaf: &Cert, turin: bool) -> Vec<CertError> {
    let mut errors = Vec::new();
    let tcb = report.reported_tcb(turin);
    let mut spls: Vec<(&ObjectIdentifier, &str, u8)> = vec![
        (&OID_BL_SPL, "bl", tcb.bl),
        (&OID_TEE_SPL, "tee", tcb.tee),
        (&OID_SNP_SPL, "snp", tcb.snp),
        (&OID_UCODE_SPL, "ucode", tcb.ucode),
    ];
    if let Some(fmc) = tcb.fmc {
        spls.push((&OID_FMC_SPL, "fmc", fmc));
    }
    for (oid, name, want) in spls {
        match leaf.extension(oid).map(der_small_uint) {
            Some(Some(got)) if got == u64::from(want) => {}
            Some(Some(got)) => errors.push(CertError::new(
                ReasonKind::VcekTcbMismatch,
                format!(
                    "certificate {name} SPL is {got} but the report's reported_tcb.{name} is {want}"
                ),
            )),
            Some(None) => errors.push(CertError::new(
                ReasonKind::CertificateMalformed,
                format!("certificate {name} SPL extension is not an INTEGER"),
            )),
            None => errors.push(CertError::new(
                ReasonKind::VcekTcbMismatch,
                format!("certificate has no {name} SPL extension"),
            )),
        }
    }
    if let Some(name) = leaf.extension(&OID_PRODUCT_NAME).and_then(der_string)
        && name.is_empty()
    {
        errors.push(CertError::new(
            ReasonKind::CertificateMalformed,
            "empty productName extension",
        ));
    }
    // hwID is present in VCEKs only; a VLEK is not tied to one chip.
    if report.signing_key() == SigningKey::Vcek && !report.chip_id_masked() {
        let want = report.chip_id_for_vcek(turin);
        match leaf.extension(&OID_HW_ID) {
            // Older VCEKs hold the raw bytes; some encoders wrap them in an OCTET STRING.
            Some(v) if v == want || der_octets(v) == Some(want) => {}
            Some(_) => errors.push(CertError::new(
                ReasonKind::VcekChipIdMismatch,
                "certificate hwID is not the report's chip_id",
            )),
            None => errors.push(CertError::new(
                ReasonKind::VcekChipIdMismatch,
                "VCEK has no hwID extension",
            )),
        }
    }
    errors
}
