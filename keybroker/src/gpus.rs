//! A session's GPUs against a policy: checked at `/attest` with the
//! broker's policy and again at each release with the resource's, like
//! the CPU evidence.

use ciel_attestation::nvidia::{GpuSetVerdict, verify_gpus};
use ciel_attestation::tee_evidence::Decoded;
use ciel_attestation::{Policy, UnixTime};

/// The GPU set's verdict, or `None` when the session has no GPU and the
/// policy requires none.
pub fn check(decoded: &Decoded, policy: &Policy, now: u64) -> Option<GpuSetVerdict> {
    if decoded.gpus.is_empty() && policy.nvidia.min_gpus == 0 {
        return None;
    }
    Some(verify_gpus(
        &decoded.gpus,
        &decoded.gpu_nonce,
        policy,
        UnixTime(now),
    ))
}
