//! The inference engine: GGUF, the tokenizer, the chat template, the
//! quantized model, sampling and the generation loop.

pub mod chat;
pub mod generate;
pub mod gguf;
pub mod llama;
pub mod model;
pub mod q4_1;
pub mod sampling;
#[cfg(test)]
pub(crate) mod testing;
pub mod tokenizer;

use std::path::PathBuf;

/// Where `scripts/fetch-model.sh` caches the demo model: `$CIEL_MODEL` if
/// set, else `$CIEL_CACHE/models/…`, else `~/.cache/ciel/models/…`. Used by
/// tests and benchmarks, never by the guest (which receives its model).
pub fn demo_model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CIEL_MODEL") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("CIEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/ciel")
        });
    cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
}
