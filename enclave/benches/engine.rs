//! The bare engine on the demo model, each figure beside its baseline in
//! the same run: loading the sealed model (in-memory unseal + load) against
//! loading the same plaintext from memory, and prompt/generation speed.
//! Needs the demo model (`scripts/fetch-model.sh`; or `CIEL_MODEL`).
//! Run: `cargo bench -p ciel-enclave --bench engine`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects
)]

use ciel_enclave::engine::model::{Kernels, Model, argmax};
use ciel_protocol::sealed::{
    DataKey, ModelInfo, SealParams, UnsealOptions, seal, unseal_in_memory,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::io::Cursor;
use std::path::PathBuf;

const NEW_TOKENS: usize = 32;

fn bench(c: &mut Criterion) {
    let path = ciel_enclave::engine::demo_model_path();
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
    let key = DataKey::from_bytes([9; 32]);
    let sha: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, &plain)
        .as_ref()
        .try_into()
        .unwrap();
    let params = SealParams {
        resource: "bench/model-key/demo".into(),
        model: ModelInfo {
            name: "demo".into(),
            format: "gguf".into(),
        },
        chunk_size: 1 << 20,
    };
    let mut sealed = Vec::with_capacity(plain.len() + (1 << 16));
    seal(
        &mut &plain[..],
        plain.len() as u64,
        sha,
        &key,
        &params,
        &mut sealed,
        |_| {},
    )
    .unwrap();

    let mut g = c.benchmark_group("load-demo-model");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(plain.len() as u64));
    g.bench_function("plaintext load (baseline)", |b| {
        b.iter(|| black_box(Model::load(&mut Cursor::new(&plain[..])).unwrap()))
    });
    g.bench_function("sealed load, digest re-checked before the load", |b| {
        b.iter_batched(
            || sealed.clone(),
            |s| {
                let p = unseal_in_memory(s, &key, UnsealOptions::default()).unwrap();
                black_box(Model::load(&mut p.reader()).unwrap())
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function(
        "sealed load, digest re-checked beside the load (guest)",
        |b| {
            let options = UnsealOptions {
                verify_plaintext_digest: false,
                ..UnsealOptions::default()
            };
            b.iter_batched(
                || sealed.clone(),
                |s| {
                    let p = unseal_in_memory(s, &key, options).unwrap();
                    black_box(Model::load_unsealed(&p).unwrap())
                },
                BatchSize::LargeInput,
            )
        },
    );
    g.finish();

    // Each figure twice: candle's kernels throughout (the baseline), then
    // ours (the AVX2 Q4_1 kernel; the same logits to the bit).
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
