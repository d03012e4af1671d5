//! NVIDIA Hopper GPU attestation: the SPDM `GET_MEASUREMENTS` exchange the
//! GPU signs with its device key, chained to NVIDIA's device identity root.

pub(crate) mod c14n;
pub mod gpus;
pub mod ocsp;
pub mod rim;
mod spdm;
mod verify;

pub use gpus::{CcMode, GpuEvidence, GpuSetVerdict, GpuVerdict, mode_refusal, verify_gpus};
pub use spdm::{MeasurementBlock, NvidiaReport, OpaqueFields};
pub use verify::{GpuCollateral, NvidiaClaims, verify_nvidia, verify_nvidia_with};
