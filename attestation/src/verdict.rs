//! The outcome of verification: accept or reject, with typed reasons and
//! the claims read from the evidence.

use serde::Serialize;
use std::fmt;

/// Which kind of hardware produced the evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// AMD SEV-SNP.
    Snp,
    /// Intel TDX.
    Tdx,
    /// Intel SGX.
    Sgx,
    /// NVIDIA GPU (SPDM measurements).
    Nvidia,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Platform::Snp => "snp",
            Platform::Tdx => "tdx",
            Platform::Sgx => "sgx",
            Platform::Nvidia => "nvidia",
        })
    }
}

/// TCB status. For DCAP these are Intel's names; for SNP only `UpToDate`
/// and `OutOfDate` (against the policy's minimum TCB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TcbStatus {
    UpToDate,
    SWHardeningNeeded,
    ConfigurationNeeded,
    ConfigurationAndSWHardeningNeeded,
    OutOfDate,
    OutOfDateConfigurationNeeded,
    Revoked,
    /// TDX 1.5: launched on an out-of-date TCB, the current TCB is fine.
    TDRelaunchAdvised,
    TDRelaunchAdvisedConfigurationNeeded,
    /// No TCB level in the collateral matches the platform.
    NoMatchingTcbLevel,
    /// Not applicable (NVIDIA) or not evaluated because verification stopped earlier.
    Unknown,
}

impl TcbStatus {
    /// Intel's spelling (and ours for SNP).
    pub fn as_str(self) -> &'static str {
        match self {
            TcbStatus::UpToDate => "UpToDate",
            TcbStatus::SWHardeningNeeded => "SWHardeningNeeded",
            TcbStatus::ConfigurationNeeded => "ConfigurationNeeded",
            TcbStatus::ConfigurationAndSWHardeningNeeded => "ConfigurationAndSWHardeningNeeded",
            TcbStatus::OutOfDate => "OutOfDate",
            TcbStatus::OutOfDateConfigurationNeeded => "OutOfDateConfigurationNeeded",
            TcbStatus::Revoked => "Revoked",
            TcbStatus::TDRelaunchAdvised => "TDRelaunchAdvised",
            TcbStatus::TDRelaunchAdvisedConfigurationNeeded => {
                "TDRelaunchAdvisedConfigurationNeeded"
            }
            TcbStatus::NoMatchingTcbLevel => "NoMatchingTcbLevel",
            TcbStatus::Unknown => "Unknown",
        }
    }

    /// Parses Intel's spelling.
    pub fn from_intel(s: &str) -> Option<Self> {
        Some(match s {
            "UpToDate" => TcbStatus::UpToDate,
            "SWHardeningNeeded" => TcbStatus::SWHardeningNeeded,
            "ConfigurationNeeded" => TcbStatus::ConfigurationNeeded,
            "ConfigurationAndSWHardeningNeeded" => TcbStatus::ConfigurationAndSWHardeningNeeded,
            "OutOfDate" => TcbStatus::OutOfDate,
            "OutOfDateConfigurationNeeded" => TcbStatus::OutOfDateConfigurationNeeded,
            "Revoked" => TcbStatus::Revoked,
            "TDRelaunchAdvised" => TcbStatus::TDRelaunchAdvised,
            "TDRelaunchAdvisedConfigurationNeeded" => {
                TcbStatus::TDRelaunchAdvisedConfigurationNeeded
            }
            "NoMatchingTcbLevel" => TcbStatus::NoMatchingTcbLevel,
            _ => return None,
        })
    }
}

impl fmt::Display for TcbStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why evidence was rejected. Callers match on these; `code()` is the
/// stable string used on the command line and in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReasonKind {
    // --- authenticity ---
    /// The evidence could not be parsed.
    EvidenceMalformed,
    /// The evidence signature does not verify with the signing key.
    EvidenceSignatureInvalid,
    /// A certificate could not be parsed.
    CertificateMalformed,
    /// A certificate needed for verification was not supplied.
    CertificateMissing,
    /// A certificate's issuer is not the next certificate in the chain.
    ChainIssuerMismatch,
    /// A certificate's signature does not verify with its issuer's key.
    CertificateSignatureInvalid,
    /// The chain ends in a root that is neither pinned nor named by the policy.
    UntrustedRoot,
    /// A certificate is not yet valid at the verification instant.
    CertificateNotYetValid,
    /// A certificate has expired at the verification instant.
    CertificateExpired,
    /// A certificate is revoked by a CRL.
    CertificateRevoked,
    /// The signing key uses an algorithm we do not accept.
    UnsupportedAlgorithm,
    /// SNP: the VCEK/VLEK TCB extensions disagree with the report's `reported_tcb`.
    VcekTcbMismatch,
    /// SNP: the VCEK hwID extension disagrees with the report's `chip_id`.
    VcekChipIdMismatch,
    /// SNP: the report names a different signing key type (VCEK vs VLEK) than supplied.
    SigningKeyMismatch,
    /// SNP: the report's CPU or the chain is of a different product.
    ProductMismatch,
    /// DCAP: the collateral could not be decoded.
    CollateralMalformed,
    /// DCAP: the collateral (TCB info, QE identity, CRLs) is missing.
    CollateralMissing,
    /// DCAP: a collateral signature is invalid.
    CollateralSignatureInvalid,
    /// DCAP: the collateral has expired or is not yet valid at the instant.
    CollateralExpired,
    /// DCAP: the collateral does not belong to this platform (FMSPC).
    CollateralMismatch,
    /// DCAP: the QE report does not bind the attestation key.
    QeBindingInvalid,
    /// DCAP: the quoting enclave does not match the QE identity.
    QeIdentityMismatch,
    /// DCAP: generic verification failure.
    DcapVerificationFailed,
    // --- TCB ---
    /// No TCB level in the collateral matches the platform.
    TcbNoMatchingLevel,
    /// The TCB status is not one the policy accepts.
    TcbStatusNotAllowed,
    /// A TCB component is below the policy's minimum.
    TcbBelowMinimum,
    /// The TCB is revoked.
    TcbRevoked,
    /// SNP: the report's TCBs are not reported ≤ committed ≤ current.
    TcbOrderViolated,
    /// SNP: the guest was launched on a TCB below the policy's minimum.
    LaunchTcbBelowMinimum,
    // --- policy ---
    /// The root is trusted but the policy does not allow this platform.
    PlatformNotAllowed,
    /// Debugging is allowed for the guest.
    DebugAllowed,
    /// A migration agent is allowed.
    MigrationAgentAllowed,
    /// SMT is allowed but the policy forbids it.
    SmtAllowed,
    /// The guest is not restricted to a single socket as the policy requires.
    SingleSocketRequired,
    /// The launch measurement (SNP MEASUREMENT / TDX MRTD) is not allowed.
    MeasurementNotAllowed,
    /// A TDX runtime measurement register is not allowed.
    RtmrNotAllowed,
    /// HOST_DATA / MRCONFIGID / MROWNER not allowed.
    HostDataNotAllowed,
    /// The chip ID is not in the allowlist.
    ChipIdNotAllowed,
    /// `report_data` is not the expected value.
    ReportDataMismatch,
    /// SGX MRENCLAVE / MRSIGNER not allowed.
    EnclaveIdentityNotAllowed,
    /// The VMPL is not allowed.
    VmplNotAllowed,
    /// The collateral is older than the policy's maximum age.
    CollateralTooOld,
    /// GPU: the driver version is not allowed.
    GpuDriverNotAllowed,
    /// GPU: the VBIOS version is not allowed.
    GpuVbiosNotAllowed,
    /// GPU: the measurements do not match the reference manifest.
    GpuMeasurementMismatch,
    /// GPU: the reference manifest (RIM) is not authentic.
    GpuRimInvalid,
    /// GPU: the nonce is not the expected one.
    GpuNonceMismatch,
    /// GPU: not in confidential-computing mode.
    GpuCcModeOff,
    /// GPU: CC developer tools (DEVTOOLS) mode is on.
    GpuDevtoolsOn,
    /// GPUs: more than one, and protected PCIe is off.
    GpuProtectedPcieOff,
    /// GPUs: fewer than the policy's minimum.
    GpuCountBelowMinimum,
    /// GPU: the architecture is not allowed.
    GpuArchitectureNotAllowed,
    /// GPUs: the evidence is not what the attested claims say (another
    /// report, another GPU, or missing).
    GpuEvidenceUnbound,
    /// Azure vTPM: the SNP report's report_data does not bind the HCL
    /// report's variable data (which names the attestation key).
    HclVarDataUnbound,
    /// Azure vTPM: the TPM quote is malformed or not signed by the HCL
    /// report's attestation key.
    TpmQuoteInvalid,
    /// Azure vTPM: the PCR values given are not those the quote covers.
    TpmPcrDigestMismatch,
    /// Azure vTPM: a PCR the policy constrains has another value, or is
    /// not quoted.
    PcrNotAllowed,
    /// The guest's evidence is older than the policy's
    /// `max_evidence_age_seconds` (or states no time, or a future one).
    EvidenceTooOld,
    /// OCSP: no stapled response for a certificate the policy requires one for.
    OcspMissing,
    /// OCSP: a response could not be parsed or its signature does not verify.
    OcspInvalid,
    /// OCSP: a response is older than the policy allows or past its next update.
    OcspStale,
    /// OCSP: the responder does not know the certificate.
    OcspStatusUnknown,
}

impl ReasonKind {
    /// The stable machine-readable code.
    pub fn code(self) -> &'static str {
        use ReasonKind::*;
        match self {
            EvidenceMalformed => "evidence_malformed",
            EvidenceSignatureInvalid => "evidence_signature_invalid",
            CertificateMalformed => "certificate_malformed",
            CertificateMissing => "certificate_missing",
            ChainIssuerMismatch => "chain_issuer_mismatch",
            CertificateSignatureInvalid => "certificate_signature_invalid",
            UntrustedRoot => "untrusted_root",
            CertificateNotYetValid => "certificate_not_yet_valid",
            CertificateExpired => "certificate_expired",
            CertificateRevoked => "certificate_revoked",
            UnsupportedAlgorithm => "unsupported_algorithm",
            VcekTcbMismatch => "vcek_tcb_mismatch",
            VcekChipIdMismatch => "vcek_chip_id_mismatch",
            SigningKeyMismatch => "signing_key_mismatch",
            ProductMismatch => "product_mismatch",
            CollateralMalformed => "collateral_malformed",
            CollateralMissing => "collateral_missing",
            CollateralSignatureInvalid => "collateral_signature_invalid",
            CollateralExpired => "collateral_expired",
            CollateralMismatch => "collateral_mismatch",
            QeBindingInvalid => "qe_binding_invalid",
            QeIdentityMismatch => "qe_identity_mismatch",
            DcapVerificationFailed => "dcap_verification_failed",
            TcbNoMatchingLevel => "tcb_no_matching_level",
            TcbStatusNotAllowed => "tcb_status_not_allowed",
            TcbBelowMinimum => "tcb_below_minimum",
            TcbRevoked => "tcb_revoked",
            TcbOrderViolated => "tcb_order_violated",
            LaunchTcbBelowMinimum => "launch_tcb_below_minimum",
            PlatformNotAllowed => "platform_not_allowed",
            DebugAllowed => "debug_allowed",
            MigrationAgentAllowed => "migration_agent_allowed",
            SmtAllowed => "smt_allowed",
            SingleSocketRequired => "single_socket_required",
            MeasurementNotAllowed => "measurement_not_allowed",
            RtmrNotAllowed => "rtmr_not_allowed",
            HostDataNotAllowed => "host_data_not_allowed",
            ChipIdNotAllowed => "chip_id_not_allowed",
            ReportDataMismatch => "report_data_mismatch",
            EnclaveIdentityNotAllowed => "enclave_identity_not_allowed",
            VmplNotAllowed => "vmpl_not_allowed",
            CollateralTooOld => "collateral_too_old",
            GpuDriverNotAllowed => "gpu_driver_not_allowed",
            GpuVbiosNotAllowed => "gpu_vbios_not_allowed",
            GpuMeasurementMismatch => "gpu_measurement_mismatch",
            GpuRimInvalid => "gpu_rim_invalid",
            GpuNonceMismatch => "gpu_nonce_mismatch",
            GpuCcModeOff => "gpu_cc_mode_off",
            GpuDevtoolsOn => "gpu_devtools_on",
            GpuProtectedPcieOff => "gpu_protected_pcie_off",
            GpuCountBelowMinimum => "gpu_count_below_minimum",
            GpuArchitectureNotAllowed => "gpu_architecture_not_allowed",
            GpuEvidenceUnbound => "gpu_evidence_unbound",
            EvidenceTooOld => "evidence_too_old",
            HclVarDataUnbound => "hcl_var_data_unbound",
            TpmQuoteInvalid => "tpm_quote_invalid",
            TpmPcrDigestMismatch => "tpm_pcr_digest_mismatch",
            PcrNotAllowed => "pcr_not_allowed",
            OcspMissing => "ocsp_missing",
            OcspInvalid => "ocsp_invalid",
            OcspStale => "ocsp_stale",
            OcspStatusUnknown => "ocsp_status_unknown",
        }
    }
}

impl fmt::Display for ReasonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One reason for rejection: a kind to match on and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub kind: ReasonKind,
    pub message: String,
}

impl Reason {
    pub fn new(kind: ReasonKind, message: impl Into<String>) -> Self {
        Reason {
            kind,
            message: message.into(),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Reason", 2)?;
        st.serialize_field("code", self.kind.code())?;
        st.serialize_field("message", &self.message)?;
        st.end()
    }
}

/// Claims read from the evidence, in the shape `ciel attest verify --json`
/// prints (hex lowercase). Present even when the verdict is reject, when
/// the evidence parsed.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)]
pub enum Claims {
    Snp(crate::snp::SnpClaims),
    Tdx(crate::tdx::TdxClaims),
    Sgx(crate::tdx::SgxClaims),
    Nvidia(crate::nvidia::NvidiaClaims),
}

/// The result of [`crate::verify`].
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// "accept" or "reject".
    #[serde(rename = "verdict", serialize_with = "ser_verdict")]
    pub accepted: bool,
    pub platform: Platform,
    pub tcb_status: TcbStatus,
    pub advisory_ids: Vec<String>,
    pub reasons: Vec<Reason>,
    pub claims: Option<Claims>,
    /// True when the chain ended in the simulated root (accepted only
    /// because the policy named it). Callers must warn loudly.
    pub simulated: bool,
}

fn ser_verdict<S: serde::Serializer>(accepted: &bool, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if *accepted { "accept" } else { "reject" })
}

impl Verdict {
    /// A verdict for `platform` that starts out accepting; reasons turn it.
    pub(crate) fn new(platform: Platform) -> Self {
        Verdict {
            accepted: true,
            platform,
            tcb_status: TcbStatus::Unknown,
            advisory_ids: Vec::new(),
            reasons: Vec::new(),
            claims: None,
            simulated: false,
        }
    }

    /// Records a reason and turns the verdict to reject.
    pub(crate) fn reject(&mut self, kind: ReasonKind, message: impl Into<String>) {
        self.accepted = false;
        self.reasons.push(Reason::new(kind, message));
    }

    /// The reason codes, in order.
    pub fn reason_codes(&self) -> Vec<String> {
        self.reasons
            .iter()
            .map(|r| r.kind.code().to_string())
            .collect()
    }

    /// All reasons on one line: `[code] message; [code] message`.
    pub fn summary(&self) -> String {
        self.reasons
            .iter()
            .map(|r| format!("[{}] {}", r.kind.code(), r.message))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Whether any reason of this kind was recorded.
    pub fn has(&self, kind: ReasonKind) -> bool {
        self.reasons.iter().any(|r| r.kind == kind)
    }

    /// The JSON object of the CLI contract.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}
