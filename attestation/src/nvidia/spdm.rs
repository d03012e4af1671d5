//! SPDM 1.1 `GET_MEASUREMENTS` request + `MEASUREMENTS` response, as
//! NVIDIA's GPUs return them (DMTF DSP0274 §10.11), with NVIDIA's opaque
//! data fields (driver and VBIOS versions, FWID, ...).

use crate::bytes::Reader;
use crate::evidence::ParseError;

const WHAT: &str = "NVIDIA SPDM report";
/// ECDSA P-384 signature, raw r || s.
pub const SIGNATURE_LEN: usize = 96;
/// Cap on measurement blocks (SPDM allows 254 indices).
const MAX_BLOCKS: u8 = 254;

/// One measurement block (DMTF measurement specification).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasurementBlock {
    pub index: u8,
    pub value_type: u8,
    pub value: Vec<u8>,
}

/// NVIDIA's opaque data fields we expose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpaqueFields {
    pub driver_version: Option<String>,
    pub vbios_version: Option<String>,
    pub board_id: Option<Vec<u8>>,
    pub chip_sku: Option<String>,
    pub project: Option<String>,
    pub project_sku: Option<String>,
    pub gpu_info: Option<Vec<u8>>,
    pub fwid: Option<Vec<u8>>,
    pub nvdec0_status: Option<u8>,
    pub protected_pcie_status: Option<u8>,
}

/// A parsed (not yet verified) report.
#[derive(Debug, Clone)]
pub struct NvidiaReport {
    bytes: Vec<u8>,
    pub spdm_version: u8,
    pub request_nonce: [u8; 32],
    pub response_nonce: [u8; 32],
    pub blocks: Vec<MeasurementBlock>,
    pub opaque: OpaqueFields,
    signed_len: usize,
    signature: [u8; SIGNATURE_LEN],
}

impl NvidiaReport {
    /// Parses request || response. Bytes after the signature are kept
    /// out of every field.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(bytes, WHAT);
        let spdm_version = r.u8("request.version")?;
        let code = r.u8("request.code")?;
        if code != 0xe0 {
            return Err(field(
                0,
                "request.code",
                format!("{code:#x} is not GET_MEASUREMENTS (0xe0)"),
            ));
        }
        let param1 = r.u8("request.param1")?;
        if param1 & 1 == 0 {
            return Err(field(2, "request.param1", "no signature requested".into()));
        }
        let _param2 = r.u8("request.param2")?;
        let request_nonce = r.array::<32>("request.nonce")?;
        let _slot = r.u8("request.slot_id")?;
        let resp_at = r.offset();
        let rv = r.u8("response.version")?;
        if rv != spdm_version {
            return Err(field(
                resp_at,
                "response.version",
                format!("{rv:#x} differs from the request's {spdm_version:#x}"),
            ));
        }
        let rcode = r.u8("response.code")?;
        if rcode != 0x60 {
            return Err(field(
                resp_at.saturating_add(1),
                "response.code",
                format!("{rcode:#x} is not MEASUREMENTS (0x60)"),
            ));
        }
        let _p1 = r.u8("response.param1")?;
        let _p2 = r.u8("response.param2")?;
        let n_blocks = r.u8("response.number_of_blocks")?;
        if n_blocks > MAX_BLOCKS {
            return Err(field(
                r.offset(),
                "response.number_of_blocks",
                format!("{n_blocks} blocks"),
            ));
        }
        let rec_len = r.u24_le("response.measurement_record_length")?;
        let record = r.take(rec_len as usize, "response.measurement_record")?;
        let blocks = parse_blocks(record, n_blocks)?;
        let response_nonce = r.array::<32>("response.nonce")?;
        let opaque_len = r.u16_le("response.opaque_length")?;
        let opaque_at = r.offset();
        let opaque = parse_opaque(
            r.take(usize::from(opaque_len), "response.opaque_data")?,
            opaque_at,
        )?;
        let signed_len = r.offset();
        let signature = r.array::<SIGNATURE_LEN>("response.signature")?;
        // Recent drivers return the report in a larger buffer with bytes
        // after the signature (Trustee's verifier ignores them too). They
        // are not signed, so nothing is read from them; everything up to
        // and including the signature stays strict.
        Ok(NvidiaReport {
            bytes: bytes.to_vec(),
            spdm_version,
            request_nonce,
            response_nonce,
            blocks,
            opaque,
            signed_len,
            signature,
        })
    }

    /// The bytes the GPU signed: the request and the response up to the signature.
    pub fn signed_bytes(&self) -> &[u8] {
        self.bytes.get(..self.signed_len).unwrap_or_default()
    }

    pub fn signature(&self) -> &[u8; SIGNATURE_LEN] {
        &self.signature
    }
}

fn field(offset: usize, field: &'static str, message: String) -> ParseError {
    ParseError::Field {
        what: WHAT,
        field,
        offset,
        message,
    }
}

fn parse_blocks(record: &[u8], n: u8) -> Result<Vec<MeasurementBlock>, ParseError> {
    let mut r = Reader::new(record, "SPDM measurement record");
    let mut out = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let index = r.u8("block.index")?;
        let spec = r.u8("block.measurement_specification")?;
        if spec & 1 == 0 {
            return Err(ParseError::Field {
                what: "SPDM measurement record",
                field: "block.measurement_specification",
                offset: r.offset(),
                message: format!("{spec:#x} is not the DMTF specification"),
            });
        }
        let size = r.u16_le("block.measurement_size")?;
        let mut m = Reader::new(
            r.take(usize::from(size), "block.measurement")?,
            "SPDM measurement",
        );
        let value_type = m.u8("dmtf.value_type")?;
        let vsize = m.u16_le("dmtf.value_size")?;
        let value = m.take(usize::from(vsize), "dmtf.value")?.to_vec();
        if !m.remaining().is_empty() {
            return Err(ParseError::Trailing {
                what: "SPDM measurement",
                offset: m.offset(),
                trailing: m.remaining().len(),
            });
        }
        out.push(MeasurementBlock {
            index,
            value_type,
            value,
        });
    }
    if !r.remaining().is_empty() {
        return Err(ParseError::Trailing {
            what: "SPDM measurement record",
            offset: r.offset(),
            trailing: r.remaining().len(),
        });
    }
    Ok(out)
}

// NVIDIA opaque data field IDs (nvtrust local GPU verifier).
const FIELD_DRIVER_VERSION: u16 = 3;
const FIELD_GPU_INFO: u16 = 4;
const FIELD_VBIOS_VERSION: u16 = 6;
const FIELD_NVDEC0_STATUS: u16 = 11;
const FIELD_BOARD_ID: u16 = 14;
const FIELD_CHIP_SKU: u16 = 15;
const FIELD_PROJECT: u16 = 17;
const FIELD_PROJECT_SKU: u16 = 18;
const FIELD_FWID: u16 = 20;
const FIELD_PROTECTED_PCIE_STATUS: u16 = 21;

fn parse_opaque(data: &[u8], base: usize) -> Result<OpaqueFields, ParseError> {
    let mut r = Reader::new(data, "NVIDIA opaque data");
    let mut f = OpaqueFields::default();
    while !r.remaining().is_empty() {
        let at = r.offset();
        let ty = r.u16_le("opaque.type")?;
        let size = r.u16_le("opaque.size")?;
        let v = r.take(usize::from(size), "opaque.value")?;
        match ty {
            FIELD_DRIVER_VERSION => f.driver_version = Some(c_string(v)),
            FIELD_GPU_INFO => f.gpu_info = Some(v.to_vec()),
            FIELD_VBIOS_VERSION => {
                f.vbios_version = Some(vbios_version(v).ok_or_else(|| ParseError::Field {
                    what: "NVIDIA opaque data",
                    field: "vbios_version",
                    offset: base.saturating_add(at),
                    message: format!("{size} bytes, expected at least 5"),
                })?)
            }
            FIELD_NVDEC0_STATUS => f.nvdec0_status = v.first().copied(),
            FIELD_BOARD_ID => f.board_id = Some(v.to_vec()),
            FIELD_CHIP_SKU => f.chip_sku = Some(c_string(v)),
            FIELD_PROJECT => f.project = Some(c_string(v)),
            FIELD_PROJECT_SKU => f.project_sku = Some(c_string(v)),
            FIELD_FWID => f.fwid = Some(v.to_vec()),
            FIELD_PROTECTED_PCIE_STATUS => f.protected_pcie_status = v.first().copied(),
            _ => {}
        }
    }
    Ok(f)
}

fn c_string(v: &[u8]) -> String {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(v.get(..end).unwrap_or_default()).into_owned()
}

/// VBIOS version as NVIDIA prints it: the first four bytes as a
/// little-endian u32 in dotted hex pairs, then the fifth byte
/// (`00 9f 00 96 01` → `96.00.9f.00.01`).
fn vbios_version(v: &[u8]) -> Option<String> {
    let [a, b, c, d, e] = *v.get(..5)? else {
        return None;
    };
    Some(format!("{d:02x}.{c:02x}.{b:02x}.{a:02x}.{e:02x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vbios_formatting() {
        assert_eq!(
            vbios_version(&[0x00, 0x9f, 0x00, 0x96, 0x01, 0, 0, 0]).as_deref(),
            Some("96.00.9f.00.01")
        );
        assert_eq!(vbios_version(&[1, 2, 3]), None);
    }
}
