//! Q8_0 weights times Q8_0-quantized activations (the output matrix of
//! the demo model, and some of Gemma 3's), batched as in [`super`]; Q5_0
//! weights too, widened to bytes at load (their 5-bit values minus 16 are
//! bytes in −16..=15, so the integer products, and every result, are
//! ggml's `vec_dot_q5_0_q8_0`'s; candle 0.11 runs Q5_0 with a scalar loop).
//!
//! Per block `sumi · (d_w · d_a)`, accumulated in block order (ggml's
//! `vec_dot_q8_0_q8_0` reference). candle's SIMD path sums in another
//! order, so the results equal candle's up to rounding, and equal each
//! other (every kernel, every batch) to the bit.

use super::packed::{PACK, Pack, Packs};
use super::{BLOCK, GROUP, Isa, Q8_1Group};
use half::f16;

/// Bytes of one Q8_0 block in GGUF: `d: f16, qs: [i8; 32]`.
const Q8_0_BYTES: usize = 34;

/// Bytes of one Q5_0 block in GGUF: `d: f16, qh: u32, qs: [u8; 16]`.
const Q5_0_BYTES: usize = 22;

/// Why weights could not be taken as Q8_0 (or Q5_0).
#[derive(Debug, thiserror::Error)]
#[error("{0} weights: {1}")]
pub struct Q8_0Error(&'static str, String);

/// Eight features' block `b` side by side: register `j` holds feature
/// `f`'s values `4j..4j + 4` at bytes `4f..4f + 4` (chunk `j` of the eight
/// features), and the eight scales as `f32`.
#[derive(Debug, Clone, Copy)]
pub struct Q8_0Pack {
    qs: [[i8; BLOCK]; 8],
    d: [f32; PACK],
    /// `128 · Σ w` of each feature's block: what the VNNI kernel, which
    /// multiplies activations offset to unsigned (`a + 128`), takes back.
    offset: [i32; PACK],
}

/// An `n × k` Q8_0 matrix (one row per output), packed eight features at a
/// time.
pub type Q8_0Matrix = Packs<Q8_0Pack>;

impl Q8_0Matrix {
    /// From GGUF's raw Q8_0 blocks, row-major, `n` rows of `k` values.
    pub fn from_blocks(n: usize, k: usize, raw: &[u8]) -> Result<Self, Q8_0Error> {
        Self::read(n, k, raw, "Q8_0", Q8_0_BYTES, |b| {
            std::array::from_fn(|j| b[2 + j] as i8)
        })
    }

    /// From GGUF's raw Q5_0 blocks: value `j` is nibble `j` (low nibbles
    /// first, then high ones) with bit `j` of `qh` above it, minus 16.
    pub fn from_q5_0_blocks(n: usize, k: usize, raw: &[u8]) -> Result<Self, Q8_0Error> {
        Self::read(n, k, raw, "Q5_0", Q5_0_BYTES, |b| {
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            std::array::from_fn(|j| {
                let nibble = if j < 16 {
                    b[6 + j] & 0x0F
                } else {
                    b[6 + j - 16] >> 4
                };
                let high = ((qh >> j) & 1) as u8;
                ((nibble | (high << 4)) as i8) - 16
            })
        })
    }

    fn read(
        n: usize,
        k: usize,
        raw: &[u8],
        kind: &'static str,
        bytes: usize,
        values: impl Fn(&[u8]) -> [i8; BLOCK],
    ) -> Result<Self, Q8_0Error> {
        Packs::from_gguf(n, k, raw, bytes, |pack: &mut Q8_0Pack, lane, block| {
            pack.d[lane] = f16::from_le_bytes([block[0], block[1]]).to_f32();
            let values = values(block);
            for (j, four) in values.chunks_exact(4).enumerate() {
                pack.qs[j][4 * lane..4 * lane + 4].copy_from_slice(four);
            }
            pack.offset[lane] = 128 * values.iter().map(|v| i32::from(*v)).sum::<i32>();
        })
        .map_err(|why| Q8_0Error(kind, why))
    }
}

impl Pack for Q8_0Pack {
    /// The scale, the 32 values and the offset.
    const BYTES: usize = 4 + BLOCK + 4;
    const ZERO: Self = Q8_0Pack {
        qs: [[0; BLOCK]; 8],
        d: [0.0; PACK],
        offset: [0; PACK],
    };

    /// `Σ_blocks sumi · (d_w · d_a)` in block order (ggml's
    /// `vec_dot_q8_0_q8_0` reference).
    fn dot_scalar(pack: &[Self], f: usize, g: &Q8_1Group, r: usize) -> f32 {
        let mut sum = 0f32;
        for (b, p) in pack.iter().enumerate() {
            let sumi: i32 = feature_qs(p, f)
                .iter()
                .zip(&g.qs[b][r])
                .map(|(w, a)| i32::from(*w) * i32::from(*a))
                .sum();
            sum += sumi as f32 * (p.d[f] * g.d[b][r]);
        }
        sum
    }

    #[cfg(target_arch = "x86_64")]
    fn rows_x86(isa: Isa, pack: &[Self], g: &Q8_1Group, live: usize) -> [[f32; PACK]; GROUP] {
        x86::rows(isa, pack, g, live)
    }
}

/// Feature `f`'s values of one packed block.
fn feature_qs(p: &Q8_0Pack, f: usize) -> [i8; BLOCK] {
    std::array::from_fn(|i| p.qs[i / 4][4 * f + i % 4])
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::packed::by_live;
    use super::super::x86::{block_sums, load8, load8i, load32, store_rows};
    use super::{BLOCK, GROUP, Isa, PACK, Q8_0Pack, Q8_1Group};
    use std::arch::x86_64::*;

    /// The vector kernels' entry: `isa` must be a vector kernel
    /// [`Isa::available`] found on this CPU.
    #[allow(unsafe_code)]
    pub(super) fn rows(
        isa: Isa,
        pack: &[Q8_0Pack],
        g: &Q8_1Group,
        live: usize,
    ) -> [[f32; PACK]; GROUP] {
        // SAFETY: `Isa::available` hands these out only where the CPU
        // reports the features the functions enable.
        match isa {
            Isa::Avx512Vnni => unsafe { rows_vnni(pack, g, live) },
            _ => unsafe { rows_avx2(pack, g, live) },
        }
    }

    /// Per block: the pack's eight chunks loaded once; per row, its integer
    /// sums by `sums(pack, chunks, row's bytes, row's bytes + 128)` (lane
    /// `f` is feature `f`, exact), then `acc + sumi · (d_w · d_a)` lane by
    /// lane, the reference's order. `R` rows, a constant, so their sums
    /// stay in registers.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn rows_with<const R: usize>(
        pack: &[Q8_0Pack],
        g: &Q8_1Group,
        sums: impl Fn(&Q8_0Pack, &[__m256i; 8], &[i8; BLOCK], &[u8; BLOCK]) -> __m256i + Copy,
    ) -> [[f32; PACK]; GROUP] {
        let blocks = pack
            .len()
            .min(g.qs.len())
            .min(g.unsigned.len())
            .min(g.d.len());
        let (pack, qs, unsigned, d) = (
            &pack[..blocks],
            &g.qs[..blocks],
            &g.unsigned[..blocks],
            &g.d[..blocks],
        );
        let mut acc = [_mm256_setzero_ps(); R];
        for (((p, qs), unsigned), d) in pack.iter().zip(qs).zip(unsigned).zip(d) {
            let w: [__m256i; 8] = std::array::from_fn(|j| load32(&p.qs[j]));
            let dw = load8(&p.d);
            for (r, acc) in acc.iter_mut().enumerate() {
                let sumi = sums(p, &w, &qs[r], &unsigned[r]);
                let scale = _mm256_mul_ps(dw, _mm256_set1_ps(d[r]));
                *acc = _mm256_add_ps(*acc, _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), scale));
            }
        }
        store_rows(acc)
    }

    /// Signed × signed bytes as the unsigned × signed pairs `vpmaddubsw`
    /// takes: |w| times a with w's sign (exact; |−128| is 128 unsigned, and
    /// activations are within −127..=127), pairs to i16 (|2·128·127|
    /// fits), then to i32. (Activations offset to unsigned would overflow
    /// its i16 pairs.)
    #[target_feature(enable = "avx2")]
    fn rows_avx2(pack: &[Q8_0Pack], g: &Q8_1Group, live: usize) -> [[f32; PACK]; GROUP] {
        let ones = _mm256_set1_epi16(1);
        let step = |acc, w, a| {
            let pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(a, w));
            _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones))
        };
        let sums = |_: &Q8_0Pack, w: &[__m256i; 8], a: &[i8; BLOCK], _: &[u8; BLOCK]| {
            block_sums(w, a, |b| b as u8, step)
        };
        by_live!(live, rows_with(pack, g, sums))
    }

    /// `Σ (a + 128) · w − 128 · Σ w` = `Σ a · w` (exact in i32): the
    /// activations offset to unsigned once per group
    /// ([`Q8_1Group::unsigned`]), so `vpdpbusd` takes them as they are
    /// against the signed weights, four products per lane at once.
    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    fn rows_vnni(pack: &[Q8_0Pack], g: &Q8_1Group, live: usize) -> [[f32; PACK]; GROUP] {
        // `vpdpbusd` takes the unsigned operand first: the activations.
        let step = |acc, w, a| _mm256_dpbusd_epi32(acc, a, w);
        let sums = |p: &Q8_0Pack, w: &[__m256i; 8], _: &[i8; BLOCK], a: &[u8; BLOCK]| {
            _mm256_sub_epi32(block_sums(w, a, |b| b, step), load8i(&p.offset))
        };
        by_live!(live, rows_with(pack, g, sums))
    }
}

/// Every weight, row by row, as `f32` (for the tests).
#[cfg(test)]
impl Q8_0Matrix {
    fn weights(&self) -> Vec<f32> {
        use super::Product;
        (0..self.rows())
            .flat_map(|f| {
                self.pack(f / PACK).iter().flat_map(move |p| {
                    feature_qs(p, f % PACK).map(|q| f32::from(q) * p.d[f % PACK])
                })
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::kernels::{Product, Q8_1Activations};
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};

    fn values(count: usize, seed: u32, scale: f32) -> Vec<f32> {
        (0..count)
            .map(|i| ((i as f32 * 0.7391 + seed as f32 * 1.37).sin() * 43758.547).fract() * scale)
            .collect()
    }

    /// Every kernel and batch size gives the reference's bits; and the
    /// products are candle's up to rounding.
    #[test]
    fn kernels_agree_to_the_bit_and_with_candle_to_rounding() {
        // Eleven blocks a row: a group of eight and three on their own.
        let (n, k) = (20, 352);
        let t = QTensor::quantize(
            &Tensor::from_vec(values(n * k, 3, 1.0), (n, k), &Device::Cpu).unwrap(),
            GgmlDType::Q8_0,
        )
        .unwrap();
        let m = Q8_0Matrix::from_blocks(n, k, &t.data().unwrap()).unwrap();
        // Weights at the edge: −128 and 127.
        let mut raw = t.data().unwrap().to_vec();
        raw[2] = 0x80;
        raw[3] = 0x7F;
        let edge = Q8_0Matrix::from_blocks(n, k, &raw).unwrap();
        let x = values(19 * k, 5, 4.0);
        for m in [&m, &edge] {
            let reference = m.matmul_quantized(Isa::Scalar, &Q8_1Activations::quantize(&x, k));
            for isa in Isa::available() {
                for rows in [1, 2, 8, 11, 19] {
                    let got =
                        m.matmul_quantized(isa, &Q8_1Activations::quantize(&x[..rows * k], k));
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&got),
                        bits(&reference[..rows * n]),
                        "{} with {rows} rows",
                        isa.name()
                    );
                }
            }
        }
        let theirs = QMatMul::from_qtensor(t)
            .unwrap()
            .forward(&Tensor::from_vec(x.clone(), (19, k), &Device::Cpu).unwrap())
            .unwrap();
        let theirs = theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let ours = m.matmul(&x);
        for (a, b) in ours.iter().zip(&theirs) {
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{a} vs {b}");
        }
        assert!(Q8_0Matrix::from_blocks(2, 32, &[0; 67]).is_err());
        assert!(Q8_0Matrix::from_q5_0_blocks(2, 32, &[0; 45]).is_err());
        assert!(Q8_0Matrix::from_blocks(2, 31, &[0; 68]).is_err());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod q5_0_tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// Q5_0 weights widened to bytes are the values candle dequantizes,
    /// and the products ggml's reference formula gives on them.
    #[test]
    fn q5_0_weights_are_read_as_candle_dequantizes_them() {
        let (n, k) = (6, 96);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 13.0)
            .collect();
        let t = QTensor::quantize(
            &Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap(),
            GgmlDType::Q5_0,
        )
        .unwrap();
        let m = Q8_0Matrix::from_q5_0_blocks(n, k, &t.data().unwrap()).unwrap();
        let theirs = t
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let ours = m.weights();
        assert_eq!(ours, theirs);
        assert!(
            m.packs
                .iter()
                .flat_map(|p| p.qs.iter().flatten())
                .all(|v| (-16..=15).contains(v))
        );
    }
}
