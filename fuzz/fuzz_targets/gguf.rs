//! GGUF metadata from a model file the host serves.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(meta) = ciel_engine::gguf::parse_metadata(data) {
        let _ = ciel_engine::tokenizer::Tokenizer::from_gguf(&meta);
    }
});
