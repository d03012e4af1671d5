//! The engine's own matrix kernels: quantized weights times activations
//! quantized to 8 bits, the products that are most of a pass's work.
//!
//! - Rows of a pass go in groups of eight, stored also four bytes per row
//!   side by side ([`Q8_1Group::lanes`]), so that one weight block, read
//!   and unpacked once for two groups, gives each row its own lane of
//!   integer sums with no horizontal adds: a batch costs far less than its
//!   rows one by one.
//! - Every kernel ([`Isa`]: the scalar reference, AVX2, AVX-512 VNNI chosen
//!   at run time) does each row's float arithmetic in the same order, so
//!   all give the same bits, and a row's result never depends on the other
//!   rows of its batch (tested). Integer block products are exact whatever
//!   the instruction order.
//! - Output features are split into contiguous ranges run on candle's own
//!   thread pool, so that the engine's threads never compete with a second
//!   pool.

pub mod k_quants;
#[cfg(test)]
mod k_quants_tests;
pub mod packed;
pub mod q4_1;
pub mod q4_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_k;
#[cfg(target_arch = "x86_64")]
mod x86;

use half::f16;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Deterministic values in about [-scale, scale], for the kernels' tests.
#[cfg(test)]
pub(crate) fn test_values(count: usize, seed: u64, scale: f32) -> Vec<f32> {
    const A: u64 = 6364136223846793005;
    const C: u64 = 1442695040888963407;
    let mut s = seed.wrapping_mul(A).wrapping_add(C);
    (0..count)
        .map(|_| {
            s = s.wrapping_mul(A).wrapping_add(C);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Values per block.
pub const BLOCK: usize = 32;

/// Rows per group of the batched kernels.
pub(crate) const GROUP: usize = 8;
// `Q8_1Group::lanes`: a block's eight chunks of four bytes are its 32, and a
// chunk's eight rows of four bytes fill one 32-byte register.
const _: () = assert!(BLOCK == 4 * GROUP);
/// Fewer rows than this go one by one (the eight-row kernel would spend
/// most of its work on empty lanes).
pub(crate) const FEW: usize = 3;

/// The instruction sets the kernels are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust (any CPU): the reference.
    Scalar,
    /// AVX2 `vpmaddubsw`/`vpmaddwd`, with F16C (x86-64-v3, what the build
    /// targets).
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
            // (Every AVX2 CPU has F16C; the kernels convert scales with it.)
            let avx2 = std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("f16c");
            if avx2 {
                all.push(Isa::Avx2);
            }
            if avx2
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
}

/// `Σ a[i]·b[i]` of two `f32` slices (attention's scores) in one fixed
/// order wherever it runs: eight lanes, lane `i` summing `a[8j+i]·b[8j+i]`
/// over the chunks `j` in order, the lanes then added as
/// `((l0+l4) + (l1+l5)) + ((l2+l6) + (l3+l7))`, then the products of the
/// tail (past the last whole chunk) in order. The vector path is the same
/// operations lane by lane, so the same bits (tested).
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let whole = n - n % GROUP;
    let (a, b) = (&a[..n], &b[..n]);
    let tail: f32 = a[whole..].iter().zip(&b[whole..]).map(|(x, y)| x * y).sum();
    dot_f32_chunks(&a[..whole], &b[..whole]) + tail
}

/// [`dot_f32`]'s whole chunks: AVX2 where the CPU has it (x86-64-v3, what
/// the build targets, always does), else the reference.
#[inline]
fn dot_f32_chunks(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if Isa::best() != Isa::Scalar {
        return dot_f32_chunks_x86(a, b);
    }
    dot_f32_chunks_scalar(a, b)
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[inline]
fn dot_f32_chunks_x86(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: only called where `Isa::best()` found AVX2 on this CPU, the
    // one feature the function enables; safe Rust otherwise.
    unsafe { x86::dot_f32_chunks(a, b) }
}

/// The reference for [`dot_f32_chunks`].
fn dot_f32_chunks_scalar(a: &[f32], b: &[f32]) -> f32 {
    let mut l = [0f32; GROUP];
    for (x, y) in a.chunks_exact(GROUP).zip(b.chunks_exact(GROUP)) {
        for i in 0..GROUP {
            l[i] += x[i] * y[i];
        }
    }
    ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
}

/// Up to eight rows of activations quantized in the layout one family of
/// kernels reads ([`Q8_1Group`] for Q4_1 and Q8_0, [`q8_k::Q8KGroup`] for
/// the k-quants).
pub trait Group: std::fmt::Debug + Send + Sync + Sized {
    /// One row quantized, apart from any group (so that the rows of one
    /// group are quantized in parallel).
    type Row: Send;
    /// An empty group for rows of `k` values.
    fn zeros(k: usize) -> Self;
    /// A row's values quantized (its whole blocks; a trailing partial
    /// block is ignored).
    fn quantize(row: &[f32]) -> Self::Row;
    /// A quantized row into the group as its row `r`.
    fn put(&mut self, r: usize, row: Self::Row);
    /// Called once, after every row was put.
    fn finish(&mut self);
}

/// A weight matrix the kernels multiply: `n` rows (outputs, "features")
/// of `k` values, against activations quantized as groups of type `G`.
pub trait Product<G: Group = Q8_1Group>: std::fmt::Debug + Send + Sync {
    /// Output size.
    fn rows(&self) -> usize;
    /// Input size.
    fn cols(&self) -> usize;

    /// Feature `f` (`< rows()`) against the first `live` rows of group
    /// `g` (of `cols()` values) with the kernel `isa`: one the CPU runs
    /// ([`Isa::available`]); every kernel gives the same bits. Lanes past
    /// `live` are unspecified.
    fn feature(&self, isa: Isa, f: usize, g: &G, live: usize) -> [f32; GROUP];

    /// [`Self::feature`] against two groups (the second with at least
    /// [`FEW`] live rows) at once: a kernel that unpacks each weight block
    /// once for both overrides it. Same bits as two calls.
    fn feature_pair(&self, isa: Isa, f: usize, a: &G, b: &G) -> [[f32; GROUP]; 2] {
        [
            self.feature(isa, f, a, GROUP),
            self.feature(isa, f, b, GROUP),
        ]
    }

    /// Bytes of one feature's weights (what a pass reads per feature).
    fn row_bytes(&self) -> usize;

    /// Features `first..first + width` against every row of `x`, into
    /// `dst` (row `r`'s part of the output, `width` values each). Features
    /// go in tiles whose weights fit in the core's L2 cache, and within a
    /// tile, group after group, so that the group's activations (up to 8
    /// rows of `k` bytes with their scales) stay in L1 while the tile's
    /// features go by, and the weights come from memory once. (Provided
    /// here, so that each matrix type gets its own copy, [`Self::feature`]
    /// inlined, behind one dynamic call per slab.)
    fn slab(&self, isa: Isa, first: usize, x: &Activations<G>, dst: &mut [&mut [f32]]) {
        // Value `r` of `values` into row `r`'s slot `local`.
        fn put<'v>(rows: &mut [&mut [f32]], local: usize, values: impl Iterator<Item = &'v f32>) {
            for (row, v) in rows.iter_mut().zip(values) {
                if let Some(out) = row.get_mut(local) {
                    *out = *v;
                }
            }
        }
        let width = dst.first().map_or(0, |r| r.len());
        let tile = (TILE_BYTES / self.row_bytes().max(1)).max(1);
        let groups = x.groups.len();
        for start in (0..width).step_by(tile) {
            let features = start..width.min(start + tile);
            let mut g = 0;
            while g < groups {
                let live = |g: usize| x.rows.min((g + 1) * GROUP).saturating_sub(g * GROUP);
                // Two groups at a time where the second is worth it.
                let pair = g + 1 < groups && live(g + 1) >= FEW;
                let end = x.rows.min((g + 1 + usize::from(pair)) * GROUP);
                let Some(rows) = dst.get_mut(g * GROUP..end) else {
                    break;
                };
                // (Two loops, not one with a branch per feature: at one row
                // a feature is a few dozen nanoseconds of work.)
                if pair {
                    let (a, b) = (&x.groups[g], &x.groups[g + 1]);
                    for local in features.clone() {
                        let values = self.feature_pair(isa, first + local, a, b);
                        put(rows, local, values.iter().flatten());
                    }
                } else {
                    let (group, live) = (&x.groups[g], rows.len());
                    for local in features.clone() {
                        put(
                            rows,
                            local,
                            self.feature(isa, first + local, group, live).iter(),
                        );
                    }
                }
                g += 1 + usize::from(pair);
            }
        }
    }

    /// `x` (already quantized) times this matrix transposed, `rows × n`
    /// row-major (see [`matmul_many`]).
    fn matmul_quantized(&self, isa: Isa, x: &Activations<G>) -> Vec<f32>
    where
        Self: Sized,
    {
        matmul_many(isa, &[self], x).pop().unwrap_or_default()
    }

    /// [`Self::matmul_quantized`] on `x` (`rows × k`, row-major; a trailing
    /// partial row is ignored).
    fn matmul_with(&self, isa: Isa, x: &[f32]) -> Vec<f32>
    where
        Self: Sized,
    {
        self.matmul_quantized(isa, &Activations::quantize(x, self.cols()))
    }

    /// [`Self::matmul_with`] the best kernel this CPU runs.
    fn matmul(&self, x: &[f32]) -> Vec<f32>
    where
        Self: Sized,
    {
        self.matmul_with(Isa::best(), x)
    }
}

/// A feature against `live` rows of a group: one by one (`one(r)`) when
/// they are too few for the eight-row kernel (`eight()`), which would
/// spend most of its work on empty lanes.
#[inline(always)]
pub(crate) fn by_rows(
    live: usize,
    one: impl Fn(usize) -> f32,
    eight: impl FnOnce() -> [f32; GROUP],
) -> [f32; GROUP] {
    if live < FEW {
        std::array::from_fn(|r| if r < live { one(r) } else { 0.0 })
    } else {
        eight()
    }
}

/// Rows of activations quantized for the kernels, in groups of eight.
#[derive(Debug, Clone)]
pub struct Activations<G> {
    pub(crate) k: usize,
    pub(crate) rows: usize,
    pub(crate) groups: Vec<G>,
}

/// Rows quantized to Q8_1 (whose bytes and scales are also Q8_0's).
pub type Q8_1Activations = Activations<Q8_1Group>;

impl<G: Group> Activations<G> {
    /// `x`: rows of `k` values (a trailing partial row is ignored),
    /// quantized on candle's pool: by groups, each straight into its
    /// group, when there are enough groups for every thread; else (a
    /// decode step's rows are one group or two) row by row, then placed.
    pub fn quantize(x: &[f32], k: usize) -> Self {
        let rows = x.len().checked_div(k).unwrap_or(0);
        let values = |r: usize| x.get(r * k..(r + 1) * k);
        let groups: Vec<Mutex<G>> = if rows.div_ceil(GROUP) >= pool_threads() {
            let groups: Vec<Mutex<G>> = (0..rows.div_ceil(GROUP))
                .map(|_| Mutex::new(G::zeros(k)))
                .collect();
            on_pool(groups.len(), |i| {
                if let Some(Ok(mut g)) = groups.get(i).map(Mutex::lock) {
                    for r in i * GROUP..rows.min((i + 1) * GROUP) {
                        if let Some(row) = values(r) {
                            g.put(r % GROUP, G::quantize(row));
                        }
                    }
                }
            });
            groups
        } else {
            let quantized: Vec<Mutex<Option<G::Row>>> =
                (0..rows).map(|_| Mutex::new(None)).collect();
            on_pool(rows, |r| {
                if let (Some(slot), Some(row)) = (quantized.get(r), values(r))
                    && let Ok(mut slot) = slot.lock()
                {
                    *slot = Some(G::quantize(row));
                }
            });
            let mut groups: Vec<G> = (0..rows.div_ceil(GROUP)).map(|_| G::zeros(k)).collect();
            for (r, q) in quantized.into_iter().enumerate() {
                if let (Some(g), Ok(Some(q))) = (groups.get_mut(r / GROUP), q.into_inner()) {
                    g.put(r % GROUP, q);
                }
            }
            groups.into_iter().map(Mutex::new).collect()
        };
        on_pool(groups.len(), |i| {
            if let Some(Ok(mut g)) = groups.get(i).map(Mutex::lock) {
                g.finish();
            }
        });
        let groups = groups
            .into_iter()
            .filter_map(|g| g.into_inner().ok())
            .collect();
        Activations { k, rows, groups }
    }
}

/// `work(i)` for every `i < n`, on candle's pool when there are two or
/// more.
fn on_pool(n: usize, work: impl Fn(usize) + Sync) {
    match n {
        0 | 1 => (0..n).for_each(work),
        n => candle_core::utils::barrier_pool().execute_chunked(n, |range| range.for_each(&work)),
    }
}

/// `quantize_row_q8_1` on one block: `d = max|x| / 127` (as `f16`),
/// `q = round(x / d)`, `s = f16(Σq) · d` (the product rounded to `f16`);
/// `d` and `s` held as `f32`. With the kernel `isa` (the same bytes).
fn quantize_block(isa: Isa, xs: &[f32; BLOCK]) -> ([i8; BLOCK], f32, f32) {
    let amax = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni => x86_block_amax(xs),
        _ => xs.iter().fold(0f32, |a, v| a.max(v.abs())),
    };
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let d16 = f16::from_f32(d);
    let (q, sum) = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni => x86_block_round(xs, id),
        _ => {
            let q: [i8; BLOCK] = std::array::from_fn(|i| (xs[i] * id).round() as i8);
            (q, q.iter().map(|q| i32::from(*q)).sum())
        }
    };
    let s = f16::from_f32(f16::from_f32(sum as f32).to_f32() * d16.to_f32());
    (q, d16.to_f32(), s.to_f32())
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
fn x86_block_amax(xs: &[f32; BLOCK]) -> f32 {
    // SAFETY: reached only with a vector `Isa`, handed out where the CPU
    // reports AVX2, the one feature the function enables.
    unsafe { x86::block_amax(xs) }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
fn x86_block_round(xs: &[f32; BLOCK], id: f32) -> ([i8; BLOCK], i32) {
    // SAFETY: as for `x86_block_amax`.
    unsafe { x86::block_round(xs, id) }
}

/// Up to eight rows of activations quantized to Q8_1, by block: block
/// `b`'s eight rows of bytes, scales and sums side by side (missing rows
/// are zeros, and ignored).
#[derive(Debug, Clone)]
pub struct Q8_1Group {
    /// Block `b`, row `r`: its 32 bytes.
    pub(crate) qs: Vec<[[i8; BLOCK]; GROUP]>,
    /// The same bytes plus 128, as unsigned bytes: what `vpdpbusd` takes as
    /// its unsigned operand against Q8_0's signed weights (the kernel then
    /// subtracts `128 · Σ w`).
    pub(crate) unsigned: Vec<[[u8; BLOCK]; GROUP]>,
    pub(crate) d: Vec<[f32; GROUP]>,
    pub(crate) s: Vec<[f32; GROUP]>,
}

impl Q8_1Group {
    /// Fills [`Self::unsigned`] from [`Self::qs`].
    pub(crate) fn offset(&mut self) {
        self.unsigned = self
            .qs
            .iter()
            .map(|rows| rows.map(|row| row.map(|q| (q as u8) ^ 0x80)))
            .collect();
    }
}

impl Group for Q8_1Group {
    fn zeros(k: usize) -> Self {
        let blocks = k / BLOCK;
        Q8_1Group {
            qs: vec![[[0; BLOCK]; GROUP]; blocks],
            unsigned: Vec::new(),
            d: vec![[0.0; GROUP]; blocks],
            s: vec![[0.0; GROUP]; blocks],
        }
    }

    type Row = Vec<([i8; BLOCK], f32, f32)>;

    fn quantize(row: &[f32]) -> Self::Row {
        let isa = Isa::best();
        row.chunks_exact(BLOCK)
            .filter_map(|xs| <&[f32; BLOCK]>::try_from(xs).ok())
            .map(|xs| quantize_block(isa, xs))
            .collect()
    }

    fn put(&mut self, r: usize, row: Self::Row) {
        for (b, (q, d, s)) in row.into_iter().enumerate() {
            (self.qs[b][r], self.d[b][r], self.s[b][r]) = (q, d, s);
        }
    }

    fn finish(&mut self) {
        self.offset();
    }
}

/// Blocks of eight rows' bytes (`qs[b][r]`) four by four across the rows:
/// block `b`, chunk `j` holds bytes `4j..4j + 4` of rows 0, 1, … 7 (the
/// layout of [`Q8_1Group::lanes`]).
pub(crate) fn interleave(qs: &[[[i8; BLOCK]; GROUP]]) -> Vec<[[i8; BLOCK]; GROUP]> {
    qs.iter()
        .map(|rows| std::array::from_fn(|j| std::array::from_fn(|i| rows[i / 4][4 * j + i % 4])))
        .collect()
}

/// The size of candle's pool, asked once: candle works it out afresh on
/// every call (reading `/proc/cpuinfo`, ~10 % of a generation step).
pub(crate) fn pool_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| candle_core::utils::get_num_threads().max(1))
}

/// Blocks in `n` rows of `k` values stored in `len` bytes of blocks of
/// `per` values in `bytes` each; why not, when the sizes do not fit.
pub(crate) fn blocks_in(
    n: usize,
    k: usize,
    len: usize,
    per: usize,
    bytes: usize,
) -> Result<usize, String> {
    if k == 0 || !k.is_multiple_of(per) {
        return Err(format!("row length {k} is not a multiple of {per}"));
    }
    let blocks = n.checked_mul(k / per).ok_or("size overflows")?;
    if blocks.checked_mul(bytes) != Some(len) {
        return Err(format!(
            "{len} bytes for {n} × {k} (expected {})",
            blocks.saturating_mul(bytes)
        ));
    }
    Ok(blocks)
}

/// Weights per tile of [`Product::slab`]: a quarter of a Zen 4 or recent
/// Xeon core's L2 (1–2 MiB), leaving room for the activations.
const TILE_BYTES: usize = 256 * 1024;

/// Slabs of features per pool thread (per matrix, as a matrix's features
/// are cut at its end): one, so that each thread streams its weights from
/// memory in one run, the prefetcher's best case. Smaller slabs, which
/// would balance better when the OS sets a thread aside, measured 5–10 %
/// slower for one row (2 vCPU AMD EPYC Zen 4).
const SLABS_PER_THREAD: usize = 1;

/// Features of one matrix that one thread computes for every row: `first..`
/// of matrix `matrix`, each row's part of the output in `rows`.
struct Slab<'a> {
    matrix: usize,
    first: usize,
    rows: Vec<&'a mut [f32]>,
}

/// `x` times each of `matrices` (transposed), each result `rows × n`
/// row-major, all in one call on candle's pool: features are cut into
/// slabs that threads take until none is left, each written straight into
/// its place. A matrix of another input size than `x` gets an empty result.
pub fn matmul_many<G: Group>(
    isa: Isa,
    matrices: &[&dyn Product<G>],
    x: &Activations<G>,
) -> Vec<Vec<f32>> {
    let rows = x.rows;
    let fits = |m: &dyn Product<G>| m.cols() == x.k;
    let mut outs: Vec<Vec<f32>> = matrices
        .iter()
        .map(|m| match fits(*m) {
            true => vec![0f32; rows * m.rows()],
            false => Vec::new(),
        })
        .collect();
    let total: usize = matrices
        .iter()
        .filter(|m| fits(**m))
        .map(|m| m.rows())
        .sum();
    // Whole packs: the packed kernels take eight features at once.
    let span = total
        .div_ceil(pool_threads() * SLABS_PER_THREAD)
        .max(packed::PACK)
        .next_multiple_of(packed::PACK);
    let mut slabs: Vec<Slab<'_>> = Vec::new();
    for (j, (m, out)) in matrices.iter().zip(outs.iter_mut()).enumerate() {
        let n = m.rows();
        if out.is_empty() || n == 0 {
            continue;
        }
        let start = slabs.len();
        slabs.extend((0..n).step_by(span).map(|first| Slab {
            matrix: j,
            first,
            rows: Vec::with_capacity(rows),
        }));
        for row in out.chunks_mut(n) {
            for (slab, part) in slabs[start..].iter_mut().zip(row.chunks_mut(span)) {
                slab.rows.push(part);
            }
        }
    }
    if slabs.is_empty() {
        return outs;
    }
    let slabs: Vec<Mutex<Slab<'_>>> = slabs.into_iter().map(Mutex::new).collect();
    let next = AtomicUsize::new(0);
    candle_core::utils::barrier_pool().execute(|_| {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(Ok(mut slab)) = slabs.get(i).map(Mutex::lock) else {
                return;
            };
            let Some(m) = matrices.get(slab.matrix) else {
                return;
            };
            let first = slab.first;
            m.slab(isa, first, x, &mut slab.rows);
        }
    });
    drop(slabs);
    outs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector quantization gives the reference's bytes, scale and sum:
    /// on random blocks, on ties (x.5 after scaling), signed zeros, NaN
    /// and infinities, and all-zero blocks.
    #[test]
    fn vector_quantization_is_the_reference() {
        let mut blocks: Vec<[f32; BLOCK]> = (0..500u64)
            .map(|seed| {
                let v = test_values(BLOCK, seed, 10.0);
                std::array::from_fn(|i| v[i])
            })
            .collect();
        // 127 at index 0 makes d = 1, so the others are exact ties.
        blocks.push(std::array::from_fn(|i| match i {
            0 => 127.0,
            i => (i as f32 - 16.0) + 0.5,
        }));
        blocks.push(std::array::from_fn(|i| if i % 2 == 0 { -0.0 } else { 0.0 }));
        blocks.push([0.0; BLOCK]);
        blocks.push(std::array::from_fn(|i| match i {
            3 => f32::NAN,
            7 => -2.5,
            _ => 1.0,
        }));
        blocks.push(std::array::from_fn(|i| match i {
            3 => f32::INFINITY,
            _ => 1.0,
        }));
        for isa in Isa::available() {
            for (i, xs) in blocks.iter().enumerate() {
                let (q, d, s) = quantize_block(isa, xs);
                let (rq, rd, rs) = quantize_block(Isa::Scalar, xs);
                assert_eq!(q, rq, "{} block {i}", isa.name());
                assert_eq!(
                    (d.to_bits(), s.to_bits()),
                    (rd.to_bits(), rs.to_bits()),
                    "block {i}"
                );
            }
        }
        // The ties went away from zero.
        let (q, _, _) = quantize_block(Isa::Scalar, &blocks[500]);
        assert_eq!((q[1], q[16], q[31]), (-15, 1, 16));
    }

    /// The vector path of `dot_f32` gives the reference's bits, at every
    /// length around whole chunks (the tail) and for head sizes models use.
    #[test]
    fn f32_dot_is_the_reference_to_the_bit() {
        for n in (0..40).chain([64, 128, 256]) {
            let (a, b) = (test_values(n, 7, 3.0), test_values(n, 11, 2.0));
            let whole = n - n % GROUP;
            let tail: f32 = a[whole..].iter().zip(&b[whole..]).map(|(x, y)| x * y).sum();
            let want = dot_f32_chunks_scalar(&a[..whole], &b[..whole]) + tail;
            assert_eq!(dot_f32(&a, &b).to_bits(), want.to_bits(), "length {n}");
            let exact: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            assert!(
                (f64::from(want) - exact).abs() < 1e-3 * (1.0 + exact.abs()),
                "length {n}"
            );
        }
    }
}
