//! Tokenizing a request-sized prompt (1 MiB, the API's body limit) built to
//! be slow — one long word, a run of spaces, a run of digits — beside the
//! baseline of ordinary prose of the same size in the same run: the ratio
//! shows that no input shape costs more than a small factor of prose (a
//! quadratic merge or a regex rescan would make it thousands).
//! Needs the real models (`scripts/fetch-model.sh smollm2`, `gemma3`).
//! Run: `cargo bench -p ciel-engine --bench tokenizer`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const SIZE: usize = 1 << 20;

fn bench(c: &mut Criterion) {
    let prose = "The quick brown fox jumps over the lazy dog, 42 times. ".repeat(SIZE / 56);
    let inputs = [
        ("prose (baseline)", prose),
        ("one word", "a".repeat(SIZE)),
        ("spaces", " ".repeat(SIZE)),
        ("digits", "7".repeat(SIZE)),
    ];
    for name in [
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma-3-270m-q4_k_m.gguf",
    ] {
        let tokenizer = ciel_engine::cached_tokenizer(name).unwrap_or_else(|e| panic!("{e}"));
        let mut g = c.benchmark_group(format!("tokenizer/{name}"));
        g.sample_size(10);
        for (what, text) in &inputs {
            g.throughput(Throughput::Bytes(text.len() as u64));
            g.bench_function(*what, |b| {
                b.iter(|| black_box(tokenizer.encode_prompt(text, true)))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
