//! What an SNP report says, for people and policies (hex lowercase).

use super::report::{SnpReport, TcbVersion};
use serde::Serialize;

/// A TCB version as printed: `fmc` only for Turin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TcbClaims {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fmc: Option<u8>,
    pub bl: u8,
    pub tee: u8,
    pub snp: u8,
    pub ucode: u8,
    /// The raw 64-bit value, hex.
    pub raw: String,
}

impl From<TcbVersion> for TcbClaims {
    fn from(t: TcbVersion) -> Self {
        TcbClaims {
            fmc: t.fmc,
            bl: t.bl,
            tee: t.tee,
            snp: t.snp,
            ucode: t.ucode,
            raw: format!("{:#x}", t.raw),
        }
    }
}

/// The claims of an SNP report.
#[derive(Debug, Clone, Serialize)]
pub struct SnpClaims {
    pub version: u32,
    pub guest_svn: u32,
    pub measurement: String,
    pub report_data: String,
    pub host_data: String,
    /// Guest policy, hex (`0x30000`).
    pub policy: String,
    pub vmpl: u32,
    pub chip_id: String,
    pub reported_tcb: TcbClaims,
    pub current_tcb: TcbClaims,
    pub committed_tcb: TcbClaims,
    pub launch_tcb: TcbClaims,
    /// "Milan", "Genoa", "Turin", "Simulated", or null when unknown.
    pub product: Option<String>,
    pub signing_key: super::SigningKey,
    pub platform_info: String,
    pub id_key_digest: String,
    pub author_key_digest: String,
    pub report_id: String,
    pub family_id: String,
    pub image_id: String,
    pub current_version: String,
    pub debug_allowed: bool,
    pub migration_agent_allowed: bool,
    pub smt_allowed: bool,
    /// CPUID family/model/stepping (v3+ reports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpuid: Option<CpuidClaims>,
    /// Mitigation vectors (v5 reports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launch_mit_vector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_mit_vector: Option<String>,
}

/// CPUID identification in v3+ reports (hex).
#[derive(Debug, Clone, Serialize)]
pub struct CpuidClaims {
    pub family: String,
    pub model: String,
    pub stepping: String,
}

impl SnpClaims {
    pub(crate) fn from_report(r: &SnpReport, turin: bool, product: Option<String>) -> Self {
        let raw = r.raw();
        let tcb = |v: u64| TcbClaims::from(TcbVersion::decode(v, turin));
        let policy = r.policy();
        SnpClaims {
            version: r.version(),
            guest_svn: raw.guest_svn.get(),
            measurement: hex::encode(raw.measurement),
            report_data: hex::encode(raw.report_data),
            host_data: hex::encode(raw.host_data),
            policy: format!("{:#x}", raw.policy.get()),
            vmpl: raw.vmpl.get(),
            chip_id: hex::encode(raw.chip_id),
            reported_tcb: tcb(raw.reported_tcb.get()),
            current_tcb: tcb(raw.current_tcb.get()),
            committed_tcb: tcb(raw.committed_tcb.get()),
            launch_tcb: tcb(raw.launch_tcb.get()),
            product,
            signing_key: r.signing_key(),
            platform_info: format!("{:#x}", raw.platform_info.get()),
            id_key_digest: hex::encode(raw.id_key_digest),
            author_key_digest: hex::encode(raw.author_key_digest),
            report_id: hex::encode(raw.report_id),
            family_id: hex::encode(raw.family_id),
            image_id: hex::encode(raw.image_id),
            current_version: format!(
                "{}.{}.{}",
                raw.current_major, raw.current_minor, raw.current_build
            ),
            debug_allowed: policy.debug_allowed,
            migration_agent_allowed: policy.migration_agent_allowed,
            smt_allowed: policy.smt_allowed,
            cpuid: (r.version() >= 3).then(|| CpuidClaims {
                family: format!("{:#x}", raw.cpuid_fam_id),
                model: format!("{:#x}", raw.cpuid_mod_id),
                stepping: format!("{:#x}", raw.cpuid_step),
            }),
            launch_mit_vector: (r.version() >= 5)
                .then(|| format!("{:#x}", raw.launch_mit_vector.get())),
            current_mit_vector: (r.version() >= 5)
                .then(|| format!("{:#x}", raw.current_mit_vector.get())),
        }
    }
}
