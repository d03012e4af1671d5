//! NVIDIA Hopper GPU attestation: the SPDM `GET_MEASUREMENTS` exchange the
//! GPU signs with its device key, chained to NVIDIA's device identity root.

mod c14n;
pub mod rim;
mod spdm;
mod verify;

pub use spdm::{MeasurementBlock, NvidiaReport, OpaqueFields};
pub use verify::{NvidiaClaims, verify_nvidia};
