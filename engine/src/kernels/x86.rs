//! What the x86 kernels share: whole-array loads and stores, the products
//! of one weight block with eight rows' interleaved activations, and the
//! reduction of eight vectors' partial sums.

use super::{BLOCK, GROUP};
use std::arch::x86_64::*;

// Loads and stores of whole fixed-size arrays: the array types make
// every access exactly the register's width, so each is in bounds.

#[target_feature(enable = "avx2")]
#[inline]
#[allow(unsafe_code)]
pub(super) fn load16(b: &[u8; 16]) -> __m128i {
    // SAFETY: reads exactly the 16 bytes of `b` (unaligned load).
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

#[target_feature(enable = "avx2")]
#[inline]
#[allow(unsafe_code)]
pub(super) fn load32(b: &[i8; BLOCK]) -> __m256i {
    // SAFETY: reads exactly the 32 bytes of `b` (unaligned load).
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

#[target_feature(enable = "avx2")]
#[inline]
#[allow(unsafe_code)]
pub(super) fn load32u(b: &[u8; 32]) -> __m256i {
    // SAFETY: reads exactly the 32 bytes of `b` (unaligned load).
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

#[target_feature(enable = "avx2")]
#[inline]
#[allow(unsafe_code)]
pub(super) fn load8i(v: &[i32; GROUP]) -> __m256i {
    // SAFETY: reads exactly the eight integers of `v` (unaligned load).
    unsafe { _mm256_loadu_si256(v.as_ptr().cast()) }
}

#[target_feature(enable = "avx2")]
#[inline]
#[allow(unsafe_code)]
pub(super) fn load8(f: &[f32; GROUP]) -> __m256 {
    // SAFETY: reads exactly the eight floats of `f`.
    unsafe { _mm256_loadu_ps(f.as_ptr()) }
}

#[target_feature(enable = "avx2")]
#[inline]
#[allow(unsafe_code)]
pub(super) fn store(acc: __m256) -> [f32; GROUP] {
    let mut out = [0f32; GROUP];
    // SAFETY: writes exactly the eight floats of `out`.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), acc) };
    out
}

/// The sum of a vector's eight i32 lanes (exact: integers).
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn hsum(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    _mm_cvtsi128_si32(s)
}

/// The low and high 128 bits of a register.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn halves(v: __m256i) -> (__m128i, __m128i) {
    (_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1))
}

/// One block of weights against a group's eight rows of one activation
/// block in the interleaved layout ([`super::Q8_1Group::lanes`]): lane `r`
/// of the result is row `r`'s integer product with the block. `lo` and
/// `hi` are the weights' bytes 0..16 and 16..32; each four-byte chunk `j`
/// of them, broadcast, meets chunk `j` of the activations (rows 0..8 side
/// by side) in `step(acc, weights, activations)`, which adds each lane's
/// four byte products to `acc`. So each lane is one row from the start, and
/// no horizontal sums are needed (exact: integers).
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn lane_sums(
    lo: __m128i,
    hi: __m128i,
    chunks: &[[i8; BLOCK]; GROUP],
    step: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
) -> __m256i {
    let (first, second) = lane_sums_halves(lo, hi, chunks, step);
    _mm256_add_epi32(first, second)
}

/// [`lane_sums`] with the block's two halves apart: lane `r` of the first
/// result is row `r`'s product with weights 0..16 (`lo`), of the second
/// with weights 16..32 (`hi`), for kernels that scale every 16 values on
/// their own (Q6_K), and [`lane_sums`] adds them.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn lane_sums_halves(
    lo: __m128i,
    hi: __m128i,
    chunks: &[[i8; BLOCK]; GROUP],
    step: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
) -> (__m256i, __m256i) {
    let (lo, hi) = (
        _mm256_broadcastsi128_si256(lo),
        _mm256_broadcastsi128_si256(hi),
    );
    // Four chains of two: the instructions' latency, not their count, is
    // what a block costs.
    let z = _mm256_setzero_si256();
    let a = step(z, _mm256_shuffle_epi32(lo, 0x00), load32(&chunks[0]));
    let b = step(z, _mm256_shuffle_epi32(lo, 0x55), load32(&chunks[1]));
    let c = step(z, _mm256_shuffle_epi32(hi, 0x00), load32(&chunks[4]));
    let d = step(z, _mm256_shuffle_epi32(hi, 0x55), load32(&chunks[5]));
    let a = step(a, _mm256_shuffle_epi32(lo, 0xAA), load32(&chunks[2]));
    let b = step(b, _mm256_shuffle_epi32(lo, 0xFF), load32(&chunks[3]));
    let c = step(c, _mm256_shuffle_epi32(hi, 0xAA), load32(&chunks[6]));
    let d = step(d, _mm256_shuffle_epi32(hi, 0xFF), load32(&chunks[7]));
    (_mm256_add_epi32(a, b), _mm256_add_epi32(c, d))
}

/// `Σ a[i]·b[i]` over whole chunks of eight, in [`super::dot_f32`]'s
/// order: lane `i` sums `a[8j+i]·b[8j+i]` over the chunks `j` in order
/// (a product, then a sum: no fused multiply-add), then the lanes as
/// `((l0+l4) + (l1+l5)) + ((l2+l6) + (l3+l7))`. The caller adds the tail.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn dot_f32_chunks(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (x, y) in a.chunks_exact(GROUP).zip(b.chunks_exact(GROUP)) {
        if let (Ok(x), Ok(y)) = (<&[f32; GROUP]>::try_from(x), <&[f32; GROUP]>::try_from(y)) {
            acc = _mm256_add_ps(acc, _mm256_mul_ps(load8(x), load8(y)));
        }
    }
    // [l0+l4, l1+l5, l2+l6, l3+l7], then pairwise: (s0+s1), (s2+s3), and
    // their sum.
    let s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    let p = _mm_hadd_ps(s, s);
    _mm_cvtss_f32(_mm_hadd_ps(p, p))
}

/// `max |x|` over a block, as `fold(0, f32::max(acc, |x|))` (a NaN never
/// wins: `vmaxps` returns its second operand, the running maximum, when
/// the first is NaN; exact whatever the order).
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn block_amax(xs: &[f32; BLOCK]) -> f32 {
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    let mut m = _mm256_setzero_ps();
    for c in xs.chunks_exact(GROUP) {
        if let Ok(c) = <&[f32; GROUP]>::try_from(c) {
            m = _mm256_max_ps(_mm256_and_ps(load8(c), abs), m);
        }
    }
    store(m).into_iter().fold(0f32, f32::max)
}

/// `(x · id).round() as i8` for each value of a block (Rust's `round`: half
/// away from zero; `as`: NaN to 0, out of range saturated), and the sum of
/// the bytes. Rounding is `trunc(y + copysign(0.49999997, y))`, which is
/// half-away-from-zero rounding for every finite `y` (LLVM lowers `round`
/// so); `y` is clamped to −128..=127 first and NaNs made 0.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn block_round(xs: &[f32; BLOCK], id: f32) -> ([i8; BLOCK], i32) {
    let id = _mm256_set1_ps(id);
    let sign = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MIN));
    let half = _mm256_set1_ps(0.499_999_97);
    let (lo, hi) = (_mm256_set1_ps(-128.0), _mm256_set1_ps(127.0));
    let ints: [__m256i; 4] = std::array::from_fn(|i| {
        let Some(Ok(c)) = xs
            .get(i * GROUP..(i + 1) * GROUP)
            .map(<&[f32; GROUP]>::try_from)
        else {
            return _mm256_setzero_si256();
        };
        let y = _mm256_mul_ps(load8(c), id);
        let y = _mm256_and_ps(y, _mm256_cmp_ps(y, y, _CMP_ORD_Q));
        let y = _mm256_min_ps(_mm256_max_ps(y, lo), hi);
        let y = _mm256_add_ps(y, _mm256_or_ps(_mm256_and_ps(y, sign), half));
        _mm256_cvttps_epi32(y)
    });
    let sum = hsum(_mm256_add_epi32(
        _mm256_add_epi32(ints[0], ints[1]),
        _mm256_add_epi32(ints[2], ints[3]),
    ));
    // i32 → i16 → i8 within 128-bit lanes, then the lanes' dwords put back
    // in order.
    let words01 = _mm256_packs_epi32(ints[0], ints[1]);
    let words23 = _mm256_packs_epi32(ints[2], ints[3]);
    let bytes = _mm256_packs_epi16(words01, words23);
    let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    (store_i8(bytes), sum)
}

#[target_feature(enable = "avx2")]
#[inline]
#[allow(unsafe_code)]
fn store_i8(v: __m256i) -> [i8; BLOCK] {
    let mut out = [0i8; BLOCK];
    // SAFETY: writes exactly the 32 bytes of `out`.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) };
    out
}

/// Bytes `4j..4j + 4` of a block (each read as `byte` says), in every lane.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn broadcast4<T: Copy>(a: &[T; BLOCK], j: usize, byte: impl Fn(T) -> u8) -> __m256i {
    let four = [a[4 * j], a[4 * j + 1], a[4 * j + 2], a[4 * j + 3]];
    _mm256_set1_epi32(i32::from_le_bytes(four.map(byte)))
}

/// A packed block's integer products with one row: `step(acc, w[j],
/// broadcast4(a, j))` over the block's eight chunks, in two chains of four
/// (the instructions' latency, not their count, would bound one chain;
/// exact: integers).
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn block_sums<T: Copy>(
    w: &[__m256i; 8],
    a: &[T; BLOCK],
    byte: impl Fn(T) -> u8 + Copy,
    step: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
) -> __m256i {
    let z = _mm256_setzero_si256();
    let (mut s0, mut s1) = (z, z);
    for j in (0..8).step_by(2) {
        s0 = step(s0, w[j], broadcast4(a, j, byte));
        s1 = step(s1, w[j + 1], broadcast4(a, j + 1, byte));
    }
    _mm256_add_epi32(s0, s1)
}

/// `R` rows' sums of eight features each, as rows (those past `R` zero).
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn store_rows<const R: usize>(acc: [__m256; R]) -> [[f32; GROUP]; GROUP] {
    let mut out = [[0f32; GROUP]; GROUP];
    for (o, a) in out.iter_mut().zip(acc) {
        *o = store(a);
    }
    out
}
