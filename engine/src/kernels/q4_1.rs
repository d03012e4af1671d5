//! Q4_1 weights times Q8_1-quantized activations: the matrix products that
//! are ~80 % of the demo model's work, and that candle 0.11 runs with a
//! scalar loop (it has SIMD kernels for Q4_0, Q8_0 and the k-quants, not for
//! Q4_1).
//!
//! Results are bit for bit those of candle's (and ggml's reference) path:
//! activations are quantized exactly as `quantize_row_q8_1` does; within a
//! block the integer dot product is exact whatever the instruction order;
//! and the per-block float arithmetic and the accumulation across blocks are
//! done in the same order as the scalar code. The integer part is
//! vectorized (AVX2 `vpmaddubsw`/`vpmaddwd`, or AVX-512 VNNI `vpdpbusd`),
//! the float part across the eight rows of a group or eight blocks of a
//! row, lane by lane in the scalar code's order.

use super::{BLOCK, GROUP, Isa, Product, Q8_1Group, blocks_in, by_rows};
use half::f16;
/// Bytes of one Q4_1 block in GGUF: `d: f16, m: f16, qs: [u8; 16]`.
const Q4_1_BYTES: usize = 20;

/// Why weights could not be taken as Q4_1.
#[derive(Debug, thiserror::Error)]
#[error("Q4_1 weights: {0}")]
pub struct Q4_1Error(String);

/// One block as GGUF stores it (20 bytes): a decode step reads every
/// block once, so the weights stay as compact as in the file, scales and
/// nibbles side by side.
#[derive(Debug, Clone, Copy)]
struct Block {
    d: f16,
    m: f16,
    qs: [u8; 16],
}

/// An `n × k` Q4_1 matrix (one row per output).
#[derive(Debug, Clone)]
pub struct Q4_1Matrix {
    n: usize,
    k: usize,
    blocks: Vec<Block>,
}

impl Q4_1Matrix {
    /// From GGUF's raw blocks, row-major, `n` rows of `k` values.
    pub fn from_blocks(n: usize, k: usize, raw: &[u8]) -> Result<Self, Q4_1Error> {
        let blocks = blocks_in(n, k, raw.len(), BLOCK, Q4_1_BYTES).map_err(Q4_1Error)?;
        let mut all = Vec::with_capacity(blocks);
        for b in raw.chunks_exact(Q4_1_BYTES) {
            let mut qs = [0u8; 16];
            qs.copy_from_slice(&b[4..20]);
            all.push(Block {
                d: f16::from_le_bytes([b[0], b[1]]),
                m: f16::from_le_bytes([b[2], b[3]]),
                qs,
            });
        }
        Ok(Q4_1Matrix { n, k, blocks: all })
    }
}

impl Product for Q4_1Matrix {
    fn rows(&self) -> usize {
        self.n
    }

    fn cols(&self) -> usize {
        self.k
    }

    fn row_bytes(&self) -> usize {
        self.k / BLOCK * Q4_1_BYTES
    }

    /// Rows go in groups of eight (one by one when too few), each weight
    /// block unpacked once for the group.
    fn feature(&self, isa: Isa, f: usize, g: &Q8_1Group, live: usize) -> [f32; GROUP] {
        let per_row = self.k / BLOCK;
        let w = WeightRow(&self.blocks[f * per_row..(f + 1) * per_row]);
        by_rows(live, |r| dot1(isa, &w, g, r), || dot8(isa, &w, [g])[0])
    }

    fn feature_pair(&self, isa: Isa, f: usize, a: &Q8_1Group, b: &Q8_1Group) -> [[f32; GROUP]; 2] {
        let per_row = self.k / BLOCK;
        let w = WeightRow(&self.blocks[f * per_row..(f + 1) * per_row]);
        dot8(isa, &w, [a, b])
    }
}

/// One weight row against row `r` of a group.
fn dot1(isa: Isa, w: &WeightRow<'_>, g: &Q8_1Group, r: usize) -> f32 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni => x86::dot1(w, g, r),
        _ => dot_with(w, g, r, block_dot_scalar),
    }
}

/// One weight row against `N` groups of up to eight activation rows.
fn dot8<const N: usize>(isa: Isa, w: &WeightRow<'_>, g: [&Q8_1Group; N]) -> [[f32; GROUP]; N] {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni => x86::dot8(isa, w, g),
        _ => g.map(|g| dot8_scalar(w, g)),
    }
}

/// The reference: each row on its own.
fn dot8_scalar(w: &WeightRow<'_>, g: &Q8_1Group) -> [f32; GROUP] {
    std::array::from_fn(|r| dot_with(w, g, r, block_dot_scalar))
}

/// One row of weights.
struct WeightRow<'a>(&'a [Block]);

impl WeightRow<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn d(&self, b: usize) -> f32 {
        self.0[b].d.to_f32()
    }
    fn m(&self, b: usize) -> f32 {
        self.0[b].m.to_f32()
    }
    fn qs(&self, b: usize) -> &[u8; 16] {
        &self.0[b].qs
    }
}

/// `Σ_blocks (Σ q_w·q_a) · d_w · d_a + m_w · s_a`, accumulated in block
/// order, as ggml's `vec_dot_q4_1_q8_1` reference does, with the given
/// integer block product. The vector kernels do, lane by lane, exactly
/// these float operations in this order.
#[inline(always)]
fn dot_with(
    w: &WeightRow<'_>,
    g: &Q8_1Group,
    r: usize,
    block: impl Fn(&[u8; 16], &[i8; BLOCK]) -> i32,
) -> f32 {
    let mut sum = 0f32;
    for b in 0..w.len() {
        let sumi = block(w.qs(b), &g.qs[b][r]);
        sum += sumi as f32 * w.d(b) * g.d[b][r] + w.m(b) * g.s[b][r];
    }
    sum
}

/// The exact integer dot product of one block (the reference): weight
/// nibble `j` (low) and `j + 16` (high) of byte `j`, times activation `j`
/// and `j + 16`.
fn block_dot_scalar(w: &[u8; 16], a: &[i8; BLOCK]) -> i32 {
    let mut sum = 0i32;
    for j in 0..16 {
        sum += i32::from(w[j] & 0x0F) * i32::from(a[j]);
        sum += i32::from(w[j] >> 4) * i32::from(a[j + 16]);
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::x86::{lane_sums, load8, load16, load32, reduce8, store};
    use super::{GROUP, Isa, Q8_1Group, WeightRow, dot8_scalar};
    use std::arch::x86_64::*;

    /// The vector kernels' entry: `isa` must be one [`Isa::available`]
    /// found on this CPU.
    #[allow(unsafe_code)]
    pub(super) fn dot8<const N: usize>(
        isa: Isa,
        w: &WeightRow<'_>,
        g: [&Q8_1Group; N],
    ) -> [[f32; GROUP]; N] {
        match isa {
            // SAFETY: `Isa::Avx2` is only handed out (`Isa::available`)
            // where the CPU reports AVX2, and `Avx512Vnni` where it reports
            // AVX2, AVX512-VNNI and AVX512-VL: the features these functions
            // enable. They are safe Rust otherwise (slices, no pointers).
            Isa::Avx2 => unsafe { dot8_avx2(w, g) },
            Isa::Avx512Vnni => unsafe { dot8_vnni(w, g) },
            Isa::Scalar => g.map(|g| dot8_scalar(w, g)),
        }
    }

    /// One block's 32 weight nibbles as bytes 0..=15: low nibbles (weights
    /// 0..15), then high nibbles (16..31).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn unpack_halves(qs: &[u8; 16]) -> (__m128i, __m128i) {
        let packed = load16(qs);
        let low4 = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(packed, low4);
        let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low4);
        (lo, hi)
    }

    /// [`unpack_halves`] in one register, weight `i` in byte `i`.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn unpack(qs: &[u8; 16]) -> __m256i {
        let (lo, hi) = unpack_halves(qs);
        _mm256_set_m128i(hi, lo)
    }

    /// `acc + ((sumi · d_w) · d_a + m_w · s_a)` for eight rows: the scalar
    /// reference's float operations in its order (no fused multiply-add),
    /// so each lane is that row's result to the bit.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn accumulate(
        acc: __m256,
        sumi: __m256i,
        dw: f32,
        mw: f32,
        da: &[f32; GROUP],
        sa: &[f32; GROUP],
    ) -> __m256 {
        let (da, sa) = (load8(da), load8(sa));
        let scaled = _mm256_mul_ps(
            _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(dw)),
            da,
        );
        let min = _mm256_mul_ps(_mm256_set1_ps(mw), sa);
        _mm256_add_ps(acc, _mm256_add_ps(scaled, min))
    }

    /// One row (for batches too small to fill a group).
    #[allow(unsafe_code)]
    pub(super) fn dot1(w: &WeightRow<'_>, g: &Q8_1Group, r: usize) -> f32 {
        // SAFETY: only reached through `Isa::Avx2` or `Isa::Avx512Vnni`,
        // handed out where the CPU reports AVX2 (see `dot8`).
        unsafe { dot1_avx2(w, g, r) }
    }

    /// Eight blocks at a time: their integer products reduced together,
    /// their float terms computed together, then added to the sum one by
    /// one in block order (as the reference adds them).
    #[target_feature(enable = "avx2")]
    fn dot1_avx2(w: &WeightRow<'_>, g: &Q8_1Group, r: usize) -> f32 {
        let ones = _mm256_set1_epi16(1);
        let product = |b: usize| {
            _mm256_madd_epi16(
                _mm256_maddubs_epi16(unpack(w.qs(b)), load32(&g.qs[b][r])),
                ones,
            )
        };
        let blocks = w.len();
        let whole = blocks - blocks % GROUP;
        let mut sum = 0f32;
        for b0 in (0..whole).step_by(GROUP) {
            let sumi = reduce8(std::array::from_fn(|i| product(b0 + i)));
            let lanes = |f: &dyn Fn(usize) -> f32| load8(&std::array::from_fn(|i| f(b0 + i)));
            let scaled = _mm256_mul_ps(
                _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), lanes(&|b| w.d(b))),
                lanes(&|b| g.d[b][r]),
            );
            let min = _mm256_mul_ps(lanes(&|b| w.m(b)), lanes(&|b| g.s[b][r]));
            for t in store(_mm256_add_ps(scaled, min)) {
                sum += t;
            }
        }
        for b in whole..blocks {
            let z = _mm256_setzero_si256();
            let sumi = _mm256_cvtsi256_si32(reduce8([product(b), z, z, z, z, z, z, z]));
            sum += sumi as f32 * w.d(b) * g.d[b][r] + w.m(b) * g.s[b][r];
        }
        sum
    }

    /// Eight rows of each of `N` groups: each block's weights unpacked and
    /// its scales converted once, against each group's interleaved
    /// activations ([`lane_sums`], with `step`), then each group's eight
    /// float terms together (`N` independent chains, which the CPU
    /// overlaps).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn dot8_with<const N: usize>(
        w: &WeightRow<'_>,
        g: [&Q8_1Group; N],
        step: impl Fn(__m256i, __m256i, __m256i) -> __m256i + Copy,
    ) -> [[f32; GROUP]; N] {
        let mut acc = [_mm256_setzero_ps(); N];
        let blocks = g.iter().fold(w.len(), |n, g| n.min(g.lanes.len()));
        for b in 0..blocks {
            let (lo, hi) = unpack_halves(w.qs(b));
            let (dw, mw) = (w.d(b), w.m(b));
            for (acc, g) in acc.iter_mut().zip(g) {
                let sumi = lane_sums(lo, hi, &g.lanes[b], step);
                *acc = accumulate(*acc, sumi, dw, mw, &g.d[b], &g.s[b]);
            }
        }
        acc.map(|a| store(a))
    }

    /// u8 × i8 pairs summed to i16 (|15·127·2| fits), then pairs of i16 to
    /// i32.
    #[target_feature(enable = "avx2")]
    fn dot8_avx2<const N: usize>(w: &WeightRow<'_>, g: [&Q8_1Group; N]) -> [[f32; GROUP]; N] {
        let ones = _mm256_set1_epi16(1);
        dot8_with(w, g, |acc, wv, av| {
            _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(wv, av), ones))
        })
    }

    /// Four u8 × i8 products summed into each i32 lane at once.
    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    fn dot8_vnni<const N: usize>(w: &WeightRow<'_>, g: [&Q8_1Group; N]) -> [[f32; GROUP]; N] {
        dot8_with(w, g, |acc, wv, av| _mm256_dpbusd_epi32(acc, wv, av))
    }

    #[cfg(test)]
    #[allow(unsafe_code)]
    pub(super) fn block_dot_for_tests(isa: Isa, w: &[u8; 16], a: &[i8; super::BLOCK]) -> i32 {
        let mut g = Q8_1Group {
            qs: vec![[[0; super::BLOCK]; GROUP]],
            lanes: Vec::new(),
            d: vec![[1.0; GROUP]],
            s: vec![[0.0; GROUP]],
        };
        g.qs[0][3] = *a;
        g.interleave();
        let block = [super::Block {
            d: half::f16::ONE,
            m: half::f16::ZERO,
            qs: *w,
        }];
        let row = WeightRow(&block);
        dot8(isa, &row, [&g])[0][3] as i32
    }
}

#[cfg(test)]
#[path = "q4_1_tests.rs"]
mod tests;
