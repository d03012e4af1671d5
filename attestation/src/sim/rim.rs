//! Reference integrity manifests for the simulated GPUs, in the form
//! NVIDIA signs its own: a SWID tag (ISO 19770-2) listing golden
//! measurements, with an enveloped XML signature (C14N 1.1, ECDSA P-384
//! SHA-384) whose KeyInfo carries the signer's chain, here a RIM signing
//! certificate the simulated root issues. The verifier reads them with the
//! code it reads NVIDIA's real RIMs with (`nvidia::rim`).

use super::certs::{ext_critical, issue_ecdsa};
use super::nvidia::{NvidiaSim, ROOT_DN, SimOcspStatus};
use super::{SimError, crypto, os_rng};
use crate::nvidia::c14n::canonicalize;
use crate::time::UnixTime;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use p384::ecdsa::signature::Signer as _;
use p384::ecdsa::{DerSignature, Signature, SigningKey};
use p384::elliptic_curve::Generate;
use roxmltree::Document;

const DIGEST_SLOT: &str = "@@DIGEST@@";
const SIGNATURE_SLOT: &str = "@@SIGNATURE@@";

/// A signed RIM and its signer's certificate (DER), for OCSP.
#[derive(Debug, Clone)]
pub struct SimRim {
    pub xml: Vec<u8>,
    pub signer: Vec<u8>,
}

impl NvidiaSim {
    /// A RIM named `name` for version `version`, its golden values
    /// `(RIM index, value)` (index i is the report's measurement block
    /// i + 1), signed by a fresh RIM signing certificate the root issues,
    /// valid for a year from a day before `now`.
    pub fn rim(
        &self,
        name: &str,
        version: &str,
        golden: &[(u32, Vec<u8>)],
        now: UnixTime,
    ) -> Result<SimRim, SimError> {
        let key = SigningKey::generate_from_rng(&mut os_rng());
        // Each signer its own serial, as each RIM's OCSP response names it.
        let mut serial = [0u8; 4];
        getrandom::fill(&mut serial).map_err(crypto)?;
        let signer = issue_ecdsa::<_, DerSignature>(
            &key,
            &self.root_key,
            "CN=ciel Sim RIM Signing,O=ciel simulated platform (NOT A TEE)",
            ROOT_DN,
            u32::from_be_bytes(serial) | 0x1000,
            // digitalSignature
            vec![ext_critical("2.5.29.15", vec![0x03, 0x02, 0x07, 0x80])?],
            now,
            1,
        )?;
        let resources: String = golden
            .iter()
            .map(|(index, value)| {
                format!(
                    r#"<Resource type="Measurement" index="{index}" active="true" alternatives="1" name="Measurement {index}" SHA384:Hash0="{}"/>"#,
                    hex::encode(value)
                )
            })
            .collect();
        let certificates = [&signer, &self.root]
            .map(|der| format!("<X509Certificate>{}</X509Certificate>", B64.encode(der)))
            .concat();
        let template = format!(
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                "\n",
                r#"<SoftwareIdentity xmlns="http://standards.iso.org/iso/19770/-2/2015/schema.xsd" xmlns:SHA384="http://www.w3.org/2001/04/xmldsig-more#sha384" name="{name}" version="{version}" tagId="ciel-sim-{name}-{version}">"#,
                r#"<Meta colloquialVersion="{version}" product="ciel simulated GH100" revision="{version}"/>"#,
                r#"<Payload>{resources}</Payload>"#,
                r#"<Signature xmlns="http://www.w3.org/2000/09/xmldsig#"><SignedInfo>"#,
                r#"<CanonicalizationMethod Algorithm="http://www.w3.org/2006/12/xml-c14n11"/>"#,
                r#"<SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384"/>"#,
                r#"<Reference URI=""><Transforms>"#,
                r#"<Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>"#,
                r#"<Transform Algorithm="http://www.w3.org/2006/12/xml-c14n11"/>"#,
                r#"</Transforms><DigestMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#sha384"/>"#,
                r#"<DigestValue>{digest}</DigestValue></Reference></SignedInfo>"#,
                r#"<SignatureValue>{signature}</SignatureValue>"#,
                r#"<KeyInfo><X509Data>{certificates}</X509Data></KeyInfo></Signature>"#,
                r#"</SoftwareIdentity>"#,
            ),
            name = xml_text(name),
            version = xml_text(version),
            resources = resources,
            digest = DIGEST_SLOT,
            signature = SIGNATURE_SLOT,
            certificates = certificates,
        );
        // The document without its signature, canonical, digested; then the
        // canonical SignedInfo holding that digest, signed.
        let digest = {
            let doc = parse(&template)?;
            let root = doc.root_element();
            let sig = root
                .children()
                .find(|c| c.is_element() && c.tag_name().name() == "Signature")
                .ok_or_else(|| crypto("RIM template without a signature"))?;
            let canonical = canonicalize(&template, root, Some(sig.id()));
            B64.encode(ring::digest::digest(
                &ring::digest::SHA384,
                canonical.as_bytes(),
            ))
        };
        let with_digest = template.replace(DIGEST_SLOT, &digest);
        let signature = {
            let doc = parse(&with_digest)?;
            let signed_info = doc
                .descendants()
                .find(|n| n.is_element() && n.tag_name().name() == "SignedInfo")
                .ok_or_else(|| crypto("RIM template without SignedInfo"))?;
            let canonical = canonicalize(&with_digest, signed_info, None);
            let sig: Signature = key.sign(canonical.as_bytes());
            B64.encode(sig.to_bytes())
        };
        Ok(SimRim {
            xml: with_digest.replace(SIGNATURE_SLOT, &signature).into_bytes(),
            signer,
        })
    }

    /// The root's OCSP response about `rim`'s signing certificate.
    pub fn rim_ocsp(
        &self,
        rim: &SimRim,
        status: SimOcspStatus,
        this_update: UnixTime,
        next_update: UnixTime,
    ) -> Result<Vec<u8>, SimError> {
        let signer = super::ocsp::Signer {
            key: &self.root_key,
            cert: None,
        };
        super::ocsp::response(
            &rim.signer,
            &self.root,
            &signer,
            status,
            this_update,
            next_update,
        )
    }
}

fn parse(text: &str) -> Result<Document<'_>, SimError> {
    Document::parse(text).map_err(|e| crypto(format!("RIM template: {e}")))
}

/// `s` safe inside an attribute value.
fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
