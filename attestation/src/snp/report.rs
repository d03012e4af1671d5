//! The SEV-SNP ATTESTATION_REPORT structure (AMD SEV-SNP ABI specification,
//! "ATTESTATION_REPORT Structure"), versions 2, 3 and 5.
//!
//! The layout is fixed, so it is a `#[repr(C)]` struct read with zerocopy,
//! with a compile-time size check. Version 3 added the CPUID fields (so the
//! product is known from the report); version 5 added the mitigation
//! vectors. Turin (family 1Ah) lays out TCB_VERSION differently.

use crate::evidence::ParseError;
use crate::roots::AmdProduct;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Size of an attestation report in bytes.
pub const REPORT_SIZE: usize = 1184;
/// The signed part: everything before the signature.
pub const SIGNED_LEN: usize = 0x2a0;

#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawReport {
    pub version: U32,
    pub guest_svn: U32,
    pub policy: U64,
    pub family_id: [u8; 16],
    pub image_id: [u8; 16],
    pub vmpl: U32,
    pub signature_algo: U32,
    pub current_tcb: U64,
    pub platform_info: U64,
    /// Bit 0 AUTHOR_KEY_EN, bit 1 MASK_CHIP_KEY, bits 4:2 SIGNING_KEY.
    pub key_info: U32,
    pub _reserved0: [u8; 4],
    pub report_data: [u8; 64],
    pub measurement: [u8; 48],
    pub host_data: [u8; 32],
    pub id_key_digest: [u8; 48],
    pub author_key_digest: [u8; 48],
    pub report_id: [u8; 32],
    pub report_id_ma: [u8; 32],
    pub reported_tcb: U64,
    pub cpuid_fam_id: u8,
    pub cpuid_mod_id: u8,
    pub cpuid_step: u8,
    pub _reserved1: [u8; 21],
    pub chip_id: [u8; 64],
    pub committed_tcb: U64,
    pub current_build: u8,
    pub current_minor: u8,
    pub current_major: u8,
    pub _reserved2: u8,
    pub committed_build: u8,
    pub committed_minor: u8,
    pub committed_major: u8,
    pub _reserved3: u8,
    pub launch_tcb: U64,
    pub launch_mit_vector: U64,
    pub current_mit_vector: U64,
    pub _reserved4: [u8; 0x98],
    pub signature_r: [u8; 72],
    pub signature_s: [u8; 72],
    pub _signature_reserved: [u8; 368],
}

const _: () = assert!(core::mem::size_of::<RawReport>() == REPORT_SIZE);
const _: () = assert!(core::mem::offset_of!(RawReport, report_data) == 0x50);
const _: () = assert!(core::mem::offset_of!(RawReport, chip_id) == 0x1a0);
const _: () = assert!(core::mem::offset_of!(RawReport, launch_tcb) == 0x1f0);
const _: () = assert!(core::mem::offset_of!(RawReport, signature_r) == SIGNED_LEN);

/// Which key signed the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SigningKey {
    Vcek,
    Vlek,
    None,
}

/// A TCB_VERSION, decoded for the product's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct TcbVersion {
    /// Turin only: firmware of the FMC; `None` before Turin.
    pub fmc: Option<u8>,
    pub bl: u8,
    pub tee: u8,
    pub snp: u8,
    pub ucode: u8,
    #[serde(skip)]
    pub raw: u64,
}

impl TcbVersion {
    /// Decodes `raw` with the Milan/Genoa layout or, when `turin`, Turin's.
    pub fn decode(raw: u64, turin: bool) -> Self {
        let b = raw.to_le_bytes();
        if turin {
            TcbVersion {
                fmc: Some(b[0]),
                bl: b[1],
                tee: b[2],
                snp: b[3],
                ucode: b[7],
                raw,
            }
        } else {
            TcbVersion {
                fmc: None,
                bl: b[0],
                tee: b[1],
                snp: b[6],
                ucode: b[7],
                raw,
            }
        }
    }
}

/// The guest policy bits that matter for trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct GuestPolicy {
    pub raw: u64,
    pub abi_major: u8,
    pub abi_minor: u8,
    pub smt_allowed: bool,
    pub migration_agent_allowed: bool,
    pub debug_allowed: bool,
    pub single_socket: bool,
}

impl GuestPolicy {
    pub fn decode(raw: u64) -> Self {
        let bit = |n: u32| raw & (1u64 << n) != 0;
        let b = raw.to_le_bytes();
        GuestPolicy {
            raw,
            abi_minor: b[0],
            abi_major: b[1],
            smt_allowed: bit(16),
            migration_agent_allowed: bit(18),
            debug_allowed: bit(19),
            single_socket: bit(20),
        }
    }
}

/// A parsed, not yet verified, attestation report.
#[derive(Debug, Clone)]
pub struct SnpReport {
    raw: RawReport,
    bytes: Vec<u8>,
}

impl SnpReport {
    /// Parses a report. Exactly [`REPORT_SIZE`] bytes; versions 2, 3, 5
    /// (and 4, which shares 3's layout).
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        if bytes.len() != REPORT_SIZE {
            return Err(ParseError::Length {
                what: "SEV-SNP report",
                expected: REPORT_SIZE,
                actual: bytes.len(),
            });
        }
        let raw = RawReport::read_from_bytes(bytes).map_err(|_| ParseError::Length {
            what: "SEV-SNP report",
            expected: REPORT_SIZE,
            actual: bytes.len(),
        })?;
        let version = raw.version.get();
        if !(2..=5).contains(&version) {
            return Err(ParseError::UnsupportedVersion {
                what: "SEV-SNP report",
                version,
                offset: 0,
            });
        }
        let algo = raw.signature_algo.get();
        if algo != 1 {
            return Err(ParseError::Field {
                what: "SEV-SNP report",
                field: "signature_algo",
                offset: 0x34,
                message: format!("{algo} is not ECDSA P-384 with SHA-384 (1)"),
            });
        }
        Ok(SnpReport {
            raw,
            bytes: bytes.to_vec(),
        })
    }

    pub fn raw(&self) -> &RawReport {
        &self.raw
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn version(&self) -> u32 {
        self.raw.version.get()
    }

    /// The bytes covered by the signature.
    pub fn signed_bytes(&self) -> &[u8] {
        self.bytes.get(..SIGNED_LEN).unwrap_or_default()
    }

    /// The signature as big-endian `r || s`, 48 bytes each (the report
    /// stores them little-endian in 72-byte fields, zero-extended).
    pub fn signature_p1363(&self) -> Option<[u8; 96]> {
        let mut out = [0u8; 96];
        let (r, s) = (&self.raw.signature_r, &self.raw.signature_s);
        // The high 24 bytes of each 72-byte field must be zero for P-384.
        // The rest of the 512-byte signature field is reserved and must be zero.
        let reserved = self.raw._signature_reserved.iter();
        if r.get(48..)?
            .iter()
            .chain(s.get(48..)?)
            .chain(reserved)
            .any(|&b| b != 0)
        {
            return None;
        }
        for (i, (rb, sb)) in r.iter().take(48).zip(s.iter().take(48)).enumerate() {
            *out.get_mut(47usize.checked_sub(i)?)? = *rb;
            *out.get_mut(95usize.checked_sub(i)?)? = *sb;
        }
        Some(out)
    }

    /// The product from CPUID (v3+), or `None` for v2 reports.
    pub fn product(&self) -> Option<AmdProduct> {
        if self.version() < 3 {
            return None;
        }
        AmdProduct::from_cpuid(self.raw.cpuid_fam_id, self.raw.cpuid_mod_id)
    }

    /// Whether the TCB layout is Turin's. For v2 reports (no CPUID) the
    /// caller decides from the chain; this says what the report itself says.
    pub fn is_turin(&self) -> bool {
        self.version() >= 3 && self.raw.cpuid_fam_id == 0x1a
    }

    pub fn signing_key(&self) -> SigningKey {
        match (self.raw.key_info.get() >> 2) & 0b111 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            _ => SigningKey::None,
        }
    }

    pub fn chip_id_masked(&self) -> bool {
        self.raw.key_info.get() & 0b10 != 0
    }

    pub fn policy(&self) -> GuestPolicy {
        GuestPolicy::decode(self.raw.policy.get())
    }

    pub fn reported_tcb(&self, turin: bool) -> TcbVersion {
        TcbVersion::decode(self.raw.reported_tcb.get(), turin)
    }

    /// The chip ID as the VCEK's hwID holds it: 8 bytes on Turin, 64 before.
    pub fn chip_id_for_vcek(&self, turin: bool) -> &[u8] {
        let n = if turin { 8 } else { 64 };
        self.raw.chip_id.get(..n).unwrap_or_default()
    }
}
