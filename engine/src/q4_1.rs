//! Q4_1 weights times Q8_1-quantized activations: the matrix products that
//! are ~80 % of the demo model's work, and that candle 0.11 runs with a
//! scalar loop (it has SIMD kernels for Q4_0, Q8_0 and the k-quants, not for
//! Q4_1).
//!
//! Results are bit for bit those of candle's (and ggml's reference) path:
//! activations are quantized exactly as `quantize_row_q8_1` does; within a
//! block the integer dot product is exact whatever the instruction order;
//! and the per-block float arithmetic and the accumulation across blocks are
//! done in the same order as the scalar code. Only the integer part is
//! vectorized (AVX2 `vpmaddubsw`/`vpmaddwd`), and rows run in parallel.

use half::f16;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Values per block.
pub const BLOCK: usize = 32;
/// Bytes of one Q4_1 block in GGUF: `d: f16, m: f16, qs: [u8; 16]`.
const Q4_1_BYTES: usize = 20;

/// Why weights could not be taken as Q4_1.
#[derive(Debug, thiserror::Error)]
#[error("Q4_1 weights: {0}")]
pub struct Q4_1Error(String);

/// An `n × k` Q4_1 matrix (one row per output), scales unpacked to `f32`
/// (exact: every `f16` is an `f32`).
#[derive(Debug, Clone)]
pub struct Q4_1Matrix {
    n: usize,
    k: usize,
    d: Vec<f32>,
    m: Vec<f32>,
    qs: Vec<[u8; 16]>,
}

impl Q4_1Matrix {
    /// From GGUF's raw blocks, row-major, `n` rows of `k` values.
    pub fn from_blocks(n: usize, k: usize, raw: &[u8]) -> Result<Self, Q4_1Error> {
        if k == 0 || !k.is_multiple_of(BLOCK) {
            return Err(Q4_1Error(format!(
                "row length {k} is not a multiple of {BLOCK}"
            )));
        }
        let blocks = n
            .checked_mul(k / BLOCK)
            .ok_or_else(|| Q4_1Error("size overflows".into()))?;
        if raw.len() != blocks * Q4_1_BYTES {
            return Err(Q4_1Error(format!(
                "{} bytes for {n} × {k} (expected {})",
                raw.len(),
                blocks * Q4_1_BYTES
            )));
        }
        let (mut d, mut m, mut qs) = (
            Vec::with_capacity(blocks),
            Vec::with_capacity(blocks),
            Vec::with_capacity(blocks),
        );
        for b in raw.chunks_exact(Q4_1_BYTES) {
            d.push(f16::from_le_bytes([b[0], b[1]]).to_f32());
            m.push(f16::from_le_bytes([b[2], b[3]]).to_f32());
            let mut q = [0u8; 16];
            q.copy_from_slice(&b[4..20]);
            qs.push(q);
        }
        Ok(Q4_1Matrix { n, k, d, m, qs })
    }

    /// Output size.
    pub fn rows(&self) -> usize {
        self.n
    }

    /// Input size.
    pub fn cols(&self) -> usize {
        self.k
    }

    /// `x` (`rows × k`, row-major) times this matrix transposed: `rows × n`,
    /// row-major. Output features are split into contiguous ranges run on
    /// candle's own thread pool, so that the engine's threads never compete
    /// with a second pool.
    ///
    /// `x.len()` must be a multiple of `k` (a trailing partial row is
    /// ignored); the llama pass checks the shape before calling.
    pub fn matmul(&self, x: &[f32]) -> Vec<f32> {
        let rows = x.len() / self.k;
        if rows == 0 || self.n == 0 {
            return Vec::new();
        }
        let acts: Vec<Q8_1Row> = x.chunks_exact(self.k).map(Q8_1Row::quantize).collect();
        let per_row = self.k / BLOCK;
        let pool = candle_core::utils::barrier_pool();
        let threads = pool_threads();
        let span = self.n.div_ceil(threads).max(1);
        // Feature-major (`n × rows`): each thread writes its own slab.
        let mut by_feature = vec![0f32; self.n * rows];
        let slabs: Vec<Mutex<&mut [f32]>> =
            by_feature.chunks_mut(span * rows).map(Mutex::new).collect();
        // Each thread takes slabs until none is left, whatever the pool's
        // size turns out to be.
        let next = AtomicUsize::new(0);
        pool.execute(|_| {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(slab) = slabs.get(i) else {
                    return;
                };
                let Ok(mut out) = slab.lock() else {
                    return;
                };
                for (f, out) in out.chunks_exact_mut(rows).enumerate() {
                    let at = (i * span + f) * per_row;
                    let w = WeightRow {
                        d: &self.d[at..at + per_row],
                        m: &self.m[at..at + per_row],
                        qs: &self.qs[at..at + per_row],
                    };
                    for (o, a) in out.iter_mut().zip(&acts) {
                        *o = dot(&w, a);
                    }
                }
            }
        });
        drop(slabs);
        if rows == 1 {
            return by_feature;
        }
        let mut out = vec![0f32; rows * self.n];
        for (f, col) in by_feature.chunks_exact(rows).enumerate() {
            for (r, v) in col.iter().enumerate() {
                out[r * self.n + f] = *v;
            }
        }
        out
    }
}

/// The size of candle's pool, asked once: candle works it out afresh on
/// every call (reading `/proc/cpuinfo`, ~10 % of a generation step).
fn pool_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| candle_core::utils::get_num_threads().max(1))
}

/// One row of weights.
struct WeightRow<'a> {
    d: &'a [f32],
    m: &'a [f32],
    qs: &'a [[u8; 16]],
}

/// One row of activations, quantized to Q8_1 as ggml does it; `d` and `s`
/// are the `f16` values, held as `f32`.
#[derive(Debug, Clone)]
pub struct Q8_1Row {
    d: Vec<f32>,
    s: Vec<f32>,
    qs: Vec<[i8; BLOCK]>,
}

impl Q8_1Row {
    /// `quantize_row_q8_1`: per block, `d = max|x| / 127` (as `f16`),
    /// `q = round(x / d)`, `s = f16(Σq) · d` (the product rounded to `f16`).
    pub fn quantize(x: &[f32]) -> Self {
        let blocks = x.len() / BLOCK;
        let mut row = Q8_1Row {
            d: Vec::with_capacity(blocks),
            s: Vec::with_capacity(blocks),
            qs: Vec::with_capacity(blocks),
        };
        for xs in x.chunks_exact(BLOCK) {
            let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let d16 = f16::from_f32(d);
            let mut q = [0i8; BLOCK];
            let mut sum = 0i32;
            for (q, v) in q.iter_mut().zip(xs) {
                *q = (v * id).round() as i8;
                sum += i32::from(*q);
            }
            let s = f16::from_f32(f16::from_f32(sum as f32).to_f32() * d16.to_f32());
            row.d.push(d16.to_f32());
            row.s.push(s.to_f32());
            row.qs.push(q);
        }
        row
    }
}

/// `Σ_blocks (Σ q_w·q_a) · d_w · d_a + m_w · s_a`, accumulated in block
/// order, as ggml's `vec_dot_q4_1_q8_1` reference does.
fn dot(w: &WeightRow<'_>, a: &Q8_1Row) -> f32 {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    {
        avx2::dot(w, a)
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2")))]
    {
        dot_with(w, a, block_dot_scalar)
    }
}

/// [`dot`] with the given integer block product: the float arithmetic in
/// one place for both versions.
#[inline(always)]
fn dot_with(w: &WeightRow<'_>, a: &Q8_1Row, block: impl Fn(&[u8; 16], &[i8; BLOCK]) -> i32) -> f32 {
    let mut sum = 0f32;
    for b in 0..w.qs.len() {
        let sumi = block(&w.qs[b], &a.qs[b]);
        sum += sumi as f32 * w.d[b] * a.d[b] + w.m[b] * a.s[b];
    }
    sum
}

/// The exact integer dot product of one block (the reference): weight
/// nibble `j` (low) and `j + 16` (high) of byte `j`, times activation `j`
/// and `j + 16`.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "avx2"), allow(dead_code))]
fn block_dot_scalar(w: &[u8; 16], a: &[i8; BLOCK]) -> i32 {
    let mut sum = 0i32;
    for j in 0..16 {
        sum += i32::from(w[j] & 0x0F) * i32::from(a[j]);
        sum += i32::from(w[j] >> 4) * i32::from(a[j + 16]);
    }
    sum
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
mod avx2 {
    use super::{BLOCK, Q8_1Row, WeightRow, dot_with};
    use std::arch::x86_64::*;

    /// The build targets x86-64-v3 (`.cargo/config.toml`), so AVX2 is a
    /// compile-time fact here (`cfg(target_feature = "avx2")` above).
    #[allow(unsafe_code)]
    pub(super) fn dot(w: &WeightRow<'_>, a: &Q8_1Row) -> f32 {
        // SAFETY: this module is compiled only when the build enables AVX2
        // for every function (`cfg(target_feature = "avx2")`), so the CPU
        // running this code has it; `dot_avx2` itself is safe Rust with no
        // pointer access.
        unsafe { dot_avx2(w, a) }
    }

    /// The whole row under AVX2, so that the block product inlines.
    #[target_feature(enable = "avx2")]
    fn dot_avx2(w: &WeightRow<'_>, a: &Q8_1Row) -> f32 {
        dot_with(w, a, |w, a| block_dot(w, a))
    }

    #[allow(unsafe_code)]
    #[cfg(test)]
    pub(super) fn block_dot_for_tests(w: &[u8; 16], a: &[i8; BLOCK]) -> i32 {
        // SAFETY: as for `dot`.
        unsafe { block_dot(w, a) }
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn block_dot(w: &[u8; 16], a: &[i8; BLOCK]) -> i32 {
        let word = |b: &[u8]| {
            let mut x = [0u8; 8];
            x.copy_from_slice(b);
            i64::from_le_bytes(x)
        };
        let packed = _mm_set_epi64x(word(&w[8..]), word(&w[..8]));
        let low4 = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(packed, low4);
        let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low4);
        // Weights 0..15 then 16..31, each 0..=15 (unsigned).
        let wv = _mm256_set_m128i(hi, lo);
        let act = |i: usize| {
            let mut x = [0u8; 8];
            for (x, v) in x.iter_mut().zip(&a[i * 8..i * 8 + 8]) {
                *x = *v as u8;
            }
            i64::from_le_bytes(x)
        };
        let av = _mm256_set_epi64x(act(3), act(2), act(1), act(0));
        // u8 × i8 pairs summed to i16: |15·127·2| fits; then pairs of i16
        // to i32, then across the register.
        let pairs = _mm256_maddubs_epi16(wv, av);
        let quads = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
        let half = _mm_add_epi32(
            _mm256_castsi256_si128(quads),
            _mm256_extracti128_si256(quads, 1),
        );
        let two = _mm_add_epi32(half, _mm_unpackhi_epi64(half, half));
        let one = _mm_add_epi32(two, _mm_shuffle_epi32(two, 0b01));
        _mm_cvtsi128_si32(one)
    }
}

#[cfg(test)]
#[path = "q4_1_tests.rs"]
mod tests;
