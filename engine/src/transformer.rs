//! The decoder-only transformer forward pass, one for every architecture
//! in [`super::arch`].
//!
//! For llama it is candle's `quantized_llama` computation, with its
//! arithmetic for norms, rotary embeddings and the MLP done on plain rows
//! ([`super::rows`], bit for bit candle's), the matrix products by our own
//! kernels where the weight type has one and by candle's otherwise
//! ([`super::linear`]), and attention our own over the paged K/V cache
//! ([`super::attention`]). Gemma 3 adds what llama.cpp's graph for it adds:
//! scaled embeddings, q/k norms, norms after attention and MLP, GELU, and
//! sliding-window layers with their own rotary base. Rotary angles are
//! computed for the positions in each pass, so the context is the model's
//! trained one.
//!
//! One pass takes the tokens of many sequences at once (a batch of
//! decoding sequences and chunks of prompts), as one matrix of rows: every
//! weight is read once per pass for all of them, and every operation works
//! on each row alone, so a row's result never depends on its neighbours.

use super::arch::{Arch, Config};
use super::attention::{Row, Shape, attend};
use super::kv_cache::{BLOCK_TOKENS, BlockId, KvStore};
use super::linear::{Linear, forward_all, split_rows};
use super::rows;
use candle_core::quantized::{QTensor, gguf_file};
use candle_core::{Device, Result, Tensor};
use std::io::{Read, Seek};

/// The q, k and v projections: three matrices, or one whose rows are q's,
/// then k's, then v's (Phi-3).
enum Qkv {
    Separate([Linear; 3]),
    Fused(Linear),
}

struct Layer {
    qkv: Qkv,
    wo: Linear,
    attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    /// q and k norms (Gemma 3, Qwen3).
    qk_norms: Option<(Vec<f32>, Vec<f32>)>,
    /// q, k and v biases (Qwen2).
    qkv_biases: Option<[Vec<f32>; 3]>,
    /// Norms of the attention and MLP outputs (Gemma 3).
    post_norms: Option<(Vec<f32>, Vec<f32>)>,
    /// `None`: `up` computes gate and up, in its first and second halves
    /// (Phi-3).
    gate: Option<Linear>,
    down: Linear,
    up: Linear,
    /// A sliding-window layer (Gemma's local attention).
    sliding: bool,
    /// Which rotary base (0 global, 1 local).
    rope: usize,
}

/// θ_i = base^(-2i/dim) of one rotary base (`dim/2` of them).
struct Rope {
    theta: Vec<f32>,
}

impl Rope {
    /// With `factors` (Llama 3.1's `rope_freqs.weight`), θ_i is divided by
    /// factor i, as llama.cpp's rotary embedding does.
    fn new(dim: usize, base: f32, factors: Option<&[f32]>) -> Result<Self> {
        if let Some(f) = factors
            && f.len() != dim / 2
        {
            return Err(candle_core::Error::Msg(format!(
                "rope_freqs.weight has {} factors for {} rotary pairs",
                f.len(),
                dim / 2
            )));
        }
        let theta: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| {
                let t = 1f32 / base.powf(i as f32 / dim as f32);
                match factors {
                    Some(f) => t / f[i / 2],
                    None => t,
                }
            })
            .collect();
        Ok(Rope { theta })
    }

    /// cos and sin of `position × scale × θ_i` for each of `positions`
    /// (rows of `dim/2`), each multiplied by `mscale` (LongRoPE's attention
    /// factor): candle's arithmetic for the tables, bit for bit.
    fn tables(&self, positions: &[u32], scale: f32, mscale: f32) -> (Vec<f32>, Vec<f32>) {
        let size = positions.len() * self.theta.len();
        let (mut cos, mut sin) = (Vec::with_capacity(size), Vec::with_capacity(size));
        for &p in positions {
            let p = p as f32 * scale;
            for t in &self.theta {
                let angle = p * t;
                cos.push(angle.cos() * mscale);
                sin.push(angle.sin() * mscale);
            }
        }
        (cos, sin)
    }
}

/// A decoder-only transformer.
pub struct Transformer {
    config: Config,
    embeddings: Tensor,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    output: Linear,
    ropes: Vec<Rope>,
    /// LongRoPE's short and long factors (Phi-3 128k): which apply depends
    /// on the context served ([`Self::serve_context`]).
    long_rope: Option<[Vec<f32>; 2]>,
}

impl std::fmt::Debug for Transformer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transformer")
            .field("arch", &self.config.arch)
            .field("layers", &self.layers.len())
            .field("hidden", &self.config.hidden)
            .field("heads", &self.config.heads)
            .field("kv_heads", &self.config.kv_heads)
            .finish_non_exhaustive()
    }
}

impl Transformer {
    pub fn from_gguf<R: Read + Seek>(
        config: Config,
        content: &gguf_file::Content,
        reader: &mut R,
        device: &Device,
    ) -> Result<Self> {
        // Every tensor read is recorded: one the pass does not read would be
        // a part of the model silently left out, so it is refused below.
        let mut read = std::collections::HashSet::new();
        let mut tensor = |name: &str| {
            read.insert(name.to_string());
            content.tensor(reader, name, device)
        };
        // Llama 3.1+ scales its rotary frequencies by a tensor, not a key.
        let factors = match content.tensor_infos.contains_key("rope_freqs.weight") {
            true => Some(
                tensor("rope_freqs.weight")?
                    .dequantize(device)?
                    .to_vec1::<f32>()?,
            ),
            false => None,
        };
        // Phi-3 128k's LongRoPE: short factors up to the original context,
        // long ones beyond (llama.cpp's choice, by the context served).
        let long_rope = match (
            content
                .tensor_infos
                .contains_key("rope_factors_short.weight"),
            content
                .tensor_infos
                .contains_key("rope_factors_long.weight"),
        ) {
            (false, false) => None,
            (true, true) => {
                let mut read = |name: &str| tensor(name)?.dequantize(device)?.to_vec1::<f32>();
                Some([
                    read("rope_factors_short.weight")?,
                    read("rope_factors_long.weight")?,
                ])
            }
            _ => {
                return Err(candle_core::Error::Msg(
                    "rope_factors_short.weight and rope_factors_long.weight come together".into(),
                ));
            }
        };
        if factors.is_some() && long_rope.is_some() {
            return Err(candle_core::Error::Msg(
                "rope_freqs.weight beside LongRoPE factors".into(),
            ));
        }
        // With LongRoPE, the global table is set by `serve_context` below.
        let mut ropes = vec![Rope::new(
            config.rope_dim,
            config.rope_base,
            factors.as_deref(),
        )?];
        if let Some(s) = &config.sliding {
            ropes.push(Rope::new(config.rope_dim, s.rope_base, None)?);
        }
        let embeddings_q = tensor("token_embd.weight")?;
        let embeddings = embeddings_q.dequantize(device)?;
        if embeddings.dims2()?.1 != config.hidden {
            return Err(candle_core::Error::Msg(format!(
                "token_embd.weight: rows of {} values where {} are needed",
                embeddings.dims2()?.1,
                config.hidden
            )));
        }
        // A vector the pass reads (a norm's weights, a bias), of the length
        // it must have: checked here, as the pass's rows take it for their
        // width.
        let vector = |name: &str, q: QTensor, len: usize| -> Result<Vec<f32>> {
            let v = q.dequantize(device)?.flatten_all()?.to_vec1::<f32>()?;
            if v.len() != len {
                return Err(candle_core::Error::Msg(format!(
                    "{name}: {} values where {len} are needed",
                    v.len()
                )));
            }
            Ok(v)
        };
        let (hidden, head_dim) = (config.hidden, config.head_dim);
        let (q_width, kv_width) = (config.heads * head_dim, config.kv_heads * head_dim);
        let norm = vector("output_norm.weight", tensor("output_norm.weight")?, hidden)?;
        let output = match tensor("output.weight") {
            Ok(t) => Linear::new(t)?,
            Err(_) => Linear::new(embeddings_q)?,
        };
        if output.k != config.hidden {
            return Err(candle_core::Error::Msg(format!(
                "the output matrix takes {} values where {} are needed",
                output.k, config.hidden
            )));
        }
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let mut t = |what: &str| tensor(&format!("blk.{i}.{what}"));
            let mut vector =
                |what: &str, len: usize| vector(&format!("blk.{i}.{what}"), t(what)?, len);
            let qk_norms = if config.qk_norm {
                Some((
                    vector("attn_q_norm.weight", head_dim)?,
                    vector("attn_k_norm.weight", head_dim)?,
                ))
            } else {
                None
            };
            let qkv_biases = if config.qkv_bias {
                Some([
                    vector("attn_q.bias", q_width)?,
                    vector("attn_k.bias", kv_width)?,
                    vector("attn_v.bias", kv_width)?,
                ])
            } else {
                None
            };
            let post_norms = if config.post_norms {
                Some((
                    vector("post_attention_norm.weight", hidden)?,
                    vector("post_ffw_norm.weight", hidden)?,
                ))
            } else {
                None
            };
            let attn_norm = vector("attn_norm.weight", hidden)?;
            let ffn_norm = vector("ffn_norm.weight", hidden)?;
            let sliding = config.sliding.as_ref().filter(|s| s.applies_to(i));
            // Each matrix of the shape the pass multiplies by (outputs ×
            // inputs; `None`: any), or a clear error naming it.
            let mut linear = |what: &str, n: Option<usize>, k: Option<usize>| -> Result<Linear> {
                let l = Linear::new(t(what)?)?;
                if n.is_some_and(|n| n != l.n) || k.is_some_and(|k| k != l.k) {
                    let dim = |d: Option<usize>| d.map_or("any".to_string(), |d| d.to_string());
                    return Err(candle_core::Error::Msg(format!(
                        "blk.{i}.{what}: {} × {} where {} × {} is needed",
                        l.n,
                        l.k,
                        dim(n),
                        dim(k)
                    )));
                }
                Ok(l)
            };
            let qkv = if content
                .tensor_infos
                .contains_key(&format!("blk.{i}.attn_qkv.weight"))
            {
                let n = q_width + 2 * kv_width;
                Qkv::Fused(linear("attn_qkv.weight", Some(n), Some(hidden))?)
            } else {
                Qkv::Separate([
                    linear("attn_q.weight", Some(q_width), Some(hidden))?,
                    linear("attn_k.weight", Some(kv_width), Some(hidden))?,
                    linear("attn_v.weight", Some(kv_width), Some(hidden))?,
                ])
            };
            let wo = linear("attn_output.weight", Some(hidden), Some(q_width))?;
            let down = linear("ffn_down.weight", Some(hidden), None)?;
            let ff = down.k;
            // Phi-3 computes gate and up in one matrix, and has no gate.
            let (gate, up) = match config.arch {
                Arch::Phi3 => (None, linear("ffn_up.weight", Some(2 * ff), Some(hidden))?),
                _ => (
                    Some(linear("ffn_gate.weight", Some(ff), Some(hidden))?),
                    linear("ffn_up.weight", Some(ff), Some(hidden))?,
                ),
            };
            layers.push(Layer {
                qkv,
                wo,
                attn_norm,
                ffn_norm,
                qk_norms,
                qkv_biases,
                post_norms,
                gate,
                down,
                up,
                sliding: sliding.is_some(),
                rope: usize::from(sliding.is_some()),
            });
        }
        let mut unused: Vec<&String> = content
            .tensor_infos
            .keys()
            .filter(|n| !read.contains(n.as_str()))
            .collect();
        if !unused.is_empty() {
            unused.sort();
            return Err(candle_core::Error::Msg(format!(
                "{} tensor(s) this {} forward pass does not use, e.g. {:?}: refusing rather than leaving part of the model out",
                unused.len(),
                config.arch.name(),
                unused.iter().take(3).collect::<Vec<_>>()
            )));
        }
        let context = config.context;
        let mut transformer = Transformer {
            config,
            embeddings,
            layers,
            norm,
            output,
            ropes,
            long_rope,
        };
        transformer.serve_context(context)?;
        Ok(transformer)
    }

    /// Serves at most `context` tokens: with LongRoPE, the factors that
    /// apply to that context (short ones within the original context).
    pub fn serve_context(&mut self, context: usize) -> Result<()> {
        if let Some([short, long]) = &self.long_rope {
            let c = &self.config;
            let factors = if context > c.rope_original_context {
                long
            } else {
                short
            };
            self.ropes[0] = Rope::new(c.rope_dim, c.rope_base, Some(factors))?;
        }
        Ok(())
    }

    /// Runs one pass over `feeds` (each a run of one sequence's tokens)
    /// with their keys and values in `store`, and returns the logits after
    /// the last token of each feed that asks for them, in order.
    ///
    /// Every operation works on each token's row alone (norms, products,
    /// rotary embeddings, [`attend`]), so a feed's results are the same bits
    /// whatever else is in the pass.
    pub fn forward_batch(&self, feeds: &[Feed<'_>], store: &mut KvStore) -> Result<Vec<Vec<f32>>> {
        let c = &self.config;
        let mut ids = Vec::new();
        let mut rows = Vec::new();
        for f in feeds {
            let end = f.pos + f.tokens.len();
            if f.tokens.is_empty() || f.blocks.len() * BLOCK_TOKENS < end {
                return Err(candle_core::Error::Msg(format!(
                    "a feed of {} token(s) at {} with {} block(s)",
                    f.tokens.len(),
                    f.pos,
                    f.blocks.len()
                )));
            }
            for b in &f.blocks[f.pos / BLOCK_TOKENS..end.div_ceil(BLOCK_TOKENS)] {
                store
                    .ensure(*b)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            }
            ids.extend_from_slice(f.tokens);
            rows.extend((f.pos..end).map(|pos| Row {
                blocks: f.blocks,
                pos,
            }));
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let positions: Vec<u32> = rows.iter().map(|r| r.pos as u32).collect();
        let tables: Vec<(Vec<f32>, Vec<f32>)> = self
            .ropes
            .iter()
            .map(|r| r.tables(&positions, c.rope_scale, c.rope_attn_factor))
            .collect();
        let ids = Tensor::new(ids.as_slice(), self.embeddings.device())?;
        let mut x = self
            .embeddings
            .index_select(&ids, 0)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        if c.scale_embeddings {
            let scale = (c.hidden as f64).sqrt() as f32;
            x.iter_mut().for_each(|v| *v *= scale);
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let (cos, sin) = &tables[layer.rope];
            let normed = rows::rms_norm(&x, &layer.attn_norm, c.eps);
            let mut x1 = self.attention(i, &normed, cos, sin, &rows, store)?;
            if let Some((after_attn, _)) = &layer.post_norms {
                rows::rms_norm_in_place(&mut x1, after_attn, c.eps);
            }
            rows::add_in_place(&mut x1, &x);
            let normed = rows::rms_norm(&x1, &layer.ffn_norm, c.eps);
            let (mut gate, up) = match &layer.gate {
                Some(g) => {
                    let [gate, up] = forward_all([g, &layer.up], &normed)?;
                    (gate, up)
                }
                None => {
                    let [both] = forward_all([&layer.up], &normed)?;
                    let half = layer.up.n / 2;
                    let [gate, up] = split_rows(&both, [half, half]);
                    (gate, up)
                }
            };
            rows::gated(&mut gate, &up, c.activation);
            let [mut mlp] = forward_all([&layer.down], &gate)?;
            if let Some((_, after_mlp)) = &layer.post_norms {
                rows::rms_norm_in_place(&mut mlp, after_mlp, c.eps);
            }
            rows::add_in_place(&mut mlp, &x1);
            x = mlp;
        }
        // Only the rows whose logits are asked for go through the output.
        let mut last = Vec::new();
        let mut end = 0;
        for f in feeds {
            end += f.tokens.len();
            if f.logits {
                last.extend_from_slice(&x[(end - 1) * c.hidden..end * c.hidden]);
            }
        }
        if last.is_empty() {
            return Ok(Vec::new());
        }
        rows::rms_norm_in_place(&mut last, &self.norm, c.eps);
        let [mut logits] = forward_all([&self.output], &last)?;
        if let Some(cap) = c.final_softcap {
            rows::softcap(&mut logits, cap);
        }
        Ok(logits
            .chunks_exact(self.output.n)
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// The attention block of layer `i` for the rows `x` (already normed):
    /// projections, rotary embeddings, the rows' keys and values into the
    /// cache, attention, and the output projection.
    fn attention(
        &self,
        i: usize,
        x: &[f32],
        cos: &[f32],
        sin: &[f32],
        rows: &[Row<'_>],
        store: &mut KvStore,
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        let (heads, kv_heads, head_dim) = (c.heads, c.kv_heads, c.head_dim);
        let (q_width, kv_width) = (heads * head_dim, kv_heads * head_dim);
        let layer = &self.layers[i];
        let [mut q, mut k, mut v] = match &layer.qkv {
            Qkv::Separate([wq, wk, wv]) => forward_all([wq, wk, wv], x)?,
            Qkv::Fused(w) => {
                let [all] = forward_all([w], x)?;
                split_rows(&all, [q_width, kv_width, kv_width])
            }
        };
        if let Some(biases) = &layer.qkv_biases {
            for (t, b) in [&mut q, &mut k, &mut v].into_iter().zip(biases) {
                rows::each_row(t, b.len(), |_, row| rows::add_in_place(row, b));
            }
        }
        if let Some((qn, kn)) = &layer.qk_norms {
            rows::rms_norm_in_place(&mut q, qn, c.eps);
            rows::rms_norm_in_place(&mut k, kn, c.eps);
        }
        for t in [&mut q, &mut k] {
            rows::rope(t, head_dim, c.rope_style, cos, sin).ok_or_else(|| {
                candle_core::Error::Msg("rotary tables of another shape than the rows".into())
            })?;
        }
        let (k_rows, v_rows) = (k.chunks_exact(kv_width), v.chunks_exact(kv_width));
        for ((row, k), v) in rows.iter().zip(k_rows).zip(v_rows) {
            let block = row.blocks[row.pos / BLOCK_TOKENS];
            store
                .write(block, i, row.pos % BLOCK_TOKENS, k, v)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        }
        let shape = Shape {
            heads,
            kv_heads,
            head_dim,
            scale: 1.0 / (c.attention_scale_dim as f32).sqrt(),
            softcap: c.attention_softcap,
            window: c
                .sliding
                .as_ref()
                .filter(|_| layer.sliding)
                .map(|s| s.window),
        };
        let y = attend(store, i, &shape, &q, rows).ok_or_else(|| {
            candle_core::Error::Msg("attention: a block table does not cover its position".into())
        })?;
        let [out] = forward_all([&layer.wo], &y)?;
        Ok(out)
    }
}

/// One sequence's tokens in a pass: `tokens` at positions `pos..`, its keys
/// and values in the blocks of `blocks` (which must cover them), and
/// whether the logits after the last token are wanted.
#[derive(Debug, Clone, Copy)]
pub struct Feed<'a> {
    pub blocks: &'a [BlockId],
    pub pos: usize,
    pub tokens: &'a [u32],
    pub logits: bool,
}
