//! Q4_K weights times Q8_K-quantized activations ([`super::q8_k`]): a
//! third of Gemma 3's layer weights, batched as in [`super`].
//!
//! A Q4_K super-block holds 256 weights as 4-bit values in eight blocks of
//! 32, each block with a 6-bit scale and a 6-bit minimum, under an `f16`
//! scale `d` and an `f16` scale of minimums `dmin`: weight `i` of block `j`
//! is `d · sc_j · q_i − dmin · m_j`. Against activations `d_a · a_i`, a
//! super-block's product is `d · d_a · Σ_j sc_j Σ_i q_i a_i − dmin · d_a ·
//! Σ_j m_j Σ_i a_i`: two exact integer sums (the second from the
//! activations' sums of 16), then per super-block, accumulated in order,
//! `sum += (d · d_a) · sumi − (dmin · d_a) · summ` — ggml's
//! `vec_dot_q4_K_q8_K` up to the order of its float sums, and the same
//! bits for every kernel here and every batch.

use super::k_quants::{KMatrix, SuperBlock};
use super::q8_k::{Q8KGroup, SUBS};
use super::{GROUP, Isa};
use half::f16;

/// Bytes of one Q4_K super-block in GGUF: `d: f16, dmin: f16,
/// scales: [u8; 12], qs: [u8; 128]`.
const Q4K_BYTES: usize = 144;

/// One super-block, its 6-bit scales and minimums unpacked at load.
#[derive(Debug, Clone, Copy)]
pub struct Q4KBlock {
    d: f16,
    dmin: f16,
    scales: [u8; SUBS],
    mins: [u8; SUBS],
    /// Bytes `32p..32p + 32`: block `2p` in the low nibbles, `2p + 1` in
    /// the high ones.
    qs: [[u8; 32]; 4],
}

impl Q4KBlock {
    /// Weight `i` (< 32) of block `j` (its 4-bit value).
    fn q(&self, j: usize, i: usize) -> u8 {
        let byte = self.qs[j / 2][i];
        if j.is_multiple_of(2) {
            byte & 0x0F
        } else {
            byte >> 4
        }
    }
}

/// An `n × k` Q4_K matrix (one row per output).
pub type Q4KMatrix = KMatrix<Q4KBlock>;

impl SuperBlock for Q4KBlock {
    const NAME: &'static str = "Q4_K";
    const BYTES: usize = Q4K_BYTES;

    fn read(b: &[u8]) -> Self {
        let s = &b[4..16];
        // 6-bit values: blocks 0..4 in the low six bits of bytes 0..4
        // (scales) and 4..8 (minimums); blocks 4..8 in the nibbles of bytes
        // 8..12 with their top two bits in bytes 0..8's top bits.
        let (mut scales, mut mins) = ([0u8; SUBS], [0u8; SUBS]);
        for j in 0..SUBS {
            (scales[j], mins[j]) = if j < 4 {
                (s[j] & 63, s[j + 4] & 63)
            } else {
                (
                    (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
                    (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
                )
            };
        }
        Self {
            d: f16::from_le_bytes([b[0], b[1]]),
            dmin: f16::from_le_bytes([b[2], b[3]]),
            scales,
            mins,
            qs: std::array::from_fn(|p| std::array::from_fn(|i| b[16 + 32 * p + i])),
        }
    }

    /// The reference: one row, plain integer loops.
    fn dot_scalar(w: &[Self], g: &Q8KGroup, r: usize) -> f32 {
        let mut sum = 0f32;
        for (b, block) in w.iter().enumerate() {
            let mut sumi = 0i32;
            for j in 0..SUBS {
                let a = &g.qs[SUBS * b + j][r];
                let dot: i32 = (0..32)
                    .map(|i| i32::from(block.q(j, i)) * i32::from(a[i]))
                    .sum();
                sumi += i32::from(block.scales[j]) * dot;
            }
            sum = accumulate(sum, block, g.d[b][r], sumi, mins_sum(block, g, b, r));
        }
        sum
    }

    #[cfg(target_arch = "x86_64")]
    fn dot1_x86(w: &[Self], g: &Q8KGroup, r: usize) -> f32 {
        x86::dot1(w, g, r)
    }

    #[cfg(target_arch = "x86_64")]
    fn dot8_x86<const N: usize>(isa: Isa, w: &[Self], g: [&Q8KGroup; N]) -> [[f32; GROUP]; N] {
        x86::dot8(isa, w, g)
    }
}

/// `Σ_j m_j · (the sum of row r's activations in block j)` for
/// super-block `b` (exact).
fn mins_sum(w: &Q4KBlock, g: &Q8KGroup, b: usize, r: usize) -> i32 {
    let s = &g.sums[b];
    (0..SUBS)
        .map(|j| i32::from(w.mins[j]) * (s[2 * j][r] + s[2 * j + 1][r]))
        .sum()
}

/// The float step of a super-block, which every kernel does lane by lane
/// in this order.
#[inline(always)]
fn accumulate(sum: f32, w: &Q4KBlock, da: f32, sumi: i32, summ: i32) -> f32 {
    sum + (w.d.to_f32() * da * sumi as f32 - w.dmin.to_f32() * da * summ as f32)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::x86::{halves, hsum, lane_sums, load8, load8i, load32, load32u, store};
    use super::{GROUP, Isa, Q4KBlock, Q8KGroup, SUBS, SuperBlock, accumulate, mins_sum};
    use std::arch::x86_64::*;

    /// The vector kernels' entry: `isa` must be one [`Isa::available`]
    /// found on this CPU.
    #[allow(unsafe_code)]
    pub(super) fn dot8<const N: usize>(
        isa: Isa,
        w: &[Q4KBlock],
        g: [&Q8KGroup; N],
    ) -> [[f32; GROUP]; N] {
        match isa {
            // SAFETY: `Isa::Avx2` is only handed out (`Isa::available`)
            // where the CPU reports AVX2, and `Avx512Vnni` where it reports
            // AVX2, AVX512-VNNI and AVX512-VL: the features these functions
            // enable. They are safe Rust otherwise (slices, no pointers).
            Isa::Avx2 => unsafe { dot8_avx2(w, g) },
            Isa::Avx512Vnni => unsafe { dot8_vnni(w, g) },
            Isa::Scalar => g.map(|g| std::array::from_fn(|r| Q4KBlock::dot_scalar(w, g, r))),
        }
    }

    /// One row (for batches too small to fill a group).
    #[allow(unsafe_code)]
    pub(super) fn dot1(w: &[Q4KBlock], g: &Q8KGroup, r: usize) -> f32 {
        // SAFETY: only reached through `Isa::Avx2` or `Isa::Avx512Vnni`,
        // handed out where the CPU reports AVX2 (see `dot8`).
        unsafe { dot1_avx2(w, g, r) }
    }

    /// Blocks `2p` and `2p + 1` of a super-block: weight `i` in byte `i`.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn unpack_pair(qs: &[u8; 32]) -> (__m256i, __m256i) {
        let raw = load32u(qs);
        let low4 = _mm256_set1_epi8(0x0F);
        (
            _mm256_and_si256(raw, low4),
            _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4),
        )
    }

    /// Per super-block: each block's bytes against the row's
    /// (`vpmaddubsw`), pairs summed times the block's scale (`vpmaddwd`),
    /// the super-block's total summed across the register.
    #[target_feature(enable = "avx2")]
    fn dot1_avx2(w: &[Q4KBlock], g: &Q8KGroup, r: usize) -> f32 {
        let mut sum = 0f32;
        for (b, block) in w.iter().enumerate() {
            let mut acc = _mm256_setzero_si256();
            for (p, qs) in block.qs.iter().enumerate() {
                let (lo, hi) = unpack_pair(qs);
                for (j, weights) in [(2 * p, lo), (2 * p + 1, hi)] {
                    let bytes = _mm256_maddubs_epi16(weights, load32(&g.qs[SUBS * b + j][r]));
                    let scale = _mm256_set1_epi16(i16::from(block.scales[j]));
                    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(bytes, scale));
                }
            }
            sum = accumulate(sum, block, g.d[b][r], hsum(acc), mins_sum(block, g, b, r));
        }
        sum
    }

    /// Eight rows of each of `N` groups: each super-block's weights
    /// unpacked once, each block against each group's interleaved
    /// activations ([`lane_sums`] with `step`) times its scale; then the
    /// minimums from the groups' sums, and the float step lane by lane.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn dot8_with<const N: usize>(
        w: &[Q4KBlock],
        g: [&Q8KGroup; N],
        step: impl Fn(__m256i, __m256i, __m256i) -> __m256i + Copy,
    ) -> [[f32; GROUP]; N] {
        let mut acc = [_mm256_setzero_ps(); N];
        let supers = g.iter().fold(w.len(), |n, g| n.min(g.d.len()));
        for (b, block) in w.iter().enumerate().take(supers) {
            let mut sumi = [_mm256_setzero_si256(); N];
            for (p, qs) in block.qs.iter().enumerate() {
                let (lo, hi) = unpack_pair(qs);
                for (j, weights) in [(2 * p, lo), (2 * p + 1, hi)] {
                    let (first, second) = halves(weights);
                    let scale = _mm256_set1_epi32(i32::from(block.scales[j]));
                    for (sumi, g) in sumi.iter_mut().zip(g) {
                        let dot = lane_sums(first, second, &g.lanes[SUBS * b + j], step);
                        *sumi = _mm256_add_epi32(*sumi, _mm256_mullo_epi32(dot, scale));
                    }
                }
            }
            let (dw, dmin) = (
                _mm256_set1_ps(block.d.to_f32()),
                _mm256_set1_ps(block.dmin.to_f32()),
            );
            for ((acc, sumi), g) in acc.iter_mut().zip(sumi).zip(g) {
                let s = &g.sums[b];
                let mut summ = _mm256_setzero_si256();
                for j in 0..SUBS {
                    let block_sums = _mm256_add_epi32(load8i(&s[2 * j]), load8i(&s[2 * j + 1]));
                    let m = _mm256_set1_epi32(i32::from(block.mins[j]));
                    summ = _mm256_add_epi32(summ, _mm256_mullo_epi32(block_sums, m));
                }
                let da = load8(&g.d[b]);
                let scaled = _mm256_mul_ps(_mm256_mul_ps(dw, da), _mm256_cvtepi32_ps(sumi));
                let mins = _mm256_mul_ps(_mm256_mul_ps(dmin, da), _mm256_cvtepi32_ps(summ));
                *acc = _mm256_add_ps(*acc, _mm256_sub_ps(scaled, mins));
            }
        }
        acc.map(|a| store(a))
    }

    #[target_feature(enable = "avx2")]
    fn dot8_avx2<const N: usize>(w: &[Q4KBlock], g: [&Q8KGroup; N]) -> [[f32; GROUP]; N] {
        let ones = _mm256_set1_epi16(1);
        dot8_with(w, g, |acc, wv, av| {
            _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(wv, av), ones))
        })
    }

    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    fn dot8_vnni<const N: usize>(w: &[Q4KBlock], g: [&Q8KGroup; N]) -> [[f32; GROUP]; N] {
        dot8_with(w, g, |acc, wv, av| _mm256_dpbusd_epi32(acc, wv, av))
    }
}
