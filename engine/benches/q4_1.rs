//! The packed matrix products alone, ours against candle's on the same
//! quantized weights and inputs: Q4_1 on the demo model's largest layer
//! shape (576 outputs of 1536 inputs, the MLP's down projection) and its
//! most common one (576 × 576), and Q8_0 on its output matrix (49,152
//! outputs of 576 inputs); for one row (a generation step), 8 and 32 rows
//! (a batch's decode step) and 41 (a prompt pass), with every kernel this
//! CPU runs (scalar, AVX2, AVX-512 VNNI). Q4_1's outputs equal candle's to
//! the bit, Q8_0's to rounding (tested in `q4_1` and `q8_0`).
//! Run: `cargo bench -p ciel-engine --bench q4_1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use ciel_engine::kernels::q8_0::Q8_0Matrix;
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

/// Ours (`matmul_with` each kernel) against candle's `QMatMul` on the same
/// `n × k` weights quantized to `dtype`.
fn compare(
    c: &mut Criterion,
    dtype: GgmlDType,
    (n, k): (usize, usize),
    rows: &[usize],
    ours: impl Fn(&[u8]) -> Box<dyn Fn(Isa, &[f32]) -> Vec<f32>>,
) {
    let w = Tensor::from_vec(values(n * k, 1), (n, k), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&w, dtype).unwrap();
    let mine = ours(&q.data().unwrap());
    let theirs = QMatMul::from_qtensor(q).unwrap();
    for &rows in rows {
        let x = values(rows * k, 2);
        let xt = Tensor::from_vec(x.clone(), (rows, k), &Device::Cpu).unwrap();
        let mut g = c.benchmark_group(format!("{dtype:?} {n}x{k}, {rows} rows"));
        g.throughput(Throughput::Elements((n * k * rows) as u64));
        g.bench_function("candle", |b| {
            b.iter(|| black_box(theirs.forward(&xt).unwrap()))
        });
        for isa in Isa::available() {
            g.bench_function(format!("ciel ({})", isa.name()), |b| {
                b.iter(|| black_box(mine(isa, &x)))
            });
        }
        g.finish();
    }
}

fn bench(c: &mut Criterion) {
    for (n, k) in [(576, 1536), (576, 576)] {
        compare(c, GgmlDType::Q4_1, (n, k), &[1, 8, 32, 41], |raw| {
            let m = Q4_1Matrix::from_blocks(n, k, raw).unwrap();
            Box::new(move |isa, x| m.matmul_with(isa, x))
        });
    }
    let (n, k) = (49152, 576);
    compare(c, GgmlDType::Q8_0, (n, k), &[1, 8, 32], |raw| {
        let m = Q8_0Matrix::from_blocks(n, k, raw).unwrap();
        Box::new(move |isa, x| m.matmul_with(isa, x))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
