//! The guest's sealed load of the demo model, beside its baseline in the
//! same run: loading the same plaintext from memory, against in-memory
//! unseal + load with the digest re-checked before the load, and with it
//! re-checked beside the load (what the guest does).
//! Needs the demo model (`scripts/fetch-model.sh`; or `CIEL_MODEL`).
//! Run: `cargo bench -p ciel-enclave --bench sealed_load`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects
)]

use ciel_enclave::sealed_model::load_unsealed;
use ciel_engine::model::Model;
use ciel_protocol::sealed::{
    DataKey, ModelInfo, SealParams, UnsealOptions, seal, unseal_in_memory,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::io::Cursor;

fn bench(c: &mut Criterion) {
    let path = ciel_engine::demo_model_path();
    let plain = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "demo model {} missing ({e}): run scripts/fetch-model.sh",
            path.display()
        )
    });
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
                    black_box(load_unsealed(&p).unwrap())
                },
                BatchSize::LargeInput,
            )
        },
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
