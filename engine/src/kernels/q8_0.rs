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

use super::{BLOCK, GROUP, Isa, Product, Q8_1Group, blocks_in, by_rows};
use half::f16;

/// Bytes of one Q8_0 block in GGUF: `d: f16, qs: [i8; 32]`.
const Q8_0_BYTES: usize = 34;

/// Bytes of one Q5_0 block in GGUF: `d: f16, qh: u32, qs: [u8; 16]`.
const Q5_0_BYTES: usize = 22;

/// Why weights could not be taken as Q8_0 (or Q5_0).
#[derive(Debug, thiserror::Error)]
#[error("{0} weights: {1}")]
pub struct Q8_0Error(&'static str, String);

/// An `n × k` Q8_0 matrix (one row per output), scales as `f32`.
#[derive(Debug, Clone)]
pub struct Q8_0Matrix {
    n: usize,
    k: usize,
    d: Vec<f32>,
    qs: Vec<[i8; BLOCK]>,
}

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
        let fail = |why: String| Q8_0Error(kind, why);
        let blocks = blocks_in(n, k, raw.len(), BLOCK, bytes).map_err(fail)?;
        let (mut d, mut qs) = (Vec::with_capacity(blocks), Vec::with_capacity(blocks));
        for b in raw.chunks_exact(bytes) {
            d.push(f16::from_le_bytes([b[0], b[1]]).to_f32());
            qs.push(values(b));
        }
        Ok(Q8_0Matrix { n, k, d, qs })
    }
}

impl Product for Q8_0Matrix {
    fn rows(&self) -> usize {
        self.n
    }

    fn cols(&self) -> usize {
        self.k
    }

    fn row_bytes(&self) -> usize {
        self.k / BLOCK * (4 + BLOCK)
    }

    fn feature(&self, isa: Isa, f: usize, g: &Q8_1Group, live: usize) -> [f32; GROUP] {
        let per_row = self.k / BLOCK;
        let (d, qs) = (
            &self.d[f * per_row..(f + 1) * per_row],
            &self.qs[f * per_row..(f + 1) * per_row],
        );
        by_rows(
            live,
            |r| dot1(isa, d, qs, g, r),
            || dot8(isa, d, qs, [g])[0],
        )
    }

    fn feature_pair(&self, isa: Isa, f: usize, a: &Q8_1Group, b: &Q8_1Group) -> [[f32; GROUP]; 2] {
        let per_row = self.k / BLOCK;
        let (d, qs) = (
            &self.d[f * per_row..(f + 1) * per_row],
            &self.qs[f * per_row..(f + 1) * per_row],
        );
        dot8(isa, d, qs, [a, b])
    }
}

fn dot1(isa: Isa, d: &[f32], qs: &[[i8; BLOCK]], g: &Q8_1Group, r: usize) -> f32 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni => x86::dot1(d, qs, g, r),
        _ => dot_with(d, qs, g, r, block_dot_scalar),
    }
}

fn dot8<const N: usize>(
    isa: Isa,
    d: &[f32],
    qs: &[[i8; BLOCK]],
    g: [&Q8_1Group; N],
) -> [[f32; GROUP]; N] {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni => x86::dot8(isa, d, qs, g),
        _ => g.map(|g| dot8_scalar(d, qs, g)),
    }
}

/// The reference: each row on its own.
fn dot8_scalar(d: &[f32], qs: &[[i8; BLOCK]], g: &Q8_1Group) -> [f32; GROUP] {
    std::array::from_fn(|r| dot_with(d, qs, g, r, block_dot_scalar))
}

/// `Σ_blocks sumi · (d_w · d_a)` in block order; the vector kernels do
/// these float operations, lane by lane, in this order.
#[inline(always)]
fn dot_with(
    d: &[f32],
    qs: &[[i8; BLOCK]],
    g: &Q8_1Group,
    r: usize,
    block: impl Fn(&[i8; BLOCK], &[i8; BLOCK]) -> i32,
) -> f32 {
    let mut sum = 0f32;
    for b in 0..qs.len() {
        sum += block(&qs[b], &g.qs[b][r]) as f32 * (d[b] * g.d[b][r]);
    }
    sum
}

fn block_dot_scalar(w: &[i8; BLOCK], a: &[i8; BLOCK]) -> i32 {
    w.iter()
        .zip(a)
        .map(|(w, a)| i32::from(*w) * i32::from(*a))
        .sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::x86::{halves, lane_sums, load8, load32, reduce8, store};
    use super::{BLOCK, GROUP, Isa, Q8_1Group, dot8_scalar};
    use std::arch::x86_64::*;

    #[allow(unsafe_code)]
    pub(super) fn dot1(d: &[f32], qs: &[[i8; BLOCK]], g: &Q8_1Group, r: usize) -> f32 {
        // SAFETY: reached only through `Isa::Avx2` or `Isa::Avx512Vnni`,
        // handed out where the CPU reports AVX2.
        unsafe { dot1_avx2(d, qs, g, r) }
    }

    #[allow(unsafe_code)]
    pub(super) fn dot8<const N: usize>(
        isa: Isa,
        d: &[f32],
        qs: &[[i8; BLOCK]],
        g: [&Q8_1Group; N],
    ) -> [[f32; GROUP]; N] {
        match isa {
            // SAFETY: `Isa::available` hands these out only where the CPU
            // reports the features the functions enable.
            Isa::Avx2 => unsafe { dot8_avx2(d, qs, g) },
            Isa::Avx512Vnni => unsafe { dot8_vnni(d, qs, g) },
            Isa::Scalar => g.map(|g| dot8_scalar(d, qs, g)),
        }
    }

    /// Signed × signed bytes as the unsigned × signed products the
    /// instructions take: |w| times a with w's sign (exact; |−128| is 128
    /// unsigned).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn signs(w: __m256i, a: __m256i) -> (__m256i, __m256i) {
        (_mm256_abs_epi8(w), _mm256_sign_epi8(a, w))
    }

    /// Pairs to i16 (|2·128·127| fits), then to i32.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn madd(w: __m256i, a: __m256i) -> __m256i {
        let (u, s) = signs(w, a);
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
    }

    /// Eight blocks at a time: their integer products reduced together,
    /// their terms computed together, then added to the sum one by one in
    /// block order (as the reference adds them).
    #[target_feature(enable = "avx2")]
    fn dot1_avx2(d: &[f32], qs: &[[i8; BLOCK]], g: &Q8_1Group, r: usize) -> f32 {
        let product = |b: usize| madd(load32(&qs[b]), load32(&g.qs[b][r]));
        let blocks = qs.len();
        let whole = blocks - blocks % GROUP;
        let mut sum = 0f32;
        for b0 in (0..whole).step_by(GROUP) {
            let sumi = reduce8(std::array::from_fn(|i| product(b0 + i)));
            let dw = load8(&std::array::from_fn(|i| d[b0 + i]));
            let da = load8(&std::array::from_fn(|i| g.d[b0 + i][r]));
            for t in store(_mm256_mul_ps(
                _mm256_cvtepi32_ps(sumi),
                _mm256_mul_ps(dw, da),
            )) {
                sum += t;
            }
        }
        for (b, dw) in d.iter().enumerate().skip(whole) {
            let z = _mm256_setzero_si256();
            let sumi = _mm256_cvtsi256_si32(reduce8([product(b), z, z, z, z, z, z, z]));
            sum += sumi as f32 * (dw * g.d[b][r]);
        }
        sum
    }

    /// `acc + sumi · (d_w · d_a)` for eight rows, as the reference.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn accumulate(acc: __m256, sumi: __m256i, dw: f32, da: &[f32; GROUP]) -> __m256 {
        let scale = _mm256_mul_ps(_mm256_set1_ps(dw), load8(da));
        _mm256_add_ps(acc, _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), scale))
    }

    /// Eight rows of each of `N` groups: each block's weights loaded once,
    /// against each group's interleaved activations ([`lane_sums`], with
    /// `step`); `N` independent float chains.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn dot8_with<const N: usize>(
        d: &[f32],
        qs: &[[i8; BLOCK]],
        g: [&Q8_1Group; N],
        step: impl Fn(__m256i, __m256i, __m256i) -> __m256i + Copy,
    ) -> [[f32; GROUP]; N] {
        let mut acc = [_mm256_setzero_ps(); N];
        let blocks = g.iter().fold(qs.len(), |n, g| n.min(g.lanes.len()));
        for b in 0..blocks {
            let (lo, hi) = halves(load32(&qs[b]));
            for (acc, g) in acc.iter_mut().zip(g) {
                *acc = accumulate(*acc, lane_sums(lo, hi, &g.lanes[b], step), d[b], &g.d[b]);
            }
        }
        acc.map(|a| store(a))
    }

    #[target_feature(enable = "avx2")]
    fn dot8_avx2<const N: usize>(
        d: &[f32],
        qs: &[[i8; BLOCK]],
        g: [&Q8_1Group; N],
    ) -> [[f32; GROUP]; N] {
        dot8_with(d, qs, g, |acc, w, a| _mm256_add_epi32(acc, madd(w, a)))
    }

    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    fn dot8_vnni<const N: usize>(
        d: &[f32],
        qs: &[[i8; BLOCK]],
        g: [&Q8_1Group; N],
    ) -> [[f32; GROUP]; N] {
        dot8_with(d, qs, g, |acc, w, a| {
            let (u, s) = signs(w, a);
            _mm256_dpbusd_epi32(acc, u, s)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::kernels::Q8_1Activations;
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
        let ours: Vec<f32> =
            m.qs.iter()
                .zip(&m.d)
                .flat_map(|(q, d)| q.iter().map(move |v| f32::from(*v) * d))
                .collect();
        assert_eq!(ours, theirs);
        assert!(m.qs.iter().flatten().all(|v| (-16..=15).contains(v)));
    }
}
