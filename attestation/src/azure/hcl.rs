//! The paravisor's HCL report: a 32-byte header (`HCLA`…), the hardware
//! report (an SEV-SNP report, or a TDREPORT, in a 1184-byte area), then
//! the IGVM request data: data size, version, report type, hash type,
//! variable data size (five little-endian u32s) and the variable data, a
//! JSON document naming the vTPM's attestation key (and, from Trustee's
//! evidence v2, `user-data`: the attester's report data).

use base64::Engine;
use serde_json::Value;

/// `HCLA`, little-endian, at the start of every HCL report.
const HCL_SIGNATURE: &[u8; 4] = b"HCLA";
pub(crate) const HCL_HEADER: usize = 32;
/// The hardware report's area (an SNP report's size; a TDREPORT's 1024
/// bytes are zero-padded to it).
pub(crate) const HARDWARE_AREA: usize = 1184;
/// Where the request data (after the hardware report) starts.
pub(crate) const REQUEST_AT: usize = HCL_HEADER + HARDWARE_AREA;
/// Where the variable data starts, after the five request fields.
pub(crate) const VAR_DATA_AT: usize = REQUEST_AT + 20;
const TDREPORT_LEN: usize = 1024;
const HASH_TYPE_SHA256: u32 = 1;

/// The hardware that made the report inside an HCL report (the IGVM
/// request's report type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HclHardware {
    /// Report type 2: an SEV-SNP attestation report.
    Snp,
    /// Report type 4: a TDREPORT (the TD quote beside the HCL report is
    /// what binds the variable data; the TDREPORT is MAC'd for the local
    /// platform only and so is not read).
    Tdx,
}

impl HclHardware {
    pub(crate) const fn report_type(self) -> u32 {
        match self {
            HclHardware::Snp => 2,
            HclHardware::Tdx => 4,
        }
    }

    fn report_len(self) -> usize {
        match self {
            HclHardware::Snp => HARDWARE_AREA,
            HclHardware::Tdx => TDREPORT_LEN,
        }
    }
}

/// An HCL report's parts (nothing verified).
#[derive(Debug)]
pub struct Hcl<'a> {
    pub hardware: HclHardware,
    /// The hardware report: an SNP report, or a TDREPORT.
    pub report: &'a [u8],
    pub var_data: &'a [u8],
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

/// Splits an HCL report, its request fields checked.
pub fn parse(b: &[u8]) -> Result<Hcl<'_>, String> {
    if b.get(..4) != Some(HCL_SIGNATURE.as_slice()) {
        return Err("HCL report: no HCLA signature at offset 0".into());
    }
    let field = |i: usize| {
        let at = REQUEST_AT.saturating_add(i.saturating_mul(4));
        u32_at(b, at).ok_or_else(|| format!("HCL report: truncated at offset {at}"))
    };
    let (report_type, hash_type, var_size) = (field(2)?, field(3)?, field(4)?);
    let hardware = [HclHardware::Snp, HclHardware::Tdx]
        .into_iter()
        .find(|h| h.report_type() == report_type)
        .ok_or_else(|| {
            format!(
                "HCL report at offset {}: report type {report_type}, neither SEV-SNP (2) nor TDX (4)",
                REQUEST_AT + 8
            )
        })?;
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
    let report_end = HCL_HEADER.saturating_add(hardware.report_len());
    Ok(Hcl {
        hardware,
        report: b.get(HCL_HEADER..report_end).unwrap_or_default(),
        var_data,
    })
}

fn var_data_json(var_data: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(var_data).map_err(|e| format!("HCL variable data is not JSON: {e}"))
}

/// The attestation key (`HCLAkPub`, an RSA JWK) the variable data names:
/// its modulus and exponent.
pub(crate) fn attestation_key(var_data: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let v = var_data_json(var_data)?;
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

/// The variable data's `user-data` (hex, as the paravisor writes the 64
/// bytes the guest asked it to report).
pub(crate) fn user_data(var_data: &[u8]) -> Result<Vec<u8>, String> {
    let v = var_data_json(var_data)?;
    let text = v
        .get("user-data")
        .and_then(Value::as_str)
        .ok_or("HCL variable data has no user-data (evidence v2 binds the nonce there)")?;
    hex::decode(text).map_err(|e| format!("HCL variable data's user-data is not hex: {e}"))
}
