//! Loading the model the guest unsealed: the engine reads the plaintext
//! while its digest is re-checked on another thread, so the serial SHA-256
//! pass costs no time beside the load, and the model is returned only if
//! the digest matches the one the sealed header claims.

use ciel_engine::device::ComputeDevice;
use ciel_engine::model::{Kernels, Model, ModelError};
use ciel_protocol::sealed::{Plaintext, SealError};

/// Why the unsealed model could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealedModelError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("sealed model: {0}")]
    Sealed(#[from] SealError),
}

/// Loads a model unsealed without the plaintext digest re-check
/// (`verify_plaintext_digest: false`), re-checking the digest beside the
/// load. A digest mismatch wins over a load error: a model that is not the
/// one claimed is refused as such.
pub fn load_unsealed(plain: &Plaintext) -> Result<Model, SealedModelError> {
    load_unsealed_on(plain, ComputeDevice::Cpu)
}

/// [`load_unsealed`] onto `device`: on a GPU the weights are uploaded from
/// the decrypted memory once, whole (under confidential computing each
/// host-to-GPU copy passes an encrypted bounce buffer: few, large copies).
pub fn load_unsealed_on(
    plain: &Plaintext,
    device: ComputeDevice,
) -> Result<Model, SealedModelError> {
    let kernels = match device {
        ComputeDevice::Cpu => Kernels::Ciel,
        ComputeDevice::Cuda(_) => Kernels::Candle,
    };
    std::thread::scope(|s| {
        let digest = s.spawn(|| plain.verify_digest());
        let model = Model::load_on(&mut plain.reader(), kernels, device);
        digest
            .join()
            .map_err(|_| ModelError::Load("digest check thread panicked".into()))??;
        Ok(model?)
    })
}
