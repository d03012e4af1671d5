//! # ciel-keybroker
//!
//! The model owner's key broker: it releases a model's data key to a guest
//! only when fresh evidence, bound to the guest's ephemeral key, satisfies
//! the resource's attestation policy. It speaks the Trustee KBS protocol
//! v0.4.0 (`/kbs/v0/auth`, `/attest`, `/resource`), answers errors as
//! RFC 7807 problems, keeps keys encrypted at rest, and writes an
//! append-only audit log before any release.

#![forbid(unsafe_code)]

pub mod admin;
pub mod admin_api;
pub mod attest;
pub mod audit;
pub mod backend;
pub mod config;
pub mod ear;
pub mod gpus;
pub mod master_key;
pub mod metrics;
pub mod postgres;
pub mod problem;
pub mod rego;
pub mod resource;
pub mod sample;
pub mod server;
pub mod session;
pub mod store;
pub mod tls;

pub use resource::{ResourcePath, ResourcePathError};
