//! # ciel-client
//!
//! The client side: nothing leaves the client before the guest's evidence
//! has been verified against the client's own policy. Light dependencies by
//! design (no inference engine, no vsock).
//!
//! This crate starts with the verification report a person reads.

#![forbid(unsafe_code)]

pub mod report;
