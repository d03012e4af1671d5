//! Evidence detection and parsing. The CLI is handed "a file"; this module
//! decides whether it is an SNP report, a DCAP quote or an NVIDIA SPDM
//! report (raw or hex text), and parses it.

use crate::nvidia::NvidiaReport;
use crate::snp::SnpReport;
use crate::tdx::DcapQuote;

/// Why bytes could not be parsed as evidence. Every variant names the
/// structure, the field and the byte offset where it can.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error(
        "{what}: field `{field}` at offset {offset} needs {needed} bytes, only {available} left"
    )]
    Truncated {
        what: &'static str,
        field: &'static str,
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("{what}: {actual} bytes, expected {expected}")]
    Length {
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("{what}: unsupported version {version} at offset {offset}")]
    UnsupportedVersion {
        what: &'static str,
        version: u32,
        offset: usize,
    },
    #[error("{what}: field `{field}` at offset {offset}: {message}")]
    Field {
        what: &'static str,
        field: &'static str,
        offset: usize,
        message: String,
    },
    #[error("{what}: {trailing} unexpected bytes after the end at offset {offset}")]
    Trailing {
        what: &'static str,
        offset: usize,
        trailing: usize,
    },
    #[error(
        "unknown evidence kind: not an SEV-SNP report, a DCAP quote or an NVIDIA SPDM report ({0})"
    )]
    UnknownKind(String),
}

/// The kinds of evidence we understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvidenceKind {
    Snp,
    Dcap,
    Nvidia,
}

/// Parsed evidence. (Variants differ in size; one value lives per verification.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Evidence {
    Snp(SnpReport),
    Dcap(DcapQuote),
    Nvidia(NvidiaReport),
}

/// Intel's QE vendor ID, at offset 12 of every DCAP quote header.
const INTEL_QE_VENDOR_ID: [u8; 16] = [
    0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07,
];

impl Evidence {
    /// Detects the kind of `bytes` (after hex-decoding text) and parses it.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let decoded = decode_hex_text(bytes);
        let bytes = decoded.as_deref().unwrap_or(bytes);
        match detect(bytes)? {
            EvidenceKind::Snp => SnpReport::parse(bytes).map(Evidence::Snp),
            EvidenceKind::Dcap => DcapQuote::parse(bytes).map(Evidence::Dcap),
            EvidenceKind::Nvidia => NvidiaReport::parse(bytes).map(Evidence::Nvidia),
        }
    }

    /// The 64 bytes the evidence binds (SNP/TDX `report_data`; for an
    /// SGX quote its `report_data`; for a GPU report the 32-byte nonce,
    /// zero-padded).
    pub fn report_data(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        let src: &[u8] = match self {
            Evidence::Snp(r) => &r.raw().report_data,
            Evidence::Dcap(q) => match &q.quote().report {
                dcap_qvl::quote::Report::SgxEnclave(r) => &r.report_data,
                dcap_qvl::quote::Report::TD10(r) => &r.report_data,
                dcap_qvl::quote::Report::TD15(r) => &r.base.report_data,
                dcap_qvl::quote::Report::TD15Ex(r) => &r.base.base.report_data,
            },
            Evidence::Nvidia(r) => &r.request_nonce,
        };
        for (o, b) in out.iter_mut().zip(src) {
            *o = *b;
        }
        out
    }

    /// The launch measurement, hex: SNP MEASUREMENT, TDX MRTD or SGX
    /// MRENCLAVE (none for GPU reports). Read without verification.
    pub fn measurement(&self) -> Option<String> {
        match self {
            Evidence::Snp(r) => Some(hex::encode(r.raw().measurement)),
            Evidence::Dcap(q) => Some(hex::encode(match &q.quote().report {
                dcap_qvl::quote::Report::SgxEnclave(r) => &r.mr_enclave[..],
                dcap_qvl::quote::Report::TD10(r) => &r.mr_td[..],
                dcap_qvl::quote::Report::TD15(r) => &r.base.mr_td[..],
                dcap_qvl::quote::Report::TD15Ex(r) => &r.base.base.mr_td[..],
            })),
            Evidence::Nvidia(_) => None,
        }
    }

    /// The field a launch-time configuration digest lives in (Kata/CoCo
    /// init-data): SEV-SNP `HOST_DATA` (32 bytes) or TDX `MRCONFIGID` (48
    /// bytes). None for SGX and GPU evidence. Read without verification.
    pub fn init_data_field(&self) -> Option<Vec<u8>> {
        match self {
            Evidence::Snp(r) => Some(r.raw().host_data.to_vec()),
            Evidence::Dcap(q) => match &q.quote().report {
                dcap_qvl::quote::Report::SgxEnclave(_) => None,
                dcap_qvl::quote::Report::TD10(r) => Some(r.mr_config_id.to_vec()),
                dcap_qvl::quote::Report::TD15(r) => Some(r.base.mr_config_id.to_vec()),
                dcap_qvl::quote::Report::TD15Ex(r) => Some(r.base.base.mr_config_id.to_vec()),
            },
            Evidence::Nvidia(_) => None,
        }
    }

    pub fn kind(&self) -> EvidenceKind {
        match self {
            Evidence::Snp(_) => EvidenceKind::Snp,
            Evidence::Dcap(_) => EvidenceKind::Dcap,
            Evidence::Nvidia(_) => EvidenceKind::Nvidia,
        }
    }
}

/// Decides which parser the bytes are for, from their fixed headers.
pub fn detect(bytes: &[u8]) -> Result<EvidenceKind, ParseError> {
    let u16_at = |o: usize| {
        bytes
            .get(o..o.checked_add(2)?)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map(u16::from_le_bytes)
    };
    let version = u16_at(0);
    let key_type = u16_at(2);
    if matches!(version, Some(3..=5))
        && matches!(key_type, Some(2 | 3))
        && bytes.get(12..28) == Some(&INTEL_QE_VENDOR_ID[..])
    {
        return Ok(EvidenceKind::Dcap);
    }
    if bytes.len() == crate::snp::report::REPORT_SIZE {
        return Ok(EvidenceKind::Snp);
    }
    // SPDM 1.0-1.3 GET_MEASUREMENTS request (0xE0) followed by the response.
    if matches!(bytes.first(), Some(0x10..=0x13)) && bytes.get(1) == Some(&0xe0) {
        return Ok(EvidenceKind::Nvidia);
    }
    Err(ParseError::UnknownKind(format!(
        "{} bytes, starting {}",
        bytes.len(),
        hex::encode(bytes.get(..8).unwrap_or(bytes))
    )))
}

/// If `bytes` is hex text (whitespace allowed), its decoding.
pub fn decode_hex_text(bytes: &[u8]) -> Option<Vec<u8>> {
    let digits: Vec<u8> = bytes
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if digits.is_empty()
        || !digits.len().is_multiple_of(2)
        || !digits.iter().all(u8::is_ascii_hexdigit)
    {
        return None;
    }
    hex::decode(&digits).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kind_is_an_error() {
        assert!(matches!(
            Evidence::parse(b"hello"),
            Err(ParseError::UnknownKind(_))
        ));
        assert!(matches!(
            Evidence::parse(&[]),
            Err(ParseError::UnknownKind(_))
        ));
    }

    #[test]
    fn hex_text_is_decoded() {
        assert_eq!(decode_hex_text(b"0a0B\n ff"), Some(vec![0x0a, 0x0b, 0xff]));
        assert_eq!(decode_hex_text(b"0a0"), None);
        assert_eq!(decode_hex_text(b"zz"), None);
    }
}
