//! The owner's attestation policy: which roots, platforms, measurements and
//! TCB levels are acceptable. Two stages: [`RawPolicy`] is what the TOML
//! file says (serde); [`Policy`] is validated and typed.
//!
//! A policy file that sets nothing still forbids debug guests and migration
//! agents and requires an up-to-date DCAP TCB. The no-policy mode of the CLI
//! ([`Policy::authenticity_only`]) checks authenticity alone.
//!
//! Trusting the simulated platform is deliberately awkward: the policy must
//! name the simulated root by its SHA-256 fingerprint in
//! `danger_simulated_roots`, or code must call
//! [`Policy::danger_trust_simulated_root`].

use crate::roots::AmdProduct;
use crate::snp::{SnpReport, TcbMinimums};
use crate::verdict::{Platform, ReasonKind, TcbStatus, Verdict};
use crate::x509::Cert;
use serde::Deserialize;

/// A policy file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The document is not valid TOML or has unknown or mistyped fields;
    /// the message carries line and column.
    #[error("{0}")]
    Toml(toml::de::Error),
    #[error("policy field `{field}`: {message}")]
    Field { field: String, message: String },
}

impl From<toml::de::Error> for PolicyError {
    fn from(e: toml::de::Error) -> Self {
        PolicyError::Toml(e)
    }
}

fn field_err(field: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError::Field {
        field: field.into(),
        message: message.into(),
    }
}

/// Minimum TCB components (SNP). Unset components are not checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinTcb {
    pub fmc: Option<u8>,
    pub bl: Option<u8>,
    pub tee: Option<u8>,
    pub snp: Option<u8>,
    pub ucode: Option<u8>,
}

/// The policy as written in TOML.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Platforms accepted ("snp", "tdx", "sgx", "nvidia"); empty = all.
    #[serde(default)]
    pub platforms: Vec<String>,
    /// SHA-256 fingerprints (hex) of simulated roots to trust. DANGER.
    #[serde(default)]
    pub danger_simulated_roots: Vec<String>,
    /// Expected `report_data` (hex, at most 64 bytes, zero-padded).
    pub report_data: Option<String>,
    /// Maximum age of collateral, every kind (seconds since its issue):
    /// DCAP TCB info and QE identity, AMD's CRL, NVIDIA OCSP responses
    /// (unless `[nvidia] max_ocsp_age_seconds`).
    pub max_collateral_age_seconds: Option<u64>,
    /// Clients: the oldest a guest's attestation may be (seconds since its
    /// claims' `issued_at`) unless it carries the client's nonce; older
    /// evidence in a certificate makes the client ask for fresh evidence.
    pub max_evidence_age_seconds: Option<u64>,
    /// Allowed model digests (SHA-256 of the plaintext weights, hex); empty
    /// = any. Evidence does not carry a model: clients check this against
    /// the guest's runtime-claims document bound into the evidence.
    #[serde(default)]
    pub model_sha256: Vec<String>,
    #[serde(default)]
    pub snp: RawSnpPolicy,
    #[serde(default)]
    pub tdx: RawTdxPolicy,
    #[serde(default)]
    pub sgx: RawSgxPolicy,
    #[serde(default)]
    pub nvidia: RawNvidiaPolicy,
    #[serde(default)]
    pub vtpm: RawVtpmPolicy,
}

/// Azure vTPM evidence: allowed values of the SHA-256 bank's PCRs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVtpmPolicy {
    /// PCR index ("0" to "23") → allowed values (32 bytes hex each).
    #[serde(default)]
    pub pcrs: std::collections::BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSnpPolicy {
    #[serde(default)]
    pub measurements: Vec<String>,
    #[serde(default)]
    pub host_data: Vec<String>,
    #[serde(default)]
    pub chip_ids: Vec<String>,
    #[serde(default)]
    pub products: Vec<String>,
    #[serde(default)]
    pub vmpls: Vec<u32>,
    /// Minimums of the reported TCB (the one the VCEK is derived from).
    #[serde(default)]
    pub min_tcb: MinTcb,
    #[serde(default)]
    pub min_committed_tcb: MinTcb,
    #[serde(default)]
    pub min_current_tcb: MinTcb,
    /// Minimums of the TCB the guest was launched on.
    #[serde(default)]
    pub min_launch_tcb: MinTcb,
    pub min_guest_svn: Option<u32>,
    #[serde(default)]
    pub danger_allow_debug: bool,
    #[serde(default)]
    pub allow_migration_agent: bool,
    pub allow_smt: Option<bool>,
    #[serde(default)]
    pub require_single_socket: bool,
    /// Refuse evidence unless AMD's CRL is given (and then checked).
    #[serde(default)]
    pub require_crl: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTdxPolicy {
    #[serde(default)]
    pub mrtd: Vec<String>,
    #[serde(default)]
    pub rtmr0: Vec<String>,
    #[serde(default)]
    pub rtmr1: Vec<String>,
    #[serde(default)]
    pub rtmr2: Vec<String>,
    #[serde(default)]
    pub rtmr3: Vec<String>,
    #[serde(default)]
    pub mrconfigid: Vec<String>,
    #[serde(default)]
    pub mrowner: Vec<String>,
    pub tcb_status: Option<Vec<String>>,
    #[serde(default)]
    pub danger_allow_debug: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSgxPolicy {
    #[serde(default)]
    pub mrenclave: Vec<String>,
    #[serde(default)]
    pub mrsigner: Vec<String>,
    pub tcb_status: Option<Vec<String>>,
    #[serde(default)]
    pub danger_allow_debug: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNvidiaPolicy {
    #[serde(default)]
    pub driver_versions: Vec<String>,
    #[serde(default)]
    pub vbios_versions: Vec<String>,
    pub nonce: Option<String>,
    /// Allowed architectures (`hopper`, `blackwell`); empty = any.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// Fewest GPUs a guest must attest (unset: none required).
    pub min_gpus: Option<u32>,
    /// Accept GPUs whose confidential-computing mode is off. DANGER.
    #[serde(default)]
    pub danger_allow_cc_off: bool,
    /// Accept GPUs in CC developer-tools mode. DANGER.
    #[serde(default)]
    pub danger_allow_devtools: bool,
    /// Accept several GPUs without protected PCIe. DANGER.
    #[serde(default)]
    pub danger_allow_unprotected_pcie: bool,
    /// Refuse a GPU unless every certificate NVIDIA's CAs issued in its
    /// chain has a stapled, good OCSP response.
    #[serde(default)]
    pub require_ocsp: bool,
    /// Oldest OCSP response accepted (seconds since its thisUpdate).
    pub max_ocsp_age_seconds: Option<u64>,
    /// Refuse a GPU unless reference integrity manifests come with it.
    #[serde(default)]
    pub require_rims: bool,
}

/// SNP rules, validated.
#[derive(Debug, Clone, Default)]
pub struct SnpPolicy {
    pub measurements: Vec<Vec<u8>>,
    pub host_data: Vec<Vec<u8>>,
    pub chip_ids: Vec<Vec<u8>>,
    pub products: Vec<AmdProduct>,
    pub vmpls: Vec<u32>,
    pub min_tcb: TcbMinimums,
    pub min_guest_svn: Option<u32>,
    pub allow_debug: bool,
    pub allow_migration_agent: bool,
    pub allow_smt: bool,
    pub require_single_socket: bool,
    pub require_crl: bool,
}

/// TDX rules, validated.
#[derive(Debug, Clone, Default)]
pub struct TdxPolicy {
    pub mrtd: Vec<Vec<u8>>,
    pub rtmr: [Vec<Vec<u8>>; 4],
    pub mrconfigid: Vec<Vec<u8>>,
    pub mrowner: Vec<Vec<u8>>,
    pub tcb_status: Vec<TcbStatus>,
    pub allow_debug: bool,
}

/// SGX rules, validated.
#[derive(Debug, Clone, Default)]
pub struct SgxPolicy {
    pub mrenclave: Vec<Vec<u8>>,
    pub mrsigner: Vec<Vec<u8>>,
    pub tcb_status: Vec<TcbStatus>,
    pub allow_debug: bool,
}

/// NVIDIA GPU rules, validated.
#[derive(Debug, Clone, Default)]
pub struct NvidiaPolicy {
    pub driver_versions: Vec<String>,
    pub vbios_versions: Vec<String>,
    pub nonce: Option<Vec<u8>>,
    /// Lowercase.
    pub architectures: Vec<String>,
    pub min_gpus: u32,
    pub allow_cc_off: bool,
    pub allow_devtools: bool,
    pub allow_unprotected_pcie: bool,
    pub require_ocsp: bool,
    pub max_ocsp_age_seconds: Option<u64>,
    pub require_rims: bool,
}

/// A validated policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub platforms: Vec<Platform>,
    simulated_roots: Vec<[u8; 32]>,
    pub report_data: Option<[u8; 64]>,
    pub max_collateral_age_seconds: Option<u64>,
    /// See [`RawPolicy::max_evidence_age_seconds`].
    pub max_evidence_age_seconds: Option<u64>,
    /// Allowed model digests (see [`RawPolicy::model_sha256`]).
    pub model_sha256: Vec<[u8; 32]>,
    pub snp: SnpPolicy,
    pub tdx: TdxPolicy,
    pub sgx: SgxPolicy,
    pub nvidia: NvidiaPolicy,
    pub vtpm: VtpmPolicy,
}

/// Azure vTPM rules, validated.
#[derive(Debug, Clone, Default)]
pub struct VtpmPolicy {
    /// PCR index → allowed values.
    pub pcrs: Vec<(usize, Vec<[u8; 32]>)>,
}

const DEFAULT_DCAP_STATUS: [TcbStatus; 2] = [TcbStatus::UpToDate, TcbStatus::SWHardeningNeeded];

impl Policy {
    /// Authenticity only: genuine evidence from a pinned root, valid at the
    /// instant, and for DCAP a TCB status of UpToDate or SWHardeningNeeded.
    /// No measurement, debug or TCB-minimum rules.
    pub fn authenticity_only() -> Self {
        Policy {
            snp: SnpPolicy {
                allow_debug: true,
                allow_migration_agent: true,
                allow_smt: true,
                ..Default::default()
            },
            tdx: TdxPolicy {
                allow_debug: true,
                tcb_status: DEFAULT_DCAP_STATUS.to_vec(),
                ..Default::default()
            },
            sgx: SgxPolicy {
                allow_debug: true,
                tcb_status: DEFAULT_DCAP_STATUS.to_vec(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Parses and validates a TOML policy document.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let raw: RawPolicy = toml::from_str(text)?;
        Self::from_raw(raw)
    }

    /// Parses and validates a JSON policy document (the same fields as
    /// TOML; what `ciel image measure --reference-values` writes).
    pub fn from_json(text: &str) -> Result<Self, PolicyError> {
        let raw: RawPolicy =
            serde_json::from_str(text).map_err(|e| field_err("(document)", e.to_string()))?;
        Self::from_raw(raw)
    }

    /// Validates a raw policy.
    pub fn from_raw(raw: RawPolicy) -> Result<Self, PolicyError> {
        let platforms = raw
            .platforms
            .iter()
            .map(|p| match p.as_str() {
                "snp" => Ok(Platform::Snp),
                "tdx" => Ok(Platform::Tdx),
                "sgx" => Ok(Platform::Sgx),
                "nvidia" => Ok(Platform::Nvidia),
                other => Err(field_err(
                    "platforms",
                    format!("unknown platform {other:?} (snp, tdx, sgx, nvidia)"),
                )),
            })
            .collect::<Result<_, _>>()?;
        let simulated_roots = raw
            .danger_simulated_roots
            .iter()
            .map(|h| fixed_hex::<32>("danger_simulated_roots", h))
            .collect::<Result<_, _>>()?;
        let report_data = match raw.report_data {
            Some(h) => {
                let b = hex_list("report_data", std::slice::from_ref(&h), Some(64), true)?;
                let mut out = [0u8; 64];
                if let Some(first) = b.first() {
                    out.get_mut(..first.len())
                        .ok_or_else(|| field_err("report_data", "longer than 64 bytes"))?
                        .copy_from_slice(first);
                }
                Some(out)
            }
            None => None,
        };
        let s = raw.snp;
        let snp = SnpPolicy {
            measurements: hex_list("snp.measurements", &s.measurements, Some(48), false)?,
            host_data: hex_list("snp.host_data", &s.host_data, Some(32), false)?,
            chip_ids: hex_list("snp.chip_ids", &s.chip_ids, Some(64), true)?,
            products: s
                .products
                .iter()
                .map(|p| {
                    AmdProduct::ALL
                        .into_iter()
                        .find(|q| q.name().eq_ignore_ascii_case(p))
                        .ok_or_else(|| {
                            field_err(
                                "snp.products",
                                format!("unknown product {p:?} (Milan, Genoa, Turin)"),
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
            vmpls: s.vmpls,
            min_tcb: TcbMinimums {
                reported: s.min_tcb,
                committed: s.min_committed_tcb,
                current: s.min_current_tcb,
                launch: s.min_launch_tcb,
            },
            min_guest_svn: s.min_guest_svn,
            allow_debug: s.danger_allow_debug,
            allow_migration_agent: s.allow_migration_agent,
            allow_smt: s.allow_smt.unwrap_or(true),
            require_single_socket: s.require_single_socket,
            require_crl: s.require_crl,
        };
        let t = raw.tdx;
        let tdx = TdxPolicy {
            mrtd: hex_list("tdx.mrtd", &t.mrtd, Some(48), false)?,
            rtmr: [
                hex_list("tdx.rtmr0", &t.rtmr0, Some(48), false)?,
                hex_list("tdx.rtmr1", &t.rtmr1, Some(48), false)?,
                hex_list("tdx.rtmr2", &t.rtmr2, Some(48), false)?,
                hex_list("tdx.rtmr3", &t.rtmr3, Some(48), false)?,
            ],
            mrconfigid: hex_list("tdx.mrconfigid", &t.mrconfigid, Some(48), false)?,
            mrowner: hex_list("tdx.mrowner", &t.mrowner, Some(48), false)?,
            tcb_status: statuses("tdx.tcb_status", t.tcb_status)?,
            allow_debug: t.danger_allow_debug,
        };
        let g = raw.sgx;
        let sgx = SgxPolicy {
            mrenclave: hex_list("sgx.mrenclave", &g.mrenclave, Some(32), false)?,
            mrsigner: hex_list("sgx.mrsigner", &g.mrsigner, Some(32), false)?,
            tcb_status: statuses("sgx.tcb_status", g.tcb_status)?,
            allow_debug: g.danger_allow_debug,
        };
        let n = raw.nvidia;
        let nvidia = NvidiaPolicy {
            driver_versions: n.driver_versions,
            vbios_versions: n
                .vbios_versions
                .iter()
                .map(|v| v.to_ascii_lowercase())
                .collect(),
            nonce: match n.nonce {
                Some(h) => Some(fixed_hex::<32>("nvidia.nonce", &h)?.to_vec()),
                None => None,
            },
            architectures: n
                .architectures
                .iter()
                .map(|a| match a.to_ascii_lowercase().as_str() {
                    known @ ("hopper" | "blackwell") => Ok(known.to_string()),
                    _ => Err(field_err(
                        "nvidia.architectures",
                        format!("unknown architecture {a:?} (hopper, blackwell)"),
                    )),
                })
                .collect::<Result<_, _>>()?,
            min_gpus: n.min_gpus.unwrap_or(0),
            allow_cc_off: n.danger_allow_cc_off,
            allow_devtools: n.danger_allow_devtools,
            allow_unprotected_pcie: n.danger_allow_unprotected_pcie,
            require_ocsp: n.require_ocsp,
            max_ocsp_age_seconds: n.max_ocsp_age_seconds,
            require_rims: n.require_rims,
        };
        let vtpm = VtpmPolicy {
            pcrs: raw
                .vtpm
                .pcrs
                .iter()
                .map(|(index, values)| {
                    let field = format!("vtpm.pcrs.{index}");
                    let i: usize = index
                        .parse()
                        .ok()
                        .filter(|i| *i < 24)
                        .ok_or_else(|| field_err(&field, "a PCR index is 0 to 23"))?;
                    let values = values
                        .iter()
                        .map(|h| fixed_hex::<32>(&field, h))
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok((i, values))
                })
                .collect::<Result<_, PolicyError>>()?,
        };
        Ok(Policy {
            vtpm,
            platforms,
            simulated_roots,
            report_data,
            max_collateral_age_seconds: raw.max_collateral_age_seconds,
            max_evidence_age_seconds: raw.max_evidence_age_seconds,
            model_sha256: raw
                .model_sha256
                .iter()
                .map(|h| fixed_hex::<32>("model_sha256", h))
                .collect::<Result<_, _>>()?,
            snp,
            tdx,
            sgx,
            nvidia,
        })
    }

    /// DANGER: trust a simulated vendor root (by its certificate's SHA-256).
    /// Evidence it signs gives no confidentiality; callers must say so.
    pub fn danger_trust_simulated_root(&mut self, sha256: [u8; 32]) {
        if !self.simulated_roots.contains(&sha256) {
            self.simulated_roots.push(sha256);
        }
    }

    /// Whether `root` is a simulated root this policy names.
    pub fn trusts_simulated_root(&self, root: &Cert) -> bool {
        self.simulated_roots.contains(&root.sha256())
    }

    /// Whether any simulated root is trusted.
    pub fn trusts_any_simulated_root(&self) -> bool {
        !self.simulated_roots.is_empty()
    }

    /// Step 0 of every platform: is the platform allowed at all? With
    /// `platforms` empty, a policy that pins the guest's identity on some
    /// CPU platforms (SNP measurements or host data; TDX MRTD, RTMRs,
    /// MRCONFIGID or MROWNER; SGX MRENCLAVE or MRSIGNER) accepts CPU
    /// evidence from those platforms only: otherwise a policy written for
    /// one SNP guest would accept any genuine TDX guest. GPU evidence is
    /// not a CPU platform and is left to `platforms`.
    pub(crate) fn check_platform(&self, v: &mut Verdict) {
        if !self.platforms.is_empty() {
            if !self.platforms.contains(&v.platform) {
                v.reject(
                    ReasonKind::PlatformNotAllowed,
                    format!("the policy does not allow {} evidence", v.platform),
                );
            }
            return;
        }
        let pinned = self.identity_pinned_platforms();
        let cpu = matches!(v.platform, Platform::Snp | Platform::Tdx | Platform::Sgx);
        if cpu && !pinned.is_empty() && !pinned.contains(&v.platform) {
            v.reject(
                ReasonKind::PlatformNotAllowed,
                format!(
                    "the policy pins guest identities for {} only and sets none for {} evidence (list `platforms` to accept it by its other rules)",
                    pinned
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" and "),
                    v.platform
                ),
            );
        }
    }

    /// The CPU platforms whose table pins a guest identity.
    fn identity_pinned_platforms(&self) -> Vec<Platform> {
        let (snp, tdx, sgx) = (&self.snp, &self.tdx, &self.sgx);
        [
            (
                Platform::Snp,
                !snp.measurements.is_empty() || !snp.host_data.is_empty(),
            ),
            (
                Platform::Tdx,
                !tdx.mrtd.is_empty()
                    || tdx.rtmr.iter().any(|r| !r.is_empty())
                    || !tdx.mrconfigid.is_empty()
                    || !tdx.mrowner.is_empty(),
            ),
            (
                Platform::Sgx,
                !sgx.mrenclave.is_empty() || !sgx.mrsigner.is_empty(),
            ),
        ]
        .into_iter()
        .filter_map(|(p, pinned)| pinned.then_some(p))
        .collect()
    }

    pub(crate) fn check_report_data(&self, report_data: &[u8], v: &mut Verdict) {
        if let Some(want) = &self.report_data
            && report_data != want.as_slice()
        {
            v.reject(
                ReasonKind::ReportDataMismatch,
                format!(
                    "report_data is {} but the policy expects {}",
                    hex::encode(report_data),
                    hex::encode(want)
                ),
            );
        }
    }
}

fn statuses(field: &str, list: Option<Vec<String>>) -> Result<Vec<TcbStatus>, PolicyError> {
    match list {
        None => Ok(DEFAULT_DCAP_STATUS.to_vec()),
        Some(l) => l
            .iter()
            .map(|s| {
                TcbStatus::from_intel(s)
                    .ok_or_else(|| field_err(field, format!("unknown TCB status {s:?}")))
            })
            .collect(),
    }
}

fn fixed_hex<const N: usize>(field: &str, h: &str) -> Result<[u8; N], PolicyError> {
    let b =
        hex::decode(h.trim()).map_err(|e| field_err(field, format!("{h:?} is not hex: {e}")))?;
    b.try_into()
        .map_err(|b: Vec<u8>| field_err(field, format!("{} bytes, expected {N}", b.len())))
}

fn hex_list(
    field: &str,
    list: &[String],
    len: Option<usize>,
    at_most: bool,
) -> Result<Vec<Vec<u8>>, PolicyError> {
    list.iter()
        .enumerate()
        .map(|(i, h)| {
            let b = hex::decode(h.trim())
                .map_err(|e| field_err(format!("{field}[{i}]"), format!("not hex: {e}")))?;
            match len {
                Some(n) if at_most && b.len() > n => Err(field_err(
                    format!("{field}[{i}]"),
                    format!("{} bytes, at most {n}", b.len()),
                )),
                Some(n) if !at_most && b.len() != n => Err(field_err(
                    format!("{field}[{i}]"),
                    format!("{} bytes, expected {n}", b.len()),
                )),
                _ => Ok(b),
            }
        })
        .collect()
}

/// Whether `value` is allowed by `list` (empty = anything).
pub(crate) fn allowed(list: &[Vec<u8>], value: &[u8]) -> bool {
    list.is_empty() || list.iter().any(|x| x.as_slice() == value)
}

/// Whether `value` is allowed by a list of prefixes padded with zeros.
fn allowed_padded(list: &[Vec<u8>], value: &[u8]) -> bool {
    list.is_empty()
        || list.iter().any(|x| {
            value.len() >= x.len()
                && value.starts_with(x)
                && value.iter().skip(x.len()).all(|&b| b == 0)
        })
}

/// SNP policy rules; returns the TCB status against the minimums.
pub(crate) fn apply_snp(
    p: &Policy,
    report: &SnpReport,
    turin: bool,
    product: Option<AmdProduct>,
    v: &mut Verdict,
) -> TcbStatus {
    p.check_platform(v);
    let s = &p.snp;
    let raw = report.raw();
    let gp = report.policy();
    if gp.debug_allowed && !s.allow_debug {
        v.reject(
            ReasonKind::DebugAllowed,
            "guest policy allows debugging (policy bit 19)",
        );
    }
    if gp.migration_agent_allowed && !s.allow_migration_agent {
        v.reject(
            ReasonKind::MigrationAgentAllowed,
            "guest policy allows a migration agent (policy bit 18)",
        );
    }
    if gp.smt_allowed && !s.allow_smt {
        v.reject(
            ReasonKind::SmtAllowed,
            "guest policy allows SMT but the policy forbids it",
        );
    }
    if !gp.single_socket && s.require_single_socket {
        v.reject(
            ReasonKind::SingleSocketRequired,
            "guest policy does not restrict the guest to one socket",
        );
    }
    if !allowed(&s.measurements, &raw.measurement) {
        v.reject(
            ReasonKind::MeasurementNotAllowed,
            format!(
                "measurement {} is not allowed",
                hex::encode(raw.measurement)
            ),
        );
    }
    if !allowed(&s.host_data, &raw.host_data) {
        v.reject(
            ReasonKind::HostDataNotAllowed,
            format!("host_data {} is not allowed", hex::encode(raw.host_data)),
        );
    }
    if !allowed_padded(&s.chip_ids, &raw.chip_id) {
        v.reject(
            ReasonKind::ChipIdNotAllowed,
            format!(
                "chip_id {} is not in the allowlist",
                hex::encode(raw.chip_id)
            ),
        );
    }
    if !s.vmpls.is_empty() && !s.vmpls.contains(&raw.vmpl.get()) {
        v.reject(
            ReasonKind::VmplNotAllowed,
            format!("VMPL {} is not allowed", raw.vmpl.get()),
        );
    }
    if !s.products.is_empty() && !product.is_some_and(|pr| s.products.contains(&pr)) {
        v.reject(
            ReasonKind::ProductMismatch,
            "the report's product is not allowed by the policy",
        );
    }
    p.check_report_data(&raw.report_data, v);
    let mut status = TcbStatus::UpToDate;
    if let Some(min) = s.min_guest_svn
        && raw.guest_svn.get() < min
    {
        v.reject(
            ReasonKind::TcbBelowMinimum,
            format!("guest_svn {} < minimum {min}", raw.guest_svn.get()),
        );
    }
    if !crate::snp::check_tcbs(report, turin, &s.min_tcb, v) {
        status = TcbStatus::OutOfDate;
    }
    status
}

/// Shared DCAP rules: TCB status and collateral age.
pub(crate) fn apply_dcap_status(allowed_status: &[TcbStatus], v: &mut Verdict) {
    if v.tcb_status == TcbStatus::NoMatchingTcbLevel {
        return; // already rejected with its own code
    }
    if !allowed_status.contains(&v.tcb_status) {
        let kind = if v.tcb_status == TcbStatus::Revoked {
            ReasonKind::TcbRevoked
        } else {
            ReasonKind::TcbStatusNotAllowed
        };
        let adv = if v.advisory_ids.is_empty() {
            String::new()
        } else {
            format!(" (advisories {})", v.advisory_ids.join(", "))
        };
        v.reject(
            kind,
            format!("TCB status {}{adv} is not accepted", v.tcb_status),
        );
    }
}
