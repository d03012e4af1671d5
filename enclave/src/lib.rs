//! # ciel-enclave
//!
//! The guest runtime that runs inside the confidential VM (as PID 1): it
//! gets evidence from the platform, proves itself to the key broker,
//! decrypts the sealed model in memory and serves inference.
//!
//! This crate starts with obtaining evidence through configfs-tsm, the
//! Linux interface common to SEV-SNP and TDX guests.

// `unsafe` is denied everywhere but `platform::devices` (the guest
// drivers' ioctls), which allows it for its one call. The inference engine
// and its kernels are their own crate, `ciel-engine`.
#![deny(unsafe_code)]

pub mod gpu;
pub mod guest_settings;
pub mod init;
pub mod kbs_client;
pub mod platform;
pub mod sealed_model;
pub mod serve;
pub mod tpm;
pub mod tsm;

/// Seconds since the Unix epoch by the guest's clock (0 before it).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
