//! # ciel-host
//!
//! The untrusted host shim: it carries ciphertext between clients, the key
//! broker and the guest, and serves the sealed model. Nothing it does can
//! make a verifier accept; it is built to be boring and bounded.
//!
//! - [`shim`]: the client ↔ guest byte proxy (client TLS passes through,
//!   never terminated here), the sealed-model blob service, the key-broker
//!   relay, with connection caps, idle timeouts and graceful shutdown;
//! - [`metrics`]: Prometheus counters (connections, bytes, errors; never
//!   anything about content);
//! - [`launch`]: the QEMU command line for SNP and TDX guests.

#![forbid(unsafe_code)]

pub mod launch;
pub mod metrics;
pub mod shim;

pub use ciel_transport::Endpoint;
