//! # ciel-collateral
//!
//! What verification needs besides the evidence — AMD's VCEKs, cert chains
//! and CRLs (KDS), Intel's TCB info, QE identity and CRLs (PCS/PCCS),
//! NVIDIA's RIMs and OCSP responses — fetched, kept and handed on without
//! being trusted (every verifier checks each item's signature):
//!
//! - [`item`]: each item named by the request its upstream answers;
//! - [`entry`]: a fetched item, checked for shape, with its window;
//! - [`store`]: the host's on-disk cache;
//! - [`upstream`]: fetching from AMD, Intel, NVIDIA (or a mirror);
//! - [`service`]: the host shim's collateral service (HTTP, to the guest
//!   over vsock and to clients), refreshing items before they expire;
//! - [`bundle`]: one file with every item, for air-gapped hubs;
//! - [`lookup`]: what a verifier needs for a given report or quote, from a
//!   bundle or the service.

#![forbid(unsafe_code)]

pub mod bundle;
pub mod entry;
pub mod item;
pub mod lookup;
pub mod service;
pub mod store;
pub mod upstream;

pub use bundle::Bundle;
pub use entry::Entry;
pub use item::{Item, ItemError, Upstream};
pub use service::Service;
pub use store::Store;
pub use upstream::Upstreams;
