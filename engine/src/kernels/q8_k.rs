//! Activations quantized as ggml's `quantize_row_q8_K` does, what its
//! k-quant kernels (Q4_K, Q6_K) multiply: super-blocks of 256 values, one
//! `f32` scale each, bytes in −127..=127, and the sum of every 16 bytes
//! (which the kernels need for the weights' offsets and minimums). Taking
//! llama.cpp's own activation quantization keeps our products within
//! rounding of its products on the same weights.

use super::{BLOCK, GROUP, Group, interleave};

/// Values per super-block.
pub const SUPER: usize = 256;
/// 32-value blocks per super-block.
pub(crate) const SUBS: usize = SUPER / BLOCK;
/// 16-value sums per super-block.
pub(crate) const SIXTEENS: usize = SUPER / 16;

/// Up to eight rows quantized to Q8_K, by super-block: the bytes of each
/// 32-value block row by row ([`Self::qs`]) and four by four across the
/// rows ([`Self::lanes`], as [`super::Q8_1Group::lanes`]), each row's
/// scale, and each row's sums of 16 bytes.
#[derive(Debug, Clone)]
pub struct Q8KGroup {
    /// Block `j` of super-block `b` at `SUBS · b + j`, row `r`: its bytes.
    pub(crate) qs: Vec<[[i8; BLOCK]; GROUP]>,
    /// The same bytes interleaved across the rows.
    pub(crate) lanes: Vec<[[i8; BLOCK]; GROUP]>,
    /// Super-block `b`, row `r`: its scale.
    pub(crate) d: Vec<[f32; GROUP]>,
    /// Super-block `b`, values `16h..16h + 16`, row `r`: their bytes' sum.
    pub(crate) sums: Vec<[[i32; GROUP]; SIXTEENS]>,
}

impl Group for Q8KGroup {
    fn zeros(k: usize) -> Self {
        let supers = k / SUPER;
        Q8KGroup {
            qs: vec![[[0; BLOCK]; GROUP]; supers * SUBS],
            lanes: Vec::new(),
            d: vec![[0.0; GROUP]; supers],
            sums: vec![[[0; GROUP]; SIXTEENS]; supers],
        }
    }

    type Row = Vec<([i8; SUPER], f32)>;

    fn quantize(row: &[f32]) -> Self::Row {
        row.chunks_exact(SUPER).map(quantize_super).collect()
    }

    fn put(&mut self, r: usize, row: Self::Row) {
        for (b, (q, d)) in row.into_iter().enumerate() {
            self.d[b][r] = d;
            for (j, bytes) in q.chunks_exact(BLOCK).enumerate() {
                for (to, from) in self.qs[SUBS * b + j][r].iter_mut().zip(bytes) {
                    *to = *from;
                }
            }
            for (h, sixteen) in q.chunks_exact(16).enumerate() {
                self.sums[b][h][r] = sixteen.iter().map(|v| i32::from(*v)).sum();
            }
        }
    }

    fn finish(&mut self) {
        self.lanes = interleave(&self.qs);
    }
}

/// `quantize_row_q8_K` on one super-block: the value of largest magnitude
/// `max` (the first such, sign kept) maps to −127, `q = round(x · −127 /
/// max)` (ties to even, as ggml's `nearest_int`), capped at 127, and the
/// scale is `1 / (−127 / max)`; all zeros when every value is zero.
fn quantize_super(xs: &[f32]) -> ([i8; SUPER], f32) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in xs {
        if v.abs() > amax {
            (amax, max) = (v.abs(), v);
        }
    }
    let mut q = [0i8; SUPER];
    if amax == 0.0 {
        return (q, 0.0);
    }
    let iscale = -127.0 / max;
    for (q, v) in q.iter_mut().zip(xs) {
        // In −127..=127 by construction; `as` saturates anything else
        // (a NaN becomes 0).
        *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
    }
    (q, 1.0 / iscale)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::kernels::Activations;

    #[test]
    fn super_blocks_are_quantized_as_ggml_does() {
        // The largest magnitude is negative: it maps to +127 (scale 1, so
        // every product below is exact).
        let mut xs = [0.25f32; SUPER];
        xs[3] = -127.0;
        xs[4] = 127.0; // as large, but not first: the sign of xs[3] wins
        (xs[5], xs[6], xs[7]) = (0.5, 1.5, 2.5); // ties to even
        let (q, d) = quantize_super(&xs);
        assert_eq!(d, 1.0);
        assert_eq!((q[3], q[4]), (-127, 127));
        assert_eq!((q[0], q[5], q[6], q[7]), (0, 0, 2, 2));
        let (q, d) = quantize_super(&xs.map(|v| v * -4.0));
        assert_eq!((d, q[3], q[7]), (-4.0, -127, 2));
        assert_eq!(quantize_super(&[0.0; SUPER]), ([0; SUPER], 0.0));
    }

    #[test]
    fn a_group_holds_each_rows_bytes_scales_and_sums() {
        let k = 2 * SUPER;
        let x: Vec<f32> = (0..3 * k)
            .map(|i| ((i * 7919) % 255) as f32 - 127.0)
            .collect();
        let a = Activations::<Q8KGroup>::quantize(&x, k);
        assert_eq!((a.rows, a.groups.len()), (3, 1));
        let g = &a.groups[0];
        for r in 0..3 {
            for b in 0..2 {
                let (q, d) = quantize_super(&x[r * k + b * SUPER..r * k + (b + 1) * SUPER]);
                assert_eq!(g.d[b][r], d);
                for j in 0..SUBS {
                    assert_eq!(g.qs[SUBS * b + j][r][..], q[BLOCK * j..BLOCK * (j + 1)]);
                }
                for h in 0..SIXTEENS {
                    let sum: i32 = q[16 * h..16 * h + 16].iter().map(|v| i32::from(*v)).sum();
                    assert_eq!(g.sums[b][h][r], sum);
                }
            }
        }
        // Lanes: chunk j of block 9 holds bytes 4j..4j+4 of rows 0..8.
        assert_eq!(g.lanes[9][2][4..8], g.qs[9][1][8..12]);
    }
}
