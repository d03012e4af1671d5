//! The simulated platform: byte-exact SEV-SNP reports signed by a simulated
//! AMD-style hierarchy (RSA-PSS ARK and ASK, ECDSA P-384 VCEK) and TDX v4
//! quotes with collateral from a simulated Intel-style PKI (ECDSA P-256),
//! for running ciel where there is no TEE hardware.
//!
//! The verifier treats simulated evidence exactly like real evidence; only
//! the trust anchor differs, and it is trusted only by a policy that names
//! its fingerprint. Nothing here gives confidentiality.
//!
//! Key material lives in memory; `to_files` and `from_files` let the caller (the CLI) keep it in the user's
//! data directory. Generation takes the current time as an input.

mod azure;
mod certs;
mod nvidia;
mod ocsp;
mod rim;
mod snp;
mod tdx;

pub use azure::{AzVtpmSim, az_snp_hcl_report, az_tdx_hcl_report, var_data_for};
pub use nvidia::{NvidiaSim, SimGpu, SimGpuReport, SimOcspResponder, SimOcspStatus};
pub use rim::SimRim;
pub use snp::{LeafSpec, SIM_TCB, SimSnpReport, SnpSim};
pub use tdx::{SimTdxQuote, TD_ATTRIBUTES_DEFAULT, TdxSim};

/// The simulated platform failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    #[error("simulated platform: {0}")]
    Crypto(String),
    #[error("simulated platform: stored file {file}: {message}")]
    Stored { file: String, message: String },
    #[error("simulated platform: {0}")]
    Input(String),
}

/// Reads the files a hierarchy was saved to, with errors naming the file.
pub(crate) struct StoredFiles<F: Fn(&str) -> Option<Vec<u8>>>(pub F);

impl<F: Fn(&str) -> Option<Vec<u8>>> StoredFiles<F> {
    fn bad(file: &str, message: impl std::fmt::Display) -> SimError {
        SimError::Stored {
            file: file.into(),
            message: message.to_string(),
        }
    }

    /// A file's bytes.
    pub(crate) fn bytes(&self, file: &str) -> Result<Vec<u8>, SimError> {
        (self.0)(file).ok_or_else(|| Self::bad(file, "missing"))
    }

    /// A certificate, checked to parse.
    pub(crate) fn cert(&self, file: &str) -> Result<Vec<u8>, SimError> {
        let der = self.bytes(file)?;
        crate::x509::Cert::from_der(&der).map_err(|e| Self::bad(file, e))?;
        Ok(der)
    }

    /// A key, decoded by `parse` (PKCS#8 DER).
    pub(crate) fn key<K, E: std::fmt::Display>(
        &self,
        file: &str,
        parse: impl Fn(&[u8]) -> Result<K, E>,
    ) -> Result<K, SimError> {
        parse(&self.bytes(file)?).map_err(|e| Self::bad(file, e))
    }
}

/// A private key as the stored files keep it (PKCS#8 DER).
pub(crate) fn pkcs8(key: &impl p384::pkcs8::EncodePrivateKey) -> Result<Vec<u8>, SimError> {
    key.to_pkcs8_der()
        .map(|d| d.as_bytes().to_vec())
        .map_err(crypto)
}

pub(crate) fn crypto(e: impl std::fmt::Display) -> SimError {
    SimError::Crypto(e.to_string())
}

/// The operating system's random number generator.
pub(crate) fn os_rng() -> rand_core::UnwrapErr<getrandom::SysRng> {
    rand_core::UnwrapErr(getrandom::SysRng)
}
