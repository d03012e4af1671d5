//! # ciel-protocol
//!
//! The bytes that cross trust boundaries, defined once so every component
//! agrees on them. Pure: no I/O, no clocks.
//!
//! - [`jcs`]: RFC 8785 JSON canonicalization, the input of every hash that
//!   binds JSON into attestation evidence.
//! - [`binding`]: Trustee's `report_data` binding of a key-release session
//!   (SHA-384 of the canonical `{nonce, tee-pubkey}`, zero-padded to 64 bytes).
//! - [`kbs`]: the Trustee KBS protocol v0.4.0 messages (RCAR).
//! - [`frame`]: length-prefixed control frames for vsock, with a hard cap;
//!   [`control`]: the CBOR messages they carry (model blobs for the guest).
//! - [`claims`]: the runtime-claims document a serving guest attests, and
//!   the TLS certificate extension that carries it.
//! - [`endpoint`]: transport addresses (vsock, Unix, TCP).
//! - [`initdata`]: Kata/CoCo init-data and the `HOST_DATA`/`MRCONFIGID`
//!   value that binds it.

#![forbid(unsafe_code)]

pub mod binding;
pub mod claims;
pub mod control;
pub mod endpoint;
pub mod frame;
pub mod initdata;
pub mod jcs;
pub mod jwe;
pub mod kbs;
pub mod sealed;
