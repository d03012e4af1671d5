//! # ciel-engine
//!
//! The inference engine: GGUF, the tokenizer, the chat template, the
//! quantized model, sampling and the generation loop. It depends on nothing
//! else of ours: the guest runtime (`ciel-enclave`) hands it decrypted
//! bytes and serves what it generates.

// `unsafe` is denied everywhere but the SIMD kernels (`kernels::*::x86`,
// `kernels::x86`): their entries, each allowed for its one call, which a
// run-time CPU feature check makes sound, and loads and stores of whole
// fixed-size arrays.
#![deny(unsafe_code)]

pub mod arch;
pub mod attention;
pub mod chat;
pub mod device;
pub mod embeddings;
pub mod generate;
pub mod gguf;
pub mod grammar;
pub mod kernels;
pub mod kv_cache;
mod linear;
pub mod logprobs;
pub mod model;
pub mod rows;
/// The Q4_1 kernel (where it lived before the kernels had a module).
pub use kernels::q4_1;
pub mod sampling;
pub mod scheduler;
/// Tiny deterministic models of every architecture × weight type, checked
/// against llama.cpp (the tests, and through `testing`, the reference
/// script's generator).
#[cfg(any(test, feature = "testing"))]
pub mod synthetic;
#[cfg(test)]
mod synthetic_tests;
/// Test doubles (a scripted model, a tiny tokenizer), for this crate's tests
/// and, through the `testing` feature, the guest runtime's.
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tokenizer;
pub mod tools;
pub mod transformer;

use std::path::PathBuf;

/// Where `scripts/fetch-model.sh` caches the demo model: `$CIEL_MODEL` if
/// set, else [`cached_model`]. Used by tests and benchmarks, never by the
/// guest (which receives its model).
pub fn demo_model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CIEL_MODEL") {
        return PathBuf::from(p);
    }
    cached_model("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Where `scripts/fetch-model.sh` caches the model file `name`:
/// `$CIEL_CACHE/models/…`, else `~/.cache/ciel/models/…`.
pub fn cached_model(name: &str) -> PathBuf {
    let cache = std::env::var_os("CIEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/ciel")
        });
    cache.join("models").join(name)
}

/// The tokenizer of the cached model `name`, from its metadata alone (for
/// benchmarks and tests); the error names the file and the fetch script.
pub fn cached_tokenizer(name: &str) -> Result<tokenizer::Tokenizer, String> {
    let path = cached_model(name);
    let fail = |e: &dyn std::fmt::Display| {
        format!(
            "{}: {e} (scripts/fetch-model.sh fetches it)",
            path.display()
        )
    };
    let mut f = std::fs::File::open(&path).map_err(|e| fail(&e))?;
    let meta = gguf::read_metadata(&mut f).map_err(|e| fail(&e))?;
    tokenizer::Tokenizer::from_gguf(&meta).map_err(|e| fail(&e))
}
