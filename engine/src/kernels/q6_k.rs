//! Q6_K weights times Q8_K-quantized activations ([`super::q8_k`]): half of
//! Gemma 3's feed-forward output matrices, batched as in [`super`].
//!
//! A Q6_K super-block holds 256 weights as 6-bit values `q` (four bits in
//! `ql`, two in `qh`) minus 32, with a signed 8-bit scale for every 16 and
//! an `f16` scale `d`: weight `i` is `d · sc_{i/16} · (q_i − 32)`. A
//! super-block's product with activations `d_a · a_i` is `d · d_a · Σ_h
//! sc_h Σ_i (q_i − 32) a_i`, an exact integer sum (the kernels take `q_i`
//! as unsigned bytes and subtract `32 · Σ_h sc_h Σ_i a_i` from the
//! activations' sums of 16), then per super-block, in order, `sum += (d ·
//! d_a) · sumi` — ggml's `vec_dot_q6_K_q8_K` up to the order of its float
//! sums, and the same bits for every kernel here and every batch.

use super::k_quants::{KMatrix, SuperBlock};
use super::q8_k::{Q8KGroup, SIXTEENS, SUBS};
use super::{GROUP, Isa};
use half::f16;

/// Bytes of one Q6_K super-block in GGUF: `ql: [u8; 128], qh: [u8; 64],
/// scales: [i8; 16], d: f16`.
const Q6K_BYTES: usize = 210;

/// One super-block as GGUF stores it.
#[derive(Debug, Clone, Copy)]
pub struct Q6KBlock {
    /// Low four bits: bytes `64h..64h + 64` for values `128h..128h + 128`.
    ql: [[u8; 32]; 4],
    /// High two bits: bytes `32h..32h + 32` for the same values.
    qh: [[u8; 32]; 2],
    scales: [i8; SIXTEENS],
    d: f16,
}

impl Q6KBlock {
    /// The 6-bit value of weight `v` (< 256): in half `h`, value `32s + l`
    /// (s < 4) takes the low (s < 2) or high nibble of `ql` byte `l` (s
    /// even) or `l + 32` (s odd), and bits `2s..2s + 2` of `qh` byte `l`.
    fn q(&self, v: usize) -> u8 {
        let (h, s, l) = (v / 128, v % 128 / 32, v % 32);
        let byte = self.ql[2 * h + s % 2][l];
        let low = if s < 2 { byte & 0x0F } else { byte >> 4 };
        low | (((self.qh[h][l] >> (2 * s)) & 3) << 4)
    }
}

/// An `n × k` Q6_K matrix (one row per output).
pub type Q6KMatrix = KMatrix<Q6KBlock>;

impl SuperBlock for Q6KBlock {
    const NAME: &'static str = "Q6_K";
    const BYTES: usize = Q6K_BYTES;

    fn read(b: &[u8]) -> Self {
        Self {
            ql: std::array::from_fn(|p| std::array::from_fn(|i| b[32 * p + i])),
            qh: std::array::from_fn(|p| std::array::from_fn(|i| b[128 + 32 * p + i])),
            scales: std::array::from_fn(|i| b[192 + i] as i8),
            d: f16::from_le_bytes([b[208], b[209]]),
        }
    }

    /// The reference: one row, plain integer loops over signed values.
    fn dot_scalar(w: &[Self], g: &Q8KGroup, r: usize) -> f32 {
        let mut sum = 0f32;
        for (b, block) in w.iter().enumerate() {
            let mut sumi = 0i32;
            for h in 0..SIXTEENS {
                let dot: i32 = (16 * h..16 * h + 16)
                    .map(|v| {
                        let a = g.qs[SUBS * b + v / 32][r][v % 32];
                        (i32::from(block.q(v)) - 32) * i32::from(a)
                    })
                    .sum();
                sumi += i32::from(block.scales[h]) * dot;
            }
            sum = accumulate(sum, block, g.d[b][r], sumi);
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

/// `32 · Σ_h sc_h · (the sum of row r's activations h)` for super-block
/// `b`: what the unsigned values' products exceed the signed ones by.
fn offset(w: &Q6KBlock, g: &Q8KGroup, b: usize, r: usize) -> i32 {
    let s = &g.sums[b];
    32 * (0..SIXTEENS)
        .map(|h| i32::from(w.scales[h]) * s[h][r])
        .sum::<i32>()
}

/// The float step of a super-block, which every kernel does lane by lane
/// in this order.
#[inline(always)]
fn accumulate(sum: f32, w: &Q6KBlock, da: f32, sumi: i32) -> f32 {
    sum + w.d.to_f32() * da * sumi as f32
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::x86::{
        halves, hsum, lane_sums_halves, load8, load8i, load32, load32u, store,
    };
    use super::{GROUP, Isa, Q6KBlock, Q8KGroup, SIXTEENS, SUBS, SuperBlock, accumulate, offset};
    use std::arch::x86_64::*;

    /// The vector kernels' entry: `isa` must be one [`Isa::available`]
    /// found on this CPU.
    #[allow(unsafe_code)]
    pub(super) fn dot8<const N: usize>(
        isa: Isa,
        w: &[Q6KBlock],
        g: [&Q8KGroup; N],
    ) -> [[f32; GROUP]; N] {
        match isa {
            // SAFETY: `Isa::Avx2` is only handed out (`Isa::available`)
            // where the CPU reports AVX2, and `Avx512Vnni` where it reports
            // AVX2, AVX512-VNNI and AVX512-VL: the features these functions
            // enable. They are safe Rust otherwise (slices, no pointers).
            Isa::Avx2 => unsafe { dot8_avx2(w, g) },
            Isa::Avx512Vnni => unsafe { dot8_vnni(w, g) },
            Isa::Scalar => g.map(|g| std::array::from_fn(|r| Q6KBlock::dot_scalar(w, g, r))),
        }
    }

    /// One row (for batches too small to fill a group).
    #[allow(unsafe_code)]
    pub(super) fn dot1(w: &[Q6KBlock], g: &Q8KGroup, r: usize) -> f32 {
        // SAFETY: only reached through `Isa::Avx2` or `Isa::Avx512Vnni`,
        // handed out where the CPU reports AVX2 (see `dot8`).
        unsafe { dot1_avx2(w, g, r) }
    }

    /// The four 32-value blocks of half `h` of a super-block (blocks `4h`
    /// .. `4h + 4`), each value `q` (0..64) in its byte.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn unpack_half(w: &Q6KBlock, h: usize) -> [__m256i; 4] {
        let (ql0, ql1) = (load32u(&w.ql[2 * h]), load32u(&w.ql[2 * h + 1]));
        let qh = load32u(&w.qh[h]);
        let (low4, two) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(3));
        let high = |shift: i32| {
            let bits = match shift {
                0 => qh,
                2 => _mm256_srli_epi16(qh, 2),
                4 => _mm256_srli_epi16(qh, 4),
                _ => _mm256_srli_epi16(qh, 6),
            };
            _mm256_slli_epi16(_mm256_and_si256(bits, two), 4)
        };
        let upper = |v: __m256i| _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
        [
            _mm256_or_si256(_mm256_and_si256(ql0, low4), high(0)),
            _mm256_or_si256(_mm256_and_si256(ql1, low4), high(2)),
            _mm256_or_si256(upper(ql0), high(4)),
            _mm256_or_si256(upper(ql1), high(6)),
        ]
    }

    /// Per super-block: each block's unsigned values against the row's
    /// bytes (`vpmaddubsw`), pairs summed times the scale of their 16
    /// (`vpmaddwd`), the total summed across the register, less the
    /// offset of the 32 the values carry.
    #[target_feature(enable = "avx2")]
    fn dot1_avx2(w: &[Q6KBlock], g: &Q8KGroup, r: usize) -> f32 {
        let mut sum = 0f32;
        for (b, block) in w.iter().enumerate() {
            let mut acc = _mm256_setzero_si256();
            for h in 0..2 {
                for (i, values) in unpack_half(block, h).into_iter().enumerate() {
                    let j = 4 * h + i;
                    let bytes = _mm256_maddubs_epi16(values, load32(&g.qs[SUBS * b + j][r]));
                    let scales = _mm256_set_m128i(
                        _mm_set1_epi16(i16::from(block.scales[2 * j + 1])),
                        _mm_set1_epi16(i16::from(block.scales[2 * j])),
                    );
                    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(bytes, scales));
                }
            }
            let sumi = hsum(acc) - offset(block, g, b, r);
            sum = accumulate(sum, block, g.d[b][r], sumi);
        }
        sum
    }

    /// Eight rows of each of `N` groups: each super-block's values
    /// unpacked once, each block against each group's interleaved
    /// activations ([`lane_sums_halves`] with `step`), each half times its
    /// scale; less the offsets from the groups' sums; then the float step
    /// lane by lane.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn dot8_with<const N: usize>(
        w: &[Q6KBlock],
        g: [&Q8KGroup; N],
        step: impl Fn(__m256i, __m256i, __m256i) -> __m256i + Copy,
    ) -> [[f32; GROUP]; N] {
        let mut acc = [_mm256_setzero_ps(); N];
        let supers = g.iter().fold(w.len(), |n, g| n.min(g.d.len()));
        for (b, block) in w.iter().enumerate().take(supers) {
            let mut sumi = [_mm256_setzero_si256(); N];
            let scale = |h: usize| _mm256_set1_epi32(i32::from(block.scales[h]));
            for h in 0..2 {
                for (i, values) in unpack_half(block, h).into_iter().enumerate() {
                    let j = 4 * h + i;
                    let (first, second) = halves(values);
                    let (s0, s1) = (scale(2 * j), scale(2 * j + 1));
                    for (sumi, g) in sumi.iter_mut().zip(g) {
                        let (p0, p1) =
                            lane_sums_halves(first, second, &g.lanes[SUBS * b + j], step);
                        let scaled = _mm256_add_epi32(
                            _mm256_mullo_epi32(p0, s0),
                            _mm256_mullo_epi32(p1, s1),
                        );
                        *sumi = _mm256_add_epi32(*sumi, scaled);
                    }
                }
            }
            let dw = _mm256_set1_ps(block.d.to_f32());
            for ((acc, sumi), g) in acc.iter_mut().zip(sumi).zip(g) {
                let mut off = _mm256_setzero_si256();
                for h in 0..SIXTEENS {
                    off =
                        _mm256_add_epi32(off, _mm256_mullo_epi32(load8i(&g.sums[b][h]), scale(h)));
                }
                let sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(off, 5));
                let da = load8(&g.d[b]);
                let scaled = _mm256_mul_ps(_mm256_mul_ps(dw, da), _mm256_cvtepi32_ps(sumi));
                *acc = _mm256_add_ps(*acc, scaled);
            }
        }
        acc.map(|a| store(a))
    }

    #[target_feature(enable = "avx2")]
    fn dot8_avx2<const N: usize>(w: &[Q6KBlock], g: [&Q8KGroup; N]) -> [[f32; GROUP]; N] {
        let ones = _mm256_set1_epi16(1);
        dot8_with(w, g, |acc, wv, av| {
            _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(wv, av), ones))
        })
    }

    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    fn dot8_vnni<const N: usize>(w: &[Q6KBlock], g: [&Q8KGroup; N]) -> [[f32; GROUP]; N] {
        dot8_with(w, g, |acc, wv, av| _mm256_dpbusd_epi32(acc, wv, av))
    }
}
