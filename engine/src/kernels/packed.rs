//! What the packed kernels (Q4_1, Q8_0) share: a matrix whose features are
//! repacked at load eight by eight ([`PACK`]), so that one instruction
//! multiplies a chunk of four activations of one row, broadcast, by the
//! same chunk of eight features, and each row's eight results come out in
//! one register's lanes (no horizontal sums); the cutting of a slab into
//! packs and groups of rows; the scalar reference.

use super::{Activations, BLOCK, GROUP, Isa, Product, Q8_1Group, TILE_BYTES, blocks_in};

/// Features per pack: one register's lanes of `f32`.
pub const PACK: usize = 8;

/// One block (32 values) of eight features, laid out for a kind's kernel.
pub trait Pack: Copy + Send + Sync + std::fmt::Debug {
    /// Bytes of one feature's block in the pack (what a pass reads).
    const BYTES: usize;
    /// All zeros (the padding past a matrix's last feature).
    const ZERO: Self;
    /// The reference: feature `f` of `pack`'s blocks against row `r` of
    /// `g`, the block's integer sums exact and its float operations in
    /// ggml's reference order; the vector kernels do the same operations
    /// lane by lane, so give the same bits.
    fn dot_scalar(pack: &[Self], f: usize, g: &Q8_1Group, r: usize) -> f32;
    /// The vector kernel: `pack` against the first `live` rows of `g`;
    /// `isa` is a vector kernel [`Isa::available`] found on this CPU.
    #[cfg(target_arch = "x86_64")]
    fn rows_x86(isa: Isa, pack: &[Self], g: &Q8_1Group, live: usize) -> [[f32; PACK]; GROUP];
}

/// An `n × k` matrix (one row per output), its features packed eight by
/// eight (the last pack padded with zeros).
#[derive(Debug, Clone)]
pub struct Packs<P> {
    n: usize,
    k: usize,
    /// Pack `p`'s block `b` at `p · k/32 + b`.
    pub(crate) packs: Vec<P>,
}

impl<P: Pack> Packs<P> {
    /// From GGUF's raw blocks of `bytes` each, row-major, `n` rows of `k`
    /// values, `put(pack, lane, block)` putting one feature's block into
    /// its lane; why not, when the sizes do not fit.
    pub(crate) fn from_gguf(
        n: usize,
        k: usize,
        raw: &[u8],
        bytes: usize,
        put: impl Fn(&mut P, usize, &[u8]),
    ) -> Result<Self, String> {
        blocks_in(n, k, raw.len(), BLOCK, bytes)?;
        let per_row = k / BLOCK;
        let mut packs = vec![P::ZERO; n.div_ceil(PACK) * per_row];
        for (f, row) in raw.chunks_exact(per_row * bytes).enumerate() {
            let (p, lane) = (f / PACK, f % PACK);
            for (b, block) in row.chunks_exact(bytes).enumerate() {
                if let Some(pack) = packs.get_mut(p * per_row + b) {
                    put(pack, lane, block);
                }
            }
        }
        Ok(Packs { n, k, packs })
    }

    /// Pack `p`'s blocks.
    pub(crate) fn pack(&self, p: usize) -> &[P] {
        let per_row = self.k / BLOCK;
        self.packs
            .get(p * per_row..(p + 1) * per_row)
            .unwrap_or(&[])
    }
}

impl<P: Pack> Product for Packs<P> {
    fn rows(&self) -> usize {
        self.n
    }

    fn cols(&self) -> usize {
        self.k
    }

    fn row_bytes(&self) -> usize {
        self.k / BLOCK * P::BYTES
    }

    /// The reference, feature by feature ([`Self::slab`] is what runs).
    fn feature(&self, _: Isa, f: usize, g: &Q8_1Group, live: usize) -> [f32; GROUP] {
        let pack = self.pack(f / PACK);
        std::array::from_fn(|r| match r < live {
            true => P::dot_scalar(pack, f % PACK, g, r),
            false => 0.0,
        })
    }

    /// Packs against each group of up to eight rows: each block's weights
    /// unpacked once for the group. `first` and the slab's width are
    /// multiples of [`PACK`] ([`super::matmul_many`] cuts slabs so) but for
    /// the matrix's end. Features go in tiles whose weights fit in L2,
    /// group after group within a tile.
    fn slab(&self, isa: Isa, first: usize, x: &Activations<Q8_1Group>, dst: &mut [&mut [f32]]) {
        let width = dst.first().map_or(0, |r| r.len());
        let tile = (TILE_BYTES / (self.row_bytes() * PACK).max(1)).max(1) * PACK;
        for start in (0..width).step_by(tile) {
            let end = width.min(start + tile);
            for (g, outs) in x.groups.iter().zip(dst.chunks_mut(GROUP)) {
                for local in (start..end).step_by(PACK) {
                    let pack = self.pack((first + local) / PACK);
                    let values = rows(isa, pack, g, outs.len());
                    for (out, v) in outs.iter_mut().zip(&values) {
                        let n = out.len().saturating_sub(local).min(PACK);
                        if let (Some(out), Some(v)) = (out.get_mut(local..local + n), v.get(..n)) {
                            out.copy_from_slice(v);
                        }
                    }
                }
            }
        }
    }
}

/// One pack against the first `live` rows of a group: row `r`'s eight
/// features' products, with the kernel `isa`.
pub(crate) fn rows<P: Pack>(
    isa: Isa,
    pack: &[P],
    g: &Q8_1Group,
    live: usize,
) -> [[f32; PACK]; GROUP] {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni => P::rows_x86(isa, pack, g, live),
        _ => std::array::from_fn(|r| match r < live {
            true => std::array::from_fn(|f| P::dot_scalar(pack, f, g, r)),
            false => [0.0; PACK],
        }),
    }
}

/// `$kernel::<R>(args…)` with the row count `$live` made a constant (so a
/// kernel keeps each row's sums in registers across the blocks).
#[cfg(target_arch = "x86_64")]
macro_rules! by_live {
    ($live:expr, $kernel:ident($($arg:expr),*)) => {
        match $live {
            0 => [[0.0; $crate::kernels::packed::PACK]; $crate::kernels::GROUP],
            1 => $kernel::<1>($($arg),*),
            2 => $kernel::<2>($($arg),*),
            3 => $kernel::<3>($($arg),*),
            4 => $kernel::<4>($($arg),*),
            5 => $kernel::<5>($($arg),*),
            6 => $kernel::<6>($($arg),*),
            7 => $kernel::<7>($($arg),*),
            _ => $kernel::<{ $crate::kernels::GROUP }>($($arg),*),
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(crate) use by_live;
