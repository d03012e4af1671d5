//! The bare engine on the demo model, each figure beside its baseline in
//! the same run: prompt and generation speed with candle's kernels
//! throughout, then with ours. (The guest's sealed load is benched in
//! `ciel-enclave`'s `sealed_load`.)
//! Needs the demo model (`scripts/fetch-model.sh`; or `CIEL_MODEL`).
//! Run: `cargo bench -p ciel-engine --bench engine`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects
)]

use ciel_engine::model::{Kernels, Model, argmax};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::io::Cursor;
use std::path::PathBuf;

const NEW_TOKENS: usize = 32;

fn bench(c: &mut Criterion) {
    let path = ciel_engine::demo_model_path();
    let plain = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "demo model {} missing ({e}): run scripts/fetch-model.sh",
            path.display()
        )
    });
    // The chat prompt of the first llama.cpp reference.
    let refp = std::env::var_os("CIEL_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/reference/smollm2-llamacpp.json")
        });
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(refp).unwrap()).unwrap();
    let prompt: Vec<u32> = reference["greedy"][0]["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    // Each figure twice: candle's kernels throughout (the baseline), then
    // ours (the batched kernels, attention over the paged cache).
    for (name, kernels) in [
        ("candle kernels", Kernels::Candle),
        ("ciel kernels", Kernels::Ciel),
    ] {
        let mut model = Model::load_with(&mut Cursor::new(&plain[..]), kernels).unwrap();
        let mut g = c.benchmark_group(format!("engine-demo-model/{name}"));
        g.sample_size(10);
        g.throughput(Throughput::Elements(prompt.len() as u64));
        g.bench_function(format!("prompt pass, {} tokens", prompt.len()), |b| {
            b.iter(|| {
                model.reset();
                black_box(model.forward(&prompt).unwrap())
            })
        });
        g.throughput(Throughput::Elements(NEW_TOKENS as u64));
        g.bench_function("greedy generation, 32 tokens after the prompt", |b| {
            // The prompt pass before each sample is not timed.
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iters {
                    model.reset();
                    let mut logits = model.forward(&prompt).unwrap();
                    let t = std::time::Instant::now();
                    for _ in 0..NEW_TOKENS {
                        let (next, _) = argmax(&logits);
                        logits = model.forward(&[next]).unwrap();
                    }
                    total += t.elapsed();
                    black_box(&logits);
                }
                total
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
