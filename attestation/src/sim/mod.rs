//! The simulated platform: byte-exact SEV-SNP reports signed by a simulated
//! AMD-style hierarchy (RSA-PSS ARK and ASK, ECDSA P-384 VCEK), for running
//! ciel where there is no TEE hardware.
//!
//! The verifier treats simulated evidence exactly like real evidence; only
//! the trust anchor differs, and it is trusted only by a policy that names
//! its fingerprint. Nothing here gives confidentiality.
//!
//! Key material lives in memory; [`SnpSim::to_files`] and
//! [`SnpSim::from_files`] let the caller (the CLI) keep it in the user's
//! data directory. Generation takes the current time as an input.

mod certs;
mod snp;

pub use snp::{SimSnpReport, SnpSim};

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
