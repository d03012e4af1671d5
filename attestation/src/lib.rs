//! # ciel-attestation
//!
//! Everything in ciel trusts one decision: is this piece of attestation
//! evidence genuine, and does it satisfy the owner's policy? This crate makes
//! that decision, and nothing else.
//!
//! It is **sans-I/O and pure**: no clock, no network, no file system. The
//! caller hands in the evidence bytes, the collateral (certificates, Intel
//! TCB info, CRLs), a [`Policy`] and the instant to verify at, and gets a
//! [`Verdict`] back whose reasons are matchable enums ([`ReasonKind`]), not
//! strings.
//!
//! Supported evidence:
//! - AMD SEV-SNP attestation reports, versions 2, 3 and 5 (Milan, Genoa,
//!   Turin), signed by a VCEK or VLEK whose chain ends in a **pinned** AMD
//!   root ([`roots`]);
//! - Intel TDX (v4, v5) and SGX (v3) DCAP quotes with offline collateral,
//!   verified by `dcap-qvl` against the pinned Intel SGX root;
//! - NVIDIA Hopper SPDM `GET_MEASUREMENTS` responses, chained to NVIDIA's
//!   device identity root.
//!
//! The [`sim`] module produces byte-exact evidence signed by a simulated
//! vendor hierarchy, for running ciel without TEE hardware. The verifier
//! runs the same code on it; only a policy that names the simulated root
//! (through [`Policy::danger_trust_simulated_root`]) accepts it.

#![forbid(unsafe_code)]

pub mod azure;
pub mod collateral;
pub mod evidence;
pub mod nvidia;
pub mod policy;
pub mod roots;
pub mod sim;
pub mod snp;
pub mod tdx;
pub mod tee_evidence;
pub mod time;
pub mod verdict;
pub mod x509;

mod bytes;
mod verify;

pub use collateral::Collateral;
pub use evidence::{Evidence, EvidenceKind, ParseError};
pub use policy::{Policy, PolicyError};
pub use time::UnixTime;
pub use verdict::{Claims, Platform, Reason, ReasonKind, TcbStatus, Verdict};
pub use verify::verify;

/// The crate's error type, for the operations that can fail outright (as
/// opposed to verification, which always yields a [`Verdict`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Evidence bytes could not be parsed.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A policy document was invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Collateral could not be decoded.
    #[error(transparent)]
    Collateral(#[from] collateral::CollateralError),
    /// The simulated platform failed.
    #[error(transparent)]
    Sim(#[from] sim::SimError),
}
