//! Q4_1 weights times Q8_1-quantized activations: the matrix products that
//! are ~80 % of the demo model's work, and that candle 0.11 runs with a
//! scalar loop (it has SIMD kernels for Q4_0, Q8_0 and the k-quants, not for
//! Q4_1).
//!
//! Results are bit for bit those of candle's (and ggml's reference) path:
//! activations are quantized exactly as `quantize_row_q8_1` does; within a
//! block the integer dot product is exact whatever the instruction order;
//! and the per-block float arithmetic and the accumulation across blocks are
//! done in the same order as the scalar code.
//!
//! The weights are repacked at load, eight features side by side
//! ([`Q4_1Pack`], [`super::packed`], as llama.cpp repacks for its CPU kernels), so that one
//! instruction multiplies a chunk of four activations of one row,
//! broadcast, by the same chunk of eight features (AVX2
//! `vpmaddubsw`/`vpmaddwd`, or AVX-512 VNNI `vpdpbusd`): each row's eight
//! features come out in one register's lanes, with no horizontal sums, and
//! a block's weights are unpacked once for up to sixteen rows. One row
//! (generation) and many (a batch, a prompt) take the same kernel.

use super::packed::{PACK as FEATURES, Pack, Packs};
use super::{BLOCK, GROUP, Isa, Q8_1Group};
use half::f16;
/// Bytes of one Q4_1 block in GGUF: `d: f16, m: f16, qs: [u8; 16]`.
const Q4_1_BYTES: usize = 20;

/// Why weights could not be taken as Q4_1.
#[derive(Debug, thiserror::Error)]
#[error("Q4_1 weights: {0}")]
pub struct Q4_1Error(String);

/// Eight features' block `b` side by side (160 bytes, as their eight GGUF
/// blocks), laid out for one instruction to take a chunk of four values of
/// all eight features at once: register `c` holds feature `f`'s bytes
/// `4c..4c + 4` at `4f..4f + 4`, so its low nibbles are values `4c..4c + 4`
/// (chunk `c`) of the eight features and its high nibbles values
/// `16 + 4c..` (chunk `c + 4`). The weights are repacked so once, at load.
#[derive(Debug, Clone, Copy)]
pub struct Q4_1Pack {
    qs: [[u8; 32]; 4],
    /// The eight features' scales and minimums, `f16` little-endian.
    d: [u8; 2 * FEATURES],
    m: [u8; 2 * FEATURES],
}

impl Q4_1Pack {
    fn d(&self, f: usize) -> f32 {
        f16::from_le_bytes([self.d[2 * f], self.d[2 * f + 1]]).to_f32()
    }
    fn m(&self, f: usize) -> f32 {
        f16::from_le_bytes([self.m[2 * f], self.m[2 * f + 1]]).to_f32()
    }
}

/// An `n × k` Q4_1 matrix (one row per output), packed eight features at a
/// time.
pub type Q4_1Matrix = Packs<Q4_1Pack>;

impl Q4_1Matrix {
    /// From GGUF's raw blocks, row-major, `n` rows of `k` values.
    pub fn from_blocks(n: usize, k: usize, raw: &[u8]) -> Result<Self, Q4_1Error> {
        Packs::from_gguf(n, k, raw, Q4_1_BYTES, |pack: &mut Q4_1Pack, lane, block| {
            pack.d[2 * lane..2 * lane + 2].copy_from_slice(&block[0..2]);
            pack.m[2 * lane..2 * lane + 2].copy_from_slice(&block[2..4]);
            for (c, four) in block[4..].chunks_exact(4).enumerate() {
                pack.qs[c][4 * lane..4 * lane + 4].copy_from_slice(four);
            }
        })
        .map_err(Q4_1Error)
    }
}

impl Pack for Q4_1Pack {
    const BYTES: usize = Q4_1_BYTES;
    const ZERO: Self = Q4_1Pack {
        qs: [[0; 32]; 4],
        d: [0; 2 * FEATURES],
        m: [0; 2 * FEATURES],
    };

    /// `Σ_blocks (Σ q_w·q_a) · d_w · d_a + m_w · s_a`, accumulated in block
    /// order, as ggml's `vec_dot_q4_1_q8_1` reference does.
    fn dot_scalar(pack: &[Self], f: usize, g: &Q8_1Group, r: usize) -> f32 {
        let mut sum = 0f32;
        for (b, p) in pack.iter().enumerate() {
            let sumi = block_dot_scalar(&feature_qs(p, f), &g.qs[b][r]);
            sum += sumi as f32 * p.d(f) * g.d[b][r] + p.m(f) * g.s[b][r];
        }
        sum
    }

    #[cfg(target_arch = "x86_64")]
    fn rows_x86(isa: Isa, pack: &[Self], g: &Q8_1Group, live: usize) -> [[f32; FEATURES]; GROUP] {
        x86::rows(isa, pack, g, live)
    }
}

/// Feature `f`'s nibbles of one packed block, as GGUF stores them.
fn feature_qs(p: &Q4_1Pack, f: usize) -> [u8; 16] {
    std::array::from_fn(|j| p.qs[j / 4][4 * f + j % 4])
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
    use super::super::packed::by_live;
    use super::super::x86::{block_sums, load16, load32u, store_rows};
    use super::{FEATURES, GROUP, Isa, Q4_1Pack, Q8_1Group};
    use std::arch::x86_64::*;

    /// The vector kernels' entry: `isa` must be a vector kernel
    /// [`Isa::available`] found on this CPU.
    #[allow(unsafe_code)]
    pub(super) fn rows(
        isa: Isa,
        pack: &[Q4_1Pack],
        g: &Q8_1Group,
        live: usize,
    ) -> [[f32; FEATURES]; GROUP] {
        // SAFETY: `Isa::Avx2` is only handed out (`Isa::available`) where
        // the CPU reports AVX2 and F16C, and `Avx512Vnni` where it also
        // reports AVX512-VNNI and AVX512-VL: the features these functions
        // enable. They are safe Rust otherwise (slices, no pointers).
        match isa {
            Isa::Avx512Vnni => unsafe { rows_vnni(pack, g, live) },
            _ => unsafe { rows_avx2(pack, g, live) },
        }
    }

    /// Per block: the pack's eight chunks unpacked and its scales
    /// converted once; per row, its eight activation chunks broadcast
    /// against them (`step(acc, weights, activations)` adds each lane's
    /// four byte products: lane `f` is feature `f`), then
    /// `acc + ((sumi · d_w) · d_a + m_w · s_a)` lane by lane — the scalar
    /// reference's float operations in its order (no fused multiply-add),
    /// so each lane is that feature's result to the bit. `R` rows (a
    /// constant, so that their sums stay in registers across the blocks).
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    fn rows_with<const R: usize>(
        pack: &[Q4_1Pack],
        g: &Q8_1Group,
        step: impl Fn(__m256i, __m256i, __m256i) -> __m256i + Copy,
    ) -> [[f32; FEATURES]; GROUP] {
        let blocks = pack.len().min(g.qs.len()).min(g.d.len()).min(g.s.len());
        let (pack, qs, d, s) = (
            &pack[..blocks],
            &g.qs[..blocks],
            &g.d[..blocks],
            &g.s[..blocks],
        );
        let mut acc = [_mm256_setzero_ps(); R];
        let low4 = _mm256_set1_epi8(0x0F);
        for (((p, qs), d), s) in pack.iter().zip(qs).zip(d).zip(s) {
            let w: [__m256i; 8] = std::array::from_fn(|j| {
                let packed = load32u(&p.qs[j % 4]);
                match j < 4 {
                    true => _mm256_and_si256(packed, low4),
                    false => _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4),
                }
            });
            let dw = _mm256_cvtph_ps(load16(&p.d));
            let mw = _mm256_cvtph_ps(load16(&p.m));
            for (r, acc) in acc.iter_mut().enumerate() {
                let sumi = block_sums(&w, &qs[r], |b| b as u8, step);
                let scaled = _mm256_mul_ps(
                    _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), dw),
                    _mm256_set1_ps(d[r]),
                );
                let min = _mm256_mul_ps(mw, _mm256_set1_ps(s[r]));
                *acc = _mm256_add_ps(*acc, _mm256_add_ps(scaled, min));
            }
        }
        store_rows(acc)
    }

    /// u8 × i8 pairs summed to i16 (|15·127·2| fits), then pairs of i16 to
    /// i32.
    #[target_feature(enable = "avx2,f16c")]
    fn rows_avx2(pack: &[Q4_1Pack], g: &Q8_1Group, live: usize) -> [[f32; FEATURES]; GROUP] {
        let ones = _mm256_set1_epi16(1);
        let step = |acc, wv, av| {
            _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(wv, av), ones))
        };
        by_live!(live, rows_with(pack, g, step))
    }

    /// Four u8 × i8 products summed into each i32 lane at once.
    #[target_feature(enable = "avx2,f16c,avx512vnni,avx512vl")]
    fn rows_vnni(pack: &[Q4_1Pack], g: &Q8_1Group, live: usize) -> [[f32; FEATURES]; GROUP] {
        let step = |acc, wv, av| _mm256_dpbusd_epi32(acc, wv, av);
        by_live!(live, rows_with(pack, g, step))
    }

    #[cfg(test)]
    pub(super) fn block_dot_for_tests(isa: Isa, w: &[u8; 16], a: &[i8; super::BLOCK]) -> i32 {
        let mut g = Q8_1Group {
            qs: vec![[[0; super::BLOCK]; GROUP]],
            unsigned: Vec::new(),
            d: vec![[1.0; GROUP]],
            s: vec![[0.0; GROUP]],
        };
        g.qs[0][3] = *a;
        let mut pack = [Q4_1Pack {
            qs: [[0; 32]; 4],
            d: [0; 2 * FEATURES],
            m: [0; 2 * FEATURES],
        }];
        // Feature 5 holds the block.
        pack[0].d[10..12].copy_from_slice(&half::f16::ONE.to_le_bytes());
        for (c, four) in w.chunks_exact(4).enumerate() {
            pack[0].qs[c][20..24].copy_from_slice(four);
        }
        rows(isa, &pack, &g, 4)[3][5] as i32
    }
}

#[cfg(test)]
#[path = "q4_1_tests.rs"]
mod tests;
