//! Constrained decoding's cost per token on the real vocabularies: working
//! out every token a JSON grammar allows (the trie walk a sampled or
//! off-format step needs) where few are allowed (before the object), where
//! most are (inside a string), and where a schema narrows it (a key), each
//! beside the baseline of trying every token on its own in the same run.
//! Needs the real models (`scripts/fetch-model.sh smollm2`, `gemma3`).
//! Run: `cargo bench -p ciel-engine --bench grammar`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ciel_engine::grammar::Matcher;
use ciel_engine::grammar::json::{json_object, json_schema};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;

fn bench(c: &mut Criterion) {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"]
    });
    for name in [
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma-3-270m-q4_k_m.gguf",
    ] {
        let tokenizer = ciel_engine::cached_tokenizer(name).unwrap_or_else(|e| panic!("{e}"));
        let trie = tokenizer.token_trie();
        let object = Arc::new(json_object());
        let keyed = Arc::new(json_schema(&schema).unwrap());
        let at = |grammar: &Arc<_>, text: &str| {
            let mut m = Matcher::new(Arc::clone(grammar));
            assert!(m.advance(text.as_bytes()));
            m
        };
        let states = [
            ("start", at(&object, "")),
            ("in-string", at(&object, "{\"note\": \"It is")),
            ("schema-key", at(&keyed, "{")),
        ];
        for (state, m) in &states {
            let mut g = c.benchmark_group(format!("grammar/{name}/{state}"));
            g.sample_size(10);
            g.bench_function("trie", |b| b.iter(|| black_box(m.allowed(trie))));
            g.bench_function("every-token", |b| {
                b.iter(|| {
                    (0..tokenizer.vocab_size() as u32)
                        .filter(|&id| {
                            tokenizer.writes_text(id) && m.accepts(&tokenizer.token_bytes(id))
                        })
                        .count()
                })
            });
            g.finish();
            eprintln!("{name} {state}: {} tokens allowed", m.allowed(trie).len());
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
