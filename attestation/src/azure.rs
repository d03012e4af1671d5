//! Azure confidential VMs' evidence through the vTPM (Trustee's
//! `az-snp-vtpm` shape): the paravisor's HCL report (an SEV-SNP report
//! made at VMPL 0 whose `report_data` starts with SHA-256 of the report's
//! variable data, a JSON document holding the vTPM's attestation key), and
//! a TPM quote that key signed over the nonce and the PCRs.
//!
//! Verified here: the SNP report as any other (chain to AMD, the policy's
//! `[snp]` rules), made at VMPL 0; the variable data bound by its
//! `report_data`; the quote signed by the attestation key the variable data
//! names (RSASSA-PKCS1-v1_5, SHA-256); the quote's nonce (`extraData`) the
//! expected one; the PCR values given those the quote's digest covers; and
//! the policy's `[vtpm] pcrs` allowlists.
//!
//! Both of Trustee's encodings are read: v0 (`report`, `quote` and byte
//! arrays, a PEM VCEK) and v1 (`version: 1`, base64url `hcl_report` and DER
//! VCEK, hex quote fields).

use crate::collateral::Collateral;
use crate::evidence::Evidence;
use crate::policy::Policy;
use crate::time::UnixTime;
use crate::verdict::{Claims, Platform, ReasonKind, Verdict};
use base64::Engine;
use serde_json::Value;

/// `HCLA`, little-endian, at the start of every HCL report.
const HCL_SIGNATURE: &[u8; 4] = b"HCLA";
const HCL_HEADER: usize = 32;
const SNP_REPORT_LEN: usize = 1184;
/// Where the request data (after the hardware report) starts.
const REQUEST_AT: usize = HCL_HEADER + SNP_REPORT_LEN;
/// The IGVM request data after the hardware report: data size, version,
/// report type, hash type, variable data size (five little-endian u32s),
/// then the variable data.
const VAR_DATA_AT: usize = REQUEST_AT + 20;
const REPORT_TYPE_SNP: u32 = 2;
const HASH_TYPE_SHA256: u32 = 1;
/// `TPM_GENERATED_VALUE` and `TPM_ST_ATTEST_QUOTE`.
const TPM_GENERATED: u32 = 0xff54_4347;
const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
const TPM_ALG_SHA256: u16 = 0x000b;
/// Most PCRs a quote may cover.
const PCRS: usize = 24;

/// Azure vTPM evidence, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzSnpVtpm {
    pub hcl_report: Vec<u8>,
    /// `TPMS_ATTEST`, as the TPM signed it.
    pub quote_message: Vec<u8>,
    /// The signature over it (RSA, the key's modulus long).
    pub quote_signature: Vec<u8>,
    /// PCR values of the SHA-256 bank, from PCR 0.
    pub pcrs: Vec<[u8; 32]>,
    /// The VCEK (DER or PEM), as the evidence carries it.
    pub vcek: Option<Vec<u8>>,
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

impl AzSnpVtpm {
    /// Whether `bytes` are meant as this evidence: a JSON object (no raw
    /// report, quote or hex text starts with `{`). [`Self::from_json`] then
    /// says what is wrong with one that is not.
    pub fn detect(bytes: &[u8]) -> bool {
        bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
    }

    /// Reads Trustee's v0 or v1 JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("az-snp-vtpm evidence: {e}"))?;
        Self::from_value(&v)
    }

    /// [`Self::from_json`] on JSON already parsed (a key broker's request).
    pub fn from_value(v: &Value) -> Result<Self, String> {
        let v1 = v.get("version").and_then(Value::as_u64) == Some(1);
        let (report, quote) = if v1 {
            ("hcl_report", "tpm_quote")
        } else {
            ("report", "quote")
        };
        let q = v.get(quote).ok_or_else(|| {
            format!(
                "not Azure vTPM evidence: neither Trustee's az-snp-vtpm v1 (version 1, hcl_report, tpm_quote) nor v0 (report, quote); `{quote}` is missing"
            )
        })?;
        let field = |name: &str| q.get(name).unwrap_or(&Value::Null);
        let pcrs = match field("pcrs") {
            Value::Array(list) => list
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let b = bytes_of(p, &format!("{quote}.pcrs[{i}]"), v1)?;
                    <[u8; 32]>::try_from(b.as_slice()).map_err(|_| {
                        format!("{quote}.pcrs[{i}]: {} bytes, not a SHA-256 PCR", b.len())
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err(format!("{quote}.pcrs: missing")),
        };
        if pcrs.len() > PCRS {
            return Err(format!(
                "{quote}.pcrs: {} values, at most {PCRS}",
                pcrs.len()
            ));
        }
        let vcek = match v.get("vcek") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.contains("-----BEGIN") => Some(s.as_bytes().to_vec()),
            Some(other) => Some(bytes_of(other, "vcek", false)?),
        };
        Ok(AzSnpVtpm {
            hcl_report: bytes_of(v.get(report).unwrap_or(&Value::Null), report, false)?,
            quote_message: bytes_of(field("message"), &format!("{quote}.message"), v1)?,
            quote_signature: bytes_of(field("signature"), &format!("{quote}.signature"), v1)?,
            pcrs,
            vcek,
        })
    }
}

impl AzSnpVtpm {
    /// Trustee's v1 encoding (what its az-snp-vtpm attester sends):
    /// base64url HCL report and DER VCEK, hex quote fields. A PEM VCEK is
    /// sent as it is.
    pub fn to_json(&self) -> Value {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let vcek = match &self.vcek {
            Some(v) if v.starts_with(b"-----BEGIN") => {
                Value::String(String::from_utf8_lossy(v).into())
            }
            Some(v) => Value::String(b64(v)),
            None => Value::Null,
        };
        serde_json::json!({
            "version": 1,
            "hcl_report": b64(&self.hcl_report),
            "tpm_quote": {
                "signature": hex::encode(&self.quote_signature),
                "message": hex::encode(&self.quote_message),
                "pcrs": self.pcrs.iter().map(hex::encode).collect::<Vec<_>>(),
            },
            "vcek": vcek,
        })
    }

    /// The SEV-SNP report inside the HCL report (the paravisor's, at
    /// VMPL 0), unverified.
    pub fn snp_report(&self) -> Result<&[u8], String> {
        parse_hcl(&self.hcl_report).map(|h| h.snp_report)
    }
}

/// A quote's nonce, and the PCRs it covers with their values.
pub type Quoted = (Vec<u8>, Vec<(usize, [u8; 32])>);

impl AzSnpVtpm {
    /// What the quote states, for people and policies: its nonce and the
    /// PCRs it covers with their values (as given; [`verify_az_snp_vtpm`]
    /// checks them against the quote's digest).
    pub fn quoted(&self) -> Result<Quoted, String> {
        let attest = parse_attest(&self.quote_message)?;
        let pcrs = attest
            .selected
            .iter()
            .filter_map(|&i| self.pcrs.get(i).map(|v| (i, *v)))
            .collect();
        Ok((attest.extra_data, pcrs))
    }
}

/// The HCL report's parts.
struct Hcl<'a> {
    snp_report: &'a [u8],
    var_data: &'a [u8],
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

fn parse_hcl(b: &[u8]) -> Result<Hcl<'_>, String> {
    if b.get(..4) != Some(HCL_SIGNATURE.as_slice()) {
        return Err("HCL report: no HCLA signature at offset 0".into());
    }
    let field = |i: usize| {
        let at = REQUEST_AT.saturating_add(i.saturating_mul(4));
        u32_at(b, at).ok_or_else(|| format!("HCL report: truncated at offset {at}"))
    };
    let (report_type, hash_type, var_size) = (field(2)?, field(3)?, field(4)?);
    if report_type != REPORT_TYPE_SNP {
        return Err(format!(
            "HCL report at offset {}: report type {report_type}, not SEV-SNP ({REPORT_TYPE_SNP})",
            REQUEST_AT + 8
        ));
    }
    if hash_type != HASH_TYPE_SHA256 {
        return Err(format!(
            "HCL report at offset {}: hash type {hash_type}, not SHA-256 ({HASH_TYPE_SHA256})",
            REQUEST_AT + 12
        ));
    }
    let var_data = usize::try_from(var_size)
        .ok()
        .and_then(|n| b.get(VAR_DATA_AT..VAR_DATA_AT.checked_add(n)?))
        .ok_or_else(|| {
            format!(
                "HCL report: variable data of {var_size} bytes at offset {VAR_DATA_AT} runs past its {} bytes",
                b.len()
            )
        })?;
    Ok(Hcl {
        snp_report: b.get(HCL_HEADER..REQUEST_AT).unwrap_or_default(),
        var_data,
    })
}

/// What a quote attests.
struct Attest {
    extra_data: Vec<u8>,
    /// PCR indices of the SHA-256 bank, in order.
    selected: Vec<usize>,
    pcr_digest: Vec<u8>,
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).ok_or("overflow")?;
        let s = self.b.get(self.at..end).ok_or_else(|| {
            format!(
                "TPM quote: {what} at offset {} runs past its {} bytes",
                self.at,
                self.b.len()
            )
        })?;
        self.at = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let s = self.take(N, what)?;
        s.try_into().map_err(|_| format!("TPM quote: {what}"))
    }
    fn u16(&mut self, what: &str) -> Result<u16, String> {
        self.array::<2>(what).map(u16::from_be_bytes)
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        self.array::<4>(what).map(u32::from_be_bytes)
    }
    fn sized(&mut self, what: &str) -> Result<&'a [u8], String> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }
}

fn parse_attest(message: &[u8]) -> Result<Attest, String> {
    let mut r = Reader { b: message, at: 0 };
    if r.u32("magic")? != TPM_GENERATED {
        return Err("TPM quote: not TPM-generated (magic at offset 0)".into());
    }
    if r.u16("type")? != TPM_ST_ATTEST_QUOTE {
        return Err("TPM quote: offset 4 is not a quote's type (TPM_ST_ATTEST_QUOTE)".into());
    }
    r.sized("qualifiedSigner")?;
    let extra_data = r.sized("extraData")?.to_vec();
    r.take(17, "clockInfo")?;
    r.take(8, "firmwareVersion")?;
    let count = r.u32("pcrSelect count")?;
    let mut selected = Vec::new();
    for _ in 0..count.min(16) {
        let hash = r.u16("pcrSelect hash")?;
        let [size] = r.array::<1>("sizeofSelect")?;
        let bits = r.take(usize::from(size), "pcrSelect")?;
        if hash != TPM_ALG_SHA256 {
            if bits.iter().any(|b| *b != 0) {
                return Err(format!(
                    "TPM quote: PCRs of hash algorithm {hash:#06x} selected; only the SHA-256 bank is read"
                ));
            }
            continue;
        }
        for (byte, b) in bits.iter().enumerate() {
            for bit in 0..8 {
                if b >> bit & 1 == 1 {
                    selected.push(byte.saturating_mul(8).saturating_add(bit));
                }
            }
        }
    }
    if count > 16 {
        return Err(format!("TPM quote: {count} PCR selections"));
    }
    let pcr_digest = r.sized("pcrDigest")?.to_vec();
    if r.at != message.len() {
        return Err(format!(
            "TPM quote: {} bytes after the quote",
            message.len().saturating_sub(r.at)
        ));
    }
    Ok(Attest {
        extra_data,
        selected,
        pcr_digest,
    })
}

/// The attestation key (`HCLAkPub`, an RSA JWK) the variable data names.
fn attestation_key(var_data: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let v: Value = serde_json::from_slice(var_data)
        .map_err(|e| format!("HCL variable data is not JSON: {e}"))?;
    let key = v
        .get("keys")
        .and_then(Value::as_array)
        .and_then(|keys| {
            keys.iter()
                .find(|k| k.get("kid").and_then(Value::as_str) == Some("HCLAkPub"))
        })
        .ok_or("HCL variable data names no HCLAkPub key")?;
    if key.get("kty").and_then(Value::as_str) != Some("RSA") {
        return Err("HCLAkPub is not an RSA key".into());
    }
    let part = |name: &str| {
        key.get(name)
            .and_then(Value::as_str)
            .and_then(|s| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(s.trim_end_matches('='))
                    .ok()
            })
            .ok_or_else(|| format!("HCLAkPub.{name}: missing or not base64url"))
    };
    Ok((part("n")?, part("e")?))
}

/// Verifies Azure vTPM evidence at `now` (`collateral`: the VCEK, if the
/// evidence carries none, and the AMD chain and CRL as for any SNP report).
/// `policy.report_data`, when set, is the nonce the quote must carry
/// (zero-padded to 64 bytes, as the policy writes it).
pub fn verify_az_snp_vtpm(
    e: &AzSnpVtpm,
    collateral: &Collateral,
    policy: &Policy,
    now: UnixTime,
) -> Verdict {
    let malformed = |m: String| {
        let mut v = Verdict::new(Platform::Snp);
        v.reject(ReasonKind::EvidenceMalformed, m);
        v
    };
    let hcl = match parse_hcl(&e.hcl_report) {
        Ok(h) => h,
        Err(m) => return malformed(m),
    };
    let report = match Evidence::parse(hcl.snp_report) {
        Ok(r @ Evidence::Snp(_)) => r,
        Ok(_) => return malformed("HCL report: no SEV-SNP report at offset 32".into()),
        Err(err) => return malformed(format!("HCL report's SNP report: {err}")),
    };
    // The SNP report as any other, its report_data checked below (it binds
    // the variable data, not the caller's nonce).
    let mut col = collateral.clone();
    if col.snp_signer.is_none() {
        col.snp_signer = e.vcek.clone();
    }
    // (The PCR rules are checked below, against the quote.)
    let mut p = policy.clone();
    p.report_data = None;
    p.vtpm = Default::default();
    let mut v = crate::verify(&report, &col, &p, now);
    let digest = ring::digest::digest(&ring::digest::SHA256, hcl.var_data);
    if report.report_data().get(..32) != Some(digest.as_ref()) {
        v.reject(
            ReasonKind::HclVarDataUnbound,
            "the SNP report's report_data does not start with SHA-256 of the HCL variable data (the attestation key is not the paravisor's)",
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
    let attest = match parse_attest(&e.quote_message) {
        Ok(a) => a,
        Err(m) => {
            v.reject(ReasonKind::TpmQuoteInvalid, m);
            return v;
        }
    };
    match attestation_key(hcl.var_data) {
        Err(m) => v.reject(ReasonKind::TpmQuoteInvalid, m),
        Ok((n, exponent)) => {
            let key = ring::signature::RsaPublicKeyComponents {
                n: &n,
                e: &exponent,
            };
            if key
                .verify(
                    &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                    &e.quote_message,
                    &e.quote_signature,
                )
                .is_err()
            {
                v.reject(
                    ReasonKind::TpmQuoteInvalid,
                    "the TPM quote is not signed by the attestation key of the HCL report",
                );
            }
        }
    }
    if let Some(expected) = &policy.report_data {
        let mut got = [0u8; 64];
        let fits = attest.extra_data.len() <= 64;
        for (g, b) in got.iter_mut().zip(&attest.extra_data) {
            *g = *b;
        }
        if !fits || &got != expected {
            v.reject(
                ReasonKind::ReportDataMismatch,
                format!(
                    "the TPM quote's nonce is {}, not the expected one",
                    hex::encode(&attest.extra_data)
                ),
            );
        }
    }
    let mut quoted = Vec::with_capacity(attest.selected.len().saturating_mul(32));
    for &i in &attest.selected {
        match e.pcrs.get(i) {
            Some(pcr) => quoted.extend_from_slice(pcr),
            None => {
                v.reject(
                    ReasonKind::TpmPcrDigestMismatch,
                    format!("the quote covers PCR {i}, whose value the evidence does not give"),
                );
                return v;
            }
        }
    }
    if ring::digest::digest(&ring::digest::SHA256, &quoted).as_ref() != attest.pcr_digest.as_slice()
    {
        v.reject(
            ReasonKind::TpmPcrDigestMismatch,
            "the PCR values given are not those the quote's digest covers",
        );
    }
    for (index, allowed) in &policy.vtpm.pcrs {
        let value = attest
            .selected
            .contains(index)
            .then(|| e.pcrs.get(*index))
            .flatten();
        match value {
            None => v.reject(
                ReasonKind::PcrNotAllowed,
                format!("the policy constrains PCR {index}, which the quote does not cover"),
            ),
            Some(value) if !allowed.contains(value) => v.reject(
                ReasonKind::PcrNotAllowed,
                format!(
                    "PCR {index} is {}, not one the policy allows",
                    hex::encode(value)
                ),
            ),
            Some(_) => {}
        }
    }
    v
}
