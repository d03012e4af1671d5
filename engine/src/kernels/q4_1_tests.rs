#![allow(clippy::unwrap_used)]

use super::*;
use crate::kernels::Product;
use crate::kernels::test_values as values;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

#[cfg(target_arch = "x86_64")]
#[test]
fn the_vector_block_dot_equals_the_scalar_one() {
    let mut cases: Vec<([u8; 16], [i8; BLOCK])> = vec![
        ([0xFF; 16], [127; BLOCK]),
        ([0xFF; 16], [-128; BLOCK]),
        ([0x00; 16], [-128; BLOCK]),
        ([0xF0; 16], [-127; BLOCK]),
    ];
    for seed in 0..2000u64 {
        let v = values(48, seed, 1.0);
        let mut w = [0u8; 16];
        let mut a = [0i8; BLOCK];
        for (w, v) in w.iter_mut().zip(&v) {
            *w = ((v + 1.0) * 127.9) as u8;
        }
        for (a, v) in a.iter_mut().zip(&v[16..]) {
            *a = (v * 128.0).clamp(-128.0, 127.0) as i8;
        }
        cases.push((w, a));
    }
    let vector: Vec<Isa> = Isa::available().into_iter().skip(1).collect();
    assert!(!vector.is_empty(), "the x86-64-v3 build runs on AVX2 CPUs");
    for isa in vector {
        for (w, a) in &cases {
            assert_eq!(
                x86::block_dot_for_tests(isa, w, a),
                block_dot_scalar(w, a),
                "{}: {w:?} {a:?}",
                isa.name()
            );
        }
    }
}

/// Our product against candle's own Q4_1 path on the same quantized
/// weights: equal to the bit, for one row (generation) and several
/// (a prompt), with a row count that does not fill the last task.
#[test]
fn products_equal_candles_bit_for_bit() {
    for (n, k, rows) in [
        (40, 64, 1),
        (40, 64, 7),
        (576, 576, 1),
        (192, 576, 3),
        (576, 1536, 2),
        // Features that do not fill their last pack of eight, and rows
        // past one chunk of sixteen.
        (13, 64, 5),
        (37, 128, 17),
    ] {
        let w = Tensor::from_vec(values(n * k, n as u64, 0.5), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        let ours = Q4_1Matrix::from_blocks(n, k, &q.data().unwrap()).unwrap();
        assert_eq!((ours.rows(), ours.cols()), (n, k));
        let x = values(rows * k, 7 + rows as u64, 3.0);
        let theirs = QMatMul::from_qtensor(q)
            .unwrap()
            .forward(&Tensor::from_vec(x.clone(), (rows, k), &Device::Cpu).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got = ours.matmul(&x);
        assert_eq!(got.len(), theirs.len());
        for (i, (a, b)) in got.iter().zip(&theirs).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{n}×{k}, {rows} rows: element {i}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn malformed_weights_are_refused() {
    assert!(Q4_1Matrix::from_blocks(2, 33, &[0; 40]).is_err());
    assert!(Q4_1Matrix::from_blocks(2, 32, &[0; 39]).is_err());
    assert!(Q4_1Matrix::from_blocks(usize::MAX, 64, &[]).is_err());
    assert!(Q4_1Matrix::from_blocks(2, 32, &[0; 40]).is_ok());
}

#[test]
fn an_empty_input_gives_an_empty_output() {
    let m = Q4_1Matrix::from_blocks(2, 32, &[0; 40]).unwrap();
    assert!(m.matmul(&[]).is_empty());
    assert_eq!(m.matmul(&[1.0; 32]).len(), 2);
}

/// Every kernel this CPU runs gives the reference's bits, for any number
/// of rows (full groups of eight and a partial one), and a row's result is
/// the same alone as in a batch.
#[test]
fn every_kernel_and_batch_size_gives_the_same_bits() {
    // Ten blocks a row: a group of eight and two on their own.
    let (n, k) = (24, 320);
    let weights = values(n * k, 7, 1.0);
    let t = QTensor::quantize(
        &Tensor::from_vec(weights, (n, k), &Device::Cpu).unwrap(),
        GgmlDType::Q4_1,
    )
    .unwrap();
    let m = Q4_1Matrix::from_blocks(n, k, &t.data().unwrap()).unwrap();
    let x = values(19 * k, 11, 3.0);
    let reference = m.matmul_with(Isa::Scalar, &x);
    for isa in Isa::available() {
        for rows in [1, 2, 7, 8, 9, 16, 19] {
            let got = m.matmul_with(isa, &x[..rows * k]);
            assert_eq!(got.len(), rows * n);
            for (i, (a, b)) in got.iter().zip(&reference).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{} with {rows} rows: output {i}",
                    isa.name()
                );
            }
        }
        // The last row alone equals it among the others.
        let alone = m.matmul_with(isa, &x[18 * k..19 * k]);
        assert_eq!(alone, reference[18 * n..19 * n].to_vec(), "{}", isa.name());
    }
}
