//! Unsealing throughput against its physical baseline, in the same run:
//! bare `ring` AES-256-GCM over the same chunks on one thread and on all
//! threads. Run: `cargo bench -p ciel-protocol --bench unseal`.
//! Target (issue): unseal ≥ 0.9 × single-thread ring × threads.
#![allow(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used
)]

use ciel_protocol::sealed::{
    DataKey, ModelInfo, SealParams, UnsealOptions, seal, unseal, unseal_in_memory,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use std::hint::black_box;

const LEN: usize = 64 << 20;
const CHUNK: usize = 1 << 20;

fn bench(c: &mut Criterion) {
    let plain: Vec<u8> = (0..LEN)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let key = DataKey::from_bytes([7; 32]);
    let sha: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, &plain)
        .as_ref()
        .try_into()
        .unwrap_or([0; 32]);
    let params = SealParams {
        resource: "bench/model-key/x".into(),
        model: ModelInfo {
            name: "bench".into(),
            format: "raw".into(),
        },
        chunk_size: CHUNK as u32,
    };
    let mut sealed = Vec::with_capacity(LEN + (LEN / CHUNK) * 16 + 512);
    if seal(
        &mut &plain[..],
        LEN as u64,
        sha,
        &key,
        &params,
        &mut sealed,
        |_| {},
    )
    .is_err()
    {
        return;
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);

    // Baseline input: the same bytes as independent GCM chunks.
    let aead = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &[7; 32]).unwrap_or_else(|_| std::process::abort()),
    );
    let mut chunks: Vec<Vec<u8>> = plain
        .chunks(CHUNK)
        .enumerate()
        .map(|(i, p)| {
            let mut v = p.to_vec();
            let mut n = [0u8; 12];
            n[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let _ = aead.seal_in_place_append_tag(
                Nonce::assume_unique_for_key(n),
                Aad::from([0u8; 32]),
                &mut v,
            );
            v
        })
        .collect();
    let open_all = |chunks: &mut [Vec<u8>], base: usize| {
        for (i, ch) in chunks.iter_mut().enumerate() {
            let mut n = [0u8; 12];
            n[..8].copy_from_slice(&((base + i) as u64).to_be_bytes());
            let mut work = ch.clone();
            let _ = black_box(
                aead.open_in_place(
                    Nonce::assume_unique_for_key(n),
                    Aad::from([0u8; 32]),
                    &mut work,
                )
                .map(|p| p.len()),
            );
        }
    };

    let mut g = c.benchmark_group("unseal-64MiB");
    g.throughput(Throughput::Bytes(LEN as u64));
    g.sample_size(10);
    g.bench_function("memcpy", |b| b.iter(|| black_box(plain.clone())));
    g.bench_function("ring AES-256-GCM, 1 thread (+copy)", |b| {
        b.iter(|| open_all(&mut chunks, 0))
    });
    g.bench_function(
        format!("ring AES-256-GCM, {threads} threads (+copy)"),
        |b| {
            b.iter(|| {
                let per = chunks.len().div_ceil(threads);
                std::thread::scope(|s| {
                    for (t, group) in chunks.chunks_mut(per).enumerate() {
                        let open_all = &open_all;
                        s.spawn(move || open_all(group, t * per));
                    }
                });
            })
        },
    );
    for (t, verify) in [(1, false), (threads, false), (threads, true)] {
        let name = format!(
            "ciel unseal, {t} threads{}",
            if verify { " + plaintext SHA-256" } else { "" }
        );
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut n = 0usize;
                let opts = UnsealOptions {
                    threads: t,
                    verify_plaintext_digest: verify,
                };
                let r = unseal(&mut &sealed[..], &key, opts, |p| {
                    n += p.len();
                    Ok(())
                });
                black_box((r.is_ok(), n))
            })
        });
    }
    // In place, as the guest does with a model it received into memory.
    // The baseline is in place too; the ciphertext is restored (copied)
    // outside the timed part for both.
    g.bench_function("ring AES-256-GCM in place, 1 thread", |b| {
        b.iter_batched(
            || chunks.clone(),
            |mut cs| {
                for (i, ch) in cs.iter_mut().enumerate() {
                    let mut n = [0u8; 12];
                    n[..8].copy_from_slice(&(i as u64).to_be_bytes());
                    let _ = black_box(
                        aead.open_in_place(
                            Nonce::assume_unique_for_key(n),
                            Aad::from([0u8; 32]),
                            ch,
                        )
                        .map(|p| p.len()),
                    );
                }
                cs
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.bench_function(
        format!("ring AES-256-GCM in place, {threads} threads"),
        |b| {
            b.iter_batched(
                || chunks.clone(),
                |mut cs| {
                    let per = cs.len().div_ceil(threads);
                    std::thread::scope(|s| {
                        for (t, group) in cs.chunks_mut(per).enumerate() {
                            let aead = &aead;
                            s.spawn(move || {
                                for (j, ch) in group.iter_mut().enumerate() {
                                    let mut n = [0u8; 12];
                                    n[..8].copy_from_slice(&((t * per + j) as u64).to_be_bytes());
                                    let _ = black_box(
                                        aead.open_in_place(
                                            Nonce::assume_unique_for_key(n),
                                            Aad::from([0u8; 32]),
                                            ch,
                                        )
                                        .map(|p| p.len()),
                                    );
                                }
                            });
                        }
                    });
                    cs
                },
                criterion::BatchSize::LargeInput,
            )
        },
    );
    for t in [1, threads] {
        g.bench_function(format!("ciel unseal in memory, {t} threads"), |b| {
            b.iter_batched(
                || sealed.clone(),
                // The plaintext is returned so its zeroizing drop is not timed.
                |s| {
                    unseal_in_memory(
                        s,
                        &key,
                        UnsealOptions {
                            threads: t,
                            verify_plaintext_digest: false,
                        },
                    )
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
