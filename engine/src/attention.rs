//! Attention over the paged K/V cache ([`super::kv_cache`]), one query row
//! and head at a time.
//!
//! Each (row, head) is computed alone, in a fixed order: scores in position
//! order, the softmax's sums from the first position to the last, and the
//! weighted values likewise. So a row's result depends only on its query
//! and its own sequence's keys and values — never on which other rows
//! share the pass, how a prompt was cut into chunks, or whether its prefix
//! came from the cache. That is what makes a batched answer exactly the
//! answer alone.

use super::kernels::dot_f32;
use super::kv_cache::{BLOCK_TOKENS, BlockId, KvStore};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the attention of one layer computes.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Scores are multiplied by this (1/√d of the model's attention size).
    pub scale: f32,
    /// `cap · tanh(score / cap)` (Gemma 2).
    pub softcap: Option<f32>,
    /// A sliding-window layer sees only this many latest positions.
    pub window: Option<usize>,
}

/// One query row: its sequence's block table and its position (it sees
/// positions up to and including its own).
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub blocks: &'a [BlockId],
    pub pos: usize,
}

/// The attention output of every row (`rows × heads·head_dim`), from the
/// queries `q` (same shape) and `layer`'s keys and values in `store`, which
/// already hold every row's own position. `None` when the shapes disagree
/// or a row's block table does not cover its position (a bug, reported,
/// never read out of bounds).
pub fn attend(
    store: &KvStore,
    layer: usize,
    shape: &Shape,
    q: &[f32],
    rows: &[Row<'_>],
) -> Option<Vec<f32>> {
    let hd = shape.head_dim;
    let width = shape.heads * hd;
    if q.len() != rows.len() * width
        || shape.kv_heads == 0
        || hd == 0
        || !shape.heads.is_multiple_of(shape.kv_heads)
        || shape.kv_heads * hd != store.width()
    {
        return None;
    }
    let group = shape.heads / shape.kv_heads;
    let mut out = vec![0f32; q.len()];
    let slots: Vec<Mutex<&mut [f32]>> = out.chunks_mut(hd).map(Mutex::new).collect();
    let failed = AtomicBool::new(false);
    let items = rows.len() * shape.heads;
    candle_core::utils::barrier_pool().execute_chunked(items, |range| {
        let (mut scores, mut blocks) = (Vec::new(), Vec::new());
        for item in range {
            let (r, h) = (item / shape.heads, item % shape.heads);
            let (Some(row), Some(slot)) = (rows.get(r), slots.get(item)) else {
                failed.store(true, Ordering::Relaxed);
                return;
            };
            let query = &q[item * hd..(item + 1) * hd];
            let Ok(mut dst) = slot.lock() else {
                failed.store(true, Ordering::Relaxed);
                return;
            };
            let kv = (h / group) * hd;
            let scratch = (&mut scores, &mut blocks);
            if one(store, layer, shape, row, query, kv, scratch, &mut dst).is_none() {
                failed.store(true, Ordering::Relaxed);
            }
        }
    });
    drop(slots);
    (!failed.load(Ordering::Relaxed)).then_some(out)
}

/// One block's key and value rows of one layer.
type LayerBlock<'s> = (&'s [f32], &'s [f32]);

/// One row and head: `dst = softmax(q·K / √d) · V` over the positions it
/// sees; `kv` is the offset of its KV head within a key row (in bounds:
/// [`attend`] checked the shapes). `scratch`: the scores and the row's
/// blocks, reused from item to item.
#[allow(clippy::too_many_arguments)]
fn one<'s>(
    store: &'s KvStore,
    layer: usize,
    shape: &Shape,
    row: &Row<'_>,
    query: &[f32],
    kv: usize,
    (scores, blocks): (&mut Vec<f32>, &mut Vec<LayerBlock<'s>>),
    dst: &mut [f32],
) -> Option<()> {
    let hd = shape.head_dim;
    let first = match shape.window {
        Some(w) => (row.pos + 1).saturating_sub(w),
        None => 0,
    };
    // Each block's rows of this layer, fetched once; then position `p` is
    // at slot `p % BLOCK_TOKENS` of block `p / BLOCK_TOKENS`.
    let width = store.width();
    blocks.clear();
    for b in first / BLOCK_TOKENS..=row.pos / BLOCK_TOKENS {
        blocks.push(store.layer_block(*row.blocks.get(b)?, layer)?);
    }
    let base = first / BLOCK_TOKENS;
    // The positions it sees, block by block: (block, first slot, end slot).
    let spans = blocks.iter().enumerate().map(|(i, &(k, v))| {
        let start = (base + i) * BLOCK_TOKENS;
        let lo = first.max(start) - start;
        let hi = (row.pos + 1).min(start + BLOCK_TOKENS) - start;
        (k, v, lo..hi)
    });
    let slot = |rows: &'s [f32], s: usize| rows.get(s * width + kv..s * width + kv + hd);
    scores.clear();
    let mut max = f32::NEG_INFINITY;
    for (k, _, slots) in spans.clone() {
        for s in slots {
            let mut score = dot_f32(query, slot(k, s)?) * shape.scale;
            if let Some(cap) = shape.softcap {
                score = (score / cap).tanh() * cap;
            }
            max = max.max(score);
            scores.push(score);
        }
    }
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    for s in scores.iter_mut() {
        *s /= sum;
    }
    // `dst[d] = Σ_p w_p · v_p[d]`, each element summed in position order;
    // a chunk of the head at a time, so that its sums stay in registers
    // across the positions (rather than loaded and stored at each).
    for (c, out) in dst.chunks_mut(CHUNK).enumerate() {
        let mut acc = [0f32; CHUNK];
        let mut weights = scores.iter();
        for (_, v, slots) in spans.clone() {
            for s in slots {
                let (Some(w), Some(values)) = (weights.next(), slot(v, s)) else {
                    return None;
                };
                let values = values.get(c * CHUNK..c * CHUNK + out.len())?;
                weigh_into(&mut acc, *w, values);
            }
        }
        out.copy_from_slice(acc.get(..out.len())?);
    }
    Some(())
}

/// Values of a head summed a chunk at a time (eight registers of eight).
const CHUNK: usize = 64;

/// `acc[i] += w · values[i]` (a whole chunk's loop unrolled into vector
/// registers when `values` is one).
#[inline(always)]
fn weigh_into(acc: &mut [f32; CHUNK], w: f32, values: &[f32]) {
    if let Ok(values) = <&[f32; CHUNK]>::try_from(values) {
        for (a, x) in acc.iter_mut().zip(values) {
            *a += w * x;
        }
    } else {
        for (a, x) in acc.iter_mut().zip(values) {
            *a += w * x;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Softmax attention written out plainly, in f64.
    fn reference(q: &[f32], keys: &[Vec<f32>], values: &[Vec<f32>], scale: f32) -> Vec<f32> {
        let s: Vec<f64> = keys
            .iter()
            .map(|k| q.iter().zip(k).map(|(a, b)| f64::from(a * b)).sum::<f64>() * f64::from(scale))
            .collect();
        let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        (0..q.len())
            .map(|d| {
                (e.iter()
                    .zip(values)
                    .map(|(w, v)| w * f64::from(v[d]))
                    .sum::<f64>()
                    / sum) as f32
            })
            .collect()
    }

    #[test]
    fn attention_matches_the_formula_across_blocks_heads_and_windows() {
        let (heads, kv_heads, hd, len) = (4, 2, 8, 40);
        let width = kv_heads * hd;
        let mut store = KvStore::new(1, width);
        let blocks = [2u32, 0, 5];
        let val = |p: usize, i: usize, salt: f32| ((p * 31 + i * 7) as f32 * 0.37 + salt).sin();
        let mut keys = vec![];
        let mut values = vec![];
        for &b in &blocks {
            store.ensure(b).unwrap();
        }
        for p in 0..len {
            let k: Vec<f32> = (0..width).map(|i| val(p, i, 0.1)).collect();
            let v: Vec<f32> = (0..width).map(|i| val(p, i, 0.9)).collect();
            store
                .write(blocks[p / BLOCK_TOKENS], 0, p % BLOCK_TOKENS, &k, &v)
                .unwrap();
            keys.push(k);
            values.push(v);
        }
        let q: Vec<f32> = (0..2 * heads * hd)
            .map(|i| (i as f32 * 0.11).cos())
            .collect();
        for window in [None, Some(5)] {
            let shape = Shape {
                heads,
                kv_heads,
                head_dim: hd,
                scale: 0.35,
                softcap: None,
                window,
            };
            let rows = [
                Row {
                    blocks: &blocks,
                    pos: 17,
                },
                Row {
                    blocks: &blocks,
                    pos: 39,
                },
            ];
            let out = attend(&store, 0, &shape, &q, &rows).unwrap();
            for (r, row) in rows.iter().enumerate() {
                let first = window.map_or(0, |w| row.pos + 1 - w);
                for h in 0..heads {
                    let g = (h / 2) * hd;
                    let ks: Vec<Vec<f32>> = keys[first..=row.pos]
                        .iter()
                        .map(|k| k[g..g + hd].to_vec())
                        .collect();
                    let vs: Vec<Vec<f32>> = values[first..=row.pos]
                        .iter()
                        .map(|v| v[g..g + hd].to_vec())
                        .collect();
                    let at = (r * heads + h) * hd;
                    let want = reference(&q[at..at + hd], &ks, &vs, 0.35);
                    for (a, b) in out[at..at + hd].iter().zip(&want) {
                        assert!((a - b).abs() < 1e-5, "row {r} head {h}: {a} vs {b}");
                    }
                }
            }
            // A row alone gets the very same bits as beside another.
            let alone = attend(&store, 0, &shape, &q[heads * hd..], &rows[1..]).unwrap();
            assert_eq!(alone, out[heads * hd..].to_vec());
        }
        // A table that does not reach the row's position is refused.
        let short = [Row {
            blocks: &blocks[..1],
            pos: 20,
        }];
        let shape = Shape {
            heads,
            kv_heads,
            head_dim: hd,
            scale: 1.0,
            softcap: None,
            window: None,
        };
        assert!(attend(&store, 0, &shape, &q[..heads * hd], &short).is_none());
        // So are shapes that disagree with the store (KV heads × head size
        // is its row width) or heads that do not share KV heads evenly.
        let rows = [Row {
            blocks: &blocks,
            pos: 5,
        }];
        for (h, kvh) in [(4, 1), (3, 2)] {
            let bad = Shape {
                heads: h,
                kv_heads: kvh,
                ..shape
            };
            assert!(attend(&store, 0, &bad, &q[..h * hd], &rows).is_none());
        }
    }
}
