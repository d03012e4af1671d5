//! The decoder-only transformer forward pass, one for every architecture
//! in [`super::arch`], with our own Q4_1 kernel in its linear layers.
//!
//! For llama it is candle's `quantized_llama` computation — the same candle
//! operations for norms, rotary embeddings and the MLP — with each Q4_1
//! weight in a [`Q4_1Matrix`] and every other weight type left to candle's
//! quantized matmul, and attention our own over the paged K/V cache
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

use super::arch::{Activation, Arch, Config, RopeStyle};
use super::attention::{Row, Shape, attend};
use super::kernels::q4_1::Q4_1Matrix;
use super::kernels::q8_0::Q8_0Matrix;
use super::kernels::{Isa, Product, Q8_1Activations};
use super::kv_cache::{BLOCK_TOKENS, BlockId, KvStore};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor, gguf_file};
use candle_core::{DType, Device, Module, Result, Tensor};
use std::io::{Read, Seek};

/// A weight matrix: ours when it is Q4_1, Q8_0 or Q5_0 (widened to Q8_0's
/// bytes), candle's otherwise.
enum Linear {
    Ours(Box<dyn Product>),
    Candle(QMatMul),
}

impl Linear {
    fn new(t: QTensor) -> Result<Self> {
        let msg = |e: &dyn std::fmt::Display| candle_core::Error::Msg(e.to_string());
        if let &[n, k] = t.shape().dims() {
            let ours: Box<dyn Product> = match t.dtype() {
                GgmlDType::Q4_1 => {
                    Box::new(Q4_1Matrix::from_blocks(n, k, &t.data()?).map_err(|e| msg(&e))?)
                }
                GgmlDType::Q8_0 => {
                    Box::new(Q8_0Matrix::from_blocks(n, k, &t.data()?).map_err(|e| msg(&e))?)
                }
                GgmlDType::Q5_0 => {
                    Box::new(Q8_0Matrix::from_q5_0_blocks(n, k, &t.data()?).map_err(|e| msg(&e))?)
                }
                _ => return Ok(Linear::Candle(QMatMul::from_qtensor(t)?)),
            };
            return Ok(Linear::Ours(ours));
        }
        Ok(Linear::Candle(QMatMul::from_qtensor(t)?))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [y] = forward_all([self], x)?;
        Ok(y)
    }
}

/// `x` (`rows × k`) through several weights that read it; for ours, `x` is
/// quantized once for all of them.
fn forward_all<const N: usize>(weights: [&Linear; N], x: &Tensor) -> Result<[Tensor; N]> {
    let k = x.dim(candle_core::D::Minus1)?;
    let mut quantized = None;
    let mut out = Vec::with_capacity(N);
    for w in weights {
        out.push(match w {
            Linear::Candle(q) => q.forward(x)?,
            Linear::Ours(m) if m.cols() != k => {
                return Err(candle_core::Error::Msg(format!(
                    "input of shape {:?} for a weight of {} columns",
                    x.dims(),
                    m.cols()
                )));
            }
            Linear::Ours(m) => {
                let acts = match &mut quantized {
                    Some(acts) => acts,
                    None => quantized.insert(Q8_1Activations::quantize(
                        &x.flatten_all()?.to_vec1::<f32>()?,
                        k,
                    )),
                };
                let y = m.matmul_quantized(Isa::best(), acts);
                Tensor::from_vec(y, (acts.rows, m.rows()), x.device())?
            }
        });
    }
    out.try_into()
        .map_err(|_| candle_core::Error::Msg("forward_all: lost an output".into()))
}

/// The q, k and v projections: three matrices, or one whose rows are q's,
/// then k's, then v's (Phi-3).
enum Qkv {
    Separate([Linear; 3]),
    Fused(Linear),
}

struct Layer {
    qkv: Qkv,
    wo: Linear,
    attn_norm: Tensor,
    ffn_norm: Tensor,
    /// q and k norms (Gemma 3, Qwen3).
    qk_norms: Option<(Tensor, Tensor)>,
    /// q, k and v biases (Qwen2).
    qkv_biases: Option<[Tensor; 3]>,
    /// Norms of the attention and MLP outputs (Gemma 3).
    post_norms: Option<(Tensor, Tensor)>,
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

/// θ_i = base^(-2i/dim) of one rotary base, as a `1 × dim/2` row.
struct Rope {
    theta: Tensor,
}

impl Rope {
    /// With `factors` (Llama 3.1's `rope_freqs.weight`), θ_i is divided by
    /// factor i, as llama.cpp's rotary embedding does.
    fn new(dim: usize, base: f32, factors: Option<&[f32]>, device: &Device) -> Result<Self> {
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
        let count = theta.len();
        Ok(Rope {
            theta: Tensor::from_vec(theta, (1, count), device)?,
        })
    }

    /// cos and sin of `position × scale × θ_i` for each of `positions`
    /// (the products candle's precomputed tables hold, bit for bit), each
    /// multiplied by `mscale` (LongRoPE's attention factor).
    fn tables(&self, positions: &[u32], scale: f32, mscale: f32) -> Result<(Tensor, Tensor)> {
        let device = self.theta.device();
        let mut positions = Tensor::new(positions, device)?
            .to_dtype(DType::F32)?
            .reshape((positions.len(), 1))?;
        if scale != 1.0 {
            positions = (positions * f64::from(scale))?;
        }
        let angles = positions.matmul(&self.theta)?;
        if mscale != 1.0 {
            let m = f64::from(mscale);
            return Ok(((angles.cos()? * m)?, (angles.sin()? * m)?));
        }
        Ok((angles.cos()?, angles.sin()?))
    }
}

/// A decoder-only transformer.
pub struct Transformer {
    config: Config,
    embeddings: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
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
            device,
        )?];
        if let Some(s) = &config.sliding {
            ropes.push(Rope::new(config.rope_dim, s.rope_base, None, device)?);
        }
        let embeddings_q = tensor("token_embd.weight")?;
        let embeddings = embeddings_q.dequantize(device)?;
        let norm = tensor("output_norm.weight")?.dequantize(device)?;
        let output = match tensor("output.weight") {
            Ok(t) => Linear::new(t)?,
            Err(_) => Linear::new(embeddings_q)?,
        };
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let mut t = |what: &str| tensor(&format!("blk.{i}.{what}"));
            let vector = |q: QTensor| q.dequantize(device);
            let qk_norms = if config.qk_norm {
                Some((
                    vector(t("attn_q_norm.weight")?)?,
                    vector(t("attn_k_norm.weight")?)?,
                ))
            } else {
                None
            };
            let qkv_biases = if config.qkv_bias {
                Some([
                    vector(t("attn_q.bias")?)?,
                    vector(t("attn_k.bias")?)?,
                    vector(t("attn_v.bias")?)?,
                ])
            } else {
                None
            };
            let post_norms = if config.post_norms {
                Some((
                    vector(t("post_attention_norm.weight")?)?,
                    vector(t("post_ffw_norm.weight")?)?,
                ))
            } else {
                None
            };
            let attn_norm = vector(t("attn_norm.weight")?)?;
            let ffn_norm = vector(t("ffn_norm.weight")?)?;
            let sliding = config.sliding.as_ref().filter(|s| s.applies_to(i));
            let qkv = if content
                .tensor_infos
                .contains_key(&format!("blk.{i}.attn_qkv.weight"))
            {
                Qkv::Fused(Linear::new(t("attn_qkv.weight")?)?)
            } else {
                Qkv::Separate([
                    Linear::new(t("attn_q.weight")?)?,
                    Linear::new(t("attn_k.weight")?)?,
                    Linear::new(t("attn_v.weight")?)?,
                ])
            };
            // Phi-3 computes gate and up in one matrix, and has no gate.
            let gate = match config.arch {
                Arch::Phi3 => None,
                _ => Some(Linear::new(t("ffn_gate.weight")?)?),
            };
            layers.push(Layer {
                qkv,
                wo: Linear::new(t("attn_output.weight")?)?,
                attn_norm,
                ffn_norm,
                qk_norms,
                qkv_biases,
                post_norms,
                gate,
                down: Linear::new(t("ffn_down.weight")?)?,
                up: Linear::new(t("ffn_up.weight")?)?,
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
            let device = self.embeddings.device().clone();
            self.ropes[0] = Rope::new(c.rope_dim, c.rope_base, Some(factors), &device)?;
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
        let device = self.embeddings.device().clone();
        let positions: Vec<u32> = rows.iter().map(|r| r.pos as u32).collect();
        let mut tables = Vec::with_capacity(self.ropes.len());
        for r in &self.ropes {
            tables.push(r.tables(&positions, c.rope_scale, c.rope_attn_factor)?);
        }
        let ids = Tensor::new(ids.as_slice(), &device)?;
        let mut x = self.embeddings.index_select(&ids, 0)?;
        if c.scale_embeddings {
            x = (x * (c.hidden as f64).sqrt())?;
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let (cos, sin) = &tables[layer.rope];
            let normed = candle_nn::ops::rms_norm(&x, &layer.attn_norm, c.eps)?;
            let mut attn = self.attention(i, &normed, cos, sin, &rows, store)?;
            if let Some((after_attn, _)) = &layer.post_norms {
                attn = candle_nn::ops::rms_norm(&attn, after_attn, c.eps)?;
            }
            let x1 = (attn + &x)?;
            let normed = candle_nn::ops::rms_norm(&x1, &layer.ffn_norm, c.eps)?;
            let (gate, up) = match &layer.gate {
                Some(g) => {
                    let [gate, up] = forward_all([g, &layer.up], &normed)?;
                    (gate, up)
                }
                None => {
                    let both = layer.up.forward(&normed)?;
                    let half = both.dim(1)? / 2;
                    (both.narrow(1, 0, half)?, both.narrow(1, half, half)?)
                }
            };
            let gate = match c.activation {
                Activation::Silu => candle_nn::ops::silu(&gate)?,
                Activation::GeluTanh => gate.gelu()?,
            };
            let mut mlp = layer.down.forward(&(gate * up)?)?;
            if let Some((_, after_mlp)) = &layer.post_norms {
                mlp = candle_nn::ops::rms_norm(&mlp, after_mlp, c.eps)?;
            }
            x = (mlp + &x1)?;
        }
        // Only the rows whose logits are asked for go through the output.
        let mut wanted = Vec::new();
        let mut end = 0u32;
        for f in feeds {
            end += f.tokens.len() as u32;
            if f.logits {
                wanted.push(end - 1);
            }
        }
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let last = x.index_select(&Tensor::new(wanted.as_slice(), &device)?, 0)?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, c.eps)?;
        let mut logits = self.output.forward(&last)?;
        if let Some(cap) = c.final_softcap {
            logits = ((logits / f64::from(cap))?.tanh()? * f64::from(cap))?;
        }
        logits.to_dtype(DType::F32)?.to_vec2::<f32>()
    }

    fn attention(
        &self,
        i: usize,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        rows: &[Row<'_>],
        store: &mut KvStore,
    ) -> Result<Tensor> {
        let n = rows.len();
        let c = &self.config;
        let (heads, kv_heads, head_dim) = (c.heads, c.kv_heads, c.head_dim);
        let layer = &self.layers[i];
        let projected = match &layer.qkv {
            Qkv::Separate([wq, wk, wv]) => forward_all([wq, wk, wv], x)?,
            Qkv::Fused(w) => {
                let all = w.forward(x)?;
                let (nq, nkv) = (heads * head_dim, kv_heads * head_dim);
                [
                    all.narrow(1, 0, nq)?,
                    all.narrow(1, nq, nkv)?,
                    all.narrow(1, nq + nkv, nkv)?,
                ]
            }
        };
        let [q, k, v] = match &layer.qkv_biases {
            Some(b) => [
                projected[0].broadcast_add(&b[0])?,
                projected[1].broadcast_add(&b[1])?,
                projected[2].broadcast_add(&b[2])?,
            ],
            None => projected,
        };
        let mut q = q.reshape((n, heads, head_dim))?;
        let mut k = k.reshape((n, kv_heads, head_dim))?;
        if let Some((qn, kn)) = &layer.qk_norms {
            q = candle_nn::ops::rms_norm(&q, qn, c.eps)?;
            k = candle_nn::ops::rms_norm(&k, kn, c.eps)?;
        }
        // candle's rotary kernels take (batch, heads, positions, dim), each
        // position with its own row of the tables.
        let rotate = |t: &Tensor| -> Result<Vec<f32>> {
            let t = t.transpose(0, 1)?.unsqueeze(0)?.contiguous()?;
            let r = match c.rope_style {
                RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&t, cos, sin)?,
                RopeStyle::Halves => candle_nn::rotary_emb::rope(&t, cos, sin)?,
            };
            r.squeeze(0)?
                .transpose(0, 1)?
                .flatten_all()?
                .to_vec1::<f32>()
        };
        let q = rotate(&q)?;
        let k = rotate(&k)?;
        let v = v.flatten_all()?.to_vec1::<f32>()?;
        let kv_width = kv_heads * head_dim;
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
        layer
            .wo
            .forward(&Tensor::from_vec(y, (n, heads * head_dim), x.device())?)
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
