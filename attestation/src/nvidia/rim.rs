//! NVIDIA reference integrity manifests (RIMs): SWID tags (ISO 19770-2)
//! listing the golden measurements of a driver or VBIOS, signed with an
//! enveloped XML signature (ECDSA P-384, C14N 1.1) whose certificate chain
//! ends in NVIDIA's CoRIM signing root.
//!
//! Verification: the XML signature's reference digest over the document
//! without the signature, the signature over the canonical SignedInfo, the
//! embedded chain to the pinned root at the instant; then the measurements.

use super::c14n::canonicalize;
use crate::policy::Policy;
use crate::roots::{NVIDIA_RIM_ROOT_DER, NVIDIA_RIM_ROOT_SHA256};
use crate::time::UnixTime;
use crate::verdict::ReasonKind;
use crate::x509::{Cert, CertError, Curve};
use base64::Engine;
use ring::signature::{ECDSA_P384_SHA384_FIXED, UnparsedPublicKey};
use roxmltree::{Document, Node, ParsingOptions};
use std::collections::BTreeMap;

const DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
const C14N11: &str = "http://www.w3.org/2006/12/xml-c14n11";
const C14N10: &str = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315";
const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
const ECDSA_SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384";
/// RIMs are tens of kilobytes; refuse anything absurd before parsing.
const MAX_RIM_BYTES: usize = 4 << 20;

/// One measurement of a RIM: its golden values (any may match).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RimMeasurement {
    pub active: bool,
    pub alternatives: Vec<Vec<u8>>,
}

/// A verified RIM.
#[derive(Debug, Clone)]
pub struct Rim {
    /// The version the RIM describes (`colloquialVersion`, e.g. "545.00").
    pub version: Option<String>,
    /// Measurement index (as in the RIM, 0-based) → golden values.
    pub measurements: BTreeMap<u32, RimMeasurement>,
    /// The signer's chain, signer first, ending in the root (for the
    /// signers' OCSP status).
    pub chain: Vec<Cert>,
    /// Whether the chain ended in a simulated root the policy names.
    pub simulated: bool,
}

fn err(kind: ReasonKind, m: impl Into<String>) -> CertError {
    CertError::new(kind, m)
}

fn rim_err(m: impl Into<String>) -> CertError {
    err(ReasonKind::GpuRimInvalid, m)
}

fn child<'a, 'i>(node: Node<'a, 'i>, ns: &str, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|c| {
        c.is_element() && c.tag_name().namespace() == Some(ns) && c.tag_name().name() == name
    })
}

fn algorithm<'a>(node: Option<Node<'a, '_>>) -> Option<&'a str> {
    node.and_then(|n| n.attribute("Algorithm"))
}

fn b64(s: &str) -> Option<Vec<u8>> {
    let clean: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(clean).ok()
}

/// Verifies a RIM's signature and chain (to NVIDIA's pinned RIM root) at
/// `now` and reads its measurements.
pub fn verify_rim(xml: &[u8], now: UnixTime) -> Result<Rim, CertError> {
    verify_rim_with(xml, now, &Policy::default())
}

/// [`verify_rim`], also trusting a simulated root `policy` names.
pub fn verify_rim_with(xml: &[u8], now: UnixTime, policy: &Policy) -> Result<Rim, CertError> {
    if xml.len() > MAX_RIM_BYTES {
        return Err(rim_err(format!(
            "RIM is {} bytes, more than {MAX_RIM_BYTES}",
            xml.len()
        )));
    }
    let text = std::str::from_utf8(xml).map_err(|e| rim_err(format!("RIM is not UTF-8: {e}")))?;
    let opts = ParsingOptions {
        allow_dtd: false,
        ..ParsingOptions::default()
    };
    let doc =
        Document::parse_with_options(text, opts).map_err(|e| rim_err(format!("RIM XML: {e}")))?;
    let root = doc.root_element();
    let sig = child(root, DSIG, "Signature")
        .ok_or_else(|| rim_err("RIM has no enveloped ds:Signature"))?;
    let signed_info = child(sig, DSIG, "SignedInfo").ok_or_else(|| rim_err("no ds:SignedInfo"))?;

    // The algorithms we implement, and only those.
    let c14n_alg = algorithm(child(signed_info, DSIG, "CanonicalizationMethod"));
    if !matches!(c14n_alg, Some(C14N11 | C14N10)) {
        return Err(err(
            ReasonKind::UnsupportedAlgorithm,
            format!("canonicalization {c14n_alg:?}"),
        ));
    }
    let sig_alg = algorithm(child(signed_info, DSIG, "SignatureMethod"));
    if sig_alg != Some(ECDSA_SHA384) {
        return Err(err(
            ReasonKind::UnsupportedAlgorithm,
            format!("signature method {sig_alg:?}"),
        ));
    }
    let references: Vec<Node<'_, '_>> = signed_info
        .children()
        .filter(|c| c.is_element() && c.tag_name().name() == "Reference")
        .collect();
    let [reference] = references.as_slice() else {
        return Err(rim_err(format!(
            "expected one ds:Reference, found {}",
            references.len()
        )));
    };
    if reference.attribute("URI") != Some("") {
        return Err(rim_err(
            "the reference must cover the whole document (URI=\"\")",
        ));
    }
    let transforms: Vec<&str> = child(*reference, DSIG, "Transforms")
        .map(|t| {
            t.children()
                .filter(|c| c.is_element())
                .filter_map(|c| c.attribute("Algorithm"))
                .collect()
        })
        .unwrap_or_default();
    if !transforms
        .iter()
        .all(|t| matches!(*t, ENVELOPED | C14N11 | C14N10))
        || !transforms.contains(&ENVELOPED)
    {
        return Err(err(
            ReasonKind::UnsupportedAlgorithm,
            format!("transforms {transforms:?}"),
        ));
    }
    let digest_alg = match algorithm(child(*reference, DSIG, "DigestMethod")) {
        Some("http://www.w3.org/2001/04/xmlenc#sha256") => &ring::digest::SHA256,
        Some("http://www.w3.org/2001/04/xmldsig-more#sha384") => &ring::digest::SHA384,
        Some("http://www.w3.org/2001/04/xmlenc#sha512") => &ring::digest::SHA512,
        other => {
            return Err(err(
                ReasonKind::UnsupportedAlgorithm,
                format!("digest method {other:?}"),
            ));
        }
    };
    let digest_value = child(*reference, DSIG, "DigestValue")
        .and_then(|d| d.text())
        .and_then(b64)
        .ok_or_else(|| rim_err("missing or malformed ds:DigestValue"))?;

    // 1. The document, without the signature, must hash to the reference digest.
    let canonical_doc = canonicalize(text, root, Some(sig.id()));
    if ring::digest::digest(digest_alg, canonical_doc.as_bytes()).as_ref()
        != digest_value.as_slice()
    {
        return Err(rim_err(
            "RIM content does not match its signed digest (modified after signing)",
        ));
    }

    // 2. The chain embedded in KeyInfo, to the pinned root.
    let certs: Vec<Cert> = sig
        .descendants()
        .filter(|n| {
            n.is_element()
                && n.tag_name().namespace() == Some(DSIG)
                && n.tag_name().name() == "X509Certificate"
        })
        .map(|n| {
            let der = n
                .text()
                .and_then(b64)
                .ok_or_else(|| rim_err("malformed ds:X509Certificate"))?;
            Cert::from_der(&der)
        })
        .collect::<Result<_, _>>()?;
    let (chain, simulated) = verify_chain(certs, now, policy)?;
    let leaf = chain
        .first()
        .ok_or_else(|| err(ReasonKind::CertificateMissing, "empty RIM chain"))?;

    // 3. The signature over the canonical SignedInfo.
    let signature = child(sig, DSIG, "SignatureValue")
        .and_then(|s| s.text())
        .and_then(b64)
        .ok_or_else(|| rim_err("missing or malformed ds:SignatureValue"))?;
    if leaf.ec_curve() != Some(Curve::P384) {
        return Err(err(
            ReasonKind::UnsupportedAlgorithm,
            "RIM signing key is not P-384",
        ));
    }
    let canonical_si = canonicalize(text, signed_info, None);
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, leaf.public_key_bytes())
        .verify(canonical_si.as_bytes(), &signature)
        .map_err(|_| rim_err("RIM signature does not verify"))?;

    Ok(Rim {
        version: meta_version(root),
        measurements: measurements(root)?,
        chain,
        simulated,
    })
}

/// Leaf first; the last certificate is the pinned root or is issued by it,
/// or is a simulated root the policy names. Returns the chain with its root
/// and whether that root is simulated.
fn verify_chain(
    mut certs: Vec<Cert>,
    now: UnixTime,
    policy: &Policy,
) -> Result<(Vec<Cert>, bool), CertError> {
    let root = Cert::from_der(NVIDIA_RIM_ROOT_DER)?;
    let last = certs.last().ok_or_else(|| {
        err(
            ReasonKind::CertificateMissing,
            "RIM carries no signing certificate",
        )
    })?;
    let simulated = policy.trusts_simulated_root(last);
    if simulated {
        last.verify_signed_by(last, "simulated RIM root")?;
    } else if hex::encode(last.sha256()) != NVIDIA_RIM_ROOT_SHA256 {
        if !last.issued_by(&root) {
            return Err(err(
                ReasonKind::UntrustedRoot,
                format!(
                    "RIM chain ends in {}, neither under the pinned NVIDIA RIM root nor a simulated root the policy names",
                    last.subject()
                ),
            ));
        }
        certs.push(root);
    }
    for (i, pair) in certs.windows(2).enumerate() {
        let [c, parent] = pair else { continue };
        if !c.issued_by(parent) {
            return Err(err(
                ReasonKind::ChainIssuerMismatch,
                format!("RIM certificate {i} is not issued by the next"),
            ));
        }
        c.verify_signed_by(parent, &format!("RIM certificate {i}"))?;
    }
    for (i, c) in certs.iter().enumerate() {
        c.check_validity(now, &format!("RIM certificate {i} ({})", c.subject()))?;
    }
    if certs.is_empty() {
        return Err(err(ReasonKind::CertificateMissing, "empty RIM chain"));
    }
    Ok((certs, simulated))
}

fn meta_version(root: Node<'_, '_>) -> Option<String> {
    root.children()
        .find(|c| c.is_element() && c.tag_name().name() == "Meta")
        .and_then(|m| m.attribute("colloquialVersion"))
        .map(str::to_string)
}

fn measurements(root: Node<'_, '_>) -> Result<BTreeMap<u32, RimMeasurement>, CertError> {
    let mut out = BTreeMap::new();
    let payload = root
        .children()
        .find(|c| c.is_element() && c.tag_name().name() == "Payload");
    for r in payload
        .iter()
        .flat_map(|p| p.children())
        .filter(|c| c.is_element() && c.tag_name().name() == "Resource")
    {
        if r.attribute("type") != Some("Measurement") {
            continue;
        }
        let index: u32 = r
            .attribute("index")
            .and_then(|i| i.parse().ok())
            .ok_or_else(|| rim_err("Resource without a numeric index"))?;
        let n: u32 = r
            .attribute("alternatives")
            .and_then(|a| a.parse().ok())
            .unwrap_or(1);
        if n > 64 {
            return Err(rim_err(format!("Resource {index}: {n} alternatives")));
        }
        let alternatives = (0..n)
            .map(|i| {
                let name = format!("Hash{i}");
                r.attributes()
                    .find(|a| a.name() == name)
                    .and_then(|a| hex::decode(a.value()).ok())
                    .ok_or_else(|| {
                        rim_err(format!("Resource {index}: missing or malformed {name}"))
                    })
            })
            .collect::<Result<_, _>>()?;
        let active = r
            .attribute("active")
            .is_some_and(|a| a.eq_ignore_ascii_case("true"));
        if out
            .insert(
                index,
                RimMeasurement {
                    active,
                    alternatives,
                },
            )
            .is_some()
        {
            return Err(rim_err(format!("Resource index {index} appears twice")));
        }
    }
    Ok(out)
}

/// Compares a report's measurements (SPDM index → value) with a RIM: every
/// active RIM measurement (index i ↔ SPDM block i + 1) must be present and
/// equal one of its golden values. Returns the mismatching RIM indices.
pub fn compare(rim: &Rim, report: &BTreeMap<u8, Vec<u8>>) -> Vec<u32> {
    rim.measurements
        .iter()
        .filter(|(_, m)| m.active)
        .filter(|(i, m)| {
            let spdm_index = i.checked_add(1).and_then(|s| u8::try_from(s).ok());
            let got = spdm_index.and_then(|s| report.get(&s));
            !got.is_some_and(|g| m.alternatives.iter().any(|a| a == g))
        })
        .map(|(i, _)| *i)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rim(active: bool, alts: &[&[u8]]) -> Rim {
        let mut measurements = BTreeMap::new();
        measurements.insert(
            0,
            RimMeasurement {
                active,
                alternatives: alts.iter().map(|a| a.to_vec()).collect(),
            },
        );
        Rim {
            version: None,
            measurements,
            chain: Vec::new(),
            simulated: false,
        }
    }

    #[test]
    fn comparison_uses_spdm_index_plus_one_and_alternatives() {
        let mut report = BTreeMap::new();
        report.insert(1u8, vec![2u8; 48]);
        assert!(compare(&rim(true, &[&[1; 48], &[2; 48]]), &report).is_empty());
        assert_eq!(compare(&rim(true, &[&[1; 48]]), &report), vec![0]);
        assert!(
            compare(&rim(false, &[&[1; 48]]), &report).is_empty(),
            "inactive entries are not compared"
        );
        assert_eq!(
            compare(&rim(true, &[&[2; 48]]), &BTreeMap::new()),
            vec![0],
            "a missing measurement is a mismatch"
        );
    }
}
