//! A request's `response_format.json_schema.schema` — attacker-controlled —
//! compiled to a grammar, then text fed to its matcher byte by byte: no
//! panic, no runaway, and every text the matcher calls complete parses as
//! JSON. Input: the schema (JSON), a 0xFF byte, then the text.
#![no_main]
use ciel_engine::grammar::Matcher;
use ciel_engine::grammar::json::{json_object, json_schema};
use std::sync::Arc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (schema, text) = match data.iter().position(|&b| b == 0xff) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let grammar = match serde_json::from_slice::<serde_json::Value>(schema) {
        Ok(s) => match json_schema(&s) {
            Ok(g) => g,
            Err(_) => return,
        },
        // Not JSON: the text against any JSON object instead.
        Err(_) => json_object(),
    };
    let mut m = Matcher::new(Arc::new(grammar));
    for (i, b) in text.iter().enumerate() {
        if !m.advance(&[*b]) {
            break;
        }
        if m.is_complete() {
            let written = &text[..=i];
            assert!(
                serde_json::from_slice::<serde_json::Value>(written).is_ok(),
                "complete but not JSON: {:?}",
                String::from_utf8_lossy(written)
            );
        }
    }
});
