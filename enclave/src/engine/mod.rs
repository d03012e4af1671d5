//! The inference engine. So far: GGUF metadata and the tokenizer.

pub mod chat;
pub mod generate;
pub mod gguf;
pub mod model;
pub mod sampling;
pub mod tokenizer;
