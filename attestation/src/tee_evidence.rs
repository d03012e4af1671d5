//! `tee-evidence` documents: evidence and its collateral as JSON, the shape
//! a guest sends to a key broker's `/attest` and the one the guest's TLS
//! certificate carries, decoded into [`Evidence`] and [`Collateral`].
//!
//! Accepted shapes (base64 is standard, padded):
//! - `snp`, ours: `{"report": b64(1184-byte report), "vcek": b64(DER), "cert_chain": "PEM ASK/ASVK+ARK" (optional)}`;
//!   `vcek` may be left out where the verifier has a collateral source (a bundle)
//! - `snp`, Trustee's: `{"attestation_report": [1184 byte values], "cert_chain": [{"cert_type": "VCEK"|"VLEK"|"ASK"|"ASVK"|"ARK", "data": [bytes]}]}`
//!   (the `sev` crate's raw-bytes serialization of the report and its certificate table)
//! - `tdx`, ours: `{"quote": b64(quote), "collateral": {DCAP collateral JSON}}`
//! - `tdx`, Trustee's: `{"quote": b64(quote), "cc_eventlog": b64 (optional)}`; the
//!   collateral then comes from the verifier's collateral source (a bundle,
//!   the broker's `dcap_collateral` file).
//! - `az-snp-vtpm`, Trustee's (v0, v1 or v2, [`crate::azure`]): an Azure vTPM's HCL
//!   report and TPM quote, and optionally `"cert_chain": "PEM ASK+ARK"` (Azure's
//!   VCEKs chain to AMD's pinned roots); the session's binding is the quote's
//!   nonce, and init-data is bound by PCR 8.
//! - `az-tdx-vtpm`, Trustee's (v0, v1 or v2): the HCL report, TPM quote and the
//!   TD quote binding the HCL variable data, and optionally `"collateral"`
//!   (the TD quote's DCAP collateral, as in our `tdx` shape; otherwise from
//!   the verifier's collateral source); bound as `az-snp-vtpm`.

use crate::azure::{AzVtpm, verify_az_vtpm};
use crate::collateral::{CollateralLookup, DcapCollateral};
use crate::nvidia::GpuEvidence;
use crate::snp::SnpReport;
use crate::{Collateral, Evidence, EvidenceKind, Policy, UnixTime, Verdict};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// Decoded evidence, its collateral, and the digest of what was sent.
#[derive(Debug)]
pub struct Decoded {
    pub evidence: Evidence,
    pub collateral: Collateral,
    pub sha256: String,
    /// The guest's GPUs (from Trustee's `additional_evidence`), and the
    /// nonce each GPU report must carry; empty without GPUs.
    pub gpus: Vec<GpuEvidence>,
    pub gpu_nonce: [u8; 32],
    /// Azure vTPM evidence (`az-snp-vtpm`, `az-tdx-vtpm`), whose hardware
    /// report (the HCL report's SNP report, or the TD quote) is
    /// [`Self::evidence`].
    pub vtpm: Option<Vtpm>,
}

/// An Azure vTPM's evidence and what its quote states, read once.
#[derive(Debug)]
pub struct Vtpm {
    pub evidence: AzVtpm,
    /// The quote's nonce (at most 64 bytes).
    pub nonce: Vec<u8>,
    /// The PCRs the quote covers, with the values given (checked against
    /// the quote's digest by [`Decoded::verify`]).
    pub pcrs: Vec<(usize, [u8; 32])>,
}

impl Vtpm {
    /// PCR 8 as quoted: where Trustee binds init-data.
    fn pcr8(&self) -> Option<InitDataAnchor> {
        self.pcrs
            .iter()
            .find(|(i, _)| *i == 8)
            .map(|(_, v)| InitDataAnchor::Pcr8(*v))
    }
}

/// Where evidence binds init-data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitDataAnchor {
    /// HOST_DATA (SNP, 32 bytes) or MRCONFIGID (TDX, 48 bytes): the digest
    /// itself.
    Field(Vec<u8>),
    /// An Azure vTPM's PCR 8 (as the quote covers it): SHA-256 of 32 zero
    /// bytes then the init-data's SHA-256 digest, as Trustee extends it.
    Pcr8([u8; 32]),
}

impl InitDataAnchor {
    /// Whether it binds `init`: what binds it, or why not.
    pub fn binds(&self, init: &ciel_protocol::initdata::InitData) -> Result<String, String> {
        use ciel_protocol::initdata::Anchor;
        init.check_anchor(match self {
            InitDataAnchor::Field(f) => Anchor::Field(f),
            InitDataAnchor::Pcr8(p) => Anchor::Pcr8(p),
        })
    }
}

/// Where `evidence` (for `tee`) binds init-data, read without verifying
/// it (the guest about its own evidence, the client before the verdict is
/// combined): `None` when it has no such field.
pub fn init_data_anchor(
    tee: &str,
    evidence: &serde_json::Value,
) -> Result<Option<InitDataAnchor>, String> {
    if is_vtpm(tee) {
        return read_vtpm(tee, evidence).map(|(vtpm, _)| vtpm.pcr8());
    }
    parse_evidence(tee, evidence).map(|e| e.init_data_field().map(InitDataAnchor::Field))
}

impl Decoded {
    /// The platform as audit entries and tokens name it: `snp`, `dcap`,
    /// `az-snp-vtpm` or `az-tdx-vtpm`.
    pub fn platform(&self) -> String {
        match &self.vtpm {
            Some(vtpm) => vtpm.evidence.tee().into(),
            None => format!("{:?}", self.evidence.kind()).to_lowercase(),
        }
    }

    /// The 64 bytes that bind a session or a document: the report's
    /// `report_data`, or for a vTPM the quote's nonce, zero-padded.
    pub fn bound_report_data(&self) -> [u8; 64] {
        let Some(vtpm) = &self.vtpm else {
            return self.evidence.report_data();
        };
        let mut out = [0u8; 64];
        for (o, b) in out.iter_mut().zip(&vtpm.nonce) {
            *o = *b;
        }
        out
    }

    /// Verifies the evidence at `now` under `policy` (whose `report_data`,
    /// when set, is what [`Self::bound_report_data`] must be): the report
    /// as any other, or a vTPM's HCL report, attestation key and quote.
    pub fn verify(&self, policy: &Policy, now: UnixTime) -> Verdict {
        match &self.vtpm {
            Some(vtpm) => verify_az_vtpm(&vtpm.evidence, &self.collateral, policy, now),
            None => crate::verify(&self.evidence, &self.collateral, policy, now),
        }
    }

    /// Where the evidence binds init-data, if it can.
    pub fn init_data_anchor(&self) -> Option<InitDataAnchor> {
        match &self.vtpm {
            Some(vtpm) => vtpm.pcr8(),
            None => self.evidence.init_data_field().map(InitDataAnchor::Field),
        }
    }
}

/// Trustee's `additional_evidence`: a JSON string mapping a TEE name to
/// its evidence. `nvidia` (the device list) is the one understood; any
/// other is refused by name rather than ignored.
pub fn decode_additional(additional: &str) -> Result<Vec<GpuEvidence>, String> {
    if additional.trim().is_empty() {
        return Ok(Vec::new());
    }
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(additional)
        .map_err(|e| format!("additional_evidence: not a JSON object: {e}"))?;
    let mut gpus = Vec::new();
    for (tee, evidence) in &map {
        match tee.as_str() {
            "nvidia" => gpus = GpuEvidence::decode_list(evidence)?,
            other => {
                return Err(format!(
                    "additional_evidence: evidence for {other:?} is not supported (nvidia)"
                ));
            }
        }
    }
    Ok(gpus)
}

/// The `additional_evidence` string for a guest's GPUs (empty for none).
pub fn encode_additional(gpus: &[GpuEvidence]) -> String {
    if gpus.is_empty() {
        return String::new();
    }
    serde_json::json!({ "nvidia": GpuEvidence::encode_list(gpus) }).to_string()
}

fn field<'a>(v: &'a serde_json::Value, name: &str) -> Result<&'a str, String> {
    v.get(name)
        .and_then(|x| x.as_str())
        .ok_or_else(|| format!("tee-evidence: missing string field `{name}`"))
}

fn b64(v: &serde_json::Value, name: &str) -> Result<Vec<u8>, String> {
    B64.decode(field(v, name)?.trim())
        .map_err(|e| format!("tee-evidence.{name}: not base64: {e}"))
}

/// A JSON array of byte values (serde's encoding of raw bytes).
fn byte_array(v: &serde_json::Value, what: &str) -> Result<Vec<u8>, String> {
    let items = v
        .as_array()
        .ok_or_else(|| format!("tee-evidence.{what}: not an array of bytes"))?;
    if items.len() > 1 << 20 {
        return Err(format!("tee-evidence.{what}: too long"));
    }
    items
        .iter()
        .map(|x| {
            x.as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .ok_or_else(|| format!("tee-evidence.{what}: not a byte"))
        })
        .collect()
}

/// Trustee's SNP certificate table → (signer, PEM chain of the others).
fn trustee_cert_table(table: &serde_json::Value) -> Result<(Vec<u8>, Vec<u8>), String> {
    let entries = table
        .as_array()
        .ok_or("tee-evidence.cert_chain: not an array")?;
    let mut signer = None;
    let mut chain = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let kind = e
            .get("cert_type")
            .and_then(|t| t.as_str())
            .unwrap_or("")
            .to_ascii_uppercase();
        let data = byte_array(
            e.get("data").unwrap_or(&serde_json::Value::Null),
            &format!("cert_chain[{i}].data"),
        )?;
        match kind.as_str() {
            "VCEK" | "VLEK" => signer = Some(data),
            "ASK" | "ASVK" | "ARK" => chain.push(pem::Pem::new("CERTIFICATE", data)),
            _ => {} // OEM and other entries are not part of the chain
        }
    }
    let signer = signer.ok_or("tee-evidence.cert_chain: no VCEK or VLEK entry")?;
    Ok((
        signer,
        if chain.is_empty() {
            Vec::new()
        } else {
            pem::encode_many(&chain).into_bytes()
        },
    ))
}

/// Decodes `evidence` for `tee` ("snp", "tdx", "az-snp-vtpm" or "az-tdx-vtpm");
/// `lookup` supplies collateral the evidence does not carry (a TDX quote's,
/// an SNP report's VCEK) and AMD's CRL where it has one.
pub fn decode(
    tee: &str,
    evidence: &serde_json::Value,
    lookup: Option<&dyn CollateralLookup>,
) -> Result<Decoded, String> {
    let mut collateral = Collateral::default();
    let raw = match tee {
        "snp" if evidence.get("attestation_report").is_some() => {
            let report = byte_array(&evidence["attestation_report"], "attestation_report")?;
            let table = evidence
                .get("cert_chain")
                .ok_or("tee-evidence: missing `cert_chain` (the VCEK is needed)")?;
            let (signer, chain) = trustee_cert_table(table)?;
            collateral.snp_signer = Some(signer);
            if !chain.is_empty() {
                collateral.snp_chain = Some(chain);
            }
            report
        }
        "snp" => {
            let report = b64(evidence, "report")?;
            collateral.snp_signer = Some(match (evidence.get("vcek"), lookup) {
                (None, Some(lookup)) => {
                    let parsed =
                        SnpReport::parse(&report).map_err(|e| format!("tee-evidence: {e}"))?;
                    lookup
                        .snp_vcek(&parsed)
                        .map_err(|e| format!("tee-evidence carries no `vcek`, and {e}"))?
                }
                _ => b64(evidence, "vcek")?,
            });
            collateral.snp_chain = pem_chain(evidence)?;
            report
        }
        "tdx" => {
            let quote = b64(evidence, "quote")?;
            collateral.dcap = Some(dcap_of(evidence, &quote, lookup)?);
            quote
        }
        "az-snp-vtpm" | "az-tdx-vtpm" => return decode_vtpm(tee, evidence, lookup),
        other => {
            return Err(format!(
                "tee {other:?} is not supported (snp, tdx, az-snp-vtpm, az-tdx-vtpm)"
            ));
        }
    };
    let parsed = Evidence::parse(&raw).map_err(|e| format!("tee-evidence: {e}"))?;
    let expected = if tee == "snp" {
        EvidenceKind::Snp
    } else {
        EvidenceKind::Dcap
    };
    if parsed.kind() != expected {
        return Err(format!("tee-evidence is not {tee} evidence"));
    }
    if let (Evidence::Snp(report), Some(lookup)) = (&parsed, lookup) {
        amd_from(lookup, report, &mut collateral);
    }
    Ok(decoded(parsed, collateral, &raw, None))
}

/// What was decoded; `sent` is what its digest is of.
fn decoded(evidence: Evidence, collateral: Collateral, sent: &[u8], vtpm: Option<Vtpm>) -> Decoded {
    Decoded {
        evidence,
        collateral,
        sha256: hex::encode(ring::digest::digest(&ring::digest::SHA256, sent).as_ref()),
        gpus: Vec::new(),
        gpu_nonce: [0; 32],
        vtpm,
    }
}

/// The AMD chain sent beside SNP evidence (`cert_chain`, PEM ASK/ARK),
/// if any.
fn pem_chain(evidence: &serde_json::Value) -> Result<Option<Vec<u8>>, String> {
    evidence
        .get("cert_chain")
        .map(|chain| {
            chain
                .as_str()
                .map(|pem| pem.as_bytes().to_vec())
                .ok_or_else(|| "tee-evidence.cert_chain: not a PEM string".to_string())
        })
        .transpose()
}

/// AMD's chain (where the evidence sent none) and CRL for `report`.
fn amd_from(lookup: &dyn CollateralLookup, report: &SnpReport, collateral: &mut Collateral) {
    if collateral.snp_chain.is_none() {
        collateral.snp_chain = lookup.snp_chain(report);
    }
    collateral.snp_crl = lookup.snp_crl(report);
}

fn is_vtpm(tee: &str) -> bool {
    matches!(tee, "az-snp-vtpm" | "az-tdx-vtpm")
}

/// A TDX quote's DCAP collateral: the evidence's own `collateral`, or the
/// lookup's.
fn dcap_of(
    evidence: &serde_json::Value,
    quote: &[u8],
    lookup: Option<&dyn CollateralLookup>,
) -> Result<DcapCollateral, String> {
    match evidence.get("collateral") {
        Some(col) => {
            let bytes = serde_json::to_vec(col).map_err(|e| e.to_string())?;
            DcapCollateral::from_json(&bytes).map_err(|e| format!("tee-evidence.collateral: {e}"))
        }
        None => lookup
            .ok_or("tee-evidence carries no DCAP collateral, and no collateral source (a bundle, the broker's `dcap_collateral`) is configured")?
            .dcap(quote)
            .map_err(|e| format!("tee-evidence carries no DCAP collateral, and {e}")),
    }
}

/// Azure vTPM evidence read (nothing verified): the evidence, what its
/// quote states, and the hardware report it binds.
fn read_vtpm(tee: &str, evidence: &serde_json::Value) -> Result<(Vtpm, Evidence), String> {
    let vtpm = AzVtpm::from_value(evidence).map_err(|e| format!("{tee}: {e}"))?;
    if vtpm.tee() != tee {
        return Err(format!("{tee}: the evidence is {}'s", vtpm.tee()));
    }
    let (nonce, pcrs) = vtpm.quoted().map_err(|e| format!("{tee}: {e}"))?;
    if nonce.len() > 64 {
        return Err(format!(
            "{tee}: the quote's nonce is {} bytes, at most 64",
            nonce.len()
        ));
    }
    let report = vtpm.hardware_report().map_err(|e| format!("{tee}: {e}"))?;
    let parsed = Evidence::parse(report).map_err(|e| format!("{tee}: {e}"))?;
    let vtpm = Vtpm {
        evidence: vtpm,
        nonce,
        pcrs,
    };
    Ok((vtpm, parsed))
}

/// Azure vTPM evidence: the hardware report it binds is the decoded
/// evidence, with that report's collateral.
fn decode_vtpm(
    tee: &str,
    evidence: &serde_json::Value,
    lookup: Option<&dyn CollateralLookup>,
) -> Result<Decoded, String> {
    let (vtpm, parsed) = read_vtpm(tee, evidence)?;
    let mut collateral = Collateral::default();
    match &parsed {
        Evidence::Snp(report) => {
            // Azure's VCEKs chain to AMD's pinned ASK/ARK; a chain sent
            // beside (as our `snp` shape allows) serves simulated ones.
            collateral.snp_chain = pem_chain(evidence)?;
            if let Some(lookup) = lookup {
                if vtpm.evidence.vcek.is_none() {
                    collateral.snp_signer = Some(
                        lookup
                            .snp_vcek(report)
                            .map_err(|e| format!("{tee} evidence carries no `vcek`, and {e}"))?,
                    );
                }
                amd_from(lookup, report, &mut collateral);
            }
        }
        Evidence::Dcap(q) => collateral.dcap = Some(dcap_of(evidence, q.bytes(), lookup)?),
        Evidence::Nvidia(_) => return Err(format!("{tee}: the hardware report is a GPU's")),
    }
    let hcl_report = vtpm.evidence.hcl_report.clone();
    Ok(decoded(parsed, collateral, &hcl_report, Some(vtpm)))
}

/// The evidence alone, for reading its fields (no collateral needed, so
/// nothing is verified): what a guest checks of its own evidence.
pub fn parse_evidence(tee: &str, evidence: &serde_json::Value) -> Result<Evidence, String> {
    match tee {
        "tdx" => {
            Evidence::parse(&b64(evidence, "quote")?).map_err(|e| format!("tee-evidence: {e}"))
        }
        _ if is_vtpm(tee) => read_vtpm(tee, evidence).map(|(_, e)| e),
        _ => decode(tee, evidence, None).map(|d| d.evidence),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trustee_shapes_decode() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../attestation/testdata");
        let report = std::fs::read(format!("{dir}/snp/genoa_oc.report.bin")).unwrap_or_default();
        let vcek = std::fs::read(format!("{dir}/snp/genoa_oc.vcek.der")).unwrap_or_default();
        let doc = serde_json::json!({
            "attestation_report": report,
            "cert_chain": [{"cert_type": "VCEK", "data": vcek}, {"cert_type": "OEM", "data": [1, 2]}],
        });
        let d = decode("snp", &doc, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.evidence.kind(), EvidenceKind::Snp);
        assert_eq!(d.collateral.snp_signer.as_deref(), Some(&vcek[..]));
        let missing = serde_json::json!({"attestation_report": report, "cert_chain": []});
        assert!(
            decode("snp", &missing, None)
                .unwrap_err()
                .contains("no VCEK")
        );

        let quote = std::fs::read(format!("{dir}/tdx/tdx_quote")).unwrap_or_default();
        let col = DcapCollateral::from_json(
            &std::fs::read(format!("{dir}/tdx/tdx_quote_collateral.json")).unwrap_or_default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let doc = serde_json::json!({"quote": B64.encode(&quote), "cc_eventlog": null});
        assert!(
            decode("tdx", &doc, None)
                .unwrap_err()
                .contains("dcap_collateral")
        );
        let d = decode("tdx", &doc, Some(&col)).unwrap_or_else(|e| panic!("{e}"));
        assert!(d.collateral.dcap.is_some());
        assert!(
            decode(
                "snp",
                &serde_json::json!({"attestation_report": [300]}),
                None
            )
            .is_err()
        );
    }
}
