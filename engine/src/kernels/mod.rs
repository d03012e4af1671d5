//! The engine's own matrix kernels: quantized weights times activations
//! quantized to 8 bits, the products that are most of a pass's work.
//!
//! - Rows of a pass go in groups of eight: each weight block is read and
//!   unpacked once for the group, and its eight integer products reduced
//!   together, so a batch costs far less than its rows one by one.
//! - Every kernel ([`Isa`]: the scalar reference, AVX2, AVX-512 VNNI chosen
//!   at run time) does each row's float arithmetic in the same order, so
//!   all give the same bits, and a row's result never depends on the other
//!   rows of its batch (tested). Integer block products are exact whatever
//!   the instruction order.
//! - Output features are split into contiguous ranges run on candle's own
//!   thread pool, so that the engine's threads never compete with a second
//!   pool.

pub mod q4_1;
pub mod q8_0;
#[cfg(target_arch = "x86_64")]
mod x86;

use half::f16;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Values per block.
pub const BLOCK: usize = 32;

/// Rows per group of the batched kernels.
pub(crate) const GROUP: usize = 8;
/// Fewer rows than this go one by one (the eight-row kernel would spend
/// most of its work on empty lanes).
pub(crate) const FEW: usize = 3;

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
}

/// Rows of activations quantized to Q8_1 (whose bytes and scales are also
/// Q8_0's) for the kernels, in groups of eight.
#[derive(Debug, Clone)]
pub struct Q8_1Activations {
    pub(crate) k: usize,
    pub(crate) rows: usize,
    pub(crate) groups: Vec<Q8_1Group>,
}

impl Q8_1Activations {
    /// `x`: rows of `k` values (a trailing partial row is ignored). Rows
    /// are quantized in parallel on candle's pool.
    pub fn quantize(x: &[f32], k: usize) -> Self {
        if k == 0 {
            return Q8_1Activations {
                k,
                rows: 0,
                groups: Vec::new(),
            };
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
        let groups = quantized
            .chunks(GROUP)
            .map(|rows| Q8_1Group::new(rows, k))
            .collect();
        Q8_1Activations {
            k,
            rows: quantized.len(),
            groups,
        }
    }
}

/// Up to eight rows of activations quantized to Q8_1 (as [`Q8_1Row`]),
/// interleaved by block: block `b`'s eight rows of bytes, scales and sums
/// side by side (missing rows are zeros, and ignored).
#[derive(Debug, Clone)]
pub(crate) struct Q8_1Group {
    pub(crate) qs: Vec<[[i8; BLOCK]; GROUP]>,
    pub(crate) d: Vec<[f32; GROUP]>,
    pub(crate) s: Vec<[f32; GROUP]>,
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

/// The size of candle's pool, asked once: candle works it out afresh on
/// every call (reading `/proc/cpuinfo`, ~10 % of a generation step).
fn pool_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| candle_core::utils::get_num_threads().max(1))
}

/// One row of activations, quantized to Q8_1 as ggml does it; `d` and `s`
/// are the `f16` values, held as `f32`.
#[derive(Debug, Clone)]
pub struct Q8_1Row {
    pub(crate) d: Vec<f32>,
    pub(crate) s: Vec<f32>,
    pub(crate) qs: Vec<[i8; BLOCK]>,
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

/// Blocks in `n` rows of `k` values stored in `len` bytes of blocks of
/// `bytes` each; why not, when the sizes do not fit.
pub(crate) fn blocks_in(n: usize, k: usize, len: usize, bytes: usize) -> Result<usize, String> {
    if k == 0 || !k.is_multiple_of(BLOCK) {
        return Err(format!("row length {k} is not a multiple of {BLOCK}"));
    }
    let blocks = n.checked_mul(k / BLOCK).ok_or("size overflows")?;
    if blocks.checked_mul(bytes) != Some(len) {
        return Err(format!(
            "{len} bytes for {n} × {k} (expected {})",
            blocks.saturating_mul(bytes)
        ));
    }
    Ok(blocks)
}

/// `x` times a matrix of `n` features: `rows × n`, row-major. `one(f, g,
/// r)` is feature `f` against row `r` of group `g`, `eight(f, g)` against
/// the whole group (a group of fewer than [`FEW`] rows goes one by one).
pub(crate) fn products(
    n: usize,
    x: &Q8_1Activations,
    one: impl Fn(usize, &Q8_1Group, usize) -> f32 + Sync,
    eight: impl Fn(usize, &Q8_1Group) -> [f32; GROUP] + Sync,
) -> Vec<f32> {
    let rows = x.rows;
    if rows == 0 || n == 0 {
        return Vec::new();
    }
    let pool = candle_core::utils::barrier_pool();
    let span = n.div_ceil(pool_threads()).max(1);
    // Feature-major (`n × rows`): each thread writes its own slab.
    let mut by_feature = vec![0f32; n * rows];
    let slabs: Vec<Mutex<&mut [f32]>> =
        by_feature.chunks_mut(span * rows).map(Mutex::new).collect();
    // Each thread takes slabs until none is left, whatever the pool's size
    // turns out to be.
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
                let f = i * span + f;
                for (out, g) in out.chunks_mut(GROUP).zip(&x.groups) {
                    if out.len() < FEW {
                        for (r, o) in out.iter_mut().enumerate() {
                            *o = one(f, g, r);
                        }
                    } else {
                        out.copy_from_slice(&eight(f, g)[..out.len()]);
                    }
                }
            }
        }
    });
    drop(slabs);
    if rows == 1 {
        return by_feature;
    }
    // Row-major, rows in parallel.
    let mut out = vec![0f32; rows * n];
    let out_rows: Vec<Mutex<&mut [f32]>> = out.chunks_mut(n).map(Mutex::new).collect();
    pool.execute_chunked(rows, |range| {
        for r in range {
            if let Some(Ok(mut dst)) = out_rows.get(r).map(Mutex::lock) {
                for (f, d) in dst.iter_mut().enumerate() {
                    *d = by_feature[f * rows + r];
                }
            }
        }
    });
    drop(out_rows);
    out
}
