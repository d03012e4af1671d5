//! Loading the model the guest unsealed: the engine reads the plaintext
//! while its digest is re-checked on another thread, so the serial SHA-256
//! pass costs no time beside the load, and the model is returned only if
//! the digest matches the one the sealed header claims.

use ciel_engine::model::{Model, ModelError};
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
    std::thread::scope(|s| {
        let digest = s.spawn(|| plain.verify_digest());
        let model = Model::load(&mut plain.reader());
        digest
            .join()
            .map_err(|_| ModelError::Load("digest check thread panicked".into()))??;
        Ok(model?)
    })
}
