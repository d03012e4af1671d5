//! The Q4_1 × Q8_1 matrix product alone, ours against candle's, on the
//! demo model's largest layer shape (1536 × 576, the MLP's down projection
//! transposed: 576 outputs of 1536 inputs) and its most common one (576 ×
//! 576), for one row (a generation step) and 41 rows (a prompt pass), with
//! every kernel this CPU runs (scalar, AVX2, AVX-512 VNNI). The
//! same quantized weights and inputs for both; the outputs are equal to the
//! bit (tested in `q4_1`).
//! Run: `cargo bench -p ciel-engine --bench q4_1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use ciel_engine::kernels::{Isa, Product};
use ciel_engine::q4_1::Q4_1Matrix;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn values(count: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..count)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    for (n, k) in [(576, 1536), (576, 576)] {
        let w = Tensor::from_vec(values(n * k, 1), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        let ours = Q4_1Matrix::from_blocks(n, k, &q.data().unwrap()).unwrap();
        let theirs = QMatMul::from_qtensor(q).unwrap();
        for rows in [1usize, 41] {
            let x = values(rows * k, 2);
            let xt = Tensor::from_vec(x.clone(), (rows, k), &Device::Cpu).unwrap();
            let mut g = c.benchmark_group(format!("q4_1 {n}x{k}, {rows} rows"));
            g.throughput(Throughput::Elements((n * k * rows) as u64));
            g.bench_function("candle (scalar Q4_1)", |b| {
                b.iter(|| black_box(theirs.forward(&xt).unwrap()))
            });
            for isa in Isa::available() {
                g.bench_function(format!("ciel ({})", isa.name()), |b| {
                    b.iter(|| black_box(ours.matmul_with(isa, &x)))
                });
            }
            g.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
