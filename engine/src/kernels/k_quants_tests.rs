//! The k-quant kernels (Q4_K, Q6_K over Q8_K activations): every kernel
//! and batch size gives the reference's bits, and the reference computes
//! what the weights mean (candle's dequantization, and candle's product up
//! to rounding).
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::q4_k::Q4KMatrix;
use super::q6_k::Q6KMatrix;
use super::q8_k::{Q8KGroup, SUPER};
use super::{Activations, Isa, Product, test_values as values};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor, ggml_file::qtensor_from_ggml};
use candle_core::{Device, Module, Tensor};

/// Deterministic bytes: every bit pattern of scales, minimums and values.
fn bytes(count: usize, seed: u64) -> Vec<u8> {
    values(count, seed, 1.0)
        .iter()
        .map(|v| ((v + 1.0) * 127.99) as u8)
        .collect()
}

fn ours(dtype: GgmlDType, n: usize, k: usize, raw: &[u8]) -> Box<dyn Product<Q8KGroup>> {
    match dtype {
        GgmlDType::Q4K => Box::new(Q4KMatrix::from_blocks(n, k, raw).unwrap()),
        GgmlDType::Q6K => Box::new(Q6KMatrix::from_blocks(n, k, raw).unwrap()),
        other => panic!("{other:?}"),
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

/// `m` times `x` with kernel `isa`.
fn product(m: &dyn Product<Q8KGroup>, isa: Isa, x: &[f32]) -> Vec<f32> {
    let a = Activations::<Q8KGroup>::quantize(x, m.cols());
    super::matmul_many(isa, &[m], &a).pop().unwrap()
}

/// Raw super-blocks of random bytes (every scale, minimum and value
/// pattern, the extremes included), with a finite `f16` scale.
fn random_blocks(dtype: GgmlDType, blocks: usize, seed: u64) -> Vec<u8> {
    let (size, d_at) = match dtype {
        GgmlDType::Q4K => (144, [0, 2]),
        _ => (210, [208, 208]),
    };
    let mut raw = bytes(blocks * size, seed);
    for b in raw.chunks_exact_mut(size) {
        for at in d_at {
            b[at..at + 2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
        }
    }
    raw
}

#[test]
fn every_kernel_and_batch_size_gives_the_references_bits() {
    // Three super-blocks a row; 19 rows: two groups of eight (a pair) and
    // three on their own, or a group and a partial second.
    let (n, k) = (24, 3 * SUPER);
    for dtype in [GgmlDType::Q4K, GgmlDType::Q6K] {
        let raw = random_blocks(dtype, n * k / SUPER, 5);
        let m = ours(dtype, n, k, &raw);
        let mut x = values(19 * k, 11, 3.0);
        // Activations at the edge: a super-block of ±127 bytes.
        for (i, v) in x[..SUPER].iter_mut().enumerate() {
            *v = if i % 3 == 0 { -1.0 } else { 1.0 };
        }
        let reference = product(m.as_ref(), Isa::Scalar, &x);
        for isa in Isa::available() {
            for rows in [1, 2, 3, 7, 8, 9, 11, 16, 19] {
                let got = product(m.as_ref(), isa, &x[..rows * k]);
                assert_eq!(
                    bits(&got),
                    bits(&reference[..rows * n]),
                    "{dtype:?}, {} with {rows} rows",
                    isa.name()
                );
            }
            let alone = product(m.as_ref(), isa, &x[18 * k..]);
            assert_eq!(bits(&alone), bits(&reference[18 * n..]), "{}", isa.name());
        }
    }
}

/// The reference against the weights' meaning: candle's dequantization of
/// the same raw blocks times our quantized activations, in f64; and
/// against candle's own product on weights it quantized.
#[test]
fn the_reference_computes_what_the_weights_mean() {
    let (n, k, rows) = (6, 2 * SUPER, 3);
    let x = values(rows * k, 3, 2.0);
    let acts = Activations::<Q8KGroup>::quantize(&x, k);
    let g = &acts.groups[0];
    for dtype in [GgmlDType::Q4K, GgmlDType::Q6K] {
        let raw = random_blocks(dtype, n * k / SUPER, 9);
        let weights = qtensor_from_ggml(dtype, &raw, vec![n, k], &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got = product(ours(dtype, n, k, &raw).as_ref(), Isa::Scalar, &x);
        for r in 0..rows {
            for f in 0..n {
                let (mut exact, mut size) = (0f64, 0f64);
                for i in 0..k {
                    let (b, j, l) = (i / SUPER, i % SUPER / 32, i % 32);
                    let a = f64::from(g.d[b][r]) * f64::from(g.qs[8 * b + j][r][l]);
                    exact += f64::from(weights[f * k + i]) * a;
                    size += (f64::from(weights[f * k + i]) * a).abs();
                }
                let ours = f64::from(got[r * n + f]);
                assert!(
                    (ours - exact).abs() <= 1e-5 * size,
                    "{dtype:?} row {r} feature {f}: {ours} vs {exact}"
                );
            }
        }
        // candle's own product (its Q8_K activations are ggml's, as ours).
        let w = Tensor::from_vec(values(n * k, 21, 0.5), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        let m = ours(dtype, n, k, &q.data().unwrap());
        let theirs = QMatMul::from_qtensor(q)
            .unwrap()
            .forward(&Tensor::from_vec(x.clone(), (rows, k), &Device::Cpu).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (a, b) in product(m.as_ref(), Isa::best(), &x).iter().zip(&theirs) {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                "{dtype:?}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn malformed_weights_are_refused_by_name() {
    let e = Q4KMatrix::from_blocks(2, 128, &[0; 144]).unwrap_err();
    assert!(
        e.to_string().contains("Q4_K") && e.to_string().contains("128"),
        "{e}"
    );
    assert!(Q4KMatrix::from_blocks(2, 256, &[0; 287]).is_err());
    assert!(Q4KMatrix::from_blocks(usize::MAX, 256, &[]).is_err());
    let e = Q6KMatrix::from_blocks(1, 256, &[0; 209]).unwrap_err();
    assert!(
        e.to_string().contains("Q6_K") && e.to_string().contains("209"),
        "{e}"
    );
    assert!(Q6KMatrix::from_blocks(1, 256, &[0; 210]).is_ok());
}
