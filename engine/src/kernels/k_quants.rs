//! A matrix of k-quant super-blocks (Q4_K, Q6_K): the rows, the checks at
//! load and the [`Product`] over Q8_K activations that both share; each
//! super-block type brings its kernels ([`SuperBlock`]).

use super::q8_k::{Q8KGroup, SUPER};
use super::{GROUP, Isa, Product, blocks_in, by_rows};

/// Why weights could not be taken as a k-quant type.
#[derive(Debug, thiserror::Error)]
#[error("{0} weights: {1}")]
pub struct KQuantError(&'static str, String);

/// A super-block of 256 weights and its products with Q8_K rows; every
/// kernel ([`Isa`]) gives the bits of the scalar reference.
pub trait SuperBlock: std::fmt::Debug + Copy + Send + Sync {
    /// The type's name in GGUF.
    const NAME: &'static str;
    /// Its bytes in GGUF.
    const BYTES: usize;
    /// From its `BYTES` bytes.
    fn read(raw: &[u8]) -> Self;
    /// The reference: one row of weights against row `r` of a group.
    fn dot_scalar(w: &[Self], g: &Q8KGroup, r: usize) -> f32;
    /// [`Self::dot_scalar`] with AVX2 (reached only where the CPU has it).
    #[cfg(target_arch = "x86_64")]
    fn dot1_x86(w: &[Self], g: &Q8KGroup, r: usize) -> f32;
    /// One row of weights against `N` groups of up to eight rows with a
    /// vector kernel (`isa`: one [`Isa::available`] found).
    #[cfg(target_arch = "x86_64")]
    fn dot8_x86<const N: usize>(isa: Isa, w: &[Self], g: [&Q8KGroup; N]) -> [[f32; GROUP]; N];

    /// One row of weights against row `r` of a group with kernel `isa`.
    fn dot1(isa: Isa, w: &[Self], g: &Q8KGroup, r: usize) -> f32 {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512Vnni => Self::dot1_x86(w, g, r),
            _ => Self::dot_scalar(w, g, r),
        }
    }

    /// One row of weights against `N` groups with kernel `isa`.
    fn dot8<const N: usize>(isa: Isa, w: &[Self], g: [&Q8KGroup; N]) -> [[f32; GROUP]; N] {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512Vnni => Self::dot8_x86(isa, w, g),
            _ => g.map(|g| std::array::from_fn(|r| Self::dot_scalar(w, g, r))),
        }
    }
}

/// An `n × k` matrix of super-blocks `B` (one row per output).
#[derive(Debug, Clone)]
pub struct KMatrix<B> {
    n: usize,
    k: usize,
    blocks: Vec<B>,
}

impl<B: SuperBlock> KMatrix<B> {
    /// From GGUF's raw super-blocks, row-major, `n` rows of `k` values.
    pub fn from_blocks(n: usize, k: usize, raw: &[u8]) -> Result<Self, KQuantError> {
        let blocks =
            blocks_in(n, k, raw.len(), SUPER, B::BYTES).map_err(|e| KQuantError(B::NAME, e))?;
        let mut all = Vec::with_capacity(blocks);
        all.extend(raw.chunks_exact(B::BYTES).map(B::read));
        Ok(KMatrix { n, k, blocks: all })
    }

    fn row(&self, f: usize) -> &[B] {
        let per_row = self.k / SUPER;
        &self.blocks[f * per_row..(f + 1) * per_row]
    }
}

impl<B: SuperBlock> Product<Q8KGroup> for KMatrix<B> {
    fn rows(&self) -> usize {
        self.n
    }

    fn cols(&self) -> usize {
        self.k
    }

    fn row_bytes(&self) -> usize {
        self.k / SUPER * B::BYTES
    }

    fn feature(&self, isa: Isa, f: usize, g: &Q8KGroup, live: usize) -> [f32; GROUP] {
        let w = self.row(f);
        by_rows(live, |r| B::dot1(isa, w, g, r), || B::dot8(isa, w, [g])[0])
    }

    fn feature_pair(&self, isa: Isa, f: usize, a: &Q8KGroup, b: &Q8KGroup) -> [[f32; GROUP]; 2] {
        B::dot8(isa, self.row(f), [a, b])
    }
}
