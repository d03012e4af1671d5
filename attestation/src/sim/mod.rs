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

mod certs;
mod snp;
mod tdx;

pub use snp::{LeafSpec, SimSnpReport, SnpSim};
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

pub(crate) fn crypto(e: impl std::fmt::Display) -> SimError {
    SimError::Crypto(e.to_string())
}

/// The operating system's random number generator.
pub(crate) fn os_rng() -> rand_core::UnwrapErr<getrandom::SysRng> {
    rand_core::UnwrapErr(getrandom::SysRng)
}
