//! The inference engine. So far: GGUF metadata and the tokenizer.

pub mod gguf;
pub mod model;
pub mod tokenizer;
