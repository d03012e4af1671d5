//! # ciel-enclave
//!
//! The guest runtime that runs inside the confidential VM (as PID 1): it
//! gets evidence from the platform, proves itself to the key broker,
//! decrypts the sealed model in memory and serves inference.
//!
//! This crate starts with obtaining evidence through configfs-tsm, the
//! Linux interface common to SEV-SNP and TDX guests.

// `unsafe` is denied everywhere but `platform::devices` (the guest
// drivers' ioctls) and the entry to the engine's AVX2 kernel
// (`engine::q4_1::avx2::dot`), each allowing it for its one call.
#![deny(unsafe_code)]

pub mod engine;
pub mod init;
pub mod kbs_client;
pub mod platform;
pub mod serve;
pub mod tsm;
