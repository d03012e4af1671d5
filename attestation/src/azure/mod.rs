//! Azure confidential VMs' evidence through the vTPM (Trustee's
//! `az-snp-vtpm` and `az-tdx-vtpm` shapes): the paravisor's HCL report
//! ([`hcl`]), whose variable data (a JSON document holding the vTPM's
//! attestation key) is bound by a hardware report — the SEV-SNP report
//! inside the HCL report, or a TD quote sent beside it — and a TPM quote
//! ([`tpm`]) that key signed over the nonce and the PCRs.
//!
//! Verified here: the hardware report as any other (SNP: chain to AMD, the
//! policy's `[snp]` rules, made at VMPL 0; TDX: the quote through DCAP and
//! the policy's `[tdx]` rules); the variable data bound by its
//! `report_data`; the quote signed by the attestation key the variable data
//! names (RSASSA-PKCS1-v1_5, SHA-256); the quote's nonce (`extraData`) the
//! expected one (and, in evidence v2, the variable data's `user-data`
//! too); the PCR values given those the quote's digest covers; and the
//! policy's `[vtpm] pcrs` allowlists.
//!
//! Trustee's encodings are read: v0 (byte arrays, a PEM VCEK; SNP names
//! the parts `report` and `quote`), v1 and v2 (`version`, base64url HCL
//! report, TD quote and DER VCEK, hex quote fields).

pub mod hcl;
mod tpm;

use crate::collateral::Collateral;
use crate::evidence::Evidence;
use crate::policy::Policy;
use crate::time::UnixTime;
use crate::verdict::{Claims, Platform, ReasonKind, Verdict};
use base64::Engine;
pub use hcl::HclHardware;
use serde_json::Value;

/// Azure vTPM evidence, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzVtpm {
    /// Trustee's evidence version: 0, 1 or 2 (v2 binds the nonce in the
    /// HCL variable data's `user-data` too).
    pub version: u8,
    pub hcl_report: Vec<u8>,
    /// `TPMS_ATTEST`, as the TPM signed it.
    pub quote_message: Vec<u8>,
    /// The signature over it (RSA, the key's modulus long).
    pub quote_signature: Vec<u8>,
    /// PCR values of the SHA-256 bank, from PCR 0.
    pub pcrs: Vec<[u8; 32]>,
    /// SNP: the VCEK (DER or PEM), as the evidence carries it.
    pub vcek: Option<Vec<u8>>,
    /// TDX: the TD quote whose `report_data` binds the variable data
    /// (`az-tdx-vtpm`); `None` for `az-snp-vtpm`.
    pub td_quote: Option<Vec<u8>>,
}

fn bytes_of(v: &Value, field: &str, hex_strings: bool) -> Result<Vec<u8>, String> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|b| {
                b.as_u64()
                    .and_then(|b| u8::try_from(b).ok())
                    .ok_or_else(|| format!("{field}: not an array of bytes"))
            })
            .collect(),
        Value::String(s) if hex_strings => {
            hex::decode(s).map_err(|e| format!("{field}: not hex: {e}"))
        }
        Value::String(s) => {
            let trimmed = s.trim_end_matches('=');
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(trimmed)
                .map_err(|e| format!("{field}: not base64url: {e}"))
        }
        _ => Err(format!("{field}: missing")),
    }
}

impl AzVtpm {
    /// Whether `bytes` are meant as this evidence: a JSON object (no raw
    /// report, quote or hex text starts with `{`). [`Self::from_json`] then
    /// says what is wrong with one that is not.
    pub fn detect(bytes: &[u8]) -> bool {
        bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
    }

    /// Reads Trustee's v0, v1 or v2 JSON, SNP or TDX.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("Azure vTPM evidence: {e}"))?;
        Self::from_value(&v)
    }

    /// [`Self::from_json`] on JSON already parsed (a key broker's request).
    pub fn from_value(v: &Value) -> Result<Self, String> {
        let version = match v.get("version") {
            None | Some(Value::Null) => 0,
            Some(n) => match n.as_u64() {
                Some(1) => 1,
                Some(2) => 2,
                _ => {
                    return Err(format!(
                        "Azure vTPM evidence: version {n}, not one of Trustee's (0, 1, 2)"
                    ));
                }
            },
        };
        let encoded = version > 0;
        // (Trustee's TDX evidence named the quote `tdx_quote` before
        // `td_quote`.)
        let td = ["td_quote", "tdx_quote"]
            .into_iter()
            .find_map(|name| v.get(name).map(|q| (name, q)));
        let (report, quote) = if version == 0 && td.is_none() {
            ("report", "quote")
        } else {
            ("hcl_report", "tpm_quote")
        };
        let q = v.get(quote).ok_or_else(|| {
            format!(
                "not Azure vTPM evidence: neither Trustee's v1/v2 (version, hcl_report, tpm_quote, and vcek or td_quote) nor v0 (report and quote, or hcl_report, tpm_quote and td_quote); `{quote}` is missing"
            )
        })?;
        let field = |name: &str| q.get(name).unwrap_or(&Value::Null);
        let pcrs = match field("pcrs") {
            Value::Array(list) => list
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let b = bytes_of(p, &format!("{quote}.pcrs[{i}]"), encoded)?;
                    <[u8; 32]>::try_from(b.as_slice()).map_err(|_| {
                        format!("{quote}.pcrs[{i}]: {} bytes, not a SHA-256 PCR", b.len())
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err(format!("{quote}.pcrs: missing")),
        };
        if pcrs.len() > tpm::PCRS {
            return Err(format!(
                "{quote}.pcrs: {} values, at most {}",
                pcrs.len(),
                tpm::PCRS
            ));
        }
        let vcek = match v.get("vcek") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.contains("-----BEGIN") => Some(s.as_bytes().to_vec()),
            Some(other) => Some(bytes_of(other, "vcek", false)?),
        };
        let td_quote = match td {
            Some((name, q)) => Some(bytes_of(q, name, false)?),
            None => None,
        };
        if vcek.is_some() && td_quote.is_some() {
            return Err("Azure vTPM evidence: both a VCEK (SNP) and a td_quote (TDX)".into());
        }
        Ok(AzVtpm {
            version,
            hcl_report: bytes_of(v.get(report).unwrap_or(&Value::Null), report, false)?,
            quote_message: bytes_of(field("message"), &format!("{quote}.message"), encoded)?,
            quote_signature: bytes_of(field("signature"), &format!("{quote}.signature"), encoded)?,
            pcrs,
            vcek,
            td_quote,
        })
    }

    /// The tee name Trustee gives this evidence: `az-snp-vtpm` or
    /// `az-tdx-vtpm`.
    pub fn tee(&self) -> &'static str {
        match self.td_quote {
            Some(_) => "az-tdx-vtpm",
            None => "az-snp-vtpm",
        }
    }

    /// Trustee's v1 or v2 encoding (what its attesters send): base64url HCL
    /// report, TD quote and DER VCEK, hex quote fields. A PEM VCEK is sent
    /// as it is; v0 evidence is written as v1.
    pub fn to_json(&self) -> Value {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let (name, value) = match (&self.td_quote, &self.vcek) {
            (Some(q), _) => ("td_quote", Value::String(b64(q))),
            (None, Some(v)) if v.starts_with(b"-----BEGIN") => {
                ("vcek", Value::String(String::from_utf8_lossy(v).into()))
            }
            (None, Some(v)) => ("vcek", Value::String(b64(v))),
            (None, None) => ("vcek", Value::Null),
        };
        let mut out = serde_json::Map::new();
        out.insert("version".into(), self.version.max(1).into());
        out.insert("hcl_report".into(), b64(&self.hcl_report).into());
        out.insert(
            "tpm_quote".into(),
            serde_json::json!({
                "signature": hex::encode(&self.quote_signature),
                "message": hex::encode(&self.quote_message),
                "pcrs": self.pcrs.iter().map(hex::encode).collect::<Vec<_>>(),
            }),
        );
        out.insert(name.into(), value);
        Value::Object(out)
    }

    /// The hardware report that binds the variable data, unverified: the
    /// SEV-SNP report inside the HCL report (the paravisor's, at VMPL 0),
    /// or the TD quote beside it.
    pub fn hardware_report(&self) -> Result<&[u8], String> {
        let h = hcl::parse(&self.hcl_report)?;
        match (h.hardware, &self.td_quote) {
            (HclHardware::Snp, None) => Ok(h.report),
            (HclHardware::Tdx, Some(q)) => Ok(q),
            (HclHardware::Snp, Some(_)) => {
                Err("Azure vTPM evidence: a td_quote beside an HCL report made on SEV-SNP".into())
            }
            (HclHardware::Tdx, None) => {
                Err("Azure vTPM evidence: an HCL report made on TDX, and no td_quote".into())
            }
        }
    }
}

/// A quote's nonce, and the PCRs it covers with their values.
pub type Quoted = (Vec<u8>, Vec<(usize, [u8; 32])>);

impl AzVtpm {
    /// What the quote states, for people and policies: its nonce and the
    /// PCRs it covers with their values (as given; [`verify_az_vtpm`]
    /// checks them against the quote's digest).
    pub fn quoted(&self) -> Result<Quoted, String> {
        let attest = tpm::parse_attest(&self.quote_message)?;
        let pcrs = attest
            .selected
            .iter()
            .filter_map(|&i| self.pcrs.get(i).map(|v| (i, *v)))
            .collect();
        Ok((attest.extra_data, pcrs))
    }

    /// Whether the PCR values given are those the quote's digest covers
    /// (a collector reads the PCRs apart from the quote, and reads again
    /// when one was extended in between).
    pub fn pcrs_match_quote(&self) -> Result<bool, String> {
        let attest = tpm::parse_attest(&self.quote_message)?;
        Ok(tpm::selected_digest(&attest.selected, &self.pcrs)
            .is_ok_and(|d| d.as_ref() == attest.pcr_digest.as_slice()))
    }
}

/// Verifies Azure vTPM evidence at `now`. `collateral` is what the
/// hardware report needs, as for any other: for SNP the VCEK (if the
/// evidence carries none), the AMD chain and CRL; for TDX the quote's DCAP
/// collateral. `policy.report_data`, when set, is the nonce the quote must
/// carry (zero-padded to 64 bytes, as the policy writes it).
pub fn verify_az_vtpm(
    e: &AzVtpm,
    collateral: &Collateral,
    policy: &Policy,
    now: UnixTime,
) -> Verdict {
    let platform = if e.td_quote.is_some() {
        Platform::Tdx
    } else {
        Platform::Snp
    };
    let malformed = |m: String| {
        let mut v = Verdict::new(platform);
        v.reject(ReasonKind::EvidenceMalformed, m);
        v
    };
    let hcl = match hcl::parse(&e.hcl_report) {
        Ok(h) => h,
        Err(m) => return malformed(m),
    };
    let report = match e.hardware_report().map(Evidence::parse) {
        Err(m) => return malformed(m),
        Ok(Err(err)) => return malformed(format!("the {} report: {err}", e.tee())),
        Ok(Ok(r)) => r,
    };
    let expected_platform = match &report {
        Evidence::Snp(_) => Platform::Snp,
        Evidence::Dcap(q) => q.platform(),
        Evidence::Nvidia(_) => Platform::Nvidia,
    };
    if expected_platform != platform {
        return malformed(match platform {
            Platform::Snp => "HCL report: no SEV-SNP report at offset 32".into(),
            _ => "td_quote: not a TDX quote".into(),
        });
    }
    // The hardware report as any other, its report_data checked below (it
    // binds the variable data, not the caller's nonce).
    let mut col = collateral.clone();
    if col.snp_signer.is_none() {
        col.snp_signer = e.vcek.clone();
    }
    // (The PCR rules are checked against the quote.)
    let mut p = policy.clone();
    p.report_data = None;
    p.vtpm = Default::default();
    let mut v = crate::verify(&report, &col, &p, now);
    let digest = ring::digest::digest(&ring::digest::SHA256, hcl.var_data);
    if report.report_data().get(..32) != Some(digest.as_ref()) {
        v.reject(
            ReasonKind::HclVarDataUnbound,
            format!(
                "the {} report_data does not start with SHA-256 of the HCL variable data (the attestation key is not the paravisor's)",
                match platform {
                    Platform::Snp => "SNP report's",
                    _ => "TD quote's",
                }
            ),
        );
    }
    if let Some(Claims::Snp(c)) = &v.claims
        && c.vmpl != 0
    {
        v.reject(
            ReasonKind::VmplNotAllowed,
            format!(
                "the HCL report was made at VMPL {}, not 0 (the paravisor's)",
                c.vmpl
            ),
        );
    }
    if e.version >= 2
        && let Some(expected) = &policy.report_data
    {
        match hcl::user_data(hcl.var_data) {
            Err(m) => v.reject(ReasonKind::ReportDataMismatch, m),
            Ok(u) if tpm::padded64(&u).as_ref() != Some(expected) => v.reject(
                ReasonKind::ReportDataMismatch,
                format!(
                    "the HCL variable data's user-data is {}, not the expected nonce",
                    hex::encode(u)
                ),
            ),
            Ok(_) => {}
        }
    }
    tpm::verify_quote(
        &e.quote_message,
        &e.quote_signature,
        &e.pcrs,
        hcl::attestation_key(hcl.var_data),
        policy,
        &mut v,
    );
    v
}
