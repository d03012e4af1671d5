//! The operations between a pass's matrix products, on plain rows of `f32`
//! (`rows × width`, row-major): norms, rotary embeddings, activations and
//! residual sums.
//!
//! Each is candle's own arithmetic, operation for operation (tested bit for
//! bit against candle's ops), so answers are unchanged; what is gone is
//! what candle did around them on a decode step — a tensor allocated per
//! operation, layout checks, transposed copies for the rotary kernel, and
//! calls into two thread pools (its rotary and norm kernels use rayon
//! beside the pool the products run on) for work of a few microseconds.
//! Every operation works on each row alone; many rows (a prompt chunk) go
//! in parallel on the products' pool.

use super::arch::{Activation, RopeStyle};
use std::sync::Mutex;

/// Fewer rows than this go on the calling thread: below it, waking the pool
/// costs more than the work.
const PARALLEL_ROWS: usize = 16;

/// `f(r, row)` for every row `r` of `data` (rows of `width`), in parallel
/// when there are many.
pub fn each_row(data: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if width == 0 {
        return;
    }
    let rows = data.chunks_exact_mut(width).enumerate();
    if rows.len() < PARALLEL_ROWS {
        rows.for_each(|(r, row)| f(r, row));
    } else {
        on_pool(rows.collect(), f);
    }
}

/// `f(i, part)` for every `(i, part)` of `parts`, the parts taken by the
/// pool's threads as they come free.
fn on_pool(parts: Vec<(usize, &mut [f32])>, f: impl Fn(usize, &mut [f32]) + Sync) {
    let slots: Vec<Mutex<(usize, &mut [f32])>> = parts.into_iter().map(Mutex::new).collect();
    candle_core::utils::barrier_pool().execute_chunked(slots.len(), |range| {
        for i in range {
            if let Some(Ok(mut slot)) = slots.get(i).map(Mutex::lock) {
                let (index, part) = &mut *slot;
                f(*index, part);
            }
        }
    });
}

/// RMS norm of each row of `x` (rows of `alpha.len()`), times `alpha`:
/// `x / √(Σx²/n + ε) · α`, the sum in element order (candle's `rms_norm`).
pub fn rms_norm(x: &[f32], alpha: &[f32], eps: f32) -> Vec<f32> {
    let mut out = x.to_vec();
    rms_norm_in_place(&mut out, alpha, eps);
    out
}

/// [`rms_norm`] over `x` itself.
pub fn rms_norm_in_place(x: &mut [f32], alpha: &[f32], eps: f32) {
    each_row(x, alpha.len(), |_, row| norm_row(row, alpha, eps));
}

fn norm_row(row: &mut [f32], alpha: &[f32], eps: f32) {
    let sum2: f32 = row.iter().map(|v| v * v).sum();
    let m = (sum2 / row.len() as f32 + eps).sqrt();
    for (v, a) in row.iter_mut().zip(alpha) {
        *v = *v / m * a;
    }
}

/// `x += y`, element by element.
pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// `f(offset, part)` for parts of `x` that together are all of it (`offset`:
/// where `part` starts), one per pool thread when `x` has at least `min`
/// values: for element-wise work, whose results do not depend on the split.
fn each_part(x: &mut [f32], min: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if x.len() < min {
        f(0, x);
        return;
    }
    let size = x.len().div_ceil(super::kernels::pool_threads());
    on_pool(
        x.chunks_mut(size)
            .enumerate()
            .map(|(i, part)| (i * size, part))
            .collect(),
        f,
    );
}

/// The MLP's activation of `gate`, times `up`: `act(g) · u` element by
/// element, into `gate` (on the pool from a few thousand values: GELU's
/// `tanh` costs ~20 ns a value, and on one thread it was a quarter of a
/// Gemma 3 prompt pass).
pub fn gated(gate: &mut [f32], up: &[f32], act: Activation) {
    let (f, min): (fn(f32) -> f32, usize) = match act {
        Activation::Silu => (silu, 4096),
        Activation::GeluTanh => (gelu_tanh, 1024),
    };
    each_part(gate, min, |offset, part| {
        for (g, u) in part.iter_mut().zip(&up[offset.min(up.len())..]) {
            *g = f(*g) * u;
        }
    });
}

fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

/// GELU, tanh approximation (candle's `gelu`).
fn gelu_tanh(v: f32) -> f32 {
    const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
    0.5 * v * (1.0 + (SQRT_TWO_OVER_PI * v * (1.0 + 0.044_715 * v * v)).tanh())
}

/// `cap · tanh(x / cap)` element by element, as candle computes it (the
/// division a multiplication by `1/cap`); on the pool from a thousand
/// values (Gemma 2 caps a quarter million logits a token).
pub fn softcap(x: &mut [f32], cap: f32) {
    let inverse = (1.0 / f64::from(cap)) as f32;
    each_part(x, 1024, |_, part| {
        for v in part.iter_mut() {
            *v = (*v * inverse).tanh() * cap;
        }
    });
}

/// The rotary embedding of every head of every row of `x` (rows of `heads ×
/// head_dim`), row `r` by the angles whose cosines and sines are row `r` of
/// `cos` and `sin` (`head_dim / 2` each). `None`, and `x` untouched, when
/// the tables and the rows disagree in shape.
pub fn rope(
    x: &mut [f32],
    head_dim: usize,
    style: RopeStyle,
    cos: &[f32],
    sin: &[f32],
) -> Option<()> {
    let half = head_dim / 2;
    let rows = cos.len().checked_div(half)?;
    let width = x.len().checked_div(rows)?;
    if cos.len() != sin.len()
        || rows * half != cos.len()
        || rows * width != x.len()
        || !width.is_multiple_of(head_dim)
    {
        return None;
    }
    each_row(x, width, |r, row| {
        let (c, s) = (&cos[r * half..][..half], &sin[r * half..][..half]);
        for head in row.chunks_exact_mut(head_dim) {
            match style {
                RopeStyle::Interleaved => {
                    for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                        let (a, b) = (pair[0], pair[1]);
                        pair[0] = a * c[i] - b * s[i];
                        pair[1] = a * s[i] + b * c[i];
                    }
                }
                RopeStyle::Halves => {
                    let (lo, hi) = head.split_at_mut(half);
                    for (i, (a, b)) in lo.iter_mut().zip(hi.iter_mut()).enumerate() {
                        let (x1, x2) = (*a, *b);
                        *a = x1 * c[i] - x2 * s[i];
                        *b = x1 * s[i] + x2 * c[i];
                    }
                }
            }
        }
    });
    Some(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn values(n: usize, salt: f32) -> Vec<f32> {
        (0..n)
            .map(|i| (i as f32 * 0.731 + salt).sin() * 3.0)
            .collect()
    }

    /// A tensor's values, row-major.
    fn flat(t: Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Norms, activations and soft caps give candle's bits, for few rows
    /// (on this thread) and many (on the pool).
    #[test]
    fn row_operations_are_candles_bit_for_bit() {
        let dev = Device::Cpu;
        // 90 rows: past every threshold of the pool.
        for rows in [1, 5, 40, 90] {
            let width = 96;
            let x = values(rows * width, 0.3);
            let alpha = values(width, 1.7);
            let t = Tensor::from_vec(x.clone(), (rows, width), &dev).unwrap();
            let a = Tensor::from_vec(alpha.clone(), width, &dev).unwrap();
            let want = flat(candle_nn::ops::rms_norm(&t, &a, 1e-5).unwrap());
            assert_eq!(
                bits(&rms_norm(&x, &alpha, 1e-5)),
                bits(&want),
                "{rows} rows"
            );

            let up = values(rows * width, 2.9);
            let u = Tensor::from_vec(up.clone(), (rows, width), &dev).unwrap();
            for (act, theirs) in [
                (Activation::Silu, candle_nn::ops::silu(&t).unwrap()),
                (Activation::GeluTanh, t.gelu().unwrap()),
            ] {
                let want = flat((theirs * &u).unwrap());
                let mut got = x.clone();
                gated(&mut got, &up, act);
                assert_eq!(bits(&got), bits(&want), "{act:?}");
            }

            let want = flat(((&t / 30.0).unwrap().tanh().unwrap() * 30.0).unwrap());
            let mut got = x.clone();
            softcap(&mut got, 30.0);
            assert_eq!(bits(&got), bits(&want));
        }
    }

    /// Both rotary styles give candle's kernels' bits (candle's take
    /// heads-major tensors; ours rows as they come from the products).
    #[test]
    fn rotary_embeddings_are_candles_bit_for_bit() {
        let dev = Device::Cpu;
        let (rows, heads, hd) = (20, 3, 16);
        let x = values(rows * heads * hd, 0.9);
        let cos = values(rows * hd / 2, 0.1);
        let sin = values(rows * hd / 2, 0.2);
        let (c, s) = (
            Tensor::from_vec(cos.clone(), (rows, hd / 2), &dev).unwrap(),
            Tensor::from_vec(sin.clone(), (rows, hd / 2), &dev).unwrap(),
        );
        let t = Tensor::from_vec(x.clone(), (rows, heads, hd), &dev)
            .unwrap()
            .transpose(0, 1)
            .unwrap()
            .unsqueeze(0)
            .unwrap()
            .contiguous()
            .unwrap();
        for style in [RopeStyle::Interleaved, RopeStyle::Halves] {
            let theirs = match style {
                RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&t, &c, &s).unwrap(),
                RopeStyle::Halves => candle_nn::rotary_emb::rope(&t, &c, &s).unwrap(),
            };
            let want = flat(theirs.squeeze(0).unwrap().transpose(0, 1).unwrap());
            let mut got = x.clone();
            assert!(rope(&mut got, hd, style, &cos, &sin).is_some());
            assert_eq!(bits(&got), bits(&want), "{style:?}");
        }
        // Tables that do not match the rows are refused, the rows untouched.
        for (rows_in_x, table) in [(rows - 1, cos.len()), (rows, cos.len() - 1)] {
            let mut got = x[..rows_in_x * heads * hd].to_vec();
            let before = got.clone();
            let style = RopeStyle::Halves;
            assert!(rope(&mut got, hd, style, &cos[..table], &sin[..table]).is_none());
            assert_eq!(got, before);
        }
    }
}
