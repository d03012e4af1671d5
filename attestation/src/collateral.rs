//! Collateral: what verification needs besides the evidence itself. Plain
//! data, fetched and cached elsewhere; here it is only decoded.

use serde::Deserialize;

/// Collateral could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollateralError {
    #[error("collateral JSON: {0}")]
    Json(serde_json::Error),
    #[error("collateral field `{field}`: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
}

impl From<serde_json::Error> for CollateralError {
    fn from(e: serde_json::Error) -> Self {
        CollateralError::Json(e)
    }
}

/// Everything verification may need; each platform uses its part.
#[derive(Debug, Clone, Default)]
pub struct Collateral {
    /// SNP: the VCEK/VLEK (DER or PEM).
    pub snp_signer: Option<Vec<u8>>,
    /// SNP: PEM bundle of ASK/ASVK + ARK (default: built-in).
    pub snp_chain: Option<Vec<u8>>,
    /// SNP: the ARK's CRL (KDS `crl`, DER or PEM).
    pub snp_crl: Option<Vec<u8>>,
    /// DCAP: TCB info, QE identity, CRLs and their issuer chains.
    pub dcap: Option<DcapCollateral>,
    /// NVIDIA: the GPU's device certificate chain (PEM, leaf first).
    pub gpu_cert_chain: Option<Vec<u8>>,
    /// NVIDIA: reference integrity manifests (SWID tag XML): driver, VBIOS.
    pub gpu_rims: Vec<Vec<u8>>,
}

/// DCAP collateral in the layout Intel's PCCS serves and dcap-qvl stores
/// (`*_collateral.json`): binary fields as hex strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcapCollateral {
    pub pck_crl_issuer_chain: String,
    pub root_ca_crl: Vec<u8>,
    pub pck_crl: Vec<u8>,
    pub tcb_info_issuer_chain: String,
    pub tcb_info: String,
    pub tcb_info_signature: Vec<u8>,
    pub qe_identity_issuer_chain: String,
    pub qe_identity: String,
    pub qe_identity_signature: Vec<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDcapCollateral {
    pck_crl_issuer_chain: String,
    root_ca_crl: String,
    pck_crl: String,
    tcb_info_issuer_chain: String,
    tcb_info: String,
    tcb_info_signature: String,
    qe_identity_issuer_chain: String,
    qe_identity: String,
    qe_identity_signature: String,
    #[serde(default)]
    #[allow(dead_code)]
    pck_certificate_chain: Option<String>,
}

impl DcapCollateral {
    /// Decodes the JSON layout (hex for binary fields).
    pub fn from_json(text: &[u8]) -> Result<Self, CollateralError> {
        let r: RawDcapCollateral = serde_json::from_slice(text)?;
        let hex_field = |field: &'static str, v: &str| {
            hex::decode(v.trim()).map_err(|e| CollateralError::Field {
                field,
                message: format!("not hex: {e}"),
            })
        };
        Ok(DcapCollateral {
            root_ca_crl: hex_field("root_ca_crl", &r.root_ca_crl)?,
            pck_crl: hex_field("pck_crl", &r.pck_crl)?,
            tcb_info_signature: hex_field("tcb_info_signature", &r.tcb_info_signature)?,
            qe_identity_signature: hex_field("qe_identity_signature", &r.qe_identity_signature)?,
            pck_crl_issuer_chain: r.pck_crl_issuer_chain,
            tcb_info_issuer_chain: r.tcb_info_issuer_chain,
            tcb_info: r.tcb_info,
            qe_identity_issuer_chain: r.qe_identity_issuer_chain,
            qe_identity: r.qe_identity,
        })
    }

    /// Encodes to the JSON layout.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "pck_crl_issuer_chain": self.pck_crl_issuer_chain,
            "root_ca_crl": hex::encode(&self.root_ca_crl),
            "pck_crl": hex::encode(&self.pck_crl),
            "tcb_info_issuer_chain": self.tcb_info_issuer_chain,
            "tcb_info": self.tcb_info,
            "tcb_info_signature": hex::encode(&self.tcb_info_signature),
            "qe_identity_issuer_chain": self.qe_identity_issuer_chain,
            "qe_identity": self.qe_identity,
            "qe_identity_signature": hex::encode(&self.qe_identity_signature),
        })
    }
}

/// Where verification finds collateral that evidence does not carry: a
/// collateral bundle (`ciel collateral bundle`), the key broker's
/// configured DCAP collateral. What it gives is verified like anything
/// the evidence carries; it is a source, never a trust anchor.
pub trait CollateralLookup {
    /// DCAP collateral for the quote `quote` (its FMSPC and PCK CA).
    fn dcap(&self, quote: &[u8]) -> Result<DcapCollateral, String>;

    /// The VCEK for an SNP report whose evidence carries none.
    fn snp_vcek(&self, _report: &crate::snp::report::SnpReport) -> Result<Vec<u8>, String> {
        Err("no source of VCEKs is configured (a collateral bundle would be one)".into())
    }

    /// The ASK/ASVK + ARK (PEM) for the report's product and key, where the
    /// source has it (AMD's own are built in; simulated ones are not).
    fn snp_chain(&self, _report: &crate::snp::report::SnpReport) -> Option<Vec<u8>> {
        None
    }

    /// AMD's CRL for the report's product and key, where the source has it.
    fn snp_crl(&self, _report: &crate::snp::report::SnpReport) -> Option<Vec<u8>> {
        None
    }
}

/// One DCAP collateral for every quote (the broker's `dcap_collateral`).
impl CollateralLookup for DcapCollateral {
    fn dcap(&self, _quote: &[u8]) -> Result<DcapCollateral, String> {
        Ok(self.clone())
    }
}
