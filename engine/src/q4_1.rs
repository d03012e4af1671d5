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
    /// row-major, with the best kernel this CPU runs ([`Isa::best`]).
    ///
    /// `x.len()` must be a multiple of `k` (a trailing partial row is
    /// ignored); the llama pass checks the shape before calling.
    pub fn matmul(&self, x: &[f32]) -> Vec<f32> {
        self.matmul_with(Isa::best(), x)
    }

    /// [`Self::matmul`] with the kernel `isa` (one the CPU runs: see
    /// [`Isa::available`]). Every kernel gives the same bits.
    ///
    /// Rows go in groups of eight: each weight block is unpacked once for
    /// the group and its eight integer products reduced together, so a
    /// batch reads every weight once and costs far less than its rows one
    /// by one. Output features are split into contiguous ranges run on
    /// candle's own thread pool, so that the engine's threads never compete
    /// with a second pool.
    pub fn matmul_with(&self, isa: Isa, x: &[f32]) -> Vec<f32> {
        self.matmul_quantized(isa, &Q8_1Activations::quantize(x, self.k))
    }

    /// [`Self::matmul_with`] on activations already quantized (one input
    /// read by several matrices is quantized once). Activations of another
    /// row length give an empty result.
    pub fn matmul_quantized(&self, isa: Isa, x: &Q8_1Activations) -> Vec<f32> {
        let (rows, groups) = (x.rows, &x.groups);
        if rows == 0 || self.n == 0 || x.k != self.k {
            return Vec::new();
        }
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
                    for (out, g) in out.chunks_mut(GROUP).zip(groups) {
                        if out.len() < FEW {
                            for (r, o) in out.iter_mut().enumerate() {
                                *o = isa.dot1(&w, g, r);
                            }
                        } else {
                            let sums = isa.dot8(&w, g);
                            out.copy_from_slice(&sums[..out.len()]);
                        }
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

/// Rows per group of the batched kernels.
const GROUP: usize = 8;
/// Fewer rows than this go one by one (the eight-row kernel would spend
/// most of its work on empty lanes).
const FEW: usize = 3;

/// The instruction sets the kernels are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust (any CPU): the reference.
    Scalar,
    /// AVX2 `vpmaddubsw`/`vpmaddwd` (x86-64-v3, what the build targets).
    Avx2,
    /// AVX-512 VNNI `vpdpbusd` (on 256-bit registers: AVX512-VL), which
    /// does the byte products and their sums in one instruction; chosen
    /// at run time where the CPU has it (Zen 4+, Ice Lake+).
    Avx512Vnni,
}

impl Isa {
    /// Those this CPU runs, the reference first.
    pub fn available() -> Vec<Isa> {
        let mut all = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                all.push(Isa::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("avx512vl")
            {
                all.push(Isa::Avx512Vnni);
            }
        }
        all
    }

    /// The fastest this CPU runs (detected once).
    pub fn best() -> Isa {
        static BEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| Isa::available().last().copied().unwrap_or(Isa::Scalar))
    }

    /// The name logs and benchmarks give it.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512-vnni",
        }
    }

    /// One weight row against row `r` of a group.
    fn dot1(self, w: &WeightRow<'_>, g: &Q8_1Group, r: usize) -> f32 {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512Vnni => x86::dot1(w, g, r),
            _ => dot_with(w, g, r, block_dot_scalar),
        }
    }

    /// One weight row against a group of up to eight activation rows.
    fn dot8(self, w: &WeightRow<'_>, g: &Q8_1Group) -> [f32; GROUP] {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512Vnni => x86::dot8(self, w, g),
            _ => dot8_scalar(w, g),
        }
    }
}

/// Rows of activations quantized to Q8_1 for the Q4_1 kernels, in groups
/// of eight.
#[derive(Debug, Clone)]
pub struct Q8_1Activations {
    k: usize,
    rows: usize,
    groups: Vec<Q8_1Group>,
}

impl Q8_1Activations {
    /// `x`: rows of `k` values (a trailing partial row is ignored). Rows
    /// are quantized in parallel on candle's pool.
    pub fn quantize(x: &[f32], k: usize) -> Self {
        if k == 0 {
            return Q8_1Activations { k, rows: 0, groups: Vec::new() };
        }
        let rows = x.len() / k;
        let quantized: Vec<Mutex<Option<Q8_1Row>>> = (0..rows).map(|_| Mutex::new(None)).collect();
        let one = |r: usize| {
            if let Ok(mut slot) = quantized[r].lock() {
                *slot = Some(Q8_1Row::quantize(&x[r * k..(r + 1) * k]));
            }
        };
        if rows == 1 {
            one(0);
        } else {
            candle_core::utils::barrier_pool().execute_chunked(rows, |range| range.for_each(one));
        }
        let quantized: Vec<Q8_1Row> = quantized
            .into_iter()
            .filter_map(|m| m.into_inner().ok().flatten())
            .collect();
        let groups = quantized.chunks(GROUP).map(|rows| Q8_1Group::new(rows, k)).collect();
        Q8_1Activations { k, rows: quantized.len(), groups }
    }
}

/// Up to eight rows of activations quantized to Q8_1 (as [`Q8_1Row`]),
/// interleaved by block: block `b`'s eight rows of bytes, scales and sums
/// side by side (missing rows are zeros, and ignored).
#[derive(Debug, Clone)]
struct Q8_1Group {
    qs: Vec<[[i8; BLOCK]; GROUP]>,
    d: Vec<[f32; GROUP]>,
    s: Vec<[f32; GROUP]>,
}

impl Q8_1Group {
    /// Up to eight quantized rows of `k` values, interleaved.
    fn new(rows: &[Q8_1Row], k: usize) -> Self {
        let blocks = k / BLOCK;
        let mut g = Q8_1Group {
            qs: vec![[[0; BLOCK]; GROUP]; blocks],
            d: vec![[0.0; GROUP]; blocks],
            s: vec![[0.0; GROUP]; blocks],
        };
        for (r, q) in rows.iter().enumerate().take(GROUP) {
            for b in 0..blocks {
                g.qs[b][r] = q.qs[b];
                g.d[b][r] = q.d[b];
                g.s[b][r] = q.s[b];
            }
        }
        g
    }
}

/// The reference: each row on its own.
fn dot8_scalar(w: &WeightRow<'_>, g: &Q8_1Group) -> [f32; GROUP] {
    std::array::from_fn(|r| dot_with(w, g, r, block_dot_scalar))
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
    for b in 0..w.qs.len() {
        let sumi = block(&w.qs[b], &g.qs[b][r]);
        sum += sumi as f32 * w.d[b] * g.d[b][r] + w.m[b] * g.s[b][r];
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
    use super::{BLOCK, GROUP, Isa, Q8_1Group, WeightRow, dot_with, dot8_scalar};
    use std::arch::x86_64::*;

    /// The vector kernels' entry: `isa` must be one [`Isa::available`]
    /// found on this CPU.
    #[allow(unsafe_code)]
    pub(super) fn dot8(isa: Isa, w: &WeightRow<'_>, g: &Q8_1Group) -> [f32; GROUP] {
        match isa {
            // SAFETY: `Isa::Avx2` is only handed out (`Isa::available`)
            // where the CPU reports AVX2, and `Avx512Vnni` where it reports
            // AVX2, AVX512-VNNI and AVX512-VL: the features these functions
            // enable. They are safe Rust otherwise (slices, no pointers).
            Isa::Avx2 => unsafe { dot8_avx2(w, g) },
            Isa::Avx512Vnni => unsafe { dot8_vnni(w, g) },
            Isa::Scalar => dot8_scalar(w, g),
        }
    }

    // Loads and stores of whole fixed-size arrays: the array types make
    // every access exactly the register's width, so each is in bounds.

    #[target_feature(enable = "avx2")]
    #[inline]
    #[allow(unsafe_code)]
    fn load16(b: &[u8; 16]) -> __m128i {
        // SAFETY: reads exactly the 16 bytes of `b` (unaligned load).
        unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    #[allow(unsafe_code)]
    fn load32(b: &[i8; BLOCK]) -> __m256i {
        // SAFETY: reads exactly the 32 bytes of `b` (unaligned load).
        unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    #[allow(unsafe_code)]
    fn load8(f: &[f32; GROUP]) -> __m256 {
        // SAFETY: reads exactly the eight floats of `f`.
        unsafe { _mm256_loadu_ps(f.as_ptr()) }
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    #[allow(unsafe_code)]
    fn store(acc: __m256) -> [f32; GROUP] {
        let mut out = [0f32; GROUP];
        // SAFETY: writes exactly the eight floats of `out`.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), acc) };
        out
    }

    /// One block's 32 weight nibbles as bytes 0..=15: low nibbles (weights
    /// 0..15) in the low half, high nibbles (16..31) in the high half.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn unpack(qs: &[u8; 16]) -> __m256i {
        let packed = load16(qs);
        let low4 = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(packed, low4);
        let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low4);
        _mm256_set_m128i(hi, lo)
    }

    /// Eight vectors of i32 partial sums reduced to one vector of their
    /// eight totals, lane `r` from vector `r` (exact: integer sums).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn reduce8(q: [__m256i; GROUP]) -> __m256i {
        let s01 = _mm256_hadd_epi32(q[0], q[1]);
        let s23 = _mm256_hadd_epi32(q[2], q[3]);
        let s45 = _mm256_hadd_epi32(q[4], q[5]);
        let s67 = _mm256_hadd_epi32(q[6], q[7]);
        let s0123 = _mm256_hadd_epi32(s01, s23);
        let s4567 = _mm256_hadd_epi32(s45, s67);
        let lo = _mm256_permute2x128_si256(s0123, s4567, 0x20);
        let hi = _mm256_permute2x128_si256(s0123, s4567, 0x31);
        _mm256_add_epi32(lo, hi)
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

    /// One row: each block's product reduced on its own (for batches too
    /// small to fill a group).
    #[allow(unsafe_code)]
    pub(super) fn dot1(w: &WeightRow<'_>, g: &Q8_1Group, r: usize) -> f32 {
        // SAFETY: only reached through `Isa::Avx2` or `Isa::Avx512Vnni`,
        // handed out where the CPU reports AVX2 (see `dot8`).
        unsafe { dot1_avx2(w, g, r) }
    }

    #[target_feature(enable = "avx2")]
    fn dot1_avx2(w: &WeightRow<'_>, g: &Q8_1Group, r: usize) -> f32 {
        let ones = _mm256_set1_epi16(1);
        dot_with(w, g, r, |w, a| {
            let q = _mm256_madd_epi16(_mm256_maddubs_epi16(unpack(w), load32(a)), ones);
            let half = _mm_add_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
            let two = _mm_add_epi32(half, _mm_unpackhi_epi64(half, half));
            let one = _mm_add_epi32(two, _mm_shuffle_epi32(two, 0b01));
            _mm_cvtsi128_si32(one)
        })
    }

    #[target_feature(enable = "avx2")]
    fn dot8_avx2(w: &WeightRow<'_>, g: &Q8_1Group) -> [f32; GROUP] {
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        for b in 0..w.qs.len() {
            let wv = unpack(&w.qs[b]);
            let a = &g.qs[b];
            // u8 × i8 pairs summed to i16 (|15·127·2| fits), then pairs of
            // i16 to i32.
            let q: [__m256i; GROUP] = std::array::from_fn(|r| {
                let av = load32(&a[r]);
                _mm256_madd_epi16(_mm256_maddubs_epi16(wv, av), ones)
            });
            acc = accumulate(acc, reduce8(q), w.d[b], w.m[b], &g.d[b], &g.s[b]);
        }
        store(acc)
    }

    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    fn dot8_vnni(w: &WeightRow<'_>, g: &Q8_1Group) -> [f32; GROUP] {
        let mut acc = _mm256_setzero_ps();
        for b in 0..w.qs.len() {
            let wv = unpack(&w.qs[b]);
            let a = &g.qs[b];
            // Four u8 × i8 products summed into each i32 lane at once.
            let q: [__m256i; GROUP] = std::array::from_fn(|r| {
                let av = load32(&a[r]);
                _mm256_dpbusd_epi32(_mm256_setzero_si256(), wv, av)
            });
            acc = accumulate(acc, reduce8(q), w.d[b], w.m[b], &g.d[b], &g.s[b]);
        }
        store(acc)
    }

    #[cfg(test)]
    #[allow(unsafe_code)]
    pub(super) fn block_dot_for_tests(isa: Isa, w: &[u8; 16], a: &[i8; BLOCK]) -> i32 {
        let mut g = Q8_1Group {
            qs: vec![[[0; BLOCK]; GROUP]],
            d: vec![[1.0; GROUP]],
            s: vec![[0.0; GROUP]],
        };
        g.qs[0][3] = *a;
        let row = WeightRow {
            d: &[1.0],
            m: &[0.0],
            qs: std::slice::from_ref(w),
        };
        dot8(isa, &row, &g)[3] as i32
    }
}

#[cfg(test)]
#[path = "q4_1_tests.rs"]
mod tests;
