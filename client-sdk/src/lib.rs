//! # ciel-client
//!
//! The client side: nothing leaves the client before the guest's evidence
//! has been verified against the client's own policy. Light dependencies by
//! design (no inference engine, no vsock).
//!
//! - [`Client`]: `connect(url, policy)` → an attested TLS session (the
//!   guest's certificate carries its evidence; see [`tls`]), then
//!   OpenAI-style `chat` (streaming or not), `completions`, `models` and
//!   fresh evidence on demand;
//! - [`attested`]: the pure decision on an attestation document, check by
//!   check, and [`gpus`] for the GPUs the guest attested with;
//! - [`Endpoint`]: one verified connection per request, for callers that
//!   bring their own HTTP requests (the Python SDK's transports);
//! - [`policy`]: a policy file read with errors that name it;
//! - [`report`]: the verification report a person reads.

#![forbid(unsafe_code)]

pub mod attested;
pub mod client;
pub mod gpus;
pub mod policy;
pub mod report;
pub mod tls;

pub use client::{Client, ClientError, Connection, Endpoint};
