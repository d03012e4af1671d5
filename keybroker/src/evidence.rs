//! `tee-evidence` documents: what a guest sends in `/attest`, decoded into
//! the attestation crate's evidence and collateral.
//!
//! Shapes (base64 is standard, padded):
//! - `snp`: `{"report": b64(1184-byte report), "vcek": b64(DER), "cert_chain": "PEM ASK/ASVK+ARK" (optional)}`
//! - `tdx`: `{"quote": b64(quote), "collateral": {DCAP collateral JSON, as `ciel attest verify --collateral`}}`

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ciel_attestation::collateral::DcapCollateral;
use ciel_attestation::{Collateral, Evidence};

/// Decoded evidence, its collateral, and the digest of what was sent.
#[derive(Debug)]
pub struct Decoded {
    pub evidence: Evidence,
    pub collateral: Collateral,
    pub sha256: String,
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

/// Decodes `evidence` for `tee` ("snp" or "tdx").
pub fn decode(tee: &str, evidence: &serde_json::Value) -> Result<Decoded, String> {
    let mut collateral = Collateral::default();
    let raw = match tee {
        "snp" => {
            let report = b64(evidence, "report")?;
            collateral.snp_signer = Some(b64(evidence, "vcek")?);
            if let Some(chain) = evidence.get("cert_chain") {
                let pem = chain
                    .as_str()
                    .ok_or("tee-evidence.cert_chain: not a PEM string")?;
                collateral.snp_chain = Some(pem.as_bytes().to_vec());
            }
            report
        }
        "tdx" => {
            let quote = b64(evidence, "quote")?;
            let col = evidence
                .get("collateral")
                .ok_or("tee-evidence: missing `collateral` (DCAP collateral JSON)")?;
            let bytes = serde_json::to_vec(col).map_err(|e| e.to_string())?;
            collateral.dcap = Some(
                DcapCollateral::from_json(&bytes)
                    .map_err(|e| format!("tee-evidence.collateral: {e}"))?,
            );
            quote
        }
        other => return Err(format!("tee {other:?} is not supported (snp, tdx)")),
    };
    let parsed = Evidence::parse(&raw).map_err(|e| format!("tee-evidence: {e}"))?;
    let expected_kind = if tee == "snp" {
        ciel_attestation::EvidenceKind::Snp
    } else {
        ciel_attestation::EvidenceKind::Dcap
    };
    if parsed.kind() != expected_kind {
        return Err(format!("tee-evidence is not {tee} evidence"));
    }
    let sha256 = hex::encode(ring::digest::digest(&ring::digest::SHA256, &raw).as_ref());
    Ok(Decoded {
        evidence: parsed,
        collateral,
        sha256,
    })
}
